//! Bad input never panics: random and mutated YAML through the parser, validator and plan.

use proptest::prelude::*;

#[path = "support/mutate.rs"]
mod mutate;

fn corpus() -> &'static [(String, String)] {
    static CORPUS: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    CORPUS.get_or_init(mutate::corpus)
}

/// A (mutated) scenario file: its own checks, then against its runbook.
fn scenario_pipeline(name: &str, text: &str) {
    let checked = runbook_core::validate::scenarios::check(text);
    let runbook = name
        .strip_suffix(".test")
        .and_then(|stem| corpus().iter().find(|(n, _)| n == stem))
        .map(|(n, t)| runbook_core::check(t, Some(n)));
    let mut diags = checked.diagnostics.clone();
    if let (Some(file), Some(rb)) = (
        &checked.file,
        runbook.as_ref().and_then(|c| c.runbook.as_ref()),
    ) {
        diags.extend(runbook_core::validate::scenarios::check_against(file, rb));
    }
    for d in &diags {
        assert!(
            d.span.offset + d.span.len <= text.len(),
            "span past the end: {d:?}"
        );
        assert!(!d.message.is_empty());
    }
}

/// Parse, validate, plan and render every step of a (mutated) runbook; compare it with
/// the original (`runbook diff`); a scenario file goes through the scenario checks.
fn pipeline(name: &str, text: &str, original: &str) {
    if name.ends_with(".test") {
        scenario_pipeline(name, text);
        return;
    }
    check_invariants_named(text, name);
    let before = runbook_core::check(original, Some(name));
    let after = runbook_core::check(text, Some(name));
    if let (Some((o, op)), Some((n, np))) = (before.valid(), after.valid()) {
        let d = runbook_core::diff::diff(o, op, n, np);
        if text == original {
            assert!(d.is_empty(), "a runbook differs from itself: {d:?}");
        }
    }
    let checked = runbook_core::check(text, Some(name));
    let Some(rb) = checked.runbook.as_ref() else {
        return;
    };
    let renderer = runbook_core::template::Renderer::new();
    let params: serde_json::Map<String, serde_json::Value> = rb
        .params
        .keys()
        .map(|k| (k.clone(), serde_json::json!("テスト🚀e\u{301}")))
        .collect();
    let steps: serde_json::Map<String, serde_json::Value> = rb
        .steps
        .iter()
        .map(|s| {
            let caps: serde_json::Map<String, serde_json::Value> = s
                .capture
                .keys()
                .map(|k| (k.clone(), serde_json::json!("値")))
                .collect();
            (s.id.value.clone(), serde_json::Value::Object(caps))
        })
        .collect();
    let data = serde_json::json!({"params": params, "steps": steps, "env": {}, "run": {"id": "r"}});
    for step in &rb.steps {
        if let Ok(r) = runbook_core::render::render_step(&renderer, step, &data) {
            if let Some(a) = &r.action {
                let _ = a.lines();
            }
        }
    }
}

const SEED: &str = include_str!("../../../tests/fixtures/valid/branching.yaml");

fn check_invariants(text: &str) {
    check_invariants_named(text, "branching");
}

fn check_invariants_named(text: &str, name: &str) {
    let checked = runbook_core::check(text, Some(name));
    for d in &checked.diagnostics {
        assert!(d.span.offset <= text.len(), "span past the end: {d:?}");
        assert!(
            d.span.offset + d.span.len <= text.len(),
            "span past the end: {d:?}"
        );
        assert!(!d.message.is_empty());
    }
    if checked.valid().is_some() {
        let plan = checked.plan.as_ref().expect("a valid runbook has a plan");
        assert_eq!(
            plan.order.len(),
            checked.runbook.as_ref().expect("runbook").steps.len()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        check_invariants(&text);
    }

    /// The shell reader behind "missing tools" takes any script, and names programs only
    /// with the characters a program name has.
    #[test]
    fn shell_reader_never_panics(text in r#"([a-z$(){}<>&|;'"`#\\ =0-9\n-]|<<|\$\(\(|\)\)|EOF){0,60}"#) {
        for p in runbook_core::tools::programs(&text) {
            prop_assert!(!p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "._-/+".contains(c)), "{p:?}");
        }
        let _ = runbook_core::tools::not_found_in(&text);
    }

    #[test]
    fn yamlish_text_never_panics(text in "([a-z_]{1,8}: ?(\\{\\{[a-z.]{0,12}\\}\\}|[a-z0-9 \\[\\]{},:'\"-]{0,20})\n {0,4}(- )?){0,30}") {
        check_invariants(&text);
    }

    /// Anchors, aliases, merge keys, tags and document markers, which the tree builder
    /// resolves itself.
    #[test]
    fn yaml_features_never_panic(text in "(( {0,4}(- )?([a-z]{1,3}|<<|steps): ?(&[ab] |!!(int|str|bool|float|null) )?(\\*[ab]|[a-z0-9]{0,4}|\\{\\}|\\[\\])?|---)\n){0,30}") {
        check_invariants(&text);
    }

    /// Delete, duplicate or replace a byte range of a valid runbook.
    #[test]
    fn mutated_runbook_never_panics(start in 0usize..SEED.len(), len in 0usize..40, op in 0u8..3, insert in "[ -~\n]{0,12}") {
        let mut bytes = SEED.as_bytes().to_vec();
        let end = (start + len).min(bytes.len());
        match op {
            0 => { bytes.drain(start..end); }
            1 => { let dup: Vec<u8> = bytes[start..end].to_vec(); bytes.splice(start..start, dup); }
            _ => { bytes.splice(start..end, insert.bytes()); }
        }
        let text = String::from_utf8_lossy(&bytes);
        check_invariants(&text);
    }
}

proptest! {
    #![proptest_config(mutate::config())]

    /// Every runbook of the repository, mutated: multi-byte text in any field, byte
    /// flips, truncation, deleted and duplicated lines, deep nesting.
    #[test]
    fn mutated_library_never_panics(file in any::<prop::sample::Index>(), ms in mutate::mutations()) {
        let (name, original) = file.get(corpus());
        let mut text = original.clone();
        for m in &ms {
            text = mutate::apply(&text, m);
        }
        pipeline(name, &text, original);
    }
}

/// The two panics found by mutating the library (issue 10), and their neighbours.
#[test]
fn multibyte_next_to_errors_never_panics() {
    for (name, text) in corpus() {
        for bad in [
            "taskDefinitテストion.cpu",
            "x == テスト(",
            "テスト(",
            "(?P<値>[0-9]+",
            "{{テスト",
            "テ{{params.x",
            "🚀[0.",
        ] {
            // Every field kind of every file, at its first place: the library is
            // large, and every place of a kind exercises the same code.
            let fields = [
                "json: ", "expect: ", "when: ", "regex: ", "title: ", "shell: ",
            ];
            let mut seen = [0usize; 6];
            for (i, line) in text.lines().enumerate() {
                let kind = fields.iter().position(|f| line.contains(f));
                if let Some(k) = kind.filter(|&k| seen[k] < 1) {
                    seen[k] += 1;
                    let m = mutate::Mutation::Value {
                        line: i,
                        text: format!("\"{bad}\""),
                    };
                    pipeline(name, &mutate::apply(text, &m), text);
                }
            }
        }
    }
}

#[test]
fn seed_is_valid() {
    let checked = runbook_core::check(SEED, Some("branching"));
    assert!(checked.valid().is_some(), "{:#?}", checked.diagnostics);
}
