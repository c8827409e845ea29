//! A simulated fleet for `ssm_command`: mocked Systems Manager answers (aws-smithy-mocks)
//! for any number of instances, shared by `tests/run_command.rs` and `benches/fanout.rs`.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_ssm::Client;
use aws_sdk_ssm::operation::list_command_invocations::ListCommandInvocationsOutput;
use aws_sdk_ssm::operation::list_commands::ListCommandsOutput;
use aws_sdk_ssm::operation::send_command::SendCommandOutput;
use aws_sdk_ssm::types::{
    Command, CommandInvocation, CommandInvocationStatus, CommandPlugin, CommandStatus,
};
use aws_smithy_mocks::{MockResponseInterceptor, Rule, RuleMode, mock};

/// A client that answers from `rules`, with the SDK's own retries off so the step's
/// handling of throttling is what is tested.
pub fn mocked(rules: &[&Rule]) -> Client {
    let mut interceptor = MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny);
    for rule in rules {
        interceptor = interceptor.with_rule(rule);
    }
    let conf = aws_sdk_ssm::config::Config::builder()
        .with_test_defaults()
        .retry_config(aws_sdk_ssm::config::retry::RetryConfig::disabled())
        .region(aws_sdk_ssm::config::Region::new("ap-northeast-1"))
        .http_client(aws_smithy_mocks::create_mock_http_client())
        .interceptor(interceptor)
        .build();
    Client::from_conf(conf)
}

/// A command sent: its id, instance ids, MaxConcurrency, MaxErrors, poll count at send.
pub type Sent = (String, Vec<String>, Option<String>, Option<String>, usize);

/// A simulated fleet: every command finishes `rounds` polls after it was sent; the
/// instances in `failing` fail. Records what was sent and what was asked.
#[derive(Default)]
pub struct Fleet {
    pub rounds: usize,
    pub failing: Vec<String>,
    pub sent: Mutex<Vec<Sent>>,
    pub polls: AtomicUsize,
    /// Commands running (sent, not finished) at each send.
    pub running_at_send: Mutex<Vec<usize>>,
}

impl Fleet {
    pub fn new(rounds: usize, failing: &[&str]) -> Arc<Fleet> {
        Arc::new(Fleet {
            rounds,
            failing: failing.iter().map(|s| s.to_string()).collect(),
            ..Fleet::default()
        })
    }

    fn state(&self, at_send: usize, ids: &[String]) -> (CommandStatus, i32, i32) {
        let polls = self.polls.load(Ordering::SeqCst);
        let age = polls.saturating_sub(at_send);
        let n = ids.len() as i32;
        let errors = ids.iter().filter(|i| self.failing.contains(i)).count() as i32;
        if age >= self.rounds {
            let status = if errors > 0 {
                CommandStatus::Failed
            } else {
                CommandStatus::Success
            };
            (status, n, errors)
        } else {
            (
                CommandStatus::InProgress,
                n * age as i32 / self.rounds as i32,
                0,
            )
        }
    }

    fn finished(&self, at_send: usize) -> bool {
        self.polls.load(Ordering::SeqCst).saturating_sub(at_send) >= self.rounds
    }

    pub fn rules(self: &Arc<Fleet>) -> (Rule, Rule, Rule, Rule) {
        let fleet = Arc::clone(self);
        let send = mock!(Client::send_command).then_compute_output(move |req| {
            let ids = req.instance_ids().to_vec();
            let mut sent = fleet.sent.lock().unwrap();
            let running = sent.iter().filter(|s| !fleet.finished(s.4)).count();
            fleet.running_at_send.lock().unwrap().push(running);
            let id = format!("cmd-{}", sent.len());
            sent.push((
                id.clone(),
                ids,
                req.max_concurrency().map(str::to_string),
                req.max_errors().map(str::to_string),
                fleet.polls.load(Ordering::SeqCst),
            ));
            SendCommandOutput::builder()
                .command(Command::builder().command_id(id).build())
                .build()
        });
        let fleet = Arc::clone(self);
        let list = mock!(Client::list_commands).then_compute_output(move |req| {
            fleet.polls.fetch_add(1, Ordering::SeqCst);
            let sent = fleet.sent.lock().unwrap().clone();
            let mut out = ListCommandsOutput::builder();
            for (id, ids, _, _, at) in sent.iter() {
                if req.command_id().is_some_and(|c| c != id) {
                    continue;
                }
                let (status, completed, errors) = fleet.state(*at, ids);
                out = out.commands(
                    Command::builder()
                        .command_id(id)
                        .status(status)
                        .target_count(ids.len() as i32)
                        .completed_count(completed)
                        .error_count(errors)
                        .build(),
                );
            }
            out.build()
        });
        let fleet = Arc::clone(self);
        let invocations = mock!(Client::list_command_invocations).then_compute_output(move |req| {
            let sent = fleet.sent.lock().unwrap().clone();
            let (_, ids, _, _, _) = sent
                .iter()
                .find(|s| Some(s.0.as_str()) == req.command_id())
                .unwrap();
            let mut out = ListCommandInvocationsOutput::builder();
            for i in ids {
                let fail = fleet.failing.contains(i);
                out = out.command_invocations(invocation(
                    i,
                    if fail {
                        CommandInvocationStatus::Failed
                    } else {
                        CommandInvocationStatus::Success
                    },
                    i32::from(fail),
                    &format!("{i} at 42%\n"),
                ));
            }
            out.build()
        });
        let cancel = mock!(Client::cancel_command).then_output(|| {
            aws_sdk_ssm::operation::cancel_command::CancelCommandOutput::builder().build()
        });
        (send, list, invocations, cancel)
    }
}

pub fn invocation(
    id: &str,
    status: CommandInvocationStatus,
    code: i32,
    out: &str,
) -> CommandInvocation {
    CommandInvocation::builder()
        .instance_id(id)
        .status(status)
        .command_plugins(
            CommandPlugin::builder()
                .name("aws:runShellScript")
                .response_code(code)
                .output(out)
                .build(),
        )
        .build()
}

pub fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("i-{i:04}")).collect()
}
