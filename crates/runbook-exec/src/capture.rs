//! Captures: values taken from a step's output (`stdout` typed, JMESPath, regex).

use runbook_core::model::{Capture, CaptureSource, CaptureType};
use serde_json::Value;

/// Longest piece of output quoted in an error message.
const QUOTE_LIMIT: usize = 200;

/// Extract capture `name` from `stdout`. The error says which capture failed and shows
/// the output it saw.
pub fn extract(name: &str, capture: &Capture, stdout: &str) -> Result<Value, String> {
    let found = find(name, capture, stdout)?;
    match capture.convert {
        None => Ok(found),
        Some(ty) => {
            let text = match &found {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            convert(ty, &text).map_err(|what| {
                format!(
                    "capture `{name}`: {what} (`as: {}`); the value found was {}",
                    ty.as_str(),
                    quote(&text)
                )
            })
        }
    }
}

/// Text converted to a capture type; the error says what was expected.
fn convert(ty: CaptureType, text: &str) -> Result<Value, String> {
    let text = text.trim();
    match ty {
        CaptureType::Text => Ok(Value::String(text.to_string())),
        CaptureType::Int => text
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| "expected an integer".into()),
        CaptureType::Float => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| "expected a number".into()),
        CaptureType::Bool => match text.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "t" | "y" => Ok(true.into()),
            "false" | "no" | "0" | "f" | "n" => Ok(false.into()),
            _ => Err("expected true or false".into()),
        },
        CaptureType::Lines => Ok(Value::Array(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|l| Value::String(l.to_string()))
                .collect(),
        )),
        CaptureType::Json => {
            serde_json::from_str::<Value>(text).map_err(|e| format!("the output is not JSON ({e})"))
        }
    }
}

/// The value a capture's source finds, before any `as` conversion.
fn find(name: &str, capture: &Capture, stdout: &str) -> Result<Value, String> {
    let fail = |what: String| {
        Err(format!(
            "capture `{name}`: {what}; the output was {}",
            quote(stdout)
        ))
    };
    match &capture.source {
        CaptureSource::Stdout(ty) => convert(*ty, stdout).or_else(fail),
        CaptureSource::Json(expr) => {
            let data = match serde_json::from_str::<Value>(stdout.trim()) {
                Ok(v) => v,
                Err(e) => return fail(format!("the output is not JSON ({e})")),
            };
            let compiled = match jmespath::compile(&expr.value) {
                Ok(c) => c,
                Err(e) => return Err(format!("capture `{name}`: invalid JMESPath: {e}")),
            };
            let found = compiled
                .search(&data)
                .map_err(|e| format!("capture `{name}`: JMESPath `{}`: {e}", expr.value))
                .and_then(|v| {
                    serde_json::to_value(&*v).map_err(|e| format!("capture `{name}`: {e}"))
                })?;
            if found.is_null() {
                return fail(format!("`{}` matched nothing", expr.value));
            }
            Ok(found)
        }
        CaptureSource::Regex(pattern) => {
            let re = regex::Regex::new(&pattern.value)
                .map_err(|e| format!("capture `{name}`: invalid regex: {e}"))?;
            let Some(caps) = re.captures(stdout) else {
                return fail(format!("`{}` did not match", pattern.value));
            };
            let named = re
                .capture_names()
                .flatten()
                .find_map(|n| caps.name(n))
                .or_else(|| caps.get(1))
                .or_else(|| caps.get(0));
            // A line ending in CRLF leaves its `\r` in a greedy group.
            let text = named.map_or("", |m| m.as_str()).trim_end_matches('\r');
            Ok(Value::String(text.to_string()))
        }
    }
}

/// A piece of output for an error message: quoted, shortened, `empty` when empty.
pub fn quote(text: &str) -> String {
    let t = text.trim();
    let t = &t.replace('\n', "⏎");
    if t.is_empty() {
        return "empty".to_string();
    }
    let cut = runbook_core::text::prefix_chars(t, QUOTE_LIMIT);
    if cut.len() == t.len() {
        return format!("`{t}`");
    }
    format!("`{cut}…` ({} bytes)", t.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use runbook_core::diag::Span;
    use runbook_core::model::Sp;

    fn cap(source: CaptureSource) -> Capture {
        Capture {
            name_span: Span::default(),
            source,
            convert: None,
            secret: false,
        }
    }

    #[test]
    fn as_converts_regex_and_json_values() {
        let mut used = cap(CaptureSource::Regex(Sp::new(
            "(?P<pct>[0-9]+)%".into(),
            Span::default(),
        )));
        used.convert = Some(CaptureType::Int);
        assert_eq!(extract("used", &used, "/dev/sda1 91%\r\n").unwrap(), 91);
        let err = extract("used", &used, "usage: 9x%").unwrap_err();
        assert!(err.contains("did not match"), "{err}");
        let mut text = cap(CaptureSource::Regex(Sp::new(
            "state=(?P<s>.*)".into(),
            Span::default(),
        )));
        assert_eq!(
            extract("s", &text, "state=running\r\n").unwrap(),
            "running",
            "a CRLF line's \\r is not part of the value"
        );
        text.convert = Some(CaptureType::Int);
        let err = extract("s", &text, "state=running").unwrap_err();
        assert!(err.contains("expected an integer (`as: int`)"), "{err}");
        let mut cpu = cap(CaptureSource::Json(Sp::new(
            "taskDefinition.cpu".into(),
            Span::default(),
        )));
        cpu.convert = Some(CaptureType::Int);
        assert_eq!(
            extract("cpu", &cpu, r#"{"taskDefinition":{"cpu":"256"}}"#).unwrap(),
            256
        );
    }

    #[test]
    fn typed_stdout() {
        let int = cap(CaptureSource::Stdout(CaptureType::Int));
        assert_eq!(extract("n", &int, " 42\n").unwrap(), 42);
        let err = extract("n", &int, "abc").unwrap_err();
        assert!(
            err.contains("capture `n`") && err.contains("`abc`"),
            "{err}"
        );
        let lines = cap(CaptureSource::Stdout(CaptureType::Lines));
        assert_eq!(
            extract("l", &lines, "a\n\n b \n").unwrap(),
            serde_json::json!(["a", "b"])
        );
        let b = cap(CaptureSource::Stdout(CaptureType::Bool));
        assert_eq!(extract("b", &b, "Yes").unwrap(), true);
        let f = cap(CaptureSource::Stdout(CaptureType::Float));
        assert_eq!(extract("f", &f, "0.5").unwrap(), 0.5);
    }

    #[test]
    fn jmespath_and_regex() {
        let j = cap(CaptureSource::Json(Sp::new(
            "DBInstances[0].DBInstanceStatus".into(),
            Span::default(),
        )));
        let out = r#"{"DBInstances":[{"DBInstanceStatus":"available"}]}"#;
        assert_eq!(extract("s", &j, out).unwrap(), "available");
        let err = extract("s", &j, r#"{"DBInstances":[]}"#).unwrap_err();
        assert!(err.contains("matched nothing"), "{err}");
        // runbooks/log-analysis.yaml: the worst error rate of a Logs Insights result.
        let worst = cap(CaptureSource::Json(Sp::new(
            "max_by(results[*].{rate: to_number(([?field=='error_rate'].value)[0]) || `0`}, &rate).rate || `0`".into(),
            Span::default(),
        )));
        let out = r#"{"status":"Complete","results":[[{"field":"bin(5m)","value":"x"},{"field":"error_rate","value":"2.5"}],[{"field":"error_rate","value":"7.1"}]]}"#;
        assert_eq!(extract("worst", &worst, out).unwrap(), 7.1);
        let none = extract("worst", &worst, r#"{"status":"Complete","results":[]}"#);
        assert_eq!(none.unwrap(), 0);
        let r = cap(CaptureSource::Regex(Sp::new(
            r"used (?P<pct>\d+)%".into(),
            Span::default(),
        )));
        assert_eq!(extract("p", &r, "disk used 93% of 10G").unwrap(), "93");
        assert!(extract("p", &r, "nothing").is_err());
    }
}
