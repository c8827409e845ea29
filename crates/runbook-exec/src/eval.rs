//! Evaluating CEL conditions (`expect`, branch `when`) over the values of a run.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

/// The result of a condition: whether it held and the values it read.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Whether the condition held.
    pub result: bool,
    /// `name → value` for every name the expression reads that has a value.
    pub values: serde_json::Map<String, Value>,
}

/// Evaluate `expr` with the top-level names of `scope` (an object: `params`, `steps`,
/// `run`, and inside a step its own captures and built-ins) as variables.
///
/// The error names the expression and shows the values it saw.
pub(crate) fn evaluate(
    expr: &str,
    scope: &serde_json::Map<String, Value>,
) -> Result<Outcome, String> {
    let values = seen(expr, scope);
    let program = cel::Program::compile(expr)
        .map_err(|e| format!("condition `{expr}` does not parse: {e}"))?;
    let mut ctx = cel::Context::default();
    for (k, v) in scope {
        ctx.add_variable_from_value(k.clone(), to_cel(v));
    }
    let shown = || {
        if values.is_empty() {
            String::new()
        } else {
            format!(" (values: {})", show(&values))
        }
    };
    match program.execute(&ctx) {
        Ok(cel::Value::Bool(result)) => Ok(Outcome { result, values }),
        Ok(other) => Err(format!(
            "condition `{expr}` gave a value of type {}, not true or false{}",
            other.type_of(),
            shown()
        )),
        Err(e) => Err(format!(
            "condition `{expr}` failed: {}{}",
            describe(&e),
            shown()
        )),
    }
}

/// A CEL runtime error in CEL's own words, the same whatever the operator: the types
/// involved, never the library's debug form of values (`String("730")`, `Int(100)`).
fn describe(e: &cel::ExecutionError) -> String {
    use cel::ExecutionError as E;
    let op = |op: &str| match op {
        "add" => "_+_",
        "sub" => "_-_",
        "mul" => "_*_",
        "div" => "_/_",
        "rem" => "_%_",
        _ => "operator",
    };
    match e {
        E::UnsupportedBinaryOperator(o, a, b) => format!(
            "no matching overload for '{}' applied to ({}, {})",
            op(o),
            a.type_of(),
            b.type_of()
        ),
        E::ValuesNotComparable(a, b) => format!(
            "no matching overload for comparison applied to ({}, {})",
            a.type_of(),
            b.type_of()
        ),
        E::NoSuchOverload(o) => o.to_string().replace("found no matching", "no matching"),
        E::UnexpectedType { got, want } => format!("expected {want}, found {got}"),
        E::UndeclaredReference(name) => format!("undeclared reference to '{name}'"),
        E::NoSuchKey(key) => format!("no such key: {key}"),
        E::DivisionByZero(_) => "division by zero".into(),
        E::RemainderByZero(_) => "modulus by zero".into(),
        E::Overflow(o, a, b) => format!(
            "integer overflow in '{}' applied to ({}, {})",
            op(o),
            a.type_of(),
            b.type_of()
        ),
        E::UnsupportedTargetType { target } => {
            format!(
                "no matching overload for argument of type {}",
                target.type_of()
            )
        }
        E::NotSupportedAsMethod { method, target } => {
            format!(
                "no matching overload for '{method}' on {}",
                target.type_of()
            )
        }
        E::UnsupportedIndex(index, value) => format!(
            "no matching overload for '_[_]' applied to ({}, {})",
            value.type_of(),
            index.type_of()
        ),
        E::IndexOutOfBounds(_) => "index out of bounds".into(),
        other => other.to_string(),
    }
}

/// Evaluate `expr` to a value of any type (a trigger's parameter expression).
pub(crate) fn value(expr: &str, scope: &serde_json::Map<String, Value>) -> Result<Value, String> {
    let program =
        cel::Program::compile(expr).map_err(|e| format!("`{expr}` does not parse: {e}"))?;
    let mut ctx = cel::Context::default();
    for (k, v) in scope {
        ctx.add_variable_from_value(k.clone(), to_cel(v));
    }
    match program.execute(&ctx) {
        Ok(v) => Ok(from_cel(&v)),
        Err(cel::ExecutionError::NoSuchKey(key)) => {
            Err(format!("`{expr}`: the alert has no `{key}`"))
        }
        Err(e) => Err(format!("`{expr}` failed: {}", describe(&e))),
    }
}

/// CEL to JSON, for values that become parameters.
fn from_cel(v: &cel::Value) -> Value {
    match v {
        cel::Value::Null => Value::Null,
        cel::Value::Bool(b) => Value::Bool(*b),
        cel::Value::Int(i) => Value::from(*i),
        cel::Value::UInt(u) => Value::from(*u),
        cel::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        cel::Value::String(s) => Value::String(s.to_string()),
        cel::Value::List(items) => Value::Array(items.iter().map(from_cel).collect()),
        cel::Value::Map(m) => Value::Object(
            m.map
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        cel::objects::Key::String(s) => s.to_string(),
                        other => format!("{other:?}"),
                    };
                    (key, from_cel(v))
                })
                .collect(),
        ),
        other => Value::String(format!("{other:?}")),
    }
}

/// `a = 1, b = "x"` for messages.
pub fn show(values: &serde_json::Map<String, Value>) -> String {
    /// Longest value shown: a condition on a whole step (`has(steps.x.y)`) reads an object
    /// with its output; the journal keeps it whole.
    const SHOWN_CHARS: usize = 80;
    values
        .iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) if s == MISSING => MISSING.to_string(),
                other => other.to_string(),
            };
            let cut = runbook_core::text::prefix_chars(&text, SHOWN_CHARS);
            if cut.len() < text.len() {
                format!("{k} = {cut}…")
            } else {
                format!("{k} = {text}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `seen` records for a name that has no value in the scope.
const MISSING: &str = "<missing>";

/// The values of the qualified names the expression reads.
fn seen(expr: &str, scope: &serde_json::Map<String, Value>) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    let Ok(names) = runbook_core::cond::analyze(expr) else {
        return out;
    };
    for name in names {
        let mut cur = scope.get(&name[0]);
        for seg in &name[1..] {
            cur = cur.and_then(|v| v.get(seg));
        }
        let key = name.join(".");
        match cur {
            Some(v) => out.insert(key, v.clone()),
            None => out.insert(key, Value::String(MISSING.into())),
        };
    }
    out
}

/// JSON to CEL: integers stay signed where they fit, so `count < 180` compares
/// like with like.
pub fn to_cel(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                cel::Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                cel::Value::UInt(u)
            } else {
                cel::Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(items) => cel::Value::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(map) => {
            let m: HashMap<cel::objects::Key, cel::Value> = map
                .iter()
                .map(|(k, v)| (cel::objects::Key::String(Arc::new(k.clone())), to_cel(v)))
                .collect();
            cel::Value::Map(cel::objects::Map { map: Arc::new(m) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn evaluates_over_params_and_steps() {
        let s = scope(json!({
            "params": {"max_connections": 200},
            "steps": {"connections": {"count": 185}},
            "count": 185,
            "pids": ["12", "13"],
        }));
        let o = evaluate(
            "steps.connections.count >= params.max_connections * 9 / 10",
            &s,
        )
        .unwrap();
        assert!(o.result);
        assert_eq!(o.values["steps.connections.count"], 185);
        assert!(!evaluate("count < 180", &s).unwrap().result);
        assert!(evaluate("size(pids) == 2", &s).unwrap().result);
    }

    /// Every function docs/format.md lists works.
    #[test]
    fn documented_functions_work() {
        let s = scope(json!({"s": "hello", "n": "42", "xs": [1, 2, 3], "m": {"k": 1}}));
        for expr in [
            "int(n) == 42",
            "uint(n) == 42u",
            "double(n) == 42.0",
            "string(int(n)) == n",
            "bool('true')",
            "size(s) == 5 && size(xs) == 3 && size(m) == 1",
            "has(m.k)",
            "s.contains('ell')",
            "s.startsWith('he')",
            "s.endsWith('lo')",
            "s.matches('^h.*o$')",
            "xs.exists(x, x > 2)",
            "xs.all(x, x > 0)",
            "xs.exists_one(x, x == 2)",
            "xs.map(x, x * 2)[2] == 6",
            "size(xs.filter(x, x > 1)) == 2",
            "2 in xs",
            "(1 < 2 ? 'a' : 'b') == 'a'",
            "7 % 3 == 1 && 7 / 2 == 3 && !(1 >= 2)",
        ] {
            let o = evaluate(expr, &s).unwrap_or_else(|e| panic!("{expr}: {e}"));
            assert!(o.result, "{expr}");
        }
    }

    #[test]
    fn errors_name_types_not_the_library_s_values() {
        let s = scope(json!({"used": "730144440", "n": 3, "xs": [1]}));
        for (expr, want) in [
            (
                "used * 100 < 5",
                "no matching overload for '_*_' applied to (string, int)",
            ),
            (
                "used + 1 == 2",
                "no matching overload for '_+_' applied to (string, int)",
            ),
            ("n / 0 == 1", "division by zero"),
            ("xs[3] == 1", "index out of bounds"),
            ("n + 1", "gave a value of type int, not true or false"),
        ] {
            let e = evaluate(expr, &s).unwrap_err();
            assert!(e.contains(want), "{expr}: {e}");
            assert!(!e.contains("String(") && !e.contains("Int("), "{expr}: {e}");
        }
    }

    #[test]
    fn conditions_of_the_library_evaluate() {
        // weekly-maintenance: per-instance Run Command output.
        let s = scope(json!({
            "params": {"disk_limit": 80},
            "steps": {"disks": {"instances": [{"stdout": "45"}, {"stdout": "91"}, {"stdout": ""}]}},
        }));
        let expr =
            "steps.disks.instances.exists(i, i.stdout != '' && int(i.stdout) >= params.disk_limit)";
        assert!(evaluate(expr, &s).unwrap().result);
    }

    #[test]
    fn errors_name_expression_and_values() {
        let s = scope(json!({"count": "abc"}));
        let err = evaluate("count < 10", &s).unwrap_err();
        assert!(
            err.contains("count < 10") && err.contains("\"abc\""),
            "{err}"
        );
        let err = evaluate("nope > 1", &s).unwrap_err();
        assert!(err.contains("nope"), "{err}");
        let err = evaluate("count", &s).unwrap_err();
        assert!(err.contains("not true or false"), "{err}");
    }
}
