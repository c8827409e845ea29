//! Conditions: CEL expressions in `expect` and branch `when`.
//!
//! The core only parses and inspects them (which names they read); evaluation happens in
//! the executor with the values of a run.

use cel::common::ast::{EntryExpr, Expr, IdedExpr, SourceInfo};

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

/// A parsed condition: the names it reads, and its tree for type checking.
#[derive(Debug)]
pub struct Analysis {
    /// The free names it reads.
    pub names: Vec<NameRef>,
    ast: IdedExpr,
    info: SourceInfo,
}

/// Parse a condition and list the free names it reads.
pub fn analyze(expr: &str) -> Result<Vec<NameRef>, SyntaxError> {
    parse(expr).map(|a| a.names)
}

/// Parse a condition, keeping its tree.
pub fn parse(expr: &str) -> Result<Analysis, SyntaxError> {
    let (ast, info) = cel::parser::Parser::new()
        .parse_with_source_info(expr)
        .map_err(|errs| {
            let first = errs.errors.first();
            SyntaxError {
                message: first.map_or_else(|| "syntax error".to_string(), |e| simplify(&e.msg)),
                position: first.map_or((1, 1), |e| {
                    (
                        usize::try_from(e.pos.0).unwrap_or(1).max(1),
                        usize::try_from(e.pos.1).unwrap_or(1).max(1),
                    )
                }),
            }
        })?;
    let mut names = Vec::new();
    let mut locals = Vec::new();
    collect(&ast, &mut locals, &mut names);
    Ok(Analysis { names, ast, info })
}

/// The static type of a value a condition reads or computes. `Dyn`: not known before the
/// run (a JSON capture, a comprehension variable); such values are never reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// A signed integer.
    Int,
    /// An unsigned integer (`1u`).
    UInt,
    /// A floating-point number.
    Double,
    /// Text.
    String,
    /// `true` / `false`.
    Bool,
    /// A list.
    List,
    /// A map.
    Map,
    /// `null`.
    Null,
    /// Bytes.
    Bytes,
    /// Known only at run time.
    Dyn,
}

impl Ty {
    /// CEL's name for the type.
    pub fn as_str(self) -> &'static str {
        match self {
            Ty::Int => "int",
            Ty::UInt => "uint",
            Ty::Double => "double",
            Ty::String => "string",
            Ty::Bool => "bool",
            Ty::List => "list",
            Ty::Map => "map",
            Ty::Null => "null",
            Ty::Bytes => "bytes",
            Ty::Dyn => "dyn",
        }
    }

    fn numeric(self) -> bool {
        matches!(self, Ty::Int | Ty::UInt | Ty::Double)
    }
}

/// Operands of mismatched types, found before anything runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeError {
    /// Byte offset of the offending sub-expression in the condition.
    pub offset: usize,
    /// Its length in bytes.
    pub len: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: String,
}

impl Analysis {
    /// Type-check the condition `expr` (the text this analysis was parsed from); `lookup`
    /// gives the type of a qualified name it reads (`Ty::Dyn` when unknown).
    pub fn type_errors(&self, expr: &str, lookup: &dyn Fn(&[String]) -> Ty) -> Vec<TypeError> {
        let mut c = Checker {
            expr,
            info: &self.info,
            lookup,
            locals: Vec::new(),
            errors: Vec::new(),
        };
        c.ty(&self.ast);
        c.errors
    }
}

struct Checker<'a> {
    expr: &'a str,
    info: &'a SourceInfo,
    lookup: &'a dyn Fn(&[String]) -> Ty,
    locals: Vec<String>,
    errors: Vec<TypeError>,
}

impl Checker<'_> {
    /// Byte range of a node and everything under it.
    fn extent(&self, e: &IdedExpr) -> (usize, usize) {
        let mut lo = usize::MAX;
        let mut hi = 0usize;
        let mut visit = |id: u64| {
            if let Some((a, b)) = self.info.offset_for(id) {
                lo = lo.min(a as usize);
                hi = hi.max(b as usize);
            }
        };
        walk_ids(e, &mut visit);
        if lo == usize::MAX {
            return (0, self.expr.len());
        }
        // Byte offsets, cut to character boundaries. A field (`.threshold`) has no node
        // of its own: the range goes on over the identifier that ends it.
        let start = crate::text::floor_boundary(self.expr, lo);
        let mut stop = crate::text::floor_boundary(self.expr, hi + 1).max(start);
        let rest = &self.expr[stop..];
        stop += rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        // A prefix operator (`!x`, `-x`) sits before its operand.
        if let Expr::Call(c) = &e.expr {
            if matches!(c.func_name.as_str(), "!_" | "-_") {
                let before = self.expr[..start].trim_end();
                if before.ends_with(['!', '-']) {
                    return (before.len() - 1, stop);
                }
            }
        }
        (start, stop)
    }

    fn report(&mut self, at: &IdedExpr, message: String, help: String) {
        let (start, stop) = self.extent(at);
        self.errors.push(TypeError {
            offset: start,
            len: stop.saturating_sub(start).max(1),
            message,
            help,
        });
    }

    fn text(&self, e: &IdedExpr) -> String {
        let (a, b) = self.extent(e);
        self.expr.get(a..b).unwrap_or("").trim().to_string()
    }

    fn ty(&mut self, e: &IdedExpr) -> Ty {
        match &e.expr {
            Expr::Literal(l) => {
                use cel::common::ast::LiteralValue as L;
                match l {
                    L::Boolean(_) => Ty::Bool,
                    L::Bytes(_) => Ty::Bytes,
                    L::Double(_) => Ty::Double,
                    L::Int(_) => Ty::Int,
                    L::Null => Ty::Null,
                    L::String(_) => Ty::String,
                    L::UInt(_) => Ty::UInt,
                }
            }
            Expr::Ident(_) | Expr::Select(_) => match qualified(&e.expr) {
                Some(name) if self.locals.iter().any(|l| *l == name[0]) => Ty::Dyn,
                Some(name) => (self.lookup)(&name),
                None => {
                    if let Expr::Select(sel) = &e.expr {
                        self.ty(&sel.operand);
                    }
                    Ty::Dyn
                }
            },
            Expr::List(l) => {
                for x in &l.elements {
                    self.ty(x);
                }
                Ty::List
            }
            Expr::Map(m) => {
                for x in &m.entries {
                    if let EntryExpr::MapEntry(me) = &x.expr {
                        self.ty(&me.key);
                        self.ty(&me.value);
                    }
                }
                Ty::Map
            }
            Expr::Struct(_) | Expr::Unspecified => Ty::Dyn,
            Expr::Comprehension(c) => {
                self.ty(&c.iter_range);
                self.ty(&c.accu_init);
                let pushed = 2 + usize::from(c.iter_var2.is_some());
                self.locals.push(c.iter_var.clone());
                self.locals.push(c.accu_var.clone());
                if let Some(v) = &c.iter_var2 {
                    self.locals.push(v.clone());
                }
                self.ty(&c.loop_cond);
                self.ty(&c.loop_step);
                self.ty(&c.result);
                self.locals.truncate(self.locals.len() - pushed);
                Ty::Dyn
            }
            Expr::Call(call) => self.call(e, call),
        }
    }

    fn call(&mut self, e: &IdedExpr, call: &cel::common::ast::CallExpr) -> Ty {
        let target = call.target.as_ref().map(|t| self.ty(t));
        let args: Vec<Ty> = call.args.iter().map(|a| self.ty(a)).collect();
        let f = call.func_name.as_str();
        let known = |t: Ty| t != Ty::Dyn;
        match (f, args.as_slice()) {
            ("_+_" | "_-_" | "_*_" | "_/_" | "_%_", [a, b]) => {
                let ok = !known(*a)
                    || !known(*b)
                    || (a == b
                        && (a.numeric()
                            || (f == "_+_" && matches!(a, Ty::String | Ty::List | Ty::Bytes))));
                if !ok {
                    let (message, help) = mismatch(f, *a, *b, &self.text(e), literal(&call.args));
                    self.report(e, message, help);
                    return Ty::Dyn;
                }
                if known(*a) && known(*b) { *a } else { Ty::Dyn }
            }
            ("-_", [a]) => {
                if known(*a) && !a.numeric() {
                    let text = self.text(e);
                    self.report(
                        e,
                        format!("`{text}` negates {} {}", article(*a), a.as_str()),
                        "negate a number: convert with int(...) or double(...)".into(),
                    );
                    return Ty::Dyn;
                }
                *a
            }
            ("_<_" | "_<=_" | "_>_" | "_>=_", [a, b]) => {
                let ok = !known(*a)
                    || !known(*b)
                    || (a.numeric() && b.numeric())
                    || (a == b && matches!(a, Ty::String | Ty::Bool | Ty::Bytes));
                if !ok {
                    let (message, help) = mismatch(f, *a, *b, &self.text(e), literal(&call.args));
                    self.report(e, message, help);
                }
                Ty::Bool
            }
            ("_==_" | "_!=_", [a, b]) => {
                let ok = !known(*a)
                    || !known(*b)
                    || a == b
                    || (a.numeric() && b.numeric())
                    || *a == Ty::Null
                    || *b == Ty::Null;
                if !ok {
                    let (message, help) = mismatch(f, *a, *b, &self.text(e), literal(&call.args));
                    self.report(e, message, help);
                }
                Ty::Bool
            }
            ("_&&_" | "_||_" | "!_", _) => {
                for (x, t) in call.args.iter().zip(&args) {
                    if known(*t) && *t != Ty::Bool {
                        let text = self.text(x);
                        self.report(
                            x,
                            format!(
                                "`{text}` is {} {}, not true or false",
                                article(*t),
                                t.as_str()
                            ),
                            "compare it, e.g. `x != \"\"` or `x > 0`".into(),
                        );
                    }
                }
                Ty::Bool
            }
            ("_?_:_", [_, a, b]) => {
                if a == b {
                    *a
                } else {
                    Ty::Dyn
                }
            }
            ("int", _) => Ty::Int,
            ("uint", _) => Ty::UInt,
            ("double", _) => Ty::Double,
            ("string", _) => Ty::String,
            ("bool", _) => Ty::Bool,
            ("size", _) => Ty::Int,
            ("has" | "@in" | "exists" | "all" | "exists_one", _) => Ty::Bool,
            ("contains" | "startsWith" | "endsWith" | "matches", _) => {
                if let (Some(t), Some(x)) = (target, &call.target) {
                    if known(t) && t != Ty::String && !(f == "contains" && t == Ty::List) {
                        let text = self.text(x);
                        self.report(
                            x,
                            format!(
                                "`{text}` is {} {}, and `{f}` needs a string",
                                article(t),
                                t.as_str()
                            ),
                            format!("convert with string({text})"),
                        );
                    }
                }
                Ty::Bool
            }
            _ => Ty::Dyn,
        }
    }
}

/// Message and help for an operator applied to values of different types. `literal`:
/// which operands are written as literals (their type is what the author typed).
fn mismatch(op: &str, a: Ty, b: Ty, text: &str, literal: [bool; 2]) -> (String, String) {
    let (an, bn) = (
        format!("{} {}", article(a), a.as_str()),
        format!("{} {}", article(b), b.as_str()),
    );
    let what = match op {
        "_==_" => format!("compares {an} with {bn}: it is never true"),
        "_!=_" => format!("compares {an} with {bn}: it is always true"),
        _ => format!(
            "has no matching overload for '{op}' applied to ({}, {})",
            a.as_str(),
            b.as_str()
        ),
    };
    let text_side = match (a, b) {
        (Ty::String, t) if t.numeric() => Some((0, t)),
        (t, Ty::String) if t.numeric() => Some((1, t)),
        _ => None,
    };
    let help = match text_side {
        // `params.threshold != "80"`: the quotes are the mistake.
        Some((side, _)) if literal[side] => {
            "write the number without quotes (`80`, not `\"80\"`)".to_string()
        }
        Some((_, t)) => format!(
            "convert the text with {}(...); a capture can be typed instead (`stdout: int`, or \
             `as: int` on a regex or json capture)",
            if t == Ty::Double { "double" } else { "int" }
        ),
        None if a.numeric() && b.numeric() => {
            "CEL does not mix int and double in arithmetic: convert one side with double(...) or int(...)"
                .to_string()
        }
        None => format!("make both sides the same type ({} and {} here)", a.as_str(), b.as_str()),
    };
    (format!("`{text}` {what}"), help)
}

fn article(t: Ty) -> &'static str {
    if matches!(t, Ty::Int | Ty::UInt) {
        "an"
    } else {
        "a"
    }
}

/// Whether each of a binary operator's operands is a literal.
fn literal(args: &[IdedExpr]) -> [bool; 2] {
    let lit = |i: usize| {
        args.get(i)
            .is_some_and(|a| matches!(a.expr, Expr::Literal(_)))
    };
    [lit(0), lit(1)]
}

/// Every node id under `e`, `e` included.
fn walk_ids(e: &IdedExpr, visit: &mut dyn FnMut(u64)) {
    visit(e.id);
    match &e.expr {
        Expr::Select(s) => walk_ids(&s.operand, visit),
        Expr::Call(c) => {
            if let Some(t) = &c.target {
                walk_ids(t, visit);
            }
            c.args.iter().for_each(|a| walk_ids(a, visit));
        }
        Expr::List(l) => l.elements.iter().for_each(|x| walk_ids(x, visit)),
        Expr::Map(m) => m.entries.iter().for_each(|x| {
            if let EntryExpr::MapEntry(me) = &x.expr {
                walk_ids(&me.key, visit);
                walk_ids(&me.value, visit);
            }
        }),
        Expr::Comprehension(c) => {
            walk_ids(&c.iter_range, visit);
            walk_ids(&c.result, visit);
        }
        _ => {}
    }
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
