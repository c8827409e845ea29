//! The invariants of ARCHITECTURE.md that the source itself can show: no module cycles in
//! any crate, and the library crates never spell the CLI's flags.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments and without its test module.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]\nmod ").next().unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Top-level module of a crate → the top-level modules it names (`crate::x`). The crate
/// root (`lib.rs`, `main.rs`) is left out: every module may use what the root declares.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let uses = graph.entry(module.clone()).or_default();
        let text = code(&file);
        for (at, _) in text.match_indices("crate::") {
            let name: String = text[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if !name.is_empty() && name != module {
                uses.insert(name);
            }
        }
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for uses in graph.values_mut() {
        uses.retain(|m| modules.contains(m));
    }
    graph
}

/// A cycle through `start`, as the path of modules, if there is one.
fn cycle_from(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_string(), vec![start.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((module, path)) = stack.pop() {
        for next in &graph[&module] {
            if next == start {
                let mut cycle = path.clone();
                cycle.push(start.to_string());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push((next.clone(), longer));
            }
        }
    }
    None
}

#[test]
fn no_crate_has_a_module_cycle() {
    let mut cycles = Vec::new();
    for krate in ["runbook-core", "runbook-exec", "runbook-cli"] {
        let graph = module_graph(&workspace().join("crates").join(krate).join("src"));
        assert!(graph.len() > 5, "{krate}: modules not found");
        for module in graph.keys() {
            if let Some(cycle) = cycle_from(&graph, module) {
                cycles.push(format!("{krate}: {}", cycle.join(" → ")));
            }
        }
    }
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_library_crates_never_spell_a_cli_flag() {
    let flags = [
        "--yes",
        "--auto-manual",
        "--param",
        "--params-file",
        "--region",
        "--profile",
        "--from",
        "--force",
        "--dry-run",
        "--parallel",
    ];
    let mut found = Vec::new();
    for krate in ["runbook-core", "runbook-exec"] {
        let mut files = Vec::new();
        rust_files(
            &workspace().join("crates").join(krate).join("src"),
            &mut files,
        );
        for file in files {
            for (n, line) in code(&file).lines().enumerate() {
                // Version 1 journals recorded the flag as the approver; reading them back
                // is the one place the old spelling may appear.
                if line.contains("AnsweredByRecord::Legacy") {
                    continue;
                }
                for flag in flags {
                    if line.contains(&format!("{flag}\""))
                        || line.contains(&format!("{flag} "))
                        || line.contains(&format!("{flag}="))
                    {
                        found.push(format!("{}:{}: {flag}", file.display(), n + 1));
                    }
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "the CLI's flags belong to the CLI:\n{}",
        found.join("\n")
    );
}
