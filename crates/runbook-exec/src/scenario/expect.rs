//! A scenario run compared with what the scenario expects, and what runs reached
//! (coverage).

use runbook_core::scenario::Scenario;
use serde_json::Value;

use super::Actual;
use crate::event::{Chosen, Event, RunStatus, Status};

/// One way a run differed from what its scenario expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// What was checked (`path`, `status`, `commands.terminate`).
    pub what: String,
    /// Expected, as text.
    pub expected: String,
    /// Actual, as text.
    pub actual: String,
}

/// Where two paths part: the first index at which they differ (`None`: the same path).
pub fn parts_at(expected: &[String], actual: &[String]) -> Option<usize> {
    let common = expected
        .iter()
        .zip(actual)
        .take_while(|(a, b)| a == b)
        .count();
    (common < expected.len().max(actual.len())).then_some(common)
}

/// The run status as a scenario names it.
pub fn status_name(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::Escalated => "escalated",
        RunStatus::Aborted => "aborted",
        RunStatus::RunbookError => "runbook_error",
        RunStatus::Interrupted => "interrupted",
    }
}

/// A step status as a scenario names it.
pub fn step_status_name(status: Status) -> &'static str {
    match status {
        Status::Succeeded => "succeeded",
        Status::Failed => "failed",
        Status::Skipped => "skipped",
        Status::Declined => "declined",
        Status::NotExecuted => "not_executed",
        Status::Pending | Status::Running => "pending",
    }
}

/// Two JSON values are the same to a scenario: numbers by value (`0` is `0.0`, as JMESPath
/// may give either), everything else exactly.
pub fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_value(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        _ => a == b,
    }
}

/// A list as a scenario shows it: `[a, b]`, `[]`.
fn list_text(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
}

/// Compare a run with its scenario's `expect`. `exit_code` is the code the command line
/// gives this run (the exit table is the CLI's), checked when the scenario names one.
pub fn compare(scenario: &Scenario, actual: &Actual, exit_code: Option<i32>) -> Vec<Mismatch> {
    let e = &scenario.expect;
    let mut out = Vec::new();
    let mut differ = |what: String, expected: String, got: String| {
        if expected != got {
            out.push(Mismatch {
                what,
                expected,
                actual: got,
            });
        }
    };
    if let (Some(want), Some(got)) = (&e.status, actual.status) {
        differ("status".into(), want.value.clone(), status_name(got).into());
    }
    if let (Some(want), Some(got)) = (&e.exit_code, exit_code) {
        differ("exit_code".into(), want.value.to_string(), got.to_string());
    }
    if let Some(want) = &e.path {
        let want: Vec<&str> = want.value.iter().map(|s| s.value.as_str()).collect();
        if want != actual.path.iter().map(String::as_str).collect::<Vec<_>>() {
            differ("path".into(), want.join(" → "), actual.path.join(" → "));
        }
    }
    let status_of = |id: &str| {
        actual
            .steps
            .iter()
            .find(|(s, _)| s == id)
            .map_or("pending", |(_, st)| step_status_name(*st))
    };
    for id in e.skipped.iter().flatten() {
        differ(
            format!("steps.{}", id.value),
            "skipped".into(),
            status_of(&id.value).into(),
        );
    }
    for id in e.not_run.iter().flatten() {
        if actual.path.contains(&id.value) {
            differ(
                format!("steps.{}", id.value),
                "not run".into(),
                "ran".into(),
            );
        }
    }
    for (id, want) in &e.steps {
        differ(
            format!("steps.{}", id.value),
            want.value.clone(),
            status_of(&id.value).into(),
        );
    }
    for (id, want) in &e.commands {
        differ(
            format!("commands.{}", id.value),
            want.value.trim().to_string(),
            actual
                .commands
                .get(&id.value)
                .cloned()
                .unwrap_or_else(|| "(the step showed no command)".into()),
        );
    }
    for (id, caps) in &e.captures {
        for (name, want) in caps {
            let got = actual
                .captures
                .get(&id.value)
                .and_then(|c| c.get(&name.value));
            if got.is_some_and(|g| same_value(g, want)) {
                continue;
            }
            differ(
                format!("captures.{}.{}", id.value, name.value),
                want.to_string(),
                got.map_or_else(|| "(not captured)".into(), Value::to_string),
            );
        }
    }
    if let Some(want) = &e.escalation {
        let got = actual.escalation.clone().unwrap_or_default();
        if want.value != got {
            differ("escalation".into(), list_text(&want.value), list_text(&got));
        }
    }
    out
}

/// What scenarios reached of a runbook: steps started, branch cases and defaults
/// taken, `on_fail` routes followed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reached {
    /// Step ids that started.
    pub steps: std::collections::BTreeSet<String>,
    /// (branch step, case index; `None` for the default) taken.
    pub cases: std::collections::BTreeSet<(String, Option<usize>)>,
    /// Steps whose `on_fail` route was followed.
    pub on_fail: std::collections::BTreeSet<String>,
}

impl Reached {
    /// Add what one run reached.
    pub fn add(&mut self, events: &[Event]) {
        let mut failed = std::collections::BTreeSet::new();
        for e in events {
            match e {
                Event::StepStarted { step, .. } => {
                    self.steps.insert(step.clone());
                }
                Event::Decision {
                    step,
                    chosen: Some(chosen),
                    ..
                } => match chosen {
                    Chosen::Case(k) => {
                        self.cases.insert((step.clone(), Some(*k)));
                    }
                    Chosen::Default => {
                        self.cases.insert((step.clone(), None));
                    }
                    Chosen::FailGoto | Chosen::GaveUp => {
                        self.on_fail.insert(step.clone());
                    }
                    Chosen::Nowhere | Chosen::Every => {}
                },
                Event::Rewind { step, .. } | Event::Escalation { step, .. } => {
                    self.on_fail.insert(step.clone());
                }
                Event::StepFinished {
                    step,
                    status: Status::Failed,
                    ..
                } => {
                    failed.insert(step.clone());
                }
                _ => {}
            }
        }
        // `continue` and `abort` leave no event of their own: the failure is the route.
        self.on_fail.extend(failed);
    }
}
