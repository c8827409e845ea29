//! Finding and loading runbooks: the search path, names and files.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use runbook_core::Checked;

/// A runbook file, read and checked.
#[derive(Debug)]
pub struct Loaded {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its text.
    pub source: String,
    /// Parse and validation result.
    pub checked: Checked,
}

impl Loaded {
    /// Read and check one file.
    pub fn read(path: &Path) -> anyhow::Result<Loaded> {
        let source = read_text(path)?;
        let stem = path.file_stem().and_then(|s| s.to_str());
        tracing::debug!(path = %path.display(), "checking runbook");
        let checked = runbook_core::check(&source, stem);
        Ok(Loaded {
            path: path.to_path_buf(),
            source,
            checked,
        })
    }

    /// The name to show: the runbook's own name, else the file stem.
    pub fn name(&self) -> String {
        self.checked
            .runbook
            .as_ref()
            .map(|r| r.name.value.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| {
                self.path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
    }
}

/// A file's text, or an error that says where its first byte that is not UTF-8 is.
pub fn read_text(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let text = String::from_utf8_lossy(good);
        let line = text.matches('\n').count() + 1;
        let column = text.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        anyhow::anyhow!(
            "{}:{line}:{column}: the file is not UTF-8 text (byte 0x{:02x}); save it as UTF-8",
            path.display(),
            e.as_bytes()[good.len()]
        )
    })
}

/// The directories searched for runbooks, in order.
pub fn search_path(dirs: &[PathBuf]) -> Vec<PathBuf> {
    if !dirs.is_empty() {
        return dirs.to_vec();
    }
    if let Some(env) = std::env::var_os("RUNBOOK_PATH").filter(|v| !v.is_empty()) {
        return std::env::split_paths(&env).collect();
    }
    vec![PathBuf::from("runbooks")]
}

/// Whether `path` names a scenario file (`NAME.test.yaml`): runbook tests, not a runbook.
pub fn is_scenario_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".test.yaml") || n.ends_with(".test.yml"))
}

fn is_yaml(path: &Path) -> bool {
    path.is_file()
        && matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        )
}

/// Which files of a directory to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Runbooks (`*.yaml`, `*.yml`, scenario files left out).
    Runbooks,
    /// Scenario files (`*.test.yaml`).
    Scenarios,
}

/// Every file of `kind` in a directory (not recursive), sorted by name.
pub fn files_of(dir: &Path, kind: Kind) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read directory {}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_yaml(p) && (is_scenario_file(p) == (kind == Kind::Scenarios)))
        .collect();
    files.sort();
    Ok(files)
}

/// Every runbook file in a directory (not recursive), sorted by name.
pub fn files_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    files_of(dir, Kind::Runbooks)
}

/// Every file of `kind` on the search path; missing directories are skipped with a note.
pub fn all_of(dirs: &[PathBuf], kind: Kind) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for dir in search_path(dirs) {
        if dir.is_dir() {
            files.extend(files_of(&dir, kind)?);
        } else {
            tracing::info!(dir = %dir.display(), "search path entry is not a directory");
        }
    }
    Ok(files)
}

/// Every runbook file on the search path.
pub fn all_files(dirs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    all_of(dirs, Kind::Runbooks)
}

/// Resolve NAME (a runbook name on the search path, or a file path) to a file.
pub fn resolve(name: &str, dirs: &[PathBuf]) -> anyhow::Result<PathBuf> {
    let as_path = Path::new(name);
    if name.contains(std::path::MAIN_SEPARATOR) || name.ends_with(".yaml") || name.ends_with(".yml")
    {
        if as_path.is_file() {
            return Ok(as_path.to_path_buf());
        }
        bail!("no runbook file at {name}");
    }
    let path = search_path(dirs);
    for dir in &path {
        for ext in ["yaml", "yml"] {
            let candidate = dir.join(format!("{name}.{ext}"));
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    // A file whose `name:` is NAME (`list` shows runbooks by that name, whatever the
    // file is called; the validator warns about the mismatch, RB026).
    let named: Vec<PathBuf> = all_files(dirs)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| {
            Loaded::read(p).is_ok_and(|l| {
                l.checked
                    .runbook
                    .as_ref()
                    .is_some_and(|r| r.name.value == name)
            })
        })
        .collect();
    match named.as_slice() {
        [] => {}
        [one] => return Ok(one.clone()),
        many => {
            let files: Vec<String> = many.iter().map(|p| p.display().to_string()).collect();
            bail!(
                "{} runbooks are named `{name}`: {}\nhelp: give the file's path, and rename all but one",
                many.len(),
                files.join(", ")
            )
        }
    }
    let known: Vec<String> = all_files(dirs)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    let shown: Vec<String> = path.iter().map(|p| p.display().to_string()).collect();
    let hint = runbook_core::diag::did_you_mean(name, known.iter().map(String::as_str))
        .map(|h| format!("\nhelp: {h}"))
        .unwrap_or_else(|| "\nhelp: `runbook list` shows the runbooks on the search path; set --dir or RUNBOOK_PATH to look elsewhere".into());
    bail!("no runbook named `{name}` in {}{hint}", shown.join(", "))
}
