//! One step task: render the step, ask the operator (acts and manual steps), then
//! attempts: the action through the backend, captures, `expect`; branches evaluate their
//! cases. A task never touches the scheduler's state: it returns an [`Outcome`].

use std::time::Duration;

use runbook_core::model::{Step, StepKind};
use runbook_core::plan::Edge;
use runbook_core::render::{RenderedAction, render_step};
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;

use super::schedule::{Route, State};
use super::{Question, Shared, StepValues, millis};
use crate::action::{ActionResult, Io, Piece};
use crate::event::{
    Answer, AnsweredBy, Chosen, Event, Killed, Mode, RunStatus, Skip, Status, Stream,
};
use crate::mask::{MASK, Masker};
use crate::{capture, eval};

/// Default time between attempts when `retry` gives none.
/// Bytes of a step's standard error kept in its `step_finished` record.
const STDERR_TAIL: usize = 4096;

pub(super) const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// What a step task reports back: the step's new state, and whether the run stops.
#[derive(Debug)]
pub(super) struct Outcome {
    pub(super) state: State,
    /// The operator chose abort, the run was interrupted while asking, or the runbook
    /// has an error.
    pub(super) stop: Option<RunStatus>,
}

/// What a step task works with.
pub(super) struct Task<'a> {
    pub(super) sh: &'a Shared,
    pub(super) i: usize,
    pub(super) step: &'a Step,
    pub(super) started: Instant,
    pub(super) title: String,
}

impl Task<'_> {
    pub(super) fn id(&self) -> String {
        self.step.id.value.clone()
    }

    pub(super) fn finish(&self, end: Ending) -> Outcome {
        let duration = self.started.elapsed();
        let masker = &self.sh.masker;
        let message = end.message.map(|m| masker.mask(&m));
        // What replay needs to restore the step's values, masked like everything else.
        let (captures, http_status, stderr_tail) = match &end.result {
            Some(v) => {
                let captures = v
                    .captures
                    .iter()
                    .map(|(k, value)| {
                        let secret = self.step.capture.get(k).is_some_and(|c| c.secret);
                        let shown = if secret {
                            Value::String(MASK.into())
                        } else {
                            masker.mask_json(value)
                        };
                        (k.clone(), shown)
                    })
                    .collect();
                let from = v.stderr.len().saturating_sub(STDERR_TAIL);
                let tail = &v.stderr[runbook_core::text::floor_boundary(&v.stderr, from)..];
                (captures, v.status, masker.mask(tail))
            }
            None => Default::default(),
        };
        self.sh.emit(Event::StepFinished {
            step: self.id(),
            status: end.status,
            exit_code: end.exit_code,
            duration_ms: millis(duration),
            message: message.clone(),
            killed: end.killed,
            skip: end.skip,
            captures,
            http_status,
            stderr_tail,
        });
        Outcome {
            state: State {
                status: end.status,
                route: end.route,
                hypothetical: end.hypothetical,
                result: end.result,
                duration,
                attempts: end.attempts,
                message,
                title: Some(self.title.clone()),
                generation: 0,
            },
            stop: None,
        }
    }
}

/// How a step task ends; only status and flow are always given.
#[derive(Debug)]
pub(super) struct Ending {
    status: Status,
    route: Route,
    hypothetical: bool,
    result: Option<StepValues>,
    attempts: u32,
    message: Option<String>,
    exit_code: Option<i32>,
    killed: Option<Killed>,
    skip: Option<Skip>,
}

impl Ending {
    fn new(status: Status, route: Route) -> Self {
        Ending {
            status,
            route,
            hypothetical: false,
            result: None,
            attempts: 0,
            message: None,
            exit_code: None,
            killed: None,
            skip: None,
        }
    }

    fn hypothetical(mut self, h: bool) -> Self {
        self.hypothetical = h;
        self
    }

    fn result(mut self, r: Option<StepValues>) -> Self {
        self.result = r;
        self
    }

    fn attempts(mut self, n: u32) -> Self {
        self.attempts = n;
        self
    }

    fn message(mut self, m: impl Into<String>) -> Self {
        self.message = Some(m.into());
        self
    }

    fn exit_code(mut self, c: Option<i32>) -> Self {
        self.exit_code = c;
        self
    }

    fn killed(mut self, k: Option<Killed>) -> Self {
        self.killed = k;
        self
    }

    fn skip(mut self, why: Skip) -> Self {
        self.skip = Some(why);
        self
    }
}

pub(super) async fn execute(
    sh: &Shared,
    i: usize,
    data: Value,
    hyp: bool,
    kill: watch::Receiver<Option<Killed>>,
    interrupt: watch::Receiver<u8>,
) -> Outcome {
    let step = &sh.runbook.steps[i];
    let kind = step.kind.value;
    let dry = sh.options.mode == Mode::DryRun;
    let rendered = render_step(&sh.renderer, step, &data);
    let title = rendered
        .as_ref()
        .map_or_else(|_| step.title.value.clone(), |r| r.title.clone());
    let task = Task {
        sh,
        i,
        step,
        started: Instant::now(),
        title: sh.masker.mask(&title),
    };
    let rendered = match rendered {
        Ok(r) => r,
        Err(e) => {
            sh.emit(Event::StepStarted {
                step: task.id(),
                kind: kind.as_str().into(),
                title: task.title.clone(),
                attempt: 1,
                action: None,
                confirm: None,
            });
            if hyp {
                return task.finish(
                    Ending::new(Status::Pending, Route::Normal)
                        .hypothetical(true)
                        .message(format!(
                            "dry run: needs values from steps that did not run ({e})"
                        )),
                );
            }
            return task.finish(
                Ending::new(Status::Failed, Route::Nowhere)
                    .attempts(1)
                    .message(e.to_string()),
            );
        }
    };
    let shown_action = rendered
        .action
        .as_ref()
        .map(|a| a.masked(&|t| sh.masker.mask(t)));
    sh.emit(Event::StepStarted {
        step: task.id(),
        kind: kind.as_str().into(),
        title: task.title.clone(),
        attempt: 1,
        action: shown_action.clone(),
        confirm: rendered.confirm.as_ref().map(|c| sh.masker.mask(c)),
    });

    if kind == StepKind::Branch {
        return branch(&task, &data, hyp);
    }
    let Some(action) = rendered.action else {
        return task.finish(Ending::new(Status::Failed, Route::Nowhere).message("no action"));
    };
    let is_manual = matches!(action, RenderedAction::Manual { .. });
    let is_wait = matches!(action, RenderedAction::Wait { .. });

    if dry {
        if kind == StepKind::Act || is_manual || is_wait {
            return task.finish(
                Ending::new(Status::NotExecuted, Route::Normal)
                    .hypothetical(true)
                    .message("dry run"),
            );
        }
        if kind == StepKind::Verify && hyp {
            // It could hold or fail: show both what follows and its failure route.
            let failing = match task.step.on_fail.as_ref().map(|f| &f.value) {
                Some(runbook_core::model::OnFail::Goto { goto }) => {
                    format!(
                        "; what follows and its on_fail route (→ {}) are both shown",
                        goto.value
                    )
                }
                _ => String::new(),
            };
            return task.finish(
                Ending::new(Status::Pending, Route::Every)
                    .hypothetical(true)
                    .message(format!(
                        "dry run: verifies the effect of acts that did not run{failing}"
                    )),
            );
        }
    }

    // Ask before acts (and for manual steps, whatever their kind).
    if !dry && (kind == StepKind::Act || is_manual) {
        let lines = shown_action
            .as_ref()
            .map(RenderedAction::lines)
            .unwrap_or_default();
        let auto = if is_manual {
            sh.options
                .auto_manual
                .then_some(AnsweredBy::AutoAcknowledgeManual)
        } else {
            sh.options.yes.then_some(AnsweredBy::AutoApproveActs)
        };
        let answer = match auto {
            Some(by) => {
                sh.emit(Event::Answered {
                    step: task.id(),
                    answer: Answer::Approve,
                    by,
                });
                Answer::Approve
            }
            None => {
                let confirm = rendered.confirm.as_ref().map(|c| sh.masker.mask(c));
                let question = Question {
                    step: task.id(),
                    title: task.title.clone(),
                    manual: is_manual,
                    lines,
                    confirm: confirm.clone(),
                };
                sh.emit(Event::Asked {
                    step: task.id(),
                    question: confirm.unwrap_or_else(|| {
                        if is_manual {
                            "Done?".into()
                        } else {
                            "Run this step?".into()
                        }
                    }),
                });
                let mut interrupt = interrupt.clone();
                let answer = tokio::select! {
                    a = sh.operator.ask(question) => Some(a),
                    _ = interrupt.wait_for(|l| *l >= 1) => None,
                    () = killed(kill.clone()) => None,
                };
                let Some(answer) = answer else {
                    let mut o = task.finish(
                        Ending::new(Status::Pending, Route::Nowhere)
                            .message("interrupted while waiting for an answer"),
                    );
                    o.stop = Some(RunStatus::Interrupted);
                    return o;
                };
                sh.emit(Event::Answered {
                    step: task.id(),
                    answer,
                    by: AnsweredBy::Operator(sh.options.operator.clone()),
                });
                answer
            }
        };
        match answer {
            Answer::Approve => {}
            Answer::Decline => {
                return task.finish(
                    Ending::new(Status::Declined, Route::Nowhere)
                        .message("declined by the operator"),
                );
            }
            Answer::Skip => {
                return task.finish(
                    Ending::new(Status::Skipped, Route::Normal)
                        .message("skipped by the operator")
                        .skip(Skip::Operator),
                );
            }
            Answer::Abort => {
                let mut o = task.finish(
                    Ending::new(Status::Declined, Route::Nowhere)
                        .message("run aborted by the operator"),
                );
                o.stop = Some(RunStatus::Aborted);
                return o;
            }
        }
        if is_manual {
            let result = StepValues::bare(millis(task.started.elapsed()));
            return task.finish(
                Ending::new(Status::Succeeded, Route::Normal)
                    .result(Some(result))
                    .attempts(1),
            );
        }
    }

    attempts(&task, &action, &data, hyp, kill, interrupt).await
}

pub(super) async fn killed(mut kill: watch::Receiver<Option<Killed>>) {
    if kill.wait_for(Option::is_some).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Resolves once the run is interrupted (never, if nobody can interrupt it any more).
pub(super) async fn interrupted(interrupt: &mut watch::Receiver<u8>) {
    if interrupt.wait_for(|l| *l >= 1).await.is_err() {
        std::future::pending::<()>().await;
    }
}

pub(super) fn branch(task: &Task<'_>, data: &Value, hyp: bool) -> Outcome {
    let sh = task.sh;
    let step = task.step;
    let scope = data.as_object().cloned().unwrap_or_default();
    let mut chosen = None;
    for (k, case) in step.cases.iter().enumerate() {
        match eval::evaluate(&case.when, &scope) {
            Ok(o) => {
                sh.emit(Event::Condition {
                    step: task.id(),
                    expr: case.when.value.clone(),
                    result: o.result,
                    values: mask_map(&sh.masker, &o.values),
                });
                if o.result {
                    chosen = Some((
                        Edge::Case(k),
                        case.goto.value.clone(),
                        format!("case {}: {}", k + 1, case.when.value),
                    ));
                    break;
                }
            }
            Err(e) if hyp => {
                sh.emit(Event::Decision {
                    step: task.id(),
                    goto: None,
                    reason: "dry run: the values this branch reads come from steps that did not run; every route is shown".into(),
                    chosen: Some(Chosen::Every),
                    skips: Vec::new(),
                });
                return task.finish(
                    Ending::new(Status::Pending, Route::Every)
                        .hypothetical(true)
                        .message(format!("dry run: {e}")),
                );
            }
            Err(e) => {
                return runbook_error(
                    task,
                    Ending::new(Status::Failed, Route::Nowhere).attempts(1),
                    at(task, &case.when, e),
                );
            }
        }
    }
    let chosen = chosen.or_else(|| {
        step.default.as_ref().map(|d| {
            (
                Edge::Default,
                d.value.clone(),
                "no case held: default".to_string(),
            )
        })
    });
    let result = StepValues::bare(millis(task.started.elapsed()));
    match chosen {
        Some((edge, goto, reason)) => {
            let skips = sh
                .plan
                .skipped_when(&sh.runbook, task.i, edge)
                .into_iter()
                .map(|s| sh.runbook.steps[s].id.value.clone())
                .collect();
            sh.emit(Event::Decision {
                step: task.id(),
                goto: Some(goto),
                reason,
                chosen: Some(match edge {
                    Edge::Case(k) => Chosen::Case(k),
                    _ => Chosen::Default,
                }),
                skips,
            });
            task.finish(
                Ending::new(Status::Succeeded, Route::branch(edge))
                    .hypothetical(hyp)
                    .result(Some(result))
                    .attempts(1),
            )
        }
        None => {
            sh.emit(Event::Decision {
                step: task.id(),
                goto: None,
                reason: "no case held and there is no default".into(),
                chosen: Some(Chosen::Nowhere),
                skips: Vec::new(),
            });
            task.finish(
                Ending::new(Status::Succeeded, Route::Nowhere)
                    .hypothetical(hyp)
                    .result(Some(result))
                    .attempts(1),
            )
        }
    }
}

pub(super) fn mask_map(
    m: &Masker,
    values: &serde_json::Map<String, Value>,
) -> serde_json::Map<String, Value> {
    values
        .iter()
        .map(|(k, v)| (k.clone(), m.mask_json(v)))
        .collect()
}

/// Run the action until the step succeeds, attempts run out or the deadline passes.
pub(super) async fn attempts(
    task: &Task<'_>,
    action: &RenderedAction,
    data: &Value,
    hyp: bool,
    kill: watch::Receiver<Option<Killed>>,
    mut interrupt: watch::Receiver<u8>,
) -> Outcome {
    let sh = task.sh;
    let step = task.step;
    let retry = step.retry.as_ref();
    let max = retry.map_or(1, |r| r.attempts.max(1));
    let mut interval = retry
        .and_then(|r| r.interval.as_ref())
        .map_or(DEFAULT_INTERVAL, |d| d.value.value);
    let backoff = retry.and_then(|r| r.backoff).unwrap_or(1.0).max(1.0);
    let deadline = step.timeout.as_ref().map(|t| task.started + t.value.value);
    let mut attempt = 1u32;
    loop {
        if attempt > 1 {
            sh.emit(Event::StepStarted {
                step: task.id(),
                kind: step.kind.value.as_str().into(),
                title: task.title.clone(),
                attempt,
                action: None,
                confirm: None,
            });
        }
        if let Some(e) = sh.sink.error() {
            return task.finish(
                Ending::new(Status::Failed, Route::Nowhere)
                    .hypothetical(hyp)
                    .attempts(attempt)
                    .message(format!("not started: {e}")),
            );
        }
        let attempt_started = Instant::now();
        let result = run_action(task, action, deadline, kill.clone()).await;
        let (verdict, value) = judge(task, &result, data, attempt, attempt_started);
        let message = match verdict {
            Verdict::Held => {
                return task.finish(
                    Ending::new(Status::Succeeded, Route::Normal)
                        .hypothetical(hyp)
                        .result(Some(value))
                        .attempts(attempt)
                        .exit_code(result.exit_code),
                );
            }
            // Not retried, no `on_fail`: attempts and routes are for the system's failures.
            Verdict::Broken(message) => {
                return runbook_error(
                    task,
                    Ending::new(Status::Failed, Route::Nowhere)
                        .hypothetical(hyp)
                        .result(Some(value))
                        .attempts(attempt)
                        .exit_code(result.exit_code),
                    message,
                );
            }
            Verdict::Failed(message) => message,
        };
        let out_of_time =
            result.timed_out || deadline.is_some_and(|d| Instant::now() + interval >= d);
        if result.killed || result.timed_out || attempt >= max || out_of_time {
            let message = if out_of_time && !result.timed_out && attempt < max {
                format!(
                    "{message} (timeout {} reached after {attempt} attempts)",
                    step.timeout.as_ref().map_or("", |t| t.value.text.as_str())
                )
            } else if result.timed_out {
                format!(
                    "{message} (timeout {})",
                    step.timeout.as_ref().map_or("", |t| t.value.text.as_str())
                )
            } else if max > 1 {
                format!("{message} (after {attempt} attempts)")
            } else {
                message
            };
            let killed = if result.timed_out {
                Some(Killed::Timeout)
            } else if result.killed {
                Some((*kill.borrow()).unwrap_or(Killed::RunStopped))
            } else {
                None
            };
            return task.finish(
                Ending::new(Status::Failed, Route::Nowhere)
                    .hypothetical(hyp)
                    .result(Some(value))
                    .attempts(attempt)
                    .message(message)
                    .exit_code(result.exit_code)
                    .killed(killed),
            );
        }
        sh.emit(Event::AttemptFailed {
            step: task.id(),
            attempt,
            attempts: max,
            reason: sh.masker.mask(&message),
            retry_in_ms: millis(interval),
            exit_code: result.exit_code,
            http_status: result.status,
        });
        // Waiting for the next attempt is where an interrupt stops a polling step: the
        // first one already (nothing is running), not only the second.
        let stop = tokio::select! {
            () = tokio::time::sleep(interval) => false,
            () = interrupted(&mut interrupt) => true,
            () = killed(kill.clone()) => true,
        };
        if stop {
            // The step did not use up its attempts: it has not failed, and no `on_fail`
            // route may follow from it. It is pending, so `resume` runs it again.
            let mut o = task.finish(
                Ending::new(Status::Pending, Route::Nowhere)
                    .hypothetical(hyp)
                    .result(Some(value))
                    .attempts(attempt)
                    .message(format!(
                        "stopped while waiting to retry (attempt {attempt} of {max}: {message})"
                    ))
                    .exit_code(result.exit_code),
            );
            o.stop = Some(RunStatus::Interrupted);
            return o;
        }
        interval = interval.mul_f64(backoff);
        attempt += 1;
    }
}

pub(super) async fn run_action(
    task: &Task<'_>,
    action: &RenderedAction,
    deadline: Option<Instant>,
    kill: watch::Receiver<Option<Killed>>,
) -> ActionResult {
    let sh = task.sh;
    let id = task.id();
    let emit = |stream: Stream, line: &str, piece: Piece| {
        sh.emit(Event::Output {
            step: id.clone(),
            stream,
            line: match piece {
                Piece::Whole => sh.masker.mask(line),
                Piece::Cut => sh.masker.mask_cut(line),
            },
        });
    };
    let io = Io {
        output_limit: sh.options.output_limit,
        kill_grace: sh.options.kill_grace,
        deadline,
        kill,
        emit: &emit,
    };
    sh.backend.run(&id, action, io).await
}

/// What an attempt's result means.
pub(super) enum Verdict {
    /// Captures taken, the expectation held.
    Held,
    /// The action, a capture or the expectation failed: retries and `on_fail` apply.
    Failed(String),
    /// A condition could not be evaluated although its values were there: the runbook
    /// is wrong.
    Broken(String),
}

fn failed(message: Option<String>) -> Verdict {
    Verdict::Failed(message.unwrap_or_else(|| "failed".into()))
}

/// `path:line:col: message`, for a condition that could not be evaluated.
fn at(task: &Task<'_>, expr: &runbook_core::model::Sp<String>, message: String) -> String {
    format!(
        "{}:{}:{}: {message}",
        task.sh.options.origin.path, expr.span.line, expr.span.column
    )
}

/// End the step, and the run, on a runbook error (exit 2): no retry, no `on_fail`.
fn runbook_error(task: &Task<'_>, end: Ending, message: String) -> Outcome {
    let mut o = task.finish(end.message(format!("runbook error: {message}")));
    o.stop = Some(RunStatus::RunbookError);
    o
}

/// Captures and expectation: whether the attempt succeeded, the step's values, and why not.
pub(super) fn judge(
    task: &Task<'_>,
    result: &ActionResult,
    data: &Value,
    attempt: u32,
    started: Instant,
) -> (Verdict, StepValues) {
    let sh = task.sh;
    let step = task.step;
    let mut values = StepValues {
        exit_code: result.exit_code,
        stdout: result.stdout.clone(),
        stderr: result.stderr.clone(),
        status: result.status,
        duration_ms: millis(started.elapsed()),
        attempt,
        captures: result.extra.clone(),
    };
    if result.timed_out || result.killed {
        return (failed(result.message.clone()), values);
    }
    // Without `expect`, the action's own result decides; with it, the expectation does
    // (a failed command usually also fails its captures).
    if step.expect.is_none() && !result.ok {
        return (failed(result.message.clone()), values);
    }
    for (name, cap) in &step.capture {
        match capture::extract(name, cap, &result.stdout) {
            Ok(v) => {
                if cap.secret {
                    secret_values(&sh.masker, &v);
                }
                sh.emit(Event::Captured {
                    step: task.id(),
                    name: name.clone(),
                    value: if cap.secret {
                        Value::String(MASK.into())
                    } else {
                        sh.masker.mask_json(&v)
                    },
                });
                values.captures.insert(name.clone(), v);
            }
            Err(e) => {
                let mut e = e;
                if result.dropped > 0 {
                    e.push_str(" (the output was cut at the output limit)");
                }
                if let Some(m) = result.message.as_ref().filter(|_| !result.ok) {
                    e = format!("{m}; {e}");
                }
                return (Verdict::Failed(e), values);
            }
        }
    }
    if let Some(expect) = &step.expect {
        let mut scope = data.as_object().cloned().unwrap_or_default();
        if let Value::Object(own) = values.to_json() {
            scope.extend(own);
        }
        match eval::evaluate(expect, &scope) {
            Ok(o) => {
                let shown = mask_map(&sh.masker, &o.values);
                sh.emit(Event::Condition {
                    step: task.id(),
                    expr: expect.value.clone(),
                    result: o.result,
                    values: shown.clone(),
                });
                if !o.result {
                    let mut why = format!("expected `{}`", expect.value);
                    if !shown.is_empty() {
                        why.push_str(&format!(", but {}", eval::show(&shown)));
                    }
                    if let Some(m) = result.message.as_ref().filter(|_| !result.ok) {
                        why = format!("{m}; {why}");
                    }
                    return (Verdict::Failed(why), values);
                }
            }
            Err(e) => {
                // A failed action explains a condition that cannot be evaluated (its
                // values are missing): report the cause, not the consequence. After an
                // action that worked, it is the runbook that is wrong.
                return match result.message.as_ref().filter(|_| !result.ok) {
                    Some(m) => (Verdict::Failed(m.clone()), values),
                    None => (Verdict::Broken(at(task, expect, e)), values),
                };
            }
        }
    }
    (Verdict::Held, values)
}

pub(super) fn secret_values(m: &Masker, v: &Value) {
    match v {
        Value::String(s) => m.add(s.clone()),
        Value::Array(items) => items.iter().for_each(|x| secret_values(m, x)),
        Value::Object(map) => map.values().for_each(|x| secret_values(m, x)),
        other => m.add(other.to_string()),
    }
}
