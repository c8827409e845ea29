//! The flagship runbook, `runbooks/db-connection-error.yaml`, run for real: the RDS
//! checks against moto through the real aws CLI, the PostgreSQL steps against a throwaway
//! PostgreSQL server saturated by long-running queries.
#![cfg(feature = "aws")]
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Postgres, aws_cli, aws_shim_dir, root, with_aws};

fn runbook(state: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runbook"));
    let path = format!(
        "{}:{}",
        aws_shim_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    with_aws(&mut cmd)
        .current_dir(root())
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .env("RUNBOOK_STATE_DIR", state)
        .stdin(Stdio::null());
    cmd
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Sessions running `pg_sleep`: the long queries the runbook must find and terminate.
struct Sleepers(Vec<Child>);

impl Drop for Sleepers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sessions that are connected and idle: psql waiting on a stdin that never sends.
fn idle(pg: &Postgres, n: usize) -> Sleepers {
    let idle = Sleepers(
        (0..n)
            .map(|_| {
                Command::new("psql")
                    .args([
                        "-h",
                        "127.0.0.1",
                        "-p",
                        &pg.port.to_string(),
                        "-U",
                        "postgres",
                        "-d",
                        "postgres",
                    ])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let count: usize = pg
            .sql("SELECT count(*) FROM pg_stat_activity WHERE state = 'idle' AND application_name = 'psql'")
            .parse()
            .unwrap();
        if count >= n {
            break idle;
        }
        assert!(Instant::now() < until, "the idle sessions did not connect");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn saturate(pg: &Postgres, n: usize) -> Sleepers {
    let sleepers = Sleepers(
        (0..n)
            .map(|_| {
                Command::new("psql")
                    .args([
                        "-h",
                        "127.0.0.1",
                        "-p",
                        &pg.port.to_string(),
                        "-U",
                        "postgres",
                        "-d",
                        "postgres",
                        "-c",
                        "SELECT pg_sleep(600)",
                    ])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let active: usize = pg
            .sql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%' AND now() - query_start > interval '1 second'")
            .parse()
            .unwrap();
        if active == n {
            break sleepers;
        }
        assert!(Instant::now() < until, "the sleepers did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn db_connection_error_finds_and_terminates_long_queries() {
    aws_cli(&[
        "rds",
        "create-db-instance",
        "--db-instance-identifier",
        "prod-db",
        "--db-instance-class",
        "db.t3.micro",
        "--engine",
        "postgres",
        "--master-username",
        "postgres",
        "--master-user-password",
        "not-a-real-password",
        "--allocated-storage",
        "20",
    ]);
    let pg = Postgres::start();
    let mut sleepers = saturate(&pg, 5);
    let mut idle_sessions = idle(&pg, 2);
    let state = tempfile::tempdir().unwrap();
    let port = format!("db_port={}", pg.port);
    let args = [
        "exec",
        "db-connection-error",
        "-p",
        "region=us-east-1",
        "-p",
        &port,
        "-p",
        "max_connections=5",
        "-p",
        "long_query_seconds=1",
    ];

    // Dry run first: the checks run live, the branch follows them, nothing is terminated.
    let out = runbook(state.path())
        .args(args)
        .arg("--dry-run")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("status = \"available\""), "{stdout}");
    assert!(stdout.contains("saturated → long_queries"), "{stdout}");
    assert!(
        stdout.contains("○ act    terminate not executed"),
        "{stdout}"
    );
    assert!(stdout.contains("pg_terminate_backend"), "{stdout}");
    assert!(
        sleepers
            .0
            .iter_mut()
            .all(|c| c.try_wait().unwrap().is_none()),
        "a dry run terminated a query"
    );

    // Live, with the act approved: the five long queries are terminated and the
    // verification sees the connections back under the limit.
    let out = runbook(state.path())
        .args(args)
        .args(["--yes", "--auto-manual"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("count = 8"),
        "five sleepers, two idle sessions and the probe itself:\n{stdout}"
    );
    assert!(stdout.contains("✓ act    terminate ok"), "{stdout}");
    assert!(stdout.contains("✓ verify recovered ok"), "{stdout}");
    assert!(stdout.contains("– act    pool_size skipped"), "{stdout}");
    let until = Instant::now() + Duration::from_secs(10);
    while !sleepers
        .0
        .iter_mut()
        .all(|c| c.try_wait().unwrap().is_some())
    {
        assert!(Instant::now() < until, "the long queries are still running");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Exactly the listed long queries went; the idle sessions are still connected.
    assert!(
        idle_sessions
            .0
            .iter_mut()
            .all(|c| c.try_wait().unwrap().is_none()),
        "an idle session was terminated"
    );
    drop(idle_sessions);

    // The record: verified, and the incident timeline names the change.
    let out = runbook(state.path())
        .args(["audit", "verify", "--all"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let out = runbook(state.path())
        .args(["audit", "show", "last", "--format", "markdown"])
        .output()
        .unwrap();
    let (md, _) = text(&out);
    assert!(
        md.contains("**terminate** Terminate the long-running queries — approved by --yes"),
        "{md}"
    );

    // An instance that does not exist: the first check fails and escalates.
    let out = runbook(state.path())
        .args([
            "exec",
            "db-connection-error",
            "-p",
            "region=us-east-1",
            "--yes",
            "--auto-manual",
            "-p",
            &port,
            "-p",
            "db_instance=missing-db",
        ])
        .output()
        .unwrap();
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("ESCALATE now:"), "{stdout}");
    assert!(stdout.contains("on-call (oncall@example.com)"), "{stdout}");
    assert!(stdout.contains("DBInstanceNotFound"), "{stdout}");
}

/// Saturated by idle sessions, with no long query: the run never asks to terminate
/// anything; it goes to the idle-session advice, and the verify passes once the
/// sessions are gone (they are closed when the advice has been acknowledged).
#[test]
fn db_connection_error_with_no_long_query_never_asks_to_terminate() {
    use std::io::BufRead;
    aws_cli(&[
        "rds",
        "create-db-instance",
        "--db-instance-identifier",
        "idle-db",
        "--db-instance-class",
        "db.t3.micro",
        "--engine",
        "postgres",
        "--master-username",
        "postgres",
        "--master-user-password",
        "not-a-real-password",
        "--allocated-storage",
        "20",
    ]);
    let pg = Postgres::start();
    let sessions = idle(&pg, 5);
    let state = tempfile::tempdir().unwrap();
    let port = format!("db_port={}", pg.port);
    let mut child = runbook(state.path())
        .args([
            "exec",
            "db-connection-error",
            "-p",
            "region=us-east-1",
            "-p",
            &port,
            "-p",
            "db_instance=idle-db",
            "-p",
            "max_connections=5",
            "-p",
            "long_query_seconds=1",
            "--yes",
            "--auto-manual",
            "--output",
            "json",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut events = Vec::new();
    let mut sessions = Some(sessions);
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let e: serde_json::Value = serde_json::from_str(&line).unwrap();
        // The advice was acknowledged: the leaking clients go away.
        if e["event"] == "step_finished" && e["step"] == "reduce_pool" {
            drop(sessions.take());
        }
        events.push(e);
    }
    let status = child.wait().unwrap();
    let path: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "step_started" && e["attempt"] == 1)
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    assert!(status.success(), "{path:?}\n{events:#?}");
    assert!(
        path.contains(&"idle_sessions") && path.contains(&"reduce_pool"),
        "{path:?}"
    );
    assert!(!path.contains(&"terminate"), "{path:?}");
    assert!(
        !events
            .iter()
            .any(|e| e["event"] == "asked" && e["step"] == "terminate"),
        "asked to terminate with no long query"
    );
    assert!(events.iter().any(|e| e["event"] == "step_finished"
        && e["step"] == "terminate"
        && e["status"] == "skipped"));
    assert_eq!(events.last().unwrap()["status"], "succeeded");
}
