//! `runbook exec` end to end: the real binary running real commands from the runbooks in
//! `tests/fixtures/exec/`.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{only_journal, root};

fn fixture(name: &str) -> String {
    root()
        .join("tests/fixtures/exec")
        .join(format!("{name}.yaml"))
        .display()
        .to_string()
}

/// A state directory of its own for every run, so parallel tests never share locks.
fn fresh_state_dir() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    static BASE: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let base = BASE.get_or_init(|| tempfile::tempdir().unwrap());
    base.path()
        .join(N.fetch_add(1, Ordering::SeqCst).to_string())
}

fn runbook() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runbook"));
    cmd.current_dir(root())
        .env("NO_COLOR", "1")
        .env("RUNBOOK_STATE_DIR", fresh_state_dir())
        .env_remove("RUNBOOK_PATH")
        .stdin(Stdio::null());
    cmd
}

/// Run the binary with its journals and locks in `state`.
fn with_state(state: &Path, args: &[&str]) -> Output {
    let mut cmd = runbook();
    cmd.env("RUNBOOK_STATE_DIR", state).args(args);
    cmd.output().unwrap()
}

/// Run `runbook exec <fixture> -p dir=<dir> <args>`.
fn exec(name: &str, dir: &Path, args: &[&str]) -> Output {
    let mut cmd = runbook();
    cmd.arg("exec").arg(fixture(name));
    cmd.arg("-p").arg(format!("dir={}", dir.display()));
    cmd.args(args);
    cmd.output().expect("runbook runs")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn read_ns(dir: &Path, file: &str) -> u128 {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn independent_steps_run_concurrently_and_parallel_1_serialises() {
    let dir = tempfile::tempdir().unwrap();
    // Each waits (up to a minute) for the other two to start: they can only all end if
    // they run at the same time.
    let out = exec(
        "concurrent",
        dir.path(),
        &["--parallel", "4", "-p", "wait=1200"],
    );
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let d = dir.path();
    // Every pair overlapped: each started before the other ended.
    for (x, y) in [("a", "b"), ("b", "c"), ("a", "c")] {
        assert!(read_ns(d, &format!("{x}.start")) < read_ns(d, &format!("{y}.end")));
        assert!(read_ns(d, &format!("{y}.start")) < read_ns(d, &format!("{x}.end")));
    }
    // `done` needs all three, so it starts after every one ended.
    for x in ["a", "b", "c"] {
        assert!(read_ns(d, &format!("{x}.end")) <= read_ns(d, "done.start"));
    }

    let dir = tempfile::tempdir().unwrap();
    let out = exec("concurrent", dir.path(), &["--parallel", "1"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let d = dir.path();
    // In list order, one at a time: no overlap at all.
    assert!(read_ns(d, "a.end") <= read_ns(d, "b.start"));
    assert!(read_ns(d, "b.end") <= read_ns(d, "c.start"));
}

#[test]
fn every_on_fail_route() {
    let run = |route: &str| {
        let dir = tempfile::tempdir().unwrap();
        let out = exec("routes", dir.path(), &["-p", &format!("route={route}")]);
        let files: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        (code(&out), text(&out).0, files)
    };
    let (c, out, files) = run("abort");
    assert_eq!(c, 1, "{out}");
    assert!(files.is_empty(), "{files:?}");
    assert!(out.contains("✗ check  fail_abort failed"), "{out}");
    assert!(out.contains("exit code 3"), "{out}");
    assert!(out.contains("routes failed in"), "{out}");

    let (c, out, files) = run("continue");
    assert_eq!(c, 0, "{out}");
    assert_eq!(files, ["after"]);
    assert!(out.contains("exit code 4: no luck"), "{out}");

    let (c, out, files) = run("escalate");
    assert_eq!(c, 1, "{out}");
    assert!(files.is_empty());
    assert!(out.contains("ESCALATE now:"), "{out}");
    assert!(out.contains("on-call (oncall@example.com)"), "{out}");
    assert!(out.contains("next: operations lead at 30m"), "{out}");

    let (c, out, files) = run("goto");
    assert_eq!(c, 0, "{out}");
    assert_eq!(files, ["handler"]);
    assert!(out.contains("fail_goto → handler (on_fail)"), "{out}");
}

#[test]
fn retry_from_loops_a_bounded_number_of_times() {
    let dir = tempfile::tempdir().unwrap();
    let out = exec("retry-from", dir.path(), &["-p", "recover_after=3"]);
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let n = std::fs::read_to_string(dir.path().join("investigations")).unwrap();
    assert_eq!(n.lines().count(), 3);
    assert!(dir.path().join("reported").exists());

    let dir = tempfile::tempdir().unwrap();
    let out = exec("retry-from", dir.path(), &["-p", "recover_after=100"]);
    let (stdout, _) = text(&out);
    assert_eq!(code(&out), 1, "{stdout}");
    let n = std::fs::read_to_string(dir.path().join("investigations")).unwrap();
    assert_eq!(n.lines().count(), 4, "the first run and 3 rounds");
    assert!(
        stdout.contains("gave up after 3 rounds from investigate"),
        "{stdout}"
    );
    assert!(!dir.path().join("reported").exists());
}

#[test]
fn verify_polls_until_the_third_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let out = exec("poll", dir.path(), &[]);
    let (stdout, _) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}");
    let n = std::fs::read_to_string(dir.path().join("polls")).unwrap();
    assert_eq!(n.lines().count(), 3);
    assert!(stdout.contains("attempt 1/5"), "{stdout}");
    assert!(stdout.contains("attempt 2/5"), "{stdout}");
    assert!(!stdout.contains("attempt 3/5"), "{stdout}");
    // The full output once; later attempts show only the lines that changed.
    assert_eq!(
        stdout.matches("│ checking the counter").count(),
        1,
        "{stdout}"
    );
    for n in ["│ 1", "│ 2", "│ 3"] {
        assert!(stdout.contains(n), "{n}: {stdout}");
    }
}

/// Only acts that ran are changes; the rest are listed as changes not made.
#[test]
fn audit_lists_changes_not_made_apart() {
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = with_state(
        state.path(),
        &[
            "exec",
            &fixture("acts"),
            "--dry-run",
            "-p",
            &format!("dir={}", dir.path().display()),
        ],
    );
    assert_eq!(code(&out), 0, "{:?}", text(&out));
    let md = text(&with_state(
        state.path(),
        &["audit", "show", "last", "--format", "markdown"],
    ))
    .0;
    assert!(
        md.contains("## Changes made\n\nNothing was changed."),
        "{md}"
    );
    assert!(
        md.contains("## Changes not made\n\n- **change** Change db-1: not executed (dry run)"),
        "{md}"
    );
}

/// Whether a process exists and is not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

fn wait_dead(pid: i32) -> bool {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let out = exec("timeout", dir.path(), &[]);
    let (stdout, _) = text(&out);
    assert_eq!(code(&out), 1, "{stdout}");
    assert!(stdout.contains("timed out"), "{stdout}");
    assert!(!dir.path().join("never").exists());
    for file in ["leader.pid", "child.pid"] {
        let pid: i32 = std::fs::read_to_string(dir.path().join(file))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(wait_dead(pid), "{file} {pid} outlived the step");
    }
}

#[test]
fn branches_converge() {
    for (big, arm) in [("false", "small"), ("true", "big")] {
        let dir = tempfile::tempdir().unwrap();
        let out = exec("converge", dir.path(), &["-p", &format!("big={big}")]);
        assert_eq!(code(&out), 0, "{:?}", text(&out));
        let arms = std::fs::read_to_string(dir.path().join("arms")).unwrap();
        assert_eq!(arms, format!("{arm}\njoin\n"));
    }
}

#[test]
fn captures_of_every_type() {
    let out = runbook()
        .args(["exec", &fixture("captures")])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}{stderr}");
    assert!(stdout.contains(r#"ids = ["x","y"]"#), "{stdout}");
    assert!(stdout.contains(r#"pct = "93""#), "{stdout}");
    assert_eq!(stdout.matches("→ true").count(), 8, "{stdout}");
}

#[test]
fn runtime_failures_name_the_step_and_what_went_wrong() {
    let cases = [
        (
            "capture",
            "✗ check  not_an_int failed",
            "capture `n`: expected an integer; the output was `twelve`",
        ),
        (
            "missing_command",
            "✗ check  no_such_command failed",
            "missing tool `definitely-not-a-command`: not found on PATH (exit code 127)",
        ),
        (
            "flood",
            "✗ check  flood failed",
            "output beyond 1 MiB is neither shown nor kept",
        ),
    ];
    for (case, head, message) in cases {
        let out = runbook()
            .args([
                "exec",
                &fixture("bad-runtime"),
                "-p",
                &format!("case={case}"),
            ])
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        assert_eq!(code(&out), 1, "{case}: {stderr}");
        assert!(stdout.contains(head), "{case}: {stdout}");
        assert!(stdout.contains(message), "{case}: {message}");
        assert!(stdout.contains("STEP "), "{case}: summary printed");
        assert!(stdout.contains("bad-runtime failed in"), "{case}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        // A flood is cut, not kept: far less than the 100 MB printed.
        assert!(stdout.len() < 3 << 20, "{case}: {} bytes", stdout.len());
    }
}

/// A runbook that calls a program this machine lacks says so before anything runs, by
/// name and with the steps that call it; a dry run too.
#[test]
fn missing_tools_are_listed_before_the_run() {
    for dry in [true, false] {
        let mut args = vec![
            "exec".to_string(),
            fixture("bad-runtime"),
            "-p".into(),
            "case=missing_command".into(),
        ];
        if dry {
            args.push("--dry-run".into());
        }
        let out = runbook().args(&args).output().unwrap();
        let (stdout, stderr) = text(&out);
        assert!(
            stderr.contains(
                "warning: missing tools: not found on PATH: definitely-not-a-command (step no_such_command)"
            ),
            "dry run {dry}: {stderr}"
        );
        assert!(!stderr.contains("fold ("), "fold is installed: {stderr}");
        assert!(
            stdout.contains("missing tool `definitely-not-a-command`"),
            "{stdout}"
        );
    }
}

/// A condition that cannot be evaluated is a bug in the runbook, not an incident: the step
/// fails at once (no retries), its `on_fail: escalate` is not taken, the message says
/// where the expression is and what it read, and the run ends with exit 2.
#[test]
fn a_broken_condition_is_a_runbook_error_and_pages_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yaml");
    std::fs::write(
        &file,
        "apiVersion: runbook/v1\nname: broken\ntitle: A typo in a condition\n\
         escalation:\n  - { after: 0m, to: on-call }\nsteps:\n\
         \x20 - id: used\n    kind: check\n    title: Disk used\n    shell: echo '\"730144440\"'\n\
         \x20   capture: { used: { json: '@' } }\n\
         \x20   expect: used * 100 < 80\n    retry: { attempts: 5, interval: 10s }\n\
         \x20   on_fail: escalate\n",
    )
    .unwrap();
    let out = runbook().arg("exec").arg(&file).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stdout}{stderr}");
    assert!(stdout.contains("runbook error:"), "{stdout}");
    assert!(stdout.contains("broken.yaml:12:13:"), "{stdout}");
    assert!(
        stdout.contains("no matching overload for '_*_' applied to (string, int)"),
        "{stdout}"
    );
    assert!(stdout.contains("used = \"730144440\""), "{stdout}");
    assert!(!stdout.contains("String("), "{stdout}");
    assert!(!stdout.contains("ESCALATE"), "{stdout}");
    assert!(!stdout.contains("attempt 1/5"), "no retries: {stdout}");
    assert!(
        stdout.contains("stopped: the runbook has an error"),
        "{stdout}"
    );
}

#[test]
fn injection_strings_in_params_stay_literal() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let evil = format!("x'; touch {}; echo '", marker.display());
    let evil2 = format!("$(touch {})", marker.display());
    for value in [evil, evil2] {
        let out = exec(
            "acts",
            dir.path(),
            &["--yes", "-p", &format!("target={value}")],
        );
        assert_eq!(code(&out), 0, "{:?}", text(&out));
        assert!(!marker.exists(), "injection ran for {value}");
        let written = std::fs::read_to_string(dir.path().join("changed")).unwrap();
        assert_eq!(written.trim_end(), value);
    }
}

#[test]
fn dry_run_never_executes_an_act() {
    let dir = tempfile::tempdir().unwrap();
    let out = exec("acts", dir.path(), &["--dry-run"]);
    let (stdout, _) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}");
    assert!(!dir.path().join("changed").exists());
    assert!(!dir.path().join("second").exists());
    assert!(stdout.contains("DRY RUN"), "{stdout}");
    assert!(stdout.contains("confirm: Really change db-1?"), "{stdout}");
    assert!(stdout.contains("○ act    change not executed"), "{stdout}");
    assert!(stdout.contains("… verify changed pending"), "{stdout}");
    // The check before the acts ran live.
    assert!(stdout.contains("look │ looking at db-1"), "{stdout}");
    assert!(stdout.contains("dry run of acts succeeded"), "{stdout}");
}

#[test]
fn acts_without_a_terminal_or_yes_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = exec("acts", dir.path(), &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 2);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("refusing to run acts: steps change, second need an operator's answer and stdin is not a terminal"),
        "{stderr}"
    );
    assert!(stderr.contains("--yes"), "{stderr}");
}

/// A value too large for an integer says so (not "expected an integer"), and a name
/// given twice warns which value counts.
#[test]
fn an_integer_out_of_range_and_a_repeated_param_are_explained() {
    let out = runbook()
        .args([
            "exec",
            "runbooks/db-connection-error.yaml",
            "--dry-run",
            "-p",
            "db_port=99999999999999999999",
        ])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(
        stderr.contains("`99999999999999999999` is out of range for an integer"),
        "{stderr}"
    );
    let out = runbook()
        .args([
            "exec",
            "runbooks/db-connection-error.yaml",
            "-p",
            "db_port=1",
            "-p",
            "db_instance=a",
            "-p",
            "db_instance=bad name;rm",
        ])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(
        stderr.contains(
            "--param db_instance is given more than once; the last value counts: db_instance=bad name;rm"
        ),
        "{stderr}"
    );
}

#[test]
fn bad_params_are_all_reported_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = runbook()
        .args([
            "exec",
            "runbooks/db-connection-error.yaml",
            "--dry-run",
            "-p",
            "db_instanse=x",
            "-p",
            "db_port=fifty",
            "-p",
            "db_instance=bad name;rm",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("3 problems with its parameters"),
        "{stderr}"
    );
    assert!(
        stderr.contains("unknown parameter `db_instanse`"),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean `db_instance`"), "{stderr}");
    assert!(
        stderr.contains("parameter `db_port` from --param: expected an integer, got `fifty`"),
        "{stderr}"
    );
    assert!(stderr.contains("does not match the pattern"), "{stderr}");

    let out = exec("retry-from", dir.path(), &[]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 2);
    assert!(
        stderr.contains("missing required parameter `recover_after` (The probe succeeds from this investigation on): give --param recover_after=VALUE"),
        "{stderr}"
    );

    let file = dir.path().join("params.yaml");
    std::fs::write(&file, "recover_after: 1\nrounds: 2\n").unwrap();
    let out = exec(
        "retry-from",
        dir.path(),
        &["--params-file", file.to_str().unwrap()],
    );
    assert_eq!(code(&out), 0, "{:?}", text(&out));

    std::fs::write(&file, "- not a mapping\n").unwrap();
    let out = exec(
        "retry-from",
        dir.path(),
        &["--params-file", file.to_str().unwrap()],
    );
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 2);
    assert!(
        stderr.contains("expected a mapping of parameter names to values"),
        "{stderr}"
    );
}

#[test]
fn json_output_is_one_event_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = exec("converge", dir.path(), &["--output", "json"]);
    assert_eq!(code(&out), 0);
    let (stdout, _) = text(&out);
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"run_started"));
    assert_eq!(kinds.last(), Some(&"run_finished"));
    let finished = events.last().unwrap();
    assert_eq!(finished["status"], "succeeded");
    assert_eq!(finished["exit_code"], 0);
    assert_eq!(finished["summary"]["succeeded"], 4);
    assert_eq!(finished["summary"]["skipped"], 1);
    assert!(
        events
            .iter()
            .all(|e| e["ts"].as_str().is_some_and(|t| t.ends_with('Z')))
    );
    let decision = events.iter().find(|e| e["event"] == "decision").unwrap();
    assert_eq!(decision["goto"], "small_arm");
    assert_eq!(decision["skips"], serde_json::json!(["big_arm"]));
    // Snapshot with the run-dependent values normalised.
    let normalised: Vec<serde_json::Value> = events
        .into_iter()
        .map(|mut e| {
            let obj = e.as_object_mut().unwrap();
            obj.remove("ts");
            // Present inside a git checkout, absent in a source tarball.
            obj.remove("git_dirty");
            if obj["event"] == "run_started" {
                obj.insert("git_commit".into(), "[..]".into());
            }
            for key in ["duration_ms", "run_id", "path", "git_commit", "operator"] {
                if obj.contains_key(key) {
                    obj.insert(key.into(), "[..]".into());
                }
            }
            if let Some(p) = obj.get_mut("params").and_then(|p| p.as_object_mut()) {
                p.insert("dir".into(), "[dir]".into());
            }
            let text = serde_json::to_string(&e)
                .unwrap()
                .replace(&dir.path().display().to_string(), "[dir]");
            serde_json::from_str(&text).unwrap()
        })
        .collect();
    insta::assert_json_snapshot!("converge_events", normalised);
}

#[test]
fn human_output_snapshot() {
    let out = runbook()
        .args(["exec", &fixture("captures")])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0);
    let (stdout, _) = text(&out);
    let durations = regex::Regex::new(r"\b\d+(\.\d+)?(ms|s)\b").unwrap();
    let run_id = regex::Regex::new(r"run \d{8}-\d{4}-\w+-[0-9a-f]{4}").unwrap();
    let stdout = durations.replace_all(&stdout, "[t]");
    let stdout = run_id.replace_all(&stdout, "run [id]");
    let journal = regex::Regex::new(r"journal \S+").unwrap();
    let stdout = journal.replace_all(&stdout, "journal [path]");
    // The summary table's column widths depend on the durations; collapse runs of spaces.
    let spaces = regex::Regex::new(r" {2,}").unwrap();
    let stdout = spaces.replace_all(&stdout, "  ");
    insta::assert_snapshot!("captures_human", stdout);
}

#[test]
fn interrupt_stops_scheduling_then_kills_and_exits_130() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    use std::io::{BufRead, BufReader};

    let dir = tempfile::tempdir().unwrap();
    let mut child = runbook()
        .args(["exec", &fixture("signal"), "-p"])
        .arg(format!("dir={}", dir.path().display()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    let mut wait_for = |what: &str| {
        for line in lines.by_ref() {
            let line = line.unwrap();
            let found = line.contains(what);
            seen.push(line);
            if found {
                return;
            }
        }
        panic!("no `{what}` in\n{}", seen.join("\n"));
    };
    wait_for("long │ started");
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
    kill(pid, Signal::SIGINT).unwrap();
    // The first interrupt lets the running step go on.
    wait_for("interrupted: no new steps start");
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited on the first Ctrl-C"
    );
    kill(pid, Signal::SIGINT).unwrap();
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    let all = format!("{}\n{}", seen.join("\n"), rest.join("\n"));
    assert_eq!(status.code(), Some(130), "{all}");
    assert!(all.contains("interrupted: no new steps start"), "{all}");
    assert!(
        all.contains("interrupted: killing running commands"),
        "{all}"
    );
    assert!(all.contains("signal interrupted in"), "{all}");
    assert!(!dir.path().join("after").exists());
    let leader: i32 = std::fs::read_to_string(dir.path().join("leader.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(wait_dead(leader), "the step's shell outlived the interrupt");
}

#[test]
fn http_action_retries_until_the_server_recovers() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let rt = tokio::runtime::Runtime::new().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    {
        let hits = Arc::clone(&hits);
        let seen = Arc::clone(&seen);
        let app = axum::Router::new().route(
            "/health",
            axum::routing::get(
                move |headers: axum::http::HeaderMap, uri: axum::http::Uri| {
                    let hits = Arc::clone(&hits);
                    let seen = Arc::clone(&seen);
                    async move {
                        let n = hits.fetch_add(1, Ordering::SeqCst);
                        seen.lock().unwrap().push(format!(
                            "{} {}",
                            uri,
                            headers
                                .get("x-probe")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                        ));
                        if n == 0 {
                            (
                                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                                "boom".to_string(),
                            )
                        } else {
                            (axum::http::StatusCode::OK, r#"{"status":"ok"}"#.to_string())
                        }
                    }
                },
            ),
        );
        rt.spawn(async move { axum::serve(listener, app).await });
    }
    let out = runbook()
        .args(["exec", &fixture("http"), "-p"])
        .arg(format!("base=http://{addr}"))
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}{stderr}");
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert!(
        stdout.contains("HTTP 500 Internal Server Error"),
        "{stdout}"
    );
    assert!(stdout.contains("attempt 1/3"), "{stdout}");
    assert!(stdout.contains(r#"state = "ok""#), "{stdout}");
    let seen = seen.lock().unwrap();
    // The parameter was percent-encoded into the URL; the header was sent.
    assert_eq!(seen[0], "/health?name=a%20b%2Fc runbook");

    // A server that is not there: a clear message, exit 1.
    drop(rt);
    let out = runbook()
        .args(["exec", &fixture("http"), "-p"])
        .arg(format!("base=http://{addr}"))
        .output()
        .unwrap();
    let (stdout, _) = text(&out);
    assert_eq!(code(&out), 1, "{stdout}");
    assert!(
        stdout.contains(&format!("request to http://{addr}/health")),
        "{stdout}"
    );
}

mod pty {
    use super::*;
    use expectrl::session::OsSession as Session;
    use expectrl::{Eof, Expect};

    fn session(dir: &Path) -> Session {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_runbook"));
        cmd.current_dir(root())
            .env("NO_COLOR", "1")
            .env("RUNBOOK_STATE_DIR", fresh_state_dir())
            .env("TERM", "dumb")
            .args(["exec", &fixture("acts"), "-p"])
            .arg(format!("dir={}", dir.display()));
        let mut s = Session::spawn(cmd).expect("spawn in a pty");
        s.set_expect_timeout(Some(Duration::from_secs(30)));
        s
    }

    fn finish(mut s: Session) -> (i32, String) {
        let rest = s.expect(Eof).expect("runbook ends");
        let text = String::from_utf8_lossy(rest.as_bytes()).into_owned();
        let status = format!("{:?}", s.get_process().wait().unwrap());
        // `Exited(Pid(123), 3)`
        let code = status
            .strip_prefix("Exited(")
            .and_then(|r| r.rsplit_once(", "))
            .and_then(|(_, c)| c.trim_end_matches(')').parse().ok())
            .unwrap_or_else(|| panic!("{status}"));
        (code, text)
    }

    #[test]
    fn yes_runs_the_act() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = session(dir.path());
        let before = s.expect("Really change db-1? [y/N/skip/abort]").unwrap();
        // The command and the confirm text are printed once before the question.
        let shown = String::from_utf8_lossy(before.before()).into_owned();
        assert_eq!(shown.matches("$ echo db-1 >").count(), 1, "{shown}");
        assert_eq!(shown.matches("Really change db-1?").count(), 0, "{shown}");
        s.send_line("y").unwrap();
        s.expect("Run this step? [y/N/skip/abort]").unwrap();
        s.send_line("yes").unwrap();
        let (code, text) = finish(s);
        assert_eq!(code, 0, "{text}");
        assert!(dir.path().join("changed").exists());
        assert!(dir.path().join("second").exists());
    }

    #[test]
    fn no_declines_and_exits_3() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = session(dir.path());
        s.expect("Really change db-1? [y/N/skip/abort]").unwrap();
        s.send_line("N").unwrap();
        let (code, text) = finish(s);
        assert_eq!(code, 3, "{text}");
        assert!(text.contains("declined by the operator"), "{text}");
        assert!(!dir.path().join("changed").exists());
    }

    #[test]
    fn skip_leaves_the_act_out_and_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = session(dir.path());
        s.expect("Really change db-1? [y/N/skip/abort]").unwrap();
        s.send_line("y").unwrap();
        s.expect("Run this step? [y/N/skip/abort]").unwrap();
        s.send_line("skip").unwrap();
        let (code, text) = finish(s);
        // second_done fails (nothing was changed) and continues.
        assert_eq!(code, 0, "{text}");
        assert!(dir.path().join("changed").exists());
        assert!(!dir.path().join("second").exists());
        assert!(text.contains("skipped by the operator"), "{text}");
    }

    #[test]
    fn abort_stops_the_run_and_exits_3() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = session(dir.path());
        s.expect("Really change db-1? [y/N/skip/abort]").unwrap();
        s.send_line("what").unwrap();
        s.expect("answer y, n, skip or abort").unwrap();
        s.send_line("abort").unwrap();
        let (code, text) = finish(s);
        assert_eq!(code, 3, "{text}");
        assert!(text.contains("aborted by the operator"), "{text}");
        assert!(!dir.path().join("changed").exists());
    }

    #[test]
    fn an_act_killed_by_an_abort_is_never_rerun_unasked() {
        let state = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_runbook"));
        cmd.current_dir(root())
            .env("NO_COLOR", "1")
            .env("RUNBOOK_STATE_DIR", state.path())
            .env("TERM", "dumb")
            .args(["exec", &fixture("killed-act"), "-p"])
            .arg(format!("dir={}", dir.path().display()));
        let mut s = Session::spawn(cmd).expect("spawn in a pty");
        s.set_expect_timeout(Some(Duration::from_secs(60)));
        s.expect("Run this step? [y/N/skip/abort]").unwrap();
        s.send_line("y").unwrap();
        // The manual step is asked once the act has started (its check waits for that).
        s.expect("manual look").unwrap();
        s.expect("Done? [y/N/skip/abort]").unwrap();
        s.send_line("abort").unwrap();
        let (code, text) = finish(s);
        assert_eq!(code, 3, "{text}");
        assert!(text.contains("outcome unknown"), "{text}");
        super::resume::killed_act_is_not_rerun(
            state.path(),
            dir.path(),
            "abort",
            &["--auto-manual"],
        );
    }
}

mod audit {
    use super::*;

    /// A journal written by format 1 (before typed replay records) still verifies and
    /// shows as it did; resume explains why it cannot continue it.
    #[test]
    fn a_format_1_journal_verifies_and_shows_and_resume_explains() {
        let state = tempfile::tempdir().unwrap();
        let runs = state.path().join("runs");
        std::fs::create_dir_all(&runs).unwrap();
        let id = "20261120-0310-acts-1a2b";
        std::fs::copy(
            root().join(format!("tests/fixtures/journals/{id}.jsonl")),
            runs.join(format!("{id}.jsonl")),
        )
        .unwrap();
        let out = with_state(state.path(), &["audit", "verify", id]);
        assert_eq!(code(&out), 0, "{:?}", text(&out));
        let shown = text(&with_state(state.path(), &["audit", "show", id])).0;
        assert!(shown.contains("approved by --yes"), "{shown}");
        assert!(shown.contains("✓ verify second_done ok"), "{shown}");
        let md = text(&with_state(
            state.path(),
            &["audit", "show", id, "--format", "markdown"],
        ))
        .0;
        assert!(md.contains("by --yes"), "{md}");
        assert!(md.contains("| Operator | alice@ops-1 |"), "{md}");
        let out = with_state(state.path(), &["resume", id]);
        let (_, stderr) = text(&out);
        assert_eq!(code(&out), 2, "{stderr}");
        assert!(stderr.contains("the journal is format 1"), "{stderr}");
        assert!(stderr.contains("resume it with runbook 0.1.0"), "{stderr}");
    }

    fn recorded_run(state: &Path, dir: &Path) -> PathBuf {
        let out = with_state(
            state,
            &[
                "exec",
                &fixture("acts"),
                "--yes",
                "-p",
                &format!("dir={}", dir.display()),
            ],
        );
        assert_eq!(code(&out), 0, "{:?}", text(&out));
        only_journal(state)
    }

    #[test]
    fn list_show_and_verify_a_run() {
        let state = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let journal = recorded_run(state.path(), dir.path());
        let id = journal.file_stem().unwrap().to_string_lossy().into_owned();

        let out = with_state(state.path(), &["audit", "list"]);
        let (stdout, _) = text(&out);
        assert_eq!(code(&out), 0);
        assert!(stdout.starts_with("RUN "), "{stdout}");
        assert!(
            stdout.contains(&id) && stdout.contains("succeeded (0)"),
            "{stdout}"
        );

        let out = with_state(state.path(), &["audit", "verify", "last"]);
        let (stdout, _) = text(&out);
        assert_eq!(code(&out), 0, "{stdout}");
        assert!(stdout.contains("chain intact"), "{stdout}");

        let out = with_state(
            state.path(),
            &["audit", "show", &id[..12], "--format", "json"],
        );
        assert_eq!(code(&out), 0, "{:?}", text(&out));
        let records: Vec<serde_json::Value> = text(&out)
            .0
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            records.len(),
            std::fs::read_to_string(&journal).unwrap().lines().count()
        );
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r["seq"], i);
        }

        let out = with_state(state.path(), &["audit", "show", "last"]);
        let (stdout, _) = text(&out);
        assert!(stdout.contains("▶ act    change  Change db-1"), "{stdout}");

        // Normalise what differs between runs and machines, then snapshot all three formats.
        let norm = |s: &str| {
            let s = s.replace(&dir.path().display().to_string(), "[dir]");
            let s = s.replace(&id, "[run]");
            let s = s.replace(&root().display().to_string(), "[root]");
            let stamp = regex::Regex::new(r"\d{4}-\d\d-\d\dT[\d:.]+Z").unwrap();
            let s = stamp.replace_all(&s, "[ts]").into_owned();
            let time = regex::Regex::new(r"\d{2}:\d{2}:\d{2}").unwrap();
            let s = time.replace_all(&s, "[time]").into_owned();
            let dur = regex::Regex::new(r"\b\d+(\.\d+)?(ms|s)\b").unwrap();
            let s = dur.replace_all(&s, "[t]").into_owned();
            let git = regex::Regex::new(r"git [0-9a-f]{12}( with uncommitted changes)?").unwrap();
            let s = git.replace_all(&s, "git [commit]").into_owned();
            let op = regex::Regex::new(r"\w+@[\w.-]+").unwrap();
            op.replace_all(&s, "[operator]").into_owned()
        };
        let out = with_state(
            state.path(),
            &["audit", "show", "last", "--format", "markdown"],
        );
        let (md, _) = text(&out);
        assert!(md.contains("## Changes made"), "{md}");
        insta::assert_snapshot!("audit_markdown", norm(&md));
        insta::assert_snapshot!("audit_human", norm(&stdout));
        let spaces = regex::Regex::new(r#""(duration_ms|ts|hash|prev|run_id|path|git_commit|git_dirty|operator|sha256)":("[^"]*"|\d+|true|false)"#).unwrap();
        let json = spaces
            .replace_all(
                &text(&with_state(
                    state.path(),
                    &["audit", "show", "last", "--format", "json"],
                ))
                .0,
                "\"$1\":\"[..]\"",
            )
            .into_owned();
        insta::assert_snapshot!("audit_json", norm(&json));
    }

    #[test]
    fn verify_names_the_first_bad_record() {
        let state = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let journal = recorded_run(state.path(), dir.path());
        let good: Vec<String> = std::fs::read_to_string(&journal)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        let write = |lines: &[String]| std::fs::write(&journal, lines.join("\n") + "\n").unwrap();
        let verify = || {
            let out = with_state(state.path(), &["audit", "verify", "--all"]);
            (code(&out), text(&out).0)
        };

        let mut edited = good.clone();
        edited[4] = edited[4].replacen("\"step\":\"", "\"step\":\"x", 1);
        write(&edited);
        let (c, out) = verify();
        assert_eq!(c, 1, "{out}");
        assert!(out.contains("first bad record 4 (line 5)"), "{out}");
        assert!(out.contains("changed after it was written"), "{out}");

        let mut deleted = good.clone();
        deleted.remove(6);
        write(&deleted);
        let (c, out) = verify();
        assert_eq!(c, 1);
        assert!(out.contains("first bad record 6"), "{out}");

        let mut reordered = good.clone();
        reordered.swap(2, 3);
        write(&reordered);
        let (c, out) = verify();
        assert_eq!(c, 1);
        assert!(out.contains("first bad record 2"), "{out}");

        let mut text_ = good.join("\n") + "\n";
        text_.truncate(text_.len() - 30);
        std::fs::write(&journal, &text_).unwrap();
        let (c, out) = verify();
        assert_eq!(c, 1);
        assert!(
            out.contains(&format!("first bad record {}", good.len() - 1)),
            "{out}"
        );
        assert!(out.contains("cut short"), "{out}");

        write(&good);
        assert_eq!(verify().0, 0);
    }

    #[test]
    fn unknown_runs_and_foreign_files_are_clear_errors() {
        let state = tempfile::tempdir().unwrap();
        let out = with_state(state.path(), &["audit", "show", "last"]);
        assert_eq!(code(&out), 2);
        assert!(
            text(&out).1.contains("no runs recorded in"),
            "{:?}",
            text(&out)
        );

        let runs = state.path().join("runs");
        std::fs::create_dir_all(&runs).unwrap();
        std::fs::write(runs.join("notes.txt"), "ignored").unwrap();
        std::fs::write(runs.join("20990101-0000-foreign-0000.jsonl"), "hello\n").unwrap();
        std::fs::write(
            runs.join("20990102-0000-newer-0000.jsonl"),
            "{\"v\":9,\"seq\":0,\"event\":\"future\",\"hash\":\"0000000000000000000000000000000000000000000000000000000000000000\"}\n",
        )
        .unwrap();
        let out = with_state(state.path(), &["audit", "list"]);
        let (stdout, stderr) = text(&out);
        assert_eq!(code(&out), 0, "{stderr}");
        assert!(stdout.contains("not a run journal"), "{stdout}");
        assert!(stdout.contains("journal format 9 is newer"), "{stdout}");
        assert!(!stdout.contains("notes"), "{stdout}");

        let out = with_state(state.path(), &["audit", "show", "nope"]);
        assert_eq!(code(&out), 2);
        assert!(
            text(&out).1.contains("unknown run `nope`: 2 runs recorded"),
            "{:?}",
            text(&out)
        );

        let out = with_state(state.path(), &["audit", "verify", "--all"]);
        assert_eq!(code(&out), 1);
    }

    #[test]
    fn an_unwritable_state_dir_stops_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "").unwrap();
        let out = with_state(
            &file,
            &[
                "exec",
                &fixture("acts"),
                "--yes",
                "-p",
                &format!("dir={}", dir.path().display()),
            ],
        );
        let (stdout, stderr) = text(&out);
        assert_eq!(code(&out), 2, "{stdout}");
        assert!(stderr.contains("cannot create"), "{stderr}");
        assert!(!dir.path().join("changed").exists());
    }

    #[test]
    fn a_second_run_on_the_same_lock_is_refused_while_the_first_lives() {
        use std::io::{BufRead, BufReader};
        let state = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut first = runbook()
            .env("RUNBOOK_STATE_DIR", state.path())
            .args(["exec", &fixture("signal"), "--operator", "alice", "-p"])
            .arg(format!("dir={}", dir.path().display()))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(first.stdout.take().unwrap()).lines();
        for line in lines.by_ref() {
            if line.unwrap().contains("long │ started") {
                break;
            }
        }
        let second = with_state(
            state.path(),
            &[
                "exec",
                &fixture("signal"),
                "-p",
                &format!("dir={}", dir.path().display()),
                "-p",
                "seconds=0",
            ],
        );
        let (_, stderr) = text(&second);
        assert_eq!(code(&second), 2, "{stderr}");
        assert!(
            stderr.contains("refusing to run signal: `signal` is locked by run"),
            "{stderr}"
        );
        assert!(stderr.contains("of alice (pid"), "{stderr}");

        // A dead holder's lock is taken over, with a warning.
        first.kill().unwrap();
        first.wait().unwrap();
        let third = with_state(
            state.path(),
            &[
                "exec",
                &fixture("signal"),
                "-p",
                &format!("dir={}", dir.path().display()),
                "-p",
                "seconds=0",
            ],
        );
        let (_, stderr) = text(&third);
        assert_eq!(code(&third), 0, "{stderr}");
        assert!(stderr.contains("took over the lock `signal`"), "{stderr}");
    }
}

mod resume {
    use super::*;
    use std::io::{BufRead, BufReader};

    /// Start the 10-step runbook, SIGKILL it once `stop_at` says so, resume it, and check
    /// that every act ran exactly once and the journal verifies. The resume's output, and
    /// the records the killed run left.
    fn crash_and_resume(
        stop_at: &dyn Fn(&str, usize) -> bool,
        hold_long: bool,
    ) -> (String, Vec<serde_json::Value>) {
        let state = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        // `long` runs until `go` exists: held, it is surely in flight when killed.
        if !hold_long {
            std::fs::write(dir.path().join("go"), "").unwrap();
        }
        let dir_param = format!("dir={}", dir.path().display());
        let mut child = runbook()
            .env("RUNBOOK_STATE_DIR", state.path())
            .args(["exec", &fixture("crash"), "--yes", "-p", &dir_param])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut finished = 0;
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if line.starts_with('✓') {
                finished += 1;
            }
            if stop_at(&line, finished) {
                break;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        std::fs::write(dir.path().join("go"), "").unwrap();

        // The journal of a killed run verifies.
        let out = with_state(state.path(), &["audit", "verify", "last"]);
        assert_eq!(code(&out), 0, "{:?}", text(&out));

        // An act in flight is the operator's call: here the counter file tells.
        let records = text(&with_state(
            state.path(),
            &["audit", "show", "last", "--format", "json"],
        ))
        .0;
        let records: Vec<serde_json::Value> = records
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect();
        let mut open: Vec<String> = Vec::new();
        for r in &records {
            let step = r["step"].as_str().unwrap_or_default().to_string();
            match r["event"].as_str() {
                Some("step_started") => open.push(step),
                Some("step_finished") => open.retain(|s| *s != step),
                _ => {}
            }
        }
        let mut args = vec!["resume", "last", "--yes"];
        let mut done = Vec::new();
        for id in open.iter().filter(|id| id.starts_with('a')) {
            if dir.path().join(id).exists() {
                done.push(id.clone());
            } else {
                args.push("--rerun-inflight-acts");
            }
        }
        for id in &done {
            args.push("--inflight-done");
            args.push(id);
        }
        let out = with_state(state.path(), &args);
        let (stdout, stderr) = text(&out);
        assert_eq!(code(&out), 0, "{stdout}{stderr}");
        assert!(stdout.contains("resumed by"), "{stdout}");
        for act in ["a1", "a2", "a3", "a4"] {
            let n = std::fs::read_to_string(dir.path().join(act)).unwrap();
            assert_eq!(
                n.lines().count(),
                1,
                "{act} ran {} times\n{stdout}",
                n.lines().count()
            );
        }
        let out = with_state(state.path(), &["audit", "verify", "last"]);
        assert_eq!(code(&out), 0, "{:?}", text(&out));
        assert!(!text(&out).0.contains("no run_finished"));
        (stdout, records)
    }

    #[test]
    fn sigkill_at_every_step_boundary_then_resume_runs_every_act_once() {
        for boundary in 1..=9 {
            crash_and_resume(&|_, finished| finished >= boundary, false);
        }
    }

    #[test]
    fn sigkill_in_the_middle_of_a_long_step_then_resume() {
        let (out, _) = crash_and_resume(&|line, _| line.contains("long │ sleeping"), true);
        assert!(out.contains("long: run again (read-only)"), "{out}");
    }

    /// Records of checks are synced in groups, but each is written before it is shown:
    /// a SIGKILL in the middle of a group (a check's output line after the act before it
    /// synced) loses none of them.
    #[test]
    fn sigkill_mid_group_loses_no_record_that_was_shown() {
        let (_, records) = crash_and_resume(&|line, _| line.contains("long │ sleeping"), true);
        let shown = records
            .iter()
            .any(|r| r["event"] == "output" && r["step"] == "long" && r["line"] == "sleeping");
        assert!(shown, "{records:?}");
        assert!(
            records
                .iter()
                .any(|r| r["event"] == "step_started" && r["step"] == "long"),
            "{records:?}"
        );
    }

    #[test]
    fn an_inflight_act_is_never_rerun_unasked() {
        let state = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("go"), "").unwrap();
        // Forge the situation exactly: a journal whose act started and never finished.
        let out = with_state(
            state.path(),
            &[
                "exec",
                &fixture("crash"),
                "--yes",
                "-p",
                &format!("dir={}", dir.path().display()),
            ],
        );
        assert_eq!(code(&out), 0);
        let journal = only_journal(state.path());
        let lines: Vec<String> = std::fs::read_to_string(&journal)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        let cut = lines
            .iter()
            .position(|l| l.contains("\"event\":\"answered\"") && l.contains("\"step\":\"a3\""))
            .unwrap();
        std::fs::write(&journal, lines[..=cut].join("\n") + "\n").unwrap();
        let out = with_state(state.path(), &["resume", "last", "--yes"]);
        let (_, stderr) = text(&out);
        assert_eq!(code(&out), 2, "{stderr}");
        assert!(
            stderr.contains("act `a3` was running when the run stopped"),
            "{stderr}"
        );
        assert!(stderr.contains("--inflight-done a3"), "{stderr}");
        // The audit lists it as a change whose outcome is unknown.
        let md = text(&with_state(
            state.path(),
            &["audit", "show", "last", "--format", "markdown"],
        ))
        .0;
        assert!(
            md.contains("**a3** Act 3 — OUTCOME UNKNOWN: was running when the run stopped"),
            "{md}"
        );
        // A step that is not such an act is a typo, not silently ignored.
        let out = with_state(
            state.path(),
            &[
                "resume",
                "last",
                "--yes",
                "--inflight-done",
                "a3",
                "--inflight-done",
                "a1",
            ],
        );
        assert_eq!(code(&out), 2);
        assert!(
            text(&out)
                .1
                .contains("--inflight-done a1: `a1` is not an act whose outcome is unknown"),
            "{:?}",
            text(&out)
        );
        // Asked and answered: counted as done, so it does not run a second time.
        let out = with_state(
            state.path(),
            &["resume", "last", "--yes", "--inflight-done", "a3"],
        );
        assert_eq!(code(&out), 0, "{:?}", text(&out));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a3"))
                .unwrap()
                .lines()
                .count(),
            1
        );
    }

    fn lines_in(dir: &Path, file: &str) -> usize {
        std::fs::read_to_string(dir.join(file)).map_or(0, |t| t.lines().count())
    }

    /// A killed act's outcome is unknown: resume without a decision is refused naming it,
    /// `--inflight-done` counts it as done without running it again, and what follows runs.
    pub(super) fn killed_act_is_not_rerun(state: &Path, dir: &Path, killed: &str, flags: &[&str]) {
        assert_eq!(lines_in(dir, "count"), 1, "the act did not start once");
        let shown = text(&with_state(state, &["audit", "show", "last"])).0;
        assert!(shown.contains(killed), "{shown}");
        assert!(shown.contains("outcome unknown"), "{shown}");
        let md = text(&with_state(
            state,
            &["audit", "show", "last", "--format", "markdown"],
        ))
        .0;
        assert!(md.contains("**change** OUTCOME UNKNOWN"), "{md}");
        let json = text(&with_state(
            state,
            &["audit", "show", "last", "--format", "json"],
        ))
        .0;
        assert!(
            json.lines().any(|l| l.contains("\"step_finished\"")
                && l.contains("\"step\":\"change\"")
                && l.contains(&format!("\"killed\":\"{killed}\""))),
            "{json}"
        );

        let mut args = vec!["resume", "last", "--yes"];
        args.extend_from_slice(flags);
        let out = with_state(state, &args);
        let (stdout, stderr) = text(&out);
        assert_eq!(code(&out), 2, "{stdout}{stderr}");
        assert!(stderr.contains("act `change` was killed"), "{stderr}");
        assert!(stderr.contains("--inflight-done change"), "{stderr}");
        assert_eq!(lines_in(dir, "count"), 1);

        args.extend_from_slice(&["--inflight-done", "change"]);
        let out = with_state(state, &args);
        let (stdout, stderr) = text(&out);
        assert_eq!(code(&out), 0, "{stdout}{stderr}");
        assert!(stdout.contains("change: counted as done"), "{stdout}");
        assert_eq!(lines_in(dir, "count"), 1, "the killed act ran again");
        assert_eq!(lines_in(dir, "after"), 1);
        assert!(!dir.join("done").exists());
        let out = with_state(state, &["audit", "verify", "last"]);
        assert_eq!(code(&out), 0, "{:?}", text(&out));
    }

    #[test]
    fn an_act_killed_by_the_second_interrupt_is_never_rerun_unasked() {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;

        let state = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut child = runbook()
            .env("RUNBOOK_STATE_DIR", state.path())
            .args([
                "exec",
                &fixture("killed-act"),
                "--yes",
                "--auto-manual",
                "-p",
            ])
            .arg(format!("dir={}", dir.path().display()))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
        let mut seen = Vec::new();
        let mut sent = 0;
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            // The act is running and everything else that can run has run.
            let next = (sent == 0 && line.contains("look ok"))
                || (sent == 1 && line.contains("interrupted: no new steps start"));
            seen.push(line);
            if next {
                kill(pid, Signal::SIGINT).unwrap();
                sent += 1;
            }
        }
        let status = child.wait().unwrap();
        let all = seen.join("\n");
        assert_eq!(status.code(), Some(130), "{all}");
        assert!(all.contains("outcome unknown"), "{all}");
        killed_act_is_not_rerun(state.path(), dir.path(), "interrupt", &["--auto-manual"]);
    }

    #[test]
    fn an_act_killed_at_its_timeout_is_never_rerun_unasked() {
        let state = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = runbook()
            .env("RUNBOOK_STATE_DIR", state.path())
            .args(["exec", &fixture("timed-out-act"), "--yes", "-p"])
            .arg(format!("dir={}", dir.path().display()))
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        assert_eq!(code(&out), 1, "{stdout}{stderr}");
        assert!(stdout.contains("timed out"), "{stdout}");
        killed_act_is_not_rerun(state.path(), dir.path(), "timeout", &[]);
    }

    /// Resuming without a terminal is refused only for questions it will actually ask: a
    /// manual step on the route a finished branch did not take does not count.
    #[test]
    fn resume_without_a_terminal_counts_only_reachable_questions() {
        let state = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dir_param = format!("dir={}", dir.path().display());
        let route = fixture("route-manual");
        let out = with_state(
            state.path(),
            &["exec", &route, "--auto-manual", "-p", &dir_param],
        );
        assert_eq!(code(&out), 1, "{:?}", text(&out));
        // Without --auto-manual, a new run is refused: `call` might be asked.
        let out = with_state(state.path(), &["exec", &route, "-p", &dir_param]);
        assert_eq!(code(&out), 2);
        assert!(text(&out).1.contains("call"), "{:?}", text(&out));
        // The branch chose `fix`: resuming it asks nothing, so it goes on.
        std::fs::write(dir.path().join("ok"), "").unwrap();
        let out = with_state(state.path(), &["resume", "last"]);
        let (stdout, stderr) = text(&out);
        assert_eq!(code(&out), 0, "{stdout}{stderr}");
        assert!(stdout.contains("✓ check  fix ok"), "{stdout}");
    }

    /// `audit show` gives the kind of a step that never started (skipped by a branch), from
    /// the runbook file while it is still the one the run read.
    #[test]
    fn audit_show_names_the_kind_of_a_skipped_step() {
        let state = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ok"), "").unwrap();
        let out = with_state(
            state.path(),
            &[
                "exec",
                &fixture("route-manual"),
                "--auto-manual",
                "-p",
                &format!("dir={}", dir.path().display()),
            ],
        );
        assert_eq!(code(&out), 0, "{:?}", text(&out));
        let (stdout, _) = text(&with_state(state.path(), &["audit", "show", "last"]));
        assert!(
            stdout.contains("– check  call skipped: decide chose another route"),
            "{stdout}"
        );
    }

    /// `resume last` after a dry run: refused, naming the live run it most likely meant;
    /// that run resumes under a header that says which run goes on.
    #[test]
    fn resume_last_after_a_dry_run_names_the_run_to_resume() {
        let state = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dir_param = format!("dir={}", dir.path().display());
        let route = fixture("route-manual");
        let out = with_state(
            state.path(),
            &["exec", &route, "--auto-manual", "-p", &dir_param],
        );
        assert_eq!(code(&out), 1, "{:?}", text(&out));
        let live = only_journal(state.path());
        let live_id = live.file_stem().unwrap().to_string_lossy().to_string();
        let out = with_state(
            state.path(),
            &["exec", &route, "--dry-run", "-p", &dir_param],
        );
        assert_eq!(code(&out), 1, "{:?}", text(&out));
        let out = with_state(state.path(), &["resume", "last"]);
        let (_, stderr) = text(&out);
        assert_eq!(code(&out), 2, "{stderr}");
        assert!(
            stderr.contains(&format!("`runbook resume {live_id}`")),
            "{stderr}"
        );
        std::fs::write(dir.path().join("ok"), "").unwrap();
        let out = with_state(state.path(), &["resume", &live_id]);
        let (stdout, stderr) = text(&out);
        assert_eq!(code(&out), 0, "{stdout}{stderr}");
        assert!(
            stdout.contains(&format!("run {live_id} (resumed)")),
            "{stdout}"
        );
    }

    #[test]
    fn a_changed_runbook_is_refused_unless_forced() {
        let state = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("go"), "").unwrap();
        let copy = dir.path().join("crash.yaml");
        std::fs::copy(fixture("crash"), &copy).unwrap();
        let out = with_state(
            state.path(),
            &[
                "exec",
                copy.to_str().unwrap(),
                "--yes",
                "-p",
                &format!("dir={}", dir.path().display()),
            ],
        );
        assert_eq!(code(&out), 0);
        // Pretend it failed half-way: drop everything after a2 finished.
        let journal = only_journal(state.path());
        let lines: Vec<String> = std::fs::read_to_string(&journal)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        let cut = lines
            .iter()
            .position(|l| l.contains("step_finished") && l.contains("\"step\":\"a2\""))
            .unwrap();
        std::fs::write(&journal, lines[..=cut].join("\n") + "\n").unwrap();
        let text_ = std::fs::read_to_string(&copy).unwrap();
        std::fs::write(
            &copy,
            text_.replace(
                "id: done, kind: check, title: Done",
                "id: finished, kind: check, title: Finished",
            ),
        )
        .unwrap();
        let out = with_state(state.path(), &["resume", "last", "--yes"]);
        let (_, stderr) = text(&out);
        assert_eq!(code(&out), 2, "{stderr}");
        assert!(stderr.contains("changed since the run started"), "{stderr}");
        assert!(
            stderr.contains("steps added: finished; steps removed: done"),
            "{stderr}"
        );
        let out = with_state(state.path(), &["resume", "last", "--yes", "--force"]);
        assert_eq!(code(&out), 0, "{:?}", text(&out));
        for act in ["a1", "a2"] {
            assert_eq!(
                std::fs::read_to_string(dir.path().join(act))
                    .unwrap()
                    .lines()
                    .count(),
                1
            );
        }
        let out = with_state(state.path(), &["resume", "last"]);
        assert_eq!(code(&out), 0);
        assert!(
            text(&out).0.contains("already succeeded"),
            "{:?}",
            text(&out)
        );
    }
}

#[test]
fn multibyte_output_captures_and_secrets() {
    // Japanese, a 4-byte emoji and a combining mark in the secret.
    let token = "秘密🔑トークンe\u{301}xyz";
    let state = tempfile::tempdir().unwrap();
    for output in ["human", "json"] {
        let out = runbook()
            .env("RUNBOOK_STATE_DIR", state.path())
            .env("RB_TEST_TOKEN", token)
            .args(["exec", &fixture("multibyte"), "--output", output])
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        let shown = format!("{stdout}{stderr}");
        assert_eq!(code(&out), 0, "{}", runbook_core_tail(&shown));
        assert!(shown.contains("テスト🚀e\u{301}"), "split read");
        assert!(
            shown.contains("bad \u{fffd}\u{fffd} bytes"),
            "invalid UTF-8 shown as U+FFFD"
        );
        assert!(shown.contains("190"), "regex capture");
        for part in ["秘", "秘密", "🔑", "トークン", "xyz"] {
            assert!(
                !shown.contains(part),
                "{output}: `{part}` of the secret is shown"
            );
        }
    }
    for entry in std::fs::read_dir(state.path().join("runs")).unwrap() {
        let journal = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for part in ["秘", "🔑", "トークン"] {
            assert!(
                !journal.contains(part),
                "`{part}` of the secret is in the journal"
            );
        }
    }
}

/// The end of a long output, for an assertion message.
fn runbook_core_tail(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    chars[chars.len().saturating_sub(3000)..].iter().collect()
}

#[test]
fn secrets_never_reach_output_json_or_the_journal() {
    let token = "tkn-4f1b2c3d9e";
    let password = "pw-Zx81!kq";
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("params.yaml");
    std::fs::write(&file, format!("password: '{password}'\n")).unwrap();
    for output in ["human", "json"] {
        let out = runbook()
            .env("RUNBOOK_STATE_DIR", state.path())
            .env("RB_TEST_TOKEN", token)
            .args([
                "exec",
                &fixture("secrets"),
                "--params-file",
                file.to_str().unwrap(),
                "--output",
                output,
            ])
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        assert_eq!(code(&out), 0, "{stdout}{stderr}");
        for secret in [token, password] {
            assert!(!stdout.contains(secret), "{output}: {stdout}");
            assert!(!stderr.contains(secret), "{output}: {stderr}");
        }
        assert!(stdout.contains("token=*** password=***"), "{stdout}");
    }
    let mut recorded = String::new();
    for entry in std::fs::read_dir(state.path().join("runs")).unwrap() {
        recorded.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    assert!(recorded.contains("again ***"), "{recorded}");
    assert!(!recorded.contains(token) && !recorded.contains(password));
}

/// Output is masked a line at a time: a secret that spans lines (a private key) is
/// hidden line by line.
#[test]
fn multi_line_secrets_are_masked_line_by_line() {
    let lines = ["MIIEvQIBADANBgkqhkiG9w0B", "c2VjcmV0LWxpbmUtdHdv"];
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("multiline-secret.yaml");
    std::fs::write(
        &book,
        "apiVersion: runbook/v1\nname: multiline-secret\ntitle: A key printed line by line\n\
         params:\n  key: { type: secret }\nsteps:\n  - id: show\n    kind: check\n\
         \x20   title: Print the key\n    shell: printf '%s\\n' {{params.key}}\n",
    )
    .unwrap();
    let params = dir.path().join("params.yaml");
    std::fs::write(
        &params,
        format!(
            "key: |\n  -----BEGIN KEY-----\n  {}\n  {}\n  -----END KEY-----\n",
            lines[0], lines[1]
        ),
    )
    .unwrap();
    for output in ["human", "json"] {
        let out = runbook()
            .env("RUNBOOK_STATE_DIR", state.path())
            .args(["exec", book.to_str().unwrap(), "--params-file"])
            .arg(&params)
            .args(["--output", output])
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        assert_eq!(code(&out), 0, "{stdout}{stderr}");
        for line in lines {
            assert!(!stdout.contains(line), "{output}: {stdout}");
            assert!(!stderr.contains(line), "{output}: {stderr}");
        }
        assert!(stdout.matches("***").count() >= 4, "{output}: {stdout}");
    }
    for entry in std::fs::read_dir(state.path().join("runs")).unwrap() {
        let recorded = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in lines {
            assert!(!recorded.contains(line), "{recorded}");
        }
    }
}

#[test]
fn from_starts_at_a_step_and_runs_the_producers_it_needs() {
    let out = runbook()
        .args(["exec", &fixture("captures"), "--from", "builtins"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}{stderr}");
    assert!(
        stderr.contains("--from builtins: also running lines, int, text first"),
        "{stderr}"
    );
    for skipped in ["float", "bool", "json", "regex"] {
        assert!(
            stdout.contains(&format!(
                "– check  {skipped} skipped: before --from builtins"
            )),
            "{stdout}"
        );
    }
    assert!(stdout.contains("✓ check  builtins ok"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    let out = exec("crash", dir.path(), &["--from", "a3", "--yes"]);
    let (stdout, _) = text(&out);
    // v4 checks a2's file, which a run from a3 never wrote: files are not values.
    assert_eq!(code(&out), 1, "{stdout}");
    assert!(!dir.path().join("a1").exists() && !dir.path().join("a2").exists());
    assert!(dir.path().join("a3").exists() && dir.path().join("a4").exists());

    let out = exec("crash", dir.path(), &["--from", "nope", "--yes"]);
    assert_eq!(code(&out), 2);
    assert!(
        text(&out)
            .1
            .contains("--from nope: crash has no step `nope`")
    );
}

/// Phases are shown as they start with the time left, an overrun is marked, and the
/// incident timeline has each phase against its budget. (A `0s` budget overruns at once,
/// so nothing here depends on how fast the machine is.)
#[test]
fn phases_show_time_left_mark_an_overrun_and_reach_the_timeline() {
    let state = fresh_state_dir();
    let out = with_state(&state, &["exec", &fixture("phases")]);
    let (stdout, stderr) = text(&out);
    assert_eq!(code(&out), 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("━━ Step 1: situation assessed (within 1h00m: ")
            && stdout.contains(" left)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("━━ Step 1: situation assessed: done at ") && stdout.contains("to spare)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("━━ OVERRUN: Step 2: recovered was due within 0ms"),
        "{stdout}"
    );
    assert!(
        stdout.contains("━━ Step 2: recovered: done at ")
            && stdout.contains("OVERRAN its 0ms budget"),
        "{stdout}"
    );
    let journal = std::fs::read_to_string(only_journal(&state)).unwrap();
    for event in [
        "\"phase_started\"",
        "\"phase_overrun\"",
        "\"phase_finished\"",
    ] {
        assert!(journal.contains(event), "{event} not journaled:\n{journal}");
    }
    let md = with_state(&state, &["audit", "show", "last", "--format", "markdown"]);
    let (md, _) = text(&md);
    let table = md
        .split("## Phases")
        .nth(1)
        .and_then(|t| t.split("## Timeline").next())
        .unwrap_or_else(|| panic!("no Phases section:\n{md}"));
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| Step")).collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(
        rows[0].contains("(`situation`) | 1h00m |") && rows[0].contains("within budget"),
        "{table}"
    );
    assert!(
        rows[1].contains("(`recovery`) | 0ms |") && rows[1].contains("**OVERRAN** by"),
        "{table}"
    );
    let verify = with_state(&state, &["audit", "verify", "last"]);
    assert_eq!(code(&verify), 0, "{}", text(&verify).1);
}
