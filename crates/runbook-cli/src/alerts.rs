//! `runbook match ALERT.json` and the alert half of `exec --alert`: read a payload, find
//! the runbooks whose `triggers:` answer each alert, and the parameters each would get.

use std::path::{Path, PathBuf};

use runbook_core::Runbook;
use runbook_exec::alert::{self, Alert, AlertState, Match, Payload};
use serde_json::{Value, json};

use crate::library::{self, Kind, Loaded};
use crate::{Cli, Exit, diagnostics};

/// Output format of `runbook match`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MatchFormat {
    /// For people.
    Human,
    /// One JSON document.
    Json,
}

/// Arguments of `runbook match`.
#[derive(Debug, clap::Args)]
pub struct MatchArgs {
    /// The alert payload: an SNS notification, an EventBridge event, an Alertmanager webhook or any JSON (`-` for stdin)
    #[arg(value_name = "ALERT.json")]
    pub alert: PathBuf,
    /// Output format
    #[arg(long, value_enum, default_value_t = MatchFormat::Human)]
    pub format: MatchFormat,
}

/// A payload file read, or the exit code of a payload that cannot be.
pub(crate) fn read_payload(path: &Path) -> Result<Payload, Exit> {
    let bytes = if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).map(|_| buf)
    } else {
        std::fs::read(path)
    };
    let bytes = match bytes {
        Ok(b) => b,
        Err(e) => {
            diagnostics::error(&format!("{}: {e}", path.display()));
            return Err(Exit::Invalid);
        }
    };
    alert::parse(&bytes).map_err(|e| {
        diagnostics::error(&format!("{}: {e}", path.display()));
        Exit::Invalid
    })
}

/// One runbook's answer to one alert, with its parameters checked against the runbook.
pub(crate) struct Found {
    pub loaded: Loaded,
    pub matched: Match,
    /// Why the run could not start with these parameters (a missing required one, a
    /// value that fails its type or pattern), one problem per line.
    pub problems: Vec<String>,
}

/// Every valid runbook on the search path (or just `only`) that answers `alert`.
pub(crate) fn find(
    dirs: &[PathBuf],
    alert: &Alert,
    only: Option<&str>,
) -> anyhow::Result<Vec<Found>> {
    let paths = match only {
        Some(name) => vec![library::resolve(name, dirs)?],
        None => library::all_of(dirs, Kind::Runbooks)?,
    };
    let mut out = Vec::new();
    for path in paths {
        let loaded = Loaded::read(&path)?;
        let Some((rb, _)) = loaded.checked.valid() else {
            continue;
        };
        let Some(matched) = alert::match_runbook(rb, alert) else {
            continue;
        };
        let mut problems: Vec<String> = matched.error.iter().cloned().collect();
        if problems.is_empty() {
            if let Err(p) = check_params(rb, &matched.params) {
                problems = p;
            }
        }
        out.push(Found {
            loaded,
            matched,
            problems,
        });
    }
    Ok(out)
}

/// The trigger's parameters with the runbook's defaults, types and patterns applied.
/// Parameters from the environment are read; Parameter Store secrets are not looked up.
fn check_params(
    rb: &Runbook,
    given: &serde_json::Map<String, Value>,
) -> Result<runbook_exec::params::Resolved, Vec<String>> {
    let env = |name: &str| std::env::var(name).ok();
    let ssm =
        |_: &str| -> Result<String, runbook_exec::backend::ParameterError> { Ok("***".into()) };
    let mut ask = |_: &str, _: &runbook_core::model::Param| None;
    runbook_exec::params::resolve(
        rb,
        runbook_exec::params::Sources {
            given: &[],
            given_is: "--param",
            file: given,
            file_is: "the alert",
            env: &env,
            ssm: &ssm,
            ask: &mut ask,
        },
    )
    .map_err(|p| p.0)
}

fn state_note(a: &Alert) -> &'static str {
    match a.state {
        AlertState::Firing => "",
        AlertState::Resolved => " (resolved: nothing starts for it)",
        AlertState::InsufficientData => " (insufficient data: nothing starts for it)",
    }
}

/// Run `runbook match`.
pub fn run_match(cli: &Cli, args: &MatchArgs) -> anyhow::Result<Exit> {
    let payload = match read_payload(&args.alert) {
        Ok(p) => p,
        Err(exit) => return Ok(exit),
    };
    let mut report = Vec::new();
    for a in &payload.alerts {
        report.push((a, find(&cli.dirs, a, None)?));
    }
    match args.format {
        MatchFormat::Json => {
            let alerts: Vec<Value> = report
                .iter()
                .map(|(a, found)| {
                    json!({
                        "alert": a.record(),
                        "matches": found.iter().map(|f| json!({
                            "runbook": f.matched.runbook,
                            "path": f.loaded.path.display().to_string(),
                            "trigger": f.matched.trigger,
                            "params": f.matched.params,
                            "starts": a.state == AlertState::Firing && f.problems.is_empty(),
                            "problems": f.problems,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let doc = json!({"kind": payload.kind.as_str(), "alerts": alerts});
            crate::emit(&(serde_json::to_string_pretty(&doc)? + "\n"))?;
        }
        MatchFormat::Human => {
            let mut o = String::new();
            if payload.alerts.is_empty() {
                o.push_str(&format!(
                    "{} payload with no alerts: nothing to match\n",
                    payload.kind.as_str()
                ));
            }
            for (a, found) in &report {
                let via = if a.source.as_str() == a.kind.as_str() {
                    a.source.as_str().to_string()
                } else {
                    format!("{} via {}", a.source.as_str(), a.kind.as_str())
                };
                o.push_str(&format!(
                    "{} {} ({via}){}\n",
                    a.state.as_str(),
                    a.name,
                    state_note(a)
                ));
                if !a.reason.is_empty() {
                    o.push_str(&format!("  {}\n", a.reason));
                }
                if found.is_empty() {
                    o.push_str("  no runbook answers this alert\n");
                }
                for f in found {
                    let params: Vec<String> = f
                        .matched
                        .params
                        .iter()
                        .map(|(k, v)| format!("{k}={}", runbook_exec::params::value_text(v)))
                        .collect();
                    o.push_str(&format!(
                        "  → {} (trigger {}){}\n",
                        f.matched.runbook,
                        f.matched.trigger + 1,
                        if params.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", params.join(" "))
                        }
                    ));
                    for p in &f.problems {
                        o.push_str(&format!("    cannot start: {p}\n"));
                    }
                }
            }
            crate::emit(&o)?;
        }
    }
    Ok(Exit::Success)
}
