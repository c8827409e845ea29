//! Running a scenario: the real engine, a scripted backend, a scripted operator, and a
//! record of what happened, compared with what the scenario expects.
//!
//! Nothing here touches the world: every action's result comes from the script (a step
//! that would run without one fails, naming the step), Parameter Store and environment
//! lookups give placeholders, and time is tokio's paused clock, so `wait: 5m`, polling and
//! `takes: 40m` cost nothing. Scenarios run one step at a time, so the path is
//! deterministic: the plan's order.
//!
//! `script.rs` is the scripted backend and operator, `expect.rs` compares a run with its
//! scenario (and collects coverage), `recorded.rs` turns a journal into a scenario
//! (replay).

mod expect;
mod recorded;
mod script;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use runbook_core::Runbook;
use runbook_core::plan::Plan;
use runbook_core::render::RenderedAction;
use runbook_core::scenario::{Scenario, ScriptedAnswer, ScriptedResult};
use serde_json::Value;

use crate::backend::Backend;
use crate::engine::{Engine, Operator, Options};
use crate::event::{Event, Mode, RunStatus, Sink, Status};

pub use expect::{Mismatch, Reached, compare, parts_at, same_value, status_name, step_status_name};
pub use recorded::{Recorded, RecordedError, recorded};
use script::{Answers, Script, placeholder};

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
            given_is: "the scenario's params",
            file: &serde_json::Map::new(),
            file_is: "the scenario",
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

/// [`run`] on a runtime of its own whose clock starts paused, so each scenario has its
/// own clock.
pub fn run_paused(
    runbook: Arc<Runbook>,
    plan: Arc<Plan>,
    scenario: &Scenario,
    source: &str,
) -> std::io::Result<Actual> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    Ok(runtime.block_on(run(runbook, plan, scenario, source)))
}
