//! Preparing a run: its id and origin (the file's sha256 and git state), and the resume
//! policy: what may go on when a run is resumed, decided in the library with typed
//! answers, so the CLI only parses flags, asks on a terminal, words the errors and
//! chooses the exit code.
//!
//! In order: a dry run is not resumed; a run that succeeded has nothing to resume; a
//! runbook file that changed since the run started needs `force`; every act whose outcome
//! is unknown (in flight at a crash, or killed by the run) needs a decision: done, run
//! again, or abort. Checks and verifies in that state simply run again.

use std::time::{Duration, SystemTime};

use runbook_core::model::{Runbook, StepKind};
use runbook_core::plan::Plan;

use crate::engine::{Restored, Route, StepValues};
use crate::event::{Killed, Mode, Origin, RunStatus, Status};
use crate::journal::Record;
use crate::resume::{self, Inflight, Replay, ReplayError};

/// What to do with an act whose outcome is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflightDecision {
    /// It was applied: count it as done.
    Done,
    /// Run it again.
    Rerun,
    /// Do not resume.
    Abort,
}

/// Why a run cannot be resumed as asked.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// The journal cannot be replayed (it predates typed records, or is not a run's).
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// Dry runs change nothing and are not resumed.
    #[error("{run_id} was a dry run; dry runs are not resumed")]
    DryRun {
        /// The run.
        run_id: String,
    },
    /// The runbook file is not the one the run started with.
    #[error("{0}")]
    Changed(Box<FileChanged>),
    /// An act may have been partly applied and nobody said what to do with it.
    #[error("act `{step}` {} and may have been partly applied", unknown_outcome(*.killed))]
    InflightAct {
        /// The act.
        step: String,
        /// Why its outcome is unknown (`None`: running when the run stopped).
        killed: Option<Killed>,
    },
    /// The operator chose not to resume.
    #[error("the operator chose not to resume")]
    Aborted,
}

/// How the runbook file differs from the one the run started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChanged {
    /// The run.
    pub run_id: String,
    /// The runbook file.
    pub path: String,
    /// Its sha256 when the run started (12 hex digits).
    pub then: String,
    /// Its sha256 now (12 hex digits).
    pub now: String,
    /// Step ids added since.
    pub added: Vec<String>,
    /// Step ids removed since.
    pub removed: Vec<String>,
}

impl std::fmt::Display for FileChanged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} changed since the run started (sha256 {} then, {} now; {})",
            self.path,
            self.then,
            self.now,
            diff_text(&self.added, &self.removed)
        )
    }
}

/// Why an act's outcome is unknown, as the end of "act `x` ...".
pub fn unknown_outcome(killed: Option<Killed>) -> String {
    match killed {
        None => "was running when the run stopped".into(),
        Some(k) => format!("was {} before it finished", k.as_str()),
    }
}

/// `steps added: a, b; steps removed: none`.
pub fn diff_text(added: &[String], removed: &[String]) -> String {
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    format!(
        "steps added: {}; steps removed: {}",
        list(added),
        list(removed)
    )
}

/// A resume that may go on.
#[derive(Debug)]
pub struct ResumePlan {
    /// What the journal says.
    pub replay: Replay,
    /// The steps to keep as they ended, acts counted as done included.
    pub restored: Vec<Restored>,
    /// What happens to each step whose outcome was unknown, for the `resumed` record.
    pub notes: Vec<String>,
    /// The file changed and `force` was given: step ids added and removed.
    pub changed: Option<(Vec<String>, Vec<String>)>,
}

/// What resuming a run comes to.
#[derive(Debug)]
pub enum Resume {
    /// The run already succeeded: nothing to do.
    AlreadySucceeded {
        /// The run.
        run_id: String,
    },
    /// Go on from here.
    Go(Box<ResumePlan>),
}

/// Decide how the run recorded in `records` goes on with `runbook` as it is now (its
/// file's sha256 is `sha256_now`). `decide` is asked about every act whose outcome is
/// unknown; `None` means nobody can say (no flag, no terminal).
pub fn plan(
    runbook: &Runbook,
    plan: &Plan,
    records: &[Record],
    sha256_now: &str,
    force: bool,
    decide: &mut dyn FnMut(&Inflight, &str) -> Option<InflightDecision>,
) -> Result<Resume, ResumeError> {
    let replay = resume::replay(runbook, plan, records)?;
    if replay.mode == Mode::DryRun {
        return Err(ResumeError::DryRun {
            run_id: replay.run_id,
        });
    }
    if replay.finished == Some(RunStatus::Succeeded) {
        return Ok(Resume::AlreadySucceeded {
            run_id: replay.run_id,
        });
    }
    let mut changed = None;
    if sha256_now != replay.origin.sha256 {
        let (added, removed) = resume::step_diff(&resume::recorded_steps(records), runbook);
        if !force {
            let short = |s: &str| s.get(..12).unwrap_or_default().to_string();
            return Err(ResumeError::Changed(Box::new(FileChanged {
                run_id: replay.run_id.clone(),
                path: replay.origin.path.clone(),
                then: short(&replay.origin.sha256),
                now: short(sha256_now),
                added,
                removed,
            })));
        }
        changed = Some((added, removed));
    }
    let mut restored = replay.restored.clone();
    let mut notes = Vec::new();
    for inflight in &replay.inflight {
        let id = &inflight.step;
        let Some(i) = plan.index(id) else { continue };
        let step = &runbook.steps[i];
        if step.kind.value != StepKind::Act {
            notes.push(format!("{id}: run again (read-only)"));
            continue;
        }
        match decide(inflight, &step.title.value) {
            Some(InflightDecision::Done) => {
                notes.push(format!("{id}: counted as done"));
                restored.push(Restored {
                    step: i,
                    status: Status::Succeeded,
                    route: Route::Normal,
                    result: Some(StepValues::bare(0)),
                    message: Some(
                        "outcome unknown when the run stopped; counted as done on resume".into(),
                    ),
                    duration: Duration::ZERO,
                });
            }
            Some(InflightDecision::Rerun) => notes.push(format!("{id}: run again")),
            Some(InflightDecision::Abort) => return Err(ResumeError::Aborted),
            None => {
                return Err(ResumeError::InflightAct {
                    step: id.clone(),
                    killed: inflight.killed,
                });
            }
        }
    }
    Ok(Resume::Go(Box::new(ResumePlan {
        replay,
        restored,
        notes,
        changed,
    })))
}

/// Where the runbook came from: path, sha256, git commit and dirty flag.
pub fn origin(path: &std::path::Path, source: &str) -> Origin {
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
    Origin {
        path: path.display().to_string(),
        sha256,
        git_commit,
        git_dirty,
        ..Default::default()
    }
}

/// The runbook file as it was when a run started, when git still has it: the content of
/// `origin.path` at the recorded commit, if the file was clean then and its sha256 is the
/// one recorded. `None` when that cannot be known.
pub fn content_at_start(origin: &Origin) -> Option<String> {
    use sha2::Digest;
    let commit = origin.git_commit.as_deref()?;
    if origin.git_dirty != Some(false) {
        return None;
    }
    let path = std::path::Path::new(&origin.path);
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let file = path.file_name()?.to_str()?;
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["show", &format!("{commit}:./{file}")])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    (hex::encode(sha2::Sha256::digest(&out.stdout)) == origin.sha256)
        .then(|| String::from_utf8(out.stdout).ok())
        .flatten()
}

/// `20261122-0931-dbconn-7f3a`: sorts by start time (UTC), short enough to type.
pub fn new_run_id(name: &str) -> String {
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

/// Programs the runbook's shell steps call that are not on `PATH` (or, named with a `/`,
/// not executable there): `(program, step ids)`. Steps that call them will fail with
/// "missing tool"; `exec` lists them before anything runs.
pub fn missing_programs(rb: &Runbook) -> Vec<(String, Vec<String>)> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<std::path::PathBuf> = std::env::split_paths(&path).collect();
    let executable = |p: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    runbook_core::tools::runbook_programs(rb)
        .into_iter()
        .filter(|(program, _)| {
            if program.contains('/') {
                !executable(std::path::Path::new(program))
            } else {
                !dirs.iter().any(|d| executable(&d.join(program)))
            }
        })
        .collect()
}
