//! `runbook diff`: semantic, risk-flagged differences between runbook versions, in three
//! formats, from two files or from a git revision.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};

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

const OLD: &str = "tests/fixtures/diff/old/cleanup.yaml";
const NEW: &str = "tests/fixtures/diff/new/cleanup.yaml";

/// Every kind of change and every risk flag, in each format.
#[test]
fn every_change_and_risk_in_three_formats() {
    assert_cmd_snapshot!("human", runbook(&["diff", OLD, NEW]));
    assert_cmd_snapshot!(
        "markdown",
        runbook(&["diff", OLD, NEW, "--format", "markdown"])
    );
    assert_cmd_snapshot!("json", runbook(&["diff", OLD, NEW, "--format", "json"]));
    let out = runbook(&["diff", OLD, NEW, "--format", "json"])
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&str> = doc[0]["risks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "new_act",
        "changed_act",
        "confirm_removed",
        "confirm_changed",
        "no_longer_act",
        "verify_removed",
        "check_removed_before_act",
        "on_fail_changed",
        "branch_changed",
        "new_raw_template",
        "mutating_check",
        "default_changes_act",
    ] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
}

/// Comments, key order, flow or block style and reflowed text are no difference.
#[test]
fn formatting_alone_is_no_difference() {
    let out = runbook(&["diff", OLD, "tests/fixtures/diff/reformatted/cleanup.yaml"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "no differences\n");
}

/// An invalid side is reported with its diagnostics, exit 2.
#[test]
fn an_invalid_side_is_reported() {
    let out = runbook(&["diff", OLD, "tests/fixtures/diff/invalid/cleanup.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tests/fixtures/diff/invalid/cleanup.yaml:33:15"),
        "{err}"
    );
    assert!(err.contains("is not a valid runbook"), "{err}");
}

/// The mermaid graph in the markdown diff parses with mermaid's own parser.
#[test]
fn the_markdown_graph_parses_with_mermaid() {
    let checker = root().join("tests/mermaid");
    assert!(
        checker.join("node_modules/mermaid").is_dir(),
        "mermaid is not installed in tests/mermaid: run ./scripts/test"
    );
    let out = runbook(&["diff", OLD, NEW, "--format", "markdown"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let graph = text
        .split("```mermaid\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a mermaid block");
    assert!(graph.contains("class s_inodes,s_freed removed"), "{graph}");
    let diagrams = serde_json::json!([{ "name": "diff", "text": graph }]);
    let mut node = Command::new("node")
        .arg("check.mjs")
        .current_dir(&checker)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node");
    {
        use std::io::Write;
        node.stdin
            .take()
            .unwrap()
            .write_all(diagrams.to_string().as_bytes())
            .unwrap();
    }
    let out = node.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mermaid rejected:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--base REV` compares every runbook changed since REV, without a checkout: changed,
/// added (committed or untracked), deleted and renamed files.
#[test]
fn base_compares_everything_changed_since_a_revision() {
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path();
    let books = dir.join("runbooks");
    std::fs::create_dir(&books).unwrap();
    let old = std::fs::read_to_string(root().join(OLD)).unwrap();
    let new = std::fs::read_to_string(root().join(NEW)).unwrap();
    let other = std::fs::read_to_string(root().join("examples/health-check.yaml")).unwrap();
    std::fs::write(books.join("cleanup.yaml"), &old).unwrap();
    std::fs::write(books.join("health-check.yaml"), &other).unwrap();
    std::fs::write(
        books.join("gone.yaml"),
        old.replace("name: cleanup", "name: gone"),
    )
    .unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "base"]);
    // A pull request: one changed, one deleted, one renamed, one added.
    std::fs::write(books.join("cleanup.yaml"), &new).unwrap();
    git(dir, &["rm", "-q", "runbooks/gone.yaml"]);
    git(
        dir,
        &["mv", "runbooks/health-check.yaml", "runbooks/health.yaml"],
    );
    std::fs::write(
        books.join("fresh.yaml"),
        old.replace("name: cleanup", "name: fresh"),
    )
    .unwrap();
    git(dir, &["commit", "-q", "-am", "change"]);
    // Untracked, too.
    std::fs::write(
        books.join("draft.yaml"),
        old.replace("name: cleanup", "name: draft"),
    )
    .unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .args(["diff", "--base", "main~1", "--format", "json"])
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("RUNBOOK_PATH")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let seen: Vec<(String, String)> = doc
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["path"].as_str().unwrap().to_string(),
                d["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [
        ("runbooks/cleanup.yaml", "changed"),
        ("runbooks/draft.yaml", "added"),
        ("runbooks/fresh.yaml", "added"),
        ("runbooks/gone.yaml", "deleted"),
        ("runbooks/health.yaml", "renamed"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(p, s)| ((*p).to_string(), (*s).to_string()))
        .collect();
    assert_eq!(seen, want);
    let renamed = doc
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["status"] == "renamed")
        .unwrap();
    assert_eq!(renamed["renamed_from"], "runbooks/health-check.yaml");

    // A revision that does not exist is a clear error.
    let out = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .args(["diff", "--base", "no-such-branch"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--base no-such-branch: no such git revision"),
        "{err}"
    );
}

/// Resuming a run whose runbook changed shows what changed, semantically, when git has
/// the version the run started with; `--force` still decides.
#[test]
fn resume_of_a_changed_runbook_shows_the_semantic_diff() {
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path();
    let file = dir.join("flaky.yaml");
    let text = "apiVersion: runbook/v1\nname: flaky\ntitle: Flaky\nsteps:\n  - id: probe\n    kind: check\n    title: Probe\n    shell: exit 1\n  - id: after\n    kind: check\n    title: After\n    shell: \"true\"\n";
    std::fs::write(&file, text).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "base"]);
    let state = dir.join("state");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_runbook"))
            .args(args)
            .arg("--state-dir")
            .arg(&state)
            .current_dir(dir)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = run(&["exec", "flaky.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    std::fs::write(&file, text.replace("shell: exit 1", "shell: exit 0")).unwrap();
    let out = run(&["resume", "last"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("what changed since the run started:"), "{err}");
    assert!(
        err.contains("command: $ exit [-1-] {+0+}"),
        "no word diff of the command in:\n{err}"
    );
    let out = run(&["resume", "last", "--force"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("command: $ exit [-1-] {+0+}"), "{err}");
}
