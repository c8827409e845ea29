//! Bad input never panics: random and mutated YAML through the parser, validator and plan.

use proptest::prelude::*;

const SEED: &str = include_str!("../../../tests/fixtures/valid/branching.yaml");

fn check_invariants(text: &str) {
    let checked = runbook_core::check(text, Some("branching"));
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

#[test]
fn seed_is_valid() {
    let checked = runbook_core::check(SEED, Some("branching"));
    assert!(checked.valid().is_some(), "{:#?}", checked.diagnostics);
}
