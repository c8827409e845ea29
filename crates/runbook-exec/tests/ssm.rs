//! SSM Automation against mocked AWS responses (aws-smithy-mocks): every outcome moto
//! cannot produce (it lacks Automation). Run Command is in `run_command.rs`.
#![cfg(feature = "aws")]
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Mutex;

use aws_sdk_ssm::Client;
use aws_sdk_ssm::operation::get_automation_execution::GetAutomationExecutionOutput;
use aws_sdk_ssm::operation::start_automation_execution::StartAutomationExecutionOutput;
use aws_sdk_ssm::types::{AutomationExecution, AutomationExecutionStatus, StepExecution};
use aws_smithy_mocks::{MockResponseInterceptor, RuleMode, mock};
use runbook_exec::action::{ActionResult, Io};
use runbook_exec::aws::{Aws, run_automation};
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

struct Lines(Mutex<Vec<String>>);

impl Lines {
    fn emit(&self) -> impl Fn(Stream, &str, runbook_exec::action::Piece) + Sync + '_ {
        |_, line: &str, _| self.0.lock().unwrap().push(line.to_string())
    }
    fn all(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
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
