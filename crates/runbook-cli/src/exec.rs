//! `runbook exec`: resolve parameters, refuse what cannot work, run the engine, show
//! its events (human or JSON lines), ask the operator, handle Ctrl-C.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use runbook_core::model::{ParamType, Runbook};
use runbook_exec::event::{Mode, Sink};
use runbook_exec::journal::Store;
use runbook_exec::session::{self, InflightDecision, Resume, ResumeError};
use runbook_exec::{Engine, Options};

use crate::display::{Human, JsonLines, print_summary};
use crate::params::{self, AwsArgs};
use crate::terminal::{Screen, Terminal, ask_inflight};
use crate::{Cli, Exit};

/// `--output` formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecOutput {
    /// For people: one line per step, live output, a summary.
    Human,
    /// One JSON event per line (see docs/events.md).
    Json,
}

/// Arguments of `runbook exec`.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Runbook name on the search path, or a file path (with --alert: may be omitted when one runbook answers the alert)
    #[arg(required_unless_present = "alert")]
    pub name: Option<String>,
    /// Start from an alert payload (SNS, EventBridge, Alertmanager or JSON): the runbook its triggers name, with the parameters they give
    #[arg(long, value_name = "ALERT.json")]
    pub alert: Option<PathBuf>,
    /// Parameter value, `name=value` (repeatable)
    #[arg(short, long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Parameter values from a YAML or JSON file (an object); --param wins
    #[arg(long, value_name = "FILE")]
    pub params_file: Option<PathBuf>,
    /// Take the parameters of an earlier run (e.g. the dry run an alert started); --param wins
    #[arg(long, value_name = "RUN")]
    pub params_from: Option<String>,
    /// Run checks live, show what acts would do, change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Start at this step: it and what follows run, plus the earlier steps whose values they read
    #[arg(long, value_name = "STEP")]
    pub from: Option<String>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// How a run (new or resumed) behaves.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Approve every act without asking (on resume, an act that was in flight is still asked about)
    #[arg(short, long)]
    pub yes: bool,
    /// Acknowledge manual steps without asking (never implied by --yes)
    #[arg(long)]
    pub auto_manual: bool,
    /// Most steps running at once (acts still run one at a time)
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub parallel: u16,
    /// Output format
    #[arg(long, value_enum, default_value_t = ExecOutput::Human)]
    pub output: ExecOutput,
    /// Who runs this (default: $USER@hostname)
    #[arg(long, value_name = "NAME")]
    pub operator: Option<String>,
    #[command(flatten)]
    pub aws: AwsArgs,
}

/// The newest live run that did not succeed (interrupted, failed, aborted): what `resume
/// last` most likely meant when the last run was a dry run.
fn last_resumable(store: &Store) -> Option<String> {
    store.journals().ok()?.iter().rev().find_map(|path| {
        let read = runbook_exec::journal::read(path).ok()?;
        let live = matches!(
            read.records.first().map(|r| &r.event),
            Some(runbook_exec::Event::RunStarted {
                mode: Mode::Live,
                ..
            })
        );
        let succeeded = read.records.iter().any(|r| {
            matches!(
                r.event,
                runbook_exec::Event::RunFinished {
                    status: runbook_exec::RunStatus::Succeeded,
                    ..
                }
            )
        });
        (live && !succeeded).then(|| runbook_exec::journal::run_id_of(path))
    })
}

/// Run `runbook exec`.
pub fn exec(cli: &Cli, args: &ExecArgs) -> anyhow::Result<Exit> {
    let (name, from_alert) = match &args.alert {
        None => (args.name.clone().unwrap_or_default(), None),
        Some(path) => match alert_start(cli, path, args.name.as_deref())? {
            Ok((name, alert, params)) => (name, Some((alert, params))),
            Err(exit) => return Ok(exit),
        },
    };
    crate::diagnostics::with_valid(cli, &name, |loaded, rb, plan| {
        let rb = Arc::new(rb.clone());
        let plan = Arc::new(plan.clone());
        let interactive = std::io::stdin().is_terminal();
        let mode = if args.dry_run {
            Mode::DryRun
        } else {
            Mode::Live
        };
        let operator = args
            .run
            .operator
            .clone()
            .unwrap_or_else(runbook_exec::default_operator);
        let run_id = session::new_run_id(&rb.name.value);
        let mut origin = session::origin(&loaded.path, &loaded.source);
        origin.alert = from_alert.as_ref().map(|(a, _)| a.record());
        let options = Options {
            mode,
            yes: args.run.yes,
            auto_manual: args.run.auto_manual,
            parallel: usize::from(args.run.parallel),
            run_id: run_id.clone(),
            operator: operator.clone(),
            origin,
            aws: args.run.aws.settings(),
            exit_code: Some(Exit::code_of),
            ..Options::default()
        };

        // Parameters: everything checked before anything runs.
        let given = args
            .params
            .iter()
            .map(|p| runbook_exec::params::parse_assignment(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("--param {e}"))?;
        params::warn_repeated(&given);
        let mut file = match &args.params_file {
            Some(path) => params::read_file(path)?,
            None => serde_json::Map::new(),
        };
        // An earlier run's parameters win over a params file, an alert's over both;
        // --param wins over everything.
        if let Some(run) = &args.params_from {
            file.extend(params_of_run(cli, run, &rb.name.value)?);
        }
        if let Some((_, params)) = &from_alert {
            file.extend(params.clone());
        }
        let file_is = match (&from_alert, &args.params_from, &args.params_file) {
            (None, None, _) => "the params file",
            (Some(_), None, None) => "the alert",
            (None, Some(_), None) => "the earlier run",
            _ => "the alert, the earlier run or the params file",
        };
        let resolved = params::resolve(&rb, &given, &file, file_is, interactive, &args.run.aws)?;
        let from = match &args.from {
            None => None,
            Some(id) => match plan.index(id) {
                Some(i) => Some(i),
                None => {
                    let hint = runbook_core::diag::did_you_mean(
                        id,
                        rb.steps.iter().map(|s| s.id.value.as_str()),
                    )
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default();
                    bail!("--from {id}: {} has no step `{id}`{hint}", rb.name.value);
                }
            },
        };
        refuse_without_terminal(&rb, &options, interactive, &[])?;
        warn_missing_programs(&rb, args.dry_run);

        // The record and the lock come before the first step.
        let store = Store::locate(cli.state_dir.as_deref())?;
        let _lock = if args.dry_run {
            // A dry run changes nothing, so it neither needs nor blocks the lock.
            None
        } else {
            Some(take_lock(&store, &rb, &resolved, &run_id, &operator)?)
        };
        let journal = store.create(&run_id)?;
        drive(
            rb,
            plan,
            resolved,
            options,
            journal,
            args.run.output,
            Start::From(from),
        )
    })
}

/// The parameters a recorded run started with (secret ones, recorded as `***`, are left
/// out: they come from their sources again). The run must be of the same runbook.
fn params_of_run(
    cli: &Cli,
    run: &str,
    runbook: &str,
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let store = Store::locate(cli.state_dir.as_deref())?;
    let path = store.resolve(run).map_err(crate::audit::with_hint)?;
    let read = runbook_exec::journal::read(&path)?;
    let Some(runbook_exec::event::Event::RunStarted {
        runbook: of,
        params,
        ..
    }) = read.records.first().map(|r| &r.event)
    else {
        bail!(
            "--params-from {run}: {} does not start with run_started",
            path.display()
        );
    };
    if of != runbook {
        bail!("--params-from {run}: that run is of {of}, not {runbook}");
    }
    Ok(params
        .iter()
        .filter(|(_, v)| v.as_str() != Some(runbook_exec::mask::MASK))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect())
}

/// The runbook an alert starts and the parameters its trigger gives; or the exit code
/// when it starts nothing (resolved, no match: 0; unreadable, ambiguous, bad params: 2).
#[allow(clippy::type_complexity)]
fn alert_start(
    cli: &Cli,
    path: &std::path::Path,
    only: Option<&str>,
) -> anyhow::Result<
    Result<
        (
            String,
            runbook_exec::alert::Alert,
            serde_json::Map<String, serde_json::Value>,
        ),
        Exit,
    >,
> {
    use runbook_exec::alert::AlertState;
    let payload = match crate::alerts::read_payload(path) {
        Ok(p) => p,
        Err(exit) => return Ok(Err(exit)),
    };
    let firing: Vec<_> = payload
        .alerts
        .iter()
        .filter(|a| a.state == AlertState::Firing)
        .collect();
    if firing.is_empty() {
        let names: Vec<String> = payload
            .alerts
            .iter()
            .map(|a| format!("{} ({})", a.name, a.state.as_str()))
            .collect();
        crate::emit(&format!(
            "nothing to start: {}\n",
            if names.is_empty() {
                format!("the {} payload carries no alert", payload.kind.as_str())
            } else {
                format!("no alert is firing: {}", names.join(", "))
            }
        ))?;
        return Ok(Err(Exit::Success));
    }
    let mut found = Vec::new();
    for a in &firing {
        for f in crate::alerts::find(&cli.dirs, a, only)? {
            found.push(((*a).clone(), f));
        }
    }
    if found.is_empty() {
        let names: Vec<&str> = firing.iter().map(|a| a.name.as_str()).collect();
        crate::emit(&format!(
            "nothing to start: no runbook{} answers {}\n",
            only.map(|n| format!(" named {n}")).unwrap_or_default(),
            names.join(", ")
        ))?;
        return Ok(Err(Exit::Success));
    }
    let mut runbooks: Vec<&str> = found
        .iter()
        .map(|(_, f)| f.matched.runbook.as_str())
        .collect();
    runbooks.dedup();
    if runbooks.len() > 1 {
        crate::diagnostics::error(&format!(
            "{} runbooks answer this alert: {}; name the one to run (runbook exec NAME --alert {})",
            runbooks.len(),
            runbooks.join(", "),
            path.display()
        ));
        return Ok(Err(Exit::Invalid));
    }
    // The first alert whose parameters the runbook accepts is the one it runs for.
    let startable: Vec<&(runbook_exec::alert::Alert, crate::alerts::Found)> = found
        .iter()
        .filter(|(_, f)| f.problems.is_empty())
        .collect();
    let Some((alert, first)) = startable.first().map(|p| (&p.0, &p.1)) else {
        let (alert, first) = &found[0];
        crate::diagnostics::error(&format!(
            "alert {} cannot start {}:\n  {}",
            alert.name,
            first.matched.runbook,
            first.problems.join("\n  ")
        ));
        return Ok(Err(Exit::Invalid));
    };
    if startable.len() > 1 {
        crate::diagnostics::warning(&format!(
            "{} firing alerts in this payload answer {}: running it for {} only",
            startable.len(),
            first.matched.runbook,
            alert.name
        ));
    }
    let name = first.loaded.path.display().to_string();
    Ok(Ok((name, alert.clone(), first.matched.params.clone())))
}

/// Say which programs the shell steps call that are not installed, before anything runs.
fn warn_missing_programs(rb: &Runbook, dry_run: bool) {
    let missing = session::missing_programs(rb);
    if missing.is_empty() {
        return;
    }
    let list: Vec<String> = missing
        .iter()
        .map(|(p, steps)| {
            format!(
                "{p} (step{} {})",
                if steps.len() > 1 { "s" } else { "" },
                steps.join(", ")
            )
        })
        .collect();
    crate::diagnostics::warning(&format!(
        "missing tools: not found on PATH: {}; {}",
        list.join(", "),
        if dry_run {
            "checks that call them fail in this dry run, and every step that calls them fails when run live"
        } else {
            "the steps that call them will fail"
        }
    ));
}

/// How a run begins.
enum Start {
    /// At the roots, or at `--from STEP`.
    From(Option<usize>),
    /// Where a journal left off.
    Resume(Vec<runbook_exec::Restored>, Box<runbook_exec::event::Event>),
}

/// Arguments of `runbook resume`.
#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    /// Run id, a unique prefix of one, or `last`
    #[arg(value_name = "RUN")]
    pub run_id: String,
    /// Run acts that were in flight when the run stopped again, without asking
    #[arg(long, conflicts_with = "inflight_done")]
    pub rerun_inflight_acts: bool,
    /// An act that was in flight is known to have been applied: count it as done (repeatable)
    #[arg(long, value_name = "STEP")]
    pub inflight_done: Vec<String>,
    /// Resume even though the runbook file changed since the run started
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Run `runbook resume`: continue a run from its journal.
pub fn resume(cli: &Cli, args: &ResumeArgs) -> anyhow::Result<Exit> {
    use runbook_exec::resume as replay;
    let store = Store::locate(cli.state_dir.as_deref())?;
    let path = store
        .resolve(&args.run_id)
        .map_err(crate::audit::with_hint)?;
    // Read first, without touching the file; reopen for appending only once it can go on.
    let read = runbook_exec::journal::read(&path)?;
    if let Some(p) = read.problem.as_ref().filter(|p| !p.torn) {
        bail!(
            "cannot resume from {}: {} (line {}); `runbook audit verify` shows the journal's state",
            path.display(),
            p.message,
            p.line
        );
    }
    let Some(runbook_exec::event::Event::RunStarted { origin, .. }) =
        read.records.first().map(|r| &r.event)
    else {
        bail!("{}: not a run journal (no run_started)", path.display());
    };
    let loaded = crate::library::Loaded::read(std::path::Path::new(&origin.path))
        .with_context(|| format!("the runbook of this run was {}", origin.path))?;
    let Some((rb, plan)) = loaded.checked.valid() else {
        bail!(
            "the runbook {} is not valid any more: `runbook validate {}`",
            origin.path,
            origin.path
        );
    };
    let rb = Arc::new(rb.clone());
    let plan = Arc::new(plan.clone());
    let now = session::origin(&loaded.path, &loaded.source);
    let interactive = std::io::stdin().is_terminal();
    // Acts whose outcome is unknown may have been partly applied: never re-run unasked.
    let mut decide = |inflight: &runbook_exec::resume::Inflight, title: &str| {
        if args.inflight_done.contains(&inflight.step) {
            Some(InflightDecision::Done)
        } else if args.rerun_inflight_acts {
            Some(InflightDecision::Rerun)
        } else if interactive {
            Some(ask_inflight(&inflight.step, title, inflight.killed))
        } else {
            None
        }
    };
    let decided = session::plan(
        &rb,
        &plan,
        &read.records,
        &now.sha256,
        args.force,
        &mut decide,
    );
    let resumed = match decided {
        Ok(Resume::Go(p)) => *p,
        Ok(Resume::AlreadySucceeded { run_id }) => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{run_id} already succeeded; nothing to resume")?;
            return Ok(Exit::Success);
        }
        Err(e) => {
            // The library says what is wrong; the CLI adds how to go on with its flags.
            let message = match &e {
                ResumeError::Aborted => return Ok(Exit::Declined),
                ResumeError::Replay(_) => return Err(e.into()),
                ResumeError::DryRun { .. } => {
                    let other = (args.run_id == "last")
                        .then(|| last_resumable(&store))
                        .flatten()
                        .map(|id| format!("; the last live run that did not succeed is {id}: `runbook resume {id}`"))
                        .unwrap_or_default();
                    format!("{e}, start a new one with `runbook exec`{other}")
                }
                ResumeError::Changed(c) => format!(
                    "refusing to resume {}: {e}; resume with --force to go on with the file as it is{}",
                    c.run_id,
                    crate::diff::since_start(origin, &rb, &plan)
                        .map(|d| format!("\nwhat changed since the run started:\n{}", d.trim_end()))
                        .unwrap_or_default()
                ),
                ResumeError::InflightAct { step, .. } => format!(
                    "{e}; check the system, then resume with --inflight-done {step} (it was applied) or \
                     --rerun-inflight-acts (run it again), or resume in a terminal to be asked"
                ),
            };
            bail!("{message}")
        }
    };
    // A step named in --inflight-done must be an act whose outcome is unknown: anything
    // else is a typo that would otherwise pass without a word.
    let unknown: Vec<&str> = resumed
        .replay
        .inflight
        .iter()
        .map(|i| i.step.as_str())
        .filter(|id| {
            plan.index(id)
                .is_some_and(|i| rb.steps[i].kind.value == runbook_core::model::StepKind::Act)
        })
        .collect();
    if let Some(bad) = args
        .inflight_done
        .iter()
        .find(|d| !unknown.contains(&d.as_str()))
    {
        bail!(
            "--inflight-done {bad}: `{bad}` is not an act whose outcome is unknown in {} ({})",
            resumed.replay.run_id,
            if unknown.is_empty() {
                "there is none".to_string()
            } else {
                format!("those are: {}", unknown.join(", "))
            }
        );
    }
    if let Some((added, removed)) = &resumed.changed {
        let what = match crate::diff::since_start(origin, &rb, &plan) {
            Some(d) => format!("\n{}", d.trim_end()),
            None => session::diff_text(added, removed),
        };
        crate::diagnostics::warning(&format!(
            "{} changed since the run started: {what}",
            origin.path
        ));
    }
    let state = resumed.replay;
    let restored = resumed.restored;
    let inflight_notes = resumed.notes;
    let changed = resumed.changed.is_some();

    // Parameters as recorded; secrets were never recorded and are resolved again.
    let given: Vec<(String, String)> = state
        .params
        .iter()
        .filter(|(k, _)| {
            rb.params
                .get(*k)
                .is_some_and(|p| p.ty.value != ParamType::Secret)
        })
        .map(|(k, v)| (k.clone(), runbook_exec::params::value_text(v)))
        .collect();
    let resolved = params::resolve(
        &rb,
        &given,
        &serde_json::Map::new(),
        "the params file",
        interactive,
        &args.run.aws,
    )?;
    let operator = args
        .run
        .operator
        .clone()
        .unwrap_or_else(runbook_exec::default_operator);
    let options = Options {
        mode: Mode::Live,
        yes: args.run.yes,
        auto_manual: args.run.auto_manual,
        parallel: usize::from(args.run.parallel),
        run_id: state.run_id.clone(),
        operator: operator.clone(),
        origin: now,
        aws: args.run.aws.settings(),
        earlier: replay::time_spent(&read.records),
        exit_code: Some(Exit::code_of),
        ..Options::default()
    };
    // Only the questions this resume can still ask count.
    let may_run = replay::may_still_run(&plan, &restored);
    refuse_without_terminal(&rb, &options, interactive, &may_run)?;
    let _lock = take_lock(&store, &rb, &resolved, &state.run_id, &operator)?;
    let (journal, _, torn_bytes) =
        runbook_exec::journal::Journal::reopen(&path).map_err(|e| match e {
            runbook_exec::journal::JournalError::Damaged { .. } => {
                anyhow::anyhow!("{e} (`runbook audit verify` shows the journal's state)")
            }
            other => other.into(),
        })?;
    let done: Vec<String> = restored
        .iter()
        .map(|r| rb.steps[r.step].id.value.clone())
        .collect();
    let opening = runbook_exec::event::Event::Resumed {
        by: operator,
        done,
        inflight: inflight_notes,
        torn_bytes,
        runbook_changed: changed,
    };
    if args.run.output == ExecOutput::Human {
        // `run_started` is not written again: say which run goes on.
        crate::emit(&format!(
            "{} — {}\nrun {} (resumed)\n\n",
            rb.name.value, rb.title.value, state.run_id
        ))?;
    }
    drive(
        rb,
        plan,
        resolved,
        options,
        journal,
        args.run.output,
        Start::Resume(restored, Box::new(opening)),
    )
}

fn refuse_without_terminal(
    rb: &Runbook,
    options: &Options,
    interactive: bool,
    may_run: &[bool],
) -> anyhow::Result<()> {
    if interactive {
        return Ok(());
    }
    let need = runbook_exec::engine::needs_operator(rb, options, may_run);
    if need.is_empty() {
        return Ok(());
    }
    bail!(
        "refusing to run {}: step{} {} need{} an operator's answer and stdin is not a terminal\n  \
         run it in a terminal, approve every act with --yes (and manual steps with --auto-manual), \
         or look first with --dry-run",
        rb.name.value,
        if need.len() == 1 { "" } else { "s" },
        need.join(", "),
        if need.len() == 1 { "s" } else { "" },
    )
}

fn take_lock(
    store: &Store,
    rb: &Runbook,
    resolved: &runbook_exec::params::Resolved,
    run_id: &str,
    operator: &str,
) -> anyhow::Result<runbook_exec::lock::RunLock> {
    let key = match &rb.lock {
        Some(t) => runbook_core::template::Renderer::new()
            .render(
                runbook_core::template::Context::Text,
                t,
                &serde_json::json!({ "params": resolved.values }),
            )
            .map_err(|e| anyhow::anyhow!("cannot render the lock key `{}`: {e}", t.value))?,
        None => rb.name.value.clone(),
    };
    let me = runbook_exec::lock::Holder {
        run_id: run_id.to_string(),
        operator: operator.to_string(),
        pid: std::process::id(),
        since: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    };
    match runbook_exec::lock::acquire(store.dir(), &key, &me) {
        Ok(runbook_exec::lock::Acquired::Fresh(l)) => Ok(l),
        Ok(runbook_exec::lock::Acquired::TakenOver(l, h)) => {
            crate::diagnostics::warning(&format!(
                "took over the lock `{key}` left by run {} of {} (pid {} is gone)",
                h.run_id, h.operator, h.pid
            ));
            Ok(l)
        }
        Err(e) => bail!("refusing to run {}: {e}", rb.name.value),
    }
}

/// Run the engine with the journal and the display, handle signals, print the summary.
fn drive(
    rb: Arc<Runbook>,
    plan: Arc<runbook_core::Plan>,
    resolved: runbook_exec::params::Resolved,
    options: Options,
    journal: runbook_exec::journal::Journal,
    output: ExecOutput,
    start: Start,
) -> anyhow::Result<Exit> {
    let dry_run = options.mode == Mode::DryRun;
    let journal_path = journal.path().to_path_buf();
    let env: serde_json::Map<String, serde_json::Value> = rb
        .env
        .iter()
        .filter_map(|name| {
            std::env::var(&name.value)
                .ok()
                .map(|v| (name.value.clone(), v.into()))
        })
        .collect();
    let color = output == ExecOutput::Human
        && std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    // Spinners only where someone watches: a terminal that can redraw.
    let progress = (output == ExecOutput::Human
        && std::io::stdout().is_terminal()
        && std::env::var("TERM").map_or(true, |t| t != "dumb"))
    .then(|| Arc::new(Screen::new()));
    let display: Box<dyn Sink> = match output {
        ExecOutput::Human => {
            let from = match &start {
                Start::From(Some(i)) => Some(rb.steps[*i].id.value.clone()),
                _ => None,
            };
            // Acts will be asked about: their `confirm` text is the question, shown then.
            let asks = options.mode == Mode::Live && !options.yes;
            let human = Human::new(Some(&rb), color, false)
                .starting_from(from)
                .asking_acts(asks);
            Box::new(match &progress {
                Some(p) => human.with_progress(Arc::clone(p)),
                None => human,
            })
        }
        ExecOutput::Json => Box::new(JsonLines),
    };
    // The journal first: an event is on disk before anyone sees it.
    let sink: Arc<dyn Sink> = Arc::new(runbook_exec::event::Fanout(vec![
        Box::new(journal),
        display,
    ]));
    let shown = resolved.shown(&rb);
    let mut engine = Engine::new(
        Arc::clone(&rb),
        plan,
        resolved.values,
        shown,
        resolved.secrets,
        env,
        options,
        sink,
        Arc::new(Terminal {
            lock: tokio::sync::Mutex::new(()),
            progress: progress.clone(),
            show_action: output == ExecOutput::Json,
        }),
    )
    .map_err(anyhow::Error::msg)?;
    match start {
        Start::Resume(restored, opening) => engine = engine.resuming(restored, *opening),
        Start::From(Some(from)) => {
            let (e, producers) = engine.starting_from(from);
            engine = e;
            if !producers.is_empty() && output == ExecOutput::Human {
                crate::diagnostics::warning(&format!(
                    "--from {}: also running {} first, whose values later steps read",
                    rb.steps[from].id.value,
                    producers.join(", ")
                ));
            }
        }
        Start::From(None) => {}
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let control = engine.control();
        // Installed here, before the first step starts: a signal that arrives while the
        // handler task has not been polled yet is still seen.
        let mut int = signal(SignalKind::interrupt()).ok();
        let mut term = signal(SignalKind::terminate()).ok();
        tokio::spawn(async move {
            async fn next(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
                match s.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            }
            loop {
                tokio::select! {
                    r = next(&mut int) => {
                        if r.is_none() { break; }
                        control.interrupt();
                    }
                    r = next(&mut term) => {
                        if r.is_none() { break; }
                        control.interrupt();
                        control.interrupt();
                    }
                }
            }
        });
        engine.run().await
    });
    // A prompt may still be blocked reading stdin; do not wait for it.
    runtime.shutdown_timeout(Duration::from_millis(100));
    if output == ExecOutput::Human {
        print_summary(&rb, &report, color, dry_run);
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "journal {}", journal_path.display());
    }
    if let Some(e) = &report.record_error {
        crate::diagnostics::error(&format!(
            "the run was stopped because it could not be recorded: {e}"
        ));
    }
    Ok(Exit::of(report.status))
}
