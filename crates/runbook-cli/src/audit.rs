//! `runbook audit list|show|verify`: the journals of past runs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::bail;
use runbook_exec::event::{Answer, Event, RunStatus, Sink, Status};
use runbook_exec::journal::{self, JournalError, Read, Record, Store};

use crate::{Cli, Exit, table};

/// `audit` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Table of recorded runs: id, runbook, operator, started, duration, status
    List,
    /// The timeline of a run (`last` for the newest)
    Show {
        /// Run id, a unique prefix of one, or `last`
        run: String,
        /// human: as it looked; json: the records; markdown: an incident timeline
        #[arg(long, value_enum, default_value_t = AuditFormat::Human)]
        format: AuditFormat,
    },
    /// Recompute a journal's hash chain and report the first bad record
    Verify {
        /// Run id, a unique prefix of one, or `last`
        #[arg(required_unless_present = "all")]
        run: Option<String>,
        /// Verify every journal in the state directory
        #[arg(long, conflicts_with = "run")]
        all: bool,
    },
}

/// Formats of `audit show`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuditFormat {
    /// For a terminal.
    Human,
    /// One record per line.
    Json,
    /// An incident timeline for the post-incident review.
    Markdown,
}

/// Run an `audit` subcommand.
pub fn audit(cli: &Cli, command: &AuditCommand) -> anyhow::Result<Exit> {
    let state = Store::locate(cli.state_dir.as_deref())?;
    match command {
        AuditCommand::List => list(&state),
        AuditCommand::Show { run, format } => show(&state, run, *format),
        AuditCommand::Verify { run, all } => verify(&state, run.as_deref(), *all),
    }
}

/// A journal error, with the command that lists the runs when a run was not found.
pub fn with_hint(e: JournalError) -> anyhow::Error {
    match e {
        JournalError::UnknownRun { .. } => anyhow::anyhow!("{e} (see `runbook audit list`)"),
        other => other.into(),
    }
}

/// What the first and last records say about a run.
struct Facts {
    runbook: String,
    title: String,
    operator: String,
    started: String,
    mode: String,
    finished: Option<(String, Option<i32>, u64)>,
}

fn facts(records: &[Record]) -> Option<Facts> {
    let first = records.first()?;
    let Event::RunStarted {
        runbook,
        title,
        mode,
        origin,
        ..
    } = &first.event
    else {
        return None;
    };
    let finished = records.iter().rev().find_map(|r| match &r.event {
        Event::RunFinished {
            status,
            exit_code,
            duration_ms,
            ..
        } => Some((status.as_str().to_string(), *exit_code, *duration_ms)),
        _ => None,
    });
    Some(Facts {
        runbook: runbook.clone(),
        title: title.clone(),
        operator: origin.operator.clone(),
        started: first.ts.clone(),
        mode: mode.as_str().to_string(),
        finished,
    })
}

/// A row of `audit list` for a file that is not a readable run: its id and why.
fn problem_row(id: String, why: String) -> Vec<String> {
    vec![
        id,
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        why,
    ]
}

fn list(state: &Store) -> anyhow::Result<Exit> {
    let mut rows = Vec::new();
    for path in state.journals()? {
        let id = journal::run_id_of(&path);
        let read = match journal::read(&path) {
            Ok(r) => r,
            Err(e) => {
                rows.push(problem_row(id, format!("unreadable: {e}")));
                continue;
            }
        };
        let Some(f) = facts(&read.records) else {
            let why = read
                .problem
                .map_or_else(|| "empty".to_string(), |p| p.message);
            rows.push(problem_row(id, format!("not a run journal: {why}")));
            continue;
        };
        let (duration, mut status) = match &f.finished {
            Some((status, code, ms)) => (
                crate::display::secs(*ms),
                code.map_or(status.clone(), |c| format!("{status} ({c})")),
            ),
            None => (String::new(), "incomplete".to_string()),
        };
        if f.mode == "dry-run" {
            status.push_str(", dry run");
        }
        if let Some(p) = &read.problem {
            status.push_str(&format!(", damaged at record {}", p.seq));
        }
        rows.push(vec![id, f.runbook, f.operator, f.started, duration, status]);
    }
    let mut out = std::io::stdout().lock();
    if rows.is_empty() {
        writeln!(out, "no runs recorded in {}", state.runs_dir().display())?;
    } else {
        out.write_all(
            table::render(
                &[
                    "RUN", "RUNBOOK", "OPERATOR", "STARTED", "DURATION", "STATUS",
                ],
                &rows,
            )
            .as_bytes(),
        )?;
    }
    Ok(Exit::Success)
}

fn load(state: &Store, run: &str) -> anyhow::Result<(PathBuf, Read)> {
    let path = state.resolve(run).map_err(with_hint)?;
    let read = journal::read(&path)?;
    if read.records.is_empty() {
        match &read.problem {
            Some(p) => bail!("{}: {}", path.display(), p.message),
            None => bail!("{}: the journal is empty", path.display()),
        }
    }
    if let Some(p) = &read.problem {
        crate::diagnostics::warning(&format!(
            "{}: {} (line {}); showing the {} records before it",
            path.display(),
            p.message,
            p.line,
            read.records.len()
        ));
    }
    Ok((path, read))
}

/// The runbook a run used, if its file is still byte for byte what the run read: it
/// gives the kind of steps that never started (skipped), which no record names.
fn runbook_as_run(records: &[Record]) -> Option<runbook_core::Runbook> {
    let Event::RunStarted { origin, .. } = &records.first()?.event else {
        return None;
    };
    let loaded = crate::library::Loaded::read(std::path::Path::new(&origin.path)).ok()?;
    let now = runbook_exec::session::origin(&loaded.path, &loaded.source);
    if now.sha256 != origin.sha256 {
        return None;
    }
    loaded.checked.runbook
}

fn show(state: &Store, run: &str, format: AuditFormat) -> anyhow::Result<Exit> {
    let (path, read) = load(state, run)?;
    match format {
        AuditFormat::Json => {
            let mut out = std::io::stdout().lock();
            for r in &read.records {
                writeln!(out, "{}", serde_json::to_string(r)?)?;
            }
        }
        AuditFormat::Human => {
            let color =
                anstream::AutoStream::choice(&std::io::stdout()) != anstream::ColorChoice::Never;
            let rb = runbook_as_run(&read.records);
            let human = crate::display::Human::new(rb.as_ref(), color, true);
            for r in &read.records {
                let at = humantime::parse_rfc3339(&r.ts).unwrap_or(SystemTime::UNIX_EPOCH);
                human.emit(at, &r.event);
            }
            let mut out = std::io::stdout().lock();
            if facts(&read.records).is_some_and(|f| f.finished.is_none()) {
                writeln!(
                    out,
                    "(the run has not finished: it is still going, or it was interrupted; `runbook resume {}`)",
                    journal::run_id_of(&path)
                )?;
            }
        }
        AuditFormat::Markdown => {
            let text = markdown(&path, &read.records);
            std::io::stdout().lock().write_all(text.as_bytes())?;
        }
    }
    Ok(Exit::Success)
}

fn time_of(ts: &str) -> &str {
    ts.get(11..19).unwrap_or(ts)
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// Each phase against its budget: when it started and finished on the run clock, and
/// whether it kept to its deadline. A resumed run announces a phase again when it goes on
/// with it: the first start and the last finish count.
fn phases_table(records: &[Record], md: &mut String) {
    use crate::display::secs;
    struct Row {
        phase: String,
        title: String,
        within: u64,
        started: u64,
        finished: Option<(u64, bool)>,
        overran: bool,
    }
    let mut rows: Vec<Row> = Vec::new();
    for r in records {
        match &r.event {
            Event::PhaseStarted {
                phase,
                title,
                within_ms,
                elapsed_ms,
            } if !rows.iter().any(|row| &row.phase == phase) => rows.push(Row {
                phase: phase.clone(),
                title: title.clone(),
                within: *within_ms,
                started: *elapsed_ms,
                finished: None,
                overran: false,
            }),
            Event::PhaseOverrun { phase, .. } => {
                if let Some(row) = rows.iter_mut().find(|row| &row.phase == phase) {
                    row.overran = true;
                }
            }
            Event::PhaseFinished {
                phase,
                elapsed_ms,
                overrun,
                complete,
                ..
            } => {
                if let Some(row) = rows.iter_mut().find(|row| &row.phase == phase) {
                    row.finished = Some((*elapsed_ms, *complete));
                    row.overran |= *overrun;
                }
            }
            _ => {}
        }
    }
    if rows.is_empty() {
        return;
    }
    md.push_str(
        "\n## Phases\n\n| Phase | Budget | Started | Finished | Result |\n|---|---|---|---|---|\n",
    );
    for row in rows {
        let (finished, result) = match row.finished {
            Some((at, true)) if !row.overran => (
                secs(at),
                format!(
                    "within budget ({} to spare)",
                    secs(row.within.saturating_sub(at))
                ),
            ),
            Some((at, true)) => (
                secs(at),
                format!("**OVERRAN** by {}", secs(at.saturating_sub(row.within))),
            ),
            Some((at, false)) if row.overran => (
                secs(at),
                "**OVERRAN**, unfinished when the run stopped".to_string(),
            ),
            Some((at, false)) => (secs(at), "unfinished when the run stopped".to_string()),
            None if row.overran => ("—".into(), "**OVERRAN**, still open".to_string()),
            None => ("—".into(), "still open".to_string()),
        };
        md.push_str(&format!(
            "| {} (`{}`) | {} | {} | {finished} | {result} |\n",
            cell(&row.title),
            row.phase,
            secs(row.within),
            secs(row.started),
        ));
    }
}

/// An incident timeline: what was checked, what was changed, by whom, when.
pub(crate) fn markdown(path: &Path, records: &[Record]) -> String {
    let mut md = String::new();
    let Some(f) = facts(records) else {
        return md;
    };
    let origin = match &records[0].event {
        Event::RunStarted { origin, params, .. } => Some((origin.clone(), params.clone())),
        _ => None,
    };
    md.push_str(&format!(
        "# Incident timeline: {} — {}\n\n",
        f.runbook, f.title
    ));
    md.push_str("| | |\n|---|---|\n");
    md.push_str(&format!("| Run | `{}` |\n", journal::run_id_of(path)));
    md.push_str(&format!("| Operator | {} |\n", cell(&f.operator)));
    md.push_str(&format!("| Mode | {} |\n", f.mode));
    md.push_str(&format!("| Started | {} |\n", f.started));
    match &f.finished {
        Some((status, code, ms)) => {
            let end = records.last().map_or("", |r| r.ts.as_str());
            md.push_str(&format!(
                "| Finished | {end} (after {}) |\n",
                crate::display::secs(*ms)
            ));
            let exit = code.map_or(String::new(), |c| format!(" (exit {c})"));
            md.push_str(&format!("| Outcome | {status}{exit} |\n"));
        }
        None => md.push_str("| Outcome | not finished (interrupted, or still running) |\n"),
    }
    if let Some((o, params)) = &origin {
        let git = match (&o.git_commit, o.git_dirty) {
            (Some(c), Some(true)) => format!(
                ", git {} with uncommitted changes",
                c.get(..12).unwrap_or(c)
            ),
            (Some(c), _) => format!(", git {}", c.get(..12).unwrap_or(c)),
            _ => String::new(),
        };
        md.push_str(&format!(
            "| Runbook file | `{}` (sha256 {}{git}) |\n",
            cell(&o.path),
            o.sha256.get(..12).unwrap_or(&o.sha256)
        ));
        if !params.is_empty() {
            let shown: Vec<String> = params
                .iter()
                .map(|(k, v)| format!("`{k}={}`", runbook_exec::params::value_text(v)))
                .collect();
            md.push_str(&format!("| Parameters | {} |\n", cell(&shown.join(" "))));
        }
    }

    // Changes: acts and manual steps with their answers and outcomes.
    let mut kinds = std::collections::HashMap::new();
    let mut titles = std::collections::HashMap::new();
    let mut actions = std::collections::HashMap::new();
    for r in records {
        if let Event::StepStarted {
            step,
            kind,
            title,
            action: Some(a),
            ..
        } = &r.event
        {
            kinds.insert(step.clone(), kind.clone());
            titles.insert(step.clone(), title.clone());
            actions.insert(step.clone(), a.lines());
        }
    }
    md.push_str("\n## Changes made\n\n");
    // Acts that ran (succeeded, failed or killed): the changes. Every other ending of an
    // act (declined, skipped, interrupted while asking, a dry run) is a change not made.
    let ran: std::collections::HashSet<&str> = records
        .iter()
        .filter_map(|r| match &r.event {
            Event::StepFinished { step, status, .. }
                if kinds.get(step).is_some_and(|k| k == "act")
                    && matches!(status, Status::Succeeded | Status::Failed) =>
            {
                Some(step.as_str())
            }
            _ => None,
        })
        .collect();
    let mut changes = 0;
    let mut not_made = Vec::new();
    let mut answers: std::collections::HashMap<&str, String> = std::collections::HashMap::new();
    // Acts started and not finished: at a stop (a later `resumed`, or the end of the
    // journal) their outcome is unknown, and they may have been partly applied.
    let mut open: Vec<(&str, &str)> = Vec::new();
    let unknown = |open: &mut Vec<(&str, &str)>,
                   answers: &std::collections::HashMap<&str, String>,
                   md: &mut String| {
        for (step, ts) in open.drain(..) {
            md.push_str(&format!(
                "- {} **{step}** {} — OUTCOME UNKNOWN: was running when the run stopped; it may have been partly applied{}\n",
                time_of(ts),
                titles.get(step).map_or("", String::as_str),
                answers
                    .get(step)
                    .map(|a| format!(" ({a})"))
                    .unwrap_or_default()
            ));
            for l in actions.get(step).cloned().unwrap_or_default() {
                md.push_str(&format!("  `{}`\n", l.replace('`', "'")));
            }
        }
    };
    for r in records {
        match &r.event {
            Event::StepStarted { step, .. }
                if kinds.get(step).is_some_and(|k| k == "act")
                    && !open.iter().any(|(s, _)| s == step) =>
            {
                open.push((step, &r.ts));
            }
            Event::Resumed { .. } => {
                changes += open.len();
                unknown(&mut open, &answers, &mut md);
            }
            Event::Answered { step, answer, by } => {
                let what = format!(
                    "{} by {}",
                    answer_text(*answer),
                    crate::display::answerer(by)
                );
                let is_act = kinds.get(step).is_some_and(|k| k == "act");
                if is_act && !ran.contains(step.as_str()) {
                    answers.insert(step, what);
                    continue;
                }
                md.push_str(&format!(
                    "- {} **{step}** {} — {what}\n",
                    time_of(&r.ts),
                    titles.get(step).map_or("", String::as_str),
                ));
                changes += 1;
            }
            Event::StepFinished {
                step,
                status,
                duration_ms,
                message,
                killed,
                ..
            } if kinds.get(step).is_some_and(|k| k == "act") => {
                open.retain(|(s, _)| s != step);
                if !ran.contains(step.as_str()) {
                    let why = match status {
                        Status::NotExecuted => "not executed (dry run)".to_string(),
                        _ => answers
                            .get(step.as_str())
                            .cloned()
                            .or_else(|| message.clone())
                            .unwrap_or_else(|| status.as_str().to_string()),
                    };
                    not_made.push(format!(
                        "- **{step}** {}: {why}\n",
                        titles.get(step).map_or("", String::as_str)
                    ));
                    continue;
                }
                let lines = actions.get(step).cloned().unwrap_or_default();
                let how = match status {
                    Status::Succeeded => format!("done in {}", crate::display::secs(*duration_ms)),
                    _ if killed.is_some() => format!(
                        "OUTCOME UNKNOWN: {} after {}; it may have been partly applied",
                        killed.map_or("", |k| k.as_str()),
                        crate::display::secs(*duration_ms)
                    ),
                    other => format!(
                        "{}{}",
                        other.as_str(),
                        message
                            .as_deref()
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    ),
                };
                md.push_str(&format!("- {} **{step}** {how}\n", time_of(&r.ts)));
                for l in lines {
                    md.push_str(&format!("  `{}`\n", l.replace('`', "'")));
                }
                changes += 1;
            }
            _ => {}
        }
    }
    changes += open.len();
    unknown(&mut open, &answers, &mut md);
    if changes == 0 {
        md.push_str("Nothing was changed.\n");
    }
    if !not_made.is_empty() {
        md.push_str("\n## Changes not made\n\n");
        for line in not_made {
            md.push_str(&line);
        }
    }

    phases_table(records, &mut md);

    md.push_str("\n## Timeline\n\n| Time (UTC) | Step | What happened |\n|---|---|---|\n");
    let mut output_lines = 0usize;
    for r in records {
        let t = time_of(&r.ts);
        let row =
            |step: &str, what: String| format!("| {t} | {} | {} |\n", cell(step), cell(&what));
        let line = match &r.event {
            Event::RunStarted { .. } => row("", format!("run started by {}", f.operator)),
            Event::StepStarted {
                step,
                kind,
                title,
                attempt,
                ..
            } => {
                if *attempt > 1 {
                    row(step, format!("attempt {attempt}"))
                } else {
                    row(step, format!("{kind} started: {title}"))
                }
            }
            Event::Output { .. } => {
                output_lines += 1;
                continue;
            }
            Event::Captured { step, name, value } => {
                row(step, format!("captured `{name}` = `{value}`"))
            }
            Event::Condition {
                step,
                expr,
                result,
                values,
            } => row(
                step,
                format!("`{expr}` → {result} ({})", runbook_exec::eval::show(values)),
            ),
            Event::AttemptFailed {
                step,
                attempt,
                attempts,
                reason,
                ..
            } => row(
                step,
                format!("attempt {attempt}/{attempts} failed: {reason}"),
            ),
            Event::Asked { step, question } => row(step, format!("asked: {question}")),
            Event::Answered { step, answer, by } => row(
                step,
                format!(
                    "{} by {}",
                    answer_text(*answer),
                    crate::display::answerer(by)
                ),
            ),
            Event::Decision {
                step, goto, reason, ..
            } => row(
                step,
                match goto {
                    Some(g) => format!("→ {g} ({reason})"),
                    None => reason.clone(),
                },
            ),
            Event::Rewind {
                step,
                from,
                round,
                of,
            } => row(
                step,
                format!("investigate again from {from} (round {round} of {of})"),
            ),
            Event::StepFinished {
                step,
                status,
                duration_ms,
                message,
                killed,
                ..
            } => row(
                step,
                format!(
                    "{} after {}{}{}",
                    status.as_str(),
                    crate::display::secs(*duration_ms),
                    message
                        .as_deref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default(),
                    killed
                        .map(|k| format!(" ({}; outcome unknown)", k.as_str()))
                        .unwrap_or_default()
                ),
            ),
            Event::Escalation { due, .. } => row(
                "",
                format!(
                    "escalated to {}",
                    due.iter()
                        .map(|c| c.to.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            Event::Signal { signal, action } => row("", format!("{signal}: {action}")),
            Event::PhaseStarted {
                title,
                within_ms,
                elapsed_ms,
                ..
            } => row(
                "",
                format!(
                    "phase started: {title} (due within {}, at {})",
                    crate::display::secs(*within_ms),
                    crate::display::secs(*elapsed_ms)
                ),
            ),
            Event::PhaseOverrun {
                title, within_ms, ..
            } => row(
                "",
                format!(
                    "phase OVERRAN: {title} was due within {}",
                    crate::display::secs(*within_ms)
                ),
            ),
            Event::PhaseFinished {
                title,
                elapsed_ms,
                overrun,
                complete,
                ..
            } => row(
                "",
                format!(
                    "phase {}: {title} at {}{}",
                    if *complete { "done" } else { "unfinished" },
                    crate::display::secs(*elapsed_ms),
                    if *overrun { " (overran)" } else { "" }
                ),
            ),
            Event::Resumed { by, inflight, .. } => row(
                "",
                if inflight.is_empty() {
                    format!("resumed by {by}")
                } else {
                    format!("resumed by {by} ({})", inflight.join("; "))
                },
            ),
            Event::RunFinished {
                status, exit_code, ..
            } => {
                let exit = exit_code.map_or(String::new(), |c| format!(" (exit {c})"));
                row(
                    "",
                    match status {
                        RunStatus::RunbookError => {
                            format!("run stopped by a runbook error{exit}")
                        }
                        other => format!("run {}{exit}", other.as_str()),
                    },
                )
            }
        };
        md.push_str(&line);
    }
    if output_lines > 0 {
        md.push_str(&format!(
            "\n{} of command output {} in the journal (`runbook audit show {} --format json`).\n",
            crate::table::plural(output_lines, "line"),
            if output_lines == 1 { "is" } else { "are" },
            journal::run_id_of(path)
        ));
    }
    md
}

fn verify(state: &Store, run: Option<&str>, all: bool) -> anyhow::Result<Exit> {
    let paths = if all {
        state.journals()?
    } else {
        vec![state.resolve(run.unwrap_or("last")).map_err(with_hint)?]
    };
    let mut bad = 0;
    let mut out = std::io::stdout().lock();
    for path in &paths {
        let id = journal::run_id_of(path);
        match journal::read(path) {
            Err(e) => {
                bad += 1;
                writeln!(out, "BAD  {id}: {e}")?;
            }
            Ok(read) => match &read.problem {
                None => {
                    let end = if facts(&read.records).is_some_and(|f| f.finished.is_some()) {
                        ""
                    } else {
                        " (no run_finished: interrupted, or still running)"
                    };
                    writeln!(
                        out,
                        "ok   {id}: {} records, chain intact, last hash {}{end}",
                        read.records.len(),
                        read.last_hash
                    )?;
                }
                Some(p) => {
                    bad += 1;
                    writeln!(
                        out,
                        "BAD  {id}: first bad record {} (line {}): {}",
                        p.seq, p.line, p.message
                    )?;
                }
            },
        }
    }
    if paths.is_empty() {
        writeln!(out, "no runs recorded in {}", state.runs_dir().display())?;
    }
    Ok(if bad > 0 {
        Exit::Failure
    } else {
        Exit::Success
    })
}

fn answer_text(answer: Answer) -> &'static str {
    match answer {
        Answer::Approve => "approved",
        Answer::Decline => "declined",
        Answer::Skip => "skipped",
        Answer::Abort => "aborted",
    }
}
