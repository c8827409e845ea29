//! Fuzzing what the CLI shows: the library's runbooks mutated (multi-byte text in every
//! field, byte flips, truncation, deleted and duplicated lines, deep nesting) through
//! `show` (human and markdown) and `graph` (mermaid and dot), and mutated journals through
//! the journal reader and `audit show`. The mutations are shared with runbook-core's
//! fuzz tests; `RUNBOOK_FUZZ_CASES` raises the case count (`bench/fuzz`).

#![allow(clippy::unwrap_used)]

use std::time::SystemTime;

use proptest::prelude::*;
use runbook_exec::event::{Event, Killed, Mode, Origin, RunStatus, Status, Stream, Summary};

#[path = "../../runbook-core/tests/support/mutate.rs"]
mod mutate;

fn corpus() -> &'static [(String, String)] {
    static CORPUS: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    CORPUS.get_or_init(mutate::corpus)
}

fn shown(name: &str, text: &str) {
    let checked = runbook_core::check(text, Some(name));
    let (Some(rb), Some(plan)) = (checked.runbook.as_ref(), checked.plan.as_ref()) else {
        return;
    };
    let _ = crate::commands::show_text(rb, plan, false);
    let _ = crate::commands::show_text(rb, plan, true);
    let _ = crate::graph::mermaid(rb, plan);
    let _ = crate::graph::dot(rb, plan);
}

/// A real journal, written by the journal writer, full of multi-byte text.
fn journal_text() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let j = runbook_exec::journal::Store::at(dir.path())
            .create("20261123-0000-テスト-0001")
            .unwrap();
        let now = SystemTime::now();
        let step = |s: &str| s.to_string();
        let events = [
            Event::RunStarted {
                run_id: "20261123-0000-テスト-0001".into(),
                runbook: "テスト".into(),
                title: "日本語の手順書 🚀".into(),
                mode: Mode::Live,
                params: serde_json::json!({"閾値": 80, "名前": "e\u{301}"})
                    .as_object()
                    .unwrap()
                    .clone(),
                steps: 2,
                step_ids: vec![step("確認"), step("変更")],
                origin: Origin {
                    path: "runbooks/テスト.yaml".into(),
                    operator: "運用者@host".into(),
                    ..Origin::default()
                },
            },
            Event::StepStarted {
                step: step("確認"),
                kind: "check".into(),
                title: "状態を確認 👩‍💻".into(),
                attempt: 1,
                action: None,
                confirm: None,
            },
            Event::Output {
                step: step("確認"),
                stream: Stream::Stdout,
                line: "接続数: 190 | 🚀 | e\u{301}".into(),
            },
            Event::Captured {
                step: step("確認"),
                name: "数".into(),
                value: serde_json::json!("190"),
            },
            Event::StepFinished {
                step: step("確認"),
                status: Status::Succeeded,
                exit_code: Some(0),
                duration_ms: 12,
                message: None,
                killed: None,
                skip: None,
                captures: serde_json::json!({"数": "190"})
                    .as_object()
                    .unwrap()
                    .clone(),
                http_status: None,
                stderr_tail: "警告 ⚠".into(),
            },
            Event::StepStarted {
                step: step("変更"),
                kind: "act".into(),
                title: "接続を切る".into(),
                attempt: 1,
                action: Some(runbook_core::render::RenderedAction::Manual {
                    instructions: "接続を切る | 🚀".into(),
                }),
                confirm: Some("本当に切りますか？".into()),
            },
            Event::StepFinished {
                step: step("変更"),
                status: Status::Failed,
                exit_code: None,
                duration_ms: 4000,
                message: Some("タイムアウト".into()),
                killed: Some(Killed::Timeout),
                skip: None,
                captures: serde_json::Map::new(),
                http_status: None,
                stderr_tail: String::new(),
            },
            Event::RunFinished {
                status: RunStatus::Failed,
                exit_code: Some(1),
                duration_ms: 4100,
                summary: Summary::default(),
            },
        ];
        for e in &events {
            runbook_exec::Sink::emit(&j, now, e);
        }
        std::fs::read_to_string(j.path()).unwrap()
    })
}

fn read_journal(text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.jsonl");
    std::fs::write(&path, text).unwrap();
    if let Ok(read) = runbook_exec::journal::read(&path) {
        let _ = crate::audit::markdown(&path, &read.records);
    }
}

proptest! {
    #![proptest_config(mutate::config())]

    #[test]
    fn mutated_library_shows_and_graphs_without_panics(file in any::<prop::sample::Index>(), ms in mutate::mutations()) {
        let (name, text) = file.get(corpus());
        let mut text = text.clone();
        for m in &ms {
            text = mutate::apply(&text, m);
        }
        shown(name, &text);
    }

    #[test]
    fn mutated_journals_read_without_panics(ms in mutate::mutations()) {
        let mut text = journal_text().to_string();
        for m in &ms {
            text = mutate::apply(&text, m);
        }
        read_journal(&text);
    }
}

#[test]
fn the_journal_seed_reads_and_shows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.jsonl");
    std::fs::write(&path, journal_text()).unwrap();
    let read = runbook_exec::journal::read(&path).unwrap();
    assert!(read.problem.is_none(), "{:?}", read.problem);
    let md = crate::audit::markdown(&path, &read.records);
    assert!(md.contains("captured `数`"), "{md}");
    assert!(md.contains("**変更** OUTCOME UNKNOWN"), "{md}");
}
