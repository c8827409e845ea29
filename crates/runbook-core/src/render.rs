//! Rendering a step: its templates filled in with the values of a run (or, for `plan`,
//! with placeholders), giving the exact action that will be carried out.
//!
//! [`RenderedAction`] is what the executor runs, what `plan` and dry runs print and
//! what the journal records, so all three always agree on what a step does.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{Action, Sp, Step};
use crate::template::{Context, Renderer};

/// A step with every template rendered.
///
/// `T` is what stands in each templated field: the rendered text (`String`, the
/// default), or the template itself ([`templates`]). [`RenderedStep::try_map`] is the
/// one list of a step's templated fields with their escaping, so validation, the reads
/// of a step, rendering and masking cannot disagree about which fields are templates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenderedStep<T = String> {
    /// Title for people.
    pub title: T,
    /// Confirmation question of an `act`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirm: Option<T>,
    /// The action; `None` for branches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<RenderedAction<T>>,
}

/// An action ready to run: every template rendered with the escaping of its field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", bound(deserialize = "T: Deserialize<'de>"))]
pub enum RenderedAction<T = String> {
    /// A script for `interpreter -c`.
    Shell {
        /// The script, inserted values shell-quoted.
        run: T,
        /// Extra environment variables.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        env: BTreeMap<String, T>,
        /// Working directory.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cwd: Option<T>,
        /// Interpreter, `bash` unless the step says otherwise.
        interpreter: String,
    },
    /// An HTTP request.
    Http {
        /// Method.
        method: String,
        /// URL, inserted values percent-encoded.
        url: T,
        /// Request headers.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, T>,
        /// Request body.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<T>,
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
        instructions: T,
    },
    /// SSM Run Command (`SendCommand`).
    SsmCommand(SsmCommandCall<T>),
    /// SSM Automation (`StartAutomationExecution`).
    SsmAutomation {
        /// Document name.
        document: String,
        /// Document version.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        document_version: Option<String>,
        /// Document parameters.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        parameters: BTreeMap<String, Vec<T>>,
    },
}

/// A rendered `SendCommand` call: everything the request carries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
pub struct SsmCommandCall<T = String> {
    /// Document name.
    pub document: String,
    /// The `commands` parameter, inserted values shell-quoted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<T>,
    /// Other document parameters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, Vec<T>>,
    /// Target instance ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instance_ids: Vec<T>,
    /// Target tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, Vec<T>>,
    /// Rate control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<String>,
    /// Error threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_errors: Option<String>,
    /// Comment recorded with the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<T>,
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

    /// Replace every occurrence of each secret in every templated text of the action.
    pub fn masked(&self, mask: &dyn Fn(&str) -> String) -> RenderedAction {
        let masked: Result<_, std::convert::Infallible> = self.try_map(&mut |_, _, t| Ok(mask(t)));
        match masked {
            Ok(a) => a,
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
    templates(step).try_map(&mut |field, ctx, text: &&Sp<String>| {
        r.render(ctx, text, data).map_err(|message| RenderError {
            field: field.to_string(),
            message,
        })
    })
}

/// A step with its templates, unrendered, where the rendered text will go; what is not a
/// template (the interpreter, the method, defaults) is already final.
pub fn templates(step: &Step) -> RenderedStep<&Sp<String>> {
    fn by_key<V>(m: &indexmap::IndexMap<String, V>) -> BTreeMap<String, &V> {
        m.iter().map(|(k, v)| (k.clone(), v)).collect()
    }
    fn lists_by_key(
        m: &indexmap::IndexMap<String, Vec<Sp<String>>>,
    ) -> BTreeMap<String, Vec<&Sp<String>>> {
        m.iter()
            .map(|(k, v)| (k.clone(), v.iter().collect()))
            .collect()
    }
    let action = step.action.as_ref().map(|action| match action {
        Action::Shell(sh) => RenderedAction::Shell {
            run: &sh.run,
            env: by_key(&sh.env),
            cwd: sh.cwd.as_ref(),
            interpreter: sh.interpreter.clone().unwrap_or_else(|| "bash".into()),
        },
        Action::Http(h) => RenderedAction::Http {
            method: h.method.as_str().to_string(),
            url: &h.url,
            headers: by_key(&h.headers),
            body: h.body.as_ref(),
            status: h.status.clone(),
        },
        Action::Wait(d) => RenderedAction::Wait {
            duration: d.value.text.clone(),
            ms: u64::try_from(d.value.value.as_millis()).unwrap_or(u64::MAX),
        },
        Action::Manual(text) => RenderedAction::Manual { instructions: text },
        Action::SsmCommand(c) => RenderedAction::SsmCommand(SsmCommandCall {
            document: c
                .document
                .clone()
                .unwrap_or_else(|| "AWS-RunShellScript".into()),
            commands: c.commands.iter().collect(),
            parameters: lists_by_key(&c.parameters),
            instance_ids: c.instance_ids.iter().collect(),
            tags: lists_by_key(&c.tags),
            max_concurrency: c.max_concurrency.clone(),
            max_errors: c.max_errors.clone(),
            comment: c.comment.as_ref(),
            output_s3_bucket: c.output_s3_bucket.clone(),
            output_s3_prefix: c.output_s3_prefix.clone(),
            cloudwatch_log_group: c.cloudwatch_log_group.clone(),
        }),
        Action::SsmAutomation(a) => RenderedAction::SsmAutomation {
            document: a.document.value.clone(),
            document_version: a.document_version.clone(),
            parameters: lists_by_key(&a.parameters),
        },
    });
    RenderedStep {
        title: &step.title,
        confirm: step.confirm.as_ref(),
        action,
    }
}

/// Every templated field of a step with the escaping its output gets, in the order of
/// [`RenderedStep::try_map`]: what validation checks and what a step reads.
pub fn step_templates(step: &Step) -> Vec<(&Sp<String>, Context)> {
    let mut out = Vec::new();
    let listed: Result<_, std::convert::Infallible> =
        templates(step).try_map(&mut |_, ctx, t: &&Sp<String>| {
            out.push((*t, ctx));
            Ok(())
        });
    let Ok(_) = listed;
    out
}

impl<T> RenderedStep<T> {
    /// Each templated field of the step (title, confirmation, the action's: see
    /// [`RenderedAction::try_map`]) through `f`, given the field's name and escaping.
    pub fn try_map<U, E>(
        &self,
        f: &mut impl FnMut(&str, Context, &T) -> Result<U, E>,
    ) -> Result<RenderedStep<U>, E> {
        Ok(RenderedStep {
            title: f("title", Context::Text, &self.title)?,
            confirm: one(f, "confirm", Context::Text, self.confirm.as_ref())?,
            action: self.action.as_ref().map(|a| a.try_map(f)).transpose()?,
        })
    }
}

impl<T> RenderedAction<T> {
    /// Each templated field of the action through `f`, given the field's name (as
    /// [`RenderError`] names it) and its escaping: shell scripts and Run Command
    /// commands are shell-quoted, URLs percent-encoded, every other text plain. The
    /// fields that are not templates are copied. This is the one list of them.
    pub fn try_map<U, E>(
        &self,
        f: &mut impl FnMut(&str, Context, &T) -> Result<U, E>,
    ) -> Result<RenderedAction<U>, E> {
        use Context::{Shell, Text, Url};
        Ok(match self {
            RenderedAction::Shell {
                run,
                env,
                cwd,
                interpreter,
            } => RenderedAction::Shell {
                run: f("shell", Shell, run)?,
                env: values(f, "shell.env", env)?,
                cwd: one(f, "shell.cwd", Text, cwd.as_ref())?,
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
                url: f("http.url", Url, url)?,
                headers: values(f, "http.headers", headers)?,
                body: one(f, "http.body", Text, body.as_ref())?,
                status: status.clone(),
            },
            RenderedAction::Wait { duration, ms } => RenderedAction::Wait {
                duration: duration.clone(),
                ms: *ms,
            },
            RenderedAction::Manual { instructions } => RenderedAction::Manual {
                instructions: f("manual", Text, instructions)?,
            },
            RenderedAction::SsmCommand(c) => RenderedAction::SsmCommand(SsmCommandCall {
                document: c.document.clone(),
                commands: list(f, "ssm_command.commands", Shell, &c.commands)?,
                parameters: lists(f, "ssm_command.parameters", &c.parameters)?,
                instance_ids: list(f, "ssm_command.instance_ids", Text, &c.instance_ids)?,
                tags: lists(f, "ssm_command.tags", &c.tags)?,
                max_concurrency: c.max_concurrency.clone(),
                max_errors: c.max_errors.clone(),
                comment: one(f, "ssm_command.comment", Text, c.comment.as_ref())?,
                output_s3_bucket: c.output_s3_bucket.clone(),
                output_s3_prefix: c.output_s3_prefix.clone(),
                cloudwatch_log_group: c.cloudwatch_log_group.clone(),
            }),
            RenderedAction::SsmAutomation {
                document,
                document_version,
                parameters,
            } => RenderedAction::SsmAutomation {
                document: document.clone(),
                document_version: document_version.clone(),
                parameters: lists(f, "ssm_automation.parameters", parameters)?,
            },
        })
    }
}

fn one<T, U, E>(
    f: &mut impl FnMut(&str, Context, &T) -> Result<U, E>,
    field: &str,
    ctx: Context,
    t: Option<&T>,
) -> Result<Option<U>, E> {
    t.map(|t| f(field, ctx, t)).transpose()
}

fn list<T, U, E>(
    f: &mut impl FnMut(&str, Context, &T) -> Result<U, E>,
    field: &str,
    ctx: Context,
    items: &[T],
) -> Result<Vec<U>, E> {
    items.iter().map(|t| f(field, ctx, t)).collect()
}

fn values<T, U, E>(
    f: &mut impl FnMut(&str, Context, &T) -> Result<U, E>,
    field: &str,
    m: &BTreeMap<String, T>,
) -> Result<BTreeMap<String, U>, E> {
    m.iter()
        .map(|(k, v)| Ok((k.clone(), f(field, Context::Text, v)?)))
        .collect()
}

fn lists<T, U, E>(
    f: &mut impl FnMut(&str, Context, &T) -> Result<U, E>,
    field: &str,
    m: &BTreeMap<String, Vec<T>>,
) -> Result<BTreeMap<String, Vec<U>>, E> {
    m.iter()
        .map(|(k, v)| Ok((k.clone(), list(f, field, Context::Text, v)?)))
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A secret in every templated field of every kind of action: rendering fills each
    /// field the validator checks, and masking hides it in each one.
    #[test]
    fn the_one_list_drives_validation_rendering_and_masking() {
        let text = r#"
name: every-field
title: "{{params.s}}"
params:
  s: {type: secret}
steps:
  - id: sh
    kind: act
    title: "t {{params.s}}"
    confirm: "c {{params.s}}"
    shell: {run: "echo {{params.s}}", env: {A: "{{params.s}}"}, cwd: "/tmp/{{params.s}}"}
  - id: web
    kind: check
    title: "t {{params.s}}"
    http: {url: "http://127.0.0.1/{{params.s}}", headers: {X: "{{params.s}}"}, body: "{{params.s}}", method: POST}
  - id: ask
    kind: check
    title: "t {{params.s}}"
    manual: "m {{params.s}}"
  - id: fleet
    kind: check
    title: "t {{params.s}}"
    ssm_command:
      commands: ["echo {{params.s}}"]
      parameters: {p: ["{{params.s}}"]}
      tags: {Role: ["{{params.s}}"]}
      comment: "{{params.s}}"
  - id: auto
    kind: check
    title: "t {{params.s}}"
    ssm_automation:
      document: AWS-RestartEC2Instance
      parameters: {InstanceId: ["{{params.s}}"]}
"#;
        let checked = crate::check(text, Some("every-field.yaml"));
        let rb = checked.runbook.as_ref().expect("the runbook parses");
        let r = Renderer::new();
        let data =
            serde_json::json!({"params": {"s": "hunter2"}, "steps": {}, "env": {}, "run": {}});
        let mask = |t: &str| t.replace("hunter2", "***");
        let counts = [5, 4, 2, 5, 2];
        for (step, want) in rb.steps.iter().zip(counts) {
            let templates = step_templates(step);
            assert_eq!(templates.len(), want, "{}", step.id.value);
            let rendered = render_step(&r, step, &data).unwrap();
            let action = rendered.action.clone().unwrap();
            let mut filled = 0;
            rendered
                .try_map(&mut |_, _, t: &String| {
                    assert!(t.contains("hunter2"), "{t}");
                    filled += 1;
                    Ok::<_, ()>(())
                })
                .unwrap();
            assert_eq!(filled, want, "{}", step.id.value);
            let masked = serde_json::to_string(&action.masked(&mask)).unwrap();
            assert!(!masked.contains("hunter2"), "{masked}");
        }
    }
}
