//! A recorded run as a scenario (`runbook test --replay`): per-attempt results from the
//! journal's typed fields, the operator's answers, and the path it took as the
//! expectation.

use std::collections::HashMap;
use std::time::Duration;

use runbook_core::Runbook;
use runbook_core::render::RenderedAction;
use runbook_core::scenario::{ResultStatus, Scenario, ScriptedAnswer, ScriptedResult};

use super::status_name;
use crate::event::{Answer, Event, Mode, Status, Stream};

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
    // Steps started and not yet ended: a resume starts them again, which is not a new
    // step on the path.
    let mut unfinished: std::collections::HashSet<String> = std::collections::HashSet::new();
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
                if *attempt == 1 && unfinished.insert(step.clone()) {
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
                if *status == Status::Pending {
                    // Interrupted before it ended (waiting for an answer, or in flight):
                    // the resume that follows starts it again.
                    open.remove(step);
                    continue;
                }
                unfinished.remove(step);
                // An act declined, skipped or withheld (dry run) never ran its action.
                let ran = !matches!(
                    status,
                    Status::Declined | Status::Skipped | Status::NotExecuted
                );
                let ok = *status == Status::Succeeded;
                let timed_out = *killed == Some(crate::event::Killed::Timeout);
                close(
                    step,
                    open.remove(step).filter(|_| ran),
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::event::{AnsweredBy, Origin, RunStatus, Summary};
    use crate::journal::Record;

    fn records(events: Vec<Event>) -> Vec<Record> {
        events
            .into_iter()
            .enumerate()
            .map(|(i, event)| Record {
                v: 2,
                seq: i as u64,
                ts: String::new(),
                prev: String::new(),
                event,
            })
            .collect()
    }

    fn started(step: &str) -> Event {
        Event::StepStarted {
            step: step.into(),
            kind: "act".into(),
            title: step.into(),
            attempt: 1,
            action: Some(RenderedAction::Shell {
                run: "true".into(),
                env: Default::default(),
                cwd: None,
                interpreter: "bash".into(),
            }),
            confirm: None,
        }
    }

    fn finished(step: &str, status: Status) -> Event {
        Event::StepFinished {
            step: step.into(),
            status,
            exit_code: (status == Status::Succeeded).then_some(0),
            duration_ms: 0,
            message: None,
            killed: None,
            skip: None,
            captures: Default::default(),
            http_status: None,
            stderr_tail: String::new(),
        }
    }

    /// Interrupted while its act waited for an answer, resumed, then aborted there: the
    /// act is on the path once and has no result (its action never ran).
    #[test]
    fn a_resumed_run_is_one_path_and_unrun_acts_have_no_result() {
        let rb = runbook_core::check(
            "apiVersion: runbook/v1\nname: r\ntitle: R\nsteps:\n  - { id: look, kind: check, title: L, shell: 'true' }\n  - { id: fix, kind: act, title: F, shell: 'true' }\n",
            Some("r"),
        )
        .runbook
        .unwrap();
        let recs = records(vec![
            Event::RunStarted {
                run_id: "r1".into(),
                runbook: "r".into(),
                title: "R".into(),
                mode: Mode::Live,
                params: Default::default(),
                steps: 2,
                step_ids: vec!["look".into(), "fix".into()],
                origin: Origin::default(),
            },
            started("look"),
            finished("look", Status::Succeeded),
            started("fix"),
            Event::RunFinished {
                status: RunStatus::Interrupted,
                exit_code: Some(130),
                duration_ms: 0,
                summary: Summary::default(),
            },
            finished("fix", Status::Pending),
            Event::Resumed {
                by: "me".into(),
                done: vec!["look".into()],
                inflight: vec![],
                torn_bytes: 0,
                runbook_changed: false,
            },
            started("fix"),
            Event::Answered {
                step: "fix".into(),
                answer: Answer::Abort,
                by: AnsweredBy::Operator("me".into()),
            },
            finished("fix", Status::Declined),
            Event::RunFinished {
                status: RunStatus::Aborted,
                exit_code: Some(3),
                duration_ms: 0,
                summary: Summary::default(),
            },
        ]);
        let r = recorded(&recs, &rb).unwrap();
        assert_eq!(
            r.scenario.expect.path_ids().unwrap(),
            vec!["look".to_string(), "fix".to_string()]
        );
        let scripted: Vec<&str> = r
            .scenario
            .results
            .iter()
            .map(|(k, _)| k.value.as_str())
            .collect();
        assert_eq!(scripted, vec!["look"]);
        assert_eq!(r.scenario.answers.len(), 1);
        assert_eq!(r.scenario.expect.status.unwrap().value, "aborted");
    }
}
