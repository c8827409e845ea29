//! The scheduler without processes: a scripted backend, a scripted operator and a
//! recording sink, on tokio's paused clock (waits, retries and timeouts take no real time).

#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runbook_core::render::RenderedAction;
use runbook_exec::action::{ActionResult, Io};
use runbook_exec::backend::{Backend, BoxFuture, ParameterError};
use runbook_exec::event::{Killed, Stream};
use runbook_exec::{
    Answer, Engine, Event, Mode, Operator, Options, Question, Report, RunStatus, Sink, Status,
};

/// One scripted result.
#[derive(Debug, Clone)]
enum R {
    /// Exit with this code and print this.
    Exit(i32, &'static str),
    /// Take this long, then exit 0.
    Slow(u64),
    /// Never end on its own: only a kill or the step's timeout stops it.
    Hang,
}

/// Results per step, in order; every call is recorded with the time it started.
#[derive(Default)]
struct Script {
    results: Mutex<HashMap<String, VecDeque<R>>>,
    calls: Mutex<Vec<(String, Duration)>>,
    running: Mutex<(usize, usize)>,
    start: Mutex<Option<tokio::time::Instant>>,
}

impl Script {
    fn new(results: &[(&str, R)]) -> Arc<Script> {
        let s = Script::default();
        for (step, r) in results {
            s.results
                .lock()
                .unwrap()
                .entry((*step).to_string())
                .or_default()
                .push_back(r.clone());
        }
        Arc::new(s)
    }

    fn calls(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|(s, _)| s.clone())
            .collect()
    }

    fn max_running(&self) -> usize {
        self.running.lock().unwrap().1
    }
}

impl Backend for Script {
    fn run<'a>(
        &'a self,
        step: &'a str,
        action: &'a RenderedAction,
        io: Io<'a>,
    ) -> BoxFuture<'a, ActionResult> {
        Box::pin(async move {
            let now = tokio::time::Instant::now();
            let start = *self.start.lock().unwrap().get_or_insert(now);
            self.calls
                .lock()
                .unwrap()
                .push((step.to_string(), now - start));
            if let RenderedAction::Wait { ms, .. } = action {
                tokio::time::sleep(Duration::from_millis(*ms)).await;
                return ActionResult {
                    ok: true,
                    ..ActionResult::default()
                };
            }
            let next = self
                .results
                .lock()
                .unwrap()
                .get_mut(step)
                .and_then(VecDeque::pop_front);
            let Some(r) = next else {
                return ActionResult::failed(format!("no scripted result for `{step}`"));
            };
            {
                let mut r = self.running.lock().unwrap();
                r.0 += 1;
                r.1 = r.1.max(r.0);
            }
            let result = match r {
                R::Exit(code, out) => {
                    for line in out.lines() {
                        io.line(Stream::Stdout, line);
                    }
                    ActionResult {
                        ok: code == 0,
                        exit_code: Some(code),
                        stdout: out.to_string(),
                        message: (code != 0).then(|| format!("exit code {code}")),
                        ..ActionResult::default()
                    }
                }
                R::Slow(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    ActionResult {
                        ok: true,
                        exit_code: Some(0),
                        ..ActionResult::default()
                    }
                }
                R::Hang => {
                    let mut kill = io.kill.clone();
                    let deadline = io.deadline;
                    tokio::select! {
                        _ = kill.wait_for(Option::is_some) => ActionResult {
                            killed: true,
                            message: Some("stopped".into()),
                            ..ActionResult::default()
                        },
                        () = async {
                            match deadline {
                                Some(d) => tokio::time::sleep_until(d).await,
                                None => std::future::pending().await,
                            }
                        } => ActionResult {
                            timed_out: true,
                            message: Some("timed out".into()),
                            ..ActionResult::default()
                        },
                    }
                }
            };
            self.running.lock().unwrap().0 -= 1;
            result
        })
    }

    fn parameter<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<String, ParameterError>> {
        Box::pin(async move { Err(ParameterError(format!("no scripted parameter `{path}`"))) })
    }
}

/// Answers in order; when they run out, abort.
struct Answers(Mutex<VecDeque<Answer>>);

impl Operator for Answers {
    fn ask(
        &self,
        _: Question,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send + '_>> {
        let a = self.0.lock().unwrap().pop_front().unwrap_or(Answer::Abort);
        Box::pin(async move { a })
    }
}

#[derive(Default)]
struct Recorder(Mutex<Vec<Event>>);

impl Sink for Recorder {
    fn emit(&self, _: std::time::SystemTime, event: &Event) {
        self.0.lock().unwrap().push(event.clone());
    }
}

struct Run {
    report: Report,
    events: Vec<Event>,
    calls: Vec<String>,
    script: Arc<Script>,
}

impl Run {
    fn status(&self, id: &str) -> Status {
        self.report
            .steps
            .iter()
            .find(|s| s.id == id)
            .unwrap_or_else(|| panic!("no step {id}"))
            .status
    }

    fn statuses(&self) -> Vec<(String, Status)> {
        self.report
            .steps
            .iter()
            .map(|s| (s.id.clone(), s.status))
            .collect()
    }
}

const HEAD: &str = "apiVersion: runbook/v1\nname: t\ntitle: Engine test\n";

/// An engine over `rb` with the scripted backend, operator and recording sink.
fn engine(
    rb: &runbook_core::Runbook,
    plan: &runbook_core::Plan,
    options: Options,
    sink: &Arc<Recorder>,
    answers: &[Answer],
    script: &Arc<Script>,
) -> Engine {
    Engine::new(
        Arc::new(rb.clone()),
        Arc::new(plan.clone()),
        serde_json::Map::new(),
        serde_json::Map::new(),
        Vec::new(),
        serde_json::Map::new(),
        options,
        sink.clone(),
        Arc::new(Answers(Mutex::new(answers.iter().copied().collect()))),
    )
    .unwrap()
    .with_backend(script.clone())
}

async fn run_with(
    steps: &str,
    script: &[(&str, R)],
    answers: &[Answer],
    options: Options,
    control: impl FnOnce(runbook_exec::Control),
) -> Run {
    let yaml = format!("{HEAD}{steps}");
    let checked = runbook_core::check(&yaml, Some("t"));
    let (rb, plan) = checked
        .valid()
        .unwrap_or_else(|| panic!("{yaml}\n{:#?}", checked.diagnostics));
    let sink = Arc::new(Recorder::default());
    let script = Script::new(script);
    let engine = engine(rb, plan, options, &sink, answers, &script);
    control(engine.control());
    let report = engine.run().await;
    let events = sink.0.lock().unwrap().clone();
    Run {
        report,
        events,
        calls: script.calls(),
        script,
    }
}

async fn run(steps: &str, script: &[(&str, R)]) -> Run {
    run_with(steps, script, &[], yes(), |_| {}).await
}

fn yes() -> Options {
    Options {
        yes: true,
        ..Options::default()
    }
}

fn ok() -> R {
    R::Exit(0, "")
}

use Status::{Failed, Pending, Skipped, Succeeded};

fn ids(v: &[(String, Status)]) -> Vec<(&str, Status)> {
    v.iter().map(|(s, st)| (s.as_str(), *st)).collect()
}

#[tokio::test(start_paused = true)]
async fn list_order_makes_a_chain_and_needs_overrides_it() {
    let r = run(
        "steps:
  - { id: a, kind: check, title: A, shell: a }
  - { id: b, kind: check, title: B, shell: b }
  - { id: c, kind: check, title: C, shell: c, needs: [] }
",
        &[("a", R::Slow(100)), ("b", ok()), ("c", ok())],
    )
    .await;
    assert_eq!(r.report.status, RunStatus::Succeeded);
    // c is a root of its own: it starts with a, before b.
    assert_eq!(r.calls, ["a", "c", "b"]);
}

#[tokio::test(start_paused = true)]
async fn a_failure_skips_what_follows_and_stops_the_run() {
    let r = run(
        "steps:
  - { id: a, kind: check, title: A, shell: a }
  - { id: b, kind: check, title: B, shell: b }
  - { id: c, kind: check, title: C, shell: c }
",
        &[("a", R::Exit(1, "")), ("b", ok())],
    )
    .await;
    assert_eq!(r.report.status, RunStatus::Failed);
    assert_eq!(r.calls, ["a"]);
    assert_eq!(
        ids(&r.statuses()),
        [("a", Failed), ("b", Pending), ("c", Pending)]
    );
}

const BRANCH: &str = "steps:
  - { id: probe, kind: check, title: Probe, shell: p, capture: { n: { stdout: int } } }
  - id: decide
    kind: branch
    title: Decide
    cases:
      - { when: 'steps.probe.n > 10', goto: high }
    default: low
  - { id: high, kind: check, title: High, shell: h, needs: [decide] }
  - { id: high2, kind: check, title: After high, shell: h2 }
  - { id: low, kind: check, title: Low, shell: l, needs: [decide] }
  - { id: join, kind: check, title: Join, shell: j, needs: [high2, low] }
";

#[tokio::test(start_paused = true)]
async fn a_branch_takes_one_route_skips_cascade_and_routes_converge() {
    let r = run(
        BRANCH,
        &[
            ("probe", R::Exit(0, "42")),
            ("high", ok()),
            ("high2", ok()),
            ("join", ok()),
        ],
    )
    .await;
    assert_eq!(r.report.status, RunStatus::Succeeded, "{:?}", r.statuses());
    assert_eq!(r.calls, ["probe", "high", "high2", "join"]);
    assert_eq!(r.status("low"), Skipped);
    let decision = r
        .events
        .iter()
        .find_map(|e| match e {
            Event::Decision { step, goto, .. } if step == "decide" => goto.clone(),
            _ => None,
        })
        .unwrap();
    assert_eq!(decision, "high");

    let r = run(
        BRANCH,
        &[("probe", R::Exit(0, "3")), ("low", ok()), ("join", ok())],
    )
    .await;
    assert_eq!(r.report.status, RunStatus::Succeeded);
    assert_eq!(r.calls, ["probe", "low", "join"]);
    // Skips cascade down the route not taken.
    assert_eq!(r.status("high"), Skipped);
    assert_eq!(r.status("high2"), Skipped);
}

#[tokio::test(start_paused = true)]
async fn on_fail_continue_goes_on_and_abort_stops() {
    let steps = "steps:
  - { id: a, kind: check, title: A, shell: a, on_fail: continue }
  - { id: b, kind: check, title: B, shell: b }
";
    let r = run(steps, &[("a", R::Exit(2, "")), ("b", ok())]).await;
    assert_eq!(r.report.status, RunStatus::Succeeded);
    assert_eq!(ids(&r.statuses()), [("a", Failed), ("b", Succeeded)]);

    let r = run(
        &steps.replace("continue", "abort"),
        &[("a", R::Exit(2, "")), ("b", ok())],
    )
    .await;
    assert_eq!(r.report.status, RunStatus::Failed);
    assert_eq!(r.calls, ["a"]);
}

#[tokio::test(start_paused = true)]
async fn on_fail_escalate_shows_the_contacts_due_and_the_next() {
    let steps = "escalation:
  - { after: 0m, to: on-call }
  - { after: 15m, to: dev-lead }
  - { after: 1h, to: cto }
steps:
  - { id: wait, kind: check, title: Wait, wait: 20m }
  - { id: a, kind: check, title: A, shell: a, on_fail: escalate }
";
    let r = run(steps, &[("a", R::Exit(1, ""))]).await;
    assert_eq!(r.report.status, RunStatus::Escalated);
    let (due, next) = r
        .events
        .iter()
        .find_map(|e| match e {
            Event::Escalation { due, next, .. } => Some((due.clone(), next.clone())),
            _ => None,
        })
        .unwrap();
    let due: Vec<&str> = due.iter().map(|c| c.to.as_str()).collect();
    assert_eq!(due, ["on-call", "dev-lead"], "20 minutes in");
    assert_eq!(next.unwrap().to, "cto");
}

#[tokio::test(start_paused = true)]
async fn on_fail_goto_runs_the_fix_route_only_on_failure() {
    let steps = "steps:
  - { id: a, kind: check, title: A, shell: a, on_fail: { goto: fix } }
  - { id: b, kind: check, title: B, shell: b }
  - { id: fix, kind: check, title: Fix, shell: f, needs: [] }
";
    let r = run(steps, &[("a", R::Exit(1, "")), ("fix", ok())]).await;
    assert_eq!(r.report.status, RunStatus::Succeeded, "{:?}", r.statuses());
    assert_eq!(ids(&r.statuses())[..2], [("a", Failed), ("b", Skipped)]);
    assert_eq!(r.status("fix"), Succeeded);

    let r = run(steps, &[("a", ok()), ("b", ok())]).await;
    assert_eq!(r.report.status, RunStatus::Succeeded);
    assert_eq!(r.status("fix"), Skipped);
}

const RETRY_FROM: &str = "steps:
  - { id: restart, kind: check, title: Restart, shell: r }
  - { id: check, kind: check, title: Check, shell: c, on_fail: { retry_from: restart, attempts: 3 } }
";

#[tokio::test(start_paused = true)]
async fn retry_from_succeeds_on_round_3_and_gives_up_after_its_rounds() {
    let r = run(
        RETRY_FROM,
        &[
            ("restart", ok()),
            ("check", R::Exit(1, "")),
            ("restart", ok()),
            ("check", R::Exit(1, "")),
            ("restart", ok()),
            ("check", ok()),
        ],
    )
    .await;
    assert_eq!(r.report.status, RunStatus::Succeeded);
    assert_eq!(
        r.calls,
        ["restart", "check", "restart", "check", "restart", "check"]
    );
    let rewinds = r
        .events
        .iter()
        .filter(|e| matches!(e, Event::Rewind { .. }))
        .count();
    assert_eq!(rewinds, 2);

    let fails: Vec<(&str, R)> = (0..4)
        .flat_map(|_| [("restart", ok()), ("check", R::Exit(1, ""))])
        .collect();
    let r = run(RETRY_FROM, &fails).await;
    assert_eq!(r.report.status, RunStatus::Failed);
    // The first round and 3 more.
    assert_eq!(r.calls.len(), 8);
    let message = r.report.steps[1].message.clone().unwrap();
    assert!(message.contains("gave up after 3 rounds"), "{message}");
}

#[tokio::test(start_paused = true)]
async fn verify_polls_with_backoff_until_it_holds() {
    let steps = "steps:
  - id: v
    kind: verify
    title: Healthy
    shell: v
    retry: { attempts: 5, interval: 10s, backoff: 2 }
";
    let r = run(
        steps,
        &[
            ("v", R::Exit(1, "")),
            ("v", R::Exit(1, "")),
            ("v", R::Exit(1, "")),
            ("v", ok()),
        ],
    )
    .await;
    assert_eq!(r.report.status, RunStatus::Succeeded);
    let at: Vec<u64> = r
        .script
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|(_, t)| t.as_secs())
        .collect();
    // 10 s, then 20 s, then 40 s between attempts.
    assert_eq!(at, [0, 10, 30, 70]);
    assert_eq!(r.report.steps[0].attempts, 4);
}

#[tokio::test(start_paused = true)]
async fn verify_gives_up_at_its_timeout() {
    let steps = "steps:
  - id: v
    kind: verify
    title: Healthy
    shell: v
    retry: { attempts: 100, interval: 10s }
    timeout: 35s
";
    let script: Vec<(&str, R)> = (0..100).map(|_| ("v", R::Exit(1, ""))).collect();
    let r = run(steps, &script).await;
    assert_eq!(r.report.status, RunStatus::Failed);
    assert_eq!(
        r.calls.len(),
        4,
        "attempts at 0, 10, 20 and 30 s; one more at 40 s is past 35"
    );
    let message = r.report.steps[0].message.clone().unwrap();
    assert!(message.contains("timeout 35s reached"), "{message}");
}

const WIDE: &str = "steps:
  - { id: a, kind: check, title: A, shell: a, needs: [] }
  - { id: b, kind: check, title: B, shell: b, needs: [] }
  - { id: c, kind: check, title: C, shell: c, needs: [] }
  - { id: d, kind: check, title: D, shell: d, needs: [] }
  - { id: e, kind: check, title: E, shell: e, needs: [] }
";

#[tokio::test(start_paused = true)]
async fn parallel_bounds_how_many_steps_run_at_once() {
    let script: Vec<(&str, R)> = ["a", "b", "c", "d", "e"]
        .into_iter()
        .map(|s| (s, R::Slow(1000)))
        .collect();
    for (parallel, expect) in [(1, 1), (2, 2), (8, 5)] {
        let options = Options { parallel, ..yes() };
        let r = run_with(WIDE, &script, &[], options, |_| {}).await;
        assert_eq!(r.report.status, RunStatus::Succeeded);
        assert_eq!(r.script.max_running(), expect, "--parallel {parallel}");
    }
}

#[tokio::test(start_paused = true)]
async fn acts_run_one_at_a_time_unless_concurrent() {
    let acts = WIDE.replace("kind: check", "kind: act");
    let script: Vec<(&str, R)> = ["a", "b", "c", "d", "e"]
        .into_iter()
        .map(|s| (s, R::Slow(1000)))
        .collect();
    let r = run(&acts, &script).await;
    assert_eq!(r.report.status, RunStatus::Succeeded);
    assert_eq!(r.script.max_running(), 1);

    let concurrent = acts.replace("needs: []", "needs: [], concurrent: true");
    let r = run(&concurrent, &script).await;
    assert_eq!(r.script.max_running(), 4, "bounded by --parallel 4");
}

#[tokio::test(start_paused = true)]
async fn the_operator_declines_skips_and_aborts() {
    let steps = "steps:
  - { id: a, kind: act, title: A, shell: a }
  - { id: b, kind: act, title: B, shell: b }
";
    let no = Options::default();
    let r = run_with(
        steps,
        &[("a", ok()), ("b", ok())],
        &[Answer::Skip, Answer::Approve],
        no.clone(),
        |_| {},
    )
    .await;
    assert_eq!(r.report.status, RunStatus::Succeeded);
    assert_eq!(r.calls, ["b"]);
    assert_eq!(r.status("a"), Skipped);

    let r = run_with(
        steps,
        &[("a", ok())],
        &[Answer::Decline],
        no.clone(),
        |_| {},
    )
    .await;
    assert_eq!(r.report.status, RunStatus::Aborted);
    assert!(r.calls.is_empty());
    assert_eq!(r.status("a"), Status::Declined);

    let r = run_with(steps, &[("a", ok())], &[Answer::Abort], no, |_| {}).await;
    assert_eq!(r.report.status, RunStatus::Aborted);
    assert!(r.calls.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_dry_run_never_runs_an_act_and_shows_what_would_follow() {
    let steps = "steps:
  - { id: probe, kind: check, title: Probe, shell: p }
  - { id: fix, kind: act, title: Fix, shell: f }
  - { id: check, kind: verify, title: Check, shell: v }
";
    let options = Options {
        mode: Mode::DryRun,
        ..Options::default()
    };
    let r = run_with(steps, &[("probe", ok())], &[], options, |_| {}).await;
    assert_eq!(r.report.status, RunStatus::Succeeded);
    assert_eq!(r.calls, ["probe"], "only the check ran");
    assert_eq!(r.status("fix"), Status::NotExecuted);
    assert_eq!(r.status("check"), Pending);
}

#[tokio::test(start_paused = true)]
async fn an_act_killed_at_its_timeout_records_why() {
    let steps = "steps:
  - { id: fix, kind: act, title: Fix, shell: f, timeout: 30s }
";
    let r = run(steps, &[("fix", R::Hang)]).await;
    assert_eq!(r.report.status, RunStatus::Failed);
    let killed = r.events.iter().find_map(|e| match e {
        Event::StepFinished { killed, .. } => *killed,
        _ => None,
    });
    assert_eq!(killed, Some(Killed::Timeout));
}

#[tokio::test(start_paused = true)]
async fn the_first_interrupt_lets_running_steps_finish_the_second_kills_them() {
    let steps = "steps:
  - { id: long, kind: check, title: Long, shell: l }
  - { id: after, kind: check, title: After, shell: a }
";
    // Level 1: the running step finishes, nothing new starts.
    let r = run_with(steps, &[("long", R::Slow(5000))], &[], yes(), |c| {
        interrupt_soon(c, 1);
    })
    .await;
    assert_eq!(r.report.status, RunStatus::Interrupted);
    assert_eq!(r.calls, ["long"]);
    assert_eq!(r.status("long"), Succeeded);
    assert_eq!(r.status("after"), Pending);

    // Level 2: the running action is killed, with the reason recorded.
    let r = run_with(steps, &[("long", R::Hang)], &[], yes(), |c| {
        interrupt_soon(c, 2);
    })
    .await;
    assert_eq!(r.report.status, RunStatus::Interrupted);
    assert_eq!(r.status("long"), Failed);
    let killed = r.events.iter().find_map(|e| match e {
        Event::StepFinished { killed, .. } => *killed,
        _ => None,
    });
    assert_eq!(killed, Some(Killed::Interrupt));
}

#[tokio::test(start_paused = true)]
async fn a_step_with_no_scripted_result_fails_naming_it() {
    let r = run(
        "steps:\n  - { id: a, kind: check, title: A, shell: a }\n",
        &[],
    )
    .await;
    assert_eq!(r.report.status, RunStatus::Failed);
    let message = r.report.steps[0].message.clone().unwrap();
    assert!(message.contains("no scripted result for `a`"), "{message}");
}

#[tokio::test(start_paused = true)]
async fn the_first_interrupt_stops_a_polling_verify_between_attempts() {
    let steps = "steps:
  - id: v
    kind: verify
    title: Healthy
    shell: v
    retry: { attempts: 100, interval: 10s }
    timeout: 30m
";
    let script: Vec<(&str, R)> = (0..100).map(|_| ("v", R::Exit(1, ""))).collect();
    let r = run_with(steps, &script, &[], yes(), |c| {
        interrupt_soon(c, 1);
    })
    .await;
    assert_eq!(r.report.status, RunStatus::Interrupted);
    assert_eq!(r.calls.len(), 1, "no attempt after the interrupt");
    let message = r.report.steps[0].message.clone().unwrap();
    assert!(
        message.contains("stopped while waiting to retry (attempt 1 of 100"),
        "{message}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_retry_is_pending_takes_no_route_and_resume_polls_again() {
    // Ctrl-C while a verify waits for its next attempt: it has not failed (4 attempts
    // are left), so its `on_fail` route must not start, and `resume` polls it again.
    let steps = "steps:
  - id: v
    kind: verify
    title: Healthy
    shell: v
    retry: { attempts: 5, interval: 10s }
    on_fail: { goto: fix }
  - { id: fix, kind: check, title: Fix, shell: f }
";
    let r = run_with(steps, &[("v", R::Exit(1, ""))], &[], yes(), |c| {
        interrupt_soon(c, 1);
    })
    .await;
    assert_eq!(r.report.status, RunStatus::Interrupted);
    assert_eq!(r.calls, ["v"], "the route to fix is not taken");
    assert_eq!(r.status("v"), Pending);
    assert_eq!(r.status("fix"), Pending);

    let (resumed, replay) = resume_from(steps, &r.events, &[("v", ok())]).await;
    assert!(replay.restored.is_empty(), "nothing finished");
    assert_eq!(resumed.report.status, RunStatus::Succeeded);
    assert_eq!(resumed.calls, ["v"]);
}

#[tokio::test(start_paused = true)]
async fn an_interrupt_before_the_first_step_starts_nothing() {
    let steps = "steps:
  - { id: a, kind: check, title: A, shell: a }
";
    let r = run_with(steps, &[("a", ok())], &[], yes(), |c| {
        c.interrupt();
    })
    .await;
    assert_eq!(r.report.status, RunStatus::Interrupted);
    assert!(r.calls.is_empty(), "{:?}", r.calls);
}

/// Interrupt `level` times 1 ms into the run (on the paused clock: while the first
/// steps are running or waiting).
fn interrupt_soon(c: runbook_exec::Control, level: u8) {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1)).await;
        for _ in 0..level {
            c.interrupt();
        }
    });
}

/// Records as the journal would hold them (format 2), from a recorded run.
fn records(events: &[Event]) -> Vec<runbook_exec::journal::Record> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| runbook_exec::journal::Record {
            v: runbook_exec::journal::FORMAT,
            seq: i as u64,
            ts: String::new(),
            prev: String::new(),
            event: e.clone(),
        })
        .collect()
}

/// Run `steps`, then resume from what it recorded with a second script.
async fn resume_after(
    steps: &str,
    first: &[(&str, R)],
    answers: &[Answer],
    then: &[(&str, R)],
) -> (Run, runbook_exec::resume::Replay) {
    let before = run_with(steps, first, answers, Options::default(), |_| {}).await;
    resume_from(steps, &before.events, then).await
}

/// Resume the run that recorded `events`, with `then` as the script.
async fn resume_from(
    steps: &str,
    events: &[Event],
    then: &[(&str, R)],
) -> (Run, runbook_exec::resume::Replay) {
    let yaml = format!("{HEAD}{steps}");
    let checked = runbook_core::check(&yaml, Some("t"));
    let (rb, plan) = checked.valid().unwrap();
    let replay = runbook_exec::resume::replay(rb, plan, &records(events)).unwrap();
    let sink = Arc::new(Recorder::default());
    let script = Script::new(then);
    let engine = engine(rb, plan, yes(), &sink, &[], &script).resuming(
        replay.restored.clone(),
        Event::Resumed {
            by: "test".into(),
            done: Vec::new(),
            inflight: Vec::new(),
            torn_bytes: 0,
            runbook_changed: false,
        },
    );
    let report = engine.run().await;
    let events = sink.0.lock().unwrap().clone();
    let run = Run {
        report,
        events,
        calls: script.calls(),
        script,
    };
    (run, replay)
}

#[tokio::test(start_paused = true)]
async fn resume_keeps_a_branch_route_and_the_values_it_read() {
    // The run chose `high` and stopped when `high2` failed; resumed, the probe and the
    // branch do not run again and `high2` reads the probe's capture from the journal.
    let steps = BRANCH.replace(
        "{ id: high2, kind: check, title: After high, shell: h2 }",
        "{ id: high2, kind: check, title: After high, shell: 'echo {{steps.probe.n}}' }",
    );
    let (r, replay) = resume_after(
        &steps,
        &[
            ("probe", R::Exit(0, "42")),
            ("high", ok()),
            ("high2", R::Exit(1, "")),
        ],
        &[],
        &[("high2", ok()), ("join", ok())],
    )
    .await;
    assert_eq!(replay.restored.len(), 3, "probe, decide, high");
    assert_eq!(r.report.status, RunStatus::Succeeded, "{:?}", r.statuses());
    assert_eq!(r.calls, ["high2", "join"]);
    assert_eq!(r.status("low"), Skipped);
    let rendered = r.events.iter().find_map(|e| match e {
        Event::StepStarted {
            step,
            action: Some(RenderedAction::Shell { run, .. }),
            ..
        } if step == "high2" => Some(run.clone()),
        _ => None,
    });
    assert_eq!(rendered.as_deref(), Some("echo 42"));
}

#[tokio::test(start_paused = true)]
async fn resume_keeps_an_operator_skip_and_asks_a_declined_act_again() {
    let steps = "steps:
  - { id: a, kind: act, title: A, shell: a }
  - { id: b, kind: act, title: B, shell: b }
  - { id: c, kind: check, title: C, shell: c }
";
    let (r, replay) = resume_after(
        steps,
        &[],
        &[Answer::Skip, Answer::Decline],
        &[("b", ok()), ("c", ok())],
    )
    .await;
    assert_eq!(replay.restored.len(), 1, "the skip of a is kept");
    assert_eq!(r.report.status, RunStatus::Succeeded);
    assert_eq!(r.calls, ["b", "c"], "a stays skipped, the declined b runs");
    assert_eq!(r.status("a"), Skipped);
}

#[tokio::test(start_paused = true)]
async fn resume_reports_a_killed_act_as_in_flight() {
    let steps = "steps:
  - { id: probe, kind: check, title: Probe, shell: p }
  - { id: fix, kind: act, title: Fix, shell: f, timeout: 1m }
";
    let yaml = format!("{HEAD}{steps}");
    let checked = runbook_core::check(&yaml, Some("t"));
    let (rb, plan) = checked.valid().unwrap();
    let before = run(steps, &[("probe", ok()), ("fix", R::Hang)]).await;
    let replay = runbook_exec::resume::replay(rb, plan, &records(&before.events)).unwrap();
    assert_eq!(
        replay.inflight,
        [runbook_exec::resume::Inflight {
            step: "fix".into(),
            killed: Some(Killed::Timeout)
        }]
    );
    assert_eq!(replay.restored.len(), 1, "the probe is done");
}

#[tokio::test(start_paused = true)]
async fn a_condition_that_cannot_be_evaluated_stops_the_run_without_routing() {
    let steps = "escalation:
  - { after: 0m, to: on-call }
steps:
  - id: used
    kind: check
    title: Used
    shell: u
    capture: { used: { json: '@' } }
    expect: used * 100 < 80
    retry: { attempts: 5, interval: 10s }
    on_fail: escalate
  - { id: after, kind: check, title: After, shell: a }
";
    let r = run(steps, &[("used", R::Exit(0, "\"730\""))]).await;
    assert_eq!(r.report.status, RunStatus::RunbookError);
    assert_eq!(r.calls, ["used"], "no retries");
    assert!(
        !r.events
            .iter()
            .any(|e| matches!(e, Event::Escalation { .. })),
        "nobody is paged for a typo"
    );
    let message = r.report.steps[0].message.clone().unwrap();
    assert!(message.starts_with("runbook error: "), "{message}");
    assert!(
        message.contains(":12:13: condition `used * 100 < 80`"),
        "{message}"
    );
    assert_eq!(r.status("after"), Pending);
}

/// The phase events of a run, as `(event, phase, elapsed ms, overrun/complete)` tuples.
fn phase_events(r: &Run) -> Vec<String> {
    r.events
        .iter()
        .filter_map(|e| match e {
            Event::PhaseStarted {
                phase, elapsed_ms, ..
            } => Some(format!("started {phase} at {elapsed_ms}")),
            Event::PhaseOverrun {
                phase, elapsed_ms, ..
            } => Some(format!("overrun {phase} at {elapsed_ms}")),
            Event::PhaseFinished {
                phase,
                elapsed_ms,
                overrun,
                complete,
                ..
            } => Some(format!(
                "finished {phase} at {elapsed_ms} overrun={overrun} complete={complete}"
            )),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn phases_are_timed_on_the_run_clock_and_an_overrun_is_marked_when_it_happens() {
    let steps = "phases:
  - { id: situation, title: Situation assessed, within: 5m }
  - { id: cause, title: Root cause found, within: 30m }
steps:
  - { id: scope, kind: check, title: Scope, phase: situation, shell: scope }
  - { id: alarms, kind: check, title: Alarms, phase: situation, shell: alarms }
  - { id: logs, kind: check, title: Logs, phase: cause, shell: logs }
  - { id: metrics, kind: check, title: Metrics, phase: cause, shell: metrics }
  - { id: after, kind: check, title: After, shell: after }
";
    let r = run(
        steps,
        &[
            ("scope", R::Slow(60_000)),
            ("alarms", R::Slow(60_000)),
            ("logs", R::Slow(20 * 60_000)),
            ("metrics", R::Slow(20 * 60_000)),
            ("after", ok()),
        ],
    )
    .await;
    assert_eq!(r.report.status, RunStatus::Succeeded);
    assert_eq!(
        phase_events(&r),
        [
            "started situation at 0",
            "finished situation at 120000 overrun=false complete=true",
            "started cause at 120000",
            "overrun cause at 1800000",
            "finished cause at 2520000 overrun=true complete=true",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_phase_skipped_by_a_branch_is_never_announced_and_a_stopped_run_closes_open_phases() {
    let steps = "phases:
  - { id: fix, title: Fixed, within: 10m }
  - { id: other, title: Other route, within: 10m }
steps:
  - { id: b, kind: branch, title: Which, cases: [{ when: 'true', goto: fix_it }], default: other_way }
  - { id: fix_it, kind: check, title: Fix, phase: fix, shell: fix }
  - { id: fix_more, kind: check, title: Fix more, phase: fix, shell: more }
  - { id: fix_last, kind: check, title: Fix last, phase: fix, shell: last }
  - { id: other_way, kind: check, title: Other, phase: other, shell: other }
";
    let r = run(
        steps,
        &[("fix_it", R::Slow(60_000)), ("fix_more", R::Exit(1, ""))],
    )
    .await;
    assert_eq!(r.report.status, RunStatus::Failed);
    assert_eq!(
        phase_events(&r),
        [
            "started fix at 0",
            "finished fix at 60000 overrun=false complete=false",
        ]
    );
}

/// A branch may ask whether an act ran (`"a" in steps`): it reads the steps before it,
/// never waits on itself or what follows (that deadlocked and then reported success).
#[tokio::test(start_paused = true)]
async fn a_branch_on_the_whole_steps_map_reads_the_steps_before_it() {
    let steps = r#"steps:
  - { id: a, kind: act, title: A, confirm: ok?, shell: a }
  - { id: v, kind: verify, title: V, shell: v }
  - id: b
    kind: branch
    title: Did the act run?
    cases: [{ when: '"a" in steps', goto: ran }]
    default: skipped_it
  - { id: ran, kind: check, title: Ran, shell: ran }
  - { id: skipped_it, kind: check, title: Skipped, shell: skipped }
"#;
    let script = [
        ("a", ok()),
        ("v", ok()),
        ("ran", ok()),
        ("skipped_it", ok()),
    ];
    let r = run_with(
        steps,
        &script,
        &[Answer::Approve],
        Options::default(),
        |_| {},
    )
    .await;
    assert_eq!(r.report.status, RunStatus::Succeeded);
    assert_eq!(r.status("ran"), Succeeded);
    assert_eq!(r.status("skipped_it"), Skipped);
    let r = run_with(steps, &script, &[Answer::Skip], Options::default(), |_| {}).await;
    assert_eq!(r.report.status, RunStatus::Succeeded);
    assert_eq!(r.status("ran"), Skipped);
    assert_eq!(r.status("skipped_it"), Succeeded);
}
