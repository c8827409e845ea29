//! SSM actions against mocked AWS responses (aws-smithy-mocks): every outcome of Run
//! Command and Automation that moto cannot produce (it runs nothing and lacks
//! ListCommandInvocations and Automation).
#![cfg(feature = "aws")]
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Mutex;

use aws_sdk_ssm::Client;
use aws_sdk_ssm::operation::get_automation_execution::GetAutomationExecutionOutput;
use aws_sdk_ssm::operation::get_command_invocation::{
    GetCommandInvocationError, GetCommandInvocationOutput,
};
use aws_sdk_ssm::operation::list_command_invocations::ListCommandInvocationsOutput;
use aws_sdk_ssm::operation::send_command::{SendCommandError, SendCommandOutput};
use aws_sdk_ssm::operation::start_automation_execution::StartAutomationExecutionOutput;
use aws_sdk_ssm::types::{
    AutomationExecution, AutomationExecutionStatus, CommandInvocation, CommandInvocationStatus,
    CommandPlugin, StepExecution,
};
use aws_smithy_mocks::{MockResponseInterceptor, RuleMode, mock};
use runbook_core::render::SsmCommandCall;
use runbook_exec::action::{ActionResult, Io};
use runbook_exec::aws::{Aws, run_automation, run_command};
use runbook_exec::event::Stream;
use tokio::sync::watch;

/// A client that answers from `rules` (any matching rule, in order).
fn mocked(rules: &[&aws_smithy_mocks::Rule]) -> Client {
    let mut interceptor = MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny);
    for rule in rules {
        interceptor = interceptor.with_rule(rule);
    }
    let conf = aws_sdk_ssm::config::Config::builder()
        .with_test_defaults()
        .region(aws_sdk_ssm::config::Region::new("ap-northeast-1"))
        .http_client(aws_smithy_mocks::create_mock_http_client())
        .interceptor(interceptor)
        .build();
    Client::from_conf(conf)
}

fn sent(id: &str) -> aws_smithy_mocks::Rule {
    mock!(Client::send_command).then_output({
        let id = id.to_string();
        move || {
            SendCommandOutput::builder()
                .command(
                    aws_sdk_ssm::types::Command::builder()
                        .command_id(&id)
                        .build(),
                )
                .build()
        }
    })
}

fn invocation(status: CommandInvocationStatus, code: i32, out: &str) -> GetCommandInvocationOutput {
    GetCommandInvocationOutput::builder()
        .status(status)
        .response_code(code)
        .standard_output_content(out)
        .standard_error_content("")
        .build()
}

struct Lines(Mutex<Vec<String>>);

impl Lines {
    fn emit(&self) -> impl Fn(Stream, &str, runbook_exec::action::Piece) + Sync + '_ {
        |_, line: &str, _| self.0.lock().unwrap().push(line.to_string())
    }
    fn all(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
}

async fn command(
    client: Client,
    instance_ids: &[&str],
    tags: bool,
    kill: Option<watch::Receiver<Option<runbook_exec::event::Killed>>>,
) -> (ActionResult, String) {
    let aws = Aws::from_client(client, "ap-northeast-1");
    let lines = Lines(Mutex::new(Vec::new()));
    let emit = lines.emit();
    let (_tx, rx) = watch::channel(None);
    let ids: Vec<String> = instance_ids.iter().map(|s| s.to_string()).collect();
    let mut tag_map = BTreeMap::new();
    if tags {
        tag_map.insert("Role".to_string(), vec!["web".to_string()]);
    }
    let result = run_command(
        &aws,
        &SsmCommandCall {
            document: "AWS-RunShellScript".into(),
            commands: vec!["df -h".into()],
            instance_ids: ids,
            tags: tag_map,
            max_concurrency: Some("50%".into()),
            max_errors: Some("1".into()),
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
    drop(emit);
    let text = lines.all();
    (result, text)
}

#[tokio::test(start_paused = true)]
async fn mixed_results_per_instance() {
    let send = sent("cmd-1");
    let ok = mock!(Client::get_command_invocation)
        .match_requests(|r| r.instance_id() == Some("i-1"))
        .then_output(|| invocation(CommandInvocationStatus::Success, 0, "fine\n"));
    let failing = mock!(Client::get_command_invocation)
        .match_requests(|r| r.instance_id() == Some("i-2"))
        .sequence()
        .output(|| invocation(CommandInvocationStatus::InProgress, -1, ""))
        .output(|| invocation(CommandInvocationStatus::Failed, 2, "disk error\n"))
        .build();
    let client = mocked(&[&send, &ok, &failing]);
    let (r, out) = command(client, &["i-1", "i-2"], false, None).await;
    assert!(!r.ok);
    assert_eq!(r.extra["succeeded"], 1);
    assert_eq!(r.extra["failed"], 1);
    assert_eq!(r.extra["command_id"], "cmd-1");
    assert_eq!(r.extra["instances"][1]["response_code"], 2);
    assert_eq!(r.extra["instances"][1]["stdout"], "disk error\n");
    let msg = r.message.unwrap();
    assert!(
        msg.contains("1 of 2 instances did not succeed: i-2 Failed"),
        "{msg}"
    );
    assert!(out.contains("1 of 2 instances done"), "{out}");
    assert!(out.contains("2 of 2 instances done"), "{out}");
    assert!(out.contains("i-1: fine"), "{out}");
    assert_eq!(failing.num_calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_invocation_that_does_not_exist_yet_is_waited_for() {
    let send = sent("cmd-2");
    let get = mock!(Client::get_command_invocation)
        .sequence()
        .error(|| {
            GetCommandInvocationError::InvocationDoesNotExist(
                aws_sdk_ssm::types::error::InvocationDoesNotExist::builder().build(),
            )
        })
        .output(|| invocation(CommandInvocationStatus::Success, 0, "42\n"))
        .build();
    let client = mocked(&[&send, &get]);
    let (r, _) = command(client, &["i-1"], false, None).await;
    assert!(r.ok, "{:?}", r.message);
    assert_eq!(r.stdout, "42\n");
    assert_eq!(r.extra["succeeded"], 1);
}

#[tokio::test(start_paused = true)]
async fn timed_out_and_cancelled_invocations_fail_the_step() {
    for (status, word) in [
        (CommandInvocationStatus::TimedOut, "TimedOut"),
        (CommandInvocationStatus::Cancelled, "Cancelled"),
    ] {
        let send = sent("cmd-3");
        let get = mock!(Client::get_command_invocation)
            .then_output(move || invocation(status.clone(), -1, ""));
        let client = mocked(&[&send, &get]);
        let (r, _) = command(client, &["i-9"], false, None).await;
        assert!(!r.ok);
        assert!(r.message.unwrap().contains(&format!("i-9 {word}")));
        assert_eq!(r.extra["failed"], 1);
    }
}

#[tokio::test(start_paused = true)]
async fn tag_targets_are_polled_with_list_command_invocations() {
    let send = sent("cmd-4");
    let list = mock!(Client::list_command_invocations).then_output(|| {
        let inv = |id: &str, out: &str| {
            CommandInvocation::builder()
                .instance_id(id)
                .status(CommandInvocationStatus::Success)
                .command_plugins(
                    CommandPlugin::builder()
                        .name("aws:runShellScript")
                        .response_code(0)
                        .output(out)
                        .build(),
                )
                .build()
        };
        ListCommandInvocationsOutput::builder()
            .command_invocations(inv("i-a", "20%"))
            .command_invocations(inv("i-b", "35%"))
            .build()
    });
    let client = mocked(&[&send, &list]);
    let (r, out) = command(client, &[], true, None).await;
    assert!(r.ok, "{:?}", r.message);
    assert_eq!(r.extra["succeeded"], 2);
    assert_eq!(r.stdout, "i-a: 20%\ni-b: 35%");
    assert!(out.contains("i-b: 35%"), "{out}");
}

#[tokio::test(start_paused = true)]
async fn stopping_cancels_the_command() {
    let send = sent("cmd-5");
    let get = mock!(Client::get_command_invocation)
        .then_output(|| invocation(CommandInvocationStatus::InProgress, -1, ""));
    let cancel = mock!(Client::cancel_command).then_output(|| {
        aws_sdk_ssm::operation::cancel_command::CancelCommandOutput::builder().build()
    });
    let client = mocked(&[&send, &get, &cancel]);
    let (tx, rx) = watch::channel(None);
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        tx.send(Some(runbook_exec::event::Killed::Interrupt))
            .unwrap();
        tx
    });
    let (r, _) = command(client, &["i-1"], false, Some(rx)).await;
    let _tx = stopper.await.unwrap();
    assert!(r.killed);
    assert!(r.message.unwrap().contains("command cmd-5 cancelled"));
    assert_eq!(cancel.num_calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn aws_errors_name_the_operation_and_the_fix() {
    let send = mock!(Client::send_command).then_error(|| {
        SendCommandError::InvalidInstanceId(
            aws_sdk_ssm::types::error::InvalidInstanceId::builder()
                .message("Instances [[i-404]] not in a valid state")
                .meta(
                    aws_sdk_ssm::error::ErrorMetadata::builder()
                        .code("InvalidInstanceId")
                        .message("Instances [[i-404]] not in a valid state")
                        .build(),
                )
                .build(),
        )
    });
    let client = mocked(&[&send]);
    let (r, _) = command(client, &["i-404"], false, None).await;
    assert!(!r.ok);
    let msg = r.message.unwrap();
    assert!(
        msg.starts_with("ssm:SendCommand failed: InvalidInstanceId"),
        "{msg}"
    );
    assert!(
        msg.contains("i-404") && msg.contains("managed by SSM"),
        "{msg}"
    );
}

async fn automation(client: Client) -> (ActionResult, String) {
    let aws = Aws::from_client(client, "ap-northeast-1");
    let lines = Lines(Mutex::new(Vec::new()));
    let emit = lines.emit();
    let (_tx, rx) = watch::channel(None);
    let mut params = BTreeMap::new();
    params.insert("InstanceId".to_string(), vec!["i-1".to_string()]);
    let r = run_automation(
        &aws,
        "AWS-RestartEC2Instance",
        None,
        &params,
        Io {
            output_limit: 1 << 20,
            kill_grace: std::time::Duration::from_secs(1),
            deadline: None,
            kill: rx,
            emit: &emit,
        },
    )
    .await;
    drop(emit);
    let text = lines.all();
    (r, text)
}

fn execution(
    status: AutomationExecutionStatus,
    failure: Option<&str>,
) -> GetAutomationExecutionOutput {
    let mut e = AutomationExecution::builder()
        .automation_execution_id("exec-1")
        .automation_execution_status(status.clone())
        .step_executions(
            StepExecution::builder()
                .step_name("stopInstances")
                .step_status(status)
                .set_failure_message(failure.map(str::to_string))
                .build(),
        )
        .outputs("stopInstances.InstanceState", vec!["stopped".to_string()]);
    if let Some(f) = failure {
        e = e.failure_message(f);
    }
    GetAutomationExecutionOutput::builder()
        .automation_execution(e.build())
        .build()
}

#[tokio::test(start_paused = true)]
async fn automation_success_and_failure() {
    let start = mock!(Client::start_automation_execution).then_output(|| {
        StartAutomationExecutionOutput::builder()
            .automation_execution_id("exec-1")
            .build()
    });
    let get = mock!(Client::get_automation_execution)
        .sequence()
        .output(|| execution(AutomationExecutionStatus::Inprogress, None))
        .output(|| execution(AutomationExecutionStatus::Success, None))
        .build();
    let client = mocked(&[&start, &get]);
    let (r, out) = automation(client).await;
    assert!(r.ok, "{:?}", r.message);
    assert_eq!(r.extra["execution_id"], "exec-1");
    assert_eq!(
        r.extra["outputs"]["stopInstances.InstanceState"][0],
        "stopped"
    );
    assert_eq!(r.extra["step_statuses"][0]["status"], "Success");
    assert!(
        out.contains("status InProgress") && out.contains("status Success"),
        "{out}"
    );

    let start = mock!(Client::start_automation_execution).then_output(|| {
        StartAutomationExecutionOutput::builder()
            .automation_execution_id("exec-1")
            .build()
    });
    let get = mock!(Client::get_automation_execution).then_output(|| {
        execution(
            AutomationExecutionStatus::Failed,
            Some("Step fails when it is verifying"),
        )
    });
    let client = mocked(&[&start, &get]);
    let (r, out) = automation(client).await;
    assert!(!r.ok);
    let msg = r.message.unwrap();
    assert!(
        msg.contains("automation exec-1 ended Failed: Step fails when it is verifying"),
        "{msg}"
    );
    assert!(out.contains("stopInstances: Failed"), "{out}");
}

#[tokio::test(start_paused = true)]
async fn an_unknown_document_is_named() {
    let send = mock!(Client::send_command).then_error(|| {
        SendCommandError::InvalidDocument(
            aws_sdk_ssm::types::error::InvalidDocument::builder()
                .message("Document Nope-Doc does not exist")
                .meta(
                    aws_sdk_ssm::error::ErrorMetadata::builder()
                        .code("InvalidDocument")
                        .message("Document Nope-Doc does not exist")
                        .build(),
                )
                .build(),
        )
    });
    let client = mocked(&[&send]);
    let (r, _) = command(client, &["i-1"], false, None).await;
    let msg = r.message.unwrap();
    assert!(
        msg.contains("InvalidDocument: Document Nope-Doc does not exist (the document does not exist in this account and region)"),
        "{msg}"
    );
}
