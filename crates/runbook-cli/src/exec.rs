//! `runbook exec`: resolve parameters, refuse what cannot work, run the engine, show
//! its events (human or JSON lines), ask the operator, handle Ctrl-C.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anstyle::{AnsiColor, Style};
use anyhow::{Context as _, bail};
use runbook_core::model::{Param, ParamType, Runbook};
use runbook_exec::event::{
    AnsweredBy, Contact, Event, Mode, RunStatus, Sink, Skip, Status, Stream,
};
use runbook_exec::{Answer, Engine, Operator, Options, Question, Report};
use serde::Serialize;

use crate::{Cli, Exit, table};

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
    /// Runbook name on the search path, or a file path
    pub name: String,
    /// Parameter value, `name=value` (repeatable)
    #[arg(short, long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Parameter values from a YAML or JSON file (an object); --param wins
    #[arg(long, value_name = "FILE")]
    pub params_file: Option<PathBuf>,
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

/// AWS settings for `ssm_*` steps and Parameter Store secrets.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AwsArgs {
    /// AWS region (default: the runbook's `aws.region`, else AWS_REGION)
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// AWS profile (default: the runbook's `aws.profile`, else AWS_PROFILE)
    #[arg(long, value_name = "PROFILE")]
    pub profile: Option<String>,
}

/// Run `runbook exec`.
pub fn exec(cli: &Cli, args: &ExecArgs) -> anyhow::Result<Exit> {
    let loaded = match crate::commands::load_valid(cli, &args.name)? {
        Ok(l) => l,
        Err(exit) => return Ok(exit),
    };
    let Some((rb, plan)) = loaded.checked.valid() else {
        return Ok(Exit::Invalid);
    };
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
    let run_id = run_id(&rb.name.value);
    let options = Options {
        mode,
        yes: args.run.yes,
        auto_manual: args.run.auto_manual,
        parallel: usize::from(args.run.parallel),
        run_id: run_id.clone(),
        operator: operator.clone(),
        origin: origin_of(&loaded),
        aws_region: args.run.aws.region.clone(),
        aws_profile: args.run.aws.profile.clone(),
        ..Options::default()
    };

    // Parameters: everything checked before anything runs.
    let given = args
        .params
        .iter()
        .map(|p| runbook_exec::params::parse_assignment(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("--param {e}"))?;
    let file = match &args.params_file {
        Some(path) => read_params_file(path)?,
        None => serde_json::Map::new(),
    };
    let resolved = resolve_params(&rb, &given, &file, interactive, &args.run.aws)?;
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
    refuse_without_terminal(&rb, &options, interactive)?;

    // The record and the lock come before the first step.
    let state_dir =
        runbook_exec::journal::state_dir(cli.state_dir.as_deref()).map_err(anyhow::Error::msg)?;
    let _lock = if args.dry_run {
        // A dry run changes nothing, so it neither needs nor blocks the lock.
        None
    } else {
        Some(take_lock(&state_dir, &rb, &resolved, &run_id, &operator)?)
    };
    let journal =
        runbook_exec::journal::Journal::create(&state_dir, &run_id).map_err(anyhow::Error::msg)?;
    drive(
        rb,
        plan,
        resolved,
        options,
        journal,
        args.run.output,
        Start::From(from),
    )
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
    #[arg(long)]
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
    let state_dir =
        runbook_exec::journal::state_dir(cli.state_dir.as_deref()).map_err(anyhow::Error::msg)?;
    let path = crate::audit::resolve(&state_dir, &args.run_id)?;
    // Read first, without touching the file; reopen for appending only once it can go on.
    let read = runbook_exec::journal::read(&path).map_err(anyhow::Error::msg)?;
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
    let state = replay::replay(&rb, &plan, &read.records)?;
    if state.mode == Mode::DryRun {
        bail!(
            "{} was a dry run; dry runs are not resumed, start a new one with `runbook exec`",
            state.run_id
        );
    }
    if state.finished == Some(RunStatus::Succeeded) {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{} already succeeded; nothing to resume", state.run_id)?;
        return Ok(Exit::Success);
    }
    let now = origin_of(&loaded);
    let changed = now.sha256 != state.origin.sha256;
    if changed {
        let (added, removed) = replay::step_diff(&replay::recorded_steps(&read.records), &rb);
        let diff = format!(
            "steps added: {}; steps removed: {}",
            if added.is_empty() {
                "none".into()
            } else {
                added.join(", ")
            },
            if removed.is_empty() {
                "none".into()
            } else {
                removed.join(", ")
            }
        );
        if !args.force {
            bail!(
                "refusing to resume {}: {} changed since the run started (sha256 {} then, {} now; {diff}); \
                 resume with --force to go on with the file as it is",
                state.run_id,
                origin.path,
                &state.origin.sha256.get(..12).unwrap_or_default(),
                &now.sha256.get(..12).unwrap_or_default()
            );
        }
        crate::diagnostics::warning(&format!(
            "{} changed since the run started: {diff}",
            origin.path
        ));
    }

    let interactive = std::io::stdin().is_terminal();
    // Acts that were in flight may have been partly applied: never re-run them unasked.
    let mut restored = state.restored.clone();
    let mut inflight_notes = Vec::new();
    for runbook_exec::resume::Inflight { step: id, killed } in &state.inflight {
        let Some(i) = plan.index(id) else { continue };
        let step = &rb.steps[i];
        if step.kind.value != runbook_core::model::StepKind::Act {
            inflight_notes.push(format!("{id}: run again (read-only)"));
            continue;
        }
        let choice = if args.inflight_done.iter().any(|d| d == id) {
            InflightChoice::Done
        } else if args.rerun_inflight_acts {
            InflightChoice::Rerun
        } else if interactive {
            ask_inflight(id, &step.title.value, *killed)
        } else {
            bail!(
                "act `{id}` {} and may have been partly applied; \
                 check the system, then resume with --inflight-done {id} (it was applied) or \
                 --rerun-inflight-acts (run it again), or resume in a terminal to be asked",
                unknown_why(*killed)
            );
        };
        match choice {
            InflightChoice::Done => {
                inflight_notes.push(format!("{id}: counted as done"));
                restored.push(runbook_exec::Restored {
                    step: i,
                    status: Status::Succeeded,
                    route: runbook_exec::Route::Normal,
                    result: Some(runbook_exec::engine::StepValues::bare(0)),
                    message: Some(
                        "in flight when the run stopped; counted as done on resume".into(),
                    ),
                    duration: Duration::ZERO,
                });
            }
            InflightChoice::Rerun => inflight_notes.push(format!("{id}: run again")),
            InflightChoice::Abort => return Ok(Exit::Declined),
        }
    }

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
    let resolved = resolve_params(
        &rb,
        &given,
        &serde_json::Map::new(),
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
        aws_region: args.run.aws.region.clone(),
        aws_profile: args.run.aws.profile.clone(),
        ..Options::default()
    };
    refuse_without_terminal(&rb, &options, interactive)?;
    let _lock = take_lock(&state_dir, &rb, &resolved, &state.run_id, &operator)?;
    let (journal, _, torn_bytes) =
        runbook_exec::journal::Journal::reopen(&path).map_err(anyhow::Error::msg)?;
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

/// Parameter Store, connected on first use (most runbooks never need it).
struct ParameterStore {
    #[cfg(feature = "aws")]
    settings: runbook_exec::aws::Settings,
    #[cfg(feature = "aws")]
    client: std::cell::OnceCell<Result<(tokio::runtime::Runtime, runbook_exec::aws::Aws), String>>,
}

impl ParameterStore {
    #[cfg(feature = "aws")]
    fn new(rb: &Runbook, aws: &AwsArgs) -> Self {
        let from_runbook = rb.aws.clone().unwrap_or_default();
        ParameterStore {
            settings: runbook_exec::aws::Settings {
                region: aws.region.clone().or(from_runbook.region),
                profile: aws.profile.clone().or(from_runbook.profile),
            },
            client: std::cell::OnceCell::new(),
        }
    }

    #[cfg(not(feature = "aws"))]
    fn new(_: &Runbook, _: &AwsArgs) -> Self {
        ParameterStore {}
    }

    #[cfg(feature = "aws")]
    fn get(&self, path: &str) -> Result<String, String> {
        let client = self.client.get_or_init(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the async runtime: {e}"))?;
            let aws = rt.block_on(runbook_exec::aws::Aws::connect(&self.settings))?;
            Ok((rt, aws))
        });
        match client {
            Ok((rt, aws)) => rt.block_on(aws.parameter(path)),
            Err(e) => Err(e.clone()),
        }
    }

    #[cfg(not(feature = "aws"))]
    fn get(&self, path: &str) -> Result<String, String> {
        Err(format!(
            "reading `{path}` from Parameter Store needs runbook built with the `aws` feature; \
             pass the value with --param instead"
        ))
    }
}

enum InflightChoice {
    Done,
    Rerun,
    Abort,
}

/// Who answered, as a person reads it: the operator, or the flag that approved in advance.
pub(crate) fn answerer(by: &AnsweredBy) -> &str {
    match by {
        AnsweredBy::Operator(name) => name,
        AnsweredBy::AutoApproveActs => "--yes",
        AnsweredBy::AutoAcknowledgeManual => "--auto-manual",
    }
}

/// Why an act's outcome is unknown, as the end of "act `x` ...".
fn unknown_why(killed: Option<runbook_exec::event::Killed>) -> String {
    match killed {
        None => "was running when the run stopped".into(),
        Some(k) => format!("was {} before it finished", k.as_str()),
    }
}

fn ask_inflight(
    id: &str,
    title: &str,
    killed: Option<runbook_exec::event::Killed>,
) -> InflightChoice {
    let mut err = anstream::stderr();
    let _ = writeln!(
        err,
        "act `{id}` ({title}) {}: it may have been partly applied.",
        unknown_why(killed)
    );
    loop {
        let Some(line) = read_answer("Was it applied? [d]one / [r]un again / [a]bort: ") else {
            return InflightChoice::Abort;
        };
        match line.trim().to_ascii_lowercase().as_str() {
            "d" | "done" => return InflightChoice::Done,
            "r" | "run" | "rerun" => return InflightChoice::Rerun,
            "a" | "abort" => return InflightChoice::Abort,
            _ => {}
        }
    }
}

fn resolve_params(
    rb: &Runbook,
    given: &[(String, String)],
    file: &serde_json::Map<String, serde_json::Value>,
    interactive: bool,
    aws: &AwsArgs,
) -> anyhow::Result<runbook_exec::params::Resolved> {
    let env_lookup = |name: &str| std::env::var(name).ok();
    let store = ParameterStore::new(rb, aws);
    let ssm_lookup = |path: &str| store.get(path);
    let mut ask = |name: &str, p: &Param| prompt_param(interactive, name, p);
    runbook_exec::params::resolve(
        rb,
        runbook_exec::params::Sources {
            given,
            file,
            env: &env_lookup,
            ssm: &ssm_lookup,
            ask: &mut ask,
        },
    )
    .map_err(|problems| {
        anyhow::anyhow!(
            "cannot run {}: {}\n  {}",
            rb.name.value,
            if problems.len() == 1 {
                "1 problem with its parameters".to_string()
            } else {
                format!("{} problems with its parameters", problems.len())
            },
            problems.join("\n  ")
        )
    })
}

/// A run that will need answers must be able to ask for them.
fn refuse_without_terminal(
    rb: &Runbook,
    options: &Options,
    interactive: bool,
) -> anyhow::Result<()> {
    if interactive {
        return Ok(());
    }
    let need = runbook_exec::engine::needs_operator(rb, options);
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
    state_dir: &std::path::Path,
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
    match runbook_exec::lock::acquire(state_dir, &key, &me) {
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
            let human = Human::new(Some(&rb), color, false).starting_from(from);
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
        let control = engine.control();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            loop {
                let term_fut = async {
                    match term.as_mut() {
                        Some(t) => {
                            t.recv().await;
                        }
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    r = tokio::signal::ctrl_c() => {
                        if r.is_err() { break; }
                        control.interrupt();
                    }
                    () = term_fut => {
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
    Ok(match report.status {
        RunStatus::Succeeded => Exit::Success,
        RunStatus::Failed | RunStatus::Escalated => Exit::Failure,
        RunStatus::Aborted => Exit::Declined,
        RunStatus::Interrupted => Exit::Interrupted,
    })
}

fn read_params_file(
    path: &std::path::Path,
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read params file {}", path.display()))?;
    let node = runbook_core::yaml::parse(&text).map_err(|(msg, span)| {
        anyhow::anyhow!("{}:{}:{}: {msg}", path.display(), span.line, span.column)
    })?;
    match node.to_json() {
        serde_json::Value::Object(map) => Ok(map),
        serde_json::Value::Null => Ok(serde_json::Map::new()),
        other => bail!(
            "{}: expected a mapping of parameter names to values, found {}",
            path.display(),
            match other {
                serde_json::Value::Array(_) => "a list",
                _ => "a single value",
            }
        ),
    }
}

fn prompt_param(interactive: bool, name: &str, p: &Param) -> Option<String> {
    if !interactive {
        return None;
    }
    let what = p
        .description
        .as_deref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default();
    let question = format!("{name}{what}: ");
    if p.ty.value == ParamType::Secret {
        return rpassword::prompt_password(question).ok();
    }
    read_answer(&question)
}

/// Show `prompt` on stderr and read one line from stdin; `None` at the end of input.
fn read_answer(prompt: &str) -> Option<String> {
    let mut err = anstream::stderr();
    let _ = write!(err, "{prompt}");
    let _ = err.flush();
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end_matches(['\n', '\r']).to_string()),
    }
}

/// Where the runbook came from: path, sha256, git commit and dirty flag.
fn origin_of(loaded: &crate::library::Loaded) -> runbook_exec::event::Origin {
    let (path, source) = (loaded.path.as_path(), loaded.source.as_str());
    use sha2::Digest;
    let sha256 = hex::encode(sha2::Sha256::digest(source.as_bytes()));
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let git_commit = git(&["rev-parse", "HEAD"]);
    let git_dirty = git_commit.as_ref().and_then(|_| {
        let file = path.file_name()?.to_str()?;
        git(&["status", "--porcelain", "--", file]).map(|s| !s.is_empty())
    });
    runbook_exec::event::Origin {
        path: path.display().to_string(),
        sha256,
        git_commit,
        git_dirty,
        ..Default::default()
    }
}

/// `20261122-0931-dbconn-7f3a`: sorts by start time (UTC), short enough to type.
fn run_id(name: &str) -> String {
    let now = SystemTime::now();
    let stamp = humantime::format_rfc3339_seconds(now).to_string();
    let digits: String = stamp.chars().filter(char::is_ascii_digit).collect();
    let (date, time) = digits.split_at(8.min(digits.len()));
    let short: String = name
        .split('-')
        .take(2)
        .map(|s| s.chars().take(4).collect::<String>())
        .collect();
    let nanos = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let salt = (nanos ^ std::process::id().rotate_left(16)) & 0xffff;
    format!("{date}-{}-{short}-{salt:04x}", &time[..4.min(time.len())])
}

/// Asks on the terminal, one question at a time.
struct Terminal {
    lock: tokio::sync::Mutex<()>,
    /// Spinners to hide while a question is on screen.
    progress: Option<Arc<Screen>>,
}

/// The terminal while spinners are drawn: lines go above the spinners, and while a
/// question is on screen they are held back (never blocking the engine) and shown after.
pub(crate) struct Screen {
    bars: indicatif::MultiProgress,
    /// `Some(held lines)` while a question is on screen.
    asking: Mutex<Option<Vec<String>>>,
}

impl Screen {
    fn new() -> Self {
        Screen {
            bars: indicatif::MultiProgress::with_draw_target(
                indicatif::ProgressDrawTarget::stdout(),
            ),
            asking: Mutex::new(None),
        }
    }

    fn println(&self, line: String) {
        let Ok(mut asking) = self.asking.lock() else {
            return;
        };
        match asking.as_mut() {
            Some(held) => held.push(line),
            None => {
                let _ = self.bars.println(line);
            }
        }
    }

    /// Ask with the spinners out of the way.
    fn ask(&self, question: &Question) -> Answer {
        if let Ok(mut asking) = self.asking.lock() {
            *asking = Some(Vec::new());
        }
        let _ = self.bars.clear();
        self.bars
            .set_draw_target(indicatif::ProgressDrawTarget::hidden());
        let answer = ask_blocking(question);
        if let Ok(mut asking) = self.asking.lock() {
            self.bars
                .set_draw_target(indicatif::ProgressDrawTarget::stdout());
            for line in asking.take().unwrap_or_default() {
                let _ = self.bars.println(line);
            }
        }
        answer
    }
}

impl Operator for Terminal {
    fn ask(
        &self,
        question: Question,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send + '_>> {
        Box::pin(async move {
            let _turn = self.lock.lock().await;
            let progress = self.progress.clone();
            tokio::task::spawn_blocking(move || match progress {
                Some(screen) => screen.ask(&question),
                None => ask_blocking(&question),
            })
            .await
            .unwrap_or(Answer::Abort)
        })
    }
}

fn ask_blocking(q: &Question) -> Answer {
    let mut err = anstream::stderr();
    let bold = Style::new().bold();
    let _ = writeln!(err);
    let _ = writeln!(
        err,
        "{bold}{} {}{bold:#} — {}",
        if q.manual { "manual" } else { "act" },
        q.step,
        q.title
    );
    for line in &q.lines {
        let _ = writeln!(err, "    {line}");
    }
    let question = q.confirm.clone().unwrap_or_else(|| {
        if q.manual {
            "Done?".into()
        } else {
            "Run this step?".into()
        }
    });
    loop {
        let Some(line) = read_answer(&format!("{bold}{question}{bold:#} [y/N/skip/abort] ")) else {
            return Answer::Abort;
        };
        match line.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" => return Answer::Approve,
            "" | "n" | "no" => return Answer::Decline,
            "s" | "skip" => return Answer::Skip,
            "a" | "abort" | "q" | "quit" => return Answer::Abort,
            other => {
                let _ = writeln!(err, "`{other}`: answer y, n, skip or abort");
            }
        }
    }
}

/// `--output json`: one event per line.
struct JsonLines;

#[derive(Serialize)]
struct Line<'a> {
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
fn expand_tabs(text: &str) -> String {
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

fn status_mark(status: Status) -> (&'static str, Style) {
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
                if *attempt > 1 {
                    return;
                }
                self.line(&format!("{bold}▶ {kind:<6} {step}{bold_end}  {title}"));
                if let Some(a) = action {
                    for l in a.lines() {
                        self.line(&format!("{dim}    {l}{dim_end}"));
                    }
                }
                if let Some(c) = confirm {
                    self.line(&format!("{dim}    confirm: {c}{dim_end}"));
                }
                if let Some(a) = action {
                    if !matches!(a, runbook_core::render::RenderedAction::Manual { .. }) {
                        self.spin(step, kind, a);
                    }
                }
            }
            Event::Output { step, stream, line } => {
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
            Event::RunFinished { .. } => {}
        }
    }
}

fn print_summary(rb: &Runbook, report: &Report, color: bool, dry: bool) {
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
            crate::commands::plural(report.summary.not_executed, "step")
        )
    } else {
        String::new()
    };
    out.push_str(&format!(
        "\n{s}{what} {word}{e} in {}{not_run} (exit {})\n",
        secs(ms),
        report.status.exit_code()
    ));
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}

/// A summary note: the first line, at most 80 characters (the step line has it whole).
fn note(message: &str) -> String {
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
