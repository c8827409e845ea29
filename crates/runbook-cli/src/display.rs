//! How a run is shown: the human display (one line per step start and end, captures,
//! conditions, decisions, spinners on a terminal, the summary table) and `--output json`
//! (one event per line). `audit show` replays a journal through the same display.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anstyle::{AnsiColor, Style};
use runbook_core::model::Runbook;
use runbook_exec::event::{
    AnsweredBy, Contact, Event, Mode, RunStatus, Sink, Skip, Status, Stream,
};
use runbook_exec::{Answer, Report};
use serde::Serialize;

use crate::table;
use crate::terminal::Screen;

/// Who answered, as a person reads it: the operator, or the flag that approved in advance.
pub(crate) fn answerer(by: &AnsweredBy) -> &str {
    match by {
        AnsweredBy::Operator(name) => name,
        AnsweredBy::AutoApproveActs => "--yes",
        AnsweredBy::AutoAcknowledgeManual => "--auto-manual",
    }
}

/// `--output json`: one event per line.
pub(crate) struct JsonLines;

#[derive(Serialize)]
pub(crate) struct Line<'a> {
    ts: String,
    #[serde(flatten)]
    event: &'a Event,
}

impl Sink for JsonLines {
    fn emit(&self, at: SystemTime, event: &Event) {
        let line = Line {
            ts: humantime::format_rfc3339_millis(at).to_string(),
            event,
        };
        if let Ok(text) = serde_json::to_string(&line) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
    }
}

/// A step's output lines: of its previous attempt, of this one, and which attempt this is.
type Attempts = (Vec<String>, Vec<String>, u32);

/// The terminal display: one line per step, live output, decisions.
pub(crate) struct Human {
    color: bool,
    kinds: Mutex<std::collections::HashMap<String, String>>,
    /// Prefix every line with the event's time (for `audit show`).
    timestamps: bool,
    prefix: Mutex<String>,
    /// Spinners for running steps, drawn on a terminal only.
    progress: Option<Arc<Screen>>,
    bars: Mutex<std::collections::HashMap<String, indicatif::ProgressBar>>,
    /// `--from STEP`: how steps skipped before it are described.
    from: Option<String>,
    /// Acts are asked about: their `confirm` text is shown as the question, not here.
    asking_acts: bool,
    /// Per step: the output lines of the previous attempt and of this one, so a polling
    /// step shows its full output once and afterwards only the lines that changed.
    attempts: Mutex<std::collections::HashMap<String, Attempts>>,
}

impl Human {
    pub(crate) fn new(rb: Option<&Runbook>, color: bool, timestamps: bool) -> Self {
        Human {
            color,
            kinds: Mutex::new(
                rb.map(|rb| {
                    rb.steps
                        .iter()
                        .map(|s| (s.id.value.clone(), s.kind.value.as_str().to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            ),
            timestamps,
            prefix: Mutex::new(String::new()),
            progress: None,
            bars: Mutex::new(std::collections::HashMap::new()),
            from: None,
            asking_acts: false,
            attempts: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Acts will be asked about on the terminal.
    pub(crate) fn asking_acts(mut self, asks: bool) -> Self {
        self.asking_acts = asks;
        self
    }

    /// Whether an output line repeats the same line of the step's previous attempt.
    fn repeated(&self, step: &str, line: &str) -> bool {
        let Ok(mut a) = self.attempts.lock() else {
            return false;
        };
        let (prev, cur, attempt) = a.entry(step.to_string()).or_default();
        let same = *attempt > 1 && prev.get(cur.len()).is_some_and(|p| p == line);
        cur.push(line.to_string());
        same
    }

    fn next_attempt(&self, step: &str, attempt: u32) {
        if let Ok(mut a) = self.attempts.lock() {
            let (prev, cur, n) = a.entry(step.to_string()).or_default();
            if attempt > 1 {
                *prev = std::mem::take(cur);
            } else {
                prev.clear();
                cur.clear();
            }
            *n = attempt;
        }
    }

    /// The run was started with `--from STEP`.
    pub(crate) fn starting_from(mut self, step: Option<String>) -> Self {
        self.from = step;
        self
    }

    /// Draw spinners for running steps (a terminal only).
    pub(crate) fn with_progress(mut self, progress: Arc<Screen>) -> Self {
        self.progress = Some(progress);
        self
    }

    fn spin(&self, step: &str, kind: &str, action: &runbook_core::render::RenderedAction) {
        let Some(mp) = &self.progress else { return };
        let total = action
            .wait_duration()
            .map(|d| format!(" of {}", secs(u64::try_from(d.as_millis()).unwrap_or(0))))
            .unwrap_or_default();
        let style = indicatif::ProgressStyle::with_template("  {spinner} {prefix} {elapsed}{msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
        let bar = mp.bars.add(indicatif::ProgressBar::new_spinner());
        bar.set_style(style);
        bar.set_prefix(format!("{kind} {step}"));
        bar.set_message(total);
        bar.enable_steady_tick(Duration::from_millis(120));
        if let Ok(mut bars) = self.bars.lock() {
            bars.insert(step.to_string(), bar);
        }
    }

    fn unspin(&self, step: &str) {
        if let Some(bar) = self.bars.lock().ok().and_then(|mut b| b.remove(step)) {
            bar.finish_and_clear();
        }
    }

    fn spin_message(&self, step: &str, message: String) {
        if let Some(bar) = self.bars.lock().ok().and_then(|b| b.get(step).cloned()) {
            bar.set_message(message);
        }
    }

    fn style(&self, s: Style) -> (String, String) {
        if self.color {
            (s.render().to_string(), s.render_reset().to_string())
        } else {
            (String::new(), String::new())
        }
    }

    fn line(&self, text: &str) {
        // Tabs move the cursor by an amount the spinner redraw cannot know: expand them.
        let expanded;
        let text = if text.contains('\t') {
            expanded = expand_tabs(text);
            expanded.as_str()
        } else {
            text
        };
        let prefix = self.prefix.lock().map(|p| p.clone()).unwrap_or_default();
        if let Some(screen) = &self.progress {
            screen.println(format!("{prefix}{text}"));
            return;
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{prefix}{text}");
        let _ = out.flush();
    }
}

/// Tabs replaced by spaces up to the next multiple of 8 columns.
pub(crate) fn expand_tabs(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut column = 0;
    for c in text.chars() {
        match c {
            '\t' => {
                let n = 8 - column % 8;
                out.extend(std::iter::repeat_n(' ', n));
                column += n;
            }
            '\n' => {
                out.push(c);
                column = 0;
            }
            _ => {
                out.push(c);
                column += unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
            }
        }
    }
    out
}

/// `850ms`, `2.4s`, `3m05s`, `1h20m`.
pub(crate) fn secs(ms: u64) -> String {
    let s = ms / 1000;
    if ms < 1000 {
        format!("{ms}ms")
    } else if s < 60 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

pub(crate) fn status_mark(status: Status) -> (&'static str, Style) {
    let c = |a: AnsiColor| Style::new().fg_color(Some(a.into()));
    match status {
        Status::Succeeded => ("✓", c(AnsiColor::Green)),
        Status::Failed => ("✗", c(AnsiColor::Red).bold()),
        Status::Skipped => ("–", Style::new().dimmed()),
        Status::Declined => ("✗", c(AnsiColor::Yellow)),
        Status::NotExecuted => ("○", c(AnsiColor::Cyan)),
        Status::Pending | Status::Running => ("…", Style::new().dimmed()),
    }
}

impl Sink for Human {
    fn emit(&self, at: SystemTime, event: &Event) {
        if self.timestamps {
            if let Ok(mut p) = self.prefix.lock() {
                let ts = humantime::format_rfc3339_seconds(at).to_string();
                *p = format!("{} ", ts.get(11..19).unwrap_or(&ts));
            }
        }
        if let Event::StepStarted { step, kind, .. } = event {
            if let Ok(mut k) = self.kinds.lock() {
                k.insert(step.clone(), kind.clone());
            }
        }
        let (dim, dim_end) = self.style(Style::new().dimmed());
        let (bold, bold_end) = self.style(Style::new().bold());
        match event {
            Event::RunStarted {
                run_id,
                runbook,
                title,
                mode,
                params,
                ..
            } => {
                let mode = match mode {
                    Mode::Live => String::new(),
                    Mode::DryRun => " — DRY RUN: acts are shown, not executed".into(),
                };
                self.line(&format!("{bold}{runbook}{bold_end} — {title}{mode}"));
                self.line(&format!("{dim}run {run_id}{dim_end}"));
                if !params.is_empty() {
                    let shown: Vec<String> = params
                        .iter()
                        .map(|(k, v)| format!("{k}={}", runbook_exec::params::value_text(v)))
                        .collect();
                    self.line(&format!("{dim}params {}{dim_end}", shown.join(" ")));
                }
                self.line("");
            }
            Event::StepStarted {
                step,
                kind,
                title,
                attempt,
                action,
                confirm,
            } => {
                self.next_attempt(step, *attempt);
                if *attempt > 1 {
                    return;
                }
                self.line(&format!("{bold}▶ {kind:<6} {step}{bold_end}  {title}"));
                if let Some(a) = action {
                    for l in a.lines() {
                        self.line(&format!("{dim}    {l}{dim_end}"));
                    }
                }
                if let Some(c) = confirm.as_ref().filter(|_| !self.asking_acts) {
                    self.line(&format!("{dim}    confirm: {c}{dim_end}"));
                }
                if let Some(a) = action {
                    if !matches!(a, runbook_core::render::RenderedAction::Manual { .. }) {
                        self.spin(step, kind, a);
                    }
                }
            }
            Event::Output { step, stream, line } => {
                // A poll's attempts after the first show only what changed (the journal
                // keeps every line).
                if self.repeated(step, line) {
                    return;
                }
                let (red, red_end) = match stream {
                    Stream::Stderr => {
                        self.style(Style::new().fg_color(Some(AnsiColor::Yellow.into())))
                    }
                    Stream::Stdout => (String::new(), String::new()),
                };
                self.line(&format!("    {dim}{step} │{dim_end} {red}{line}{red_end}"));
            }
            Event::Captured { name, value, .. } => {
                self.line(&format!("{dim}    {name} = {value}{dim_end}"));
            }
            Event::Condition {
                expr,
                result,
                values,
                ..
            } => {
                let vals = runbook_exec::eval::show(values);
                let vals = if vals.is_empty() {
                    String::new()
                } else {
                    format!("  ({vals})")
                };
                self.line(&format!("{dim}    {expr} → {result}{vals}{dim_end}"));
            }
            Event::AttemptFailed {
                step,
                attempt,
                attempts,
                reason,
                retry_in_ms,
                ..
            } => {
                self.spin_message(
                    step,
                    format!(
                        " · attempt {attempt}/{attempts} failed, again in {}",
                        secs(*retry_in_ms)
                    ),
                );
                self.line(&format!(
                    "    ↻ attempt {attempt}/{attempts}: {reason}; again in {}",
                    secs(*retry_in_ms)
                ));
            }
            Event::Asked { .. } | Event::Answered { .. } => {
                if let Event::Answered { by, answer, .. } = event {
                    if !matches!(by, AnsweredBy::Operator(_)) {
                        self.line(&format!("{dim}    approved by {}{dim_end}", answerer(by)));
                    } else if *answer != Answer::Approve {
                        let what = match answer {
                            Answer::Decline => "declined",
                            Answer::Skip => "skipped",
                            Answer::Abort => "aborted",
                            Answer::Approve => "approved",
                        };
                        self.line(&format!("    {what} by {}", answerer(by)));
                    }
                }
            }
            Event::Decision {
                step,
                goto,
                reason,
                skips,
                ..
            } => {
                let Some(target) = goto.as_deref() else {
                    self.line(&format!("    ⤷ {step}: {reason}"));
                    return;
                };
                let skips = if skips.is_empty() {
                    String::new()
                } else {
                    format!("; skips {}", skips.join(", "))
                };
                self.line(&format!(
                    "    ⤷ {step} → {bold}{target}{bold_end} ({reason}){skips}"
                ));
            }
            Event::Rewind {
                step,
                from,
                round,
                of,
            } => {
                self.line(&format!(
                    "    ⟲ {step} failed: starting again from {from} (round {round} of {of})"
                ));
            }
            Event::StepFinished {
                step,
                status,
                duration_ms,
                message,
                killed,
                skip,
                ..
            } => {
                self.unspin(step);
                let (mark, style) = status_mark(*status);
                let (s, s_end) = self.style(style);
                let kind = self
                    .kinds
                    .lock()
                    .ok()
                    .and_then(|k| k.get(step).cloned())
                    .unwrap_or_default();
                let mut msg = match (skip, &self.from) {
                    (Some(Skip::BeforeStart), Some(from)) => format!(": before --from {from}"),
                    _ => message
                        .as_deref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default(),
                };
                if let Some(k) = killed.filter(|_| kind == "act") {
                    msg.push_str(&format!(
                        " (outcome unknown: {}; it may have been partly applied)",
                        k.as_str()
                    ));
                }
                let time = if matches!(
                    status,
                    Status::Skipped | Status::NotExecuted | Status::Pending
                ) {
                    String::new()
                } else {
                    format!(" {}", secs(*duration_ms))
                };
                self.line(&format!(
                    "{s}{mark} {kind:<6} {step} {}{time}{s_end}{msg}",
                    status.as_str()
                ));
            }
            Event::Escalation { due, next, .. } => {
                let (red, red_end) =
                    self.style(Style::new().fg_color(Some(AnsiColor::Red.into())).bold());
                self.line(&format!("{red}ESCALATE now:{red_end}"));
                for Contact { after, to } in due {
                    self.line(&format!("    {to}  (from {after})"));
                }
                if due.is_empty() {
                    self.line("    (no escalation contacts are listed in this runbook)");
                }
                if let Some(Contact { after, to }) = next {
                    self.line(&format!("    next: {to} at {after}"));
                }
            }
            Event::Signal { action, .. } => {
                self.line(&format!("\ninterrupted: {action}"));
            }
            Event::Resumed {
                by,
                done,
                inflight,
                torn_bytes,
                runbook_changed,
            } => {
                self.line(&format!("{bold}resumed by {by}{bold_end}"));
                if !done.is_empty() {
                    self.line(&format!(
                        "{dim}    done before, not run again: {}{dim_end}",
                        done.join(", ")
                    ));
                }
                if !inflight.is_empty() {
                    self.line(&format!(
                        "    in flight when it stopped: {}",
                        inflight.join(", ")
                    ));
                }
                if *torn_bytes > 0 {
                    self.line(&format!(
                        "    an incomplete last journal line ({torn_bytes} bytes) was set aside"
                    ));
                }
                if *runbook_changed {
                    self.line("    the runbook file changed since the run started (--force)");
                }
            }
            Event::PhaseStarted {
                title,
                within_ms,
                elapsed_ms,
                ..
            } => {
                let left = if elapsed_ms < within_ms {
                    format!("{} left", secs(within_ms - elapsed_ms))
                } else {
                    format!("{} over", secs(elapsed_ms - within_ms))
                };
                self.line(&format!(
                    "{bold}━━ {title}{bold_end} {dim}(within {}: {left}){dim_end}",
                    secs(*within_ms)
                ));
            }
            Event::PhaseOverrun {
                title, within_ms, ..
            } => {
                let (red, red_end) =
                    self.style(Style::new().fg_color(Some(AnsiColor::Red.into())).bold());
                self.line(&format!(
                    "{red}━━ OVERRUN: {title} was due within {}{red_end}",
                    secs(*within_ms)
                ));
            }
            Event::PhaseFinished {
                title,
                within_ms,
                elapsed_ms,
                overrun,
                complete,
                ..
            } => {
                let at = secs(*elapsed_ms);
                let budget = secs(*within_ms);
                let what = match (complete, overrun) {
                    (true, false) => format!(
                        "done at {at}, within {budget} ({} to spare)",
                        secs(within_ms - elapsed_ms)
                    ),
                    (true, true) => format!("done at {at}: OVERRAN its {budget} budget"),
                    (false, false) => {
                        format!("not finished when the run stopped at {at} (within {budget})")
                    }
                    (false, true) => format!(
                        "not finished when the run stopped at {at}: OVERRAN its {budget} budget"
                    ),
                };
                let style = if *overrun {
                    Style::new().fg_color(Some(AnsiColor::Red.into())).bold()
                } else {
                    Style::new().dimmed()
                };
                let (s, s_end) = self.style(style);
                self.line(&format!("{s}━━ {title}: {what}{s_end}"));
            }
            // `exec` prints its summary table instead; `audit show` ends with the outcome.
            Event::RunFinished {
                status,
                exit_code,
                duration_ms,
                ..
            } if self.timestamps => {
                let exit = exit_code.map_or(String::new(), |c| format!(" (exit {c})"));
                self.line(&format!(
                    "{bold}run {} in {}{exit}{bold_end}",
                    status.as_str(),
                    secs(*duration_ms)
                ));
            }
            Event::RunFinished { .. } => {}
        }
    }
}

pub(crate) fn print_summary(rb: &Runbook, report: &Report, color: bool, dry: bool) {
    let rows: Vec<Vec<String>> = report
        .steps
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.kind.as_str().to_string(),
                s.status.as_str().to_string(),
                if matches!(s.status, Status::Skipped | Status::Pending) {
                    String::new()
                } else {
                    secs(u64::try_from(s.duration.as_millis()).unwrap_or(u64::MAX))
                },
                note(s.message.as_deref().unwrap_or_default()),
            ]
        })
        .collect();
    let mut out = String::from("\n");
    out.push_str(&table::render(
        &["STEP", "KIND", "STATUS", "TIME", "NOTE"],
        &rows,
    ));
    let (colour, word) = match report.status {
        RunStatus::Succeeded => (AnsiColor::Green, "succeeded"),
        RunStatus::Failed => (AnsiColor::Red, "failed"),
        RunStatus::Escalated => (AnsiColor::Red, "failed and escalated"),
        RunStatus::Aborted => (AnsiColor::Yellow, "stopped by the operator"),
        RunStatus::RunbookError => (AnsiColor::Red, "stopped: the runbook has an error"),
        RunStatus::Interrupted => (AnsiColor::Yellow, "interrupted"),
    };
    let style = Style::new().fg_color(Some(colour.into())).bold();
    let (s, e) = if color {
        (style.render().to_string(), style.render_reset().to_string())
    } else {
        (String::new(), String::new())
    };
    let ms = u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX);
    let what = if dry {
        format!("dry run of {}", rb.name.value)
    } else {
        rb.name.value.clone()
    };
    let not_run = if report.summary.not_executed > 0 {
        format!(
            "; {} not executed",
            crate::table::plural(report.summary.not_executed, "step")
        )
    } else {
        String::new()
    };
    out.push_str(&format!(
        "\n{s}{what} {word}{e} in {}{not_run} (exit {})\n",
        secs(ms),
        crate::Exit::code_of(report.status)
    ));
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}

/// A summary note: the first line, at most 80 characters (the step line has it whole).
pub(crate) fn note(message: &str) -> String {
    let first = message.lines().next().unwrap_or_default();
    if first.chars().nth(80).is_some() || message.contains('\n') {
        format!("{}…", runbook_core::text::prefix_chars(first, 79))
    } else {
        first.to_string()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tabs_expand_to_the_next_stop() {
        assert_eq!(super::expand_tabs("a\tb"), "a       b");
        assert_eq!(super::expand_tabs("12345678\tx"), "12345678        x");
        assert_eq!(super::expand_tabs("障害\tx"), "障害    x");
        assert_eq!(super::expand_tabs("a\n\tb"), "a\n        b");
    }
}
