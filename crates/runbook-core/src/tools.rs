//! The programs a runbook's shell steps call (`aws`, `psql`, `gpg`, `curl`), read from
//! the scripts without running them, so a dry run can say which are missing before
//! anything runs, and a failed step can name the one that was not found.
//!
//! This is a reader for the shell people write in runbooks, not a shell parser: it splits
//! a script into simple commands at unquoted `;`, `&`, `|`, newlines and `$(`/`` ` ``/`(`,
//! skips assignments, keywords and builtins, and takes the first word. Heredoc bodies are
//! skipped. A word that is a template (`{{...}}`) or an expansion (`$x`) is not a name.

use crate::model::{Action, Runbook};

/// Shell keywords and builtins: never programs on `PATH`.
const NOT_PROGRAMS: &[&str] = &[
    "!",
    "[",
    "[[",
    "]]",
    "{",
    "}",
    ".",
    ":",
    "alias",
    "break",
    "builtin",
    "case",
    "cd",
    "command",
    "continue",
    "declare",
    "do",
    "done",
    "echo",
    "elif",
    "else",
    "esac",
    "eval",
    "exec",
    "exit",
    "export",
    "false",
    "fi",
    "for",
    "function",
    "getopts",
    "hash",
    "if",
    "in",
    "let",
    "local",
    "mapfile",
    "printf",
    "pwd",
    "read",
    "readarray",
    "readonly",
    "return",
    "select",
    "set",
    "shift",
    "source",
    "test",
    "then",
    "time",
    "trap",
    "true",
    "type",
    "typeset",
    "ulimit",
    "umask",
    "unset",
    "until",
    "wait",
    "while",
];

/// Words that run the next word as the command.
const WRAPPERS: &[&str] = &[
    "sudo", "env", "nice", "nohup", "timeout", "xargs", "exec", "time",
];

/// The programs `script` calls, in order of first use, each once.
pub fn programs(script: &str) -> Vec<String> {
    static FUNCTION: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r"(?m)(?:^|[;&|{(]\s*)(?:function\s+([A-Za-z_][A-Za-z0-9_-]*)|([A-Za-z_][A-Za-z0-9_-]*)\s*\(\s*\))",
        )
        .unwrap_or_else(|_| unreachable!("a valid regex"))
    });
    // Functions the script defines are called like programs but are not on PATH.
    let functions: Vec<&str> = FUNCTION
        .captures_iter(script)
        .filter_map(|c| c.get(1).or_else(|| c.get(2)).map(|m| m.as_str()))
        .collect();
    let mut out: Vec<String> = Vec::new();
    for command in simple_commands(&without_templates(script)) {
        if let Some(p) = program_of(&command) {
            if !out.contains(&p) && !functions.contains(&p.as_str()) {
                out.push(p);
            }
        }
    }
    out
}

/// Programs of every bash/sh shell step: `(program, step ids)` in order of first use.
pub fn runbook_programs(rb: &Runbook) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for step in &rb.steps {
        let Some(Action::Shell(sh)) = &step.action else {
            continue;
        };
        if !matches!(sh.interpreter.as_deref(), None | Some("bash" | "sh")) {
            continue;
        }
        for p in programs(&sh.run.value) {
            match out.iter_mut().find(|(q, _)| *q == p) {
                Some((_, steps)) => steps.push(step.id.value.clone()),
                None => out.push((p, vec![step.id.value.clone()])),
            }
        }
    }
    out
}

/// The program a failed command reported as not found (`bash: line 1: psql: command not
/// found`, `sh: 1: psql: not found`), from its standard error.
pub fn not_found_in(stderr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in stderr.lines() {
        let line = line.trim();
        let rest = line
            .strip_suffix(": command not found")
            .or_else(|| line.strip_suffix(": not found"));
        let Some(rest) = rest else { continue };
        let name = rest.rsplit(": ").next().unwrap_or(rest).trim();
        if !name.is_empty() && !name.contains(' ') && !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
    }
    out
}

/// Each `{{...}}` (and `{{{...}}}`) replaced by a word that is not a program: what a
/// template inserts is not known here, and its helpers (`eq`, `join`) are not commands.
fn without_templates(script: &str) -> String {
    let mut out = String::with_capacity(script.len());
    let mut rest = script;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        match after.find("}}") {
            Some(end) => {
                let inner = after[2..end]
                    .trim_start_matches('{')
                    .trim_start_matches('~')
                    .trim();
                // Block helpers (`{{#if}}`, `{{else}}`, `{{/each}}`) separate commands;
                // a value stands where it is.
                if inner.starts_with('#') || inner.starts_with('/') || inner == "else" {
                    out.push('\n');
                } else {
                    out.push_str(TEMPLATE);
                }
                let mut skip = end + 2;
                while after[skip..].starts_with('}') {
                    skip += 1;
                }
                rest = &after[skip..];
            }
            None => {
                out.push_str(after);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// What a template stands for while reading a script.
const TEMPLATE: &str = "$TEMPLATE";

fn program_of(words: &[String]) -> Option<String> {
    let mut wrapped = false;
    let mut name_follows = false;
    for w in words {
        if w.is_empty() || std::mem::take(&mut name_follows) {
            continue;
        }
        if w == "function" {
            name_follows = true;
            continue;
        }
        // Assignments before the command, options of a wrapper (`timeout 5`, `env -i`).
        if is_assignment(w) || (wrapped && (w.starts_with('-') || w.parse::<f64>().is_ok())) {
            continue;
        }
        if WRAPPERS.contains(&w.as_str()) {
            wrapped = true;
            continue;
        }
        if NOT_PROGRAMS.contains(&w.as_str()) {
            // `if cmd`, `! cmd`, `while cmd`, `then cmd`: the command follows the keyword.
            if matches!(
                w.as_str(),
                "if" | "then" | "else" | "elif" | "do" | "while" | "until" | "!" | "{" | "time"
            ) {
                continue;
            }
            return None;
        }
        if w.contains('$')
            || w.starts_with('-')
            || w.starts_with('<')
            || w.starts_with('>')
            || w.contains('=')
            || w.ends_with(')')
            || !w
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-/+".contains(c))
        {
            return None;
        }
        return Some(w.clone());
    }
    None
}

fn is_assignment(w: &str) -> bool {
    match w.split_once('=') {
        Some((name, _)) => {
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit())
        }
        None => false,
    }
}

/// Split a script into simple commands, each a list of words (quotes removed).
fn simple_commands(script: &str) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut heredoc: Option<String> = None;
    // Open `(`/`$(`: a `)` with none open ends a `case` pattern.
    let mut depth = 0usize;
    // A quoted string may span lines.
    let mut quote: Option<char> = None;
    let mut pending_heredoc: Option<String> = None;
    let mut lines = script.split_inclusive('\n').peekable();
    let flush_word = |word: &mut String, words: &mut Vec<String>, in_word: &mut bool| {
        if *in_word {
            words.push(std::mem::take(word));
            *in_word = false;
        }
    };
    let flush_cmd = |words: &mut Vec<String>, commands: &mut Vec<Vec<String>>| {
        if !words.is_empty() {
            commands.push(std::mem::take(words));
        }
    };
    while let Some(line) = lines.next() {
        if let Some(end) = &heredoc {
            if line.trim() == end {
                heredoc = None;
            }
            continue;
        }
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            match quote {
                Some(q) => {
                    if c == q {
                        quote = None;
                    } else if q == '"'
                        && c == '$'
                        && chars.get(i + 1) == Some(&'(')
                        && chars.get(i + 2) != Some(&'(')
                    {
                        // A command substitution inside double quotes starts a command.
                        depth += 1;
                        flush_word(&mut word, &mut words, &mut in_word);
                        flush_cmd(&mut words, &mut commands);
                        quote = None;
                        i += 1;
                    } else if q == '"' && c == '\\' {
                        i += 1;
                        if let Some(&n) = chars.get(i) {
                            word.push(n);
                        }
                    } else {
                        word.push(c);
                    }
                    in_word = true;
                }
                None => match c {
                    '\'' | '"' => {
                        quote = Some(c);
                        in_word = true;
                    }
                    '\\' => {
                        i += 1;
                        if let Some(&n) = chars.get(i) {
                            if n != '\n' {
                                word.push(n);
                                in_word = true;
                            }
                        }
                    }
                    '#' if !in_word => break,
                    // `>&2`, `2>&1`, `&>file`: a redirection, not a separator.
                    '&' if word.ends_with(['>', '<']) || chars.get(i + 1) == Some(&'>') => {
                        word.push(c);
                        in_word = true;
                    }
                    '$' if chars.get(i + 1) == Some(&'(') && chars.get(i + 2) == Some(&'(') => {
                        // Arithmetic `$(( ... ))`: a value, with commands only in the
                        // substitutions inside it.
                        let mut depth = 0usize;
                        let mut j = i + 1;
                        while j < chars.len() {
                            match chars[j] {
                                '(' => depth += 1,
                                ')' => {
                                    depth -= 1;
                                    if depth == 0 {
                                        break;
                                    }
                                }
                                _ => {}
                            }
                            j += 1;
                        }
                        let start = (i + 3).min(chars.len());
                        let end = j.saturating_sub(1).clamp(start, chars.len());
                        let inner: String = chars[start..end].iter().collect();
                        let mut rest = inner.as_str();
                        while let Some(k) = rest.find("$(") {
                            let sub = &rest[k + 2..];
                            let end = sub.find(')').unwrap_or(sub.len());
                            commands.extend(simple_commands(&sub[..end]));
                            rest = &sub[end..];
                        }
                        word.push('0');
                        in_word = true;
                        i = j;
                    }
                    ')' => {
                        flush_word(&mut word, &mut words, &mut in_word);
                        if depth == 0 {
                            // The end of a `case` pattern (`''|None)`): not a command.
                            words.clear();
                        } else {
                            depth -= 1;
                            flush_cmd(&mut words, &mut commands);
                        }
                        // `$(date).sql`: what follows is part of the outer word.
                        if chars
                            .get(i + 1)
                            .is_some_and(|n| !n.is_whitespace() && !";&|)".contains(*n))
                        {
                            word.push('$');
                            in_word = true;
                        }
                    }
                    '(' => {
                        depth += 1;
                        flush_word(&mut word, &mut words, &mut in_word);
                        flush_cmd(&mut words, &mut commands);
                    }
                    ';' | '&' | '|' | '\n' | '`' => {
                        flush_word(&mut word, &mut words, &mut in_word);
                        flush_cmd(&mut words, &mut commands);
                    }
                    '$' if chars.get(i + 1) == Some(&'(') => {
                        depth += 1;
                        flush_word(&mut word, &mut words, &mut in_word);
                        flush_cmd(&mut words, &mut commands);
                        i += 1;
                    }
                    '<' if chars.get(i + 1) == Some(&'<') && chars.get(i + 2) != Some(&'<') => {
                        // A heredoc: its body (from the next line to the delimiter) is data.
                        let rest: String = chars[i + 2..].iter().collect();
                        let delim: String = rest
                            .trim_start_matches('-')
                            .trim_start()
                            .chars()
                            .take_while(|c| !c.is_whitespace() && !";|&)".contains(*c))
                            .filter(|c| *c != '\'' && *c != '"')
                            .collect();
                        if !delim.is_empty() {
                            pending_heredoc = Some(delim);
                        }
                        flush_word(&mut word, &mut words, &mut in_word);
                        i += 1;
                    }
                    c if c.is_whitespace() => flush_word(&mut word, &mut words, &mut in_word),
                    c => {
                        word.push(c);
                        in_word = true;
                    }
                },
            }
            i += 1;
        }
        if quote.is_none() {
            flush_word(&mut word, &mut words, &mut in_word);
            flush_cmd(&mut words, &mut commands);
        }
        if let Some(d) = pending_heredoc.take() {
            heredoc = Some(d);
        }
        let _ = lines.peek();
    }
    flush_word(&mut word, &mut words, &mut in_word);
    flush_cmd(&mut words, &mut commands);
    commands
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_of_pipelines_substitutions_and_keywords() {
        assert_eq!(programs("df -h / | tail -1"), ["df", "tail"]);
        assert_eq!(
            programs("set -o pipefail\nn=$(psql -tAc 'SELECT 1; SELECT 2' | wc -l)\necho $n"),
            ["psql", "wc"]
        );
        assert_eq!(
            programs("if ! aws rds describe-db-instances; then exit 1; fi"),
            ["aws"]
        );
        assert_eq!(
            programs("PGPASSWORD=x timeout 30 pg_dump -h h db > out.sql && gpg --encrypt out.sql"),
            ["pg_dump", "gpg"]
        );
        assert_eq!(
            programs("for f in $(find /var/log -name '*.log'); do rm \"$f\"; done"),
            ["find", "rm"]
        );
        assert_eq!(
            programs("\"{{params.tool}}\" --version; $CMD x"),
            Vec::<String>::new()
        );
        assert_eq!(
            programs("echo 'too many' >&2; aws s3 ls 2>&1 &>/dev/null; exit 1"),
            ["aws"]
        );
        assert_eq!(
            programs(
                "aws logs start-query --start-time $(( $(date +%s) - 3600 )) --end-time $(date +%s)"
            ),
            ["date", "aws"]
        );
        assert_eq!(
            programs("echo \"$(curl -s http://x | jq .a)\" # uses jq"),
            ["curl", "jq"]
        );
    }

    #[test]
    fn templates_case_patterns_and_words_after_substitutions_are_not_commands() {
        assert_eq!(
            programs("{{#if (eq params.x \"latest\")}}aws rds x{{/if}}"),
            ["aws"]
        );
        assert_eq!(
            programs("f=backup_$(date +%s).sql; pg_dump > \"$f\""),
            ["date", "pg_dump"]
        );
        assert_eq!(
            programs("case \"$x\" in\n  ''|None) echo none ;;\n  *) ls ;;\nesac"),
            ["ls"]
        );
    }

    #[test]
    fn functions_and_multi_line_strings_are_not_commands() {
        assert_eq!(
            programs("state() { aws ecs describe-services; }\nstate | jq .x"),
            ["aws", "jq"]
        );
        assert_eq!(programs("function check { curl -s x; }; check"), ["curl"]);
        assert_eq!(
            programs("awk '\nBEGIN { x = 1 }\n{ rs = $1 }\n' file; sort f"),
            ["awk", "sort"]
        );
        assert_eq!(
            programs("jq -r \"\n  .rules[] | select(.FromPort == 8000)\n  || (.x)\" f"),
            ["jq"]
        );
        assert_eq!(
            programs("now=$(date +%s)\necho \"{\\\"start\\\": $(( (now - 3600) * 1000 ))}\""),
            ["date"]
        );
    }

    #[test]
    fn heredoc_bodies_and_comments_are_not_commands() {
        let script = "psql <<'SQL'\nSELECT pg_terminate_backend(pid);\nDELETE FROM x;\nSQL\n# tar czf backup\nls";
        assert_eq!(programs(script), ["psql", "ls"]);
    }

    #[test]
    fn not_found_names_the_program() {
        assert_eq!(
            not_found_in("bash: line 1: psql: command not found\n"),
            ["psql"]
        );
        assert_eq!(not_found_in("sh: 1: gpg: not found\n"), ["gpg"]);
        assert_eq!(not_found_in("bash: aws: command not found"), ["aws"]);
        assert!(not_found_in("error: file not found").is_empty());
    }
}
