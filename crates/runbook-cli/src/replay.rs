//! `runbook test --replay RUN [PATH]`: a recorded run as a regression test. The run's
//! results (outputs, exit codes, HTTP statuses, answers) become the script
//! (`runbook_exec::scenario::recorded`); the runbook at PATH (default: the file the run
//! used) runs against them, and must take the path the run took.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use runbook_exec::journal::Store;
use runbook_exec::scenario::{Mismatch, compare};

use crate::library::Loaded;
use crate::scenarios::TestFormat;
use crate::{Cli, Exit};

/// Replay `run` against `path` (default: the runbook the run used).
pub fn replay(
    cli: &Cli,
    run: &str,
    path: Option<&str>,
    format: TestFormat,
) -> anyhow::Result<Exit> {
    let store = Store::locate(cli.state_dir.as_deref())?;
    let journal = store.resolve(run).map_err(crate::audit::with_hint)?;
    let read = runbook_exec::journal::read(&journal)?;
    if let Some(p) = &read.problem {
        bail!(
            "refusing to replay {}: the journal does not verify: {} (line {}); `runbook audit verify` shows its state",
            journal.display(),
            p.message,
            p.line
        );
    }
    let run_id = runbook_exec::journal::run_id_of(&journal);
    let Some(runbook_exec::Event::RunStarted {
        origin, runbook, ..
    }) = read.records.first().map(|r| &r.event)
    else {
        bail!("{}: not a run journal (no run_started)", journal.display());
    };
    let target = match path {
        Some(p) => crate::library::resolve(p, &cli.dirs)?,
        None => origin.path.clone().into(),
    };
    let loaded =
        Loaded::read(&target).with_context(|| format!("the runbook to replay {run_id} against"))?;
    let Some((rb, plan)) = loaded.checked.valid() else {
        let (errors, warnings) = crate::diagnostics::report(&loaded, false);
        crate::diagnostics::error(&format!(
            "{} is not a valid runbook ({})",
            target.display(),
            crate::diagnostics::counts(errors, warnings)
        ));
        return Ok(Exit::Invalid);
    };
    // Another version of the same runbook is what a replay compares; another runbook is a
    // mistake in the command line, not a changed path.
    if rb.name.value != *runbook {
        crate::diagnostics::error(&format!(
            "run {run_id} was a run of `{runbook}`, not of `{}` ({}): replay it against a version of `{runbook}`",
            rb.name.value,
            target.display()
        ));
        return Ok(Exit::Invalid);
    }
    let recorded = runbook_exec::scenario::recorded(&read.records, rb)?;
    match recorded
        .scenario
        .expect
        .status
        .as_ref()
        .map(|s| s.value.as_str())
    {
        None | Some("interrupted") => bail!(
            "run {run_id} did not finish (interrupted, or still running): resume it, or replay a run that ended"
        ),
        _ => {}
    }
    let source = format!("run {run_id}");
    let actual = runbook_exec::scenario::run_paused(
        Arc::new(rb.clone()),
        Arc::new(plan.clone()),
        &recorded.scenario,
        &source,
    )
    .context("cannot start the async runtime")?;
    let exit_code = actual.status.map(crate::Exit::code_of);
    let mismatches: Vec<Mismatch> = compare(&recorded.scenario, &actual, exit_code);
    let expected = recorded.scenario.expect.path_ids().unwrap_or_default();
    let parts = runbook_exec::scenario::parts_at(&expected, &actual.path);
    let same = mismatches.is_empty() && actual.problems.is_empty();
    let shown_target = display_path(&target);
    match format {
        TestFormat::Json => {
            let doc = serde_json::json!({
                "run": run_id,
                "runbook": shown_target,
                "same_path": same,
                "path": actual.path,
                "recorded_path": expected,
                "parts_at": parts.map(|i| i + 1),
                "problems": actual.problems,
                "mismatches": mismatches.iter().map(|m| serde_json::json!({
                    "what": m.what, "expected": m.expected, "actual": m.actual,
                })).collect::<Vec<_>>(),
                "notes": recorded.notes,
            });
            crate::emit(&format!("{doc:#}\n"))?;
        }
        TestFormat::Human => {
            let mut o = String::new();
            for n in &recorded.notes {
                o.push_str(&format!("note: {n}\n"));
            }
            if same {
                o.push_str(&format!(
                    "ok   {shown_target} takes the path run {run_id} took ({}: {})\n",
                    crate::table::plural(expected.len(), "step"),
                    expected.join(" → ")
                ));
            } else {
                o.push_str(&format!(
                    "FAIL {shown_target} no longer takes the path run {run_id} took\n"
                ));
                for p in &actual.problems {
                    o.push_str(&format!("     {p}\n"));
                }
                if let Some(at) = parts {
                    o.push_str(&format!(
                        "     the path parts at step {}: the run went to `{}`, now `{}`\n",
                        at + 1,
                        expected.get(at).map_or("(the end)", String::as_str),
                        actual.path.get(at).map_or("(the end)", String::as_str),
                    ));
                    if let Some(prev) = at.checked_sub(1).and_then(|i| expected.get(i)) {
                        o.push_str(&format!("     after `{prev}`\n"));
                    }
                }
                for m in mismatches.iter().filter(|m| m.what != "path") {
                    o.push_str(&format!(
                        "     {}: recorded {}, now {}\n",
                        m.what, m.expected, m.actual
                    ));
                }
            }
            let mut out = anstream::stdout().lock();
            out.write_all(o.as_bytes())?;
        }
    }
    Ok(if same { Exit::Success } else { Exit::Failure })
}

fn display_path(p: &Path) -> String {
    p.display().to_string()
}
