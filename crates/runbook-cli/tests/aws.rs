//! AWS steps against a real moto server on 127.0.0.1, driven through the real binary and
//! set up with the real aws CLI. moto and the aws CLI come from `.venv` (`scripts/test`
//! installs them); the server starts once for this test binary and stops with it.
#![cfg(feature = "aws")]
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{aws_cli, only_journal, root, with_aws};

fn runbook(state: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runbook"));
    with_aws(&mut cmd)
        .current_dir(root())
        .env("NO_COLOR", "1")
        .env("RUNBOOK_STATE_DIR", state)
        .stdin(Stdio::null());
    cmd
}

fn fixture(name: &str) -> String {
    root()
        .join("tests/fixtures/aws")
        .join(format!("{name}.yaml"))
        .display()
        .to_string()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every file under `dir`, read as text.
fn all_text(dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.push_str(&all_text(&p));
        } else {
            out.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap()));
        }
    }
    out
}

#[test]
fn secrets_from_parameter_store_and_env_never_appear_anywhere() {
    let password = "hunter2-s3cr3t-from-ssm";
    let token = "tok-9f8e7d6c5b4a";
    aws_cli(&[
        "ssm",
        "put-parameter",
        "--name",
        "/prod/db/password",
        "--type",
        "SecureString",
        "--value",
        password,
        "--overwrite",
    ]);
    let state = tempfile::tempdir().unwrap();
    for output in ["human", "json"] {
        let out = runbook(state.path())
            .env("API_TOKEN", token)
            .args(["exec", &fixture("secret"), "--output", output])
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
        for secret in [password, token] {
            assert!(
                !stdout.contains(secret),
                "{output} stdout shows a secret:\n{stdout}"
            );
            assert!(
                !stderr.contains(secret),
                "{output} stderr shows a secret:\n{stderr}"
            );
        }
        assert!(stdout.contains("***"), "{stdout}");
    }
    let recorded = all_text(state.path());
    assert!(
        recorded.contains("password=***"),
        "the echo was journaled, masked"
    );
    assert!(!recorded.contains(password) && !recorded.contains(token));
    // The condition really saw the value (it compared it with the capture).
    assert!(recorded.contains("\"result\":true"), "{recorded}");

    // A parameter that does not exist stops the run before anything starts.
    let missing = tempfile::tempdir().unwrap();
    let file = missing.path().join("secret.yaml");
    std::fs::write(
        &file,
        std::fs::read_to_string(fixture("secret"))
            .unwrap()
            .replace("/prod/db/password", "/prod/db/nope"),
    )
    .unwrap();
    let out = runbook(state.path())
        .env("API_TOKEN", token)
        .args(["exec", file.to_str().unwrap()])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("parameter `db_password` (from ssm:/prod/db/nope): parameter `/prod/db/nope` does not exist in Parameter Store (region us-east-1)"),
        "{stderr}"
    );
}

#[test]
fn run_command_on_instance_ids_and_tag_targets() {
    let ids = aws_cli(&[
        "ec2",
        "run-instances",
        "--image-id",
        "ami-12c6146b",
        "--count",
        "2",
        "--tag-specifications",
        "ResourceType=instance,Tags=[{Key=Role,Value=web}]",
        "--query",
        "Instances[].InstanceId",
        "--output",
        "text",
    ]);
    let ids: Vec<&str> = ids.split_whitespace().collect();
    assert_eq!(ids.len(), 2);
    let state = tempfile::tempdir().unwrap();
    let out = runbook(state.path())
        .args(["exec", &fixture("fleet"), "--output", "json", "-p"])
        .arg(format!("instance_a={}", ids[0]))
        .arg("-p")
        .arg(format!("instance_b={}", ids[1]))
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let finished = |step: &str| {
        events
            .iter()
            .find(|e| e["event"] == "step_finished" && e["step"] == step)
            .cloned()
            .unwrap()
    };
    // Instance ids: SendCommand, then GetCommandInvocation per instance until terminal.
    assert_eq!(finished("disk")["status"], "succeeded", "{stdout}{stderr}");
    let condition = events.iter().find(|e| e["event"] == "condition").unwrap();
    assert_eq!(condition["values"]["succeeded"], 2);
    assert_eq!(condition["values"]["instances"][0]["status"], "Success");
    // The command really reached moto: it lists it.
    let listed = aws_cli(&[
        "ssm",
        "list-commands",
        "--query",
        "Commands[].DocumentName",
        "--output",
        "text",
    ]);
    assert!(listed.contains("AWS-RunShellScript"), "{listed}");
    // Tag targets: SendCommand is accepted; moto cannot list invocations, and the step
    // says exactly which call failed.
    let by_tag = finished("by_tag");
    assert_eq!(by_tag["status"], "failed");
    assert!(
        by_tag["message"]
            .as_str()
            .unwrap()
            .starts_with("ssm:ListCommandInvocations failed: HTTP 500"),
        "{by_tag}"
    );
    assert!(
        stdout.contains("command ") && stdout.contains(" sent"),
        "{stdout}"
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn dry_run_runs_the_ssm_check_and_shows_the_acts_without_calling_aws() {
    let id = aws_cli(&[
        "ec2",
        "run-instances",
        "--image-id",
        "ami-12c6146b",
        "--count",
        "1",
        "--query",
        "Instances[0].InstanceId",
        "--output",
        "text",
    ]);
    let id = id.trim();
    let before = aws_cli(&[
        "ssm",
        "list-commands",
        "--region",
        "ap-northeast-1",
        "--query",
        "length(Commands)",
    ]);
    let state = tempfile::tempdir().unwrap();
    let out = runbook(state.path())
        .args(["exec", "examples/ssm-restart.yaml", "--dry-run", "-p"])
        .arg(format!("instance={id}"))
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "aws ssm SendCommand document=AWS-RunShellScript targets=[{id}]"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("✓ check  uptime ok"), "{stdout}");
    assert!(
        stdout.contains("○ act    restart_app not executed"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "aws ssm StartAutomationExecution document=AWS-RestartEC2Instance InstanceId={id}"
        )),
        "{stdout}"
    );
    // Only the check's command reached AWS.
    let after = aws_cli(&[
        "ssm",
        "list-commands",
        "--region",
        "ap-northeast-1",
        "--query",
        "length(Commands)",
    ]);
    assert_eq!(
        after.trim().parse::<u32>().unwrap(),
        before.trim().parse::<u32>().unwrap() + 1
    );
}

#[test]
fn no_region_is_a_clear_error_naming_the_step() {
    let state = tempfile::tempdir().unwrap();
    let out = runbook(state.path())
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .args([
            "exec",
            &fixture("fleet"),
            "-p",
            "instance_a=i-0a",
            "-p",
            "instance_b=i-0b",
        ])
        .output()
        .unwrap();
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("✗ check  disk failed"), "{stdout}");
    assert!(stdout.contains("no AWS region: pass --region"), "{stdout}");
}

#[test]
fn no_credentials_is_a_clear_error_naming_the_step() {
    let state = tempfile::tempdir().unwrap();
    let out = runbook(state.path())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .args([
            "exec",
            &fixture("fleet"),
            "-p",
            "instance_a=i-0a",
            "-p",
            "instance_b=i-0b",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("✗ check  disk failed"), "{stdout}");
    assert!(
        stdout.contains("ssm:SendCommand failed: dispatch failure"),
        "{stdout}"
    );
    assert!(stdout.contains("no AWS credentials"), "{stdout}");
    // The journal has the same message.
    let journal = only_journal(state.path());
    assert!(
        std::fs::read_to_string(journal)
            .unwrap()
            .contains("no AWS credentials")
    );
}
