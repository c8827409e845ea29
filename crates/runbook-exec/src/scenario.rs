//! Running a scenario: the real engine, a scripted backend, a scripted operator, and a
//! record of what happened, compared with what the scenario expects.
//!
//! Nothing here touches the world: every action's result comes from the script (a step
//! that would run without one fails, naming the step), Parameter Store and environment
//! lookups give placeholders, and time is tokio's paused clock, so `wait: 5m`, polling and
//! `takes: 40m` cost nothing. Scenarios run one step at a time, so the path is
//! deterministic: the plan's order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use runbook_core::Runbook;
use runbook_core::plan::Plan;
use runbook_core::render::RenderedAction;
use runbook_core::scenario::{ResultStatus, Scenario, ScriptedAnswer, ScriptedResult};
use serde_json::Value;

use crate::action::{ActionResult, Io};
use crate::backend::{Backend, BoxFuture, ParameterError};
use crate::engine::{Engine, Operator, Options, Question};
use crate::event::{Answer, Chosen, Event, Mode, RunStatus, Sink, Status, Stream};
use crate::ssm::{Automation, Invocation};

/// What a scenario run did.
#[derive(Debug, Clone, Default)]
pub struct Actual {
    /// How the run ended.
    pub status: Option<RunStatus>,
    /// Steps in the order they started (again for each loop round).
    pub path: Vec<String>,
    /// Final status per step, plan order.
    pub steps: Vec<(String, Status)>,
    /// The last rendered command per step that showed one.
    pub commands: HashMap<String, String>,
    /// Captured values per step.
    pub captures: HashMap<String, serde_json::Map<String, Value>>,
    /// The escalation contacts shown (`to`), if the run escalated.
    pub escalation: Option<Vec<String>>,
    /// What the script lacked or the run could not do, in order.
    pub problems: Vec<String>,
    /// Steps that failed, and why (for people reading a failed scenario).
    pub failures: Vec<(String, String)>,
    /// Every event, for coverage.
    pub events: Vec<Event>,
}

/// The script for one scenario: results per step, answers per step.
struct Script {
    results: Mutex<HashMap<String, VecDeque<ScriptedResult>>>,
    problems: Arc<Mutex<Vec<String>>>,
    /// Whose results these are, for messages: "the scenario", "run 20261120-...".
    source: String,
    /// Stops the run at the first missing result: what follows would be guesswork.
    control: crate::engine::Control,
}

impl Backend for Script {
    fn run<'a>(
        &'a self,
        step: &'a str,
        action: &'a RenderedAction,
        io: Io<'a>,
    ) -> BoxFuture<'a, ActionResult> {
        Box::pin(async move {
            match action {
                // Waiting is time passing; the paused clock makes it free.
                RenderedAction::Wait { ms, .. } => {
                    return match pass(Duration::from_millis(*ms), &io).await {
                        Some(stopped) => stopped,
                        None => ActionResult {
                            ok: true,
                            ..ActionResult::default()
                        },
                    };
                }
                // The operator acknowledged it (the engine asked): that is the action; a
                // result may say how long the operator took.
                RenderedAction::Manual { .. } => {
                    let took = self
                        .results
                        .lock()
                        .ok()
                        .and_then(|mut r| r.get_mut(step).and_then(VecDeque::pop_front))
                        .and_then(|r| r.takes);
                    if let Some(t) = took {
                        if let Some(stopped) = pass(t.value.value, &io).await {
                            return stopped;
                        }
                    }
                    return ActionResult {
                        ok: true,
                        ..ActionResult::default()
                    };
                }
                _ => {}
            }
            let next = self
                .results
                .lock()
                .ok()
                .and_then(|mut r| r.get_mut(step).and_then(VecDeque::pop_front));
            let Some(r) = next else {
                let problem = format!(
                    "step `{step}` would run, but {} has no result for it{}",
                    self.source,
                    if self.results.lock().is_ok_and(|r| r.contains_key(step)) {
                        " (every result given was used: one is needed per attempt)"
                    } else {
                        ""
                    }
                );
                if let Ok(mut p) = self.problems.lock() {
                    if !p.contains(&problem) {
                        p.push(problem.clone());
                    }
                }
                // No new step starts, and a polling step stops polling. The scheduler
                // takes the interrupt before this step's end (it is still running for a
                // tick of the paused clock), so the run always ends `interrupted`.
                if self.control.level() == 0 {
                    self.control.interrupt();
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                return ActionResult::failed(problem);
            };
            if let Some(takes) = &r.takes {
                if let Some(stopped) = pass(takes.value.value, &io).await {
                    return stopped;
                }
            }
            scripted(action, &r, &io)
        })
    }

    fn parameter<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<String, ParameterError>> {
        Box::pin(async move { Ok(placeholder(path)) })
    }
}

/// The value a scenario gives a secret it does not set.
fn placeholder(source: &str) -> String {
    format!("<secret from {source}>")
}

/// Let `d` pass on the clock, unless the step's deadline or a kill comes first.
async fn pass(d: Duration, io: &Io<'_>) -> Option<ActionResult> {
    let mut kill = io.kill.clone();
    tokio::select! {
        () = tokio::time::sleep(d) => None,
        () = async { match io.deadline { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
            Some(ActionResult { timed_out: true, exit_code: Some(124), message: Some("timed out".into()), ..ActionResult::default() })
        }
        _ = kill.wait_for(Option::is_some) => {
            Some(ActionResult { killed: true, message: Some("stopped".into()), ..ActionResult::default() })
        }
    }
}

/// A scripted result as the live backend would have reported it.
fn scripted(action: &RenderedAction, r: &ScriptedResult, io: &Io<'_>) -> ActionResult {
    let lines = |stream: Stream, text: &str| {
        for line in text.lines() {
            io.line(stream, line);
        }
    };
    match action {
        RenderedAction::Http { status, .. } => {
            if let Some(error) = &r.error {
                return ActionResult {
                    status: Some(0),
                    message: Some(error.clone()),
                    ..ActionResult::default()
                };
            }
            let code = match r.status.as_ref().map(|s| &s.value) {
                Some(ResultStatus::Http(c)) => *c,
                _ => 200,
            };
            let body = r.body.clone().unwrap_or_default();
            lines(Stream::Stdout, &body);
            let ok = if status.is_empty() {
                (200..300).contains(&code)
            } else {
                status.contains(&code)
            };
            ActionResult {
                ok,
                status: Some(code),
                stdout: body,
                message: (!ok).then(|| format!("HTTP status {code}")),
                ..ActionResult::default()
            }
        }
        RenderedAction::SsmCommand(call) => {
            let given: BTreeMap<String, Invocation> = r
                .instances
                .iter()
                .flatten()
                .map(|(id, inv)| {
                    let status = inv.status.clone().unwrap_or_else(|| "Success".into());
                    let code = inv
                        .exit_code
                        .unwrap_or(if status == "Success" { 0 } else { 1 });
                    (
                        id.clone(),
                        Invocation {
                            status,
                            response_code: code,
                            stdout: inv.stdout.clone().unwrap_or_default(),
                            stderr: inv.stderr.clone().unwrap_or_default(),
                        },
                    )
                })
                .collect();
            // Instances the call targets but the script leaves out succeed silently.
            let mut results = given;
            for id in &call.instance_ids {
                results.entry(id.clone()).or_insert_with(|| Invocation {
                    status: "Success".into(),
                    response_code: 0,
                    stdout: String::new(),
                    stderr: String::new(),
                });
            }
            crate::ssm::command_result("scripted", &results, io)
        }
        RenderedAction::SsmAutomation { .. } => {
            let status = match r.status.as_ref().map(|s| &s.value) {
                Some(ResultStatus::Automation(s)) => s.clone(),
                _ => "Success".into(),
            };
            let exec = Automation {
                id: "scripted".into(),
                outputs: r.outputs.iter().flatten().cloned().collect(),
                steps: Vec::new(),
                failure: r.failure.clone(),
            };
            crate::ssm::automation_result(&exec, &status, io)
        }
        // Shell, and whatever else runs a command.
        _ => {
            let code = r.exit_code.unwrap_or(0);
            let stdout = r.stdout.clone().unwrap_or_default();
            let stderr = r.stderr.clone().unwrap_or_default();
            lines(Stream::Stdout, &stdout);
            lines(Stream::Stderr, &stderr);
            ActionResult {
                ok: code == 0,
                exit_code: Some(code),
                stdout,
                stderr,
                message: (code != 0).then(|| format!("exit code {code}")),
                ..ActionResult::default()
            }
        }
    }
}

/// The operator: the scenario's answers per step, in order.
struct Answers {
    per_step: Mutex<HashMap<String, VecDeque<ScriptedAnswer>>>,
    problems: Arc<Mutex<Vec<String>>>,
}

impl Operator for Answers {
    fn ask(
        &self,
        q: Question,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send + '_>> {
        let next = self
            .per_step
            .lock()
            .ok()
            .and_then(|mut a| a.get_mut(&q.step).and_then(VecDeque::pop_front));
        let answer = match next {
            Some(ScriptedAnswer::Approve) => Answer::Approve,
            Some(ScriptedAnswer::Decline) => Answer::Decline,
            Some(ScriptedAnswer::Skip) => Answer::Skip,
            Some(ScriptedAnswer::Abort) => Answer::Abort,
            None => {
                if let Ok(mut p) = self.problems.lock() {
                    p.push(format!(
                        "step `{}` asks the operator, but the scenario gives no answer for it \
                         (the run was aborted there)",
                        q.step
                    ));
                }
                Answer::Abort
            }
        };
        Box::pin(async move { answer })
    }
}

#[derive(Default)]
struct Recorder(Mutex<Vec<Event>>);

impl Sink for Recorder {
    fn emit(&self, _: SystemTime, event: &Event) {
        if let Ok(mut e) = self.0.lock() {
            e.push(event.clone());
        }
    }
}

/// The text a scenario's `commands` compares with.
pub fn command_text(action: &RenderedAction) -> Option<String> {
    Some(match action {
        RenderedAction::Shell { run, .. } => run.trim().to_string(),
        RenderedAction::Http { method, url, .. } => format!("{method} {url}"),
        RenderedAction::SsmCommand(call) => call.commands.join("\n"),
        RenderedAction::SsmAutomation {
            document,
            parameters,
            ..
        } => {
            let mut text = document.clone();
            for (k, v) in parameters {
                text.push_str(&format!(" {k}={}", v.join(",")));
            }
            text
        }
        RenderedAction::Wait { .. } | RenderedAction::Manual { .. } => return None,
    })
}

/// Run `scenario` against `runbook`; `source` names where the results come from in
/// messages ("the scenario"). Call it on a runtime whose clock is paused
/// (`tokio::runtime::Builder::start_paused`): waits and `takes` are then free.
pub async fn run(
    runbook: Arc<Runbook>,
    plan: Arc<Plan>,
    scenario: &Scenario,
    source: &str,
) -> Actual {
    let problems = Arc::new(Mutex::new(Vec::new()));
    let given: Vec<(String, String)> = scenario
        .params
        .iter()
        .map(|(k, v)| (k.value.clone(), crate::params::value_text(v)))
        .collect();
    let no_env = |_: &str| None;
    let ssm = |path: &str| Ok(placeholder(&format!("ssm:{path}")));
    let mut ask = |_: &str, _: &runbook_core::model::Param| None;
    let resolved = match crate::params::resolve(
        &runbook,
        crate::params::Sources {
            given: &given,
            file: &serde_json::Map::new(),
            env: &no_env,
            ssm: &ssm,
            ask: &mut ask,
        },
    ) {
        Ok(r) => r,
        Err(e) => {
            return Actual {
                problems: e.0,
                ..Actual::default()
            };
        }
    };
    let mut results: HashMap<String, VecDeque<ScriptedResult>> = HashMap::new();
    for (id, rs) in &scenario.results {
        results
            .entry(id.value.clone())
            .or_default()
            .extend(rs.iter().cloned());
    }
    let mut answers: HashMap<String, VecDeque<ScriptedAnswer>> = HashMap::new();
    for (id, a) in &scenario.answers {
        answers
            .entry(id.value.clone())
            .or_default()
            .extend(a.iter().map(|x| x.value));
    }
    let recorder = Arc::new(Recorder::default());
    let options = Options {
        mode: if scenario.dry_run {
            Mode::DryRun
        } else {
            Mode::Live
        },
        yes: scenario.yes,
        auto_manual: false,
        parallel: 1,
        run_id: format!("test-{}", runbook.name.value),
        operator: "scenario".into(),
        ..Options::default()
    };
    let shown = resolved.shown(&runbook);
    let operator = Arc::new(Answers {
        per_step: Mutex::new(answers),
        problems: Arc::clone(&problems),
    });
    let engine = match Engine::new(
        Arc::clone(&runbook),
        plan,
        resolved.values,
        shown,
        resolved.secrets,
        serde_json::Map::new(),
        options,
        Arc::clone(&recorder) as Arc<dyn Sink>,
        Arc::clone(&operator) as Arc<dyn Operator>,
    ) {
        Ok(e) => e,
        Err(e) => {
            return Actual {
                problems: vec![e.to_string()],
                ..Actual::default()
            };
        }
    };
    let script = Arc::new(Script {
        results: Mutex::new(results),
        problems: Arc::clone(&problems),
        source: source.to_string(),
        control: engine.control(),
    });
    let report = engine
        .with_backend(Arc::clone(&script) as Arc<dyn Backend>)
        .run()
        .await;
    // What the script gave but the run never used: the run did not go where the author
    // thought (a result for a step that never ran, more attempts than were made).
    let mut unused: Vec<String> = Vec::new();
    if let Ok(left) = script.results.lock() {
        for (id, _) in &scenario.results {
            let n = left.get(&id.value).map_or(0, VecDeque::len);
            if n > 0
                && !unused
                    .iter()
                    .any(|u| u.contains(&format!("`{}`", id.value)))
            {
                unused.push(format!(
                    "{} {} for `{}` never used: the step ran fewer times than scripted",
                    n,
                    if n == 1 { "result" } else { "results" },
                    id.value
                ));
            }
        }
    }
    let events = recorder.0.lock().map(|e| e.clone()).unwrap_or_default();
    let mut actual = Actual {
        status: Some(report.status),
        steps: report
            .steps
            .iter()
            .map(|s| (s.id.clone(), s.status))
            .collect(),
        failures: report
            .steps
            .iter()
            .filter(|s| s.status == Status::Failed)
            .map(|s| (s.id.clone(), s.message.clone().unwrap_or_default()))
            .collect(),
        problems: problems.lock().map(|p| p.clone()).unwrap_or_default(),
        ..Actual::default()
    };
    actual.problems.extend(unused);
    if let Ok(left) = operator.per_step.lock() {
        for (id, _) in &scenario.answers {
            let n = left.get(&id.value).map_or(0, VecDeque::len);
            let text = format!(
                "{} {} for `{}` never given: the operator was asked fewer times than scripted",
                n,
                if n == 1 { "answer" } else { "answers" },
                id.value
            );
            if n > 0 && !actual.problems.contains(&text) {
                actual.problems.push(text);
            }
        }
    }
    for e in &events {
        match e {
            Event::StepStarted {
                step,
                attempt,
                action,
                ..
            } => {
                if *attempt == 1 {
                    actual.path.push(step.clone());
                }
                if let Some(text) = action.as_ref().and_then(command_text) {
                    actual.commands.insert(step.clone(), text);
                }
            }
            Event::Captured { step, name, value } => {
                actual
                    .captures
                    .entry(step.clone())
                    .or_default()
                    .insert(name.clone(), value.clone());
            }
            Event::Escalation { due, .. } => {
                actual.escalation = Some(due.iter().map(|c| c.to.clone()).collect());
            }
            _ => {}
        }
    }
    actual.events = events;
    actual
}

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

/// A recorded run turned into a scenario: its results are the script, its path the
/// expectation.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The scenario: params, answers, results per attempt, the recorded path and status.
    pub scenario: Scenario,
    /// The file the run used (`run_started`'s origin).
    pub runbook_path: String,
    /// What replay could not take over exactly (secrets, SSM details), for people.
    pub notes: Vec<String>,
}

/// Why a journal cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordedError {
    /// No `run_started` first.
    #[error("not a run journal (no run_started)")]
    NotARun,
}

/// One attempt being collected from the record.
#[derive(Default)]
struct Attempt {
    stdout: String,
    stderr: String,
    action: Option<RenderedAction>,
}

/// Turn a run's records into a scenario. Secret parameters were never recorded: they are
/// left to the scenario's placeholders (a note says so).
pub fn recorded(
    records: &[crate::journal::Record],
    runbook: &Runbook,
) -> Result<Recorded, RecordedError> {
    use runbook_core::diag::Span;
    use runbook_core::model::{ParamType, Sp};
    let sp = |s: &str| Sp::new(s.to_string(), Span::default());
    let Some(Event::RunStarted {
        params,
        mode,
        origin,
        run_id,
        ..
    }) = records.first().map(|r| &r.event)
    else {
        return Err(RecordedError::NotARun);
    };
    let mut notes = Vec::new();
    let mut scenario_params = Vec::new();
    for (k, v) in params {
        let secret = runbook
            .params
            .get(k)
            .is_some_and(|p| p.ty.value == ParamType::Secret);
        if secret {
            notes.push(format!(
                "parameter `{k}` is a secret and was never recorded: replay uses a placeholder"
            ));
        } else {
            scenario_params.push((sp(k), v.clone()));
        }
    }
    let mut open: HashMap<String, Attempt> = HashMap::new();
    let mut results: Vec<(String, Vec<ScriptedResult>)> = Vec::new();
    let mut answers: Vec<(String, Vec<ScriptedAnswer>)> = Vec::new();
    let mut path = Vec::new();
    let mut status = None;
    let mut close = |step: &str,
                     attempt: Option<Attempt>,
                     exit_code: Option<i32>,
                     http: Option<u16>,
                     ok: bool,
                     timed_out: bool,
                     notes: &mut Vec<String>| {
        let Some(a) = attempt else { return };
        // Branches decide, waits take their time: neither has a result to script.
        if matches!(a.action, None | Some(RenderedAction::Wait { .. })) {
            return;
        }
        let mut r = ScriptedResult::default();
        let body = a.stdout;
        match &a.action {
            Some(RenderedAction::Http { .. }) => {
                match http.filter(|c| *c > 0) {
                    Some(c) => r.status = Some(Sp::new(ResultStatus::Http(c), Span::default())),
                    None => r.error = Some("no response (as recorded)".into()),
                }
                r.body = Some(body);
            }
            Some(RenderedAction::SsmCommand(call)) => {
                let state = if ok { "Success" } else { "Failed" };
                let ids = if call.instance_ids.is_empty() {
                    vec!["recorded".to_string()]
                } else {
                    call.instance_ids.clone()
                };
                r.instances = Some(
                    ids.into_iter()
                        .enumerate()
                        .map(|(i, id)| {
                            (
                                id,
                                runbook_core::scenario::ScriptedInvocation {
                                    status: Some(state.into()),
                                    exit_code: None,
                                    stdout: (i == 0).then(|| body.clone()),
                                    stderr: None,
                                },
                            )
                        })
                        .collect(),
                );
                if !notes.iter().any(|n| n.contains("ssm_command")) {
                    notes.push(
                        "ssm_command results are replayed per step, not per instance: \
                         every instance gets the step's outcome"
                            .into(),
                    );
                }
            }
            Some(RenderedAction::SsmAutomation { .. }) => {
                r.status = Some(Sp::new(
                    ResultStatus::Automation(if ok { "Success" } else { "Failed" }.into()),
                    Span::default(),
                ));
            }
            _ => {
                r.exit_code = exit_code.or(Some(if ok { 0 } else { 1 }));
                r.stdout = Some(body);
                r.stderr = Some(a.stderr);
            }
        }
        if timed_out {
            // It ran into its timeout: it takes longer than any timeout.
            r.takes = Some(Sp::new(
                runbook_core::model::DurationSpec {
                    text: "forever".into(),
                    value: Duration::from_secs(10 * 365 * 24 * 3600),
                },
                Span::default(),
            ));
        }
        match results.iter_mut().find(|(s, _)| s == step) {
            Some((_, v)) => v.push(r),
            None => results.push((step.to_string(), vec![r])),
        }
    };
    for rec in records {
        match &rec.event {
            Event::StepStarted {
                step,
                attempt,
                action,
                ..
            } => {
                if *attempt == 1 {
                    path.push(step.clone());
                }
                open.insert(
                    step.clone(),
                    Attempt {
                        action: action.clone(),
                        ..Attempt::default()
                    },
                );
            }
            Event::Output { step, stream, line } => {
                if let Some(a) = open.get_mut(step) {
                    let buf = match stream {
                        Stream::Stdout => &mut a.stdout,
                        Stream::Stderr => &mut a.stderr,
                    };
                    buf.push_str(line);
                    buf.push('\n');
                }
            }
            Event::AttemptFailed {
                step,
                exit_code,
                http_status,
                ..
            } => close(
                step,
                open.remove(step),
                *exit_code,
                *http_status,
                exit_code.is_none_or(|c| c == 0),
                false,
                &mut notes,
            ),
            Event::StepFinished {
                step,
                status,
                exit_code,
                http_status,
                killed,
                ..
            } => {
                let ok = *status == Status::Succeeded;
                let timed_out = *killed == Some(crate::event::Killed::Timeout);
                close(
                    step,
                    open.remove(step),
                    *exit_code,
                    *http_status,
                    ok,
                    timed_out,
                    &mut notes,
                );
            }
            Event::Answered { step, answer, .. } => {
                let a = match answer {
                    Answer::Approve => ScriptedAnswer::Approve,
                    Answer::Decline => ScriptedAnswer::Decline,
                    Answer::Skip => ScriptedAnswer::Skip,
                    Answer::Abort => ScriptedAnswer::Abort,
                };
                match answers.iter_mut().find(|(s, _)| s == step) {
                    Some((_, v)) => v.push(a),
                    None => answers.push((step.clone(), vec![a])),
                }
            }
            Event::RunFinished { status: s, .. } => status = Some(*s),
            _ => {}
        }
    }
    let scenario = Scenario {
        name: sp(&format!("run {run_id}")),
        description: None,
        params: scenario_params,
        yes: false,
        dry_run: *mode == Mode::DryRun,
        answers: answers
            .into_iter()
            .map(|(k, v)| {
                (
                    sp(&k),
                    v.into_iter().map(|a| Sp::new(a, Span::default())).collect(),
                )
            })
            .collect(),
        results: results.into_iter().map(|(k, v)| (sp(&k), v)).collect(),
        expect: runbook_core::scenario::Expect {
            status: status.map(|s| sp(status_name(s))),
            path: Some(Sp::new(
                path.iter().map(|p| sp(p)).collect(),
                Span::default(),
            )),
            ..runbook_core::scenario::Expect::default()
        },
    };
    if status.is_none() {
        notes.push(format!(
            "run {run_id} has no run_finished (interrupted): replay compares the path as far as it went"
        ));
    }
    Ok(Recorded {
        scenario,
        runbook_path: origin.path.clone(),
        notes,
    })
}
