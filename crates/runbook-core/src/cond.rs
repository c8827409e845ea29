//! Conditions: CEL expressions in `expect` and branch `when`.
//!
//! The core only parses and inspects them (which names they read); evaluation happens in
//! the executor with the values of a run.

use cel::common::ast::{EntryExpr, Expr, IdedExpr};

/// A qualified name read by a condition, e.g. `steps.connections.count` as
/// `["steps", "connections", "count"]` (only the leading identifier/field chain).
pub type NameRef = Vec<String>;

/// A condition that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// What is wrong.
    pub message: String,
    /// 1-based line and column in the expression.
    pub position: (usize, usize),
}

/// Parse a condition and list the free names it reads.
pub fn analyze(expr: &str) -> Result<Vec<NameRef>, SyntaxError> {
    let ast = cel::parser::Parser::new().parse(expr).map_err(|errs| {
        let first = errs.errors.first();
        SyntaxError {
            message: first.map_or_else(|| "syntax error".to_string(), |e| simplify(&e.msg)),
            position: first.map_or((1, 1), |e| {
                (
                    usize::try_from(e.pos.0).unwrap_or(1).max(1),
                    usize::try_from(e.pos.1).unwrap_or(0) + 1,
                )
            }),
        }
    })?;
    let mut names = Vec::new();
    let mut locals = Vec::new();
    collect(&ast, &mut locals, &mut names);
    Ok(names)
}

/// ANTLR's "mismatched input 'x' expecting {...20 tokens...}" says little to a person.
fn simplify(msg: &str) -> String {
    let msg = msg.trim_start_matches("Syntax error: ");
    let Some(rest) = msg.strip_prefix("mismatched input '") else {
        return msg.to_string();
    };
    match rest.split_once("' expecting") {
        Some(("<EOF>", _)) => "the expression ends too early".to_string(),
        Some((token, _)) => format!("unexpected `{token}`"),
        None => msg.to_string(),
    }
}

fn collect(e: &IdedExpr, locals: &mut Vec<String>, out: &mut Vec<NameRef>) {
    match &e.expr {
        Expr::Ident(_) | Expr::Select(_) => {
            if let Some(segments) = qualified(&e.expr) {
                if !locals.iter().any(|l| *l == segments[0]) {
                    out.push(segments);
                }
            } else if let Expr::Select(s) = &e.expr {
                collect(&s.operand, locals, out);
            }
        }
        Expr::Call(call) => {
            if let Some(t) = &call.target {
                collect(t, locals, out);
            }
            for a in &call.args {
                collect(a, locals, out);
            }
        }
        Expr::Comprehension(c) => {
            collect(&c.iter_range, locals, out);
            collect(&c.accu_init, locals, out);
            let pushed = 2 + usize::from(c.iter_var2.is_some());
            locals.push(c.iter_var.clone());
            locals.push(c.accu_var.clone());
            if let Some(v) = &c.iter_var2 {
                locals.push(v.clone());
            }
            collect(&c.loop_cond, locals, out);
            collect(&c.loop_step, locals, out);
            collect(&c.result, locals, out);
            locals.truncate(locals.len() - pushed);
        }
        Expr::List(l) => l.elements.iter().for_each(|x| collect(x, locals, out)),
        Expr::Map(m) => m.entries.iter().for_each(|x| entry(&x.expr, locals, out)),
        Expr::Struct(s) => s.entries.iter().for_each(|x| entry(&x.expr, locals, out)),
        Expr::Literal(_) | Expr::Unspecified => {}
    }
}

fn entry(e: &EntryExpr, locals: &mut Vec<String>, out: &mut Vec<NameRef>) {
    match e {
        EntryExpr::StructField(f) => collect(&f.value, locals, out),
        EntryExpr::MapEntry(m) => {
            collect(&m.key, locals, out);
            collect(&m.value, locals, out);
        }
    }
}

/// `a.b.c` as segments, or None when the chain does not start at an identifier.
fn qualified(e: &Expr) -> Option<Vec<String>> {
    let mut segments = Vec::new();
    let mut cur = e;
    loop {
        match cur {
            Expr::Ident(name) => {
                segments.push(name.clone());
                segments.reverse();
                return Some(segments);
            }
            Expr::Select(s) if !s.test => {
                segments.push(s.field.clone());
                cur = &s.operand.expr;
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(expr: &str) -> Vec<String> {
        analyze(expr).unwrap().iter().map(|n| n.join(".")).collect()
    }

    #[test]
    fn finds_names() {
        assert_eq!(
            names("steps.connections.count >= params.max_connections * 9 / 10"),
            ["steps.connections.count", "params.max_connections"]
        );
        assert_eq!(names("status == \"available\""), ["status"]);
        assert_eq!(names("pids.all(p, p > 0)"), ["pids"]);
        assert_eq!(names("size(steps.q.lines) == 0"), ["steps.q.lines"]);
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = analyze("count >").unwrap_err();
        assert_eq!(err.position.0, 1);
        assert!(!err.message.is_empty());
    }
}
