//! Parameters, converted: types, defaults checked against their type, pattern and
//! values, sources (`from:`); and coercing a value given as text to a parameter's type,
//! which `exec` uses for `-p NAME=VALUE`.

use indexmap::IndexMap;

use super::{Converter, PARAM_FIELDS, is_snake_id};
use crate::diag::{Code, Diagnostic};
use crate::model::*;
use crate::yaml::{Key, Node, Value};

impl Converter<'_> {
    pub(super) fn params(&mut self, node: &Node) -> IndexMap<String, Param> {
        let mut out = IndexMap::new();
        let Some(obj) = self.obj(node, "`params`") else {
            return out;
        };
        for (key, value) in obj.entries {
            if !is_snake_id(&key.name) {
                self.push(
                    Diagnostic::new(
                        Code::BadId,
                        key.span,
                        format!("parameter name `{}` is not snake_case", key.name),
                    )
                    .label("invalid name")
                    .help("use lowercase letters, digits and underscores, starting with a letter"),
                );
            }
            if let Some(p) = self.param(key, value) {
                out.insert(key.name.clone(), p);
            }
        }
        out
    }

    pub(super) fn param(&mut self, key: &Key, node: &Node) -> Option<Param> {
        let what = format!("parameter `{}`", key.name);
        let mut obj = self.obj(node, &what)?;
        let ty = match obj.get("type") {
            Some(n) => self.choice(n, "parameter `type`", &ParamType::ALL),
            None => {
                self.missing(&obj, "type", &what);
                None
            }
        };
        let description = self
            .opt_string(&mut obj, "description", &what)
            .map(|s| s.value);
        let required = obj.get("required").and_then(|n| self.bool(n, "`required`"));
        let pattern = self.opt_string(&mut obj, "pattern", &what);
        let regex = pattern
            .as_ref()
            .and_then(|p| self.check_regex(p, "`pattern`"));
        let values: Vec<Sp<String>> = obj
            .get("values")
            .map(|n| self.string_list(n, "an enum value"))
            .unwrap_or_default();
        let from = self.opt_string(&mut obj, "from", &what);
        if let Some(f) = &from {
            let ok = f.strip_prefix("env:").is_some_and(|n| {
                !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            }) || f
                .strip_prefix("ssm:")
                .is_some_and(|p| p.starts_with('/') && p.len() > 1);
            if !ok {
                self.push(
                    Diagnostic::new(Code::InvalidValue, f.span, format!("`from` of {what} cannot be `{}`", f.value))
                        .label("unknown source")
                        .help("write `env:NAME` for an environment variable or `ssm:/path` for SSM Parameter Store"),
                );
            }
        }
        let default_node = obj.get("default");
        let ty = ty?;
        if ty.value == ParamType::Enum && values.is_empty() {
            self.push(
                Diagnostic::new(
                    Code::MissingField,
                    obj.span,
                    format!("{what} is an enum without `values`"),
                )
                .label("`values` is required for enums"),
            );
        }
        if ty.value != ParamType::Enum {
            if let Some(span) = obj.key_span("values") {
                self.push(
                    Diagnostic::new(
                        Code::FieldNotAllowed,
                        span,
                        format!(
                            "`values` only applies to enum parameters, {what} is a {}",
                            ty.as_str()
                        ),
                    )
                    .label("not used"),
                );
            }
        }
        let default = default_node
            .and_then(|n| self.param_default(&what, ty.value, n, regex.as_ref(), &values));
        self.finish(obj, PARAM_FIELDS, &what);
        Some(Param {
            name_span: key.span,
            ty,
            description,
            default,
            required,
            pattern,
            values,
            from,
        })
    }

    pub(super) fn param_default(
        &mut self,
        what: &str,
        ty: ParamType,
        node: &Node,
        regex: Option<&regex::Regex>,
        values: &[Sp<String>],
    ) -> Option<Sp<serde_json::Value>> {
        let bad = |msg: String| {
            Diagnostic::new(Code::BadDefault, node.span, msg).label("invalid default")
        };
        let value = node.to_json();
        match (ty, &node.value) {
            (ParamType::Secret, _) => {
                self.push(
                    Diagnostic::new(Code::SecretDefault, node.span, format!("{what} is a secret and cannot have a default"))
                        .label("secret default")
                        .help("a default would put the secret in the file; use `from: env:NAME` or `from: ssm:/path`"),
                );
                return None;
            }
            (ParamType::Integer, Value::Int(_))
            | (ParamType::Number, Value::Int(_) | Value::Float(_))
            | (ParamType::Boolean, Value::Bool(_)) => {}
            (ParamType::String | ParamType::Enum, Value::Str(s)) => {
                if let Some(re) = regex {
                    if !full_match(re, s) {
                        self.push(bad(format!(
                            "default `{s}` of {what} does not match its pattern `{}`",
                            re.as_str()
                        )));
                        return None;
                    }
                }
                if ty == ParamType::Enum && !values.iter().any(|v| v.as_str() == s) {
                    let names: Vec<&str> = values.iter().map(|v| v.as_str()).collect();
                    self.push(
                        bad(format!("default `{s}` of {what} is not one of its values"))
                            .help(format!("values: {}", names.join(", "))),
                    );
                    return None;
                }
            }
            _ => {
                self.push(bad(format!(
                    "default of {what} must be {}, found {}",
                    type_noun(ty),
                    node.value.describe()
                )));
                return None;
            }
        }
        Some(Sp::new(value, node.span))
    }
}

fn full_match(re: &regex::Regex, s: &str) -> bool {
    re.find(s)
        .is_some_and(|m| m.start() == 0 && m.end() == s.len())
}

fn type_noun(ty: ParamType) -> &'static str {
    match ty {
        ParamType::String | ParamType::Secret => "a string",
        ParamType::Integer => "an integer",
        ParamType::Number => "a number",
        ParamType::Boolean => "true or false",
        ParamType::Enum => "one of its values",
    }
}

/// Check a parameter value given as text (`--param k=v`) against its declaration and
/// convert it to JSON. The error says what was expected.
pub fn coerce_param(param: &Param, text: &str) -> Result<serde_json::Value, String> {
    let value = match param.ty.value {
        ParamType::String | ParamType::Secret => serde_json::Value::String(text.to_string()),
        ParamType::Integer => {
            text.trim()
                .parse::<i64>()
                .map(Into::into)
                .map_err(|e| match e.kind() {
                    std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
                        format!(
                            "`{text}` is out of range for an integer ({} to {})",
                            i64::MIN,
                            i64::MAX
                        )
                    }
                    _ => format!("expected an integer, got `{text}`"),
                })?
        }
        ParamType::Number => text
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(serde_json::Value::Number)
            .ok_or_else(|| format!("expected a number, got `{text}`"))?,
        ParamType::Boolean => match text.trim() {
            "true" | "yes" | "1" => true.into(),
            "false" | "no" | "0" => false.into(),
            _ => return Err(format!("expected true or false, got `{text}`")),
        },
        ParamType::Enum => {
            if !param.values.iter().any(|v| v.as_str() == text) {
                let names: Vec<&str> = param.values.iter().map(|v| v.as_str()).collect();
                return Err(format!(
                    "expected one of {}, got `{text}`",
                    names.join(", ")
                ));
            }
            text.into()
        }
    };
    if let Some(pattern) = &param.pattern {
        if let Ok(re) = regex::Regex::new(pattern) {
            if !full_match(&re, text) {
                let shown = if param.ty.value == ParamType::Secret {
                    "the value"
                } else {
                    text
                };
                return Err(format!(
                    "`{shown}` does not match the pattern `{}`",
                    pattern.value
                ));
            }
        }
    }
    Ok(value)
}
