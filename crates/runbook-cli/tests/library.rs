//! The runbook library (`runbooks/`) as a whole: every runbook's plan, graph and wiki page
//! snapshot-tested, so a change to any of them shows in review; and the end-to-end cases
//! of `tests/library/` (see its README) run for real against `moto_server`, the real aws
//! CLI and the real binary.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::root;

/// The runbooks of the library, by name, sorted.
fn library() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("runbooks"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(".yaml")?;
            (!stem.ends_with(".test")).then(|| stem.to_string())
        })
        .collect();
    names.sort();
    names
}

fn runbook(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_runbook"))
        .current_dir(root())
        .env("NO_COLOR", "1")
        .env("COLUMNS", "120")
        .env_remove("RUNBOOK_PATH")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "runbook {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `plan`, `graph` and `show --format markdown` of every library runbook.
#[test]
fn every_runbook_plan_graph_and_page() {
    let names = library();
    assert!(
        names.len() >= 20,
        "the library has {} runbooks",
        names.len()
    );
    for name in names {
        let plan = runbook(&["plan", &name]);
        insta::assert_snapshot!(format!("{name}__plan"), plan);
        let graph = runbook(&["graph", &name]);
        insta::assert_snapshot!(format!("{name}__graph"), graph);
        let page = runbook(&["show", &name, "--format", "markdown"]);
        assert!(
            page.contains("```mermaid\nflowchart TD\n"),
            "{name}: no graph"
        );
        insta::assert_snapshot!(format!("{name}__page"), page);
    }
}

/// Every end-to-end case of `tests/library/` against one moto server, two at a time.
#[cfg(feature = "aws")]
#[test]
fn end_to_end_cases_against_moto() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(root().join("tests/library"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no cases in tests/library");
    let endpoint = common::moto();
    let queue = std::sync::Mutex::new(cases.clone());
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let Some(case) = queue.lock().unwrap().pop() else {
                        break;
                    };
                    let out = Command::new(common::venv("python"))
                        .arg(root().join("tests/library/run_case.py"))
                        .arg(&case)
                        .current_dir(root())
                        .env("AWS_ENDPOINT_URL", endpoint)
                        .env("AWS_CLI", common::venv("aws"))
                        .env("RUNBOOK", env!("CARGO_BIN_EXE_runbook"))
                        .env_remove("RUNBOOK_PATH")
                        .stdin(Stdio::null())
                        .output()
                        .unwrap();
                    if !out.status.success() {
                        failures.lock().unwrap().push(format!(
                            "{}:\n{}{}",
                            case.display(),
                            String::from_utf8_lossy(&out.stdout),
                            String::from_utf8_lossy(&out.stderr)
                        ));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// An HTTP server on 127.0.0.1 answering 500 until `flag` exists, then 200.
fn health_server(flag: PathBuf) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let (status, body) = if flag.exists() {
                ("200 OK", "{\"status\":\"正常\"}")
            } else {
                ("500 Internal Server Error", "{\"error\":\"内部エラー\"}")
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// The runbook written in Japanese (`examples/ja-app-health.yaml`): its text survives
/// validate, plan, show, graph, its scenarios, a live run's output and the journal.
#[test]
fn japanese_runbook_survives_every_command_and_the_journal() {
    let file = "examples/ja-app-health.yaml";
    runbook(&["validate", "--deny-warnings", file]);
    let plan = runbook(&["plan", file, "-p", "port=8123"]);
    assert!(
        plan.contains("ポート 8123 で待ち受けているか確認する"),
        "{plan}"
    );
    for format in ["human", "markdown"] {
        let page = runbook(&["show", file, "--format", format]);
        assert!(
            page.contains("アプリケーションを再起動しますか？"),
            "{page}"
        );
    }
    for format in ["mermaid", "dot"] {
        let graph = runbook(&["graph", file, "--format", format]);
        assert!(graph.contains("ヘルスチェックが 200 を返す"), "{graph}");
    }
    runbook(&["test", file]);

    // Live: the application answers 500 until the confirmed restart creates the flag.
    let work = tempfile::tempdir().unwrap();
    let flag = work.path().join("restarted");
    let port = health_server(flag.clone());
    let state = work.path().join("state");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_runbook"))
            .current_dir(root())
            .env("NO_COLOR", "1")
            .env("COLUMNS", "100")
            .env("RUNBOOK_STATE_DIR", &state)
            .env_remove("RUNBOOK_PATH")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = run(&[
        "exec",
        file,
        "--yes",
        "--auto-manual",
        "-p",
        &format!("port={port}"),
        "-p",
        &format!("health_url=http://127.0.0.1:{port}/health"),
        "-p",
        &format!("restart_command=touch {}", flag.display()),
        "-p",
        "max_disk=101",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(flag.exists(), "the restart act did not run");
    for text in [
        "ja-app-health — アプリケーションが応答しない（ローカル確認と再起動）",
        "state = \"待ち受け中\"",
        &format!(
            "confirm: アプリケーションを再起動しますか？（ポート {port}：待ち受け中、ヘルスチェック：HTTP 500）"
        ),
        "recovered │ {\"status\":\"正常\"}",
    ] {
        assert!(stdout.contains(text), "missing {text:?} in:\n{stdout}");
    }
    // The summary table's columns line up whatever the step titles hold.
    let table: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("STEP "))
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(table.len(), 11, "{stdout}");
    let column = table[0].find("STATUS").unwrap();
    for row in &table[1..] {
        let cell = &row[column..];
        assert!(
            ["ok", "failed", "skipped"]
                .iter()
                .any(|s| cell.starts_with(s)),
            "misaligned row {row:?} in:\n{}",
            table.join("\n")
        );
    }

    // The journal keeps the text byte for byte, and its chain holds.
    let verify = run(&["audit", "verify", "last"]);
    assert_eq!(verify.status.code(), Some(0));
    let shown = run(&["audit", "show", "last", "--format", "markdown"]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    for text in [
        "アプリケーションが応答しない（ローカル確認と再起動）",
        "アプリケーションを再起動する",
    ] {
        assert!(shown.contains(text), "missing {text:?} in:\n{shown}");
    }
}
