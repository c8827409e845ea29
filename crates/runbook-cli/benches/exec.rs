//! Executor overhead and fan-out, measured on the real binary.
//!
//! 1. A 500-step sequential runbook of `true` against 500 plain `bash -c true` spawns in
//!    the same process run: the ratio is the engine's overhead per step (target ≤ 1.3×),
//!    measured with the journal on tmpfs; the ratio with the journal on disk adds the
//!    cost of fdatasync per record and is printed beside it.
//! 2. 100 independent checks of `sleep 0.1` with `--parallel 8` against `--parallel 1`
//!    (target ≥ 5× faster).
//!
//! `cargo bench -p runbook-cli --bench exec`. Prints the figures; exits non-zero when a
//! target is missed, so it can gate a release pipeline.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HEADER: &str = "apiVersion: runbook/v1\n";

fn sequential(n: usize) -> String {
    let mut s = format!("{HEADER}name: seq\ntitle: {n} sequential steps\nsteps:\n");
    for i in 0..n {
        let _ = writeln!(
            s,
            "  - {{ id: s{i}, kind: check, title: step {i}, shell: \"true\" }}"
        );
    }
    s
}

fn fan_out(n: usize) -> String {
    let mut s = format!("{HEADER}name: fan\ntitle: {n} independent checks\nsteps:\n");
    for i in 0..n {
        let _ = writeln!(
            s,
            "  - {{ id: c{i}, kind: check, title: check {i}, needs: [], shell: \"sleep 0.1\" }}"
        );
    }
    s
}

fn run(file: &Path, state: &Path, args: &[&str]) -> Duration {
    let start = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .env("RUNBOOK_STATE_DIR", state)
        .arg("exec")
        .arg(file)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{} failed", file.display());
    start.elapsed()
}

fn spawns(n: usize) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        let status = Command::new("bash")
            .args(["-c", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(status.status.success());
    }
    start.elapsed()
}

fn best<F: FnMut() -> Duration>(rounds: usize, mut f: F) -> Duration {
    (0..rounds).map(|_| f()).min().unwrap()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let seq = dir.path().join("seq.yaml");
    std::fs::write(&seq, sequential(500)).unwrap();
    let fan = dir.path().join("fan.yaml");
    std::fs::write(&fan, fan_out(100)).unwrap();

    // The journal fdatasyncs every record (two per step here), so the cost of durability
    // shows in the ratio with the state directory on disk; on tmpfs it is the engine alone.
    let disk = dir.path().join("state");
    let memory = Path::new("/dev/shm")
        .is_dir()
        .then(|| tempfile::tempdir_in("/dev/shm").unwrap());
    let plain = best(3, || spawns(500));
    let on_disk = best(3, || run(&seq, &disk, &[]));
    println!(
        "500 sequential steps: 500 bash spawns {:.2}s; runbook with its journal on disk {:.2}s, ratio {:.2}x",
        plain.as_secs_f64(),
        on_disk.as_secs_f64(),
        on_disk.as_secs_f64() / plain.as_secs_f64()
    );
    let engine = match &memory {
        Some(m) => {
            let t = best(3, || run(&seq, m.path(), &[]));
            println!(
                "  with the journal on tmpfs (engine overhead without fsync cost) {:.2}s, ratio {:.2}x",
                t.as_secs_f64(),
                t.as_secs_f64() / plain.as_secs_f64()
            );
            t
        }
        None => on_disk,
    };
    let ratio = engine.as_secs_f64() / plain.as_secs_f64();
    println!("  engine ratio {ratio:.2}x (target <= 1.30x)");

    let one = best(1, || run(&fan, &disk, &["--parallel", "1"]));
    let eight = best(2, || run(&fan, &disk, &["--parallel", "8"]));
    let speedup = one.as_secs_f64() / eight.as_secs_f64();
    println!(
        "100 independent checks: --parallel 1 {:.2}s, --parallel 8 {:.2}s, speed-up {speedup:.1}x (target >= 5x)",
        one.as_secs_f64(),
        eight.as_secs_f64()
    );
    if ratio > 1.3 || speedup < 5.0 {
        println!("a target was missed");
        std::process::exit(1);
    }
}
