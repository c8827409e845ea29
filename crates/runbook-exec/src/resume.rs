//! Replaying a journal: which steps finished (and keep their results), which were in
//! flight when the run stopped, and which must run (again).

use std::collections::HashMap;
use std::time::Duration;

use runbook_core::model::{OnFail, OnFailSimple, Runbook, StepKind};
use runbook_core::plan::Plan;
use serde_json::{Value, json};

use crate::engine::{Restored, Route};
use crate::event::{Event, Killed, Mode, Origin, RunStatus, Status, Stream};
use crate::journal::Record;

/// What the journal says about a run.
#[derive(Debug, Clone)]
pub struct Replay {
    /// Run id.
    pub run_id: String,
    /// Runbook name.
    pub runbook: String,
    /// Live or dry run.
    pub mode: Mode,
    /// Parameters as recorded (secrets are `***`).
    pub params: serde_json::Map<String, Value>,
    /// Where the runbook came from.
    pub origin: Origin,
    /// How the run last ended, if it did.
    pub finished: Option<RunStatus>,
    /// Steps to keep as they ended.
    pub restored: Vec<Restored>,
    /// Steps whose outcome is unknown: started and never finished, or killed mid-way.
    pub inflight: Vec<Inflight>,
}

/// A step whose action may have been partly applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inflight {
    /// Step id.
    pub step: String,
    /// `None`: still running when the run stopped (a crash or an interrupt while it ran);
    /// otherwise why the run killed it.
    pub killed: Option<Killed>,
}

#[derive(Debug, Default, Clone)]
struct Seen {
    stdout: Vec<String>,
    captures: serde_json::Map<String, Value>,
    decision: Option<(Option<String>, String)>,
    finished: Option<(Status, Option<i32>, u64, Option<String>)>,
    killed: Option<Killed>,
    running: bool,
}

/// Replay `records` (a journal, in order) against the runbook as it is now.
pub fn replay(runbook: &Runbook, plan: &Plan, records: &[Record]) -> Result<Replay, String> {
    let Some(Event::RunStarted {
        run_id,
        runbook: name,
        mode,
        params,
        origin,
        ..
    }) = records.first().map(|r| &r.event)
    else {
        return Err("the journal does not start with run_started".into());
    };
    let mut seen: HashMap<String, Seen> = HashMap::new();
    let mut finished = None;
    for r in records {
        match &r.event {
            Event::StepStarted { step, attempt, .. } => {
                let s = seen.entry(step.clone()).or_default();
                s.running = true;
                s.finished = None;
                s.killed = None;
                if *attempt == 1 {
                    s.stdout.clear();
                    s.captures.clear();
                    s.decision = None;
                }
            }
            Event::Output {
                step,
                stream: Stream::Stdout,
                line,
            } => seen
                .entry(step.clone())
                .or_default()
                .stdout
                .push(line.clone()),
            Event::Captured { step, name, value } => {
                seen.entry(step.clone())
                    .or_default()
                    .captures
                    .insert(name.clone(), value.clone());
            }
            Event::Decision {
                step, goto, reason, ..
            } => {
                seen.entry(step.clone()).or_default().decision =
                    Some((goto.clone(), reason.clone()));
            }
            Event::StepFinished {
                step,
                status,
                exit_code,
                duration_ms,
                message,
                killed,
            } => {
                let s = seen.entry(step.clone()).or_default();
                s.running = false;
                s.finished = Some((*status, *exit_code, *duration_ms, message.clone()));
                s.killed = *killed;
            }
            Event::Rewind { from, .. } => {
                // Everything from `from` down was reset by the engine.
                if let Some(start) = plan.index(from) {
                    for (i, reset) in plan.downstream(start).into_iter().enumerate() {
                        if reset {
                            seen.remove(&runbook.steps[i].id.value);
                        }
                    }
                }
            }
            Event::RunFinished { status, .. } => finished = Some(*status),
            Event::Resumed { .. } => finished = None,
            _ => {}
        }
    }
    let mut restored = Vec::new();
    let mut inflight = Vec::new();
    for (i, step) in runbook.steps.iter().enumerate() {
        let Some(s) = seen.get(&step.id.value) else {
            continue;
        };
        // An act killed mid-way is as unknown as one in flight at a crash.
        if s.running || (s.killed.is_some() && step.kind.value == StepKind::Act) {
            inflight.push(Inflight {
                step: step.id.value.clone(),
                killed: s.killed,
            });
            continue;
        }
        let Some((status, exit_code, duration_ms, message)) = s.finished.clone() else {
            continue;
        };
        let on_fail = step.on_fail.as_ref().map(|f| f.value.clone());
        let route = match status {
            Status::Succeeded if step.kind.value == StepKind::Branch => match &s.decision {
                Some((Some(goto), reason)) => {
                    let case = reason
                        .strip_prefix("case ")
                        .and_then(|r| r.split(':').next())
                        .and_then(|n| n.trim().parse::<usize>().ok())
                        .filter(|k| {
                            step.cases
                                .get(k.wrapping_sub(1))
                                .is_some_and(|c| c.goto.value == *goto)
                        });
                    match case {
                        Some(k) => Route::Case(k - 1),
                        None => Route::Default,
                    }
                }
                _ => Route::Nowhere,
            },
            Status::Succeeded => Route::Normal,
            Status::Failed => match on_fail {
                Some(OnFail::Simple(OnFailSimple::Continue)) => Route::Normal,
                Some(OnFail::Goto { .. }) => Route::FailGoto,
                // The failure that stopped the run: run the step again.
                _ => continue,
            },
            Status::Skipped if message.as_deref() == Some("skipped by the operator") => {
                Route::Normal
            }
            // Routing skips are recomputed; declined acts are asked again.
            _ => continue,
        };
        // A secret capture is masked in the journal, so its value cannot be restored.
        if step.capture.values().any(|c| c.secret) && step.kind.value != StepKind::Act {
            continue;
        }
        let mut result = s.captures.clone();
        result.insert("exit_code".into(), json!(exit_code));
        result.insert("stdout".into(), json!(s.stdout.join("\n")));
        result.insert("stderr".into(), json!(""));
        result.insert("status".into(), Value::Null);
        result.insert("duration_ms".into(), json!(duration_ms));
        result.insert("attempt".into(), json!(1));
        restored.push(Restored {
            step: i,
            status,
            route,
            result: Value::Object(result),
            message,
            duration: Duration::from_millis(duration_ms),
        });
    }
    Ok(Replay {
        run_id: run_id.clone(),
        runbook: name.clone(),
        mode: *mode,
        params: params.clone(),
        origin: origin.clone(),
        finished,
        restored,
        inflight,
    })
}

/// Step ids added and removed between two versions of a runbook, for `--force`.
pub fn step_diff(old: &[String], new: &Runbook) -> (Vec<String>, Vec<String>) {
    let new_ids: Vec<&str> = new.steps.iter().map(|s| s.id.value.as_str()).collect();
    let added = new_ids
        .iter()
        .filter(|id| !old.iter().any(|o| o == *id))
        .map(|s| (*s).to_string())
        .collect();
    let removed = old
        .iter()
        .filter(|o| !new_ids.contains(&o.as_str()))
        .cloned()
        .collect();
    (added, removed)
}

/// The step ids the runbook had when the run started.
pub fn recorded_steps(records: &[Record]) -> Vec<String> {
    match records.first().map(|r| &r.event) {
        Some(Event::RunStarted { step_ids, .. }) => step_ids.clone(),
        _ => Vec::new(),
    }
}
