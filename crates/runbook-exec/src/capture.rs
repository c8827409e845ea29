//! Captures: values taken from a step's output (`stdout` typed, JMESPath, regex).

use runbook_core::model::{Capture, CaptureSource, CaptureType};
use serde_json::Value;

/// Longest piece of output quoted in an error message.
const QUOTE_LIMIT: usize = 200;

/// Extract capture `name` from `stdout`. The error says which capture failed and shows
/// the output it saw.
pub fn extract(name: &str, capture: &Capture, stdout: &str) -> Result<Value, String> {
    let fail = |what: String| {
        Err(format!(
            "capture `{name}`: {what}; the output was {}",
            quote(stdout)
        ))
    };
    match &capture.source {
        CaptureSource::Stdout(ty) => {
            let text = stdout.trim();
            match ty {
                CaptureType::Text => Ok(Value::String(text.to_string())),
                CaptureType::Int => match text.parse::<i64>() {
                    Ok(n) => Ok(n.into()),
                    Err(_) => fail("expected an integer".into()),
                },
                CaptureType::Float => match text
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                {
                    Some(n) => Ok(Value::Number(n)),
                    None => fail("expected a number".into()),
                },
                CaptureType::Bool => match text.to_ascii_lowercase().as_str() {
                    "true" | "yes" | "1" | "t" | "y" => Ok(true.into()),
                    "false" | "no" | "0" | "f" | "n" => Ok(false.into()),
                    _ => fail("expected true or false".into()),
                },
                CaptureType::Lines => Ok(Value::Array(
                    stdout
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(|l| Value::String(l.to_string()))
                        .collect(),
                )),
                CaptureType::Json => match serde_json::from_str::<Value>(text) {
                    Ok(v) => Ok(v),
                    Err(e) => fail(format!("the output is not JSON ({e})")),
                },
            }
        }
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
            Ok(Value::String(named.map_or("", |m| m.as_str()).to_string()))
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
            secret: false,
        }
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
