//! Validate and plan a generated 10,000-step runbook (target: under 100 ms).
//! Before timing, it prints the process's peak memory (VmHWM) after generating and
//! checking the runbook once.

use criterion::{Criterion, criterion_group, criterion_main};

/// A runbook of `n` steps: checks with captures, a branch every 50 steps whose arms
/// converge, and templates that read earlier captures.
pub fn generate(n: usize) -> String {
    let mut s = String::from(
        "apiVersion: runbook/v1\nname: big\ntitle: Generated\nparams:\n  host: { type: string, default: localhost }\n  limit: { type: integer, default: 10 }\nsteps:\n",
    );
    let mut i = 0;
    while i < n {
        if i % 50 == 49 && i + 3 < n {
            s.push_str(&format!(
                "  - id: s{i}\n    kind: branch\n    title: Decide {i}\n    cases:\n      - when: steps.s{p}.value > params.limit\n        goto: s{a}\n    default: s{b}\n",
                p = i - 1,
                a = i + 1,
                b = i + 2
            ));
            s.push_str(&format!("  - id: s{a}\n    kind: check\n    title: Arm A {a}\n    shell: echo {{{{params.host}}}}\n", a = i + 1));
            s.push_str(&format!(
                "  - id: s{b}\n    kind: check\n    title: Arm B {b}\n    shell: echo b\n",
                b = i + 2
            ));
            s.push_str(&format!(
                "  - id: s{c}\n    kind: check\n    title: Join {c}\n    needs: [s{a}, s{b}]\n    shell: echo join\n    capture: {{ value: {{ stdout: int }} }}\n",
                a = i + 1,
                b = i + 2,
                c = i + 3
            ));
            i += 4;
            continue;
        }
        let read = if i > 0 && i % 50 != 0 {
            format!(" {{{{steps.s{}.value}}}}", i - 1)
        } else {
            String::new()
        };
        s.push_str(&format!(
            "  - id: s{i}\n    kind: check\n    title: Step {i}\n    shell: echo {i}{read} -h {{{{params.host}}}}\n    capture:\n      value: {{ stdout: int }}\n    expect: value >= 0 && value < params.limit * 100000\n"
        ));
        i += 1;
    }
    s
}

fn bench(c: &mut Criterion) {
    let text = generate(10_000);
    let checked = runbook_core::check(&text, Some("big"));
    assert!(
        checked.valid().is_some(),
        "{:?}",
        &checked.diagnostics[..checked.diagnostics.len().min(3)]
    );
    drop(checked);
    let peak = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.trim_start_matches("VmHWM:").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    #[allow(clippy::print_stdout)]
    {
        println!(
            "10k-step runbook: {} bytes of YAML; peak memory after one validation: {peak}",
            text.len()
        );
    }
    let mut group = c.benchmark_group("validate_and_plan");
    group.sample_size(20);
    group.bench_function("10k_steps", |b| {
        b.iter(|| runbook_core::check(std::hint::black_box(&text), Some("big")))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
