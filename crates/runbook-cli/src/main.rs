//! `runbook`: declarative runbooks for incident response.
//!
//! This crate is the only place that knows about terminals, colours, exit codes and
//! output formats. Everything it shows comes from `runbook-core`.

mod alerts;
mod audit;
mod commands;
mod diagnostics;
mod diff;
mod display;
mod exec;
#[cfg(test)]
mod fuzz;
mod graph;
mod library;
mod params;
mod replay;
mod scenarios;
mod serve;
mod table;
mod terminal;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit codes, as documented in docs/cli.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything worked.
    Success = 0,
    /// The runbook failed (a step failed and routing aborted or escalated).
    Failure = 1,
    /// Usage error or invalid runbook.
    Invalid = 2,
    /// The operator declined or aborted.
    Declined = 3,
    /// Interrupted by a signal.
    Interrupted = 130,
}

/// Write `text` to stdout (colour codes stripped where the terminal wants none).
pub(crate) fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = anstream::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

impl Exit {
    /// The exit code of a run that ended this way (docs/cli.md): the one table of them.
    pub(crate) fn of(status: runbook_exec::RunStatus) -> Exit {
        use runbook_exec::RunStatus;
        match status {
            RunStatus::Succeeded => Exit::Success,
            RunStatus::Failed | RunStatus::Escalated => Exit::Failure,
            RunStatus::Aborted => Exit::Declined,
            RunStatus::RunbookError => Exit::Invalid,
            RunStatus::Interrupted => Exit::Interrupted,
        }
    }

    /// [`Exit::of`] as the number `run_finished` records.
    pub(crate) fn code_of(status: runbook_exec::RunStatus) -> i32 {
        Exit::of(status) as i32
    }
}

/// Declarative runbooks for incident response: validate, plan, show and run procedures
/// written as YAML.
#[derive(Debug, Parser)]
#[command(name = "runbook", version, about, max_term_width = 100)]
pub struct Cli {
    /// Directory to search for runbooks (repeatable; default: $RUNBOOK_PATH, else ./runbooks)
    #[arg(long = "dir", global = true, value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// Where journals and locks live (default: $RUNBOOK_STATE_DIR, else $XDG_STATE_HOME/runbook)
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// More logging on stderr (-v info, -vv debug); RUNBOOK_LOG takes an env filter
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats for `show`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShowFormat {
    /// For a terminal.
    Human,
    /// A wiki page.
    Markdown,
    /// The parsed runbook as JSON.
    Json,
}

/// Output formats for `validate` and `plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For a terminal.
    Human,
    /// Machine-readable JSON.
    Json,
}

/// How `validate` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ValidateFormat {
    /// For a terminal: the source line and a caret, on stderr.
    Human,
    /// One JSON object per diagnostic, on stdout.
    Json,
    /// GitHub Actions workflow commands (`::error file=…,line=…,col=…::…`), on stdout: each
    /// diagnostic becomes an annotation on the pull request's diff.
    Github,
}

/// Graph formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// Mermaid flowchart (renders in GitHub and GitLab markdown).
    Mermaid,
    /// Graphviz dot.
    Dot,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the runbooks on the search path
    List,
    /// Show a runbook as a person reads it
    Show {
        /// Runbook name on the search path, or a file path
        name: String,
        /// Output format
        #[arg(long, value_enum, default_value_t = ShowFormat::Human)]
        format: ShowFormat,
    },
    /// Check runbooks and report every problem with its location
    Validate {
        /// Files or directories (default: every runbook on the search path)
        paths: Vec<PathBuf>,
        /// Treat warnings as errors
        #[arg(long)]
        deny_warnings: bool,
        /// Output format (json: one diagnostic per line; github: workflow annotations)
        #[arg(long, value_enum, default_value_t = ValidateFormat::Human)]
        format: ValidateFormat,
    },
    /// Print the static plan: order, kinds, rendered commands, branches (nothing runs)
    Plan {
        /// Runbook name on the search path, or a file path
        name: String,
        /// Parameter value, `name=value` (repeatable)
        #[arg(short, long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Output format
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        format: OutputFormat,
    },
    /// Run a runbook: checks, confirmed acts, verifications, branches (see --dry-run)
    Exec(exec::ExecArgs),
    /// Continue an interrupted or failed run from its journal
    Resume(exec::ResumeArgs),
    /// Which runbooks answer an alert payload, and the parameters each would get
    Match(alerts::MatchArgs),
    /// Receive alerts over HTTP and dry-run the runbooks they trigger; post the findings
    Serve(serve::ServeArgs),
    /// Recorded runs: list them, show a timeline, verify a journal's hash chain
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// What changed between two versions of runbooks: risks first (exit 1 when they differ)
    Diff(diff::DiffArgs),
    /// Run scenario tests: the runbook against scripted results, nothing real runs
    Test(scenarios::TestArgs),
    /// Draw the step graph
    Graph {
        /// Runbook name on the search path, or a file path
        name: String,
        /// Graph language
        #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
        format: GraphFormat,
    },
    /// Print the JSON Schema of the runbook format (or of scenario files)
    Schema {
        /// The schema of scenario files (`NAME.test.yaml`) instead
        #[arg(long)]
        scenarios: bool,
    },
    /// Print shell completions
    Completions {
        /// Shell to generate completions for
        shell: clap_complete::Shell,
    },
}

fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_env("RUNBOOK_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(diagnostics::stderr_color())
        .without_time()
        .try_init();
}

/// Run the chosen subcommand.
fn run(cli: &Cli) -> anyhow::Result<Exit> {
    match &cli.command {
        Command::List => commands::list(cli),
        Command::Show { name, format } => commands::show(cli, name, *format),
        Command::Validate {
            paths,
            deny_warnings,
            format,
        } => commands::validate(cli, paths, *deny_warnings, *format),
        Command::Plan {
            name,
            params,
            format,
        } => commands::plan(cli, name, params, *format),
        Command::Graph { name, format } => commands::graph(cli, name, *format),
        Command::Exec(args) => exec::exec(cli, args),
        Command::Resume(args) => exec::resume(cli, args),
        Command::Match(args) => alerts::run_match(cli, args),
        Command::Serve(args) => serve::serve(cli, args),
        Command::Audit { command } => audit::audit(cli, command),
        Command::Test(args) => match &args.replay {
            Some(run) => replay::replay(
                cli,
                run,
                args.names.first().map(String::as_str),
                args.format,
            ),
            None => scenarios::test(cli, args),
        },
        Command::Diff(args) => diff::diff(cli, args),
        Command::Schema { scenarios } => {
            emit(&if *scenarios {
                runbook_core::scenario::json_schema()
            } else {
                runbook_core::model::json_schema()
            })?;
            Ok(Exit::Success)
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut buf = Vec::new();
            clap_complete::generate(*shell, &mut cmd, "runbook", &mut buf);
            std::io::Write::write_all(&mut std::io::stdout().lock(), &buf)?;
            Ok(Exit::Success)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let code = match run(&cli) {
        Ok(exit) => exit as u8,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            diagnostics::error(&format!("{err:#}"));
            Exit::Invalid as u8
        }
    };
    ExitCode::from(code)
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
