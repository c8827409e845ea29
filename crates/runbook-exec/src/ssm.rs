//! What an SSM action's result looks like, whoever produced it: the live AWS client
//! (`aws.rs`) and the scenario script (`scenario.rs`) both end here, so a scripted
//! `ssm_command` step has exactly the `steps.<id>` values, output lines and messages of a
//! real one.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::action::{ActionResult, Io};
use crate::event::Stream;

/// One instance's result of a Run Command invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// `Success`, `Failed`, `TimedOut`, ...
    pub status: String,
    /// The command's exit code.
    pub response_code: i32,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// Whether an invocation status is final.
pub fn terminal(status: &str) -> bool {
    matches!(
        status,
        "Success"
            | "Failed"
            | "Cancelled"
            | "TimedOut"
            | "DeliveryTimedOut"
            | "ExecutionTimedOut"
            | "Undeliverable"
            | "Terminated"
            | "InvalidPlatform"
            | "AccessDenied"
    )
}

/// The finished command: each instance's status and output as lines, and the result
/// (`ok` when every instance succeeded).
pub fn command_result(
    command_id: &str,
    results: &BTreeMap<String, Invocation>,
    io: &Io<'_>,
) -> ActionResult {
    for (id, r) in results {
        io.line(
            Stream::Stderr,
            &format!("{id}: {} (response code {})", r.status, r.response_code),
        );
        for line in r.stdout.lines() {
            io.line(Stream::Stdout, &format!("{id}: {line}"));
        }
    }
    let failed: Vec<&String> = results
        .iter()
        .filter(|(_, r)| r.status != "Success")
        .map(|(id, _)| id)
        .collect();
    let stdout = if results.len() == 1 {
        results
            .values()
            .next()
            .map(|r| r.stdout.clone())
            .unwrap_or_default()
    } else {
        results
            .iter()
            .map(|(id, r)| format!("{id}: {}", r.stdout.trim_end()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let message = (!failed.is_empty()).then(|| {
        let parts: Vec<String> = failed
            .iter()
            .map(|id| format!("{id} {}", results[*id].status))
            .collect();
        format!(
            "{} of {} instances did not succeed: {}",
            failed.len(),
            results.len(),
            parts.join(", ")
        )
    });
    ActionResult {
        ok: failed.is_empty(),
        stdout,
        stderr: results
            .values()
            .map(|r| r.stderr.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        message,
        extra: command_extras(command_id, results),
        ..ActionResult::default()
    }
}

/// `steps.<id>` values of an `ssm_command` step: `command_id`, `instances`,
/// `succeeded`, `failed`.
pub fn command_extras(
    command_id: &str,
    results: &BTreeMap<String, Invocation>,
) -> serde_json::Map<String, Value> {
    let instances: Vec<Value> = results
        .iter()
        .map(|(id, r)| {
            json!({"id": id, "status": r.status, "response_code": r.response_code, "stdout": r.stdout, "stderr": r.stderr})
        })
        .collect();
    let succeeded = results.values().filter(|r| r.status == "Success").count();
    let failed = results
        .values()
        .filter(|r| terminal(&r.status) && r.status != "Success")
        .count();
    let mut m = serde_json::Map::new();
    m.insert("command_id".into(), json!(command_id));
    m.insert("instances".into(), Value::Array(instances));
    m.insert("succeeded".into(), json!(succeeded));
    m.insert("failed".into(), json!(failed));
    m
}

/// One step of an automation execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutomationStep {
    /// Step name.
    pub name: Option<String>,
    /// Its status.
    pub status: Option<String>,
    /// Why it failed.
    pub failure: Option<String>,
}

/// An automation execution as far as it got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Automation {
    /// Execution id.
    pub id: String,
    /// Its outputs.
    pub outputs: BTreeMap<String, Vec<String>>,
    /// Its steps.
    pub steps: Vec<AutomationStep>,
    /// Why it failed.
    pub failure: Option<String>,
}

/// Whether an automation status is final.
pub fn automation_terminal(status: &str) -> bool {
    matches!(
        status,
        "Success"
            | "Failed"
            | "TimedOut"
            | "Cancelled"
            | "CompletedWithSuccess"
            | "CompletedWithFailure"
            | "Rejected"
            | "Exited"
    )
}

/// A finished automation: its steps as lines, and the result.
pub fn automation_result(exec: &Automation, status: &str, io: &Io<'_>) -> ActionResult {
    let ok = matches!(status, "Success" | "CompletedWithSuccess");
    for s in &exec.steps {
        io.line(
            Stream::Stdout,
            &format!(
                "{}: {}{}",
                s.name.as_deref().unwrap_or("?"),
                s.status.as_deref().unwrap_or("?"),
                s.failure
                    .as_ref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            ),
        );
    }
    ActionResult {
        ok,
        message: (!ok).then(|| {
            format!(
                "automation {} ended {status}{}",
                exec.id,
                exec.failure
                    .as_ref()
                    .map(|f| format!(": {f}"))
                    .unwrap_or_default()
            )
        }),
        extra: automation_extras(exec),
        ..ActionResult::default()
    }
}

/// `steps.<id>` values of an `ssm_automation` step: `execution_id`, `outputs`,
/// `step_statuses`.
pub fn automation_extras(exec: &Automation) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("execution_id".into(), json!(exec.id));
    m.insert("outputs".into(), json!(exec.outputs));
    let steps: Vec<Value> = exec
        .steps
        .iter()
        .map(|s| json!({"name": s.name, "status": s.status, "failure": s.failure}))
        .collect();
    m.insert("step_statuses".into(), Value::Array(steps));
    m
}
