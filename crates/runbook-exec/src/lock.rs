//! Run locks: one live run per lock key.
//!
//! The lock is `flock(2)` on `locks/<key>.lock` in the state directory, so it ends with
//! the process however the process ends. The file records who holds it; a file with a
//! holder but no lock on it was left by a process that died, and is taken over with a
//! warning.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// Who holds a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Run id.
    pub run_id: String,
    /// Operator.
    pub operator: String,
    /// Process id.
    pub pid: u32,
    /// Since when (RFC 3339).
    pub since: String,
}

/// A held lock; released when dropped (or when the process ends).
pub struct RunLock {
    file: Flock<File>,
    path: PathBuf,
}

impl std::fmt::Debug for RunLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunLock").field("path", &self.path).finish()
    }
}

/// What acquiring found.
#[derive(Debug)]
pub enum Acquired {
    /// The lock is ours.
    Fresh(RunLock),
    /// The lock is ours; the previous holder died without releasing it.
    TakenOver(RunLock, Holder),
}

/// A file name for a key: readable, and unique through a short hash.
fn file_name(key: &str) -> String {
    use sha2::Digest;
    let readable: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let hash = hex::encode(sha2::Sha256::digest(key.as_bytes()));
    format!("{readable}-{}.lock", &hash[..8])
}

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another live run holds it.
    #[error("{}", held_text(.key, .holder.as_deref(), .path))]
    Held {
        /// The lock key.
        key: String,
        /// Who holds it, when the lock file says.
        holder: Option<Box<Holder>>,
        /// The lock file.
        path: PathBuf,
    },
    /// The lock file could not be created, locked or written.
    #[error("cannot {what} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn held_text(key: &str, holder: Option<&Holder>, path: &Path) -> String {
    match holder {
        Some(h) => format!(
            "`{key}` is locked by run {} of {} (pid {}) since {}; wait for it to finish, or stop it",
            h.run_id, h.operator, h.pid, h.since
        ),
        None => format!("`{key}` is locked by another run ({})", path.display()),
    }
}

/// Take the lock for `key`, or say who holds it.
pub fn acquire(state_dir: &Path, key: &str, me: &Holder) -> Result<Acquired, LockError> {
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| LockError::Io { what, path, source }
    };
    let dir = state_dir.join("locks");
    std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
    let path = dir.join(file_name(key));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io("open the lock", &path))?;
    let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(f) => f,
        Err((mut f, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut text = String::new();
            let _ = f.read_to_string(&mut text);
            return Err(LockError::Held {
                key: key.to_string(),
                holder: serde_json::from_str::<Holder>(&text).ok().map(Box::new),
                path,
            });
        }
        Err((_, e)) => return Err(io("lock", &path)(std::io::Error::from(e))),
    };
    let mut previous = String::new();
    let _ = file.read_to_string(&mut previous);
    let stale = serde_json::from_str::<Holder>(&previous).ok();
    let text = serde_json::to_string(me).map_err(|e| io("write the lock", &path)(e.into()))?;
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(text.as_bytes()))
        .and_then(|()| file.sync_data())
        .map_err(io("write the lock", &path))?;
    let lock = RunLock { file, path };
    Ok(match stale {
        Some(h) => Acquired::TakenOver(lock, h),
        None => Acquired::Fresh(lock),
    })
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Empty, not removed: removing would let a waiting process lock a deleted file.
        let _ = self.file.set_len(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me(run: &str) -> Holder {
        Holder {
            run_id: run.into(),
            operator: "alice@host".into(),
            pid: std::process::id(),
            since: "2026-11-22T09:31:00Z".into(),
        }
    }

    #[test]
    fn second_holder_is_refused_then_admitted_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path(), "db-prod", &me("r1")).unwrap();
        assert!(matches!(first, Acquired::Fresh(_)));
        let err = acquire(dir.path(), "db-prod", &me("r2")).unwrap_err();
        match &err {
            LockError::Held { holder, .. } => assert_eq!(holder.as_ref().unwrap().run_id, "r1"),
            other => panic!("{other:?}"),
        }
        assert!(
            err.to_string().contains("locked by run r1 of alice@host"),
            "{err}"
        );
        // Another key is independent.
        assert!(acquire(dir.path(), "db-other", &me("r3")).is_ok());
        drop(first);
        assert!(matches!(
            acquire(dir.path(), "db-prod", &me("r4")).unwrap(),
            Acquired::Fresh(_)
        ));
    }

    #[test]
    fn a_lock_left_by_a_dead_process_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("locks")).unwrap();
        let path = dir.path().join("locks").join(file_name("k"));
        std::fs::write(&path, serde_json::to_string(&me("dead")).unwrap()).unwrap();
        match acquire(dir.path(), "k", &me("r2")).unwrap() {
            Acquired::TakenOver(_, h) => assert_eq!(h.run_id, "dead"),
            other => panic!("{other:?}"),
        }
    }
}
