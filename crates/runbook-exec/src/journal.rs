//! The journal: one JSON Lines file per run, every event appended and fsynced before the
//! engine goes on, each record chained to the one before by sha256.
//!
//! A record is the event's fields plus an envelope:
//! `{"v":2,"seq":N,"ts":"…","prev":"<hash of record N-1>", …event…, "hash":"<hash>"}`.
//! `hash` is the sha256 (hex) of the record's line up to, and without, `,"hash":"…"}`
//! followed by `}`: the exact bytes written, so verification needs no canonical JSON.
//! The first record's `prev` is 64 zeros. Documented in `docs/journal.md`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::event::{Event, Sink};

/// The journal format this version writes. It reads every format up to this one:
/// format 1 journals verify and show as they always did; resume needs format 2's typed
/// records (a branch's `chosen` route, a skip's reason, a finished step's values).
pub const FORMAT: u32 = 2;

/// `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One journal line, parsed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Journal format version.
    pub v: u32,
    /// 0-based position in the journal.
    pub seq: u64,
    /// When the event happened (RFC 3339, UTC).
    pub ts: String,
    /// `hash` of the previous record.
    pub prev: String,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

#[derive(Serialize)]
struct Unhashed<'a> {
    v: u32,
    seq: u64,
    ts: String,
    prev: &'a str,
    #[serde(flatten)]
    event: &'a Event,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Split a line into its hashed body (with the closing brace restored) and its `hash`.
fn split_hash(line: &str) -> Option<(String, &str)> {
    let cut = line.rfind(",\"hash\":\"")?;
    let hash = line[cut + 9..].strip_suffix("\"}")?;
    if hash.len() != 64 {
        return None;
    }
    Some((format!("{}}}", &line[..cut]), hash))
}

/// Why a journal could not be found, created, read or appended to.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// No state directory was given and none can be derived.
    #[error("no state directory: none was given, and neither RUNBOOK_STATE_DIR nor HOME is set")]
    NoStateDir,
    /// A file or directory could not be used.
    #[error("cannot {what} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `last` with no run recorded.
    #[error("no runs recorded in {}", .dir.display())]
    NoRuns {
        /// The runs directory.
        dir: PathBuf,
    },
    /// No run has this id or prefix.
    #[error("unknown run `{run}`: {} recorded in {}", runs(*.count), .dir.display())]
    UnknownRun {
        /// What was asked for.
        run: String,
        /// How many runs there are.
        count: usize,
        /// The runs directory.
        dir: PathBuf,
    },
    /// A prefix that names several runs.
    #[error("`{run}` matches {} runs: {}", .matches.len(), .matches.join(", "))]
    Ambiguous {
        /// What was asked for.
        run: String,
        /// The run ids it matches.
        matches: Vec<String>,
    },
    /// The journal does not verify, so nothing is appended to it.
    #[error("{}: {problem}; refusing to append to a damaged journal", .path.display())]
    Damaged {
        /// The journal.
        path: PathBuf,
        /// Its first problem.
        problem: String,
    },
}

fn runs(n: usize) -> String {
    if n == 1 {
        "1 run".into()
    } else {
        format!("{n} runs")
    }
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> JournalError {
    let path = path.to_path_buf();
    move |source| JournalError::Io { what, path, source }
}

/// The state directory: `runs/` (one journal per run) and `locks/`. The one place that
/// knows the layout; exec, resume and audit find journals through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The directory given, else `RUNBOOK_STATE_DIR`, else `$XDG_STATE_HOME/runbook`,
    /// else `~/.local/state/runbook`.
    pub fn locate(given: Option<&Path>) -> Result<Store, JournalError> {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let dir = given
            .map(Path::to_path_buf)
            .or_else(|| env("RUNBOOK_STATE_DIR"))
            .or_else(|| env("XDG_STATE_HOME").map(|p| p.join("runbook")))
            .or_else(|| env("HOME").map(|p| p.join(".local/state/runbook")))
            .ok_or(JournalError::NoStateDir)?;
        Ok(Store { dir })
    }

    /// A store at `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Store {
        Store { dir: dir.into() }
    }

    /// The state directory (locks live in `locks/` under it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the journals are.
    pub fn runs_dir(&self) -> PathBuf {
        self.dir.join("runs")
    }

    /// Path of a run's journal.
    pub fn path_of(&self, run_id: &str) -> PathBuf {
        self.runs_dir().join(format!("{run_id}.jsonl"))
    }

    /// Create the journal of a new run.
    pub fn create(&self, run_id: &str) -> Result<Journal, JournalError> {
        Journal::create(self, run_id)
    }

    /// Every journal, oldest first by the time its run started (ids sort only to the
    /// minute), then by id.
    pub fn journals(&self) -> Result<Vec<PathBuf>, JournalError> {
        let runs = self.runs_dir();
        let entries = match std::fs::read_dir(&runs) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("read", &runs)(e)),
        };
        let mut keyed: Vec<(String, PathBuf)> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .map(|p| (started_at(&p), p))
            .collect();
        keyed.sort();
        Ok(keyed.into_iter().map(|(_, p)| p).collect())
    }

    /// A run's journal by id, unique prefix or `last`.
    pub fn resolve(&self, run: &str) -> Result<PathBuf, JournalError> {
        let files = self.journals()?;
        if run == "last" {
            return files.last().cloned().ok_or(JournalError::NoRuns {
                dir: self.runs_dir(),
            });
        }
        if let Some(p) = files.iter().find(|p| run_id_of(p) == run) {
            return Ok(p.clone());
        }
        let matches: Vec<&PathBuf> = files
            .iter()
            .filter(|p| run_id_of(p).starts_with(run))
            .collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(JournalError::UnknownRun {
                run: run.to_string(),
                count: files.len(),
                dir: self.runs_dir(),
            }),
            many => Err(JournalError::Ambiguous {
                run: run.to_string(),
                matches: many.iter().map(|p| run_id_of(p)).collect(),
            }),
        }
    }
}

/// The run id a journal file is named after.
pub fn run_id_of(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The `ts` of a journal's first record (empty when unreadable).
fn started_at(path: &Path) -> String {
    use std::io::BufRead;
    let Ok(file) = File::open(path) else {
        return String::new();
    };
    let mut line = String::new();
    let _ = std::io::BufReader::new(file).read_line(&mut line);
    serde_json::from_str::<serde_json::Value>(&line)
        .ok()
        .and_then(|v| v.get("ts").and_then(|t| t.as_str()).map(str::to_string))
        .unwrap_or_default()
}

struct Writer {
    file: File,
    seq: u64,
    prev: String,
    /// Records written since the last fdatasync.
    unsynced: usize,
    /// Steps whose current attempt is an act (their end is synced too).
    acts: std::collections::HashSet<String>,
}

/// Unsynced records after which the journal syncs anyway: bounds what a power loss
/// could take from a long run of checks.
const GROUP: usize = 64;

impl Writer {
    /// Whether `event` must be durable before the engine goes on: the promises are that
    /// no act's side effect happens before the journal durably says it is about to
    /// happen, no act's end is reported before it is durable, an operator's answer is
    /// durable before it is acted on, and a run's start and end are durable. Every
    /// other record is written at once (a killed process loses nothing) and synced in
    /// groups.
    fn must_sync(&mut self, event: &Event) -> bool {
        let promised = match event {
            Event::StepStarted { step, kind, .. } if kind == "act" => {
                self.acts.insert(step.clone());
                true
            }
            Event::StepFinished { step, .. } => self.acts.remove(step),
            Event::RunStarted { .. }
            | Event::Resumed { .. }
            | Event::Answered { .. }
            | Event::Signal { .. }
            | Event::RunFinished { .. } => true,
            _ => false,
        };
        promised || self.unsynced + 1 >= GROUP
    }
}

/// An open journal; as a [`Sink`] it appends every event at once and syncs it to disk
/// by the policy of [`Writer::must_sync`].
pub struct Journal {
    path: PathBuf,
    writer: Mutex<Writer>,
    error: Mutex<Option<String>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

impl Journal {
    /// Create the journal of a new run (the file must not exist).
    fn create(store: &Store, run_id: &str) -> Result<Journal, JournalError> {
        let runs = store.runs_dir();
        std::fs::create_dir_all(&runs).map_err(io_error("create the state directory", &runs))?;
        let path = store.path_of(run_id);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_error("create the journal", &path))?;
        // Make the new directory entry durable too.
        if let Ok(dir) = File::open(&runs) {
            let _ = dir.sync_all();
        }
        Ok(Journal {
            path,
            writer: Mutex::new(Writer {
                file,
                seq: 0,
                prev: GENESIS.into(),
                unsynced: 0,
                acts: std::collections::HashSet::new(),
            }),
            error: Mutex::new(None),
        })
    }

    /// Reopen a journal to append to it (resume). A torn last line is moved to
    /// `<run>.torn` and cut off, so the chain stays whole; the returned count says how
    /// many bytes that was.
    pub fn reopen(path: &Path) -> Result<(Journal, Vec<Record>, usize), JournalError> {
        let read = read(path)?;
        if let Some(problem) = &read.problem {
            if !problem.torn {
                return Err(JournalError::Damaged {
                    path: path.to_path_buf(),
                    problem: problem.message.clone(),
                });
            }
        }
        let mut torn = 0;
        if let Some(tail) = &read.torn_tail {
            torn = tail.len();
            let aside = path.with_extension("torn");
            std::fs::write(&aside, tail).map_err(io_error("keep the torn line in", &aside))?;
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io_error("open", path))?;
            f.set_len(read.valid_len as u64)
                .and_then(|()| f.sync_all())
                .map_err(io_error("cut the torn line off", path))?;
        }
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io_error("append to", path))?;
        let journal = Journal {
            path: path.to_path_buf(),
            writer: Mutex::new(Writer {
                file,
                seq: read.records.len() as u64,
                prev: read.last_hash.clone(),
                unsynced: 0,
                acts: std::collections::HashSet::new(),
            }),
            error: Mutex::new(None),
        };
        Ok((journal, read.records, torn))
    }

    /// Where the journal is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn append(&self, at: SystemTime, event: &Event) -> Result<(), String> {
        let mut w = self
            .writer
            .lock()
            .map_err(|_| "the journal writer was poisoned".to_string())?;
        let body = serde_json::to_string(&Unhashed {
            v: FORMAT,
            seq: w.seq,
            ts: humantime::format_rfc3339_millis(at).to_string(),
            prev: &w.prev,
            event,
        })
        .map_err(|e| format!("cannot encode an event: {e}"))?;
        let hash = sha256_hex(body.as_bytes());
        let mut line = body;
        line.pop();
        line.push_str(&format!(",\"hash\":\"{hash}\"}}\n"));
        let sync = w.must_sync(event);
        w.file
            .write_all(line.as_bytes())
            .and_then(|()| if sync { w.file.sync_data() } else { Ok(()) })
            .map_err(|e| format!("cannot write the journal {}: {e}", self.path.display()))?;
        w.unsynced = if sync { 0 } else { w.unsynced + 1 };
        w.seq += 1;
        w.prev = hash;
        Ok(())
    }
}

impl Sink for Journal {
    fn emit(&self, at: SystemTime, event: &Event) {
        let mut err = match self.error.lock() {
            Ok(e) => e,
            Err(_) => return,
        };
        if err.is_some() {
            return;
        }
        if let Err(e) = self.append(at, event) {
            *err = Some(e);
        }
    }

    fn error(&self) -> Option<String> {
        self.error.lock().ok().and_then(|e| e.clone())
    }
}

/// The first thing wrong with a journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The first record that is not what it should be.
    pub seq: u64,
    /// 1-based line in the file.
    pub line: usize,
    /// What is wrong.
    pub message: String,
    /// The problem is only an incomplete last line (a write cut short).
    pub torn: bool,
}

/// A journal as read from disk.
#[derive(Debug, Clone, Default)]
pub struct Read {
    /// Records that verified, in order.
    pub records: Vec<Record>,
    /// `hash` of the last good record.
    pub last_hash: String,
    /// The first problem, if any.
    pub problem: Option<Problem>,
    /// Bytes of an incomplete last line.
    pub torn_tail: Option<Vec<u8>>,
    /// Length of the file up to the end of the last good line.
    pub valid_len: usize,
}

/// Read and verify a journal: every line parses, `seq` counts up from 0, every `hash`
/// matches its line and every `prev` the record before.
pub fn read(path: &Path) -> Result<Read, JournalError> {
    let bytes = std::fs::read(path).map_err(io_error("read", path))?;
    let mut out = Read {
        last_hash: GENESIS.into(),
        ..Read::default()
    };
    let mut offset = 0usize;
    for (i, raw) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
        let seq = out.records.len() as u64;
        let line_no = i + 1;
        let complete = raw.ends_with(b"\n");
        let bad = |message: String, torn: bool| Problem {
            seq,
            line: line_no,
            message,
            torn,
        };
        if !complete {
            out.problem = Some(bad(
                format!(
                    "record {seq} is incomplete: the last line was cut short (a crash or a truncated file)"
                ),
                true,
            ));
            out.torn_tail = Some(raw.to_vec());
            break;
        }
        let text = match std::str::from_utf8(&raw[..raw.len() - 1]) {
            Ok(t) => t,
            Err(_) => {
                out.problem = Some(bad(format!("record {seq} is not UTF-8 text"), false));
                break;
            }
        };
        let Some((body, hash)) = split_hash(text) else {
            out.problem = Some(bad(
                format!("line {line_no} is not a journal record (no hash): edited or foreign"),
                false,
            ));
            break;
        };
        let record: Record = match serde_json::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                let v = serde_json::from_str::<serde_json::Value>(text)
                    .ok()
                    .and_then(|v| v.get("v").and_then(serde_json::Value::as_u64));
                let message = match v {
                    Some(v) if v > u64::from(FORMAT) => format!(
                        "journal format {v} is newer than this runbook reads ({FORMAT}): use a newer runbook"
                    ),
                    _ => format!("record {seq} does not parse as a journal record: {e}"),
                };
                out.problem = Some(bad(message, false));
                break;
            }
        };
        if record.v > FORMAT {
            out.problem = Some(bad(
                format!(
                    "journal format {} is newer than this runbook reads ({FORMAT}): use a newer runbook",
                    record.v
                ),
                false,
            ));
            break;
        }
        if record.seq != seq {
            let why = if record.seq > seq {
                format!(
                    "record {seq} is missing (found {} in its place): a record was deleted or moved",
                    record.seq
                )
            } else {
                format!(
                    "record {} appears again at position {seq}: records were reordered or duplicated",
                    record.seq
                )
            };
            out.problem = Some(bad(why, false));
            break;
        }
        if sha256_hex(body.as_bytes()) != hash {
            out.problem = Some(bad(
                format!("record {seq} was changed after it was written (its hash does not match)"),
                false,
            ));
            break;
        }
        if record.prev != out.last_hash {
            let message = if seq == 0 {
                "record 0 does not start a journal: earlier records were removed".to_string()
            } else {
                format!(
                    "record {} was replaced: record {seq} was written after a different record",
                    seq - 1
                )
            };
            out.problem = Some(Problem {
                seq: seq.saturating_sub(1),
                line: line_no.saturating_sub(1).max(1),
                message,
                torn: false,
            });
            break;
        }
        offset += raw.len();
        out.valid_len = offset;
        out.last_hash = hash.to_string();
        out.records.push(record);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    /// The sync points: acts' start and end, answers, signals, run start and end; the
    /// rest in groups.
    #[test]
    fn syncs_where_the_promises_need_it_and_in_groups_elsewhere() {
        use crate::event::Event;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path());
        let journal = store.create("r").unwrap();
        let mut w = journal.writer.lock().unwrap();
        let started = |step: &str, kind: &str| Event::StepStarted {
            step: step.into(),
            kind: kind.into(),
            title: String::new(),
            attempt: 1,
            action: None,
            confirm: None,
        };
        let finished = |step: &str| {
            serde_json::from_value::<Event>(serde_json::json!({
                "event": "step_finished", "step": step, "status": "succeeded",
                "duration_ms": 1
            }))
            .unwrap()
        };
        assert!(!w.must_sync(&started("probe", "check")));
        assert!(!w.must_sync(&finished("probe")));
        assert!(w.must_sync(&started("fix", "act")));
        let answered = serde_json::from_value::<Event>(serde_json::json!({
            "event": "answered", "step": "fix", "answer": "approve",
            "by": {"operator": "alice@host"}
        }))
        .unwrap();
        assert!(w.must_sync(&answered));
        assert!(w.must_sync(&finished("fix")));
        // A retried act syncs again; its end once.
        assert!(w.must_sync(&started("fix", "act")));
        assert!(w.must_sync(&finished("fix")));
        assert!(!w.must_sync(&finished("fix")));
        // Other records: every GROUP-th.
        w.unsynced = GROUP - 2;
        assert!(!w.must_sync(&started("probe", "check")));
        w.unsynced = GROUP - 1;
        assert!(w.must_sync(&started("probe", "check")));
    }

    use super::*;
    use crate::event::Stream;

    fn event(n: usize) -> Event {
        Event::Output {
            step: "s".into(),
            stream: Stream::Stdout,
            line: format!("line {n}"),
        }
    }

    fn journal(dir: &Path, n: usize) -> PathBuf {
        let j = Store::at(dir).create("r").unwrap();
        for i in 0..n {
            j.emit(SystemTime::now(), &event(i));
        }
        assert!(j.error().is_none());
        j.path().to_path_buf()
    }

    fn lines(p: &Path) -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn write(p: &Path, lines: &[String]) {
        std::fs::write(p, lines.join("\n") + "\n").unwrap();
    }

    #[test]
    fn a_whole_journal_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let p = journal(dir.path(), 5);
        let r = read(&p).unwrap();
        assert_eq!(r.records.len(), 5);
        assert!(r.problem.is_none());
        assert_eq!(r.records[3].event, event(3));
    }

    #[test]
    fn edits_deletions_reorders_and_truncation_name_the_first_bad_record() {
        let dir = tempfile::tempdir().unwrap();
        let p = journal(dir.path(), 6);
        let good = lines(&p);

        let mut edited = good.clone();
        edited[2] = edited[2].replace("line 2", "line X");
        write(&p, &edited);
        let pr = read(&p).unwrap().problem.unwrap();
        assert_eq!(pr.seq, 2, "{pr:?}");
        assert!(pr.message.contains("changed"));

        let mut deleted = good.clone();
        deleted.remove(3);
        write(&p, &deleted);
        let pr = read(&p).unwrap().problem.unwrap();
        assert_eq!(pr.seq, 3, "{pr:?}");
        assert!(pr.message.contains("missing"));

        let mut reordered = good.clone();
        reordered.swap(1, 2);
        write(&p, &reordered);
        let pr = read(&p).unwrap().problem.unwrap();
        assert_eq!(pr.seq, 1, "{pr:?}");

        let mut text = good.join("\n") + "\n";
        text.truncate(text.len() - 20);
        std::fs::write(&p, &text).unwrap();
        let r = read(&p).unwrap();
        let pr = r.problem.unwrap();
        assert_eq!((pr.seq, pr.torn), (5, true), "{pr:?}");
        assert_eq!(r.records.len(), 5);

        // A rewritten record whose own hash was recomputed is caught by the next one.
        let mut forged = good;
        let (body, _) = split_hash(&forged[2]).unwrap();
        let body = body.replace("line 2", "line Y");
        let hash = sha256_hex(body.as_bytes());
        forged[2] = format!("{},\"hash\":\"{hash}\"}}", &body[..body.len() - 1]);
        write(&p, &forged);
        let pr = read(&p).unwrap().problem.unwrap();
        assert_eq!(pr.seq, 2, "{pr:?}");
    }

    #[test]
    fn reopen_sets_a_torn_line_aside_and_continues_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let p = journal(dir.path(), 3);
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        let tail = b"{\"v\":1,\"seq\":3,\"ts";
        f.write_all(tail).unwrap();
        drop(f);
        let (j, records, torn) = Journal::reopen(&p).unwrap();
        assert_eq!((records.len(), torn), (3, tail.len()));
        j.emit(SystemTime::now(), &event(9));
        let r = read(&p).unwrap();
        assert!(r.problem.is_none(), "{:?}", r.problem);
        assert_eq!(r.records.len(), 4);
        assert!(p.with_extension("torn").exists());
    }
}
