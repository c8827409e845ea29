//! The plan as a mermaid flowchart or a graphviz digraph, phases as subgraphs
//! (clusters): `runbook graph`, and the mermaid form in `show --format markdown` and
//! `diff`.

use runbook_core::model::{Phase, Runbook, Step, StepKind};
use runbook_core::plan::{Edge, Plan};
use serde_json::Value;

/// A step's title as people read it in `show` and `graph`: templates that read only
/// parameters with defaults are rendered with those defaults; otherwise the template is
/// shown as written (`{{params.db}}` stays visibly a placeholder).
pub(crate) fn shown_title(rb: &Runbook, step: &runbook_core::model::Step) -> String {
    let title = &step.title.value;
    if !title.contains("{{") {
        return title.clone();
    }
    let defaults: serde_json::Map<String, Value> = rb
        .params
        .iter()
        .filter_map(|(k, p)| Some((k.clone(), p.default.as_ref()?.value.clone())))
        .collect();
    runbook_core::template::Renderer::new()
        .render(
            runbook_core::template::Context::Text,
            &step.title,
            &serde_json::json!({ "params": defaults }),
        )
        .unwrap_or_else(|_| title.clone())
}

/// One edge of a drawn graph: at most one per pair of steps (a step that is both a
/// branch's route and in `needs` of its target is drawn once, with the route's label).
struct GraphEdge {
    to: usize,
    label: Option<String>,
    on_failure: bool,
}

fn graph_edges(rb: &Runbook, plan: &Plan, src: usize) -> Vec<GraphEdge> {
    let mut edges: Vec<(usize, Edge)> = plan.outgoing(src).collect();
    edges.sort_by_key(|(t, e)| (plan.position[*t], format!("{e:?}")));
    let mut out: Vec<GraphEdge> = Vec::new();
    for (t, e) in edges {
        let label = edge_label(rb, src, e);
        match out.iter_mut().find(|g| g.to == t) {
            Some(g) => {
                g.on_failure &= e == Edge::FailGoto;
                g.label = match (g.label.take(), label) {
                    (Some(a), Some(b)) => Some(format!("{a} or {b}")),
                    (a, b) => a.or(b),
                };
            }
            None => out.push(GraphEdge {
                to: t,
                label,
                on_failure: e == Edge::FailGoto,
            }),
        }
    }
    out
}

fn edge_label(rb: &Runbook, src: usize, edge: Edge) -> Option<String> {
    match edge {
        Edge::Next | Edge::Needs => None,
        // Cases are tried in order: the number says which come first.
        Edge::Case(k) => Some(format!("{}. {}", k + 1, rb.steps[src].cases[k].when.value)),
        Edge::Default => Some("otherwise".into()),
        Edge::FailGoto => Some("on failure".into()),
    }
}

/// Steps in plan order, grouped by phase (in `phases` order), steps of no phase last.
pub(crate) fn by_phase<'a>(rb: &'a Runbook, plan: &Plan) -> Vec<(Option<&'a Phase>, Vec<usize>)> {
    let in_phase = |i: usize, ph: Option<&Phase>| {
        rb.steps[i].phase.as_ref().map(|p| p.value.as_str()) == ph.map(|ph| ph.id.value.as_str())
    };
    rb.phases
        .iter()
        .map(Some)
        .chain(std::iter::once(None))
        .map(|ph| {
            let steps = plan
                .order
                .iter()
                .copied()
                .filter(|&i| in_phase(i, ph))
                .collect::<Vec<_>>();
            (ph, steps)
        })
        .filter(|(_, steps)| !steps.is_empty())
        .collect()
}

pub(crate) fn mermaid_text(s: &str) -> String {
    s.replace('&', "#amp;")
        .replace('"', "#quot;")
        .replace('<', "#lt;")
        .replace('|', "#124;")
        .replace('>', "#gt;")
        .replace('\n', " ")
}

/// How one graph language writes the parts of a plan. [`render`] walks the plan once
/// (phases as groups, then the edges) and asks the syntax for each part.
struct Syntax {
    header: fn(&Runbook) -> String,
    phase_open: fn(&Phase) -> String,
    phase_close: &'static str,
    node: fn(&Runbook, &Step) -> String,
    edge: fn(from: &str, to: &str, label: Option<String>, on_failure: bool) -> String,
    footer: &'static str,
}

fn render(rb: &Runbook, plan: &Plan, syntax: &Syntax) -> String {
    let mut o = (syntax.header)(rb);
    for (phase, steps) in by_phase(rb, plan) {
        let indent = match phase {
            Some(ph) => {
                o.push_str(&(syntax.phase_open)(ph));
                "        "
            }
            None => "    ",
        };
        for i in steps {
            o.push_str(indent);
            o.push_str(&(syntax.node)(rb, &rb.steps[i]));
        }
        if phase.is_some() {
            o.push_str(syntax.phase_close);
        }
    }
    for &i in &plan.order {
        for GraphEdge {
            to,
            label,
            on_failure,
        } in graph_edges(rb, plan, i)
        {
            o.push_str(&(syntax.edge)(
                &rb.steps[i].id.value,
                &rb.steps[to].id.value,
                label,
                on_failure,
            ));
        }
    }
    o.push_str(syntax.footer);
    o
}

/// A mermaid flowchart: checks are rectangles, acts hexagons, verifies stadiums, branches diamonds.
pub(crate) fn mermaid(rb: &Runbook, plan: &Plan) -> String {
    render(
        rb,
        plan,
        &Syntax {
            header: |_| "flowchart TD\n".into(),
            phase_open: |ph| {
                format!(
                    "    subgraph p_{}[\"{}\"]\n",
                    ph.id.value,
                    mermaid_text(&format!("{} (within {})", ph.title, ph.within.value.text))
                )
            },
            phase_close: "    end\n",
            node: |rb, s| {
                let label = mermaid_text(&format!(
                    "{}: {}",
                    s.kind.value.as_str(),
                    shown_title(rb, s)
                ));
                let (open, close) = match s.kind.value {
                    StepKind::Check => ("[\"", "\"]"),
                    StepKind::Act => ("{{\"", "\"}}"),
                    StepKind::Verify => ("([\"", "\"])"),
                    StepKind::Branch => ("{\"", "\"}"),
                };
                format!("s_{}{open}{label}{close}\n", s.id.value)
            },
            edge: |from, to, label, on_failure| {
                let arrow = if on_failure { "-.->" } else { "-->" };
                match label {
                    Some(l) => format!("    s_{from} {arrow}|\"{}\"| s_{to}\n", mermaid_text(&l)),
                    None => format!("    s_{from} {arrow} s_{to}\n"),
                }
            },
            footer: "",
        },
    )
}

fn dot_text(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A Graphviz digraph with the same shapes as the mermaid output.
pub(crate) fn dot(rb: &Runbook, plan: &Plan) -> String {
    render(
        rb,
        plan,
        &Syntax {
            header: |rb| {
                format!(
                    "digraph \"{}\" {{\n    rankdir=TB;\n    node [fontname=\"Helvetica\"];\n    edge [fontname=\"Helvetica\", fontsize=10];\n",
                    dot_text(&rb.name.value)
                )
            },
            phase_open: |ph| {
                format!(
                    "    subgraph \"cluster_{}\" {{\n        label=\"{}\";\n        style=dashed;\n",
                    ph.id.value,
                    dot_text(&format!("{} (within {})", ph.title, ph.within.value.text))
                )
            },
            phase_close: "    }\n",
            node: |rb, s| {
                let shape = match s.kind.value {
                    StepKind::Check => "shape=box",
                    StepKind::Act => "shape=hexagon, style=bold",
                    StepKind::Verify => "shape=box, style=rounded",
                    StepKind::Branch => "shape=diamond",
                };
                let label = dot_text(&format!(
                    "{}: {}\n({})",
                    s.kind.value.as_str(),
                    shown_title(rb, s),
                    s.id.value
                ));
                format!("\"{}\" [label=\"{label}\", {shape}];\n", s.id.value)
            },
            edge: |from, to, label, on_failure| {
                let style = if on_failure { ", style=dashed" } else { "" };
                let label = label
                    .map(|l| format!(" [label=\"{}\"{style}]", dot_text(&l)))
                    .unwrap_or_default();
                format!("    \"{from}\" -> \"{to}\"{label};\n")
            },
            footer: "}\n",
        },
    )
}
