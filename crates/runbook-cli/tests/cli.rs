//! End-to-end tests of the `runbook` binary: exit code, stdout and stderr are snapshot
//! together, as a user sees them. Fixtures live in `tests/fixtures/` at the repository root.

use std::path::{Path, PathBuf};
use std::process::Command;

use insta_cmd::{assert_cmd_snapshot, get_cargo_bin};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// The binary, run from the repository root with a clean environment for colour and paths.
fn runbook(args: &[&str]) -> Command {
    let mut cmd = Command::new(get_cargo_bin("runbook"));
    cmd.current_dir(root())
        .args(args)
        .env_remove("RUNBOOK_PATH")
        .env_remove("RUNBOOK_LOG")
        .env("NO_COLOR", "1");
    cmd
}

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .expect("fixture directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        // Scenario files (`runbook test`) are not runbooks.
        .filter(|p| !p.to_string_lossy().ends_with(".test.yaml"))
        .collect();
    files.sort();
    files
}

fn rel(path: &Path) -> String {
    path.strip_prefix(root())
        .expect("inside the repository")
        .display()
        .to_string()
}

/// One snapshot per invalid fixture: every diagnostic, rendered, with exit code 2 (or 0
/// for warning-only fixtures) and nothing on stdout.
#[test]
fn invalid_fixtures_report_every_diagnostic() {
    let files = yaml_files("tests/fixtures/invalid");
    assert!(
        files.len() >= 25,
        "expected at least 25 invalid fixtures, found {}",
        files.len()
    );
    for file in files {
        let name = file
            .file_stem()
            .expect("stem")
            .to_string_lossy()
            .into_owned();
        let output = runbook(&["validate", &rel(&file)])
            .output()
            .expect("run runbook");
        assert!(
            output.stdout.is_empty(),
            "{name}: validate printed to stdout"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("--> {}:", rel(&file))),
            "{name}: no file:line:col in\n{stderr}"
        );
        assert_cmd_snapshot!(
            format!("invalid__{name}"),
            runbook(&["validate", &rel(&file)])
        );
    }
}

/// Warning fixtures fail under --deny-warnings.
#[test]
fn deny_warnings_turns_warnings_into_errors() {
    let file = "tests/fixtures/invalid/raw-template.yaml";
    let plain = runbook(&["validate", file]).status().expect("run");
    assert_eq!(plain.code(), Some(0));
    assert_cmd_snapshot!(runbook(&["validate", "--deny-warnings", file]));
}

/// Every runbook in the library, every example and every valid fixture validates without
/// warnings and plans.
#[test]
fn library_examples_and_valid_fixtures_are_clean() {
    let mut files = yaml_files("runbooks");
    assert!(
        files.len() >= 10,
        "the library should encode every seed procedure"
    );
    files.extend(yaml_files("examples"));
    files.extend(yaml_files("tests/fixtures/valid"));
    for file in files {
        let path = rel(&file);
        let out = runbook(&["validate", "--deny-warnings", &path])
            .output()
            .expect("run");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{path}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = runbook(&["plan", &path]).output().expect("run");
        assert_eq!(
            out.status.code(),
            Some(0),
            "plan {path}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&file).expect("read");
        assert!(
            text.starts_with("# yaml-language-server: $schema="),
            "{path} lacks the schema comment"
        );
    }
}

/// A directory with some invalid runbooks reports on all of them.
#[test]
fn directory_with_invalid_files_reports_all() {
    let out = runbook(&["validate", "tests/fixtures/invalid"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for file in yaml_files("tests/fixtures/invalid") {
        assert!(
            stderr.contains(&rel(&file)),
            "{} missing from the report",
            rel(&file)
        );
    }
    assert!(out.stdout.is_empty());
}

#[test]
fn validate_json_lines() {
    let out = runbook(&[
        "validate",
        "--format",
        "json",
        "tests/fixtures/invalid/unknown-field.yaml",
    ])
    .output()
    .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["code"], "RB002");
    assert_eq!(lines[0]["line"], 5);
    assert_eq!(lines[1]["help"], "did you mean `shell`?");
}

#[test]
fn list_shows_the_library() {
    assert_cmd_snapshot!(runbook(&["list"]));
}

#[test]
fn plan_renders_commands_and_branches() {
    assert_cmd_snapshot!(runbook(&["plan", "db-connection-error"]));
    assert_cmd_snapshot!(runbook(&[
        "plan",
        "tests/fixtures/valid/branching.yaml",
        "--param",
        "threshold=5"
    ]));
}

#[test]
fn plan_json_is_machine_readable() {
    let out = runbook(&["plan", "db-connection-error", "--format", "json"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(plan["runbook"], "db-connection-error");
    let saturated = plan["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["id"] == "saturated")
        .expect("branch");
    assert_eq!(saturated["default"]["goto"], "pool_size");
    assert_eq!(
        saturated["default"]["skips"],
        serde_json::json!([
            "long_queries",
            "any_long",
            "terminate",
            "terminated",
            "idle_sessions",
            "reduce_pool",
            "unreachable",
            "reachable_again"
        ])
    );
}

/// A parameter value that tries to break out of its quotes stays one argument.
#[test]
fn plan_quotes_injection_attempts() {
    let evil = "x'; touch /tmp/pwned; echo '";
    let out = runbook(&[
        "plan",
        "db-connection-error",
        "--format",
        "json",
        "-p",
        &format!("db_host={evil}"),
    ])
    .output()
    .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let run = plan["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["id"] == "connections")
        .expect("step")["action"]["shell"]["run"]
        .as_str()
        .expect("run")
        .to_string();
    let words = shlex_split(&run);
    assert_eq!(words[2], evil, "{run}");
}

/// POSIX word splitting by Python's shlex, an independent implementation of the rules.
fn shlex_split(s: &str) -> Vec<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import shlex,sys,json; print(json.dumps(shlex.split(sys.argv[1])))",
            s,
        ])
        .output()
        .expect("python3");
    serde_json::from_slice(&out.stdout).expect("words")
}

#[test]
fn bad_params_are_reported_together() {
    assert_cmd_snapshot!(runbook(&[
        "plan",
        "db-connection-error",
        "-p",
        "max_connections=lots",
        "-p",
        "db_instanse=x",
        "-p",
        "db_instance=bad name"
    ]));
}

#[test]
fn unknown_runbook_suggests_a_name() {
    assert_cmd_snapshot!(runbook(&["plan", "db-connection-eror"]));
}

#[test]
fn show_human_and_markdown() {
    assert_cmd_snapshot!(runbook(&["show", "db-connection-error"]));
    assert_cmd_snapshot!(runbook(&[
        "show",
        "db-connection-error",
        "--format",
        "markdown"
    ]));
}

/// Titles render parameters' defaults (a parameter without one stays a visible
/// placeholder), `|` inside a markdown table cell is escaped, and a step that is both a
/// branch's route and in `needs` of its target is one edge.
#[test]
fn show_and_graph_titles_cells_and_edges() {
    let file = "tests/fixtures/valid/display.yaml";
    assert_cmd_snapshot!(runbook(&["show", file, "--format", "markdown"]));
    assert_cmd_snapshot!(runbook(&["show", file]));
    assert_cmd_snapshot!(runbook(&["graph", file]));
    assert_cmd_snapshot!(runbook(&["graph", file, "--format", "dot"]));
}

/// `--format github`: one workflow command per diagnostic, errors and warnings, with the
/// runner's escapes, so each becomes an annotation on the pull request.
#[test]
fn validate_emits_github_annotations() {
    assert_cmd_snapshot!(runbook(&[
        "validate",
        "--format",
        "github",
        "tests/fixtures/invalid/cel-syntax.yaml",
        "tests/fixtures/invalid/mutating-check.yaml",
    ]));
}

/// A runbook saved in another encoding gets its place, not a bare I/O error.
#[test]
fn a_file_that_is_not_utf8_is_reported_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("sjis.yaml");
    // "title: " then Shift_JIS bytes for テスト.
    std::fs::write(
        &file,
        b"apiVersion: runbook/v1\ntitle: \x83\x65\x83\x58\x83\x67\n",
    )
    .expect("write");
    let out = runbook(&["validate", &file.display().to_string()])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("sjis.yaml:2:8: the file is not UTF-8 text (byte 0x83)"),
        "{stderr}"
    );
}

#[test]
fn graph_mermaid_and_dot() {
    assert_cmd_snapshot!(runbook(&[
        "graph",
        "db-connection-error",
        "--format",
        "mermaid"
    ]));
    assert_cmd_snapshot!(runbook(&[
        "graph",
        "db-connection-error",
        "--format",
        "dot"
    ]));
}

/// The mermaid output only uses the flowchart forms we emit (phases as subgraphs), and
/// every edge names a node.
#[test]
fn mermaid_is_well_formed() {
    let subgraph = regex_lite(r"^    (subgraph p_[a-z0-9_]+\[\x22[^\x22]*\x22\]|end)$");
    let node = regex_lite(
        r"^    (    )?s_[a-z0-9_]+(\[\x22[^\x22]*\x22\]|\{\{\x22[^\x22]*\x22\}\}|\(\[\x22[^\x22]*\x22\]\)|\{\x22[^\x22]*\x22\})$",
    );
    let edge =
        regex_lite(r"^    s_([a-z0-9_]+) (-->|-\.->)(\|\x22[^\x22|]*\x22\|)? s_([a-z0-9_]+)$");
    for file in yaml_files("runbooks")
        .into_iter()
        .chain(yaml_files("tests/fixtures/valid"))
    {
        let out = runbook(&["graph", &rel(&file)]).output().expect("run");
        let text = String::from_utf8(out.stdout).expect("utf-8");
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("flowchart TD"));
        let mut nodes = std::collections::HashSet::new();
        for line in lines {
            if subgraph(line) {
                continue;
            }
            if node(line) {
                nodes.insert(
                    line.trim()
                        .split(['[', '{', '('])
                        .next()
                        .expect("id")
                        .to_string(),
                );
            } else {
                assert!(
                    edge(line),
                    "{}: not a mermaid node or edge: {line}",
                    rel(&file)
                );
                let parts: Vec<&str> = line.split_whitespace().collect();
                assert!(
                    nodes.contains(parts[0]) && nodes.contains(*parts.last().expect("target")),
                    "{line}"
                );
            }
        }
    }
}

fn regex_lite(pattern: &str) -> impl Fn(&str) -> bool {
    let re = regex::Regex::new(pattern).expect("test regex");
    move |line: &str| re.is_match(line)
}

/// The real yaml-language-server (tests/yamlls, installed by `scripts/test` with npm),
/// reading the checked-in schema through a runbook's `$schema` comment as an editor does,
/// offers every action key where a step's keys go, beside `capture`, `expect`, `needs`.
#[test]
fn yaml_language_server_completes_action_keys() {
    let checker = root().join("tests/yamlls");
    assert!(
        checker.join("node_modules/yaml-language-server").is_dir(),
        "yaml-language-server is not installed in tests/yamlls: run ./scripts/test, or `npm ci --prefix tests/yamlls`"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("draft.yaml");
    let schema = root().join("schemas/runbook.schema.json");
    std::fs::write(
        &file,
        format!(
            "# yaml-language-server: $schema={}\napiVersion: runbook/v1\nname: draft\ntitle: A new runbook\nsteps:\n  - id: probe\n    kind: check\n    title: Probe\n    \n",
            schema.canonicalize().expect("schema").display()
        ),
    )
    .expect("write");
    let out = Command::new("node")
        .arg("complete.mjs")
        .arg(&file)
        .args(["8", "4"])
        .current_dir(&checker)
        .output()
        .expect("node (installed by scripts/test)");
    let labels = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{labels}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let labels: Vec<&str> = labels.lines().collect();
    for key in [
        "shell",
        "http",
        "wait",
        "manual",
        "ssm_command",
        "ssm_automation",
        "capture",
        "expect",
        "needs",
    ] {
        assert!(labels.contains(&key), "`{key}` not offered: {labels:?}");
    }
    // Keys the step already has are not offered again.
    assert!(!labels.contains(&"title"), "{labels:?}");
}

/// Graphviz renders every dot graph of the library.
/// Every graph parses with mermaid's own parser (tests/mermaid, installed by
/// `scripts/test` with npm), so a reviewer's renderer will draw it.
#[test]
fn mermaid_parses_with_mermaid() {
    let checker = root().join("tests/mermaid");
    assert!(
        checker.join("node_modules/mermaid").is_dir(),
        "mermaid is not installed in tests/mermaid: run ./scripts/test, or `npm ci --prefix tests/mermaid`"
    );
    let diagrams: Vec<serde_json::Value> = yaml_files("runbooks")
        .into_iter()
        .chain(yaml_files("tests/fixtures/valid"))
        .chain(yaml_files("examples"))
        .map(|file| {
            let out = runbook(&["graph", &rel(&file), "--format", "mermaid"])
                .output()
                .expect("run");
            assert!(out.status.success(), "{}", rel(&file));
            serde_json::json!({
                "name": rel(&file),
                "text": String::from_utf8(out.stdout).expect("utf-8"),
            })
        })
        .collect();
    assert!(diagrams.len() > 16, "{} diagrams", diagrams.len());
    let mut node = Command::new("node")
        .arg("check.mjs")
        .current_dir(&checker)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node (installed by scripts/test)");
    {
        use std::io::Write;
        let mut stdin = node.stdin.take().expect("stdin");
        stdin
            .write_all(serde_json::Value::Array(diagrams).to_string().as_bytes())
            .expect("write diagrams");
    }
    let out = node.wait_with_output().expect("node");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "mermaid rejected:\n{report}");
    assert!(report.contains(" diagrams parse"), "{report}");
}

#[test]
fn dot_renders_with_graphviz() {
    for file in yaml_files("runbooks")
        .into_iter()
        .chain(yaml_files("tests/fixtures/valid"))
    {
        let out = runbook(&["graph", &rel(&file), "--format", "dot"])
            .output()
            .expect("run");
        let dir = tempfile::tempdir().expect("tempdir");
        let dot_file = dir.path().join("g.dot");
        std::fs::write(&dot_file, &out.stdout).expect("write");
        let render = Command::new("dot")
            .args(["-Tsvg", "-o"])
            .arg(dir.path().join("g.svg"))
            .arg(&dot_file)
            .output()
            .expect("graphviz `dot` must be installed (scripts/test installs it)");
        assert!(
            render.status.success(),
            "{}: {}",
            rel(&file),
            String::from_utf8_lossy(&render.stderr)
        );
        let svg = std::fs::read_to_string(dir.path().join("g.svg")).expect("svg");
        assert!(svg.contains("<svg"));
    }
}

#[test]
fn schema_and_completions() {
    let out = runbook(&["schema"]).output().expect("run");
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON schema");
    assert_eq!(schema["title"], "runbook");
    let out = runbook(&["completions", "bash"]).output().expect("run");
    assert!(String::from_utf8_lossy(&out.stdout).contains("validate"));
}

#[test]
fn usage_errors_exit_2() {
    let out = runbook(&["plan"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let out = runbook(&["validate", "no/such/file.yaml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no such file or directory: no/such/file.yaml")
    );
}

/// `list` shows a runbook by its `name:`; that name finds it even when the file is called
/// something else, and two files with one name are an error naming both.
#[test]
fn a_runbook_is_found_by_its_name_even_in_a_file_named_otherwise() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = std::fs::read_to_string(root().join("runbooks/disk-full.yaml")).expect("runbook");
    std::fs::write(dir.path().join("copy.yaml"), &text).expect("write");
    let d = dir.path().to_string_lossy().to_string();
    let out = runbook(&["plan", "disk-full", "--dir", &d])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("plan: disk-full"));

    std::fs::write(dir.path().join("other.yaml"), &text).expect("write");
    let out = runbook(&["plan", "disk-full", "--dir", &d])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("2 runbooks are named `disk-full`")
            && stderr.contains("copy.yaml")
            && stderr.contains("other.yaml"),
        "{stderr}"
    );
}
