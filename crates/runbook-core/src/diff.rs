//! What changed between two versions of a runbook, for a reviewer: plans compared, not
//! text. Steps added, removed, renamed (the same action under a new id) and moved; per
//! step the fields that changed (the command rendered with the parameters' defaults);
//! params, escalation and lock; and first of all the **risks**: changes that alter what
//! the runbook does to production.
//!
//! Every value is compared in a canonical form (whitespace runs collapsed, templates
//! rendered), so formatting, comments and key order alone are no difference.

use serde::Serialize;

mod words;
pub use words::{WordOp, word_diff};

use crate::model::{Param, Runbook, Step, StepKind};
use crate::plan::Plan;
use crate::render::{render_step, static_data};
use crate::template::Renderer;

/// A runbook's two versions compared.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Diff {
    /// The runbook's name (the new one's, or the old one's when it was deleted).
    pub name: String,
    /// Changes that alter what the runbook does; listed first.
    pub risks: Vec<Risk>,
    /// Every change, in the order of the new file.
    pub changes: Vec<Change>,
}

impl Diff {
    /// No difference that a run could notice.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// A change a reviewer must look at closely.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Risk {
    /// What kind of risk.
    pub kind: RiskKind,
    /// The step it is about, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// For people.
    pub message: String,
}

/// The kinds of risk, in the order they are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskKind {
    /// A new act: a new change to production.
    NewAct,
    /// An act whose action (what it changes) changed.
    ChangedAct,
    /// An act no longer asks for confirmation with its own question.
    ConfirmRemoved,
    /// An act asks a different confirmation question.
    ConfirmChanged,
    /// An act became a check or verify: it runs in dry runs and without asking.
    NoLongerAct,
    /// An act no longer has a verify after it.
    VerifyRemoved,
    /// A check that came before an act is gone.
    CheckRemovedBeforeAct,
    /// A failure route changed.
    OnFailChanged,
    /// A branch decides differently.
    BranchChanged,
    /// A template now inserts a value without quoting.
    NewRawTemplate,
    /// A check's command now looks like it changes something.
    MutatingCheck,
    /// A parameter default that an act reads changed.
    DefaultChangesAct,
}

impl RiskKind {
    /// Short name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            RiskKind::NewAct => "new act",
            RiskKind::ChangedAct => "changed act",
            RiskKind::ConfirmRemoved => "confirm removed",
            RiskKind::ConfirmChanged => "confirm changed",
            RiskKind::NoLongerAct => "no longer an act",
            RiskKind::VerifyRemoved => "verify removed",
            RiskKind::CheckRemovedBeforeAct => "check removed before an act",
            RiskKind::OnFailChanged => "on_fail changed",
            RiskKind::BranchChanged => "branch changed",
            RiskKind::NewRawTemplate => "new raw template",
            RiskKind::MutatingCheck => "mutating check",
            RiskKind::DefaultChangesAct => "default read by an act",
        }
    }
}

/// One change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// A step that is new.
    StepAdded {
        /// Id.
        step: String,
        /// Kind.
        kind: StepKind,
        /// Title.
        title: String,
    },
    /// A step that is gone.
    StepRemoved {
        /// Id.
        step: String,
        /// Kind.
        kind: StepKind,
        /// Title.
        title: String,
    },
    /// The same action under a new id.
    StepRenamed {
        /// Old id.
        from: String,
        /// New id.
        to: String,
    },
    /// A step that sits elsewhere in the list, relative to the steps both versions have.
    StepMoved {
        /// Id (the new one).
        step: String,
        /// 1-based position in the old list.
        from: usize,
        /// 1-based position in the new list.
        to: usize,
    },
    /// A step whose fields changed.
    StepChanged {
        /// Id (the new one).
        step: String,
        /// Kind (the new one).
        kind: StepKind,
        /// What changed.
        fields: Vec<FieldChange>,
    },
    /// A new parameter.
    ParamAdded {
        /// Name.
        param: String,
        /// Type and default, for people.
        text: String,
    },
    /// A parameter that is gone.
    ParamRemoved {
        /// Name.
        param: String,
    },
    /// A parameter whose type, default, pattern, values or source changed.
    ParamChanged {
        /// Name.
        param: String,
        /// What changed.
        fields: Vec<FieldChange>,
    },
    /// A runbook-level field: title, severity, description, escalation, lock, env, aws.
    RunbookChanged {
        /// What changed.
        field: FieldChange,
    },
}

/// One field's old and new value, in canonical text (absent: the field is not set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// Field name (`command`, `expect`, `on_fail`, `cases`, ...).
    pub field: String,
    /// Before.
    pub old: Option<String>,
    /// After.
    pub new: Option<String>,
}

/// Collapse whitespace runs, so reflowed text is the same text.
fn canon(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The parameters' defaults (placeholders for the rest, `***` for secrets): what a
/// rendered command shows in a review.
fn default_values(rb: &Runbook) -> serde_json::Map<String, serde_json::Value> {
    rb.params
        .iter()
        .map(|(name, p)| {
            let v = if p.ty.value == crate::model::ParamType::Secret {
                serde_json::Value::String("***".into())
            } else {
                p.default
                    .as_ref()
                    .map(|d| d.value.clone())
                    .unwrap_or_else(|| serde_json::Value::String(format!("<{name}>")))
            };
            (name.clone(), v)
        })
        .collect()
}

/// A step's fields in canonical text, by name, in a fixed order.
fn fields(step: &Step, data: &serde_json::Value, r: &Renderer) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut put = |k: &str, v: String| {
        if !v.is_empty() {
            out.push((k.to_string(), v));
        }
    };
    put("kind", step.kind.value.as_str().into());
    put("title", canon(&step.title));
    put(
        "description",
        step.description.as_deref().map(canon).unwrap_or_default(),
    );
    put(
        "needs",
        step.needs
            .as_ref()
            .map(|n| {
                let ids: Vec<&str> = n.iter().map(|s| s.value.as_str()).collect();
                format!("[{}]", ids.join(", "))
            })
            .unwrap_or_default(),
    );
    put(
        "phase",
        step.phase
            .as_ref()
            .map(|p| p.value.clone())
            .unwrap_or_default(),
    );
    let rendered = render_step(r, step, data).ok();
    let command = match (&rendered, &step.action) {
        (Some(rs), _) => rs.action.as_ref().map(|a| canon(&a.lines().join("\n"))),
        (None, Some(a)) => serde_json::to_string(a).ok().map(|t| canon(&t)),
        (None, None) => None,
    };
    put("command", command.unwrap_or_default());
    put(
        "confirm",
        match (&rendered, &step.confirm) {
            (Some(rs), _) => rs.confirm.as_deref().map(canon).unwrap_or_default(),
            (None, Some(c)) => canon(c),
            (None, None) => String::new(),
        },
    );
    put(
        "expect",
        step.expect.as_ref().map(|e| canon(e)).unwrap_or_default(),
    );
    put(
        "on_fail",
        step.on_fail
            .as_ref()
            .map(|f| f.value.text())
            .unwrap_or_default(),
    );
    put(
        "retry",
        step.retry
            .as_ref()
            .map(|r| {
                let mut t = if r.attempts == 1 {
                    "1 attempt".to_string()
                } else {
                    format!("{} attempts", r.attempts)
                };
                if let Some(i) = &r.interval {
                    t.push_str(&format!(" every {}", i.value.text));
                }
                if let Some(b) = r.backoff {
                    t.push_str(&format!(" backoff {b}"));
                }
                t
            })
            .unwrap_or_default(),
    );
    put(
        "timeout",
        step.timeout
            .as_ref()
            .map(|t| t.value.text.clone())
            .unwrap_or_default(),
    );
    put(
        "concurrent",
        if step.concurrent {
            "true".into()
        } else {
            String::new()
        },
    );
    put(
        "cases",
        step.cases
            .iter()
            .map(|c| format!("when {}: goto {}", canon(&c.when), c.goto.value))
            .collect::<Vec<_>>()
            .join("; "),
    );
    put(
        "default",
        step.default
            .as_ref()
            .map(|d| d.value.clone())
            .unwrap_or_default(),
    );
    put(
        "capture",
        step.capture
            .iter()
            .map(|(name, c)| {
                format!(
                    "{name}: {}",
                    serde_json::to_string(c)
                        .map(|t| canon(&t))
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
    );
    out
}

fn param_fields(p: &Param) -> Vec<(String, String)> {
    let mut out = vec![("type".to_string(), p.ty.value.as_str().to_string())];
    if let Some(d) = &p.default {
        out.push(("default".into(), d.value.to_string()));
    }
    if let Some(r) = p.required {
        out.push(("required".into(), r.to_string()));
    }
    if let Some(pat) = &p.pattern {
        out.push(("pattern".into(), pat.value.clone()));
    }
    if !p.values.is_empty() {
        let v: Vec<String> = p.values.iter().map(|x| x.value.clone()).collect();
        out.push(("values".into(), v.join(", ")));
    }
    if let Some(f) = &p.from {
        out.push(("from".into(), f.value.clone()));
    }
    out
}

fn field_changes(old: &[(String, String)], new: &[(String, String)]) -> Vec<FieldChange> {
    let mut names: Vec<&String> = new.iter().map(|(k, _)| k).collect();
    for (k, _) in old {
        if !names.contains(&k) {
            names.push(k);
        }
    }
    let get =
        |v: &[(String, String)], k: &str| v.iter().find(|(n, _)| n == k).map(|(_, x)| x.clone());
    names
        .into_iter()
        .filter_map(|k| {
            let (o, n) = (get(old, k), get(new, k));
            (o != n).then(|| FieldChange {
                field: k.clone(),
                old: o,
                new: n,
            })
        })
        .collect()
}

/// The action alone, canonical: what makes two steps "the same step" under new ids.
fn action_key(step: &Step) -> Option<String> {
    step.action
        .as_ref()
        .and_then(|a| serde_json::to_string(a).ok())
        .map(|t| format!("{}:{}", step.kind.value.as_str(), canon(&t)))
}

/// How many unquoted insertions a step's templates have.
fn raw_count(step: &Step) -> usize {
    crate::render::step_templates(step)
        .iter()
        .map(|(t, _)| t.matches("{{{raw").count() + t.matches("{{raw ").count())
        .sum()
}

/// Whether a step's templates read `params.<name>`.
fn reads_param(step: &Step, name: &str) -> bool {
    let needle = format!("params.{name}");
    crate::render::step_templates(step).iter().any(|(t, _)| {
        t.match_indices(&needle).any(|(i, _)| {
            !t[i + needle.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    })
}

/// Whether some verify step comes after step `i` in the plan.
fn verified_after(rb: &Runbook, plan: &Plan, i: usize) -> bool {
    plan.downstream(i)
        .iter()
        .enumerate()
        .any(|(j, &d)| d && j != i && rb.steps[j].kind.value == StepKind::Verify)
}

/// Positions (in the new list) of matched steps that moved: those outside the longest
/// common subsequence of the two orders.
fn moved(pairs: &[(usize, usize)]) -> Vec<usize> {
    // pairs sorted by new index; find the LIS of old indexes.
    let olds: Vec<usize> = pairs.iter().map(|p| p.0).collect();
    let n = olds.len();
    let mut len = vec![1usize; n];
    let mut prev = vec![usize::MAX; n];
    for i in 0..n {
        for j in 0..i {
            if olds[j] < olds[i] && len[j] + 1 > len[i] {
                len[i] = len[j] + 1;
                prev[i] = j;
            }
        }
    }
    let mut keep = vec![false; n];
    if let Some(mut k) = (0..n).max_by_key(|&i| len[i]) {
        loop {
            keep[k] = true;
            if prev[k] == usize::MAX {
                break;
            }
            k = prev[k];
        }
    }
    (0..n).filter(|&i| !keep[i]).collect()
}

/// Compare two valid versions of a runbook.
pub fn diff(old: &Runbook, old_plan: &Plan, new: &Runbook, new_plan: &Plan) -> Diff {
    let r = Renderer::new();
    let old_data = static_data(old, &default_values(old));
    let new_data = static_data(new, &default_values(new));
    let mut changes = Vec::new();
    let mut risks = Vec::new();
    let mut risk = |kind: RiskKind, step: Option<&str>, message: String| {
        risks.push(Risk {
            kind,
            step: step.map(str::to_string),
            message,
        });
    };

    // Match steps: same id, else the same action under a new id.
    let mut old_of_new: Vec<Option<usize>> = new
        .steps
        .iter()
        .map(|s| old_plan.index(&s.id.value))
        .collect();
    let mut taken: Vec<bool> = vec![false; old.steps.len()];
    for o in old_of_new.iter().flatten() {
        taken[*o] = true;
    }
    let mut renamed = vec![false; new.steps.len()];
    for (ni, s) in new.steps.iter().enumerate() {
        if old_of_new[ni].is_some() {
            continue;
        }
        let Some(key) = action_key(s) else { continue };
        if let Some(oi) = (0..old.steps.len())
            .find(|&oi| !taken[oi] && action_key(&old.steps[oi]).as_deref() == Some(&key))
        {
            taken[oi] = true;
            old_of_new[ni] = Some(oi);
            renamed[ni] = true;
        }
    }
    let pairs: Vec<(usize, usize)> = old_of_new
        .iter()
        .enumerate()
        .filter_map(|(ni, o)| o.map(|oi| (oi, ni)))
        .collect();
    let moved_steps: Vec<usize> = moved(&pairs).into_iter().map(|k| pairs[k].1).collect();

    for (ni, s) in new.steps.iter().enumerate() {
        let id = s.id.value.as_str();
        let is_act = s.kind.value == StepKind::Act;
        let Some(oi) = old_of_new[ni] else {
            changes.push(Change::StepAdded {
                step: id.into(),
                kind: s.kind.value,
                title: s.title.value.clone(),
            });
            if is_act {
                risk(
                    RiskKind::NewAct,
                    Some(id),
                    format!("new act `{id}`: {}", s.title.value),
                );
            }
            if s.kind.value == StepKind::Check {
                if let Some((_, m)) = crate::facts::mutation(s) {
                    risk(
                        RiskKind::MutatingCheck,
                        Some(id),
                        format!("new check `{id}` looks like it changes something (`{m}`)"),
                    );
                }
            }
            if raw_count(s) > 0 {
                risk(
                    RiskKind::NewRawTemplate,
                    Some(id),
                    format!("new step `{id}` inserts a value without quoting (raw)"),
                );
            }
            continue;
        };
        let o = &old.steps[oi];
        if renamed[ni] {
            changes.push(Change::StepRenamed {
                from: o.id.value.clone(),
                to: id.into(),
            });
        }
        if moved_steps.contains(&ni) {
            changes.push(Change::StepMoved {
                step: id.into(),
                from: oi + 1,
                to: ni + 1,
            });
        }
        let fc = field_changes(&fields(o, &old_data, &r), &fields(s, &new_data, &r));
        let changed = |f: &str| fc.iter().any(|c| c.field == f);
        if is_act && (changed("command") || changed("kind")) {
            risk(
                RiskKind::ChangedAct,
                Some(id),
                if o.kind.value == StepKind::Act {
                    format!("act `{id}` changes what it does")
                } else {
                    format!("`{id}` became an act")
                },
            );
        }
        if is_act && o.confirm.is_some() && s.confirm.is_none() {
            risk(
                RiskKind::ConfirmRemoved,
                Some(id),
                format!("act `{id}` lost its confirmation question"),
            );
        }
        if let (true, StepKind::Act, Some(before), Some(now)) =
            (is_act, o.kind.value, &o.confirm, &s.confirm)
        {
            if before.value != now.value {
                risk(
                    RiskKind::ConfirmChanged,
                    Some(id),
                    format!(
                        "act `{id}` asks a different question: \"{}\" → \"{}\"",
                        before.value.trim(),
                        now.value.trim()
                    ),
                );
            }
        }
        if o.kind.value == StepKind::Act && !is_act {
            risk(
                RiskKind::NoLongerAct,
                Some(id),
                format!(
                    "act `{id}` became a {}: it runs in dry runs and without asking",
                    s.kind.value.as_str()
                ),
            );
        }
        if is_act
            && o.kind.value == StepKind::Act
            && verified_after(old, old_plan, oi)
            && !verified_after(new, new_plan, ni)
        {
            risk(
                RiskKind::VerifyRemoved,
                Some(id),
                format!("act `{id}` no longer has a verify step after it"),
            );
        }
        if changed("on_fail") {
            let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "abort".into());
            let c = fc.iter().find(|c| c.field == "on_fail");
            risk(
                RiskKind::OnFailChanged,
                Some(id),
                format!(
                    "`{id}` on failure: {} → {}",
                    c.map(|c| text(&c.old)).unwrap_or_default(),
                    c.map(|c| text(&c.new)).unwrap_or_default()
                ),
            );
        }
        if changed("cases") || changed("default") {
            risk(
                RiskKind::BranchChanged,
                Some(id),
                format!("branch `{id}` decides differently"),
            );
        }
        if raw_count(s) > raw_count(o) {
            risk(
                RiskKind::NewRawTemplate,
                Some(id),
                format!("`{id}` inserts a new value without quoting (raw)"),
            );
        }
        if s.kind.value == StepKind::Check {
            // A mutating check is new unless the step was already a check that looked so
            // (an act turned into a check with the same command is the worst case).
            let before = (o.kind.value == StepKind::Check)
                .then(|| crate::facts::mutation(o))
                .flatten();
            if let (Some((_, m)), None) = (crate::facts::mutation(s), before) {
                risk(
                    RiskKind::MutatingCheck,
                    Some(id),
                    format!("check `{id}` now looks like it changes something (`{m}`)"),
                );
            }
        }
        if !fc.is_empty() {
            changes.push(Change::StepChanged {
                step: id.into(),
                kind: s.kind.value,
                fields: fc,
            });
        }
    }
    for (oi, o) in old.steps.iter().enumerate() {
        if taken[oi] {
            continue;
        }
        let id = o.id.value.as_str();
        changes.push(Change::StepRemoved {
            step: id.into(),
            kind: o.kind.value,
            title: o.title.value.clone(),
        });
        if o.kind.value == StepKind::Check {
            let guarded: Vec<&str> = old_plan
                .downstream(oi)
                .iter()
                .enumerate()
                .filter(|&(j, &d)| {
                    d && j != oi
                        && old.steps[j].kind.value == StepKind::Act
                        && new_plan.index(&old.steps[j].id.value).is_some()
                })
                .map(|(j, _)| old.steps[j].id.value.as_str())
                .collect();
            if !guarded.is_empty() {
                risk(
                    RiskKind::CheckRemovedBeforeAct,
                    Some(id),
                    format!(
                        "check `{id}` is gone; it came before act{} {}",
                        if guarded.len() == 1 { "" } else { "s" },
                        guarded
                            .iter()
                            .map(|g| format!("`{g}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
        }
    }

    // Parameters.
    for (name, p) in &new.params {
        match old.params.get(name) {
            None => changes.push(Change::ParamAdded {
                param: name.clone(),
                text: param_fields(p)
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
            Some(op) => {
                let fc = field_changes(&param_fields(op), &param_fields(p));
                if fc.iter().any(|c| c.field == "default") {
                    let acts: Vec<&str> = new
                        .steps
                        .iter()
                        .filter(|s| s.kind.value == StepKind::Act && reads_param(s, name))
                        .map(|s| s.id.value.as_str())
                        .collect();
                    if !acts.is_empty() {
                        risk(
                            RiskKind::DefaultChangesAct,
                            None,
                            format!(
                                "the default of `{name}` changed and act{} {} read{} it",
                                if acts.len() == 1 { "" } else { "s" },
                                acts.iter()
                                    .map(|a| format!("`{a}`"))
                                    .collect::<Vec<_>>()
                                    .join(", "),
                                if acts.len() == 1 { "s" } else { "" }
                            ),
                        );
                    }
                }
                if !fc.is_empty() {
                    changes.push(Change::ParamChanged {
                        param: name.clone(),
                        fields: fc,
                    });
                }
            }
        }
    }
    for name in old.params.keys() {
        if !new.params.contains_key(name) {
            changes.push(Change::ParamRemoved {
                param: name.clone(),
            });
        }
    }

    // The runbook's own fields.
    let top = |rb: &Runbook| -> Vec<(String, String)> {
        let mut v = vec![
            ("name".to_string(), rb.name.value.clone()),
            ("title".to_string(), canon(&rb.title)),
        ];
        if let Some(d) = &rb.description {
            v.push(("description".into(), canon(d)));
        }
        if let Some(s) = rb.severity {
            v.push(("severity".into(), s.as_str().into()));
        }
        if !rb.tags.is_empty() {
            v.push(("tags".into(), rb.tags.join(", ")));
        }
        if let Some(l) = &rb.lock {
            v.push(("lock".into(), l.value.clone()));
        }
        if !rb.env.is_empty() {
            let e: Vec<&str> = rb.env.iter().map(|e| e.value.as_str()).collect();
            v.push(("env".into(), e.join(", ")));
        }
        if let Some(a) = &rb.aws {
            v.push((
                "aws".into(),
                format!(
                    "region {} profile {}",
                    a.region.as_deref().unwrap_or("-"),
                    a.profile.as_deref().unwrap_or("-")
                ),
            ));
        }
        if !rb.escalation.is_empty() {
            let e: Vec<String> = rb
                .escalation
                .iter()
                .map(|x| format!("{}: {}", x.after.value.text, x.to))
                .collect();
            v.push(("escalation".into(), e.join("; ")));
        }
        if !rb.phases.is_empty() {
            let p: Vec<String> = rb
                .phases
                .iter()
                .map(|x| format!("{} within {}: {}", x.id.value, x.within.value.text, x.title))
                .collect();
            v.push(("phases".into(), p.join("; ")));
        }
        v
    };
    for field in field_changes(&top(old), &top(new)) {
        changes.push(Change::RunbookChanged { field });
    }
    risks.sort_by_key(|r| r.kind);
    Diff {
        name: new.name.value.clone(),
        risks,
        changes,
    }
}

/// A runbook that is new: every step added, every act a new act.
pub fn added(rb: &Runbook) -> Diff {
    whole(rb, true)
}

/// A runbook that is gone: every step removed.
pub fn removed(rb: &Runbook) -> Diff {
    whole(rb, false)
}

fn whole(rb: &Runbook, added: bool) -> Diff {
    let mut d = Diff {
        name: rb.name.value.clone(),
        ..Diff::default()
    };
    for s in &rb.steps {
        let (step, kind, title) = (s.id.value.clone(), s.kind.value, s.title.value.clone());
        if added && kind == StepKind::Act {
            d.risks.push(Risk {
                kind: RiskKind::NewAct,
                step: Some(step.clone()),
                message: format!("new act `{step}`: {title}"),
            });
        }
        d.changes.push(if added {
            Change::StepAdded { step, kind, title }
        } else {
            Change::StepRemoved { step, kind, title }
        });
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moved_is_what_falls_outside_the_common_order() {
        // old order 0,1,2,3; new order 0,2,1,3 → one of 1/2 moved.
        assert_eq!(moved(&[(0, 0), (2, 1), (1, 2), (3, 3)]).len(), 1);
        assert!(moved(&[(0, 0), (1, 1)]).is_empty());
    }
}
