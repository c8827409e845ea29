//! `ssm_command` against mocked AWS responses (aws-smithy-mocks): what moto cannot do
//! (it runs nothing, lacks ListCommandInvocations and CancelCommand, and answers no
//! throttling), and fleets of 1,000 instances: batches of at most 50 ids, O(1) calls per
//! poll round, results read once, limits that hold across batches, cancel reaching every
//! batch.
#![cfg(feature = "aws")]
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_sdk_ssm::Client;
use aws_sdk_ssm::error::ErrorMetadata;
use aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput;
use aws_sdk_ssm::operation::list_command_invocations::{
    ListCommandInvocationsError, ListCommandInvocationsOutput,
};
use aws_sdk_ssm::operation::list_commands::{ListCommandsError, ListCommandsOutput};
use aws_sdk_ssm::operation::send_command::{SendCommandError, SendCommandOutput};
use aws_sdk_ssm::types::{Command, CommandInvocationStatus, CommandStatus};
use aws_smithy_mocks::{Rule, mock};

#[path = "support/fleet.rs"]
mod fleet;

use fleet::{Fleet, ids, invocation, mocked};
use runbook_core::render::SsmCommandCall;
use runbook_exec::action::{ActionResult, Io};
use runbook_exec::aws::{Aws, run_command};
use runbook_exec::event::Stream;
use tokio::sync::watch;

fn listed(id: &str, status: CommandStatus, target: i32, completed: i32) -> ListCommandsOutput {
    ListCommandsOutput::builder()
        .commands(
            Command::builder()
                .command_id(id)
                .status(status)
                .target_count(target)
                .completed_count(completed)
                .build(),
        )
        .build()
}

fn sent(id: &str) -> Rule {
    let id = id.to_string();
    mock!(Client::send_command).then_output(move || {
        SendCommandOutput::builder()
            .command(Command::builder().command_id(&id).build())
            .build()
    })
}

struct Lines(Mutex<Vec<String>>);

async fn command(
    client: Client,
    instance_ids: &[String],
    tags: bool,
    limits: (Option<&str>, Option<&str>),
    kill: Option<watch::Receiver<Option<runbook_exec::event::Killed>>>,
) -> (ActionResult, String) {
    let aws = Aws::from_client(client, "ap-northeast-1");
    let lines = Lines(Mutex::new(Vec::new()));
    let emit = |_: Stream, line: &str, _| lines.0.lock().unwrap().push(line.to_string());
    let (_tx, rx) = watch::channel(None);
    let mut tag_map = BTreeMap::new();
    if tags {
        tag_map.insert("Role".to_string(), vec!["web".to_string()]);
    }
    let result = run_command(
        &aws,
        &SsmCommandCall {
            document: "AWS-RunShellScript".into(),
            commands: vec!["df -h".into()],
            instance_ids: instance_ids.to_vec(),
            tags: tag_map,
            max_concurrency: limits.0.map(str::to_string),
            max_errors: limits.1.map(str::to_string),
            ..SsmCommandCall::default()
        },
        Io {
            output_limit: 1 << 20,
            kill_grace: std::time::Duration::from_secs(1),
            deadline: None,
            kill: kill.unwrap_or(rx),
            emit: &emit,
        },
    )
    .await;
    let text = lines.0.lock().unwrap().join("\n");
    (result, text)
}

#[tokio::test(start_paused = true)]
async fn mixed_results_per_instance() {
    let send = sent("cmd-1");
    let list = mock!(Client::list_commands)
        .sequence()
        .output(|| listed("cmd-1", CommandStatus::InProgress, 2, 1))
        .output(|| listed("cmd-1", CommandStatus::Failed, 2, 2))
        .build();
    let invocations = mock!(Client::list_command_invocations).then_output(|| {
        ListCommandInvocationsOutput::builder()
            .command_invocations(invocation(
                "i-1",
                CommandInvocationStatus::Success,
                0,
                "fine\n",
            ))
            .command_invocations(invocation(
                "i-2",
                CommandInvocationStatus::Failed,
                2,
                "disk error\n----------ERROR-------\nno space left\n",
            ))
            .build()
    });
    let client = mocked(&[&send, &list, &invocations]);
    let two = ["i-1".to_string(), "i-2".to_string()];
    let (r, out) = command(client, &two, false, (Some("50%"), Some("1")), None).await;
    assert!(!r.ok);
    assert_eq!(r.extra["succeeded"], 1);
    assert_eq!(r.extra["failed"], 1);
    assert_eq!(r.extra["command_id"], "cmd-1");
    assert_eq!(r.extra["instances"][1]["response_code"], 2);
    assert_eq!(r.extra["instances"][1]["stdout"], "disk error");
    assert_eq!(r.extra["instances"][1]["stderr"], "no space left\n");
    let msg = r.message.unwrap();
    assert!(
        msg.contains("1 of 2 instances did not succeed: i-2 Failed"),
        "{msg}"
    );
    assert!(out.contains("1 of 2 instances done"), "{out}");
    assert!(out.contains("2 of 2 instances done"), "{out}");
    assert!(out.contains("i-1: fine"), "{out}");
    assert_eq!(list.num_calls(), 2);
    assert_eq!(invocations.num_calls(), 1);
}

/// Where ListCommandInvocations is denied (or missing, as in moto), each named instance
/// is read with GetCommandInvocation, and the output says so.
#[tokio::test(start_paused = true)]
async fn results_fall_back_to_one_read_per_instance() {
    let send = sent("cmd-2");
    let list =
        mock!(Client::list_commands).then_output(|| listed("cmd-2", CommandStatus::Success, 1, 1));
    let denied = mock!(Client::list_command_invocations).then_error(|| {
        ListCommandInvocationsError::generic(
            ErrorMetadata::builder()
                .code("AccessDeniedException")
                .message("not authorized to perform ssm:ListCommandInvocations")
                .build(),
        )
    });
    let get = mock!(Client::get_command_invocation).then_output(|| {
        GetCommandInvocationOutput::builder()
            .status(CommandInvocationStatus::Success)
            .response_code(0)
            .standard_output_content("42\n")
            .standard_error_content("")
            .build()
    });
    let client = mocked(&[&send, &list, &denied, &get]);
    let (r, out) = command(client, &["i-1".to_string()], false, (None, None), None).await;
    assert!(r.ok, "{:?}", r.message);
    assert_eq!(r.stdout, "42\n");
    assert!(
        out.contains("ssm:ListCommandInvocations failed: AccessDeniedException")
            && out.contains("reading each instance with ssm:GetCommandInvocation"),
        "{out}"
    );
    assert_eq!(get.num_calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn timed_out_and_cancelled_commands_fail_the_step() {
    for (status, inv, word) in [
        (
            CommandStatus::TimedOut,
            CommandInvocationStatus::TimedOut,
            "TimedOut",
        ),
        (
            CommandStatus::Cancelled,
            CommandInvocationStatus::Cancelled,
            "Cancelled",
        ),
    ] {
        let send = sent("cmd-3");
        let list =
            mock!(Client::list_commands).then_output(move || listed("cmd-3", status.clone(), 1, 1));
        let invocations = mock!(Client::list_command_invocations).then_output(move || {
            ListCommandInvocationsOutput::builder()
                .command_invocations(invocation("i-9", inv.clone(), -1, ""))
                .build()
        });
        let client = mocked(&[&send, &list, &invocations]);
        let (r, _) = command(client, &["i-9".to_string()], false, (None, None), None).await;
        assert!(!r.ok);
        assert!(r.message.unwrap().contains(&format!("i-9 {word}")));
        assert_eq!(r.extra["failed"], 1);
    }
}

#[tokio::test(start_paused = true)]
async fn tag_targets_report_every_instance_and_matching_nothing_fails() {
    let send = sent("cmd-4");
    let list =
        mock!(Client::list_commands).then_output(|| listed("cmd-4", CommandStatus::Success, 2, 2));
    let invocations = mock!(Client::list_command_invocations).then_output(|| {
        ListCommandInvocationsOutput::builder()
            .command_invocations(invocation(
                "i-a",
                CommandInvocationStatus::Success,
                0,
                "20%",
            ))
            .command_invocations(invocation(
                "i-b",
                CommandInvocationStatus::Success,
                0,
                "35%",
            ))
            .build()
    });
    let client = mocked(&[&send, &list, &invocations]);
    let (r, out) = command(client, &[], true, (None, None), None).await;
    assert!(r.ok, "{:?}", r.message);
    assert_eq!(r.extra["succeeded"], 2);
    assert_eq!(r.stdout, "i-a: 20%\ni-b: 35%");
    assert!(out.contains("2 of 2 instances done"), "{out}");

    let send = sent("cmd-5");
    let list =
        mock!(Client::list_commands).then_output(|| listed("cmd-5", CommandStatus::Success, 0, 0));
    let client = mocked(&[&send, &list]);
    let (r, _) = command(client, &[], true, (None, None), None).await;
    assert!(!r.ok);
    assert_eq!(
        r.message.unwrap(),
        "the tag targets matched no instance (command cmd-5)"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unknown_document_is_named() {
    let send = mock!(Client::send_command).then_error(|| {
        SendCommandError::InvalidDocument(
            aws_sdk_ssm::types::error::InvalidDocument::builder()
                .message("Document Nope-Doc does not exist")
                .meta(
                    ErrorMetadata::builder()
                        .code("InvalidDocument")
                        .message("Document Nope-Doc does not exist")
                        .build(),
                )
                .build(),
        )
    });
    let client = mocked(&[&send]);
    let (r, _) = command(client, &["i-1".to_string()], false, (None, None), None).await;
    let msg = r.message.unwrap();
    assert!(
        msg.contains("InvalidDocument: Document Nope-Doc does not exist (the document does not exist in this account and region)"),
        "{msg}"
    );
}

/// 1,000 instances: 20 commands of 50 ids; while they run, one ListCommands call per
/// round whatever the fleet size; each batch's results read once (one page each).
#[tokio::test(start_paused = true)]
async fn a_thousand_instances_in_batches_within_api_limits() {
    let fleet = Fleet::new(3, &[]);
    let (send, list, invocations, cancel) = fleet.rules();
    let client = mocked(&[&send, &list, &invocations, &cancel]);
    let (r, out) = command(client, &ids(1000), false, (None, None), None).await;
    assert!(r.ok, "{:?}", r.message);
    assert_eq!(r.extra["succeeded"], 1000);
    assert_eq!(r.extra["instances"].as_array().unwrap().len(), 1000);
    let sent = fleet.sent.lock().unwrap().clone();
    assert_eq!(send.num_calls(), 20);
    assert!(sent.iter().all(|s| s.1.len() == 50));
    // Every id sent exactly once.
    let mut all: Vec<&String> = sent.iter().flat_map(|s| s.1.iter()).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 1000);
    // Results arrived over three rounds: one ListCommands call per round.
    assert_eq!(list.num_calls(), 3, "{out}");
    assert_eq!(invocations.num_calls(), 20);
    assert!(list.num_calls() + invocations.num_calls() < 100);
    assert_eq!(cancel.num_calls(), 0);
    for progress in ["320 of 1000", "660 of 1000", "1000 of 1000"] {
        assert!(out.contains(progress), "{progress}: {out}");
    }
}

/// Throttling answers on some rounds are waited out and said, and the step succeeds.
#[tokio::test(start_paused = true)]
async fn throttling_is_backed_off_and_the_step_still_succeeds() {
    let send = sent("cmd-6");
    let throttled = || {
        ListCommandsError::generic(
            ErrorMetadata::builder()
                .code("ThrottlingException")
                .message("Rate exceeded")
                .build(),
        )
    };
    let list = mock!(Client::list_commands)
        .sequence()
        .error(throttled)
        .times(2)
        .output(|| listed("cmd-6", CommandStatus::InProgress, 1, 0))
        .error(throttled)
        .output(|| listed("cmd-6", CommandStatus::Success, 1, 1))
        .build();
    let invocations = mock!(Client::list_command_invocations).then_output(|| {
        ListCommandInvocationsOutput::builder()
            .command_invocations(invocation("i-1", CommandInvocationStatus::Success, 0, "ok"))
            .build()
    });
    let client = mocked(&[&send, &list, &invocations]);
    let (r, out) = command(client, &["i-1".to_string()], false, (None, None), None).await;
    assert!(r.ok, "{:?} {out}", r.message);
    assert_eq!(
        out.matches("ssm:ListCommands: throttled by AWS (ThrottlingException), retrying in")
            .count(),
        3,
        "{out}"
    );
    assert_eq!(list.num_calls(), 5);
}

/// One failing instance among 120 fails the step and is named.
#[tokio::test(start_paused = true)]
async fn one_failing_instance_fails_the_step_and_is_named() {
    let fleet = Fleet::new(2, &["i-0077"]);
    let (send, list, invocations, cancel) = fleet.rules();
    let client = mocked(&[&send, &list, &invocations, &cancel]);
    let (r, _) = command(client, &ids(120), false, (None, None), None).await;
    assert!(!r.ok);
    assert_eq!(r.extra["succeeded"], 119);
    assert_eq!(r.extra["failed"], 1);
    assert_eq!(
        r.message.unwrap(),
        "1 of 120 instances did not succeed: i-0077 Failed"
    );
    assert_eq!(send.num_calls(), 3);
}

/// An absolute max_concurrency holds for the fleet (batches in waves); an absolute
/// max_errors is a budget across batches: once spent, no further batch is sent.
#[tokio::test(start_paused = true)]
async fn limits_keep_their_meaning_across_batches() {
    let fleet = Fleet::new(2, &[]);
    let (send, list, invocations, cancel) = fleet.rules();
    let client = mocked(&[&send, &list, &invocations, &cancel]);
    let (r, _) = command(client, &ids(120), false, (Some("50"), Some("3")), None).await;
    assert!(r.ok, "{:?}", r.message);
    let sent = fleet.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 3);
    assert!(sent.iter().all(|s| s.2.as_deref() == Some("50")));
    assert_eq!(*fleet.running_at_send.lock().unwrap(), vec![0, 0, 0]);

    let fleet = Fleet::new(2, &["i-0003", "i-0010"]);
    let (send, list, invocations, cancel) = fleet.rules();
    let client = mocked(&[&send, &list, &invocations, &cancel]);
    let (r, _) = command(client, &ids(120), false, (Some("50"), Some("1")), None).await;
    assert!(!r.ok);
    let sent = fleet.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "the second batch was sent");
    assert_eq!(sent[0].3.as_deref(), Some("1"));
    let msg = r.message.unwrap();
    assert!(
        msg.contains("2 of 50 instances did not succeed")
            && msg.contains("max_errors 1 exceeded (2 failed): 70 instances not sent"),
        "{msg}"
    );

    // Percentages apply to each batch as to the whole: all batches at once.
    let fleet = Fleet::new(2, &[]);
    let (send, list, invocations, cancel) = fleet.rules();
    let client = mocked(&[&send, &list, &invocations, &cancel]);
    let (r, _) = command(client, &ids(120), false, (Some("25%"), Some("10%")), None).await;
    assert!(r.ok);
    let sent = fleet.sent.lock().unwrap().clone();
    assert_eq!(*fleet.running_at_send.lock().unwrap(), vec![0, 1, 2]);
    assert!(
        sent.iter()
            .all(|s| s.2.as_deref() == Some("25%") && s.3.as_deref() == Some("10%"))
    );
}

/// Stopping the step cancels every batch that was sent and has not finished.
#[tokio::test(start_paused = true)]
async fn stopping_cancels_every_batch() {
    let fleet = Fleet::new(1_000_000, &[]);
    let (send, list, invocations, cancel) = fleet.rules();
    let cancelled: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::clone(&cancelled);
    let cancel_rec = mock!(Client::cancel_command).then_compute_output(move |req| {
        seen.lock()
            .unwrap()
            .push(req.command_id().unwrap_or_default().to_string());
        aws_sdk_ssm::operation::cancel_command::CancelCommandOutput::builder().build()
    });
    let client = mocked(&[&send, &list, &invocations, &cancel_rec]);
    let (tx, rx) = watch::channel(None);
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        tx.send(Some(runbook_exec::event::Killed::Interrupt))
            .unwrap();
        tx
    });
    let (r, _) = command(client, &ids(150), false, (None, None), Some(rx)).await;
    let _tx = stopper.await.unwrap();
    assert!(r.killed);
    let mut got = cancelled.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, ["cmd-0", "cmd-1", "cmd-2"]);
    let msg = r.message.unwrap();
    assert!(
        msg.contains("command cmd-0 cancelled; command cmd-1 cancelled; command cmd-2 cancelled"),
        "{msg}"
    );
    assert_eq!(cancel.num_calls(), 0);
}

/// Right after SendCommand, ListCommands may not know the command yet: that is waited
/// out, not a failure.
#[tokio::test(start_paused = true)]
async fn a_command_not_listed_yet_is_waited_for() {
    let send = sent("cmd-7");
    let list = mock!(Client::list_commands)
        .sequence()
        .error(|| {
            ListCommandsError::generic(
                ErrorMetadata::builder()
                    .code("InvalidCommandId")
                    .message("Invalid command id.")
                    .build(),
            )
        })
        .output(|| listed("cmd-7", CommandStatus::Success, 1, 1))
        .build();
    let invocations = mock!(Client::list_command_invocations).then_output(|| {
        ListCommandInvocationsOutput::builder()
            .command_invocations(invocation("i-1", CommandInvocationStatus::Success, 0, "42"))
            .build()
    });
    let client = mocked(&[&send, &list, &invocations]);
    let (r, _) = command(client, &["i-1".to_string()], false, (None, None), None).await;
    assert!(r.ok, "{:?}", r.message);
    assert_eq!(r.stdout, "42");
    assert_eq!(list.num_calls(), 2);
}
