//! Rendering a step: its templates filled in with the values of a run (or, for `plan`,
//! with placeholders), giving the exact action that will be carried out.
//!
//! [`RenderedAction`] is what the executor runs, what `plan` and dry runs print and
//! what the journal records, so all three always agree on what a step does.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{Action, Step};
use crate::template::{Context, Renderer};

/// A step with every template rendered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenderedStep {
    /// Title for people.
    pub title: String,
    /// Confirmation question of an `act`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirm: Option<String>,
    /// The action; `None` for branches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<RenderedAction>,
}

/// An action ready to run: every template rendered with the escaping of its field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RenderedAction {
    /// A script for `interpreter -c`.
    Shell {
        /// The script, inserted values shell-quoted.
        run: String,
        /// Extra environment variables.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        env: BTreeMap<String, String>,
        /// Working directory.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cwd: Option<String>,
        /// Interpreter, `bash` unless the step says otherwise.
        interpreter: String,
    },
    /// An HTTP request.
    Http {
        /// Method.
        method: String,
        /// URL, inserted values percent-encoded.
        url: String,
        /// Request headers.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, String>,
        /// Request body.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
        /// Accepted status codes; empty means any 2xx.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        status: Vec<u16>,
    },
    /// Wait for a while.
    Wait {
        /// As written (`30s`).
        duration: String,
        /// In milliseconds.
        ms: u64,
    },
    /// Instructions a person carries out and acknowledges.
    Manual {
        /// The instructions.
        instructions: String,
    },
    /// SSM Run Command (`SendCommand`).
    SsmCommand(SsmCommandCall),
    /// SSM Automation (`StartAutomationExecution`).
    SsmAutomation {
        /// Document name.
        document: String,
        /// Document version.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        document_version: Option<String>,
        /// Document parameters.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        parameters: BTreeMap<String, Vec<String>>,
    },
}

/// A rendered `SendCommand` call: everything the request carries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SsmCommandCall {
    /// Document name.
    pub document: String,
    /// The `commands` parameter, inserted values shell-quoted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<String>,
    /// Other document parameters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, Vec<String>>,
    /// Target instance ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instance_ids: Vec<String>,
    /// Target tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, Vec<String>>,
    /// Rate control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<String>,
    /// Error threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_errors: Option<String>,
    /// Comment recorded with the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// S3 bucket for the full output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_s3_bucket: Option<String>,
    /// Key prefix in the output bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_s3_prefix: Option<String>,
    /// CloudWatch Logs group for the output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloudwatch_log_group: Option<String>,
}

/// A template that could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderError {
    /// Which field (`shell`, `title`, `http.url`, ...).
    pub field: String,
    /// What went wrong.
    pub message: String,
}

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot render `{}`: {}", self.field, self.message)
    }
}

impl RenderedAction {
    /// The action as lines for people: `$ command`, `GET url`, `wait 30s`, ...
    pub fn lines(&self) -> Vec<String> {
        match self {
            RenderedAction::Shell { run, env, cwd, .. } => {
                let mut lines: Vec<String> = run
                    .lines()
                    .enumerate()
                    .map(|(i, l)| {
                        if i == 0 {
                            format!("$ {l}")
                        } else {
                            format!("  {l}")
                        }
                    })
                    .collect();
                lines.extend(env.iter().map(|(k, v)| format!("env {k}={v}")));
                if let Some(c) = cwd {
                    lines.push(format!("cwd {c}"));
                }
                lines
            }
            RenderedAction::Http {
                method,
                url,
                headers,
                body,
                status,
            } => {
                let status = if status.is_empty() {
                    "2xx".to_string()
                } else {
                    status
                        .iter()
                        .map(u16::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let mut lines = vec![format!("{method} {url}  (expect status {status})")];
                lines.extend(headers.iter().map(|(k, v)| format!("header {k}: {v}")));
                if let Some(b) = body {
                    lines.push(format!("body {b}"));
                }
                lines
            }
            RenderedAction::Wait { duration, .. } => vec![format!("wait {duration}")],
            RenderedAction::Manual { instructions } => instructions
                .lines()
                .map(|l| format!("manual: {l}"))
                .collect(),
            RenderedAction::SsmCommand(SsmCommandCall {
                document,
                commands,
                instance_ids,
                tags,
                max_concurrency,
                max_errors,
                ..
            }) => {
                let targets = if instance_ids.is_empty() {
                    tags.iter()
                        .map(|(k, v)| format!("tag:{k}={}", v.join(",")))
                        .collect::<Vec<_>>()
                        .join(" ")
                } else {
                    instance_ids.join(", ")
                };
                let mut lines = vec![format!(
                    "aws ssm SendCommand document={document} targets=[{targets}]"
                )];
                if let Some(mc) = max_concurrency {
                    lines.push(format!("max concurrency {mc}"));
                }
                if let Some(me) = max_errors {
                    lines.push(format!("max errors {me}"));
                }
                lines.extend(commands.iter().map(|x| format!("$ {x}")));
                lines
            }
            RenderedAction::SsmAutomation {
                document,
                parameters,
                ..
            } => {
                let shown: Vec<String> = parameters
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.join(",")))
                    .collect();
                vec![
                    format!(
                        "aws ssm StartAutomationExecution document={document} {}",
                        shown.join(" ")
                    )
                    .trim_end()
                    .to_string(),
                ]
            }
        }
    }

    /// Replace every occurrence of each secret in every text of the action.
    pub fn masked(&self, mask: &dyn Fn(&str) -> String) -> RenderedAction {
        let map = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
            m.iter().map(|(k, v)| (k.clone(), mask(v))).collect()
        };
        let list_map = |m: &BTreeMap<String, Vec<String>>| -> BTreeMap<String, Vec<String>> {
            m.iter()
                .map(|(k, v)| (k.clone(), v.iter().map(|x| mask(x)).collect()))
                .collect()
        };
        match self {
            RenderedAction::Shell {
                run,
                env,
                cwd,
                interpreter,
            } => RenderedAction::Shell {
                run: mask(run),
                env: map(env),
                cwd: cwd.as_deref().map(mask),
                interpreter: interpreter.clone(),
            },
            RenderedAction::Http {
                method,
                url,
                headers,
                body,
                status,
            } => RenderedAction::Http {
                method: method.clone(),
                url: mask(url),
                headers: map(headers),
                body: body.as_deref().map(mask),
                status: status.clone(),
            },
            RenderedAction::Wait { .. } => self.clone(),
            RenderedAction::Manual { instructions } => RenderedAction::Manual {
                instructions: mask(instructions),
            },
            RenderedAction::SsmCommand(call) => RenderedAction::SsmCommand(SsmCommandCall {
                commands: call.commands.iter().map(|c| mask(c)).collect(),
                parameters: list_map(&call.parameters),
                instance_ids: call.instance_ids.iter().map(|c| mask(c)).collect(),
                tags: list_map(&call.tags),
                comment: call.comment.as_deref().map(mask),
                ..call.clone()
            }),
            RenderedAction::SsmAutomation {
                document,
                document_version,
                parameters,
            } => RenderedAction::SsmAutomation {
                document: document.clone(),
                document_version: document_version.clone(),
                parameters: list_map(parameters),
            },
        }
    }
}

/// The template data for a static plan (`plan`, `diff`): the given parameter values, and
/// placeholders (`<steps.id.name>`, `<env.NAME>`, `<run.id>`) for what only a run knows.
pub fn static_data(
    rb: &crate::model::Runbook,
    params: &serde_json::Map<String, serde_json::Value>,
) -> serde_json::Value {
    use serde_json::Value;
    let steps: serde_json::Map<String, Value> = rb
        .steps
        .iter()
        .map(|s| {
            let fields: serde_json::Map<String, Value> = s
                .capture
                .keys()
                .map(String::as_str)
                .chain(crate::facts::builtins(s).iter().copied())
                .map(|f| {
                    (
                        f.to_string(),
                        Value::String(format!("<steps.{}.{f}>", s.id.value)),
                    )
                })
                .collect();
            (s.id.value.clone(), Value::Object(fields))
        })
        .collect();
    let env: serde_json::Map<String, Value> = rb
        .env
        .iter()
        .map(|e| (e.value.clone(), Value::String(format!("<env.{}>", e.value))))
        .collect();
    serde_json::json!({
        "params": params,
        "steps": steps,
        "env": env,
        "run": { "id": "<run.id>", "operator": "<run.operator>", "mode": "<run.mode>", "started_at": "<run.started_at>", "runbook": rb.name.value },
    })
}

/// `data` as one step sees it: `steps` holds only the steps it reads (`Plan::reads`), so
/// rendering a step costs what the step reads, not what the runbook holds (the template
/// engine copies the data it is given).
pub fn for_step(
    data: &serde_json::Value,
    rb: &crate::model::Runbook,
    reads: &[usize],
) -> serde_json::Value {
    use serde_json::Value;
    let mut out = serde_json::Map::new();
    if let Value::Object(all) = data {
        for (k, v) in all {
            if k == "steps" {
                let steps: serde_json::Map<String, Value> = reads
                    .iter()
                    .filter_map(|&r| {
                        let id = &rb.steps.get(r)?.id.value;
                        Some((id.clone(), v.get(id)?.clone()))
                    })
                    .collect();
                out.insert(k.clone(), Value::Object(steps));
            } else {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// Render a step's title, confirmation and action against `data`
/// (`{params, steps, env, run}`).
pub fn render_step(
    r: &Renderer,
    step: &Step,
    data: &serde_json::Value,
) -> Result<RenderedStep, RenderError> {
    let render = |ctx: Context, field: &str, text: &str| {
        r.render(ctx, text, data).map_err(|message| RenderError {
            field: field.to_string(),
            message,
        })
    };
    let list = |field: &str, items: &[crate::model::Sp<String>], ctx: Context| {
        items
            .iter()
            .map(|x| render(ctx, field, x))
            .collect::<Result<Vec<_>, _>>()
    };
    let list_map = |field: &str,
                    m: &indexmap::IndexMap<String, Vec<crate::model::Sp<String>>>|
     -> Result<BTreeMap<String, Vec<String>>, RenderError> {
        m.iter()
            .map(|(k, v)| Ok((k.clone(), list(field, v, Context::Text)?)))
            .collect()
    };
    let opt = |field: &str, text: &Option<crate::model::Sp<String>>| {
        text.as_ref()
            .map(|t| render(Context::Text, field, t))
            .transpose()
    };
    let map = |field: &str,
               m: &indexmap::IndexMap<String, crate::model::Sp<String>>|
     -> Result<BTreeMap<String, String>, RenderError> {
        m.iter()
            .map(|(k, v)| Ok((k.clone(), render(Context::Text, field, v)?)))
            .collect()
    };
    let title = render(Context::Text, "title", &step.title)?;
    let confirm = opt("confirm", &step.confirm)?;
    let action = match &step.action {
        None => None,
        Some(Action::Shell(sh)) => Some(RenderedAction::Shell {
            run: render(Context::Shell, "shell", &sh.run)?,
            env: map("shell.env", &sh.env)?,
            cwd: opt("shell.cwd", &sh.cwd)?,
            interpreter: sh.interpreter.clone().unwrap_or_else(|| "bash".into()),
        }),
        Some(Action::Http(h)) => Some(RenderedAction::Http {
            method: h.method.as_str().to_string(),
            url: render(Context::Url, "http.url", &h.url)?,
            headers: map("http.headers", &h.headers)?,
            body: opt("http.body", &h.body)?,
            status: h.status.clone(),
        }),
        Some(Action::Wait(d)) => Some(RenderedAction::Wait {
            duration: d.value.text.clone(),
            ms: u64::try_from(d.value.value.as_millis()).unwrap_or(u64::MAX),
        }),
        Some(Action::Manual(text)) => Some(RenderedAction::Manual {
            instructions: render(Context::Text, "manual", text)?,
        }),
        Some(Action::SsmCommand(c)) => Some(RenderedAction::SsmCommand(SsmCommandCall {
            document: c
                .document
                .clone()
                .unwrap_or_else(|| "AWS-RunShellScript".into()),
            commands: list("ssm_command.commands", &c.commands, Context::Shell)?,
            parameters: list_map("ssm_command.parameters", &c.parameters)?,
            instance_ids: list("ssm_command.instance_ids", &c.instance_ids, Context::Text)?,
            tags: list_map("ssm_command.tags", &c.tags)?,
            max_concurrency: c.max_concurrency.clone(),
            max_errors: c.max_errors.clone(),
            comment: opt("ssm_command.comment", &c.comment)?,
            output_s3_bucket: c.output_s3_bucket.clone(),
            output_s3_prefix: c.output_s3_prefix.clone(),
            cloudwatch_log_group: c.cloudwatch_log_group.clone(),
        })),
        Some(Action::SsmAutomation(a)) => Some(RenderedAction::SsmAutomation {
            document: a.document.value.clone(),
            document_version: a.document_version.clone(),
            parameters: list_map("ssm_automation.parameters", &a.parameters)?,
        }),
    };
    Ok(RenderedStep {
        title,
        confirm,
        action,
    })
}

impl RenderedAction {
    /// How long a `wait` lasts.
    pub fn wait_duration(&self) -> Option<Duration> {
        match self {
            RenderedAction::Wait { ms, .. } => Some(Duration::from_millis(*ms)),
            _ => None,
        }
    }
}
