//! Scenario files: a runbook's tests, with scripted results instead of the world.
//!
//! A scenario file (`NAME.test.yaml` beside `NAME.yaml`) holds scenarios; each gives the
//! parameters, the operator's answers and what every step's action returns, and says
//! which path the run must take. The executor runs the real engine against the script
//! (`runbook_exec::scenario`); this module is the format. Its conversion with every
//! problem located and the checks that need the runbook are
//! [`crate::validate::scenarios`]. docs/testing.md documents it;
//! `schemas/scenario.schema.json` is generated from these types.

use indexmap::IndexMap;
use schemars::JsonSchema;

use crate::diag::{Diagnostic, Span};
use crate::model::{DurationSpec, Sp};

/// A scenario file.
#[derive(Debug, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "runbook scenarios",
    extend("$id" = "https://runbook.dev/schemas/scenario.schema.json")
)]
pub struct ScenarioFile {
    /// The runbook these scenarios exercise: a file path relative to this file, or a
    /// runbook name looked up beside it. Default: this file's name without `.test.yaml`.
    pub runbook: Option<Sp<String>>,
    /// The scenarios, run in order, each on its own.
    pub scenarios: Vec<Scenario>,
}

/// One run of the runbook against scripted results, and what it must do.
#[derive(Debug, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// What the scenario shows (`long queries are terminated`).
    pub name: Sp<String>,
    /// More words, for people.
    pub description: Option<String>,
    /// Parameter values, as `--param` would give them.
    #[serde(default)]
    #[schemars(with = "IndexMap<String, serde_json::Value>")]
    pub params: Vec<(Sp<String>, serde_json::Value)>,
    /// Approve every act without a scripted answer (as `--yes`).
    #[serde(default)]
    pub yes: bool,
    /// Run as `--dry-run`: acts are shown, never run.
    #[serde(default)]
    pub dry_run: bool,
    /// The operator's answers per step: `approve`, `decline`, `skip`, `abort`, or `done`
    /// for a manual step; a list when the step is asked more than once (a loop).
    #[serde(default)]
    #[schemars(with = "IndexMap<String, OneOrMany<AnswerName>>")]
    pub answers: Vec<(Sp<String>, Vec<Sp<ScriptedAnswer>>)>,
    /// What each step's action returns; a list for a step that runs more than once
    /// (retried, polled, looped), one entry per attempt in order.
    #[serde(default)]
    #[schemars(with = "IndexMap<String, OneOrMany<ScriptedResult>>")]
    pub results: Vec<(Sp<String>, Vec<ScriptedResult>)>,
    /// What the run must do.
    #[serde(default)]
    pub expect: Expect,
}

/// One item or a list of them.
#[derive(Debug, Clone, JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// A single item.
    One(T),
    /// Several, in order.
    Many(Vec<T>),
}

/// An answer, as written.
#[derive(Debug, Clone, Copy, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AnswerName {
    /// Run the act.
    Approve,
    /// Do not run it (the run stops, exit 3).
    Decline,
    /// Leave the step out and go on.
    Skip,
    /// Stop the run.
    Abort,
    /// A manual step was carried out.
    Done,
}

/// The operator's answer to one question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptedAnswer {
    /// Approve the act / acknowledge the manual step.
    Approve,
    /// Decline.
    Decline,
    /// Skip the step.
    Skip,
    /// Abort the run.
    Abort,
}

/// What one attempt of a step's action returns. Which fields apply depends on the action:
/// `shell`: `exit_code`, `stdout`, `stderr`; `http`: `status`, `body` (or `error`);
/// `ssm_command`: `instances`; `ssm_automation`: `status` (the execution's), `outputs`,
/// `failure`. `takes` applies to every action.
#[derive(Debug, Clone, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScriptedResult {
    /// Where the result is in the file.
    #[serde(skip)]
    #[schemars(skip)]
    pub span: Span,
    /// Exit code of a shell command (default 0).
    pub exit_code: Option<i32>,
    /// Standard output of a shell command.
    pub stdout: Option<String>,
    /// Standard error of a shell command.
    pub stderr: Option<String>,
    /// HTTP status of an `http` step (an integer), or the final status of an
    /// `ssm_automation` execution (`Success`, `Failed`, `TimedOut`, `Cancelled`).
    #[schemars(with = "Option<serde_json::Value>")]
    pub status: Option<Sp<ResultStatus>>,
    /// Response body of an `http` step.
    pub body: Option<String>,
    /// An `http` request that got no response (`connection refused`).
    pub error: Option<String>,
    /// Per instance of an `ssm_command` step: its invocation's result.
    #[schemars(with = "Option<IndexMap<String, ScriptedInvocation>>")]
    pub instances: Option<Vec<(String, ScriptedInvocation)>>,
    /// Outputs of an `ssm_automation` execution (`Step.Output`: values).
    #[schemars(with = "Option<IndexMap<String, OneOrMany<String>>>")]
    pub outputs: Option<Vec<(String, Vec<String>)>>,
    /// Why an `ssm_automation` execution failed.
    pub failure: Option<String>,
    /// How long the action takes (`30s`, `20m`), on the scenario's simulated clock:
    /// timeouts fire, and escalation contacts fall due, as they would.
    #[schemars(with = "Option<String>")]
    pub takes: Option<Sp<DurationSpec>>,
    /// The fields given, with their spans, for the shape check.
    #[serde(skip)]
    #[schemars(skip)]
    pub fields: Vec<(String, Span)>,
}

/// `status` of a result: an HTTP status code or an automation status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultStatus {
    /// HTTP status code.
    Http(u16),
    /// Automation execution status.
    Automation(String),
}

/// One instance's invocation of an `ssm_command` step.
#[derive(Debug, Clone, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScriptedInvocation {
    /// `Success` (default), `Failed`, `TimedOut`, `Cancelled`, ...
    pub status: Option<String>,
    /// The command's exit code (default 0 on success, 1 otherwise).
    pub exit_code: Option<i32>,
    /// Its standard output.
    pub stdout: Option<String>,
    /// Its standard error.
    pub stderr: Option<String>,
}

/// What a scenario's run must do. Everything is optional; what is given must hold.
#[derive(Debug, Clone, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// How the run ends: `succeeded`, `failed`, `escalated`, `aborted`, `interrupted`,
    /// `runbook_error`.
    pub status: Option<Sp<String>>,
    /// The exit code `runbook exec` would end with.
    pub exit_code: Option<Sp<i32>>,
    /// The steps that run, in the order they start (a step started again by a loop
    /// appears again). Scenarios run one step at a time, so the order is the plan's.
    pub path: Option<Sp<Vec<Sp<String>>>>,
    /// Steps that must be skipped (a branch chose another route, a failure cut them off).
    pub skipped: Option<Vec<Sp<String>>>,
    /// Steps that must not run (neither started nor shown).
    pub not_run: Option<Vec<Sp<String>>>,
    /// Final status per step: `succeeded`, `failed`, `skipped`, `declined`,
    /// `not_executed` (dry run), `pending` (never reached).
    #[serde(default)]
    #[schemars(with = "IndexMap<String, String>")]
    pub steps: Vec<(Sp<String>, Sp<String>)>,
    /// The rendered command of a step, exactly (leading and trailing blank space aside):
    /// a shell step's script, `METHOD url` of an http step, an `ssm_command`'s commands
    /// one per line, `document name=value ...` of an automation.
    #[serde(default)]
    #[schemars(with = "IndexMap<String, String>")]
    pub commands: Vec<(Sp<String>, Sp<String>)>,
    /// Captured values per step (`{count: {connections: 95}}`).
    #[serde(default)]
    #[schemars(with = "IndexMap<String, IndexMap<String, serde_json::Value>>")]
    pub captures: Vec<(Sp<String>, Values)>,
    /// The escalation contacts shown (their `to`), in order; `[]` for none.
    pub escalation: Option<Sp<Vec<String>>>,
}

impl Expect {
    /// The expected path as step ids, if the scenario gives one.
    pub fn path_ids(&self) -> Option<Vec<String>> {
        self.path
            .as_ref()
            .map(|p| p.value.iter().map(|s| s.value.clone()).collect())
    }
}

/// Named values, each name with its span (a step's expected captures).
pub type Values = Vec<(Sp<String>, serde_json::Value)>;

/// A scenario file, read and checked.
#[derive(Debug)]
pub struct CheckedScenarios {
    /// The scenarios, when the file was a mapping.
    pub file: Option<ScenarioFile>,
    /// Every problem found, in source order.
    pub diagnostics: Vec<Diagnostic>,
}

impl CheckedScenarios {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// The JSON Schema of scenario files, pretty-printed, with a trailing newline.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(ScenarioFile);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
