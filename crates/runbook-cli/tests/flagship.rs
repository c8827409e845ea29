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
    let state = tempfile::tempdir().unwrap();
    let port = format!("db_port={}", pg.port);
    let args = [
        "exec",
        "db-connection-error",
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
        stdout.contains("count = 6"),
        "five sleepers and the probe itself:\n{stdout}"
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
