//! Spanned YAML tree → [`ScenarioFile`], every structural problem located.

use super::{Converter, Obj};
use crate::diag::{Code, Diagnostic};
use crate::model::Sp;
use crate::scenario::*;
use crate::yaml::{Key, Node, Value};

const FILE_FIELDS: &[&str] = &["runbook", "scenarios"];
const SCENARIO_FIELDS: &[&str] = &[
    "name",
    "description",
    "params",
    "yes",
    "dry_run",
    "answers",
    "results",
    "expect",
];
const RESULT_FIELDS: &[&str] = &[
    "exit_code",
    "stdout",
    "stderr",
    "status",
    "body",
    "error",
    "instances",
    "outputs",
    "failure",
    "takes",
];
const INVOCATION_FIELDS: &[&str] = &["status", "exit_code", "stdout", "stderr"];
const EXPECT_FIELDS: &[&str] = &[
    "status",
    "exit_code",
    "path",
    "skipped",
    "not_run",
    "steps",
    "commands",
    "captures",
    "escalation",
];
const ANSWERS: [(&str, ScriptedAnswer); 5] = [
    ("approve", ScriptedAnswer::Approve),
    ("done", ScriptedAnswer::Approve),
    ("decline", ScriptedAnswer::Decline),
    ("skip", ScriptedAnswer::Skip),
    ("abort", ScriptedAnswer::Abort),
];
const RUN_STATUSES: &[&str] = &[
    "succeeded",
    "failed",
    "escalated",
    "aborted",
    "interrupted",
    "runbook_error",
];
const STEP_STATUSES: &[&str] = &[
    "succeeded",
    "failed",
    "skipped",
    "declined",
    "not_executed",
    "pending",
];

/// Keys starting with `x-` are the author's own (a place for YAML anchors shared by
/// scenarios): not part of the format, never reported.
fn extension_keys(obj: &mut Obj<'_>) {
    for (i, (k, _)) in obj.entries.iter().enumerate() {
        if k.name.starts_with("x-") {
            obj.used[i] = true;
        }
    }
}

impl Converter<'_> {
    /// A whole scenario file.
    pub(crate) fn scenario_file(&mut self, root: &Node) -> Option<ScenarioFile> {
        let what = "the scenario file";
        let mut obj = self.obj(root, what)?;
        extension_keys(&mut obj);
        let runbook = self.opt_string(&mut obj, "runbook", what);
        let scenarios = match obj.get("scenarios") {
            Some(n) => self
                .seq(n, "`scenarios`")
                .iter()
                .enumerate()
                .filter_map(|(i, n)| self.scenario(i, n))
                .collect(),
            None => {
                self.missing(&obj, "scenarios", what);
                Vec::new()
            }
        };
        self.finish(obj, FILE_FIELDS, what);
        Some(ScenarioFile { runbook, scenarios })
    }

    fn scenario(&mut self, index: usize, node: &Node) -> Option<Scenario> {
        let what = format!("scenario {}", index + 1);
        let mut obj = self.obj(node, &what)?;
        extension_keys(&mut obj);
        let name = self.req_string(&mut obj, "name", &what);
        let description = self
            .opt_string(&mut obj, "description", &what)
            .map(|s| s.value);
        let params = obj
            .get("params")
            .map(|n| self.entries(n, "`params`", |_, v| Some(v.to_json())))
            .unwrap_or_default();
        let yes = obj
            .get("yes")
            .and_then(|n| self.bool(n, "`yes`"))
            .unwrap_or(false);
        let dry_run = obj
            .get("dry_run")
            .and_then(|n| self.bool(n, "`dry_run`"))
            .unwrap_or(false);
        let answers = obj
            .get("answers")
            .map(|n| {
                self.entries(n, "`answers`", |c, v| {
                    Some(
                        c.one_or_many(v)
                            .iter()
                            .filter_map(|a| c.choice(a, "an answer", &ANSWERS))
                            .collect(),
                    )
                })
            })
            .unwrap_or_default();
        let results = obj
            .get("results")
            .map(|n| {
                self.entries(n, "`results`", |c, v| {
                    Some(
                        c.one_or_many(v)
                            .iter()
                            .filter_map(|r| c.scripted_result(r))
                            .collect(),
                    )
                })
            })
            .unwrap_or_default();
        let expect = obj
            .get("expect")
            .and_then(|n| self.expect(n))
            .unwrap_or_default();
        self.finish(obj, SCENARIO_FIELDS, &what);
        Some(Scenario {
            name: name?,
            description,
            params,
            yes,
            dry_run,
            answers,
            results,
            expect,
        })
    }

    /// A mapping read as (key, value) pairs, each key with its span.
    fn entries<T>(
        &mut self,
        node: &Node,
        what: &str,
        mut each: impl FnMut(&mut Self, &Node) -> Option<T>,
    ) -> Vec<(Sp<String>, T)> {
        let Some(obj) = self.obj(node, what) else {
            return Vec::new();
        };
        let entries: &[(Key, Node)] = obj.entries;
        entries
            .iter()
            .filter_map(|(k, v)| Some((Sp::new(k.name.clone(), k.span), each(self, v)?)))
            .collect()
    }

    /// A list, or one item standing for a list of one.
    fn one_or_many<'n>(&mut self, node: &'n Node) -> Vec<&'n Node> {
        match &node.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![node],
        }
    }

    fn scripted_result(&mut self, node: &Node) -> Option<ScriptedResult> {
        let what = "a scripted result";
        let mut obj = self.obj(node, what)?;
        let fields = obj
            .entries
            .iter()
            .filter(|(k, _)| RESULT_FIELDS.contains(&k.name.as_str()))
            .map(|(k, _)| (k.name.clone(), k.span))
            .collect();
        let int = |c: &mut Self, obj: &mut Obj<'_>, field: &str| -> Option<i32> {
            let n = obj.get(field)?;
            match n.value {
                Value::Int(i) => i32::try_from(i).ok(),
                _ => {
                    c.wrong_type(n, &format!("`{field}`"), "a whole number");
                    None
                }
            }
        };
        let exit_code = int(self, &mut obj, "exit_code");
        let stdout = self.opt_string(&mut obj, "stdout", what).map(|s| s.value);
        let stderr = self.opt_string(&mut obj, "stderr", what).map(|s| s.value);
        let status = obj.get("status").and_then(|n| match &n.value {
            Value::Int(i) => match u16::try_from(*i) {
                Ok(code) if (100..=599).contains(&code) => {
                    Some(Sp::new(ResultStatus::Http(code), n.span))
                }
                _ => {
                    self.push(
                        Diagnostic::new(
                            Code::InvalidValue,
                            n.span,
                            format!("`status` {i} is not an HTTP status code"),
                        )
                        .label("expected 100 to 599"),
                    );
                    None
                }
            },
            Value::Str(s) => Some(Sp::new(ResultStatus::Automation(s.clone()), n.span)),
            _ => {
                self.wrong_type(n, "`status`", "an HTTP status code or an automation status");
                None
            }
        });
        let body = self.opt_string(&mut obj, "body", what).map(|s| s.value);
        let error = self.opt_string(&mut obj, "error", what).map(|s| s.value);
        let instances = obj.get("instances").map(|n| {
            self.entries(n, "`instances`", |c, v| c.invocation(v))
                .into_iter()
                .map(|(k, v)| (k.value, v))
                .collect()
        });
        let outputs = obj.get("outputs").map(|n| {
            self.entries(n, "`outputs`", |c, v| {
                Some(
                    c.string_list(v, "an output")
                        .into_iter()
                        .map(|s| s.value)
                        .collect(),
                )
            })
            .into_iter()
            .map(|(k, v)| (k.value, v))
            .collect()
        });
        let failure = self.opt_string(&mut obj, "failure", what).map(|s| s.value);
        let takes = obj.get("takes").and_then(|n| self.duration(n, "`takes`"));
        self.finish(obj, RESULT_FIELDS, what);
        Some(ScriptedResult {
            span: node.span,
            exit_code,
            stdout,
            stderr,
            status,
            body,
            error,
            instances,
            outputs,
            failure,
            takes,
            fields,
        })
    }

    fn invocation(&mut self, node: &Node) -> Option<ScriptedInvocation> {
        let what = "an instance's result";
        let mut obj = self.obj(node, what)?;
        let status = self.opt_string(&mut obj, "status", what).map(|s| s.value);
        let exit_code = obj.get("exit_code").and_then(|n| match n.value {
            Value::Int(i) => i32::try_from(i).ok(),
            _ => {
                self.wrong_type(n, "`exit_code`", "a whole number");
                None
            }
        });
        let stdout = self.opt_string(&mut obj, "stdout", what).map(|s| s.value);
        let stderr = self.opt_string(&mut obj, "stderr", what).map(|s| s.value);
        self.finish(obj, INVOCATION_FIELDS, what);
        Some(ScriptedInvocation {
            status,
            exit_code,
            stdout,
            stderr,
        })
    }

    fn one_of(&mut self, node: &Node, what: &str, names: &[&str]) -> Option<Sp<String>> {
        let options: Vec<(&str, usize)> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        self.choice(node, what, &options)
            .map(|i| Sp::new(names[i.value].to_string(), i.span))
    }

    fn expect(&mut self, node: &Node) -> Option<Expect> {
        let what = "`expect`";
        let mut obj = self.obj(node, what)?;
        let status = obj
            .get("status")
            .and_then(|n| self.one_of(n, "`status`", RUN_STATUSES));
        let exit_code = obj.get("exit_code").and_then(|n| match n.value {
            Value::Int(i) => i32::try_from(i).ok().map(|i| Sp::new(i, n.span)),
            _ => {
                self.wrong_type(n, "`exit_code`", "a whole number");
                None
            }
        });
        let path = obj.get("path").map(|n| {
            let ids = self
                .seq(n, "`path`")
                .iter()
                .filter_map(|i| self.string(i, "a step id"))
                .collect();
            Sp::new(ids, n.span)
        });
        let mut ids = |c: &mut Self, field: &str| {
            obj.get(field).map(|n| {
                c.seq(n, &format!("`{field}`"))
                    .iter()
                    .filter_map(|i| c.string(i, "a step id"))
                    .collect::<Vec<_>>()
            })
        };
        let skipped = ids(self, "skipped");
        let not_run = ids(self, "not_run");
        let steps = obj
            .get("steps")
            .map(|n| {
                self.entries(n, "`steps`", |c, v| {
                    c.one_of(v, "a step status", STEP_STATUSES)
                })
            })
            .unwrap_or_default();
        let commands = obj
            .get("commands")
            .map(|n| self.entries(n, "`commands`", |c, v| c.string(v, "a command")))
            .unwrap_or_default();
        let captures = obj
            .get("captures")
            .map(|n| {
                self.entries(n, "`captures`", |c, v| {
                    Some(c.entries(v, "a step's captures", |_, x| Some(x.to_json())))
                })
            })
            .unwrap_or_default();
        let escalation = obj.get("escalation").map(|n| {
            let to = self
                .seq(n, "`escalation`")
                .iter()
                .filter_map(|i| self.string(i, "a contact").map(|s| s.value))
                .collect();
            Sp::new(to, n.span)
        });
        self.finish(obj, EXPECT_FIELDS, what);
        Some(Expect {
            status,
            exit_code,
            path,
            skipped,
            not_run,
            steps,
            commands,
            captures,
            escalation,
        })
    }
}
