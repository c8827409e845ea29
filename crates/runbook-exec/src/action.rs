//! Action runners: a rendered action in, an [`ActionResult`] out.
//!
//! Shell commands run in their own process group; on timeout or abort the whole group
//! gets SIGTERM, then SIGKILL after a grace period, so nothing a step started outlives
//! it. Output is streamed line by line and kept up to a bound.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::event::{Killed, Stream};

/// Whether a line of output is all there is of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// The whole line.
    Whole,
    /// The line was cut at the output bound (on a character boundary); the rest of it,
    /// and everything after, is neither shown nor kept. A secret may be cut in two.
    Cut,
}

/// Called with each line of output.
pub type Emit<'a> = dyn Fn(Stream, &str, Piece) + Sync + 'a;

/// What an action produced.
#[derive(Debug, Clone, Default)]
pub struct ActionResult {
    /// Whether the action itself succeeded (exit 0, expected HTTP status, wait elapsed).
    pub ok: bool,
    /// Exit code of a command (128+N when killed by signal N).
    pub exit_code: Option<i32>,
    /// HTTP status (0 when no response arrived).
    pub status: Option<u16>,
    /// Standard output (or response body), up to the bound.
    pub stdout: String,
    /// Standard error, up to the bound.
    pub stderr: String,
    /// Bytes of output dropped beyond the bound.
    pub dropped: u64,
    /// Why the action failed, for people.
    pub message: Option<String>,
    /// The deadline passed.
    pub timed_out: bool,
    /// Killed because the run was aborted or interrupted.
    pub killed: bool,
    /// More values for `steps.<id>` (SSM: `instances`, `succeeded`, `failed`, ...).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ActionResult {
    /// An action that could not be carried out, and why.
    pub fn failed(message: impl Into<String>) -> Self {
        ActionResult {
            message: Some(message.into()),
            ..ActionResult::default()
        }
    }
}

/// Limits and callbacks shared by the runners.
pub struct Io<'a> {
    /// Bytes kept per stream.
    pub output_limit: usize,
    /// Time between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// End of the step's time budget.
    pub deadline: Option<Instant>,
    /// Becomes `Some(why)` when running actions must stop.
    pub kill: watch::Receiver<Option<Killed>>,
    /// Called with each line of output.
    pub emit: &'a Emit<'a>,
}

impl Io<'_> {
    /// Report a whole line of output.
    pub fn line(&self, stream: Stream, text: &str) {
        (self.emit)(stream, text, Piece::Whole);
    }
}

impl std::fmt::Debug for Io<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Io")
            .field("output_limit", &self.output_limit)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn killed(mut kill: watch::Receiver<Option<Killed>>) {
    if kill.wait_for(Option::is_some).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Output of one stream, bounded.
#[derive(Debug, Default)]
struct Collected {
    kept: Vec<u8>,
    dropped: u64,
}

async fn read_lines(
    mut reader: impl AsyncRead + Unpin,
    stream: Stream,
    limit: usize,
    emit: &Emit<'_>,
    out: &mut Collected,
) {
    let mut buf = vec![0u8; 8192];
    // The current line, never more than fits under `limit`; what did not fit is counted.
    let mut line: Vec<u8> = Vec::new();
    let mut cut_off = 0u64;
    let mut full = false;
    let mut finish = |line: &mut Vec<u8>, cut_off: &mut u64, out: &mut Collected| {
        if full {
            out.dropped += line.len() as u64 + *cut_off + 1;
        } else {
            let piece = if *cut_off > 0 {
                // Never end inside a character: what remains of it is dropped too.
                let keep = runbook_core::text::utf8_complete_len(line);
                out.dropped += (line.len() - keep) as u64 + *cut_off;
                line.truncate(keep);
                Piece::Cut
            } else {
                Piece::Whole
            };
            out.kept.extend_from_slice(line);
            out.kept.push(b'\n');
            let text = String::from_utf8_lossy(line);
            emit(stream, text.trim_end_matches('\r'), piece);
            if piece == Piece::Cut || out.kept.len() >= limit {
                full = true;
                emit(
                    stream,
                    &format!(
                        "[runbook: output beyond {} is neither shown nor kept]",
                        human_bytes(limit as u64)
                    ),
                    Piece::Whole,
                );
            }
        }
        line.clear();
        *cut_off = 0;
    };
    let take = |bytes: &[u8], line: &mut Vec<u8>, cut_off: &mut u64, kept: usize| {
        let room = limit.saturating_sub(kept + line.len());
        let n = bytes.len().min(room);
        line.extend_from_slice(&bytes[..n]);
        *cut_off += (bytes.len() - n) as u64;
    };
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut rest = &buf[..n];
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            take(&rest[..pos], &mut line, &mut cut_off, out.kept.len());
            finish(&mut line, &mut cut_off, out);
            rest = &rest[pos + 1..];
        }
        take(rest, &mut line, &mut cut_off, out.kept.len());
    }
    if !line.is_empty() || cut_off > 0 {
        finish(&mut line, &mut cut_off, out);
    }
    if out.kept.last() == Some(&b'\n') {
        out.kept.pop();
    }
}

/// `1 MiB`, `512 KiB`, `12 B`.
pub fn human_bytes(n: u64) -> String {
    if n >= 1 << 20 && n % (1 << 20) == 0 {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / f64::from(1 << 20))
    } else if n >= 1 << 10 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

fn signal_group(pgid: Pid, signal: Signal) {
    // ESRCH (no such group) means everything is gone already.
    let _ = killpg(pgid, signal);
}

/// Run a script with `interpreter -c`, in its own process group.
pub async fn shell(
    run: &str,
    env: &BTreeMap<String, String>,
    cwd: Option<&str>,
    interpreter: &str,
    io: Io<'_>,
) -> ActionResult {
    let mut cmd = tokio::process::Command::new(interpreter);
    cmd.arg("-c")
        .arg(run)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let what = match cwd {
                Some(dir) if !std::path::Path::new(dir).is_dir() => {
                    format!("working directory `{dir}` does not exist")
                }
                _ => format!("cannot start `{interpreter}`: {e}"),
            };
            return ActionResult {
                message: Some(what),
                ..ActionResult::default()
            };
        }
    };
    let pgid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return ActionResult {
            message: Some("cannot read the command's output".into()),
            ..ActionResult::default()
        };
    };
    let mut out = Collected::default();
    let mut err = Collected::default();
    let limit = io.output_limit;
    let mut timed_out = false;
    let mut was_killed = false;
    let status = {
        let reading = async {
            tokio::join!(
                read_lines(stdout, Stream::Stdout, limit, io.emit, &mut out),
                read_lines(stderr, Stream::Stderr, limit, io.emit, &mut err),
            )
        };
        tokio::pin!(reading);
        let mut read_done = false;
        let status = loop {
            tokio::select! {
                _ = &mut reading, if !read_done => read_done = true,
                s = child.wait() => break s.ok(),
                () = until(io.deadline) => {
                    timed_out = true;
                    break terminate(&mut child, pgid, io.kill_grace).await;
                }
                () = killed(io.kill.clone()) => {
                    was_killed = true;
                    break terminate(&mut child, pgid, io.kill_grace).await;
                }
            }
        };
        if !read_done {
            // Something the command left in the background may hold the pipes open:
            // collect what is there, but do not wait for it.
            let _ = tokio::time::timeout(Duration::from_millis(500), &mut reading).await;
        }
        status
    };
    let exit_code = status.map(|s| {
        use std::os::unix::process::ExitStatusExt;
        s.code()
            .or_else(|| s.signal().map(|n| 128 + n))
            .unwrap_or(-1)
    });
    let stdout = String::from_utf8_lossy(&out.kept).into_owned();
    let stderr = String::from_utf8_lossy(&err.kept).into_owned();
    let ok = exit_code == Some(0) && !timed_out && !was_killed;
    let message = if timed_out {
        Some("timed out; the command's process group was killed".to_string())
    } else if was_killed {
        Some("stopped; the command's process group was killed".to_string())
    } else if ok {
        None
    } else {
        let code = exit_code.unwrap_or(-1);
        let missing = runbook_core::tools::not_found_in(&stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
        let head = match code {
            127 => "command not found (exit code 127)".to_string(),
            126 => "command cannot be executed (exit code 126)".to_string(),
            c => format!("exit code {c}"),
        };
        Some(match (missing.as_slice(), last) {
            ([], Some(l)) => format!("{head}: {}", l.trim()),
            ([], None) => head,
            (tools, _) => format!(
                "missing tool{} {}: not found on PATH (exit code {code}); install {} or put {} on PATH",
                if tools.len() > 1 { "s" } else { "" },
                tools
                    .iter()
                    .map(|t| format!("`{t}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if tools.len() > 1 { "them" } else { "it" },
                if tools.len() > 1 { "them" } else { "it" },
            ),
        })
    };
    ActionResult {
        ok,
        exit_code,
        status: None,
        stdout,
        stderr,
        dropped: out.dropped + err.dropped,
        message,
        timed_out,
        killed: was_killed,
        extra: serde_json::Map::new(),
    }
}

/// SIGTERM the group, SIGKILL it after the grace period, and reap the leader.
async fn terminate(
    child: &mut tokio::process::Child,
    pgid: Option<Pid>,
    grace: Duration,
) -> Option<std::process::ExitStatus> {
    let Some(pgid) = pgid else {
        let _ = child.start_kill();
        return child.wait().await.ok();
    };
    signal_group(pgid, Signal::SIGTERM);
    let status = match tokio::time::timeout(grace, child.wait()).await {
        Ok(s) => s.ok(),
        Err(_) => {
            signal_group(pgid, Signal::SIGKILL);
            child.wait().await.ok()
        }
    };
    // The leader is gone; sweep anything in its group that ignored SIGTERM.
    signal_group(pgid, Signal::SIGKILL);
    status
}

/// Send an HTTP request and read the response body (bounded).
#[allow(clippy::too_many_arguments)]
pub async fn http(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    headers: &BTreeMap<String, String>,
    body: Option<&str>,
    expected: &[u16],
    io: Io<'_>,
) -> ActionResult {
    let fail = |message: String| ActionResult {
        status: Some(0),
        message: Some(message),
        ..ActionResult::default()
    };
    let method = match reqwest::Method::from_bytes(method.as_bytes()) {
        Ok(m) => m,
        Err(_) => return fail(format!("invalid HTTP method `{method}`")),
    };
    let mut request = client.request(method, url);
    for (k, v) in headers {
        request = request.header(k, v);
    }
    if let Some(b) = body {
        request = request.body(b.to_string());
    }
    let exchange = async {
        let response = request.send().await?;
        let status = response.status();
        let mut response = response;
        let mut kept = Vec::new();
        let mut dropped = 0u64;
        while let Some(chunk) = response.chunk().await? {
            let room = io.output_limit.saturating_sub(kept.len());
            let take = chunk.len().min(room);
            kept.extend_from_slice(&chunk[..take]);
            dropped += (chunk.len() - take) as u64;
        }
        if dropped > 0 {
            // Cut at the bound: never inside a character.
            let keep = runbook_core::text::utf8_complete_len(&kept);
            dropped += (kept.len() - keep) as u64;
            kept.truncate(keep);
        }
        Ok::<_, reqwest::Error>((status, kept, dropped))
    };
    let outcome = tokio::select! {
        r = exchange => r,
        () = until(io.deadline) => {
            let mut r = fail("timed out waiting for the response".into());
            r.timed_out = true;
            return r;
        }
        () = killed(io.kill.clone()) => {
            let mut r = fail("stopped".into());
            r.killed = true;
            return r;
        }
    };
    let (status, kept, dropped) = match outcome {
        Ok(x) => x,
        Err(e) => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            return fail(format!("request to {url} failed: {text}"));
        }
    };
    let code = status.as_u16();
    io.line(
        Stream::Stderr,
        &format!(
            "HTTP {status} ({})",
            human_bytes(kept.len() as u64 + dropped)
        ),
    );
    let body = String::from_utf8_lossy(&kept).into_owned();
    let mut lines = body.lines().take(50).peekable();
    while let Some(line) = lines.next() {
        let cut = dropped > 0 && lines.peek().is_none() && !body.ends_with('\n');
        (io.emit)(
            Stream::Stdout,
            line,
            if cut { Piece::Cut } else { Piece::Whole },
        );
    }
    let ok = if expected.is_empty() {
        status.is_success()
    } else {
        expected.contains(&code)
    };
    let message = (!ok).then(|| {
        let want = if expected.is_empty() {
            "2xx".to_string()
        } else {
            expected
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" or ")
        };
        format!(
            "HTTP status {code}, expected {want}; the body was {}",
            crate::capture::quote(&body)
        )
    });
    ActionResult {
        ok,
        exit_code: None,
        status: Some(code),
        stdout: body,
        stderr: String::new(),
        dropped,
        message,
        timed_out: false,
        killed: false,
        extra: serde_json::Map::new(),
    }
}

/// Wait for `duration` (or until the deadline or a kill).
pub async fn wait(duration: Duration, io: Io<'_>) -> ActionResult {
    tokio::select! {
        () = tokio::time::sleep(duration) => ActionResult { ok: true, ..ActionResult::default() },
        () = until(io.deadline) => ActionResult {
            message: Some("timed out before the wait ended".into()),
            timed_out: true,
            ..ActionResult::default()
        },
        () = killed(io.kill.clone()) => ActionResult {
            message: Some("stopped".into()),
            killed: true,
            ..ActionResult::default()
        },
    }
}
