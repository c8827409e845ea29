//! Mutations of real runbooks for the fuzz tests (shared by `runbook-core` and the CLI's
//! tests through `#[path]`): multi-byte text put into any field, byte flips, truncation,
//! line deletion and duplication, deep nesting.
//!
//! `RUNBOOK_FUZZ_CASES` raises the case count (`bench/fuzz` runs the long mode).

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use proptest::prelude::*;

/// Japanese, emoji (4 bytes), combining marks, zero-width and right-to-left text, and
/// characters that are syntax in YAML, CEL, JMESPath, regexes and templates next to them.
pub const MULTIBYTE: &[&str] = &[
    "テスト",
    "日本語の手順書",
    "🚀",
    "👩‍💻",
    "e\u{301}",
    "\u{200b}",
    "\u{202e}abc",
    "𝕏",
    "é(",
    "テ.",
    "{{テ",
    "テ}}",
    "[テ",
    "'テ",
    "\"テ",
    "テ:",
    "#テ",
    "\\テ",
    "ﾃｽﾄ",
    "한국어",
    "\u{feff}",
];

/// The proptest settings: 400 cases, or `RUNBOOK_FUZZ_CASES`.
pub fn config() -> ProptestConfig {
    let cases = std::env::var("RUNBOOK_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(400);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every runbook of the repository: the library, the examples and the test fixtures.
pub fn corpus() -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut dirs = vec![
        root().join("runbooks"),
        root().join("examples"),
        root().join("tests/fixtures"),
    ];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml") {
                let name = p.file_stem().unwrap().to_string_lossy().into_owned();
                files.push((name, std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    files.sort();
    assert!(files.len() > 40, "the corpus is missing files");
    files
}

/// One change to a text.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Put text at a character position of a line (position as a fraction).
    Insert { line: usize, at: u8, text: String },
    /// Replace the value after `key:` on a line.
    Value { line: usize, text: String },
    /// Flip one bit of one byte.
    Flip { at: usize, bit: u8 },
    /// Cut the text at a byte.
    Truncate { at: usize },
    /// Delete a line.
    Delete { line: usize },
    /// Duplicate a line.
    Duplicate { line: usize },
    /// Nest the value of a line `depth` levels deep in flow collections.
    Nest { line: usize, depth: usize },
}

/// Several mutations in a row.
pub fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let text = prop_oneof![
        4 => proptest::sample::select(MULTIBYTE).prop_map(str::to_string),
        1 => "\\PC{1,8}",
        1 => proptest::collection::vec(proptest::sample::select(MULTIBYTE), 1..4)
            .prop_map(|v| v.concat()),
    ];
    let one = prop_oneof![
        4 => (any::<usize>(), any::<u8>(), text.clone())
            .prop_map(|(line, at, text)| Mutation::Insert { line, at, text }),
        3 => (any::<usize>(), text).prop_map(|(line, text)| Mutation::Value { line, text }),
        1 => (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        1 => any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        1 => any::<usize>().prop_map(|line| Mutation::Delete { line }),
        1 => any::<usize>().prop_map(|line| Mutation::Duplicate { line }),
        1 => (any::<usize>(), 1usize..300).prop_map(|(line, depth)| Mutation::Nest { line, depth }),
    ];
    proptest::collection::vec(one, 1..4)
}

/// Apply `m` to `text`.
pub fn apply(text: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    let n = lines.len();
    match m {
        Mutation::Insert { line, at, text } => {
            let l = &mut lines[line % n];
            let chars = l.chars().count();
            let pos = (chars * usize::from(*at)) / 255;
            let b = l.char_indices().nth(pos).map_or(l.len(), |(b, _)| b);
            l.insert_str(b, text);
        }
        Mutation::Value { line, text } => {
            let l = &mut lines[line % n];
            match l.find(": ") {
                Some(p) => {
                    l.truncate(p + 2);
                    l.push_str(text);
                }
                None => l.push_str(text),
            }
        }
        Mutation::Flip { at, bit } => {
            let mut bytes = text.as_bytes().to_vec();
            if !bytes.is_empty() {
                let i = at % bytes.len();
                bytes[i] ^= 1 << bit;
            }
            return String::from_utf8_lossy(&bytes).into_owned();
        }
        Mutation::Truncate { at } => {
            let bytes = text.as_bytes();
            let cut = at % (bytes.len() + 1);
            return String::from_utf8_lossy(&bytes[..cut]).into_owned();
        }
        Mutation::Delete { line } => {
            lines.remove(line % n);
        }
        Mutation::Duplicate { line } => {
            let l = lines[line % n].clone();
            lines.insert(line % n, l);
        }
        Mutation::Nest { line, depth } => {
            let l = &mut lines[line % n];
            let open = if depth % 2 == 0 { "[" } else { "{a: " };
            let close = if depth % 2 == 0 { "]" } else { "}" };
            let value = match l.find(": ") {
                Some(p) => l.split_off(p + 2),
                None => std::mem::take(l),
            };
            l.push_str(&open.repeat(*depth));
            l.push_str(&value);
            l.push_str(&close.repeat(*depth));
        }
    }
    lines.join("\n")
}
