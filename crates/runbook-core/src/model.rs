//! The runbook format, version 1, as Rust types.
//!
//! These types are the single description of the format: the converter fills them from
//! YAML, the JSON Schema in `schemas/runbook.schema.json` is generated from them, and
//! `docs/format.md` documents them field by field. Values that a diagnostic may need to
//! point at later are wrapped in [`Sp`], which carries their source span.

use std::borrow::Cow;
use std::time::Duration;

use indexmap::IndexMap;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Serialize;

use crate::diag::Span;

/// The only `apiVersion` this version of the tool reads.
pub const API_VERSION: &str = "runbook/v1";

/// A value with the source span it came from. Serialises as the bare value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sp<T> {
    /// The value.
    pub value: T,
    /// Where it came from.
    pub span: Span,
}

impl<T> Sp<T> {
    /// Wrap a value.
    pub fn new(value: T, span: Span) -> Self {
        Sp { value, span }
    }
}

impl Sp<String> {
    /// The span of `needle`, found `offset` bytes into this scalar's text in `source`
    /// (quoted and block scalars do not map byte for byte, so the text is searched for
    /// near the span; failing that, the whole scalar).
    pub fn locate(&self, source: &str, offset: usize, needle: &str) -> Span {
        let span = self.span;
        let window_end =
            crate::text::floor_boundary(source, span.offset + span.len.max(self.len() * 2 + 64));
        let Some(window) = source.get(span.offset..window_end) else {
            return span;
        };
        if let Some(p) = window.find(self.as_str()).filter(|_| !self.is_empty()) {
            return span.narrow(source, p + offset, needle.len());
        }
        match window.find(needle).filter(|_| !needle.is_empty()) {
            Some(p) => span.narrow(source, p, needle.len()),
            None => span,
        }
    }
}

impl<T> std::ops::Deref for Sp<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: Serialize> Serialize for Sp<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(serializer)
    }
}

impl<T: JsonSchema> JsonSchema for Sp<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

/// A runbook: one operational procedure.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "runbook", extend("$id" = "https://runbook.dev/schemas/runbook.schema.json"))]
pub struct Runbook {
    /// Format version; must be `runbook/v1`.
    #[serde(rename = "apiVersion")]
    #[schemars(extend("const" = "runbook/v1"))]
    pub api_version: Sp<String>,
    /// Identifier of the runbook: kebab-case, equal to the file name without `.yaml`.
    #[schemars(regex(pattern = r"^[a-z0-9]+(-[a-z0-9]+)*$"))]
    pub name: Sp<String>,
    /// One line saying what situation this runbook handles.
    pub title: Sp<String>,
    /// Symptoms and context, shown by `runbook show`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Incident level this runbook usually serves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// Free-form labels for `runbook list`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Lock key template: one run at a time per rendered key (default: the runbook name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock: Option<Sp<String>>,
    /// Environment variables templates may read as `{{env.NAME}}` (an allow-list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<Sp<String>>,
    /// AWS settings for `ssm_*` actions and secrets from Parameter Store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsSettings>,
    /// Typed inputs, by name (snake_case).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub params: IndexMap<String, Param>,
    /// Who to call and when, measured from the start of the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalation: Vec<Escalation>,
    /// Which alerts start this runbook, and how their fields become parameters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<Trigger>,
    /// Time budgets: named groups of steps that should be done by a deadline measured from
    /// the start of the run (steps join one with `phase:`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<Phase>,
    /// The procedure.
    pub steps: Vec<Step>,
}

/// Incident level (P1 is the most severe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, JsonSchema)]
pub enum Severity {
    /// Whole system down.
    P1,
    /// Major function down.
    P2,
    /// Partial limitation.
    P3,
    /// Minor problem.
    P4,
}

impl Severity {
    /// All severities, for parsing and help text.
    pub const ALL: [(&'static str, Severity); 4] = [
        ("P1", Severity::P1),
        ("P2", Severity::P2),
        ("P3", Severity::P3),
        ("P4", Severity::P4),
    ];

    /// `P1`..`P4`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::P1 => "P1",
            Severity::P2 => "P2",
            Severity::P3 => "P3",
            Severity::P4 => "P4",
        }
    }
}

/// AWS client settings. Command-line flags win over these, these win over the environment.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsSettings {
    /// Region, e.g. `ap-northeast-1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Named profile from the AWS config files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// A typed runbook input.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Param {
    /// Where the name is in the file.
    #[serde(skip)]
    #[schemars(skip)]
    pub name_span: Span,
    /// Value type.
    #[serde(rename = "type")]
    pub ty: Sp<ParamType>,
    /// Shown in prompts, `show` and `--help`-like listings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Value used when none is given; must match the type, pattern and values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<Sp<serde_json::Value>>,
    /// Whether a value must be supplied (default: true when there is no default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// Regular expression the whole value must match (string and secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<Sp<String>>,
    /// Allowed values (enum).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<Sp<String>>,
    /// Where the value comes from when not given: `env:NAME` or `ssm:/parameter/path`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(env:[A-Za-z_][A-Za-z0-9_]*|ssm:/.+)$"))]
    pub from: Option<Sp<String>>,
}

impl Param {
    /// Whether a value must be supplied before the run starts.
    pub fn is_required(&self) -> bool {
        self.required.unwrap_or(self.default.is_none())
    }

    /// The parsed `from:` source.
    pub fn source(&self) -> Option<ParamSource<'_>> {
        let from = self.from.as_ref()?;
        if let Some(name) = from.strip_prefix("env:") {
            Some(ParamSource::Env(name))
        } else {
            from.strip_prefix("ssm:").map(ParamSource::Ssm)
        }
    }
}

/// Where a parameter value is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamSource<'a> {
    /// An environment variable.
    Env(&'a str),
    /// An SSM Parameter Store parameter (decrypted).
    Ssm(&'a str),
}

/// Parameter types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    /// Text.
    String,
    /// Whole number.
    Integer,
    /// Number.
    Number,
    /// true / false.
    Boolean,
    /// One of `values`.
    Enum,
    /// Text that is never shown, logged or journaled.
    Secret,
}

impl ParamType {
    /// Names as written in YAML.
    pub const ALL: [(&'static str, ParamType); 6] = [
        ("string", ParamType::String),
        ("integer", ParamType::Integer),
        ("number", ParamType::Number),
        ("boolean", ParamType::Boolean),
        ("enum", ParamType::Enum),
        ("secret", ParamType::Secret),
    ];

    /// The YAML name.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, t)| *t == self)
            .map_or("string", |(n, _)| n)
    }
}

/// One rung of the escalation ladder.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Escalation {
    /// Time since the start of the run after which this contact is due (`0m`, `30m`, `2h`).
    pub after: Sp<DurationSpec>,
    /// Who to contact.
    pub to: String,
}

/// An alert this runbook answers (`runbook match`, `exec --alert`, `runbook serve`).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// Where the alert comes from.
    pub source: Sp<AlertSource>,
    /// CEL condition over the normalised `alert` (`alert.name`, `alert.state`,
    /// `alert.labels.<k>`, `alert.dimensions.<k>`, `alert.value`, `alert.threshold`, ...);
    /// absent: every alert of the source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<Sp<String>>,
    /// Parameter name → CEL expression over `alert` giving its value.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub params: IndexMap<String, Sp<String>>,
}

/// Kinds of alert payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertSource {
    /// A CloudWatch alarm state change (through SNS or EventBridge).
    Cloudwatch,
    /// A Prometheus Alertmanager webhook.
    Alertmanager,
    /// Any other JSON webhook.
    Webhook,
}

impl AlertSource {
    /// Names as written in YAML.
    pub const ALL: [(&'static str, AlertSource); 3] = [
        ("cloudwatch", AlertSource::Cloudwatch),
        ("alertmanager", AlertSource::Alertmanager),
        ("webhook", AlertSource::Webhook),
    ];

    /// The YAML name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertSource::Cloudwatch => "cloudwatch",
            AlertSource::Alertmanager => "alertmanager",
            AlertSource::Webhook => "webhook",
        }
    }
}

/// A time budget: the steps that name it should be done `within` this long after the
/// run started.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// Name the steps use in `phase:` (snake_case).
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_]*$"))]
    pub id: Sp<String>,
    /// What the phase achieves, e.g. `Situation assessed`.
    pub title: String,
    /// Deadline from the start of the run (`5m`, `1h`).
    pub within: Sp<DurationSpec>,
}

/// A duration written as text: `500ms`, `30s`, `5m`, `1h30m`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct DurationSpec {
    /// As written.
    pub text: String,
    /// Parsed.
    #[serde(skip)]
    pub value: Duration,
}

impl JsonSchema for DurationSpec {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration such as `500ms`, `30s`, `5m`, `1h30m`.",
            "pattern": r"^\s*([0-9]+\s*(ns|us|ms|s|sec|m|min|h|hr|d)\s*)+$"
        })
    }
}

/// The four kinds of step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Read-only probe with an expectation; runs live in a dry run.
    Check,
    /// A change to the system; always confirmed, never run in a dry run.
    Act,
    /// A post-condition, polled until it holds or times out.
    Verify,
    /// A decision that picks the next step.
    Branch,
}

impl StepKind {
    /// Names as written in YAML.
    pub const ALL: [(&'static str, StepKind); 4] = [
        ("check", StepKind::Check),
        ("act", StepKind::Act),
        ("verify", StepKind::Verify),
        ("branch", StepKind::Branch),
    ];

    /// The YAML name.
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Check => "check",
            StepKind::Act => "act",
            StepKind::Verify => "verify",
            StepKind::Branch => "branch",
        }
    }
}

/// One step of the procedure.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Unique id, snake_case; other steps and templates refer to it (`steps.<id>`).
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_]*$"))]
    pub id: Sp<String>,
    /// What the step is for.
    pub kind: Sp<StepKind>,
    /// One line shown to the operator.
    pub title: Sp<String>,
    /// Longer explanation, shown by `show`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Steps that must be resolved before this one; `[]` makes it a root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs: Option<Vec<Sp<String>>>,
    /// The time budget (an id from the runbook's `phases`) this step belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<Sp<String>>,
    /// The action (exactly one for check, act and verify; none for branch).
    #[serde(flatten)]
    pub action: Option<Action>,
    /// Values taken from the action's result, by name.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub capture: IndexMap<String, Capture>,
    /// CEL condition that must hold for the step to succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect: Option<Sp<String>>,
    /// What happens when the step fails (default `abort`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_fail: Option<Sp<OnFail>>,
    /// Polling for `verify` steps (and retries for others).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Upper bound for the whole step, retries included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Sp<DurationSpec>>,
    /// Question shown before an `act` runs (template).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirm: Option<Sp<String>>,
    /// Whether this `act` may run at the same time as other acts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub concurrent: bool,
    /// Branch cases, tried in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cases: Vec<Case>,
    /// Branch target when no case holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<Sp<String>>,
}

/// A closed set of actions; each is built into a runner by the executor.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Run a command with bash.
    Shell(ShellAction),
    /// AWS Systems Manager Run Command over instances.
    SsmCommand(SsmCommandAction),
    /// Start an AWS Systems Manager Automation document and wait for it.
    SsmAutomation(SsmAutomationAction),
    /// An HTTP request.
    Http(HttpAction),
    /// Wait for a duration.
    Wait(Sp<DurationSpec>),
    /// Instructions a person carries out and acknowledges.
    Manual(Sp<String>),
}

impl Action {
    /// The YAML key of every action.
    pub const KEYS: [&'static str; 6] = [
        "shell",
        "ssm_command",
        "ssm_automation",
        "http",
        "wait",
        "manual",
    ];

    /// The YAML key of this action.
    pub fn key(&self) -> &'static str {
        match self {
            Action::Shell(_) => "shell",
            Action::SsmCommand(_) => "ssm_command",
            Action::SsmAutomation(_) => "ssm_automation",
            Action::Http(_) => "http",
            Action::Wait(_) => "wait",
            Action::Manual(_) => "manual",
        }
    }
}

/// `shell: "command"` or `shell: {run, env, cwd, interpreter}`.
#[derive(Debug, Clone, Serialize)]
pub struct ShellAction {
    /// The script (template; inserted values are shell-quoted).
    pub run: Sp<String>,
    /// Extra environment variables (values are templates).
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub env: IndexMap<String, Sp<String>>,
    /// Working directory (template).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<Sp<String>>,
    /// Interpreter run as `<interpreter> -c <script>` (default `bash`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<String>,
}

impl JsonSchema for ShellAction {
    fn schema_name() -> Cow<'static, str> {
        "ShellAction".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A bash command, or an object with the command and its environment.",
            "anyOf": [
                { "type": "string", "description": "The script (template; inserted values are shell-quoted)." },
                {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["run"],
                    "properties": {
                        "run": { "type": "string", "description": "The script (template; inserted values are shell-quoted)." },
                        "env": { "type": "object", "additionalProperties": { "type": "string" }, "description": "Extra environment variables (values are templates)." },
                        "cwd": { "type": "string", "description": "Working directory (template)." },
                        "interpreter": { "type": "string", "description": "Interpreter run as `<interpreter> -c <script>` (default `bash`)." }
                    }
                }
            ]
        })
    }
}

/// An HTTP request.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpAction {
    /// Method (default GET).
    #[serde(default)]
    pub method: HttpMethod,
    /// URL (template; inserted values are percent-encoded).
    pub url: Sp<String>,
    /// Request headers (values are templates).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub headers: IndexMap<String, Sp<String>>,
    /// Request body (template).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Sp<String>>,
    /// Expected status codes (default: any 2xx).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status: Vec<u16>,
}

/// HTTP methods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
#[allow(missing_docs)]
pub enum HttpMethod {
    #[default]
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
}

impl HttpMethod {
    /// Names as written in YAML.
    pub const ALL: [(&'static str, HttpMethod); 7] = [
        ("GET", HttpMethod::Get),
        ("HEAD", HttpMethod::Head),
        ("POST", HttpMethod::Post),
        ("PUT", HttpMethod::Put),
        ("PATCH", HttpMethod::Patch),
        ("DELETE", HttpMethod::Delete),
        ("OPTIONS", HttpMethod::Options),
    ];

    /// The method name.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("GET", |(n, _)| n)
    }
}

/// AWS Systems Manager Run Command.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SsmCommandAction {
    /// SSM document (default `AWS-RunShellScript`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
    /// Commands for the document's `commands` parameter (templates, shell-quoted values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<Sp<String>>,
    /// Other document parameters (values are templates).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub parameters: IndexMap<String, Vec<Sp<String>>>,
    /// Target instances by id (templates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instance_ids: Vec<Sp<String>>,
    /// Target instances by tag: key to accepted values.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub tags: IndexMap<String, Vec<Sp<String>>>,
    /// How many instances run at once (`10` or `25%`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<String>,
    /// How many failures stop the command (`0` or `10%`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_errors: Option<String>,
    /// S3 bucket for full output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_s3_bucket: Option<String>,
    /// Key prefix in the output bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_s3_prefix: Option<String>,
    /// CloudWatch Logs group for output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloudwatch_log_group: Option<String>,
    /// Comment recorded with the command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<Sp<String>>,
}

/// AWS Systems Manager Automation.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SsmAutomationAction {
    /// Automation document name, e.g. `AWS-RestartEC2Instance`.
    pub document: Sp<String>,
    /// Document version (default: the default version).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document_version: Option<String>,
    /// Document parameters (values are templates).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub parameters: IndexMap<String, Vec<Sp<String>>>,
}

/// A value taken from an action's result.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Capture {
    /// Where the name is in the file.
    #[serde(skip)]
    #[schemars(skip)]
    pub name_span: Span,
    /// How the value is extracted.
    #[serde(flatten)]
    pub source: CaptureSource,
    /// For `regex` and `json`: convert the value found (`int`, `float`, `bool`, `text`),
    /// so conditions compare it as that type. A regex finds text; JSON is typed only at
    /// run time.
    #[serde(rename = "as", skip_serializing_if = "Option::is_none")]
    pub convert: Option<CaptureType>,
    /// Mask this value everywhere it would be shown or recorded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secret: bool,
}

/// How a capture is extracted from the output.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CaptureSource {
    /// The whole standard output, converted to a type.
    Stdout(CaptureType),
    /// A JMESPath expression over standard output parsed as JSON (as in `aws --query`).
    Json(Sp<String>),
    /// A regular expression over standard output; the value is its first named group.
    Regex(Sp<String>),
}

/// Conversions for `stdout` captures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CaptureType {
    /// Trimmed text.
    Text,
    /// Integer.
    Int,
    /// Floating point number.
    Float,
    /// `true`/`false` (also `yes`/`no`, `1`/`0`, `t`/`f`).
    Bool,
    /// Non-empty lines, as a list.
    Lines,
    /// Parsed JSON.
    Json,
}

impl CaptureType {
    /// Names as written in YAML.
    pub const ALL: [(&'static str, CaptureType); 6] = [
        ("text", CaptureType::Text),
        ("int", CaptureType::Int),
        ("float", CaptureType::Float),
        ("bool", CaptureType::Bool),
        ("lines", CaptureType::Lines),
        ("json", CaptureType::Json),
    ];

    /// The YAML name.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, t)| *t == self)
            .map_or("text", |(n, _)| n)
    }
}

/// What happens when a step fails.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum OnFail {
    /// `abort`, `continue` or `escalate`.
    Simple(OnFailSimple),
    /// Go to another step instead of the ones that follow.
    Goto {
        /// Target step id.
        goto: Sp<String>,
    },
    /// Re-run an earlier part of the procedure, at most `attempts` times.
    RetryFrom {
        /// The earlier step to start again from.
        retry_from: Sp<String>,
        /// How many times the loop may run again.
        attempts: u32,
    },
}

impl OnFail {
    /// In words, as written: `abort`, `goto fix`, `retry_from check (3 times)`.
    pub fn text(&self) -> String {
        match self {
            OnFail::Simple(OnFailSimple::Abort) => "abort".into(),
            OnFail::Simple(OnFailSimple::Continue) => "continue".into(),
            OnFail::Simple(OnFailSimple::Escalate) => "escalate".into(),
            OnFail::Goto { goto } => format!("goto {}", goto.value),
            OnFail::RetryFrom {
                retry_from,
                attempts,
            } => format!("retry_from {} ({attempts} times)", retry_from.value),
        }
    }
}

/// The simple failure routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnFailSimple {
    /// Stop the run (exit 1).
    Abort,
    /// Record the failure and go on as if the step had succeeded.
    Continue,
    /// Show the escalation contacts due now and stop (exit 1).
    Escalate,
}

/// Polling or retry policy.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Total attempts, the first included.
    pub attempts: u32,
    /// Time between attempts (default 5s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<Sp<DurationSpec>>,
    /// Multiplier applied to the interval after each attempt (default 1.0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff: Option<f64>,
}

/// One case of a branch.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// CEL condition.
    pub when: Sp<String>,
    /// Step to continue with when the condition holds.
    pub goto: Sp<String>,
}

/// The JSON Schema of the format, pretty-printed, with a trailing newline.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Runbook);
    let mut value = serde_json::to_value(&schema).unwrap_or_default();
    offer_action_keys(&mut value);
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
    text.push('\n');
    text
}

/// The actions of a step are a flattened enum, which schemars writes as a `oneOf` under
/// `anyOf`; editors (yaml-language-server) do not offer keys from there. List each action
/// key among the step's own properties too, so `shell`, `http`, `wait`, `manual`,
/// `ssm_command` and `ssm_automation` complete like `capture` or `expect` (the `oneOf`
/// still says a step has at most one).
fn offer_action_keys(schema: &mut serde_json::Value) {
    let Some(step) = schema.pointer_mut("/$defs/Step") else {
        return;
    };
    let branches: Vec<serde_json::Value> = step
        .pointer("/anyOf/0/oneOf")
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    let Some(props) = step.get_mut("properties").and_then(|p| p.as_object_mut()) else {
        return;
    };
    for b in branches {
        let description = b.get("description").cloned();
        let Some(own) = b.get("properties").and_then(|p| p.as_object()) else {
            continue;
        };
        for (key, sub) in own {
            let mut sub = sub.clone();
            if let (Some(d), Some(o)) = (&description, sub.as_object_mut()) {
                o.entry("description").or_insert_with(|| d.clone());
            }
            props.entry(key.clone()).or_insert(sub);
        }
    }
}
