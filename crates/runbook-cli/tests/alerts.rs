//! Alerts start runbooks: `runbook match` and `runbook exec --alert` on fixture payloads
//! of every kind (SNS carrying a CloudWatch alarm, EventBridge, Alertmanager, generic
//! JSON), against the fixture runbooks of `tests/fixtures/alerts/runbooks`.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::root;
use insta_cmd::assert_cmd_snapshot;

const DIR: &str = "tests/fixtures/alerts/runbooks";

fn runbook(state: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runbook"));
    cmd.current_dir(root())
        .env("NO_COLOR", "1")
        .env("RUNBOOK_STATE_DIR", state)
        .env_remove("RUNBOOK_PATH")
        .args(["--dir", DIR])
        .stdin(Stdio::null());
    cmd
}

/// For snapshots: no state directory (match records nothing), so the recorded command
/// line is the same on every machine.
fn matcher() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runbook"));
    cmd.current_dir(root())
        .env("NO_COLOR", "1")
        .env_remove("RUNBOOK_PATH")
        .env_remove("RUNBOOK_STATE_DIR")
        .args(["--dir", DIR, "match"])
        .stdin(Stdio::null());
    cmd
}

fn payload(name: &str) -> String {
    format!("tests/fixtures/alerts/{name}.json")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn journals(state: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(state.join("runs"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

#[test]
fn match_every_payload_kind() {
    for name in [
        "sns-rds-connections",
        "sns-rds-resolved",
        "eventbridge-disk",
        "alertmanager",
        "webhook",
        "webhook-bad-param",
    ] {
        assert_cmd_snapshot!(format!("match__{name}"), matcher().arg(payload(name)));
    }
    assert_cmd_snapshot!(
        "match__json",
        matcher().args([&payload("alertmanager"), "--format", "json"])
    );
}

#[test]
fn payloads_that_are_not_alerts_exit_2_and_say_why() {
    let state = tempfile::tempdir().unwrap();
    for (name, why) in [
        ("not-json", "is not valid JSON"),
        (
            "unknown",
            "of no known kind: a JSON object without an alert name",
        ),
        (
            "sns-not-an-alarm",
            "whose message is not a CloudWatch alarm",
        ),
    ] {
        for cmd in [vec!["match"], vec!["exec", "--yes", "--alert"]] {
            let mut args = cmd.clone();
            let p = payload(name);
            args.push(&p);
            let out = runbook(state.path()).args(&args).output().unwrap();
            let (stdout, stderr) = text(&out);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stdout}{stderr}");
            assert!(stderr.contains(why), "{args:?}: {stderr}");
        }
    }
    assert!(journals(state.path()).is_empty(), "nothing started");
}

#[test]
fn exec_alert_runs_the_matching_runbook_with_the_alerts_params_and_records_the_alert() {
    let state = tempfile::tempdir().unwrap();
    let marker_dir = tempfile::tempdir().unwrap();
    let dir_param = format!("dir={}", marker_dir.path().display());
    let out = runbook(state.path())
        .args([
            "exec",
            "--alert",
            &payload("sns-rds-connections"),
            "--yes",
            "-p",
            &dir_param,
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("params db_instance=prod-db seen=185"),
        "{stdout}"
    );
    assert!(stdout.contains("Count connections on prod-db"), "{stdout}");
    assert!(marker_dir.path().join("acted").exists(), "the act ran live");
    let runs = journals(state.path());
    assert_eq!(runs.len(), 1);
    let first = std::fs::read_to_string(&runs[0]).unwrap();
    let started: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    assert_eq!(started["event"], "run_started");
    let alert = &started["alert"];
    assert_eq!(alert["name"], "rds-connections-high", "{first}");
    assert_eq!(alert["source"], "cloudwatch");
    assert_eq!(alert["state"], "firing");
    assert_eq!(alert["dimensions"]["DBInstanceIdentifier"], "prod-db");
}

#[test]
fn exec_alert_starts_nothing_for_resolved_unmatched_or_unusable_alerts() {
    let state = tempfile::tempdir().unwrap();
    // Resolved: nothing starts, exit 0, saying so.
    let out = runbook(state.path())
        .args(["exec", "--yes", "--alert", &payload("sns-rds-resolved")])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("nothing to start: no alert is firing: rds-connections-high (resolved)"),
        "{stdout}"
    );
    // Matches nothing (a named runbook that does not answer it): exit 0, saying so.
    let out = runbook(state.path())
        .args([
            "exec",
            "log-cleanup",
            "--yes",
            "--alert",
            &payload("sns-rds-connections"),
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains(
            "nothing to start: no runbook named log-cleanup answers rds-connections-high"
        ),
        "{stdout}"
    );
    // A parameter that fails its pattern: which and why, exit 2.
    let out = runbook(state.path())
        .args(["exec", "--yes", "--alert", &payload("webhook-bad-param")])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("alert disk_full cannot start disk-alert")
            && stderr.contains("parameter `host` from the alert: `` does not match the pattern"),
        "{stderr}"
    );
    // Two runbooks answer: name one.
    let out = runbook(state.path())
        .args(["exec", "--yes", "--alert", &payload("webhook")])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("2 runbooks answer this alert: disk-alert, log-cleanup"),
        "{stderr}"
    );
    assert!(journals(state.path()).is_empty(), "nothing started");
    // Named, it runs.
    let out = runbook(state.path())
        .args([
            "exec",
            "disk-alert",
            "--yes",
            "--alert",
            &payload("webhook"),
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("Usage on web-1"), "{stdout}");
}

/// The library answers the alarms of the operations design: each one starts the runbook
/// of its procedure, with the params the alarm gives (and nothing else matches).
/// A payload and, per alert in it, the runbook it starts and the params it gives.
type Expected<'a> = (&'a str, &'a [(&'a str, &'a [(&'a str, &'a str)])]);

#[test]
fn the_library_answers_the_seeds_alarms() {
    let cases: &[Expected] = &[
        (
            "sns-rds-connections",
            &[("db-connection-error", &[("db_instance", "prod-db")])],
        ),
        (
            "eventbridge-disk",
            &[("disk-full", &[("mount", "/"), ("threshold", "90")])],
        ),
        (
            "library/sns-rds-storage",
            &[("disk-full", &[("db_instance", "prod-db")])],
        ),
        (
            "library/sns-ecs-cpu-high",
            &[(
                "alb-slow-responses",
                &[
                    ("cluster", "portfolio-cluster"),
                    ("service", "portfolio-api-service"),
                ],
            )],
        ),
        (
            "library/eventbridge-response-time",
            &[("alb-slow-responses", &[])],
        ),
        (
            "library/eventbridge-alb-unhealthy",
            &[("alb-unhealthy-targets", &[])],
        ),
        ("library/sns-health-check", &[("app-not-responding", &[])]),
        (
            "library/eventbridge-dynamodb-throttle",
            &[("dynamodb-throttling", &[("table", "portfolio-users")])],
        ),
        (
            "library/alertmanager-error-rate-and-disk",
            &[
                ("outage-response", &[]),
                ("disk-full", &[("mount", "/var"), ("threshold", "90")]),
            ],
        ),
    ];
    for (payload_name, expected) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_runbook"))
            .current_dir(root())
            .env("NO_COLOR", "1")
            .env_remove("RUNBOOK_PATH")
            .args(["--dir", "runbooks", "match", "--format", "json"])
            .arg(payload(payload_name))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{payload_name}: {stderr}");
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let alerts = v["alerts"].as_array().unwrap();
        assert_eq!(alerts.len(), expected.len(), "{payload_name}: {stdout}");
        for (alert, (runbook, params)) in alerts.iter().zip(expected.iter()) {
            let matches = alert["matches"].as_array().unwrap();
            assert_eq!(matches.len(), 1, "{payload_name}: {stdout}");
            let m = &matches[0];
            assert_eq!(m["runbook"], *runbook, "{payload_name}: {stdout}");
            assert_eq!(m["starts"], true, "{payload_name}: {stdout}");
            let got = m["params"].as_object().unwrap();
            assert_eq!(got.len(), params.len(), "{payload_name}: {stdout}");
            for (k, want) in params.iter() {
                let value = match &got[*k] {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                assert_eq!(value, *want, "{payload_name} {k}: {stdout}");
            }
        }
    }
}

/// Two firing alerts answer one runbook, but the first gives a parameter it refuses: the
/// run is for the alert it accepts, without a warning about the other.
#[test]
fn exec_alert_runs_for_the_alert_whose_params_the_runbook_accepts() {
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let alert = |mount: &str, fingerprint: &str| {
        serde_json::json!({
            "status": "firing",
            "labels": {"alertname": "NodeFilesystemAlmostFull", "instance": "web-1:9100", "mountpoint": mount},
            "annotations": {"summary": "filesystem almost full", "threshold": "1"},
            "startsAt": "2026-12-05T03:02:00Z",
            "fingerprint": fingerprint
        })
    };
    let payload = serde_json::json!({
        "version": "4",
        "status": "firing",
        "receiver": "runbook",
        "groupLabels": {"alertname": "NodeFilesystemAlmostFull"},
        "alerts": [alert("relative/path", "01"), alert("/var/log", "02")]
    });
    let file = dir.path().join("two.json");
    std::fs::write(&file, payload.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .current_dir(root())
        .env("NO_COLOR", "1")
        .env("RUNBOOK_STATE_DIR", state.path())
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
        .env_remove("RUNBOOK_PATH")
        .args(["--dir", "runbooks", "exec", "--dry-run", "--alert"])
        .arg(&file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(
        stdout.contains("params mount=/var/log threshold=1"),
        "{stdout}{stderr}"
    );
    assert!(!stderr.contains("cannot start"), "{stderr}");
    assert!(
        !stderr.contains("firing alerts in this payload"),
        "{stderr}"
    );
}
