//! `runbook test`: run scenario files (`NAME.test.yaml`) against their runbooks with
//! scripted results, report each scenario, and what no scenario reaches (`--coverage`).
//!
//! The engine and the script live in `runbook_exec::scenario`; this module finds the
//! files, reports their diagnostics, runs each scenario on a paused clock and renders
//! the outcome (human or JSON). The exit code a scenario expects is checked here, because
//! the exit-code table belongs to the command line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use runbook_core::model::{OnFail, OnFailSimple, Runbook, StepKind};
use runbook_core::scenario::{Scenario, ScenarioFile};
use runbook_exec::scenario::{Actual, Mismatch, Reached, compare, parts_at};
use serde_json::json;

use crate::diagnostics::{self, SourceFile};
use crate::library::{self, Kind, Loaded};
use crate::table::plural;
use crate::{Cli, Exit};

/// Output formats of `runbook test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TestFormat {
    /// For a terminal.
    Human,
    /// One JSON document: every scenario's outcome (and coverage).
    Json,
}

/// Arguments of `runbook test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Runbook names, runbook files or scenario files (default: every scenario file on
    /// the search path); with --replay, the runbook file to replay against
    pub names: Vec<String>,
    /// Report the steps, branch cases and on_fail routes that no scenario reaches
    #[arg(long)]
    pub coverage: bool,
    /// Replay a recorded run (id, unique prefix or `last`): its results become the script
    #[arg(long, value_name = "RUN")]
    pub replay: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value_t = TestFormat::Human)]
    pub format: TestFormat,
}

/// A scenario file with its runbook, both read and checked.
struct Suite {
    path: PathBuf,
    file: ScenarioFile,
    runbook: Loaded,
}

/// The outcome of one scenario.
struct Outcome {
    suite: usize,
    name: String,
    actual: Actual,
    mismatches: Vec<Mismatch>,
    exit_code: Option<i32>,
}

impl Outcome {
    fn passed(&self) -> bool {
        self.actual.problems.is_empty() && self.mismatches.is_empty()
    }
}

/// Run `runbook test` (`--replay` is `replay::replay`).
pub fn test(cli: &Cli, args: &TestArgs) -> anyhow::Result<Exit> {
    let files = scenario_files(cli, &args.names)?;
    if files.is_empty() {
        let dirs: Vec<String> = library::search_path(&cli.dirs)
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        bail!(
            "no scenario files (*.test.yaml) in {}\nhelp: docs/testing.md shows how to write one",
            dirs.join(", ")
        );
    }
    let mut suites = Vec::new();
    let mut invalid = 0;
    for path in &files {
        match load(path)? {
            Some(suite) => suites.push(suite),
            None => invalid += 1,
        }
    }
    let mut outcomes = Vec::new();
    for (i, suite) in suites.iter().enumerate() {
        let Some((rb, plan)) = suite.runbook.checked.valid() else {
            continue;
        };
        let rb = Arc::new(rb.clone());
        let plan = Arc::new(plan.clone());
        for sc in &suite.file.scenarios {
            outcomes.push(run_one(i, &rb, &plan, sc)?);
        }
    }
    let coverage = args.coverage.then(|| coverage(&suites, &outcomes));
    let failed = outcomes.iter().filter(|o| !o.passed()).count();
    match args.format {
        TestFormat::Human => print_human(&suites, &outcomes, invalid, coverage.as_deref())?,
        TestFormat::Json => {
            let doc = json!({
                "scenarios": outcomes.iter().map(|o| outcome_json(&suites, o)).collect::<Vec<_>>(),
                "passed": outcomes.len() - failed,
                "failed": failed,
                "invalid_files": invalid,
                "coverage": coverage.as_ref().map(|c| c.iter().map(Coverage::to_json).collect::<Vec<_>>()),
            });
            crate::emit(&format!("{doc:#}\n"))?;
        }
    }
    Ok(if invalid > 0 {
        Exit::Invalid
    } else if failed > 0 {
        Exit::Failure
    } else {
        Exit::Success
    })
}

/// The scenario files NAMES stand for (every one on the search path when none is given).
fn scenario_files(cli: &Cli, names: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    if names.is_empty() {
        return library::all_of(&cli.dirs, Kind::Scenarios);
    }
    let mut out = Vec::new();
    for name in names {
        let path = Path::new(name);
        if path.is_dir() {
            out.extend(library::files_of(path, Kind::Scenarios)?);
            continue;
        }
        if library::is_scenario_file(path) {
            if !path.is_file() {
                bail!("no scenario file at {name}");
            }
            out.push(path.to_path_buf());
            continue;
        }
        // A runbook (by name or path): its scenarios sit beside it.
        let runbook = library::resolve(name, &cli.dirs)?;
        let beside = scenario_path_for(&runbook);
        if !beside.is_file() {
            bail!(
                "{} has no scenarios: expected them in {}\nhelp: docs/testing.md shows how to write one",
                runbook.display(),
                beside.display()
            );
        }
        out.push(beside);
    }
    Ok(out)
}

/// `dir/NAME.yaml` → `dir/NAME.test.yaml`.
fn scenario_path_for(runbook: &Path) -> PathBuf {
    let stem = runbook
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    runbook.with_file_name(format!("{stem}.test.yaml"))
}

/// The runbook a scenario file is about: its `runbook:` (a path relative to the file, or
/// a name beside it), else the file's own name without `.test.yaml`.
fn runbook_path(scenario: &Path, named: Option<&str>) -> PathBuf {
    let dir = scenario.parent().unwrap_or(Path::new("."));
    match named {
        Some(n) if n.contains('/') || n.ends_with(".yaml") || n.ends_with(".yml") => dir.join(n),
        Some(n) => candidates(dir, n),
        None => {
            let file = scenario
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let stem = file
                .strip_suffix(".test.yaml")
                .or_else(|| file.strip_suffix(".test.yml"))
                .unwrap_or(&file);
            candidates(dir, stem)
        }
    }
}

fn candidates(dir: &Path, name: &str) -> PathBuf {
    let yml = dir.join(format!("{name}.yml"));
    if yml.is_file() && !dir.join(format!("{name}.yaml")).is_file() {
        yml
    } else {
        dir.join(format!("{name}.yaml"))
    }
}

/// Read a scenario file and its runbook; report their diagnostics (all of them at once:
/// the file's own and those against the runbook). `None`: invalid.
fn load(path: &Path) -> anyhow::Result<Option<Suite>> {
    let text = library::read_text(path)?;
    let checked = runbook_core::validate::scenarios::check(&text);
    let here = SourceFile { path, text: &text };
    let Some(file) = checked.file else {
        let (errors, warnings) = diagnostics::report_in(&here, &checked.diagnostics, false);
        diagnostics::error(&format!(
            "{} is not a valid scenario file ({})",
            path.display(),
            diagnostics::counts(errors, warnings)
        ));
        return Ok(None);
    };
    let rb_path = runbook_path(path, file.runbook.as_ref().map(|r| r.value.as_str()));
    let runbook = Loaded::read(&rb_path).with_context(|| {
        format!(
            "{}: the scenarios' runbook{}",
            path.display(),
            file.runbook
                .as_ref()
                .map(|r| format!(" (`runbook: {}`)", r.value))
                .unwrap_or_default()
        )
    })?;
    let Some((rb, _)) = runbook.checked.valid() else {
        let (errors, warnings) = diagnostics::report(&runbook, false);
        diagnostics::error(&format!(
            "{} is not a valid runbook ({}); its scenarios in {} cannot run",
            rb_path.display(),
            diagnostics::counts(errors, warnings),
            path.display()
        ));
        return Ok(None);
    };
    let mut problems = checked.diagnostics;
    problems.extend(runbook_core::validate::scenarios::check_against(&file, rb));
    problems.sort_by_key(|d| (d.span.offset, d.code));
    if problems.iter().any(runbook_core::Diagnostic::is_error) {
        let (errors, warnings) = diagnostics::report_in(&here, &problems, false);
        diagnostics::error(&format!(
            "{} is not a valid scenario file for {} ({})",
            path.display(),
            rb_path.display(),
            diagnostics::counts(errors, warnings)
        ));
        return Ok(None);
    }
    Ok(Some(Suite {
        path: path.to_path_buf(),
        file,
        runbook,
    }))
}

/// Every problem of a scenario file, its own and against its runbook, for
/// `runbook validate`: (text, diagnostics).
pub fn diagnostics_of(path: &Path) -> anyhow::Result<(String, Vec<runbook_core::Diagnostic>)> {
    let text = library::read_text(path)?;
    let checked = runbook_core::validate::scenarios::check(&text);
    let mut diags = checked.diagnostics;
    if let Some(file) = &checked.file {
        let rb_path = runbook_path(path, file.runbook.as_ref().map(|r| r.value.as_str()));
        let loaded = Loaded::read(&rb_path)
            .with_context(|| format!("{}: cannot check it against its runbook", path.display()))?;
        if let Some((rb, _)) = loaded.checked.valid() {
            diags.extend(runbook_core::validate::scenarios::check_against(file, rb));
        }
    }
    diags.sort_by_key(|d| (d.span.offset, d.code));
    Ok((text, diags))
}

/// Run one scenario on its own paused clock.
fn run_one(
    suite: usize,
    rb: &Arc<Runbook>,
    plan: &Arc<runbook_core::Plan>,
    sc: &Scenario,
) -> anyhow::Result<Outcome> {
    let actual =
        runbook_exec::scenario::run_paused(Arc::clone(rb), Arc::clone(plan), sc, "the scenario")
            .context("cannot start the async runtime")?;
    let exit_code = actual.status.map(crate::Exit::code_of);
    let mismatches = compare(sc, &actual, exit_code);
    Ok(Outcome {
        suite,
        name: sc.name.value.clone(),
        actual,
        mismatches,
        exit_code,
    })
}

fn expected_path(suites: &[Suite], o: &Outcome) -> Option<Vec<String>> {
    suites[o.suite]
        .file
        .scenarios
        .iter()
        .find(|s| s.name.value == o.name)?
        .expect
        .path_ids()
}

fn print_human(
    suites: &[Suite],
    outcomes: &[Outcome],
    invalid: usize,
    coverage: Option<&[Coverage]>,
) -> anyhow::Result<()> {
    use anstyle::{AnsiColor, Style};
    let color = std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let paint = |c: AnsiColor, t: &str| {
        if color {
            let s = Style::new().bold().fg_color(Some(c.into()));
            format!("{s}{t}{s:#}")
        } else {
            t.to_string()
        }
    };
    let mut o = String::new();
    let mut last_suite = None;
    for out in outcomes {
        if last_suite != Some(out.suite) {
            let s = &suites[out.suite];
            o.push_str(&format!("{} ({})\n", s.path.display(), s.runbook.name()));
            last_suite = Some(out.suite);
        }
        if out.passed() {
            o.push_str(&format!(
                "  {} {}\n",
                paint(AnsiColor::Green, "ok  "),
                out.name
            ));
            continue;
        }
        o.push_str(&format!(
            "  {} {}\n",
            paint(AnsiColor::Red, "FAIL"),
            out.name
        ));
        for p in &out.actual.problems {
            o.push_str(&format!("       {p}\n"));
        }
        for m in out.mismatches.iter().filter(|m| m.what != "path") {
            o.push_str(&mismatch_text(m));
        }
        if out.mismatches.iter().any(|m| m.what == "path") {
            let expected = expected_path(suites, out).unwrap_or_default();
            let actual = &out.actual.path;
            let at = parts_at(&expected, actual).unwrap_or(0);
            o.push_str(&format!(
                "       the path parts at step {}: expected `{}`, got `{}`\n",
                at + 1,
                expected.get(at).map_or("(the end)", String::as_str),
                actual.get(at).map_or("(the end)", String::as_str)
            ));
            let width = expected
                .iter()
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
                .max("expected".len());
            o.push_str(&format!("           {:<width$}   actual\n", "expected"));
            for k in 0..expected.len().max(actual.len()) {
                let e = expected.get(k).map_or("", String::as_str);
                let a = actual.get(k).map_or("", String::as_str);
                let mark = if k >= at && e != a { "≠" } else { " " };
                o.push_str(&format!("       {:>2} {mark} {e:<width$}   {a}\n", k + 1));
            }
        }
        // A failure the problems above already explain is not repeated.
        for (step, why) in out
            .actual
            .failures
            .iter()
            .filter(|(_, why)| !out.actual.problems.contains(why))
        {
            o.push_str(&format!("       step `{step}` failed: {why}\n"));
        }
    }
    let failed = outcomes.iter().filter(|o| !o.passed()).count();
    o.push_str(&format!(
        "\n{}: {} passed, {} failed{}\n",
        plural(outcomes.len(), "scenario"),
        outcomes.len() - failed,
        failed,
        if invalid > 0 {
            format!(
                "; {} not run (invalid, see above)",
                plural(invalid, "scenario file")
            )
        } else {
            String::new()
        }
    ));
    if let Some(cov) = coverage.filter(|c| !c.is_empty()) {
        o.push_str("\ncoverage (steps, branch cases, on_fail routes reached)\n");
        let (mut reached, mut total) = (0, 0);
        let width = cov.iter().map(|c| c.runbook.len()).max().unwrap_or(0);
        for c in cov {
            reached += c.reached;
            total += c.total;
            o.push_str(&format!(
                "  {:<width$}  {:>3}/{:<3} {}\n",
                c.runbook,
                c.reached,
                c.total,
                percent(c.reached, c.total)
            ));
            for u in &c.unreached {
                o.push_str(&format!("      not reached: {u}\n"));
            }
        }
        o.push_str(&format!(
            "  {:<width$}  {:>3}/{:<3} {}\n",
            "total",
            reached,
            total,
            percent(reached, total)
        ));
    }
    let mut stdout = anstream::stdout().lock();
    stdout.write_all(o.as_bytes())?;
    Ok(())
}

/// One mismatch for people; a multi-line value (a script) as an indented block.
fn mismatch_text(m: &Mismatch) -> String {
    if !m.expected.contains('\n') && !m.actual.contains('\n') {
        return format!(
            "       {}: expected {}, got {}\n",
            m.what, m.expected, m.actual
        );
    }
    let block = |t: &str| {
        t.lines()
            .map(|l| format!("           {l}\n"))
            .collect::<String>()
    };
    format!(
        "       {} differs\n         expected:\n{}         got:\n{}",
        m.what,
        block(&m.expected),
        block(&m.actual)
    )
}

fn percent(n: usize, of: usize) -> String {
    if of == 0 {
        return "100%".into();
    }
    format!("{}%", n * 100 / of)
}

fn outcome_json(suites: &[Suite], o: &Outcome) -> serde_json::Value {
    let expected = expected_path(suites, o);
    json!({
        "file": suites[o.suite].path.display().to_string(),
        "runbook": suites[o.suite].runbook.name(),
        "scenario": o.name,
        "passed": o.passed(),
        "status": o.actual.status.map(runbook_exec::scenario::status_name),
        "exit_code": o.exit_code,
        "path": o.actual.path,
        "expected_path": expected,
        "parts_at": expected.as_ref().and_then(|e| parts_at(e, &o.actual.path)).map(|i| i + 1),
        "problems": o.actual.problems,
        "failed_steps": o.actual.failures.iter().map(|(s, m)| json!({"step": s, "message": m})).collect::<Vec<_>>(),
        "mismatches": o.mismatches.iter().map(|m| json!({
            "what": m.what, "expected": m.expected, "actual": m.actual,
        })).collect::<Vec<_>>(),
    })
}

/// What the scenarios of one runbook reach.
struct Coverage {
    runbook: String,
    file: String,
    reached: usize,
    total: usize,
    unreached: Vec<String>,
}

impl Coverage {
    fn to_json(&self) -> serde_json::Value {
        json!({
            "runbook": self.runbook,
            "file": self.file,
            "reached": self.reached,
            "total": self.total,
            "unreached": self.unreached,
        })
    }
}

/// Per runbook (scenario files of the same runbook together): every step, every branch
/// case and default, every explicit `on_fail` route other than `abort`.
fn coverage(suites: &[Suite], outcomes: &[Outcome]) -> Vec<Coverage> {
    let mut by_runbook: Vec<(PathBuf, Vec<usize>)> = Vec::new();
    for (i, s) in suites.iter().enumerate() {
        match by_runbook.iter_mut().find(|(p, _)| *p == s.runbook.path) {
            Some((_, v)) => v.push(i),
            None => by_runbook.push((s.runbook.path.clone(), vec![i])),
        }
    }
    let mut out = Vec::new();
    for (path, members) in by_runbook {
        let Some((rb, _)) = suites[members[0]].runbook.checked.valid() else {
            continue;
        };
        let mut reached = Reached::default();
        for o in outcomes.iter().filter(|o| members.contains(&o.suite)) {
            reached.add(&o.actual.events);
        }
        let (hit, total, unreached) = items(rb, &reached);
        out.push(Coverage {
            runbook: rb.name.value.clone(),
            file: path.display().to_string(),
            reached: hit,
            total,
            unreached,
        });
    }
    out
}

/// Count what `reached` covers of `rb`: (reached, total, what was not reached).
fn items(rb: &Runbook, reached: &Reached) -> (usize, usize, Vec<String>) {
    let mut hit = 0;
    let mut total = 0;
    let mut missed = Vec::new();
    let mut item = |ok: bool, what: String| {
        total += 1;
        if ok {
            hit += 1;
        } else {
            missed.push(what);
        }
    };
    for s in &rb.steps {
        let id = &s.id.value;
        item(reached.steps.contains(id), format!("step {id}"));
        if s.kind.value == StepKind::Branch {
            for (k, c) in s.cases.iter().enumerate() {
                item(
                    reached.cases.contains(&(id.clone(), Some(k))),
                    format!(
                        "{id} case {} (`{}` → {})",
                        k + 1,
                        c.when.value,
                        c.goto.value
                    ),
                );
            }
            if let Some(d) = &s.default {
                item(
                    reached.cases.contains(&(id.clone(), None)),
                    format!("{id} default (→ {})", d.value),
                );
            }
        }
        let route = s.on_fail.as_ref().map(|f| &f.value);
        if let Some(r) = route.filter(|r| **r != OnFail::Simple(OnFailSimple::Abort)) {
            item(
                reached.on_fail.contains(id),
                format!("{id} on_fail ({})", r.text()),
            );
        }
    }
    (hit, total, missed)
}
