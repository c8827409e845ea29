//! The validator's own cases: streamed and merged steps, lints on inferred kinds.
use super::*;

fn codes(checked: &Checked) -> Vec<(Code, u32)> {
    checked
        .diagnostics
        .iter()
        .map(|d| (d.code, d.span.line))
        .collect()
}

/// A step whose `kind` is wrong or missing is taken as a check only so the rest is
/// checked: it gets the kind's error, not a lint about being a mutating check.
#[test]
fn a_step_without_a_valid_kind_gets_no_check_lint() {
    let text = "apiVersion: runbook/v1\nname: k\ntitle: K\nsteps:\n  - { id: a, kind: アクト, title: A, shell: \"rm -rf /tmp/x\" }\n  - { id: b, title: B, shell: \"rm -rf /tmp/y\" }\n  - { id: c, kind: check, title: C, shell: \"rm -rf /tmp/z\" }\n";
    let checked = check(text, Some("k"));
    let lints: Vec<u32> = codes(&checked)
        .into_iter()
        .filter(|(c, _)| *c == Code::MutatingCheck)
        .map(|(_, line)| line)
        .collect();
    assert_eq!(lints, [7], "{:?}", codes(&checked));
}

/// Steps normally arrive one by one while the file is read; steps taken from a `<<`
/// merge come with the finished tree. Both get every check.
#[test]
fn streamed_and_merged_steps_are_checked_alike() {
    let steps = [
        "  - id: probe",
        "    kind: check",
        "    title: Probe",
        "    shell: rm -rf /tmp/x",
        "    capture: { n: { stdout: int } }",
        "  - id: decide",
        "    kind: branch",
        "    title: Decide",
        "    cases:",
        "      - when: steps.probe.n > params.nope",
        "        goto: probe",
        "",
    ]
    .join("\n");
    let streamed = format!("apiVersion: runbook/v1\nname: t\ntitle: T\nsteps:\n{steps}");
    let merged = format!(
        "x-base: &base\n  steps:\n{}apiVersion: runbook/v1\nname: t\ntitle: T\n<<: *base\n",
        steps
            .lines()
            .map(|l| format!("  {l}\n"))
            .collect::<String>()
    );
    let a = check(&streamed, Some("t"));
    let b = check(&merged, Some("t"));
    let kinds = |c: &Checked| {
        let mut v: Vec<Code> = codes(c).into_iter().map(|(code, _)| code).collect();
        v.sort();
        v
    };
    // `x-base` is an unknown field in the merged form; everything else is the same.
    let mut want = kinds(&a);
    assert!(want.contains(&Code::MutatingCheck), "{:?}", codes(&a));
    assert!(want.contains(&Code::UnknownVariable), "{:?}", codes(&a));
    want.push(Code::UnknownField);
    want.sort();
    assert_eq!(kinds(&b), want, "{:?}", codes(&b));
    assert_eq!(a.runbook.map(|r| r.steps.len()), Some(2));
    assert_eq!(b.runbook.map(|r| r.steps.len()), Some(2));
}
