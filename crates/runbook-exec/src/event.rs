//! What a run reports: one [`Event`] per thing that happened, in order.
//!
//! The same events feed the terminal display, `--output json` (one event per line) and
//! the journal. Every text in an event has been through the run's secret mask before it
//! leaves the engine. The JSON shape is documented in `docs/events.md`.

use std::time::SystemTime;

use runbook_core::render::RenderedAction;
use serde::{Deserialize, Serialize};

/// Live run or dry run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Everything runs.
    Live,
    /// Checks run; acts are shown, not executed.
    DryRun,
}

impl Mode {
    /// `live` or `dry-run`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Live => "live",
            Mode::DryRun => "dry-run",
        }
    }
}

/// Where a run's runbook came from, who runs it, with what.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// Path of the runbook file as given.
    #[serde(default)]
    pub path: String,
    /// sha256 of the file's bytes (hex).
    #[serde(default)]
    pub sha256: String,
    /// Git commit of the file's repository, when it is in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    /// Whether the file has uncommitted changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_dirty: Option<bool>,
    /// `--operator`, else user@host.
    #[serde(default)]
    pub operator: String,
    /// Version of runbook that ran it.
    #[serde(default)]
    pub version: String,
    /// The alert that started the run (`exec --alert`, `runbook serve`): source, name,
    /// state, fingerprint, reason, labels, dimensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<serde_json::Value>,
}

/// Where a step's state ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not decided yet (in a summary: never reached).
    Pending,
    /// Started and not finished.
    Running,
    /// Action done, captures taken, expectation held.
    Succeeded,
    /// Action, capture or expectation failed.
    Failed,
    /// Not run: no incoming route was taken, or the operator skipped it.
    Skipped,
    /// The operator answered no.
    Declined,
    /// Dry run: an act that was shown, not executed.
    NotExecuted,
}

impl Status {
    /// The word shown to people.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Succeeded => "ok",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
            Status::Declined => "declined",
            Status::NotExecuted => "not executed",
        }
    }
}

/// Why a running action was stopped before it finished. The outcome of an act stopped
/// this way is unknown (it may have been partly applied), so `resume` treats it like an
/// act in flight at a crash: never run again without an explicit decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Killed {
    /// The step's `timeout` ran out.
    Timeout,
    /// The run was interrupted a second time (the second Ctrl-C kills running commands).
    Interrupt,
    /// The operator aborted the run while the action ran.
    Abort,
    /// The run stopped because its journal could not be written.
    RunStopped,
}

impl Killed {
    /// Why, for people.
    pub fn as_str(self) -> &'static str {
        match self {
            Killed::Timeout => "killed at its timeout",
            Killed::Interrupt => "killed by the second interrupt",
            Killed::Abort => "killed when the run was aborted",
            Killed::RunStopped => "killed when the run stopped",
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Every step that had to run succeeded (or failed with a route that goes on).
    Succeeded,
    /// A step failed and its route stopped the run.
    Failed,
    /// A step failed with `on_fail: escalate`.
    Escalated,
    /// The operator declined or aborted.
    Aborted,
    /// A condition could not be evaluated: the runbook is wrong, not the system.
    /// No `on_fail` route is taken, so a typo never escalates to anyone.
    RunbookError,
    /// Stopped by a signal.
    Interrupted,
}

impl RunStatus {
    /// The word shown to people.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Escalated => "escalated",
            RunStatus::RunbookError => "runbook error",
            RunStatus::Aborted => "aborted",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// What the operator (or a flag standing in for them) answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// Go ahead (for a manual step: done).
    Approve,
    /// Do not do it; the run stops (exit 3).
    Decline,
    /// Leave this step out and go on.
    Skip,
    /// Stop the run now (exit 3).
    Abort,
}

/// Who answered a question: the operator, or an approval given in advance (the CLI's
/// `--yes` and `--auto-manual`; this crate does not know their spelling).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", from = "AnsweredByRecord")]
pub enum AnsweredBy {
    /// This operator, at the prompt.
    Operator(String),
    /// Every act was approved in advance.
    AutoApproveActs,
    /// Every manual step was acknowledged in advance.
    AutoAcknowledgeManual,
}

/// What journals hold: typed since format 2; format 1 wrote the operator's name or the
/// flag (`--yes`, `--auto-manual`) as a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum AnsweredByRecord {
    Typed(AnsweredByTyped),
    Legacy(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum AnsweredByTyped {
    Operator(String),
    AutoApproveActs,
    AutoAcknowledgeManual,
}

impl From<AnsweredByRecord> for AnsweredBy {
    fn from(r: AnsweredByRecord) -> Self {
        match r {
            AnsweredByRecord::Typed(AnsweredByTyped::Operator(o)) => AnsweredBy::Operator(o),
            AnsweredByRecord::Typed(AnsweredByTyped::AutoApproveActs) => {
                AnsweredBy::AutoApproveActs
            }
            AnsweredByRecord::Typed(AnsweredByTyped::AutoAcknowledgeManual) => {
                AnsweredBy::AutoAcknowledgeManual
            }
            AnsweredByRecord::Legacy(s) if s == "--yes" => AnsweredBy::AutoApproveActs,
            AnsweredByRecord::Legacy(s) if s == "--auto-manual" => {
                AnsweredBy::AutoAcknowledgeManual
            }
            AnsweredByRecord::Legacy(s) => AnsweredBy::Operator(s),
        }
    }
}

/// Which route a decision took, for replay (the `reason` is for people).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Chosen {
    /// Branch case `k` (0-based).
    Case(usize),
    /// The branch's default.
    Default,
    /// No case held and there is no default: the branch leads nowhere.
    Nowhere,
    /// Dry run: the branch could not decide, every route is shown.
    Every,
    /// A failure followed its `on_fail: goto`.
    FailGoto,
    /// `retry_from` ran out of rounds.
    GaveUp,
}

/// Why a step was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Skip {
    /// No route into it was taken (a branch chose another, a step before it failed or
    /// was skipped).
    Route,
    /// The operator answered skip.
    Operator,
    /// The run started at a later step (`--from`).
    BeforeStart,
}

/// A contact on the escalation ladder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// Due this long after the start (as written).
    pub after: String,
    /// Who.
    pub to: String,
}

/// Counts per final status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Steps that succeeded.
    pub succeeded: usize,
    /// Steps that failed.
    pub failed: usize,
    /// Steps skipped.
    pub skipped: usize,
    /// Acts declined.
    pub declined: usize,
    /// Dry-run acts not executed.
    pub not_executed: usize,
    /// Steps never reached.
    pub pending: usize,
}

/// One thing that happened during a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The run begins.
    RunStarted {
        /// Run id.
        run_id: String,
        /// Runbook name.
        runbook: String,
        /// Runbook title.
        title: String,
        /// Live or dry run.
        mode: Mode,
        /// Parameter values, secrets masked.
        params: serde_json::Map<String, serde_json::Value>,
        /// Number of steps in the runbook.
        steps: usize,
        /// The step ids, in list order (to compare when the file changes before a resume).
        #[serde(default)]
        step_ids: Vec<String>,
        /// Where the runbook came from and who runs it.
        #[serde(flatten)]
        origin: Origin,
    },
    /// A step begins (or begins another attempt).
    StepStarted {
        /// Step id.
        step: String,
        /// check, act, verify or branch.
        kind: String,
        /// Rendered title.
        title: String,
        /// 1-based attempt.
        attempt: u32,
        /// The rendered action, secrets masked.
        #[serde(skip_serializing_if = "Option::is_none")]
        action: Option<RenderedAction>,
        /// The confirmation question of an act, rendered and masked.
        #[serde(skip_serializing_if = "Option::is_none")]
        confirm: Option<String>,
    },
    /// A line of output from a running step.
    Output {
        /// Step id.
        step: String,
        /// stdout or stderr.
        stream: Stream,
        /// The line, without its newline, secrets masked.
        line: String,
    },
    /// A value captured from a step's result.
    Captured {
        /// Step id.
        step: String,
        /// Capture name.
        name: String,
        /// The value (`***` for secrets).
        value: serde_json::Value,
    },
    /// A condition was evaluated (`expect` or a branch case).
    Condition {
        /// Step id.
        step: String,
        /// The CEL expression.
        expr: String,
        /// Whether it held.
        result: bool,
        /// The values of the names it read.
        values: serde_json::Map<String, serde_json::Value>,
    },
    /// An attempt failed and another will follow.
    AttemptFailed {
        /// Step id.
        step: String,
        /// The attempt that failed.
        attempt: u32,
        /// Of how many.
        attempts: u32,
        /// Why.
        reason: String,
        /// Wait before the next attempt.
        retry_in_ms: u64,
        /// Exit code of the attempt's command, for replay.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        /// HTTP status of the attempt's request, for replay.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        http_status: Option<u16>,
    },
    /// The operator was asked something.
    Asked {
        /// Step id.
        step: String,
        /// The question.
        question: String,
    },
    /// The operator (or an approval given in advance) answered.
    Answered {
        /// Step id.
        step: String,
        /// The answer.
        answer: Answer,
        /// Who.
        by: AnsweredBy,
    },
    /// A branch chose its route, or a failure routed the run.
    Decision {
        /// Step id.
        step: String,
        /// The step the run goes on with (none: the branch leads nowhere).
        #[serde(skip_serializing_if = "Option::is_none")]
        goto: Option<String>,
        /// Why, for people: `case 1: ...`, `default`, `on_fail`.
        reason: String,
        /// Which route, for replay (journal format 2).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chosen: Option<Chosen>,
        /// Steps this decision leaves out.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        skips: Vec<String>,
    },
    /// `retry_from` sends the run back to an earlier step.
    Rewind {
        /// The step that failed.
        step: String,
        /// Where the run starts again.
        from: String,
        /// This is loop number `round` of at most `of`.
        round: u32,
        /// Maximum rounds.
        of: u32,
    },
    /// A step reached its end.
    StepFinished {
        /// Step id.
        step: String,
        /// Final status.
        status: Status,
        /// Exit code of a shell step.
        #[serde(skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        /// Wall time, attempts and waits included.
        duration_ms: u64,
        /// Why it failed or was skipped.
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// The action was killed before it finished: its outcome is unknown.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        killed: Option<Killed>,
        /// Why it was skipped (journal format 2).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        skip: Option<Skip>,
        /// Its captures (secret ones `***`), for replay (journal format 2).
        #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
        captures: serde_json::Map<String, serde_json::Value>,
        /// HTTP status of an `http` step.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        http_status: Option<u16>,
        /// The end of its standard error (at most 4 KiB), for replay.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        stderr_tail: String,
    },
    /// Escalation contacts shown after `on_fail: escalate`.
    Escalation {
        /// Step id.
        step: String,
        /// Contacts due now.
        due: Vec<Contact>,
        /// The next rung, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        next: Option<Contact>,
    },
    /// A signal arrived.
    Signal {
        /// SIGINT, SIGTERM.
        signal: String,
        /// What the engine does about it.
        action: String,
    },
    /// The first step of a phase (a time budget) started.
    PhaseStarted {
        /// Phase id.
        phase: String,
        /// Its title.
        title: String,
        /// Its deadline, from the start of the run.
        within_ms: u64,
        /// Run time so far.
        elapsed_ms: u64,
    },
    /// A phase's deadline passed while steps of it were still to run.
    PhaseOverrun {
        /// Phase id.
        phase: String,
        /// Its title.
        title: String,
        /// Its deadline, from the start of the run.
        within_ms: u64,
        /// Run time so far.
        elapsed_ms: u64,
    },
    /// Every step of a phase that will run has ended, or the run ended before they did.
    PhaseFinished {
        /// Phase id.
        phase: String,
        /// Its title.
        title: String,
        /// Its deadline, from the start of the run.
        within_ms: u64,
        /// Run time when it finished.
        elapsed_ms: u64,
        /// It finished after its deadline (or the deadline passed before the run stopped).
        overrun: bool,
        /// Every step of it that could run did; false when the run stopped first.
        complete: bool,
    },
    /// `runbook resume` continues the run.
    Resumed {
        /// Operator who resumed it.
        by: String,
        /// Steps already finished, not run again.
        done: Vec<String>,
        /// Steps that were in flight at the interruption.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        inflight: Vec<String>,
        /// Bytes of an incomplete last line set aside.
        #[serde(default, skip_serializing_if = "is_zero")]
        torn_bytes: usize,
        /// The runbook file changed since the run started (resumed with --force).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        runbook_changed: bool,
    },
    /// The run ended.
    RunFinished {
        /// How.
        status: RunStatus,
        /// The exit code of the process that ran it, when the front end has a table of
        /// them (`Options::exit_code`); the library has none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        /// Wall time.
        duration_ms: u64,
        /// Counts per status.
        summary: Summary,
    },
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Receives every event of a run, in order, as it happens.
///
/// `emit` is called from the engine's tasks; an implementation that writes to a file
/// must have the record on disk before returning (the journal fsyncs), because the engine
/// acts on the event right after.
pub trait Sink: Send + Sync {
    /// Take one event.
    fn emit(&self, at: SystemTime, event: &Event);

    /// Why this sink can no longer record (a journal that cannot be written). The engine
    /// starts nothing more once a sink reports an error.
    fn error(&self) -> Option<String> {
        None
    }
}

/// A sink that forwards to several sinks in order (the journal first).
#[derive(Default)]
pub struct Fanout(pub Vec<Box<dyn Sink>>);

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fanout({} sinks)", self.0.len())
    }
}

impl Sink for Fanout {
    fn emit(&self, at: SystemTime, event: &Event) {
        for s in &self.0 {
            s.emit(at, event);
        }
    }

    fn error(&self) -> Option<String> {
        self.0.iter().find_map(|s| s.error())
    }
}
