//! The engine: drives a runbook's plan, one step task per ready step.
//!
//! The scheduler owns all state. Step tasks get a snapshot of the values they may read
//! (params, earlier steps' results) and return an outcome; the scheduler applies it,
//! routes (DESIGN's activation rule) and starts whatever became ready. Live runs and dry
//! runs share all of this; only what happens to acts differs.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use runbook_core::model::{Action, OnFail, OnFailSimple, Runbook, Step, StepKind};
use runbook_core::plan::{Edge, Plan};
use runbook_core::render::{RenderedAction, render_step};
use runbook_core::template::Renderer;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::action::{ActionResult, Io, Piece};
use crate::backend::{AwsSettings, Backend, Live};
use crate::event::{
    Answer, Contact, Event, Killed, Mode, RunStatus, Sink, Status, Stream, Summary,
};
use crate::mask::{MASK, Masker};
use crate::{capture, eval};

/// Default time between attempts when `retry` gives none.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

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
    /// AWS region and profile from the command line (they win over the runbook's).
    pub aws_region: Option<String>,
    /// See `aws_region`.
    pub aws_profile: Option<String>,
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
            aws_region: None,
            aws_profile: None,
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

/// How a step restored from a journal sends the run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Along its ordinary edges.
    Normal,
    /// Branch case `k` (0-based).
    Case(usize),
    /// Branch default.
    Default,
    /// Its `on_fail: goto` edge.
    FailGoto,
    /// Nowhere (a branch with no case holding and no default).
    Nowhere,
    /// Along every outgoing edge (steps before `--from`).
    Every,
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
    /// Its `steps.<id>` values (captures and built-ins).
    pub result: Value,
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
    /// For each step, the steps whose values its templates and conditions read.
    reads: Vec<Vec<usize>>,
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
}

/// Where a finished step sends the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Nowhere (skipped, stopped).
    None,
    /// Along its ordinary edges (`Next`, `Needs`).
    Normal,
    /// A branch route (`Case(k)` or `Default`).
    Route(Edge),
    /// Its `on_fail: goto` edge.
    FailGoto,
    /// Every outgoing edge (a dry-run branch that could not decide).
    All,
}

#[derive(Debug, Clone)]
struct State {
    status: Status,
    flow: Flow,
    /// Dry run: this step, or one it depends on, is an act that did not run.
    hypothetical: bool,
    /// `steps.<id>` values: captures and built-ins.
    result: Option<Value>,
    duration: Duration,
    attempts: u32,
    message: Option<String>,
    title: Option<String>,
    /// Bumped when `retry_from` resets the step; stale completions are ignored.
    generation: u32,
}

impl State {
    fn new() -> Self {
        State {
            status: Status::Pending,
            flow: Flow::None,
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
    fn undecided(&self) -> bool {
        self.status == Status::Pending && self.flow == Flow::None
    }

    /// Its outgoing edges are known.
    fn resolved(&self) -> bool {
        self.status != Status::Running && !self.undecided()
    }
}

/// What a step task reports back.
#[derive(Debug)]
struct Outcome {
    status: Status,
    flow: Flow,
    hypothetical: bool,
    result: Option<Value>,
    duration: Duration,
    attempts: u32,
    message: Option<String>,
    title: String,
    /// The operator chose abort, or the run was interrupted while asking.
    stop: Option<RunStatus>,
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
    ) -> Result<Engine, String> {
        let from_runbook = runbook.aws.clone().unwrap_or_default();
        let backend = Live::new(AwsSettings {
            region: options.aws_region.clone().or(from_runbook.region),
            profile: options.aws_profile.clone().or(from_runbook.profile),
        })?;
        let (tx, rx) = watch::channel(0u8);
        let reads = runbook.steps.iter().map(|s| reads_of(&plan, s)).collect();
        Ok(Engine {
            shared: Arc::new(Shared {
                reads,
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
            .flat_map(|i| self.shared.reads[i].clone())
            .collect();
        while let Some(p) = stack.pop() {
            if !std::mem::replace(&mut keep[p], true) {
                producers.push(rb.steps[p].id.value.clone());
                stack.extend(self.shared.reads[p].iter().copied());
            }
        }
        let from_id = &rb.steps[from].id.value;
        let preset = (0..n)
            .filter(|&i| !keep[i])
            .map(|i| Restored {
                step: i,
                status: Status::Skipped,
                route: Route::Every,
                result: Value::Null,
                message: Some(format!("before --from {from_id}")),
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
                st.flow = match r.route {
                    Route::Normal => Flow::Normal,
                    Route::Case(k) => Flow::Route(Edge::Case(k)),
                    Route::Default => Flow::Route(Edge::Default),
                    Route::FailGoto => Flow::FailGoto,
                    Route::Nowhere => Flow::None,
                    Route::Every => Flow::All,
                };
                st.result = (!r.result.is_null()).then_some(r.result);
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
        loop {
            if stopping.is_none() {
                if let Some(e) = sh.sink.error() {
                    record_error = Some(e);
                    stopping = Some(RunStatus::Failed);
                    kill_all(&kill_tx, Killed::RunStopped);
                }
            }
            if stopping.is_none() {
                decide(&sh, &mut states);
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
                    if sh.reads[i].iter().any(|&r| !states[r].resolved()) {
                        continue;
                    }
                    let step = &rb.steps[i];
                    let exclusive = step.kind.value == StepKind::Act && !step.concurrent;
                    if exclusive && acts_running > 0 {
                        continue;
                    }
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
            tokio::select! {
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
                    let failed = outcome.status == Status::Failed;
                    let st = &mut states[i];
                    st.status = outcome.status;
                    st.flow = outcome.flow;
                    st.hypothetical = outcome.hypothetical;
                    st.result = outcome.result;
                    st.duration = outcome.duration;
                    st.attempts = outcome.attempts;
                    st.message = outcome.message;
                    st.title = Some(outcome.title);
                    if outcome.status == Status::Declined {
                        stopping.get_or_insert(RunStatus::Aborted);
                    }
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
                    if level > interrupt_seen {
                        interrupt_seen = level;
                        stopping = Some(RunStatus::Interrupted);
                        let action = if level >= 2 {
                            kill_all(&kill_tx, Killed::Interrupt);
                            "killing running commands"
                        } else {
                            "no new steps start; running steps finish (interrupt again to kill them)"
                        };
                        sh.emit(Event::Signal { signal: "SIGINT".into(), action: action.into() });
                    }
                }
            }
        }

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
        let duration = sh.started.elapsed();
        sh.emit(Event::RunFinished {
            status,
            exit_code: status.exit_code(),
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

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn edge_taken(src: &State, edge: Edge) -> bool {
    match (src.flow, edge) {
        (Flow::All, _) => true,
        (Flow::Normal, Edge::Next | Edge::Needs) => true,
        (Flow::Route(chosen), e) => chosen == e,
        (Flow::FailGoto, Edge::FailGoto) => true,
        _ => false,
    }
}

/// If every source of step `i` is resolved and one of its edges was taken, whether it runs
/// hypothetically (`Some(hyp)`); `None` when it is not ready or must be skipped.
fn ready(plan: &Plan, states: &[State], i: usize) -> Option<bool> {
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
fn decide(sh: &Shared, states: &mut [State]) {
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
            states[i].flow = Flow::None;
            states[i].message = Some(reason.clone());
            sh.emit(Event::StepFinished {
                step: rb.steps[i].id.value.clone(),
                status: Status::Skipped,
                exit_code: None,
                duration_ms: 0,
                message: Some(reason),
                killed: None,
            });
            changed = true;
        }
        if !changed {
            break;
        }
    }
}

fn skip_reason(rb: &Runbook, states: &[State], incoming: &[(usize, Edge)]) -> String {
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
fn route_failure(
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
            states[i].flow = Flow::Normal;
            None
        }
        OnFail::Simple(OnFailSimple::Escalate) => {
            let elapsed = sh.started.elapsed();
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
            states[i].flow = Flow::FailGoto;
            sh.emit(Event::Decision {
                step: id,
                goto: Some(goto.value.clone()),
                reason: "on_fail".into(),
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

/// The steps whose values a step's templates and conditions read (`steps.<id>...`).
fn reads_of(plan: &Plan, step: &Step) -> Vec<usize> {
    let mut names: Vec<Vec<String>> = Vec::new();
    for (text, _) in runbook_core::validate::step_templates(step) {
        if let Ok(a) = runbook_core::template::analyze(text) {
            names.extend(a.vars.into_iter().map(|v| v.path));
        }
    }
    let conditions = step.expect.iter().chain(step.cases.iter().map(|c| &c.when));
    for c in conditions {
        if let Ok(n) = runbook_core::cond::analyze(c) {
            names.extend(n);
        }
    }
    if names.iter().any(|n| n.len() == 1 && n[0] == "steps") {
        return (0..plan.order.len()).collect();
    }
    let mut out: Vec<usize> = names
        .iter()
        .filter(|n| n.len() >= 2 && n[0] == "steps")
        .filter_map(|n| plan.index(&n[1]))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The values step `i`'s templates and conditions read: `params`, `steps` (those it
/// names), `env`, `run`.
fn data(sh: &Shared, states: &[State], i: usize) -> Value {
    let steps: serde_json::Map<String, Value> = sh.reads[i]
        .iter()
        .filter_map(|&s| {
            Some((
                sh.runbook.steps[s].id.value.clone(),
                states[s].result.clone()?,
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

/// What a step task works with.
struct Task<'a> {
    sh: &'a Shared,
    i: usize,
    step: &'a Step,
    started: Instant,
    title: String,
}

impl Task<'_> {
    fn id(&self) -> String {
        self.step.id.value.clone()
    }

    fn finish(&self, end: Ending) -> Outcome {
        let duration = self.started.elapsed();
        let message = end.message.map(|m| self.sh.masker.mask(&m));
        self.sh.emit(Event::StepFinished {
            step: self.id(),
            status: end.status,
            exit_code: end.exit_code,
            duration_ms: millis(duration),
            message: message.clone(),
            killed: end.killed,
        });
        Outcome {
            status: end.status,
            flow: end.flow,
            hypothetical: end.hypothetical,
            result: end.result,
            duration,
            attempts: end.attempts,
            message,
            title: self.title.clone(),
            stop: None,
        }
    }
}

/// How a step task ends; only status and flow are always given.
#[derive(Debug)]
struct Ending {
    status: Status,
    flow: Flow,
    hypothetical: bool,
    result: Option<Value>,
    attempts: u32,
    message: Option<String>,
    exit_code: Option<i32>,
    killed: Option<Killed>,
}

impl Ending {
    fn new(status: Status, flow: Flow) -> Self {
        Ending {
            status,
            flow,
            hypothetical: false,
            result: None,
            attempts: 0,
            message: None,
            exit_code: None,
            killed: None,
        }
    }

    fn hypothetical(mut self, h: bool) -> Self {
        self.hypothetical = h;
        self
    }

    fn result(mut self, r: Option<Value>) -> Self {
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
}

async fn execute(
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
                    Ending::new(Status::Pending, Flow::Normal)
                        .hypothetical(true)
                        .message(format!(
                            "dry run: needs values from steps that did not run ({e})"
                        )),
                );
            }
            return task.finish(
                Ending::new(Status::Failed, Flow::None)
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
        return task.finish(Ending::new(Status::Failed, Flow::None).message("no action"));
    };
    let is_manual = matches!(action, RenderedAction::Manual { .. });
    let is_wait = matches!(action, RenderedAction::Wait { .. });

    if dry {
        if kind == StepKind::Act || is_manual || is_wait {
            return task.finish(
                Ending::new(Status::NotExecuted, Flow::Normal)
                    .hypothetical(true)
                    .message("dry run: not executed"),
            );
        }
        if kind == StepKind::Verify && hyp {
            // It could hold or fail: show both what follows and its failure route.
            return task.finish(
                Ending::new(Status::Pending, Flow::All)
                    .hypothetical(true)
                    .message("dry run: verifies the effect of acts that did not run"),
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
            sh.options.auto_manual.then_some("--auto-manual")
        } else {
            sh.options.yes.then_some("--yes")
        };
        let answer = match auto {
            Some(flag) => {
                sh.emit(Event::Answered {
                    step: task.id(),
                    answer: Answer::Approve,
                    by: flag.into(),
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
                        Ending::new(Status::Pending, Flow::None)
                            .message("interrupted while waiting for an answer"),
                    );
                    o.stop = Some(RunStatus::Interrupted);
                    return o;
                };
                sh.emit(Event::Answered {
                    step: task.id(),
                    answer,
                    by: sh.options.operator.clone(),
                });
                answer
            }
        };
        match answer {
            Answer::Approve => {}
            Answer::Decline => {
                return task.finish(
                    Ending::new(Status::Declined, Flow::None).message("declined by the operator"),
                );
            }
            Answer::Skip => {
                return task.finish(
                    Ending::new(Status::Skipped, Flow::Normal).message("skipped by the operator"),
                );
            }
            Answer::Abort => {
                let mut o = task.finish(
                    Ending::new(Status::Declined, Flow::None)
                        .message("run aborted by the operator"),
                );
                o.stop = Some(RunStatus::Aborted);
                return o;
            }
        }
        if is_manual {
            let result = json!({"exit_code": null, "stdout": "", "stderr": "", "status": null,
                "duration_ms": millis(task.started.elapsed()), "attempt": 1});
            return task.finish(
                Ending::new(Status::Succeeded, Flow::Normal)
                    .result(Some(result))
                    .attempts(1),
            );
        }
    }

    attempts(&task, &action, &data, hyp, kill, interrupt).await
}

async fn killed(mut kill: watch::Receiver<Option<Killed>>) {
    if kill.wait_for(Option::is_some).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Resolves once the run is interrupted (never, if nobody can interrupt it any more).
async fn interrupted(interrupt: &mut watch::Receiver<u8>) {
    if interrupt.wait_for(|l| *l >= 1).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Tell every running action to stop; the first reason given is the one recorded.
fn kill_all(tx: &watch::Sender<Option<Killed>>, why: Killed) {
    tx.send_if_modified(|k| k.is_none() && k.replace(why).is_none());
}

fn branch(task: &Task<'_>, data: &Value, hyp: bool) -> Outcome {
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
                    skips: Vec::new(),
                });
                return task.finish(
                    Ending::new(Status::Pending, Flow::All)
                        .hypothetical(true)
                        .message(format!("dry run: {e}")),
                );
            }
            Err(e) => {
                return task.finish(
                    Ending::new(Status::Failed, Flow::None)
                        .attempts(1)
                        .message(e),
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
    let result = json!({"duration_ms": millis(task.started.elapsed()), "attempt": 1});
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
                skips,
            });
            task.finish(
                Ending::new(Status::Succeeded, Flow::Route(edge))
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
                skips: Vec::new(),
            });
            task.finish(
                Ending::new(Status::Succeeded, Flow::None)
                    .hypothetical(hyp)
                    .result(Some(result))
                    .attempts(1),
            )
        }
    }
}

fn mask_map(m: &Masker, values: &serde_json::Map<String, Value>) -> serde_json::Map<String, Value> {
    values
        .iter()
        .map(|(k, v)| (k.clone(), m.mask_json(v)))
        .collect()
}

/// Run the action until the step succeeds, attempts run out or the deadline passes.
async fn attempts(
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
                Ending::new(Status::Failed, Flow::None)
                    .hypothetical(hyp)
                    .attempts(attempt)
                    .message(format!("not started: {e}")),
            );
        }
        let attempt_started = Instant::now();
        let result = run_action(task, action, deadline, kill.clone()).await;
        let (ok, value, message) = judge(task, &result, data, attempt, attempt_started);
        if ok {
            return task.finish(
                Ending::new(Status::Succeeded, Flow::Normal)
                    .hypothetical(hyp)
                    .result(Some(value))
                    .attempts(attempt)
                    .exit_code(result.exit_code),
            );
        }
        let message = message.unwrap_or_else(|| "failed".into());
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
                Ending::new(Status::Failed, Flow::None)
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
        });
        // Waiting for the next attempt is where an interrupt stops a polling step: the
        // first one already (nothing is running), not only the second.
        let stop = tokio::select! {
            () = tokio::time::sleep(interval) => false,
            () = interrupted(&mut interrupt) => true,
            () = killed(kill.clone()) => true,
        };
        if stop {
            return task.finish(
                Ending::new(Status::Failed, Flow::None)
                    .hypothetical(hyp)
                    .result(Some(value))
                    .attempts(attempt)
                    .message(format!("{message} (stopped while waiting to retry)"))
                    .exit_code(result.exit_code),
            );
        }
        interval = interval.mul_f64(backoff);
        attempt += 1;
    }
}

async fn run_action(
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

/// Captures and expectation: whether the attempt succeeded, the step's values, and why not.
fn judge(
    task: &Task<'_>,
    result: &ActionResult,
    data: &Value,
    attempt: u32,
    started: Instant,
) -> (bool, Value, Option<String>) {
    let sh = task.sh;
    let step = task.step;
    let mut values = serde_json::Map::new();
    values.insert("exit_code".into(), json!(result.exit_code));
    values.insert("stdout".into(), json!(result.stdout));
    values.insert("stderr".into(), json!(result.stderr));
    values.insert("status".into(), json!(result.status));
    values.insert("duration_ms".into(), json!(millis(started.elapsed())));
    values.insert("attempt".into(), json!(attempt));
    for (k, v) in &result.extra {
        values.insert(k.clone(), v.clone());
    }
    if result.timed_out || result.killed {
        return (false, Value::Object(values), result.message.clone());
    }
    // Without `expect`, the action's own result decides; with it, the expectation does
    // (a failed command usually also fails its captures).
    if step.expect.is_none() && !result.ok {
        return (false, Value::Object(values), result.message.clone());
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
                values.insert(name.clone(), v);
            }
            Err(e) => {
                let mut e = e;
                if result.dropped > 0 {
                    e.push_str(" (the output was cut at the output limit)");
                }
                if let Some(m) = result.message.as_ref().filter(|_| !result.ok) {
                    e = format!("{m}; {e}");
                }
                return (false, Value::Object(values), Some(e));
            }
        }
    }
    if let Some(expect) = &step.expect {
        let mut scope = data.as_object().cloned().unwrap_or_default();
        for (k, v) in &values {
            scope.insert(k.clone(), v.clone());
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
                    return (false, Value::Object(values), Some(why));
                }
            }
            Err(e) => {
                // A failed action explains a condition that cannot be evaluated (its
                // values are missing): report the cause, not the consequence.
                let e = match result.message.as_ref().filter(|_| !result.ok) {
                    Some(m) => m.clone(),
                    None => e,
                };
                return (false, Value::Object(values), Some(e));
            }
        }
    }
    (true, Value::Object(values), None)
}

fn secret_values(m: &Masker, v: &Value) {
    match v {
        Value::String(s) => m.add(s.clone()),
        Value::Array(items) => items.iter().for_each(|x| secret_values(m, x)),
        Value::Object(map) => map.values().for_each(|x| secret_values(m, x)),
        other => m.add(other.to_string()),
    }
}

/// Acts and manual steps that need an operator's answer in this mode, for refusing a run
/// that cannot ask (no terminal) before it starts.
pub fn needs_operator(runbook: &Runbook, options: &Options) -> Vec<String> {
    if options.mode == Mode::DryRun {
        return Vec::new();
    }
    runbook
        .steps
        .iter()
        .filter(|s| {
            let manual = matches!(s.action, Some(Action::Manual(_)));
            (manual && !options.auto_manual)
                || (!manual && s.kind.value == StepKind::Act && !options.yes)
        })
        .map(|s| s.id.value.clone())
        .collect()
}
