//! One `ssm_command` step across 1,000 instances, against mocked Systems Manager answers
//! (results arriving over several poll rounds): the API calls it makes per round and in
//! all, and the CPU time the step's code spends (the clock is paused, so waiting costs
//! nothing and what is measured is the engine's own work).
//!
//!     cargo bench -p runbook-exec --bench fanout
//!
//! Prints one `fanout:` line that `bench/compare` puts in its table. Targets (issue 15):
//! at most 3 calls per poll round, fewer than 100 calls in all besides the sends, CPU
//! under 1 s.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "../tests/support/fleet.rs"]
mod fleet;

use std::sync::Mutex;
use std::time::Duration;

use nix::sys::resource::{UsageWho, getrusage};
use runbook_core::render::SsmCommandCall;
use runbook_exec::action::Io;
use runbook_exec::aws::{Aws, run_command};
use tokio::sync::watch;

fn cpu() -> Duration {
    let u = getrusage(UsageWho::RUSAGE_SELF).unwrap();
    let t = |tv: nix::sys::time::TimeVal| {
        Duration::from_secs(tv.tv_sec().unsigned_abs())
            + Duration::from_micros(tv.tv_usec().unsigned_abs())
    };
    t(u.user_time()) + t(u.system_time())
}

fn main() {
    const INSTANCES: usize = 1000;
    const ROUNDS: usize = 5;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let fleet = fleet::Fleet::new(ROUNDS, &["i-0500"]);
    let (send, list, invocations, cancel) = fleet.rules();
    let client = fleet::mocked(&[&send, &list, &invocations, &cancel]);
    let aws = Aws::from_client(client, "ap-northeast-1");
    let lines = Mutex::new(0usize);
    let emit = |_, _: &str, _| *lines.lock().unwrap() += 1;
    let (_tx, rx) = watch::channel(None);
    let call = SsmCommandCall {
        document: "AWS-RunShellScript".into(),
        commands: vec!["df --output=pcent / | tail -1".into()],
        instance_ids: fleet::ids(INSTANCES),
        max_errors: Some("5".into()),
        ..SsmCommandCall::default()
    };
    let before = cpu();
    let result = rt.block_on(run_command(
        &aws,
        &call,
        Io {
            output_limit: 1 << 20,
            kill_grace: Duration::from_secs(1),
            deadline: None,
            kill: rx,
            emit: &emit,
        },
    ));
    let spent = cpu() - before;
    assert_eq!(
        result.extra["instances"].as_array().unwrap().len(),
        INSTANCES
    );
    assert_eq!(result.extra["failed"], 1);
    let rounds = list.num_calls();
    let besides_sends = rounds + invocations.num_calls() + cancel.num_calls();
    println!(
        "fanout: {INSTANCES} instances, {} sends, {rounds} ListCommands calls for {ROUNDS} rounds \
         of progress, {} ListCommandInvocations pages, {besides_sends} calls besides the sends, \
         {} output lines, CPU {:.1} ms",
        send.num_calls(),
        invocations.num_calls(),
        lines.lock().unwrap(),
        spent.as_secs_f64() * 1000.0
    );
}
