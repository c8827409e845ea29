//! `runbook diff OLD NEW` and `runbook diff --base GITREV [PATH...]`: what changed in
//! runbooks, for reviewers (human, markdown for a pull-request comment, JSON). The
//! comparison itself is `runbook_core::diff`; this module reads the two versions (files,
//! or `git show REV:path` without a checkout), reports invalid ones, and renders.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use runbook_core::diff::{Change, Diff, FieldChange, WordOp, word_diff};
use runbook_core::{Plan, Runbook};

use crate::diagnostics::{self, SourceFile};
use crate::{Cli, Exit};

/// Output formats of `runbook diff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DiffFormat {
    /// For a terminal.
    Human,
    /// A pull-request comment: summary table, risks, changes, mermaid graph.
    Markdown,
    /// One JSON document.
    Json,
}

/// Arguments of `runbook diff`.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// OLD and NEW runbook files; with --base, the files or directories to compare
    /// (default: the search path)
    pub paths: Vec<PathBuf>,
    /// Compare every runbook changed since this git revision (read with `git show`)
    #[arg(long, value_name = "GITREV")]
    pub base: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value_t = DiffFormat::Human)]
    pub format: DiffFormat,
}

/// One runbook's two versions.
struct Pair {
    /// The path shown (the new file's, or the old one's when deleted).
    path: String,
    /// The file's path at the base revision, when git saw it renamed.
    renamed_from: Option<String>,
    old: Option<(String, String)>,
    new: Option<(String, String)>,
}

/// A compared pair, ready to render.
struct Compared {
    path: String,
    renamed_from: Option<String>,
    status: &'static str,
    diff: Diff,
    new: Option<(Runbook, Plan)>,
}

/// Run `runbook diff`.
pub fn diff(cli: &Cli, args: &DiffArgs) -> anyhow::Result<Exit> {
    let pairs = match &args.base {
        Some(rev) => changed_since(cli, rev, &args.paths)?,
        None => {
            let [old, new] = args.paths.as_slice() else {
                bail!(
                    "runbook diff takes two files (OLD NEW), or --base GITREV [PATH...]; got {} path{}",
                    args.paths.len(),
                    if args.paths.len() == 1 { "" } else { "s" }
                );
            };
            let read = |p: &Path| -> anyhow::Result<(String, String)> {
                Ok((p.display().to_string(), crate::library::read_text(p)?))
            };
            vec![Pair {
                path: new.display().to_string(),
                renamed_from: None,
                old: Some(read(old)?),
                new: Some(read(new)?),
            }]
        }
    };
    let mut compared = Vec::new();
    let mut invalid = false;
    for pair in pairs {
        let old = pair.old.as_ref().map(|(label, text)| valid(label, text));
        let new = pair.new.as_ref().map(|(label, text)| valid(label, text));
        let (old, new) = match (old, new) {
            (Some(None), _) | (_, Some(None)) => {
                invalid = true;
                continue;
            }
            (o, n) => (o.flatten(), n.flatten()),
        };
        let (status, diff) = match (&old, &new) {
            (Some((o, op)), Some((n, np))) => (
                if pair.renamed_from.is_some() {
                    "renamed"
                } else {
                    "changed"
                },
                runbook_core::diff::diff(o, op, n, np),
            ),
            (None, Some((n, _))) => ("added", runbook_core::diff::added(n)),
            (Some((o, _)), None) => ("deleted", runbook_core::diff::removed(o)),
            (None, None) => continue,
        };
        compared.push(Compared {
            renamed_from: pair.renamed_from,
            path: pair.path,
            status,
            diff,
            new,
        });
    }
    if invalid {
        diagnostics::error("cannot compare: a version above is not a valid runbook");
        return Ok(Exit::Invalid);
    }
    let differs = compared
        .iter()
        .any(|c| !c.diff.is_empty() || c.renamed_from.is_some());
    let text = match args.format {
        DiffFormat::Human => human(&compared),
        DiffFormat::Markdown => markdown(&compared),
        DiffFormat::Json => {
            let doc: Vec<serde_json::Value> = compared
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "path": c.path,
                        "renamed_from": c.renamed_from,
                        "status": c.status,
                        "runbook": c.diff.name,
                        "risks": c.diff.risks,
                        "changes": c.diff.changes,
                    })
                })
                .collect();
            format!("{:#}\n", serde_json::Value::Array(doc))
        }
    };
    crate::emit(&text)?;
    Ok(if differs {
        Exit::Failure
    } else {
        Exit::Success
    })
}

/// Check one version; report its diagnostics when it is not valid.
fn valid(label: &str, text: &str) -> Option<(Runbook, Plan)> {
    let stem = Path::new(label.rsplit(':').next().unwrap_or(label))
        .file_stem()
        .and_then(|s| s.to_str())
        .map(str::to_string);
    let checked = runbook_core::check(text, stem.as_deref());
    if let Some((rb, plan)) = checked.valid() {
        return Some((rb.clone(), plan.clone()));
    }
    let file = SourceFile {
        path: Path::new(label),
        text,
    };
    let (errors, warnings) = diagnostics::report_in(&file, &checked.diagnostics, false);
    diagnostics::error(&format!(
        "{label} is not a valid runbook ({})",
        diagnostics::counts(errors, warnings)
    ));
    None
}

fn git(args: &[&str]) -> anyhow::Result<std::process::Output> {
    Command::new("git")
        .args(args)
        .output()
        .context("cannot run git (is it installed?)")
}

/// Every runbook under `paths` (default: the search path) that differs between `rev`
/// and the working tree: changed, added (untracked too) and deleted ones.
fn changed_since(cli: &Cli, rev: &str, paths: &[PathBuf]) -> anyhow::Result<Vec<Pair>> {
    let verify = git(&[
        "rev-parse",
        "--verify",
        "--quiet",
        &format!("{rev}^{{commit}}"),
    ])?;
    if !verify.status.success() {
        let inside = git(&["rev-parse", "--is-inside-work-tree"])?;
        if !inside.status.success() {
            bail!("--base {rev}: not inside a git repository");
        }
        bail!("--base {rev}: no such git revision (try `git log --oneline` or `git branch -a`)");
    }
    let scope: Vec<String> = if paths.is_empty() {
        crate::library::search_path(&cli.dirs)
            .iter()
            .map(|p| p.display().to_string())
            .collect()
    } else {
        paths.iter().map(|p| p.display().to_string()).collect()
    };
    let mut cmd = vec!["diff", "--name-status", "--find-renames", rev, "--"];
    cmd.extend(scope.iter().map(String::as_str));
    let out = git(&cmd)?;
    if !out.status.success() {
        bail!(
            "git diff {rev} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // (status, path then, path now): `R` lines carry both.
    let mut entries: Vec<(char, String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut parts = l.split('\t');
            let status = parts.next()?.chars().next()?;
            let first = parts.next()?.to_string();
            let second = parts.next().map_or_else(|| first.clone(), str::to_string);
            Some((status, first, second))
        })
        .collect();
    let mut untracked = vec!["ls-files", "--others", "--exclude-standard", "--"];
    untracked.extend(scope.iter().map(String::as_str));
    let out = git(&untracked)?;
    entries.extend(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|p| ('A', p.to_string(), p.to_string())),
    );
    // git prints paths relative to the repository root; read and show them from there.
    let top = git(&["rev-parse", "--show-toplevel"])?;
    let top = PathBuf::from(String::from_utf8_lossy(&top.stdout).trim());
    let cwd = std::env::current_dir()?;
    let mut pairs = Vec::new();
    for (status, then, path) in entries {
        let p = Path::new(&path);
        let is_runbook = matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
            && !crate::library::is_scenario_file(p);
        if !is_runbook {
            continue;
        }
        let abs = top.join(&path);
        let shown = abs
            .strip_prefix(&cwd)
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| abs.clone())
            .display()
            .to_string();
        let old = if status == 'A' {
            None
        } else {
            let spec = format!("{rev}:{then}");
            let out = Command::new("git")
                .args(["show", &spec])
                .current_dir(&top)
                .output()
                .context("cannot run git show")?;
            if !out.status.success() {
                bail!(
                    "git show {spec} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            let text = String::from_utf8(out.stdout)
                .map_err(|_| anyhow::anyhow!("{spec} is not UTF-8 text"))?;
            Some((spec, text))
        };
        let new = if status == 'D' {
            None
        } else {
            Some((shown.clone(), crate::library::read_text(&abs)?))
        };
        let renamed = (status == 'R').then(|| {
            let from = top.join(&then);
            from.strip_prefix(&cwd)
                .map(Path::to_path_buf)
                .unwrap_or(from)
                .display()
                .to_string()
        });
        pairs.push(Pair {
            path: shown,
            renamed_from: renamed,
            old,
            new,
        });
    }
    pairs.sort_by(|a, b| a.path.cmp(&b.path));
    pairs.dedup_by(|a, b| a.path == b.path);
    Ok(pairs)
}

fn counts(d: &Diff) -> (usize, usize, usize, usize) {
    let mut c = (0, 0, 0, 0);
    for ch in &d.changes {
        match ch {
            Change::StepAdded { .. } => c.0 += 1,
            Change::StepRemoved { .. } => c.1 += 1,
            Change::StepChanged { .. } | Change::StepRenamed { .. } | Change::StepMoved { .. } => {
                c.2 += 1
            }
            _ => c.3 += 1,
        }
    }
    c
}

fn value(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "(none)".into())
}

/// `[-old-]{+new+}` word diff for a terminal.
fn inline_word_diff(f: &FieldChange) -> String {
    word_diff(
        f.old.as_deref().unwrap_or(""),
        f.new.as_deref().unwrap_or(""),
    )
    .into_iter()
    .map(|(op, text)| match op {
        WordOp::Same => text,
        WordOp::Removed => format!("[-{text}-]"),
        WordOp::Added => format!("{{+{text}+}}"),
    })
    .collect::<Vec<_>>()
    .join(" ")
}

fn change_lines(ch: &Change) -> Vec<String> {
    match ch {
        Change::StepAdded { step, kind, title } => {
            vec![format!("+ step {step} ({}): {title}", kind.as_str())]
        }
        Change::StepRemoved { step, kind, title } => {
            vec![format!("- step {step} ({}): {title}", kind.as_str())]
        }
        Change::StepRenamed { from, to } => vec![format!("~ step {from} renamed to {to}")],
        Change::StepMoved { step, from, to } => {
            vec![format!("~ step {step} moved: position {from} → {to}")]
        }
        Change::StepChanged { step, kind, fields } => {
            let mut v = vec![format!("~ step {step} ({})", kind.as_str())];
            for f in fields {
                if f.field == "command" && f.old.is_some() && f.new.is_some() {
                    v.push(format!("    command: {}", inline_word_diff(f)));
                } else {
                    v.push(format!(
                        "    {}: {} → {}",
                        f.field,
                        value(&f.old),
                        value(&f.new)
                    ));
                }
            }
            v
        }
        Change::ParamAdded { param, text } => vec![format!("+ param {param}: {text}")],
        Change::ParamRemoved { param } => vec![format!("- param {param}")],
        Change::ParamChanged { param, fields } => fields
            .iter()
            .map(|f| {
                format!(
                    "~ param {param} {}: {} → {}",
                    f.field,
                    value(&f.old),
                    value(&f.new)
                )
            })
            .collect(),
        Change::RunbookChanged { field } => vec![format!(
            "~ {}: {} → {}",
            field.field,
            value(&field.old),
            value(&field.new)
        )],
    }
}

fn human(compared: &[Compared]) -> String {
    let mut o = String::new();
    for c in compared {
        let (added, removed, changed, other) = counts(&c.diff);
        let _ = writeln!(
            o,
            "{} ({}, {}): {} risk{}, {} added, {} removed, {} changed step{}, {} other change{}",
            c.path,
            c.diff.name,
            match &c.renamed_from {
                Some(from) => format!("renamed from {from}"),
                None => c.status.to_string(),
            },
            c.diff.risks.len(),
            if c.diff.risks.len() == 1 { "" } else { "s" },
            added,
            removed,
            changed,
            if changed == 1 { "" } else { "s" },
            other,
            if other == 1 { "" } else { "s" },
        );
        for r in &c.diff.risks {
            let _ = writeln!(o, "  ! {}: {}", r.kind.as_str(), r.message);
        }
        for ch in &c.diff.changes {
            for line in change_lines(ch) {
                let _ = writeln!(o, "  {line}");
            }
        }
        o.push('\n');
    }
    if compared
        .iter()
        .all(|c| c.diff.is_empty() && c.renamed_from.is_none())
    {
        o = "no differences\n".into();
    }
    o
}

fn md(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn markdown(compared: &[Compared]) -> String {
    let mut o = String::from("## Runbook changes\n\n");
    if compared.iter().all(|c| c.diff.is_empty()) {
        o.push_str("No runbook differs.\n");
        return o;
    }
    o.push_str("| runbook | file | risks | steps added | removed | changed | other |\n|---|---|---|---|---|---|---|\n");
    for c in compared {
        let (a, r, ch, other) = counts(&c.diff);
        let _ = writeln!(
            o,
            "| `{}` ({}) | `{}` | {} | {a} | {r} | {ch} | {other} |",
            c.diff.name,
            c.status,
            md(&c.path),
            if c.diff.risks.is_empty() {
                "0".to_string()
            } else {
                format!("**{}** ⚠️", c.diff.risks.len())
            }
        );
    }
    for c in compared.iter().filter(|c| !c.diff.is_empty()) {
        let _ = writeln!(o, "\n### `{}` ({})\n", c.diff.name, c.status);
        if !c.diff.risks.is_empty() {
            o.push_str("**Risks**\n\n");
            for r in &c.diff.risks {
                let _ = writeln!(o, "- ⚠️ **{}**: {}", r.kind.as_str(), md(&r.message));
            }
            o.push('\n');
        }
        o.push_str("**Changes**\n\n");
        let mut blocks = String::new();
        for ch in &c.diff.changes {
            let lines = change_lines(ch);
            let _ = writeln!(o, "- `{}`", lines[0].replace('`', "'"));
            if let Change::StepChanged { step, fields, .. } = ch {
                for f in fields {
                    if f.field == "command" {
                        let _ = writeln!(blocks, "`{step}` command:\n\n```diff");
                        if let Some(old) = &f.old {
                            let _ = writeln!(blocks, "- {old}");
                        }
                        if let Some(new) = &f.new {
                            let _ = writeln!(blocks, "+ {new}");
                        }
                        blocks.push_str("```\n\n");
                    } else {
                        let _ = writeln!(
                            o,
                            "  - {}: `{}` → `{}`",
                            f.field,
                            md(&value(&f.old)).replace('`', "'"),
                            md(&value(&f.new)).replace('`', "'")
                        );
                    }
                }
            }
        }
        o.push('\n');
        o.push_str(&blocks);
        if let Some(graph) = graph(c) {
            o.push_str(
                "**The new plan** (added steps green, changed yellow, removed red)\n\n```mermaid\n",
            );
            o.push_str(&graph);
            o.push_str("```\n");
        }
    }
    o
}

/// The new plan as mermaid, added/changed/removed steps styled apart.
fn graph(c: &Compared) -> Option<String> {
    let (rb, plan) = c.new.as_ref()?;
    let mut g = crate::graph::mermaid(rb, plan);
    let mut added = Vec::new();
    let mut changed = Vec::new();
    let mut removed = Vec::new();
    for ch in &c.diff.changes {
        match ch {
            Change::StepAdded { step, .. } => added.push(step.clone()),
            Change::StepChanged { step, .. } | Change::StepMoved { step, .. } => {
                changed.push(step.clone())
            }
            Change::StepRenamed { to, .. } => changed.push(to.clone()),
            Change::StepRemoved { step, kind, title } => {
                removed.push(step.clone());
                let label =
                    crate::graph::mermaid_text(&format!("removed {}: {title}", kind.as_str()));
                let _ = writeln!(g, "    s_{step}[\"{label}\"]");
            }
            _ => {}
        }
    }
    g.push_str("    classDef added fill:#dafbe1,stroke:#1a7f37,stroke-width:2px\n");
    g.push_str("    classDef changed fill:#fff8c5,stroke:#9a6700,stroke-width:2px\n");
    g.push_str("    classDef removed fill:#ffebe9,stroke:#cf222e,stroke-dasharray:5 5\n");
    for (class, ids) in [
        ("added", &added),
        ("changed", &changed),
        ("removed", &removed),
    ] {
        let mut ids: Vec<&String> = ids.iter().collect();
        ids.dedup();
        if !ids.is_empty() {
            let list: Vec<String> = ids.iter().map(|i| format!("s_{i}")).collect();
            let _ = writeln!(g, "    class {} {class}", list.join(","));
        }
    }
    Some(g)
}

/// What changed in a run's runbook since the run started, for `resume`: the semantic
/// diff when git still has the version the run started with, else `None`.
pub(crate) fn since_start(
    origin: &runbook_exec::event::Origin,
    now: &Runbook,
    now_plan: &Plan,
) -> Option<String> {
    let then = runbook_exec::session::content_at_start(origin)?;
    let checked = runbook_core::check(&then, None);
    let (rb, plan) = checked.valid()?;
    let diff = runbook_core::diff::diff(rb, plan, now, now_plan);
    let mut o = String::new();
    for r in &diff.risks {
        let _ = writeln!(o, "  ! {}: {}", r.kind.as_str(), r.message);
    }
    for ch in &diff.changes {
        for line in change_lines(ch) {
            let _ = writeln!(o, "  {line}");
        }
    }
    Some(o)
}
