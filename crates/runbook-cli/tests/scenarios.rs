//! `runbook test` end to end: scenario files with scripted results (nothing real runs),
//! coverage, replay of a recorded run, and the library's own scenarios.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output, Stdio};

use insta_cmd::assert_cmd_snapshot;

mod common;

use common::root;

fn runbook(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runbook"));
    cmd.current_dir(root())
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("RUNBOOK_PATH")
        .env_remove("RUNBOOK_LOG")
        .stdin(Stdio::null());
    cmd
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out: Output = runbook(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const FIXTURES: &str = "tests/fixtures/scenarios";

#[test]
fn passing_scenarios_with_full_coverage() {
    assert_cmd_snapshot!(runbook(&[
        "test",
        &format!("{FIXTURES}/deploy.test.yaml"),
        "--coverage"
    ]));
}

/// A runbook name finds the scenario file beside it on the search path.
#[test]
fn a_runbook_name_finds_its_scenarios() {
    let (code, out, err) = run(&["test", "deploy", "--dir", FIXTURES]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("5 scenarios: 5 passed, 0 failed"), "{out}");
    let (code, _, err) = run(&["test", "replay", "--dir", FIXTURES]);
    assert_eq!(code, 2);
    assert!(err.contains("has no scenarios: expected them in"), "{err}");
}

/// A failing scenario shows what differed, and the paths side by side.
#[test]
fn a_failing_scenario_shows_where_the_paths_part() {
    assert_cmd_snapshot!(runbook(&["test", &format!("{FIXTURES}/failing.test.yaml")]));
}

#[test]
fn json_output_for_tools() {
    let (code, out, _) = run(&[
        "test",
        &format!("{FIXTURES}/failing.test.yaml"),
        "--format",
        "json",
    ]);
    assert_eq!(code, 1);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["failed"], 1);
    let sc = &doc["scenarios"][0];
    assert_eq!(sc["passed"], false);
    assert_eq!(sc["parts_at"], 4);
    assert_eq!(sc["path"][3], "restart");
    assert_eq!(sc["expected_path"][3], "done");
}

/// Names, shapes and values that do not fit the runbook are diagnostics with
/// file:line:col, all at once, and nothing runs (exit 2).
#[test]
fn an_invalid_scenario_file_is_reported_with_locations() {
    assert_cmd_snapshot!(runbook(&["test", &format!("{FIXTURES}/invalid.test.yaml")]));
    // validate checks scenario files too.
    let (code, _, err) = run(&["validate", &format!("{FIXTURES}/invalid.test.yaml")]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid.test.yaml:7:7"), "{err}");
}

/// A step that would run without a scripted result fails the scenario, naming the step,
/// and its command never runs: the marker it would create stays absent.
#[test]
fn a_missing_result_fails_without_running_anything() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let scenario = dir.path().join("missing.test.yaml");
    std::fs::write(
        &scenario,
        format!(
            "runbook: {}\nscenarios:\n  - name: no result for the act\n    params: {{ marker: {} }}\n    yes: true\n    results:\n      health: {{ status: 200 }}\n      queue: {{ stdout: \"250\" }}\n",
            root().join(FIXTURES).join("deploy.yaml").display(),
            marker.display()
        ),
    )
    .unwrap();
    let (code, out, _) = run(&["test", &scenario.display().to_string()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("step `restart` would run, but the scenario has no result for it"),
        "{out}"
    );
    assert!(!marker.exists(), "the act ran");
}

/// A live run, then its journal as a regression test: the same file takes the same path
/// (exit 0); a copy whose branch condition changed does not (exit 1, naming the step).
#[test]
fn replay_a_recorded_run() {
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().display().to_string();
    let fixture = format!("{FIXTURES}/replay.yaml");
    let (code, out, err) = run(&["exec", &fixture, "--yes", "--state-dir", &state_dir]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(&["test", "--replay", "last", "--state-dir", &state_dir]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("usage → full → clean → after"), "{out}");

    let edited = state.path().join("replay.yaml");
    let text = std::fs::read_to_string(root().join(&fixture)).unwrap();
    std::fs::write(
        &edited,
        text.replace(
            "steps.usage.percent > params.threshold",
            "steps.usage.percent > 95",
        ),
    )
    .unwrap();
    let (code, out, err) = run(&[
        "test",
        "--replay",
        "last",
        &edited.display().to_string(),
        "--state-dir",
        &state_dir,
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("the path parts at step 3: the run went to `clean`, now `fine`"),
        "{out}"
    );
    assert!(out.contains("after `full`"), "{out}");
    assert!(out.contains("step `fine` would run, but run "), "{out}");

    // A journal that does not verify is refused.
    let journal = std::fs::read_dir(state.path().join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .next()
        .unwrap();
    let tampered = std::fs::read_to_string(&journal)
        .unwrap()
        .replace("\"echo 91\"", "\"echo 19\"");
    std::fs::write(&journal, tampered).unwrap();
    let (code, _, err) = run(&["test", "--replay", "last", "--state-dir", &state_dir]);
    assert_eq!(code, 2);
    assert!(err.contains("the journal does not verify"), "{err}");
}

/// The library's own scenarios: every one passes, and together they reach every step,
/// branch case and on_fail route of every runbook.
#[test]
fn the_library_scenarios_pass_with_full_coverage() {
    let (code, out, err) = run(&[
        "test",
        "--dir",
        "runbooks",
        "--coverage",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["failed"], 0);
    let coverage = doc["coverage"].as_array().unwrap();
    let runbooks = std::fs::read_dir(root().join("runbooks"))
        .unwrap()
        .filter(|e| {
            let name = e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .into_owned();
            name.ends_with(".yaml") && !name.ends_with(".test.yaml")
        })
        .count();
    assert_eq!(coverage.len(), runbooks, "every runbook has scenarios");
    for c in coverage {
        assert_eq!(c["reached"], c["total"], "{c:#}");
    }
}

/// A wrong field in a result shared through a YAML anchor is reported once per step it
/// is wrong for, not once per alias that uses it.
#[test]
fn a_wrong_field_in_an_anchor_is_reported_once_per_step() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("s.yaml"),
        "apiVersion: runbook/v1\nname: s\ntitle: S\nsteps:\n  - { id: a, kind: check, title: A, shell: \"true\" }\n  - { id: b, kind: check, title: B, shell: \"true\" }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("s.test.yaml"),
        "x-ok: &ok { exit_code: 0, status: 200 }\nscenarios:\n  - name: one\n    results: { a: *ok, b: *ok }\n  - name: two\n    results: { a: *ok, b: *ok }\n",
    )
    .unwrap();
    let file = dir.path().join("s.test.yaml");
    let (code, _, stderr) = run(&["test", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.matches("error[RB030]").count(), 2, "{stderr}");
    assert!(stderr.contains("s.test.yaml:1:27"), "{stderr}");
}

/// Replaying a run against another runbook is a mistake on the command line, said as such.
#[test]
fn replay_against_another_runbook_says_whose_run_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let rb = dir.path().join("p.yaml");
    std::fs::write(
        &rb,
        "apiVersion: runbook/v1\nname: p\ntitle: P\nsteps:\n  - { id: a, kind: check, title: A, shell: \"true\" }\n",
    )
    .unwrap();
    let out = runbook(&["exec", rb.to_str().unwrap()])
        .env("RUNBOOK_STATE_DIR", &state)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let out = runbook(&["test", "--replay", "last", "runbooks/disk-full.yaml"])
        .env("RUNBOOK_STATE_DIR", &state)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("was a run of `p`, not of `disk-full`"),
        "{stderr}"
    );
}
