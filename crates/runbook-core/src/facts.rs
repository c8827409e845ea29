//! What can be known about a step from the step alone: the values it has besides its
//! captures (and their types, for type-checking conditions), the fields that are
//! templates (with the escaping each gets), and whether a check's command looks like it
//! changes something. The validator, `plan`/`show` and the executor share these.

use std::sync::LazyLock;

use regex::Regex;

use crate::cond;
use crate::diag::{Code, Diagnostic};
use crate::model::{Action, HttpMethod, Step, StepKind};

/// Values every step has, besides its captures.
pub const STEP_BUILTINS: &[&str] = &[
    "exit_code",
    "stdout",
    "stderr",
    "status",
    "duration_ms",
    "attempt",
];
/// Extra values of `ssm_command` steps.
pub const SSM_BUILTINS: &[&str] = &["instances", "succeeded", "failed", "command_id"];
/// Extra values of `ssm_automation` steps.
pub const AUTOMATION_BUILTINS: &[&str] = &["execution_id", "outputs", "step_statuses"];
/// Fields of the normalised alert trigger expressions read (`alert.<field>`), with their
/// types. `labels`, `dimensions` and `annotations` map names to text; `raw` is the payload.
pub const ALERT_FIELDS: &[(&str, cond::Ty)] = &[
    ("source", cond::Ty::String),
    ("kind", cond::Ty::String),
    ("name", cond::Ty::String),
    ("state", cond::Ty::String),
    ("reason", cond::Ty::String),
    ("time", cond::Ty::String),
    ("fingerprint", cond::Ty::String),
    ("value", cond::Ty::Double),
    ("threshold", cond::Ty::Double),
    ("metric", cond::Ty::String),
    ("namespace", cond::Ty::String),
    ("labels", cond::Ty::Map),
    ("dimensions", cond::Ty::Map),
    ("annotations", cond::Ty::Map),
    ("raw", cond::Ty::Dyn),
];

/// Values about the run, readable in templates as `run.<name>`.
pub const RUN_VARS: &[&str] = &["id", "operator", "mode", "started_at", "runbook"];

/// A check that looks mutating is dangerous: dry runs execute checks live.
pub(crate) fn mutating_check(step: &Step) -> Option<Diagnostic> {
    if step.kind.value != StepKind::Check {
        return None;
    }
    let (span, what) = mutation(step)?;
    Some(
        Diagnostic::new(Code::MutatingCheck, span, format!("check `{}` looks like it changes something (`{what}`)", step.id.value))
            .label("mutating command in a check")
            .help("checks run live in a dry run; make this an `act` step (confirmed, skipped in dry runs) or use a read-only command"),
    )
}

/// What in a step's action looks like it changes the system (the RB027 patterns: a
/// mutating shell or Run Command command, an HTTP method other than GET/HEAD/OPTIONS),
/// whatever the step's kind; with where it is.
pub(crate) fn mutation(step: &Step) -> Option<(crate::diag::Span, String)> {
    match &step.action {
        Some(Action::Shell(sh)) => mutating_command(&sh.run).map(|m| (sh.run.span, m.to_string())),
        Some(Action::SsmCommand(c)) => c
            .commands
            .iter()
            .find_map(|cmd| mutating_command(cmd).map(|m| (cmd.span, m.to_string()))),
        Some(Action::Http(h))
            if !matches!(
                h.method,
                HttpMethod::Get | HttpMethod::Head | HttpMethod::Options
            ) =>
        {
            Some((h.url.span, format!("HTTP {}", h.method.as_str())))
        }
        _ => None,
    }
}

/// Values a step provides besides its captures.
pub fn builtins(step: &Step) -> &'static [&'static str] {
    static SSM: LazyLock<Vec<&'static str>> =
        LazyLock::new(|| STEP_BUILTINS.iter().chain(SSM_BUILTINS).copied().collect());
    static AUTOMATION: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
        STEP_BUILTINS
            .iter()
            .chain(AUTOMATION_BUILTINS)
            .copied()
            .collect()
    });
    match step.action {
        Some(Action::SsmCommand(_)) => &SSM,
        Some(Action::SsmAutomation(_)) => &AUTOMATION,
        _ => STEP_BUILTINS,
    }
}

/// The static type of `steps.<id>.<field>` (or of `field` in the step's own `expect`):
/// captures by their conversion (a regex capture is text, JSON is dynamic), built-ins by
/// their nature; what an action adds (SSM) is dynamic.
pub(crate) fn value_type(step: &Step, field: &str) -> cond::Ty {
    use crate::model::{CaptureSource, CaptureType};
    if let Some(c) = step.capture.get(field) {
        let declared = match (&c.source, c.convert) {
            (CaptureSource::Stdout(t), _) => Some(*t),
            (_, Some(t)) => Some(t),
            _ => None,
        };
        return match (&c.source, declared) {
            (_, Some(t)) => match t {
                CaptureType::Text => cond::Ty::String,
                CaptureType::Int => cond::Ty::Int,
                CaptureType::Float => cond::Ty::Double,
                CaptureType::Bool => cond::Ty::Bool,
                CaptureType::Lines => cond::Ty::List,
                CaptureType::Json => cond::Ty::Dyn,
            },
            (CaptureSource::Regex(_), None) => cond::Ty::String,
            (_, None) => cond::Ty::Dyn,
        };
    }
    match field {
        "stdout" | "stderr" => cond::Ty::String,
        "duration_ms" | "attempt" => cond::Ty::Int,
        // Null when there is none (no command, no HTTP response); null compares with any.
        "exit_code" | "status" => cond::Ty::Int,
        _ => cond::Ty::Dyn,
    }
}

static MUTATING: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        r"\baws\s+[a-z0-9-]+\s+(create|update|delete|put|modify|terminate|reboot|stop|start|register|deregister|restore|reset|attach|detach|run|send|cancel)-[a-z0-9-]+",
        r"(^|[\s;&|(])rm\s",
        r"(^|[\s;&|(])(kill|pkill|killall)\s",
        r"\bsystemctl\s+(restart|stop|start|reload|kill|disable|enable)\b",
        r"\bpg_(terminate|cancel)_backend\b",
        r"(?i)\b(update\s+\w+\s+set|delete\s+from|drop\s+(table|database|index|schema)|truncate\s+\w|insert\s+into|alter\s+(table|system|database))\b",
        r"\bdocker\s+(system\s+prune|rm|rmi|kill|stop|restart)\b",
        r"\s-delete\b",
        r"\bkubectl\s+(delete|apply|scale|rollout\s+restart|drain|cordon)\b",
    ]
    .iter()
    .filter_map(|p| Regex::new(p).ok())
    .collect()
});

/// AWS operations whose verb looks mutating but that only read (Logs Insights queries).
const READ_ONLY_AWS: &[&str] = &["logs start-query", "logs stop-query"];

/// The first part of a command that looks like it changes the system.
pub fn mutating_command(command: &str) -> Option<&str> {
    MUTATING
        .iter()
        .find_map(|re| {
            re.find_iter(command).find(|m| {
                let words: Vec<&str> = m.as_str().split_whitespace().skip(1).collect();
                !READ_ONLY_AWS.contains(&words.join(" ").as_str())
            })
        })
        .map(|m| m.as_str().trim())
}
