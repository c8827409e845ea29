//! Replaying a journal: which steps finished (and keep their results), which were in
//! flight when the run stopped, and which must run (again).

use std::collections::HashMap;
use std::time::Duration;

use runbook_core::model::{OnFail, OnFailSimple, Runbook, StepKind};
use runbook_core::plan::Plan;
use serde_json::Value;

use crate::engine::{Restored, Route, StepValues};
use crate::event::{Chosen, Event, Killed, Mode, Origin, RunStatus, Skip, Status, Stream};
use crate::journal::{FORMAT, Record};

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

/// Why a journal cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The first record is not `run_started`.
    #[error("the journal does not start with run_started")]
    NoStart,
    /// Written before replay had typed fields to go on.
    #[error(
        "the journal is format {version}, written by runbook {written_by}: it predates the typed \
         records resume replays (format {FORMAT}); resume it with runbook {written_by}, or start \
         a new run (`audit show` and `audit verify` still read it)"
    )]
    OldFormat {
        /// The journal's format.
        version: u32,
        /// The runbook version that wrote it.
        written_by: String,
    },
}

/// What the journal says about one step so far.
#[derive(Debug, Default, Clone)]
struct Seen<'r> {
    stdout: Vec<String>,
    decision: Option<Chosen>,
    /// Its last `step_finished` record, unless it started again since.
    finished: Option<&'r Event>,
    running: bool,
}

/// Replay `records` (a journal, in order) against the runbook as it is now. Only typed
/// fields are read: what a branch chose (`chosen`), why a step was skipped (`skip`),
/// whether an action was killed (`killed`) and the values it left (`captures`, ...).
pub fn replay(runbook: &Runbook, plan: &Plan, records: &[Record]) -> Result<Replay, ReplayError> {
    let Some(first) = records.first() else {
        return Err(ReplayError::NoStart);
    };
    let Event::RunStarted {
        run_id,
        runbook: name,
        mode,
        params,
        origin,
        ..
    } = &first.event
    else {
        return Err(ReplayError::NoStart);
    };
    if first.v < FORMAT {
        return Err(ReplayError::OldFormat {
            version: first.v,
            written_by: origin.version.clone(),
        });
    }
    let mut seen: HashMap<String, Seen> = HashMap::new();
    let mut finished = None;
    for r in records {
        match &r.event {
            Event::StepStarted { step, attempt, .. } => {
                let s = seen.entry(step.clone()).or_default();
                s.running = true;
                s.finished = None;
                if *attempt == 1 {
                    s.stdout.clear();
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
            Event::Decision { step, chosen, .. } => {
                seen.entry(step.clone()).or_default().decision = *chosen;
            }
            finished @ Event::StepFinished { step, .. } => {
                let s = seen.entry(step.clone()).or_default();
                s.running = false;
                s.finished = Some(finished);
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
        let Some(Event::StepFinished {
            status,
            exit_code,
            duration_ms,
            message,
            killed,
            skip,
            captures,
            http_status,
            stderr_tail,
            ..
        }) = s.finished
        else {
            if s.running {
                inflight.push(Inflight {
                    step: step.id.value.clone(),
                    killed: None,
                });
            }
            continue;
        };
        // An act killed mid-way is as unknown as one in flight at a crash. (A step that
        // started again has no finished record, so it was handled above.)
        if killed.is_some() && step.kind.value == StepKind::Act {
            inflight.push(Inflight {
                step: step.id.value.clone(),
                killed: *killed,
            });
            continue;
        }
        let on_fail = step.on_fail.as_ref().map(|f| f.value.clone());
        let route = match status {
            Status::Succeeded if step.kind.value == StepKind::Branch => match s.decision {
                // A case that no longer leads where it did is decided again.
                Some(Chosen::Case(k)) if k < step.cases.len() => Route::Case(k),
                Some(Chosen::Default) if step.default.is_some() => Route::Default,
                Some(Chosen::Nowhere) => Route::Nowhere,
                _ => continue,
            },
            Status::Succeeded => Route::Normal,
            Status::Failed => match on_fail {
                Some(OnFail::Simple(OnFailSimple::Continue)) => Route::Normal,
                Some(OnFail::Goto { .. }) => Route::FailGoto,
                // The failure that stopped the run: run the step again.
                _ => continue,
            },
            Status::Skipped if *skip == Some(Skip::Operator) => Route::Normal,
            // Routing skips are recomputed; declined acts are asked again.
            _ => continue,
        };
        // A secret capture is masked in the journal, so its value cannot be restored.
        if step.capture.values().any(|c| c.secret) && step.kind.value != StepKind::Act {
            continue;
        }
        let result = StepValues {
            exit_code: *exit_code,
            stdout: s.stdout.join("\n"),
            stderr: stderr_tail.clone(),
            status: *http_status,
            duration_ms: *duration_ms,
            attempt: 1,
            captures: captures.clone(),
        };
        restored.push(Restored {
            step: i,
            status: *status,
            route,
            result: Some(result),
            message: message.clone(),
            duration: Duration::from_millis(*duration_ms),
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

/// Which steps may still run after a resume that restores `restored`: not a restored
/// step, and reached by an edge that a restored step's route takes or that comes from a
/// step that may itself still run (whose outcome is not known yet).
pub fn may_still_run(plan: &Plan, restored: &[Restored]) -> Vec<bool> {
    let n = plan.order.len();
    let mut route: Vec<Option<Route>> = vec![None; n];
    for r in restored {
        if let Some(slot) = route.get_mut(r.step) {
            *slot = Some(r.route);
        }
    }
    let mut may = vec![false; n];
    for &i in &plan.order {
        if route[i].is_some() {
            continue;
        }
        let mut incoming = plan.incoming(i).peekable();
        may[i] = incoming.peek().is_none()
            || incoming.any(|(src, edge)| match route[src] {
                Some(r) => r.takes(edge),
                None => may[src],
            });
    }
    may
}

/// Wall time a run has spent so far: the sum of its segments (from `run_started` or
/// each `resumed` to the last record before the next one), so a run resumed after a
/// night's pause is not counted as a night long.
pub fn time_spent(records: &[Record]) -> Duration {
    let mut total = Duration::ZERO;
    let mut segment: Option<(std::time::SystemTime, std::time::SystemTime)> = None;
    for r in records {
        let Ok(at) = humantime::parse_rfc3339(&r.ts) else {
            continue;
        };
        let opens = matches!(r.event, Event::RunStarted { .. } | Event::Resumed { .. });
        segment = match segment {
            Some((start, end)) if opens => {
                total += end.duration_since(start).unwrap_or_default();
                Some((at, at))
            }
            Some((start, _)) => Some((start, at)),
            None => Some((at, at)),
        };
    }
    if let Some((start, end)) = segment {
        total += end.duration_since(start).unwrap_or_default();
    }
    total
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ts: &str, event: Event) -> Record {
        Record {
            v: crate::journal::FORMAT,
            seq: 0,
            ts: ts.into(),
            prev: String::new(),
            event,
        }
    }

    #[test]
    fn time_spent_sums_the_segments_not_the_pause_between() {
        let signal = || Event::Signal {
            signal: "SIGINT".into(),
            action: "stop".into(),
        };
        let resumed = Event::Resumed {
            by: "bob".into(),
            done: Vec::new(),
            inflight: Vec::new(),
            torn_bytes: 0,
            runbook_changed: false,
        };
        let records = [
            at("2026-11-23T01:00:00Z", signal()),
            at("2026-11-23T01:00:10Z", signal()),
            // Resumed the next morning, for 5 seconds.
            at("2026-11-23T08:00:00Z", resumed),
            at("2026-11-23T08:00:05Z", signal()),
        ];
        assert_eq!(time_spent(&records), Duration::from_secs(15));
        assert_eq!(time_spent(&[]), Duration::ZERO);
    }
}
