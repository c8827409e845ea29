//! Scheduling as plain functions over step states: which edges a finished step takes,
//! when a step is ready or can no longer run (skips cascade), and what a failure's
//! `on_fail` does (abort, continue, escalate, goto, `retry_from` with its generations).

use std::time::Duration;

use runbook_core::model::{OnFail, OnFailSimple, Runbook, StepKind};
use runbook_core::plan::{Edge, Plan};
use serde_json::{Value, json};

use super::{Shared, StepValues};
use crate::event::{Chosen, Contact, Event, RunStatus, Skip, Status};

/// Where a step sends the run: which of its outgoing edges are taken. One value per
/// step, for steps that ran, steps restored from a journal and steps preset by `--from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Nowhere (skipped, stopped, a branch with no case holding and no default).
    Nowhere,
    /// Along its ordinary edges (list order and `needs`).
    Normal,
    /// Branch case `k` (0-based).
    Case(usize),
    /// Branch default.
    Default,
    /// Its `on_fail: goto` edge.
    FailGoto,
    /// Along every outgoing edge (steps before `--from`; a dry-run branch that could not
    /// decide).
    Every,
}

impl Route {
    /// Whether the run goes on along `edge` when a step ended this way.
    pub fn takes(self, edge: Edge) -> bool {
        match (self, edge) {
            (Route::Every, _) => true,
            (Route::Normal, Edge::Next | Edge::Needs) => true,
            (Route::Case(k), Edge::Case(j)) => k == j,
            (Route::Default, Edge::Default) => true,
            (Route::FailGoto, Edge::FailGoto) => true,
            _ => false,
        }
    }

    /// The route a branch takes along `edge`.
    pub(super) fn branch(edge: Edge) -> Route {
        match edge {
            Edge::Case(k) => Route::Case(k),
            Edge::Default => Route::Default,
            _ => Route::Normal,
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct State {
    pub(super) status: Status,
    pub(super) route: Route,
    /// Dry run: this step, or one it depends on, is an act that did not run.
    pub(super) hypothetical: bool,
    /// `steps.<id>` values: captures and built-ins.
    pub(super) result: Option<StepValues>,
    pub(super) duration: Duration,
    pub(super) attempts: u32,
    pub(super) message: Option<String>,
    pub(super) title: Option<String>,
    /// Bumped when `retry_from` resets the step; stale completions are ignored.
    pub(super) generation: u32,
}

impl State {
    pub(super) fn new() -> Self {
        State {
            status: Status::Pending,
            route: Route::Nowhere,
            hypothetical: false,
            result: None,
            duration: Duration::ZERO,
            attempts: 0,
            message: None,
            title: None,
            generation: 0,
        }
    }

    /// Not started, not skipped, not routed: still waiting for its sources. (A dry-run
    /// step shown as pending has a flow, so it counts as decided.)
    pub(super) fn undecided(&self) -> bool {
        self.status == Status::Pending && self.route == Route::Nowhere
    }

    /// Its outgoing edges are known.
    pub(super) fn resolved(&self) -> bool {
        self.status != Status::Running && !self.undecided()
    }
}

pub(super) fn edge_taken(src: &State, edge: Edge) -> bool {
    src.route.takes(edge)
}

/// If every source of step `i` is resolved and one of its edges was taken, whether it runs
/// hypothetically (`Some(hyp)`); `None` when it is not ready or must be skipped.
pub(super) fn ready(plan: &Plan, states: &[State], i: usize) -> Option<bool> {
    let mut any = false;
    let mut taken = false;
    let mut hyp = false;
    for (src, edge) in plan.incoming(i) {
        any = true;
        if !states[src].resolved() {
            return None;
        }
        if edge_taken(&states[src], edge) {
            taken = true;
            hyp |= states[src].hypothetical;
        }
    }
    (!any || taken).then_some(hyp)
}

/// Skip every pending step whose sources are all resolved and none of whose edges was
/// taken, until nothing changes (skips cascade).
pub(super) fn decide(sh: &Shared, states: &mut [State]) {
    let rb = &sh.runbook;
    loop {
        let mut changed = false;
        for &i in &sh.plan.order {
            if !states[i].undecided() {
                continue;
            }
            let mut incoming = sh.plan.incoming(i).peekable();
            if incoming.peek().is_none() {
                continue;
            }
            let all: Vec<(usize, Edge)> = incoming.collect();
            if all.iter().any(|(s, _)| !states[*s].resolved()) {
                continue;
            }
            if all.iter().any(|(s, e)| edge_taken(&states[*s], *e)) {
                continue;
            }
            let reason = skip_reason(rb, states, &all);
            states[i].status = Status::Skipped;
            states[i].route = Route::Nowhere;
            states[i].message = Some(reason.clone());
            sh.emit(Event::StepFinished {
                step: rb.steps[i].id.value.clone(),
                status: Status::Skipped,
                exit_code: None,
                duration_ms: 0,
                message: Some(reason),
                killed: None,
                skip: Some(Skip::Route),
                captures: serde_json::Map::new(),
                http_status: None,
                stderr_tail: String::new(),
            });
            changed = true;
        }
        if !changed {
            break;
        }
    }
}

pub(super) fn skip_reason(rb: &Runbook, states: &[State], incoming: &[(usize, Edge)]) -> String {
    let (src, edge) = incoming[0];
    let id = &rb.steps[src].id.value;
    match (states[src].status, edge) {
        (_, Edge::Case(_) | Edge::Default) => format!("{id} chose another route"),
        (_, Edge::FailGoto) => format!("{id} did not fail"),
        (Status::Skipped, _) => format!("{id} was skipped"),
        (Status::Failed, _) => format!("{id} failed"),
        (_, _) if rb.steps[src].kind.value == StepKind::Branch => {
            format!("{id} chose another route")
        }
        _ => format!("{id} did not lead here"),
    }
}

/// Apply a failed step's `on_fail`. Returns how the run stops, if it does.
pub(super) fn route_failure(
    sh: &Shared,
    states: &mut [State],
    rounds: &mut [u32],
    i: usize,
) -> Option<RunStatus> {
    let rb = &sh.runbook;
    let step = &rb.steps[i];
    let id = step.id.value.clone();
    let on_fail = step
        .on_fail
        .as_ref()
        .map_or(OnFail::Simple(OnFailSimple::Abort), |f| f.value.clone());
    match on_fail {
        OnFail::Simple(OnFailSimple::Abort) => Some(RunStatus::Failed),
        OnFail::Simple(OnFailSimple::Continue) => {
            states[i].route = Route::Normal;
            None
        }
        OnFail::Simple(OnFailSimple::Escalate) => {
            let elapsed = sh.elapsed();
            let mut due = Vec::new();
            let mut next = None;
            for rung in &rb.escalation {
                let c = Contact {
                    after: rung.after.value.text.clone(),
                    to: rung.to.clone(),
                };
                if rung.after.value.value <= elapsed {
                    due.push(c);
                } else if next.is_none() {
                    next = Some(c);
                }
            }
            sh.emit(Event::Escalation {
                step: id,
                due,
                next,
            });
            Some(RunStatus::Escalated)
        }
        OnFail::Goto { goto } => {
            states[i].route = Route::FailGoto;
            sh.emit(Event::Decision {
                step: id,
                goto: Some(goto.value.clone()),
                reason: "on_fail".into(),
                chosen: Some(Chosen::FailGoto),
                skips: Vec::new(),
            });
            None
        }
        OnFail::RetryFrom {
            retry_from,
            attempts,
        } => {
            let Some(from) = sh.plan.index(&retry_from) else {
                return Some(RunStatus::Failed);
            };
            if rounds[i] >= attempts {
                let reason = format!("gave up after {attempts} rounds from {}", retry_from.value);
                sh.emit(Event::Decision {
                    step: id,
                    goto: None,
                    reason: reason.clone(),
                    chosen: Some(Chosen::GaveUp),
                    skips: Vec::new(),
                });
                states[i].message = Some(format!(
                    "{}; {reason}",
                    states[i].message.as_deref().unwrap_or("failed"),
                ));
                return Some(RunStatus::Failed);
            }
            rounds[i] += 1;
            sh.emit(Event::Rewind {
                step: id,
                from: retry_from.value.clone(),
                round: rounds[i],
                of: attempts,
            });
            // Reset `from` and everything downstream of it.
            for (s, reset) in sh.plan.downstream(from).into_iter().enumerate() {
                if reset {
                    let generation = states[s].generation + 1;
                    states[s] = State {
                        generation,
                        ..State::new()
                    };
                }
            }
            None
        }
    }
}

/// The values step `i`'s templates and conditions read: `params`, `steps` (those it
/// names), `env`, `run`.
pub(super) fn data(sh: &Shared, states: &[State], i: usize) -> Value {
    let steps: serde_json::Map<String, Value> = sh.plan.reads[i]
        .iter()
        .filter_map(|&s| {
            Some((
                sh.runbook.steps[s].id.value.clone(),
                states[s].result.as_ref()?.to_json(),
            ))
        })
        .collect();
    json!({
        "params": sh.params,
        "steps": steps,
        "env": sh.env,
        "run": {
            "id": sh.options.run_id,
            "operator": sh.options.operator,
            "mode": sh.options.mode.as_str(),
            "started_at": humantime::format_rfc3339_seconds(sh.started_at).to_string(),
            "runbook": sh.runbook.name.value,
        },
    })
}
