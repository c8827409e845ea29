//! The parts of a step, converted: its action (shell, http, ssm_command,
//! ssm_automation, wait, manual), captures, `on_fail`, `retry` and branch cases, each with
//! the local checks that need nothing but the part itself.

use indexmap::IndexMap;

use super::{Converter, is_snake_id};
use crate::diag::{Code, Diagnostic};
use crate::model::*;
use crate::yaml::{Key, Node, Value};

impl Converter<'_> {
    pub(super) fn action(&mut self, key: &str, node: &Node, step: &str) -> Option<Action> {
        let what = format!("`{key}` of {step}");
        Some(match key {
            "shell" => Action::Shell(self.shell(node, &what)?),
            "http" => Action::Http(self.http(node, &what)?),
            "wait" => Action::Wait(self.duration(node, &what)?),
            "manual" => Action::Manual(self.string(node, &what)?),
            "ssm_command" => Action::SsmCommand(self.ssm_command(node, &what)?),
            "ssm_automation" => Action::SsmAutomation(self.ssm_automation(node, &what)?),
            _ => return None,
        })
    }

    pub(super) fn shell(&mut self, node: &Node, what: &str) -> Option<ShellAction> {
        if !matches!(node.value, Value::Map(_)) {
            let run = self.string(node, what)?;
            return Some(ShellAction {
                run,
                env: IndexMap::new(),
                cwd: None,
                interpreter: None,
            });
        }
        let mut obj = self.obj(node, what)?;
        let run = self.req_string(&mut obj, "run", what);
        let env = obj
            .get("env")
            .map(|n| self.string_map(n, "`env`"))
            .unwrap_or_default();
        let cwd = self.opt_string(&mut obj, "cwd", what);
        let interpreter = self
            .opt_string(&mut obj, "interpreter", what)
            .map(|s| s.value);
        self.finish(obj, &["run", "env", "cwd", "interpreter"], what);
        Some(ShellAction {
            run: run?,
            env,
            cwd,
            interpreter,
        })
    }

    pub(super) fn http(&mut self, node: &Node, what: &str) -> Option<HttpAction> {
        let mut obj = self.obj(node, what)?;
        let method = obj
            .get("method")
            .and_then(|n| self.choice(n, "`method`", &HttpMethod::ALL))
            .map(|m| m.value)
            .unwrap_or_default();
        let url = self.req_string(&mut obj, "url", what);
        let headers = obj
            .get("headers")
            .map(|n| self.string_map(n, "`headers`"))
            .unwrap_or_default();
        let body = self.opt_string(&mut obj, "body", what);
        let status = match obj.get("status") {
            None => Vec::new(),
            Some(n) => {
                let items: Vec<&Node> = match &n.value {
                    Value::Seq(items) => items.iter().collect(),
                    _ => vec![n],
                };
                items
                    .into_iter()
                    .filter_map(|i| match i.value {
                        Value::Int(code) if (100..=599).contains(&code) => Some(code as u16),
                        _ => {
                            self.push(
                                Diagnostic::new(
                                    Code::InvalidValue,
                                    i.span,
                                    "`status` must be HTTP status codes between 100 and 599",
                                )
                                .label("not a status code"),
                            );
                            None
                        }
                    })
                    .collect()
            }
        };
        self.finish(obj, &["method", "url", "headers", "body", "status"], what);
        Some(HttpAction {
            method,
            url: url?,
            headers,
            body,
            status,
        })
    }

    pub(super) fn ssm_command(&mut self, node: &Node, what: &str) -> Option<SsmCommandAction> {
        let mut obj = self.obj(node, what)?;
        let document = self.opt_string(&mut obj, "document", what).map(|s| s.value);
        let commands = obj
            .get("commands")
            .map(|n| self.string_list(n, "a command"))
            .unwrap_or_default();
        let parameters = obj
            .get("parameters")
            .map(|n| self.list_map(n, "`parameters`"))
            .unwrap_or_default();
        let instance_ids = obj
            .get("instance_ids")
            .map(|n| self.string_list(n, "an instance id"))
            .unwrap_or_default();
        let tags_node = obj.get("tags");
        let tags = tags_node
            .map(|n| self.list_map(n, "`tags`"))
            .unwrap_or_default();
        if let Some(node) = tags_node.filter(|_| !instance_ids.is_empty()) {
            // AWS takes instance ids or targets, not both: the tags would be ignored.
            self.push(
                Diagnostic::new(
                    Code::FieldNotAllowed,
                    node.span,
                    format!("{what} has both `instance_ids` and `tags`"),
                )
                .label("these tags would be ignored: `instance_ids` already names the targets")
                .help(
                    "keep `instance_ids` to name the instances, or `tags` to select them, not both",
                ),
            );
        }
        let max_concurrency = self
            .opt_string(&mut obj, "max_concurrency", what)
            .map(|s| s.value);
        let max_errors = self
            .opt_string(&mut obj, "max_errors", what)
            .map(|s| s.value);
        let output_s3_bucket = self
            .opt_string(&mut obj, "output_s3_bucket", what)
            .map(|s| s.value);
        let output_s3_prefix = self
            .opt_string(&mut obj, "output_s3_prefix", what)
            .map(|s| s.value);
        let cloudwatch_log_group = self
            .opt_string(&mut obj, "cloudwatch_log_group", what)
            .map(|s| s.value);
        let comment = self.opt_string(&mut obj, "comment", what);
        if instance_ids.is_empty() && tags.is_empty() {
            self.push(
                Diagnostic::new(Code::MissingField, obj.span, format!("{what} has no targets"))
                    .label("no `instance_ids` or `tags`")
                    .help("name the instances with `instance_ids: [...]` or select them with `tags: {Key: [values]}`"),
            );
        }
        let default_doc = document
            .as_deref()
            .is_none_or(|d| d == "AWS-RunShellScript" || d == "AWS-RunPowerShellScript");
        if commands.is_empty() && default_doc && !parameters.contains_key("commands") {
            self.missing(&obj, "commands", what);
        }
        self.finish(
            obj,
            &[
                "document",
                "commands",
                "parameters",
                "instance_ids",
                "tags",
                "max_concurrency",
                "max_errors",
                "output_s3_bucket",
                "output_s3_prefix",
                "cloudwatch_log_group",
                "comment",
            ],
            what,
        );
        Some(SsmCommandAction {
            document,
            commands,
            parameters,
            instance_ids,
            tags,
            max_concurrency,
            max_errors,
            output_s3_bucket,
            output_s3_prefix,
            cloudwatch_log_group,
            comment,
        })
    }

    pub(super) fn ssm_automation(
        &mut self,
        node: &Node,
        what: &str,
    ) -> Option<SsmAutomationAction> {
        let mut obj = self.obj(node, what)?;
        let document = self.req_string(&mut obj, "document", what);
        let document_version = self
            .opt_string(&mut obj, "document_version", what)
            .map(|s| s.value);
        let parameters = obj
            .get("parameters")
            .map(|n| self.list_map(n, "`parameters`"))
            .unwrap_or_default();
        self.finish(obj, &["document", "document_version", "parameters"], what);
        Some(SsmAutomationAction {
            document: document?,
            document_version,
            parameters,
        })
    }

    pub(super) fn captures(&mut self, node: &Node, step: &str) -> IndexMap<String, Capture> {
        let mut out = IndexMap::new();
        let Some(obj) = self.obj(node, "`capture`") else {
            return out;
        };
        for (key, value) in obj.entries {
            if !is_snake_id(&key.name) {
                self.push(
                    Diagnostic::new(Code::BadId, key.span, format!("capture name `{}` is not snake_case", key.name))
                        .label("invalid name")
                        .help("captures are used as `steps.<id>.<name>`: use lowercase letters, digits and underscores"),
                );
            }
            if let Some(c) = self.capture(key, value, step) {
                out.insert(key.name.clone(), c);
            }
        }
        out
    }

    pub(super) fn capture(&mut self, key: &Key, node: &Node, step: &str) -> Option<Capture> {
        let what = format!("capture `{}` of {step}", key.name);
        let mut obj = self.obj(node, &what)?;
        let secret = obj
            .get("secret")
            .and_then(|n| self.bool(n, "`secret`"))
            .unwrap_or(false);
        let mut sources = Vec::new();
        if let Some(n) = obj.get("stdout") {
            sources.push(
                self.choice(n, "`stdout` capture type", &CaptureType::ALL)
                    .map(|t| CaptureSource::Stdout(t.value)),
            );
        }
        if let Some(n) = obj.get("json") {
            sources.push(self.string(n, "`json`").and_then(|expr| {
                if let Err(err) = jmespath::compile(&expr) {
                    let reason = match &err.reason {
                        jmespath::ErrorReason::Parse(msg) => msg.clone(),
                        other => other.to_string(),
                    };
                    let offset = crate::text::floor_boundary(&expr, err.offset);
                    let at = expr.locate(self.source, offset, crate::text::char_at(&expr, offset));
                    self.push(
                        Diagnostic::new(Code::JmespathSyntax, at, format!("`json` of {what} is not valid JMESPath: {reason}"))
                            .label("invalid JMESPath")
                            .help("JMESPath is the language of `aws --query`, e.g. `DBInstances[0].DBInstanceStatus`"),
                    );
                    None
                } else {
                    Some(CaptureSource::Json(expr))
                }
            }));
        }
        if let Some(n) = obj.get("regex") {
            sources.push(self.string(n, "`regex`").and_then(|pattern| {
                let re = self.check_regex(&pattern, "`regex`")?;
                if re.capture_names().flatten().next().is_none() {
                    self.push(
                        Diagnostic::new(Code::InvalidRegex, pattern.span, format!("`regex` of {what} has no named group"))
                            .label("no `(?P<name>...)` group")
                            .help("the capture's value is the first named group, e.g. `(?P<value>[0-9]+)`"),
                    );
                    return None;
                }
                Some(CaptureSource::Regex(pattern))
            }));
        }
        let count = sources.len();
        if count != 1 {
            self.push(
                Diagnostic::new(
                    Code::InvalidValue,
                    obj.span,
                    format!(
                        "{what} must have exactly one of `stdout`, `json` or `regex`, found {count}"
                    ),
                )
                .label("one source per capture"),
            );
        }
        let convert = obj.get("as").and_then(|n| {
            let t = self.choice(n, "capture conversion `as`", &CaptureType::ALL)?;
            if obj.get("stdout").is_some() {
                self.push(
                    Diagnostic::new(
                        Code::FieldNotAllowed,
                        t.span,
                        format!("`as` of {what} does not apply to a `stdout` capture"),
                    )
                    .label("not used")
                    .help("a `stdout` capture names its type itself: `stdout: int`"),
                );
                return None;
            }
            Some(t.value)
        });
        self.finish(obj, &["stdout", "json", "regex", "as", "secret"], &what);
        let source = sources.pop().flatten().filter(|_| count == 1)?;
        Some(Capture {
            name_span: key.span,
            source,
            convert,
            secret,
        })
    }

    pub(super) fn on_fail(&mut self, node: &Node) -> Option<Sp<OnFail>> {
        let options = [
            ("abort", OnFailSimple::Abort),
            ("continue", OnFailSimple::Continue),
            ("escalate", OnFailSimple::Escalate),
        ];
        if !matches!(node.value, Value::Map(_)) {
            let simple = self.choice(node, "`on_fail`", &options)?;
            return Some(Sp::new(OnFail::Simple(simple.value), node.span));
        }
        let what = "`on_fail`";
        let mut obj = self.obj(node, what)?;
        let result = if obj.has("goto") {
            self.req_string(&mut obj, "goto", what)
                .map(|goto| OnFail::Goto { goto })
        } else if obj.has("retry_from") {
            let target = self.req_string(&mut obj, "retry_from", what);
            let attempts = match obj.get("attempts") {
                Some(n) => self.u32(n, "`attempts`"),
                None => {
                    self.missing(&obj, "attempts", "`on_fail: {retry_from}`");
                    None
                }
            };
            match (target, attempts) {
                (Some(retry_from), Some(attempts)) => Some(OnFail::RetryFrom {
                    retry_from,
                    attempts,
                }),
                _ => None,
            }
        } else {
            self.push(
                Diagnostic::new(Code::InvalidValue, node.span, "`on_fail` mapping must have `goto` or `retry_from`")
                    .label("neither `goto` nor `retry_from`")
                    .help("write `abort`, `continue`, `escalate`, `{goto: STEP}` or `{retry_from: STEP, attempts: N}`"),
            );
            None
        };
        self.finish(obj, &["goto", "retry_from", "attempts"], what);
        result.map(|r| Sp::new(r, node.span))
    }

    pub(super) fn retry(&mut self, node: &Node) -> Option<Retry> {
        let what = "`retry`";
        let mut obj = self.obj(node, what)?;
        let attempts = match obj.get("attempts") {
            Some(n) => self.u32(n, "`attempts`"),
            None => {
                self.missing(&obj, "attempts", what);
                None
            }
        };
        let interval = obj
            .get("interval")
            .and_then(|n| self.duration(n, "`interval`"));
        let backoff = obj.get("backoff").and_then(|n| self.f64(n, "`backoff`"));
        if let (Some(b), Some(n)) = (backoff, obj.get("backoff")) {
            if !(1.0..=10.0).contains(&b) {
                self.push(
                    Diagnostic::new(
                        Code::InvalidValue,
                        n.span,
                        "`backoff` must be between 1.0 and 10.0",
                    )
                    .label("out of range")
                    .help("1.0 keeps the interval constant, 2.0 doubles it after each attempt"),
                );
            }
        }
        if attempts == Some(0) {
            if let Some(n) = obj.get("attempts") {
                self.push(
                    Diagnostic::new(Code::InvalidValue, n.span, "`attempts` must be at least 1")
                        .label("zero attempts"),
                );
            }
        }
        self.finish(obj, &["attempts", "interval", "backoff"], what);
        Some(Retry {
            attempts: attempts?,
            interval,
            backoff,
        })
    }

    pub(super) fn case(&mut self, node: &Node) -> Option<Case> {
        let what = "a branch case";
        let mut obj = self.obj(node, what)?;
        let when = self.req_string(&mut obj, "when", what);
        let goto = self.req_string(&mut obj, "goto", what);
        self.finish(obj, &["when", "goto"], what);
        Some(Case {
            when: when?,
            goto: goto?,
        })
    }
}
