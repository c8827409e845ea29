//! The engine: drives a runbook's plan, one step task per ready step.
//!
//! The scheduler ([`Engine::run`]) owns all state. Step tasks ([`step`]) get a snapshot
//! of the values they may read (params, earlier steps' results) and return an outcome;
//! the scheduler applies it, routes ([`schedule`]: DESIGN's activation rule, `on_fail`)
//! and starts whatever became ready. Live runs, dry runs, `--from` and resume share all of
//! this; only what happens to acts differs, and where results come from ([`Backend`]).

mod phases;
mod schedule;
mod step;
pub mod values;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use runbook_core::model::{Action, Runbook, StepKind};
use runbook_core::plan::Plan;
use runbook_core::template::Renderer;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::backend::{AwsSettings, Backend, Live, SetupError};
use crate::event::{Answer, Event, Killed, Mode, RunStatus, Sink, Skip, Status, Summary};
use crate::mask::Masker;

pub use schedule::Route;
use schedule::{State, data, decide, ready, route_failure};
use step::{Outcome, execute};
pub use values::StepValues;

/// How a run behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Live or dry run.
    pub mode: Mode,
    /// Approve every act without asking.
    pub yes: bool,
    /// Acknowledge manual steps without asking.
    pub auto_manual: bool,
    /// Most steps running at once.
    pub parallel: usize,
    /// Bytes of output kept per stream per step.
    pub output_limit: usize,
    /// Time between SIGTERM and SIGKILL when a command is stopped.
    pub kill_grace: Duration,
    /// Run id (`run.id` in templates).
    pub run_id: String,
    /// Who runs it (`run.operator`).
    pub operator: String,
    /// Where the runbook came from, recorded in `run_started`.
    pub origin: crate::event::Origin,
    /// AWS region and profile from the front end (they win over the runbook's).
    pub aws: AwsSettings,
    /// Time the run spent before this segment (a resume: see `resume::time_spent`); the
    /// run's duration is this plus the segment's.
    pub earlier: Duration,
    /// The front end's exit code for each ending, recorded in `run_finished` so the
    /// journal says how the process ended. The library has no exit-code table of its own.
    pub exit_code: Option<fn(RunStatus) -> i32>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::Live,
            yes: false,
            auto_manual: false,
            parallel: 4,
            output_limit: 1 << 20,
            kill_grace: Duration::from_secs(5),
            run_id: "run".into(),
            operator: "operator".into(),
            origin: crate::event::Origin::default(),
            aws: AwsSettings::default(),
            earlier: Duration::ZERO,
            exit_code: None,
        }
    }
}

/// A question for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// Step id.
    pub step: String,
    /// Rendered step title.
    pub title: String,
    /// Whether this is a manual step (answer: done) rather than an act to approve.
    pub manual: bool,
    /// The action as lines (`$ command`, instructions).
    pub lines: Vec<String>,
    /// The step's `confirm` text.
    pub confirm: Option<String>,
}

/// Answers questions: a terminal prompt in the CLI, a script in tests.
pub trait Operator: Send + Sync {
    /// Ask, and wait for the answer.
    fn ask(&self, question: Question) -> Pin<Box<dyn Future<Output = Answer> + Send + '_>>;
}

/// Interrupt requests from outside (signals): 1 = stop starting steps, 2 = kill running ones.
#[derive(Debug, Clone)]
pub struct Control(watch::Sender<u8>);

impl Control {
    /// The interrupt level so far (0: none).
    pub fn level(&self) -> u8 {
        *self.0.borrow()
    }

    /// Raise the interrupt level by one (first Ctrl-C: 1, second: 2) and return it.
    pub fn interrupt(&self) -> u8 {
        let mut level = 0;
        self.0.send_modify(|l| {
            *l = (*l + 1).min(2);
            level = *l;
        });
        level
    }
}

/// The final state of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// Step id.
    pub id: String,
    /// Kind.
    pub kind: StepKind,
    /// Rendered title (or as written).
    pub title: String,
    /// Final status.
    pub status: Status,
    /// Wall time.
    pub duration: Duration,
    /// Attempts made.
    pub attempts: u32,
    /// Why it failed or was skipped.
    pub message: Option<String>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Overall status (and exit code).
    pub status: RunStatus,
    /// Every step in plan order.
    pub steps: Vec<StepReport>,
    /// Wall time.
    pub duration: Duration,
    /// Counts.
    pub summary: Summary,
    /// The run could not be recorded (journal write failed) and was stopped.
    pub record_error: Option<String>,
}

/// Everything a run needs.
pub struct Engine {
    shared: Arc<Shared>,
    interrupt: watch::Receiver<u8>,
    control: Control,
    resume: Option<(Vec<Restored>, Option<Event>)>,
}

/// A step that finished before the run was interrupted, restored from the journal.
#[derive(Debug, Clone, PartialEq)]
pub struct Restored {
    /// Step index.
    pub step: usize,
    /// How it ended.
    pub status: Status,
    /// Where it sent the run.
    pub route: Route,
    /// Its `steps.<id>` values (none for a step that did not run).
    pub result: Option<StepValues>,
    /// Its message.
    pub message: Option<String>,
    /// How long it took.
    pub duration: Duration,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("runbook", &self.shared.runbook.name.value)
            .finish_non_exhaustive()
    }
}

struct Shared {
    runbook: Arc<Runbook>,
    plan: Arc<Plan>,
    options: Options,
    params: serde_json::Map<String, Value>,
    shown_params: serde_json::Map<String, Value>,
    env: serde_json::Map<String, Value>,
    renderer: Renderer,
    masker: Masker,
    sink: Arc<dyn Sink>,
    operator: Arc<dyn Operator>,
    backend: Arc<dyn Backend>,
    started: Instant,
    started_at: SystemTime,
}

impl Shared {
    fn emit(&self, event: Event) {
        self.sink.emit(SystemTime::now(), &event);
    }

    /// The run clock: time since the run started, earlier segments of a resumed run
    /// included. Escalation and phase deadlines are measured on it.
    fn elapsed(&self) -> Duration {
        self.options.earlier + self.started.elapsed()
    }
}

impl Engine {
    /// Prepare a run. `params` are the resolved values, `secrets` the values to mask.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        runbook: Arc<Runbook>,
        plan: Arc<Plan>,
        params: serde_json::Map<String, Value>,
        shown_params: serde_json::Map<String, Value>,
        secrets: Vec<String>,
        env: serde_json::Map<String, Value>,
        options: Options,
        sink: Arc<dyn Sink>,
        operator: Arc<dyn Operator>,
    ) -> Result<Engine, SetupError> {
        let backend = Live::new(options.aws.or_runbook(&runbook))?;
        let (tx, rx) = watch::channel(0u8);
        Ok(Engine {
            shared: Arc::new(Shared {
                runbook,
                plan,
                options,
                params,
                shown_params,
                env,
                renderer: Renderer::new(),
                masker: Masker::new(secrets),
                sink,
                operator,
                backend: Arc::new(backend),
                started: Instant::now(),
                started_at: SystemTime::now(),
            }),
            interrupt: rx,
            control: Control(tx),
            resume: None,
        })
    }

    /// Take action results from `backend` instead of the live one (the engine tests and
    /// `runbook test` script them).
    pub fn with_backend(mut self, backend: Arc<dyn Backend>) -> Self {
        if let Some(sh) = Arc::get_mut(&mut self.shared) {
            sh.backend = backend;
        }
        self
    }

    /// Continue an interrupted run: start from these finished steps, and open the
    /// record with `opening` (a `resumed` event) instead of `run_started`.
    pub fn resuming(mut self, restored: Vec<Restored>, opening: Event) -> Self {
        self.resume = Some((restored, Some(opening)));
        self
    }

    /// Start a new run at `from`: it and everything after it run, and so do the earlier
    /// steps whose values they read (their producers); every other earlier step is
    /// recorded as skipped. Returns the ids of the producers that will run.
    pub fn starting_from(mut self, from: usize) -> (Self, Vec<String>) {
        let rb = &self.shared.runbook;
        let plan = &self.shared.plan;
        let n = rb.steps.len();
        let mut keep = plan.downstream(from);
        let mut producers = Vec::new();
        let mut stack: Vec<usize> = (0..n)
            .filter(|&i| keep[i])
            .flat_map(|i| self.shared.plan.reads[i].clone())
            .collect();
        while let Some(p) = stack.pop() {
            if !std::mem::replace(&mut keep[p], true) {
                producers.push(rb.steps[p].id.value.clone());
                stack.extend(self.shared.plan.reads[p].iter().copied());
            }
        }
        let from_id = &rb.steps[from].id.value;
        let preset = (0..n)
            .filter(|&i| !keep[i])
            .map(|i| Restored {
                step: i,
                status: Status::Skipped,
                route: Route::Every,
                result: None,
                message: Some(format!("the run starts at {from_id}")),
                duration: Duration::ZERO,
            })
            .collect();
        self.resume = Some((preset, None));
        (self, producers)
    }

    /// A handle for signal handlers.
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// Run to the end and report.
    pub async fn run(mut self) -> Report {
        let sh = Arc::clone(&self.shared);
        let rb = &sh.runbook;
        let plan = &sh.plan;
        let n = rb.steps.len();
        let mut states = vec![State::new(); n];
        let (restored, opening) = self.resume.take().unwrap_or_default();
        let skipped_before: Vec<(String, Option<String>)> = if opening.is_none() {
            restored
                .iter()
                .map(|r| (rb.steps[r.step].id.value.clone(), r.message.clone()))
                .collect()
        } else {
            Vec::new()
        };
        {
            for r in restored.into_iter().filter(|r| r.step < n) {
                let st = &mut states[r.step];
                st.status = r.status;
                st.route = r.route;
                st.result = r.result;
                st.message = r.message;
                st.duration = r.duration;
                st.attempts = u32::from(r.status != Status::Skipped);
            }
        }
        if let Some(opening) = opening {
            sh.emit(opening);
        } else {
            sh.emit(Event::RunStarted {
                run_id: sh.options.run_id.clone(),
                runbook: rb.name.value.clone(),
                title: rb.title.value.clone(),
                mode: sh.options.mode,
                params: sh.shown_params.clone(),
                steps: n,
                step_ids: rb.steps.iter().map(|s| s.id.value.clone()).collect(),
                origin: crate::event::Origin {
                    operator: sh.options.operator.clone(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..sh.options.origin.clone()
                },
            });
            for (step, message) in skipped_before {
                sh.emit(Event::StepFinished {
                    step,
                    status: Status::Skipped,
                    exit_code: None,
                    duration_ms: 0,
                    message,
                    killed: None,
                    skip: Some(Skip::BeforeStart),
                    captures: serde_json::Map::new(),
                    http_status: None,
                    stderr_tail: String::new(),
                });
            }
        }
        let mut rounds = vec![0u32; n];
        let (kill_tx, kill_rx) = watch::channel(None);
        let mut tasks: JoinSet<(usize, u32, Outcome)> = JoinSet::new();
        let mut running = 0usize;
        let mut acts_running = 0usize;
        let mut stopping: Option<RunStatus> = None;
        let mut interrupt_seen = 0u8;

        let mut record_error = None;
        let mut phases = phases::Phases::new(rb);
        // An interrupt is taken as soon as the loop sees it, before anything starts or
        // is routed: a step that fails at the moment of Ctrl-C must not start its
        // `on_fail` route because the select below had not yet picked the signal.
        let take_interrupt = |level: u8, seen: &mut u8, stopping: &mut Option<RunStatus>| {
            if level <= *seen {
                return;
            }
            *seen = level;
            *stopping = Some(RunStatus::Interrupted);
            let action = if level >= 2 {
                kill_all(&kill_tx, Killed::Interrupt);
                "killing running commands"
            } else {
                "no new steps start; running steps finish (interrupt again to kill them)"
            };
            sh.emit(Event::Signal {
                signal: "SIGINT".into(),
                action: action.into(),
            });
        };
        loop {
            take_interrupt(*self.interrupt.borrow(), &mut interrupt_seen, &mut stopping);
            if stopping.is_none() {
                if let Some(e) = sh.sink.error() {
                    record_error = Some(e);
                    stopping = Some(RunStatus::Failed);
                    kill_all(&kill_tx, Killed::RunStopped);
                }
            }
            if stopping.is_none() {
                decide(&sh, &mut states);
                phases.settle(&sh, &states);
                for &i in &plan.order {
                    if running >= sh.options.parallel.max(1) {
                        break;
                    }
                    if !states[i].undecided() {
                        continue;
                    }
                    let Some(hyp) = ready(plan, &states, i) else {
                        continue;
                    };
                    // Never before the steps whose values it reads (with --from they are
                    // not necessarily its predecessors).
                    if sh.plan.reads[i].iter().any(|&r| !states[r].resolved()) {
                        continue;
                    }
                    let step = &rb.steps[i];
                    let exclusive = step.kind.value == StepKind::Act && !step.concurrent;
                    if exclusive && acts_running > 0 {
                        continue;
                    }
                    phases.step_starting(&sh, i);
                    states[i].status = Status::Running;
                    running += 1;
                    if exclusive {
                        acts_running += 1;
                    }
                    let data = data(&sh, &states, i);
                    let generation_at_spawn = states[i].generation;
                    let task_sh = Arc::clone(&sh);
                    let kill = kill_rx.clone();
                    let interrupt = self.interrupt.clone();
                    tasks.spawn(async move {
                        let outcome = execute(&task_sh, i, data, hyp, kill, interrupt).await;
                        (i, generation_at_spawn, outcome)
                    });
                }
            }
            if running == 0 {
                break;
            }
            let deadline = phases.next_deadline(&sh);
            tokio::select! {
                () = tokio::time::sleep(deadline.unwrap_or_default()), if deadline.is_some() => {
                    phases.mark_overruns(&sh);
                }
                joined = tasks.join_next() => {
                    let Some(joined) = joined else { break };
                    let (i, generation_at_spawn, outcome) = match joined {
                        Ok(x) => x,
                        Err(e) => {
                            // A panicking step task is a bug; keep the run's record whole.
                            tracing::error!("step task failed: {e}");
                            running = running.saturating_sub(1);
                            stopping.get_or_insert(RunStatus::Failed);
                            continue;
                        }
                    };
                    running -= 1;
                    let step = &rb.steps[i];
                    if step.kind.value == StepKind::Act && !step.concurrent {
                        acts_running -= 1;
                    }
                    if generation_at_spawn != states[i].generation {
                        continue;
                    }
                    if let Some(stop) = outcome.stop {
                        if stop == RunStatus::Aborted {
                            kill_all(&kill_tx, Killed::Abort);
                        }
                        stopping.get_or_insert(stop);
                    }
                    let status = outcome.state.status;
                    let failed = status == Status::Failed;
                    states[i] = State {
                        generation: states[i].generation,
                        ..outcome.state
                    };
                    if status == Status::Declined {
                        stopping.get_or_insert(RunStatus::Aborted);
                    }
                    take_interrupt(*self.interrupt.borrow(), &mut interrupt_seen, &mut stopping);
                    if failed && stopping.is_none() {
                        if let Some(stop) = route_failure(&sh, &mut states, &mut rounds, i) {
                            stopping = Some(stop);
                        }
                    }
                }
                changed = self.interrupt.changed(), if interrupt_seen < 2 => {
                    if changed.is_err() {
                        interrupt_seen = 2;
                        continue;
                    }
                    let level = *self.interrupt.borrow_and_update();
                    take_interrupt(level, &mut interrupt_seen, &mut stopping);
                }
            }
        }

        // A step that could start but never did (it waits on values that never come) is
        // a runbook the validator should have refused: never report such a run as
        // succeeded.
        if stopping.is_none() {
            for &i in &plan.order {
                if states[i].undecided() && ready(plan, &states, i).is_some() {
                    states[i].message = Some(
                        "never started: it waits for values of steps that did not finish".into(),
                    );
                    stopping = Some(RunStatus::RunbookError);
                }
            }
        }
        phases.settle(&sh, &states);
        phases.finish(&sh, &states);
        let status = stopping.unwrap_or(RunStatus::Succeeded);
        let mut summary = Summary::default();
        let steps: Vec<StepReport> = plan
            .order
            .iter()
            .map(|&i| {
                let st = &states[i];
                match st.status {
                    Status::Succeeded => summary.succeeded += 1,
                    Status::Failed => summary.failed += 1,
                    Status::Skipped => summary.skipped += 1,
                    Status::Declined => summary.declined += 1,
                    Status::NotExecuted => summary.not_executed += 1,
                    Status::Pending | Status::Running => summary.pending += 1,
                }
                StepReport {
                    id: rb.steps[i].id.value.clone(),
                    kind: rb.steps[i].kind.value,
                    title: st
                        .title
                        .clone()
                        .unwrap_or_else(|| rb.steps[i].title.value.clone()),
                    status: if st.status == Status::Running {
                        Status::Pending
                    } else {
                        st.status
                    },
                    duration: st.duration,
                    attempts: st.attempts,
                    message: st.message.clone(),
                }
            })
            .collect();
        // A resumed run's duration is the sum of its segments.
        let duration = sh.elapsed();
        sh.emit(Event::RunFinished {
            status,
            exit_code: sh.options.exit_code.map(|f| f(status)),
            duration_ms: millis(duration),
            summary: summary.clone(),
        });
        Report {
            status,
            steps,
            duration,
            summary,
            record_error: record_error.or_else(|| sh.sink.error()),
        }
    }
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Tell every running action to stop; the first reason given is the one recorded.
fn kill_all(tx: &watch::Sender<Option<Killed>>, why: Killed) {
    tx.send_if_modified(|k| k.is_none() && k.replace(why).is_none());
}

/// Acts and manual steps that need an operator's answer in this mode, for refusing a run
/// that cannot ask (no terminal) before it starts. `may_run` leaves out steps that will
/// not run (on resume: finished, or on a route a finished branch did not take).
pub fn needs_operator(runbook: &Runbook, options: &Options, may_run: &[bool]) -> Vec<String> {
    if options.mode == Mode::DryRun {
        return Vec::new();
    }
    runbook
        .steps
        .iter()
        .enumerate()
        .filter(|(i, _)| may_run.get(*i).copied().unwrap_or(true))
        .map(|(_, s)| s)
        .filter(|s| {
            let manual = matches!(s.action, Some(Action::Manual(_)));
            (manual && !options.auto_manual)
                || (!manual && s.kind.value == StepKind::Act && !options.yes)
        })
        .map(|s| s.id.value.clone())
        .collect()
}
