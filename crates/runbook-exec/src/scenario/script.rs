//! The scripted backend (results per step and attempt, time on the paused clock) and the
//! scripted operator (answers per step).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runbook_core::render::RenderedAction;
use runbook_core::scenario::{ResultStatus, ScriptedAnswer, ScriptedResult};

use crate::action::{ActionResult, Io};
use crate::backend::{Backend, BoxFuture, ParameterError};
use crate::engine::{Operator, Question};
use crate::event::{Answer, Stream};
use crate::ssm::{Automation, Invocation};

/// The script for one scenario: results per step, answers per step.
pub(super) struct Script {
    pub(super) results: Mutex<HashMap<String, VecDeque<ScriptedResult>>>,
    pub(super) problems: Arc<Mutex<Vec<String>>>,
    /// Whose results these are, for messages: "the scenario", "run 20261120-...".
    pub(super) source: String,
    /// Stops the run at the first missing result: what follows would be guesswork.
    pub(super) control: crate::engine::Control,
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
pub(super) fn placeholder(source: &str) -> String {
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
pub(super) struct Answers {
    pub(super) per_step: Mutex<HashMap<String, VecDeque<ScriptedAnswer>>>,
    pub(super) problems: Arc<Mutex<Vec<String>>>,
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
