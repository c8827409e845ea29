//! Parameter values for a run: given on the command line, from a params file, from the
//! environment or Parameter Store (`from:`), defaults, or asked for. Every value is
//! coerced to its type and checked against its pattern and values before anything runs.

use runbook_core::Runbook;
use runbook_core::convert::coerce_param;
use runbook_core::model::{Param, ParamSource, ParamType};
use serde_json::Value;

use crate::backend::ParameterError;

/// Every problem with a run's parameters, one per line (all are found before reporting).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct ParamProblems(pub Vec<String>);

/// `--param` text that is not `NAME=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not NAME=VALUE")]
pub struct NotAnAssignment(pub String);

/// Where values come from, in order of precedence.
pub struct Sources<'a> {
    /// `NAME=VALUE` pairs given for this run, in the order given.
    pub given: &'a [(String, String)],
    /// How the front end takes `given`, for messages: `--param` (the CLI) names the flag
    /// in "unknown parameter `x` in --param" and "give --param x=VALUE".
    pub given_is: &'a str,
    /// `--params-file` contents (an object), or values an alert gave.
    pub file: &'a serde_json::Map<String, Value>,
    /// Where `file` came from, for messages: `the params file`, `the alert`.
    pub file_is: &'a str,
    /// Environment lookup for `from: env:NAME`.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Parameter Store lookup for `from: ssm:/path` (decrypted).
    pub ssm: &'a dyn Fn(&str) -> Result<String, ParameterError>,
    /// Ask the operator for a missing required value (`None`: cannot ask).
    pub ask: &'a mut dyn FnMut(&str, &Param) -> Option<String>,
}

impl std::fmt::Debug for Sources<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources")
            .field("given", &self.given.len())
            .finish_non_exhaustive()
    }
}

/// Resolved values and the secrets among them.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// Name → typed value (optional params without a value are absent).
    pub values: serde_json::Map<String, Value>,
    /// Values of secret params, for the mask.
    pub secrets: Vec<String>,
}

impl Resolved {
    /// The values with secrets replaced by `***`, for display and the journal.
    pub fn shown(&self, runbook: &Runbook) -> serde_json::Map<String, Value> {
        self.values
            .iter()
            .map(|(k, v)| {
                let secret = runbook
                    .params
                    .get(k)
                    .is_some_and(|p| p.ty.value == ParamType::Secret);
                let v = if secret {
                    Value::String(crate::mask::MASK.into())
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect()
    }
}

/// Resolve every parameter of `runbook`. On failure, every problem is listed (unknown
/// names, wrong types, pattern mismatches, missing values), one per line.
pub fn resolve(runbook: &Runbook, sources: Sources<'_>) -> Result<Resolved, ParamProblems> {
    let mut problems = Vec::new();
    let known = || runbook.params.keys().map(String::as_str);
    let unknown = |name: &str, origin: &str| {
        let hint = runbook_core::diag::did_you_mean(name, known()).unwrap_or_else(|| {
            if runbook.params.is_empty() {
                "this runbook takes no parameters".to_string()
            } else {
                format!("parameters: {}", known().collect::<Vec<_>>().join(", "))
            }
        });
        format!("unknown parameter `{name}` {origin}: {hint}")
    };
    for (k, _) in sources.given {
        if !runbook.params.contains_key(k) {
            problems.push(unknown(k, &format!("in {}", sources.given_is)));
        }
    }
    for k in sources.file.keys() {
        if !runbook.params.contains_key(k) {
            problems.push(unknown(k, &format!("in {}", sources.file_is)));
        }
    }
    let mut resolved = Resolved::default();
    let mut missing = Vec::new();
    for (name, p) in &runbook.params {
        let secret = p.ty.value == ParamType::Secret;
        let given = sources
            .given
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| (v.clone(), sources.given_is));
        let text = given
            .or_else(|| {
                sources
                    .file
                    .get(name)
                    .map(|v| (value_text(v), sources.file_is))
            })
            .map(Ok)
            .or_else(|| match p.source() {
                Some(ParamSource::Env(var)) => {
                    (sources.env)(var).map(|v| Ok((v, "the environment")))
                }
                Some(ParamSource::Ssm(path)) => Some(
                    (sources.ssm)(path)
                        .map(|v| (v, "Parameter Store"))
                        .map_err(|e| format!("parameter `{name}` (from ssm:{path}): {e}")),
                ),
                None => None,
            });
        let text = match text {
            Some(Ok(t)) => Some(t),
            Some(Err(e)) => {
                problems.push(e);
                continue;
            }
            None => None,
        };
        let value = match text {
            Some((t, origin)) => match coerce_param(p, &t) {
                Ok(v) => v,
                Err(e) => {
                    problems.push(format!("parameter `{name}` from {origin}: {e}"));
                    continue;
                }
            },
            None => match &p.default {
                Some(d) => d.value.clone(),
                None if p.is_required() => match (sources.ask)(name, p) {
                    Some(t) => match coerce_param(p, &t) {
                        Ok(v) => v,
                        Err(e) => {
                            problems.push(format!("parameter `{name}`: {e}"));
                            continue;
                        }
                    },
                    None => {
                        missing.push(name.clone());
                        continue;
                    }
                },
                None => continue,
            },
        };
        if secret {
            if let Value::String(s) = &value {
                resolved.secrets.push(s.clone());
            }
        }
        resolved.values.insert(name.clone(), value);
    }
    for name in &missing {
        let p = &runbook.params[name];
        let how = match &p.from {
            Some(from) => format!(
                "give {} {name}=VALUE or set {}",
                sources.given_is,
                from.value.trim_start_matches("env:")
            ),
            None => format!("give {} {name}=VALUE", sources.given_is),
        };
        let what = p
            .description
            .as_deref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        problems.push(format!("missing required parameter `{name}`{what}: {how}"));
    }
    if problems.is_empty() {
        Ok(resolved)
    } else {
        Err(ParamProblems(problems))
    }
}

/// A value as a person or a command line writes it: strings bare, the rest as JSON.
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Parse `NAME=VALUE`.
pub fn parse_assignment(text: &str) -> Result<(String, String), NotAnAssignment> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(NotAnAssignment(text.to_string())),
    }
}
