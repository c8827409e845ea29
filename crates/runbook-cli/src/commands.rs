//! One function per subcommand. Each returns the exit code; output goes to stdout,
//! diagnostics and errors to stderr.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use runbook_core::model::{
    Action, CaptureSource, OnFail, OnFailSimple, ParamType, Runbook, StepKind,
};
use runbook_core::plan::{Edge, Plan};
use runbook_core::render::{RenderedAction, RenderedStep, render_step};
use runbook_core::template::Renderer;
use serde_json::{Value, json};

use runbook_exec::params::value_text;

use crate::diagnostics::{self, counts};
use crate::library::{self, Loaded};
use crate::table::{self, plural};
use crate::{Cli, Exit, GraphFormat, OutputFormat, ShowFormat, ValidateFormat, emit};

pub(crate) fn list(cli: &Cli) -> anyhow::Result<Exit> {
    let files = library::all_files(&cli.dirs)?;
    let mut rows = Vec::new();
    let mut invalid = 0;
    for path in files {
        let loaded = Loaded::read(&path)?;
        let valid = loaded.checked.valid().is_some();
        if !valid {
            invalid += 1;
        }
        let rb = loaded.checked.runbook.as_ref();
        rows.push(vec![
            loaded.name(),
            rb.and_then(|r| r.severity)
                .map_or("-".into(), |s| s.as_str().to_string()),
            rb.map_or("-".into(), |r| r.steps.len().to_string()),
            match rb {
                Some(r) if valid => r.title.value.clone(),
                Some(r) => format!("{} (invalid: run `runbook validate`)", r.title.value),
                None => "(invalid: run `runbook validate`)".into(),
            },
        ]);
    }
    if rows.is_empty() {
        let search = library::search_path(&cli.dirs);
        let dirs: Vec<String> = search.iter().map(|d| d.display().to_string()).collect();
        if search.iter().all(|d| !d.is_dir()) {
            diagnostics::warning(&format!(
                "no runbooks found: {} {} not a directory",
                dirs.join(", "),
                if dirs.len() == 1 { "is" } else { "are" }
            ));
        } else {
            diagnostics::warning(&format!("no runbooks found in {}", dirs.join(", ")));
        }
        return Ok(Exit::Success);
    }
    emit(&table::render(
        &["NAME", "SEVERITY", "STEPS", "TITLE"],
        &rows,
    ))?;
    if invalid > 0 {
        diagnostics::warning(&format!(
            "{invalid} runbook(s) are invalid; `runbook validate` shows why"
        ));
    }
    Ok(Exit::Success)
}

pub(crate) fn validate(
    cli: &Cli,
    paths: &[PathBuf],
    deny_warnings: bool,
    format: ValidateFormat,
) -> anyhow::Result<Exit> {
    let mut files = Vec::new();
    if paths.is_empty() {
        files = library::all_files(&cli.dirs)?;
        files.extend(library::all_of(&cli.dirs, library::Kind::Scenarios)?);
    } else {
        for p in paths {
            if p.is_dir() {
                files.extend(library::files_in(p)?);
                files.extend(library::files_of(p, library::Kind::Scenarios)?);
            } else if p.is_file() {
                files.push(p.clone());
            } else {
                bail!("no such file or directory: {}", p.display());
            }
        }
    }
    if files.is_empty() {
        bail!("no runbook files found (looked for *.yaml and *.yml)");
    }
    let (mut errors, mut warnings, mut bad_files) = (0, 0, 0);
    let mut json_lines = String::new();
    let scenario_files = files
        .iter()
        .filter(|p| library::is_scenario_file(p))
        .count();
    for path in &files {
        // Scenario files are checked as scenarios (their format, and against their runbook).
        let (text, diags) = if library::is_scenario_file(path) {
            crate::scenarios::diagnostics_of(path)?
        } else {
            let loaded = Loaded::read(path)?;
            (loaded.source, loaded.checked.diagnostics)
        };
        let file = diagnostics::SourceFile { path, text: &text };
        let (e, w) = match format {
            ValidateFormat::Human => diagnostics::report_in(&file, &diags, deny_warnings),
            ValidateFormat::Json | ValidateFormat::Github => {
                let mut counts = (0, 0);
                for d in &diags {
                    let error = d.is_error() || deny_warnings;
                    if error {
                        counts.0 += 1;
                    } else {
                        counts.1 += 1;
                    }
                    if format == ValidateFormat::Github {
                        json_lines.push_str(&diagnostics::to_github(&file, d, error));
                        continue;
                    }
                    let mut v = diagnostics::to_json(&file, d);
                    if deny_warnings {
                        v["severity"] = "error".into();
                    }
                    json_lines.push_str(&v.to_string());
                    json_lines.push('\n');
                }
                counts
            }
        };
        if e > 0 {
            bad_files += 1;
        }
        errors += e;
        warnings += w;
    }
    if format != ValidateFormat::Human {
        emit(&json_lines)?;
    }
    let checked = if scenario_files == files.len() {
        plural(scenario_files, "scenario file")
    } else if scenario_files > 0 {
        format!(
            "{} and {}",
            plural(files.len() - scenario_files, "runbook"),
            plural(scenario_files, "scenario file")
        )
    } else {
        plural(files.len(), "runbook")
    };
    let summary = format!("{checked} checked: {}", counts(errors, warnings));
    if errors > 0 {
        diagnostics::error(&format!("{summary}; {} invalid", plural(bad_files, "file")));
        Ok(Exit::Invalid)
    } else {
        let mut err = anstream::stderr();
        let _ = writeln!(err, "{summary}");
        Ok(Exit::Success)
    }
}

/// Parameter values for a static plan: given, defaulted, from the environment, or missing.
struct PlanParams {
    values: serde_json::Map<String, Value>,
    notes: Vec<String>,
}

fn plan_params(rb: &Runbook, given: &[String]) -> anyhow::Result<PlanParams> {
    let mut raw: BTreeMap<&str, &str> = BTreeMap::new();
    let mut problems = Vec::new();
    for item in given {
        let Some((k, v)) = item.split_once('=') else {
            bail!("--param `{item}` is not NAME=VALUE");
        };
        if !rb.params.contains_key(k) {
            let hint = runbook_core::diag::did_you_mean(k, rb.params.keys().map(String::as_str))
                .unwrap_or_else(|| {
                    format!(
                        "parameters: {}",
                        rb.params.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                });
            problems.push(format!("unknown parameter `{k}` ({hint})"));
            continue;
        }
        raw.insert(k, v);
    }
    let mut values = serde_json::Map::new();
    let mut notes = Vec::new();
    for (name, p) in &rb.params {
        let secret = p.ty.value == ParamType::Secret;
        let text = match raw.get(name.as_str()) {
            Some(v) => Some((*v).to_string()),
            None => match p.source() {
                Some(runbook_core::model::ParamSource::Env(var)) => std::env::var(var).ok(),
                _ => None,
            },
        };
        let value = match text {
            Some(t) => match runbook_core::convert::coerce_param(p, &t) {
                Ok(v) => v,
                Err(e) => {
                    problems.push(format!("parameter `{name}`: {e}"));
                    continue;
                }
            },
            None => match &p.default {
                Some(d) => d.value.clone(),
                None => {
                    let why = match &p.from {
                        Some(from) => format!("resolved at run time from {}", from.value),
                        None if p.is_required() => "required, not given".to_string(),
                        None => "optional, not given".to_string(),
                    };
                    notes.push(format!("{name}: {why}"));
                    Value::String(format!("<{name}>"))
                }
            },
        };
        values.insert(
            name.clone(),
            if secret {
                Value::String("***".into())
            } else {
                value
            },
        );
    }
    if !problems.is_empty() {
        bail!("invalid parameters:\n  {}", problems.join("\n  "));
    }
    Ok(PlanParams { values, notes })
}

fn capture_text(capture: &runbook_core::model::Capture) -> String {
    let text = match &capture.source {
        CaptureSource::Stdout(t) => format!("stdout as {}", t.as_str()),
        CaptureSource::Json(e) => format!("json {}", e.value),
        CaptureSource::Regex(r) => format!("regex {}", r.value),
    };
    match capture.convert {
        Some(t) => format!("{text} as {}", t.as_str()),
        None => text,
    }
}

fn on_fail_text(on_fail: &OnFail) -> String {
    match on_fail {
        OnFail::Simple(OnFailSimple::Abort) => "abort".into(),
        OnFail::Simple(OnFailSimple::Continue) => "continue".into(),
        OnFail::Simple(OnFailSimple::Escalate) => "escalate".into(),
        OnFail::Goto { goto } => format!("go to {}", goto.value),
        OnFail::RetryFrom {
            retry_from,
            attempts,
        } => format!("retry from {} (at most {attempts} times)", retry_from.value),
    }
}

/// Ids of a step's predecessors, unless it simply follows the step listed before it.
fn after(rb: &Runbook, plan: &Plan, i: usize) -> Vec<String> {
    let incoming: Vec<(usize, Edge)> = plan.incoming(i).collect();
    if incoming.iter().all(|(_, e)| *e == Edge::Next) {
        return Vec::new();
    }
    let mut ids: Vec<(usize, String)> = incoming
        .iter()
        .map(|(s, e)| {
            let id = rb.steps[*s].id.value.clone();
            (
                *s,
                if *e == Edge::FailGoto {
                    format!("{id} (on failure)")
                } else {
                    id
                },
            )
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids.into_iter().map(|(_, id)| id).collect()
}

fn branch_skips(rb: &Runbook, plan: &Plan, i: usize, edge: Edge) -> Vec<String> {
    plan.skipped_when(rb, i, edge)
        .into_iter()
        .map(|s| rb.steps[s].id.value.clone())
        .collect()
}

pub(crate) fn plan(
    cli: &Cli,
    name: &str,
    given: &[String],
    format: OutputFormat,
) -> anyhow::Result<Exit> {
    crate::diagnostics::with_valid(cli, name, |_, rb, plan| {
        let params =
            plan_params(rb, given).with_context(|| format!("cannot plan {}", rb.name.value))?;
        let data = runbook_core::render::static_data(rb, &params.values);
        let renderer = Renderer::new();
        let mut steps_json = Vec::new();
        let mut out = String::new();
        let sev = rb
            .severity
            .map(|s| format!(" ({})", s.as_str()))
            .unwrap_or_default();
        out.push_str(&format!(
            "plan: {} — {}{sev}\n",
            rb.name.value, rb.title.value
        ));
        if !params.values.is_empty() {
            let shown: Vec<String> = params
                .values
                .iter()
                .map(|(k, v)| format!("{k}={}", value_text(v)))
                .collect();
            out.push_str(&format!("params: {}\n", shown.join(" ")));
        }
        for note in &params.notes {
            out.push_str(&format!("  note: {note}\n"));
        }
        out.push_str(&format!("{} steps, nothing runs\n\n", rb.steps.len()));
        let width = rb.steps.len().to_string().len();
        for (n, &i) in plan.order.iter().enumerate() {
            let step = &rb.steps[i];
            let reads = plan.reads.get(i).map_or(&[][..], Vec::as_slice);
            let view = runbook_core::render::for_step(&data, rb, reads);
            let r = render_step(&renderer, step, &view).unwrap_or_else(|e| RenderedStep {
                title: format!("{} <{e}>", step.title.value),
                confirm: None,
                action: None,
            });
            let lines = r
                .action
                .as_ref()
                .map(RenderedAction::lines)
                .unwrap_or_default();
            out.push_str(&format!(
                "{:>width$}. {:<6} {}  {}\n",
                n + 1,
                step.kind.value.as_str(),
                step.id.value,
                r.title
            ));
            let pad = " ".repeat(width + 9);
            let after = after(rb, plan, i);
            if !after.is_empty() {
                out.push_str(&format!("{pad}after: {}\n", after.join(", ")));
            }
            for line in &lines {
                out.push_str(&format!("{pad}{line}\n"));
            }
            for (cname, cap) in &step.capture {
                let secret = if cap.secret { " (secret)" } else { "" };
                out.push_str(&format!(
                    "{pad}capture {cname} ← {}{secret}\n",
                    capture_text(cap)
                ));
            }
            if let Some(e) = &step.expect {
                out.push_str(&format!("{pad}expect {}\n", e.value));
            }
            if let Some(retry) = &step.retry {
                let interval = retry
                    .interval
                    .as_ref()
                    .map_or("5s".to_string(), |d| d.text.clone());
                let backoff = retry
                    .backoff
                    .map(|b| format!(", backoff ×{b}"))
                    .unwrap_or_default();
                out.push_str(&format!(
                    "{pad}retry {} attempts every {interval}{backoff}\n",
                    retry.attempts
                ));
            }
            if let Some(t) = &step.timeout {
                out.push_str(&format!("{pad}timeout {}\n", t.text));
            }
            if let Some(c) = &r.confirm {
                out.push_str(&format!("{pad}confirm: {c}\n"));
            }
            if let Some(f) = &step.on_fail {
                out.push_str(&format!("{pad}on failure: {}\n", on_fail_text(f)));
            }
            let mut cases_json = Vec::new();
            for (k, case) in step.cases.iter().enumerate() {
                let skips = branch_skips(rb, plan, i, Edge::Case(k));
                let skip_text = if skips.is_empty() {
                    String::new()
                } else {
                    format!("  (skips {})", skips.join(", "))
                };
                out.push_str(&format!(
                    "{pad}when {} → {}{skip_text}\n",
                    case.when.value, case.goto.value
                ));
                cases_json.push(
                    json!({"when": case.when.value, "goto": case.goto.value, "skips": skips}),
                );
            }
            let mut default_json = Value::Null;
            if step.kind.value == StepKind::Branch {
                if let Some(d) = &step.default {
                    let skips = branch_skips(rb, plan, i, Edge::Default);
                    let skip_text = if skips.is_empty() {
                        String::new()
                    } else {
                        format!("  (skips {})", skips.join(", "))
                    };
                    out.push_str(&format!("{pad}otherwise → {}{skip_text}\n", d.value));
                    default_json = json!({"goto": d.value, "skips": skips});
                } else {
                    out.push_str(&format!(
                        "{pad}otherwise → continue with what does not depend on this branch\n"
                    ));
                }
            }
            steps_json.push(json!({
                "position": n + 1,
                "id": step.id.value,
                "kind": step.kind.value.as_str(),
                "title": r.title,
                "after": plan.incoming(i).map(|(s, _)| rb.steps[s].id.value.clone()).collect::<Vec<_>>(),
                "action": r.action,
                "captures": step.capture.iter().map(|(k, c)| (k.clone(), json!({"source": capture_text(c), "secret": c.secret}))).collect::<serde_json::Map<_, _>>(),
                "expect": step.expect.as_ref().map(|e| e.value.clone()),
                "confirm": r.confirm,
                "on_fail": step.on_fail.as_ref().map(|f| on_fail_text(f)),
                "timeout": step.timeout.as_ref().map(|t| t.text.clone()),
                "retry": step.retry.as_ref().map(|r| json!({"attempts": r.attempts, "interval": r.interval.as_ref().map(|d| d.text.clone()), "backoff": r.backoff})),
                "cases": cases_json,
                "default": default_json,
            }));
        }
        match format {
            OutputFormat::Human => emit(&out)?,
            OutputFormat::Json => {
                let doc = json!({
                    "runbook": rb.name.value,
                    "title": rb.title.value,
                    "severity": rb.severity.map(|s| s.as_str()),
                    "params": params.values,
                    "unresolved": params.notes,
                    "steps": steps_json,
                });
                emit(&(serde_json::to_string_pretty(&doc)? + "\n"))?;
            }
        }
        Ok(Exit::Success)
    })
}

pub(crate) fn show(cli: &Cli, name: &str, format: ShowFormat) -> anyhow::Result<Exit> {
    crate::diagnostics::with_valid(cli, name, |_, rb, plan| {
        let text = match format {
            ShowFormat::Json => serde_json::to_string_pretty(rb)? + "\n",
            ShowFormat::Human => show_text(rb, plan, false),
            ShowFormat::Markdown => show_text(rb, plan, true),
        };
        emit(&text)?;
        Ok(Exit::Success)
    })
}

/// The procedure as a person reads it; `markdown` writes a wiki page.
pub(crate) fn show_text(rb: &Runbook, plan: &Plan, markdown: bool) -> String {
    let mut o = String::new();
    let sev = rb.severity.map(|s| s.as_str()).unwrap_or("-");
    if markdown {
        o.push_str(&format!("# {}\n\n", rb.title.value));
        o.push_str(&format!("`{}` · severity {sev}", rb.name.value));
        if !rb.tags.is_empty() {
            o.push_str(&format!(" · tags: {}", rb.tags.join(", ")));
        }
        o.push_str("\n\n");
    } else {
        o.push_str(&format!(
            "{} — {}\nseverity {sev}",
            rb.name.value, rb.title.value
        ));
        if !rb.tags.is_empty() {
            o.push_str(&format!(" · tags: {}", rb.tags.join(", ")));
        }
        o.push('\n');
    }
    if let Some(d) = &rb.description {
        o.push_str(&format!("\n{}\n", d.trim_end()));
    }
    if !rb.params.is_empty() {
        let rows: Vec<Vec<String>> = rb
            .params
            .iter()
            .map(|(n, p)| {
                let mut ty = p.ty.value.as_str().to_string();
                if !p.values.is_empty() {
                    ty = format!(
                        "{ty} ({})",
                        // Separated by commas: a value may itself contain `|`.
                        p.values
                            .iter()
                            .map(|v| v.value.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                let default = match (&p.default, &p.from) {
                    (Some(d), _) => value_text(&d.value),
                    (None, Some(f)) => format!("from {}", f.value),
                    (None, None) if p.is_required() => "(required)".into(),
                    (None, None) => "-".into(),
                };
                vec![
                    n.clone(),
                    ty,
                    default,
                    p.description.clone().unwrap_or_default(),
                ]
            })
            .collect();
        if markdown {
            o.push_str(
                "\n## Parameters\n\n| name | type | default | description |\n|---|---|---|---|\n",
            );
            for r in rows {
                o.push_str(&format!(
                    "| `{}` | {} | {} | {} |\n",
                    r[0],
                    md_cell(&r[1]),
                    md_cell(&r[2]),
                    md_cell(&r[3])
                ));
            }
        } else {
            o.push_str("\nParameters\n");
            for line in table::render(&["NAME", "TYPE", "DEFAULT", "DESCRIPTION"], &rows).lines() {
                o.push_str(&format!("  {line}\n"));
            }
        }
    }
    if !rb.escalation.is_empty() {
        o.push_str(if markdown {
            "\n## Escalation\n\n"
        } else {
            "\nEscalation\n"
        });
        for e in &rb.escalation {
            if markdown {
                o.push_str(&format!("- after {}: {}\n", e.after.text, e.to));
            } else {
                o.push_str(&format!("  after {:<5} → {}\n", e.after.text, e.to));
            }
        }
    }
    if !rb.phases.is_empty() {
        if markdown {
            o.push_str("\n## Phases\n\n| phase | within | steps |\n|---|---|---|\n");
        } else {
            o.push_str("\nPhases (deadlines from the run start)\n");
        }
        for ph in &rb.phases {
            let steps: Vec<&str> = rb
                .steps
                .iter()
                .filter(|s| s.phase.as_ref().is_some_and(|p| p.value == ph.id.value))
                .map(|s| s.id.value.as_str())
                .collect();
            if markdown {
                o.push_str(&format!(
                    "| {} (`{}`) | {} | {} |\n",
                    md_cell(&ph.title),
                    ph.id.value,
                    ph.within.value.text,
                    steps.join(", ")
                ));
            } else {
                o.push_str(&format!(
                    "  within {:<5} {}  ({})\n",
                    ph.within.value.text,
                    ph.title,
                    steps.join(", ")
                ));
            }
        }
    }
    if !rb.triggers.is_empty() {
        if markdown {
            o.push_str("\n## Alerts that start it\n\n| source | when | params |\n|---|---|---|\n");
        } else {
            o.push_str("\nAlerts that start it (runbook match, exec --alert, serve)\n");
        }
        for t in &rb.triggers {
            let when = t.when.as_ref().map_or("every alert", |w| w.value.as_str());
            let params: Vec<String> = t
                .params
                .iter()
                .map(|(k, v)| format!("{k} = {}", v.value))
                .collect();
            if markdown {
                let params: Vec<String> =
                    params.iter().map(|p| format!("`{}`", md_cell(p))).collect();
                o.push_str(&format!(
                    "| {} | `{}` | {} |\n",
                    t.source.value.as_str(),
                    md_cell(when),
                    params.join("<br>")
                ));
            } else {
                o.push_str(&format!("  {:<12} when {when}\n", t.source.value.as_str()));
                for p in &params {
                    o.push_str(&format!("  {:<12} → {p}\n", ""));
                }
            }
        }
    }
    if markdown {
        o.push_str("\n## Graph\n\n```mermaid\n");
        o.push_str(&crate::graph::mermaid(rb, plan));
        o.push_str("```\n");
    }
    o.push_str(if markdown {
        "\n## Procedure\n"
    } else {
        "\nProcedure\n"
    });
    for (n, &i) in plan.order.iter().enumerate() {
        let s = &rb.steps[i];
        let kind = s.kind.value.as_str();
        if markdown {
            o.push_str(&format!(
                "\n### {}. {} ({kind})\n\n",
                n + 1,
                crate::graph::shown_title(rb, s)
            ));
            o.push_str(&format!("Step `{}`.", s.id.value));
        } else {
            // Numbers right-aligned, so the lines under step 10 line up with step 9's.
            o.push_str(&format!(
                "\n{:>3}. [{kind}] {}  ({})\n",
                n + 1,
                crate::graph::shown_title(rb, s),
                s.id.value
            ));
        }
        let after = after(rb, plan, i);
        if !after.is_empty() {
            o.push_str(&if markdown {
                format!(" After: {}.", after.join(", "))
            } else {
                format!("     after: {}\n", after.join(", "))
            });
        }
        if markdown {
            o.push('\n');
        }
        if let Some(d) = &s.description {
            push_block(&mut o, d, markdown, "", "");
        }
        let (code, lang) = match &s.action {
            Some(Action::Shell(sh)) => (Some(sh.run.value.trim_end().to_string()), "bash"),
            Some(Action::Http(h)) => (
                Some(format!("{} {}", h.method.as_str(), h.url.value)),
                "http",
            ),
            Some(Action::SsmCommand(c)) => (
                Some(
                    c.commands
                        .iter()
                        .map(|x| x.value.as_str())
                        .collect::<Vec<_>>()
                        .join("\n"),
                ),
                "bash",
            ),
            Some(Action::SsmAutomation(a)) => {
                (Some(format!("SSM Automation {}", a.document.value)), "text")
            }
            Some(Action::Wait(d)) => (Some(format!("wait {}", d.text)), "text"),
            Some(Action::Manual(m)) => {
                push_block(&mut o, m, markdown, "> ", "☐ ");
                (None, "")
            }
            None => (None, ""),
        };
        if let Some(code) = code {
            if markdown {
                o.push_str(&format!("\n```{lang}\n{code}\n```\n"));
            } else {
                // A shell script is one command continued over lines: `$` on its first
                // line only (as `plan`); Run Command's commands each get one.
                let script = matches!(s.action, Some(Action::Shell(_)));
                for (k, line) in code.lines().enumerate() {
                    let mark = if k == 0 || !script { "$" } else { " " };
                    o.push_str(&format!("     {mark} {line}\n"));
                }
            }
        }
        // The environment a script reads (`$NAME`) is part of what it does.
        if let Some(Action::Shell(sh)) = &s.action {
            for (k, v) in &sh.env {
                o.push_str(&if markdown {
                    format!("\nEnvironment: `{k}={}`\n", v.value)
                } else {
                    format!("     env {k}={}\n", v.value)
                });
            }
            if let Some(cwd) = &sh.cwd {
                o.push_str(&if markdown {
                    format!("\nWorking directory: `{}`\n", cwd.value)
                } else {
                    format!("     cwd {}\n", cwd.value)
                });
            }
        }
        let mut notes = Vec::new();
        if let Some(ph) = s
            .phase
            .as_ref()
            .and_then(|p| rb.phases.iter().find(|ph| ph.id.value == p.value))
        {
            notes.push(format!(
                "phase: {} (within {})",
                ph.title, ph.within.value.text
            ));
        }
        if let Some(e) = &s.expect {
            notes.push(format!("expect: `{}`", e.value));
        }
        if let Some(c) = &s.confirm {
            notes.push(format!("confirm: {}", c.value));
        }
        if let Some(r) = &s.retry {
            notes.push(format!(
                "polled up to {} times every {}",
                r.attempts,
                r.interval.as_ref().map_or("5s", |d| d.text.as_str())
            ));
        }
        if let Some(t) = &s.timeout {
            notes.push(format!("timeout {}", t.text));
        }
        if let Some(f) = &s.on_fail {
            notes.push(format!("on failure: {}", on_fail_text(f)));
        }
        for c in &s.cases {
            notes.push(format!("if `{}` → {}", c.when.value, c.goto.value));
        }
        if let Some(d) = &s.default {
            notes.push(format!("otherwise → {}", d.value));
        }
        for note in notes {
            o.push_str(&if markdown {
                format!("\n- {note}")
            } else {
                format!("     {}\n", note.replace('`', ""))
            });
        }
        if markdown {
            o.push('\n');
        }
    }
    o
}

/// Lines of text under a step: a paragraph in markdown (each line after `md`), indented
/// in the human form (after `plain`).
fn push_block(o: &mut String, text: &str, markdown: bool, md: &str, plain: &str) {
    for line in text.trim_end().lines() {
        o.push_str(&if markdown {
            format!("\n{md}{line}")
        } else {
            format!("     {plain}{line}\n")
        });
    }
    if markdown {
        o.push('\n');
    }
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub(crate) fn graph(cli: &Cli, name: &str, format: GraphFormat) -> anyhow::Result<Exit> {
    crate::diagnostics::with_valid(cli, name, |_, rb, plan| {
        let text = match format {
            GraphFormat::Mermaid => crate::graph::mermaid(rb, plan),
            GraphFormat::Dot => crate::graph::dot(rb, plan),
        };
        emit(&text)?;
        Ok(Exit::Success)
    })
}
