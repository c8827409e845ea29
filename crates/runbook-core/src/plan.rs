//! The plan: a runbook lowered into a DAG of steps.
//!
//! This is the one structure that exec, dry run, graph, diff and test use. Edges follow
//! DESIGN's rule: a step's incoming edges are its explicit `needs` if it has them;
//! otherwise, if it is the target of a branch case, a branch default or an
//! `on_fail: {goto}`, only those routing edges; otherwise an edge from the step above it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

use crate::model::{OnFail, Runbook, StepKind};

/// Why an edge exists, which decides when it is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Edge {
    /// Implicit: the step above in the list. Taken when the source succeeded.
    Next,
    /// Explicit `needs`. Taken when the source succeeded.
    Needs,
    /// Branch case `n` (0-based). Taken when the branch picks it.
    Case(usize),
    /// Branch default. Taken when no case holds.
    Default,
    /// `on_fail: {goto}`. Taken when the source failed.
    FailGoto,
}

/// The step DAG of a runbook. Node `i` is `runbook.steps[i]`.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Steps and edges.
    pub graph: DiGraph<usize, Edge>,
    /// Topological order; among ready steps, list order first.
    pub order: Vec<usize>,
    /// Steps with no incoming edges.
    pub roots: Vec<usize>,
    /// Position of each step in `order`.
    pub position: Vec<usize>,
    /// For each step, the steps whose values its templates and conditions read
    /// (`steps.<id>...`), sorted; every step for one that reads `steps` whole. Filled by
    /// the validator from the analyses it made anyway; the executor passes a step only
    /// these values and starts it only once they are resolved.
    pub reads: Vec<Vec<usize>>,
    ids: HashMap<String, usize>,
}

/// The steps that form a cycle, in edge order (the first is repeated implicitly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CycleError {
    /// Step indices around the cycle.
    pub steps: Vec<usize>,
}

impl Plan {
    /// Lower a runbook. References to unknown steps are ignored here (the validator
    /// reports them); a cycle is an error.
    pub fn build(runbook: &Runbook) -> Result<Plan, CycleError> {
        let n = runbook.steps.len();
        let mut ids = HashMap::with_capacity(n);
        for (i, s) in runbook.steps.iter().enumerate() {
            ids.entry(s.id.value.clone()).or_insert(i);
        }
        let mut graph = DiGraph::with_capacity(n, n + n / 4);
        for i in 0..n {
            graph.add_node(i);
        }
        let mut routed = vec![false; n];
        for (i, s) in runbook.steps.iter().enumerate() {
            for (k, case) in s.cases.iter().enumerate() {
                if let Some(&t) = ids.get(case.goto.as_str()) {
                    graph.add_edge(NodeIndex::new(i), NodeIndex::new(t), Edge::Case(k));
                    routed[t] = true;
                }
            }
            if s.kind.value == StepKind::Branch {
                if let Some(&t) = s.default.as_ref().and_then(|d| ids.get(d.as_str())) {
                    graph.add_edge(NodeIndex::new(i), NodeIndex::new(t), Edge::Default);
                    routed[t] = true;
                }
            }
            if let Some(OnFail::Goto { goto }) = s.on_fail.as_deref() {
                if let Some(&t) = ids.get(goto.as_str()) {
                    graph.add_edge(NodeIndex::new(i), NodeIndex::new(t), Edge::FailGoto);
                    routed[t] = true;
                }
            }
        }
        for (i, s) in runbook.steps.iter().enumerate() {
            match &s.needs {
                Some(needs) => {
                    for need in needs {
                        if let Some(&src) = ids.get(need.as_str()) {
                            graph.add_edge(NodeIndex::new(src), NodeIndex::new(i), Edge::Needs);
                        }
                    }
                }
                None if routed[i] || i == 0 => {}
                None => {
                    graph.add_edge(NodeIndex::new(i - 1), NodeIndex::new(i), Edge::Next);
                }
            }
        }

        // Kahn's algorithm with list order as the tie-break, so a plain list reads top to bottom.
        let mut indegree: Vec<usize> = (0..n)
            .map(|i| {
                graph
                    .neighbors_directed(NodeIndex::new(i), Direction::Incoming)
                    .count()
            })
            .collect();
        let roots: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
        let mut ready: BinaryHeap<Reverse<usize>> = roots.iter().map(|&i| Reverse(i)).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(Reverse(i)) = ready.pop() {
            order.push(i);
            for e in graph.edges_directed(NodeIndex::new(i), Direction::Outgoing) {
                let t = e.target().index();
                indegree[t] -= 1;
                if indegree[t] == 0 {
                    ready.push(Reverse(t));
                }
            }
        }
        if order.len() < n {
            return Err(CycleError {
                steps: find_cycle(&graph),
            });
        }
        let mut position = vec![0; n];
        for (pos, &i) in order.iter().enumerate() {
            position[i] = pos;
        }
        let reads = vec![Vec::new(); position.len()];
        Ok(Plan {
            graph,
            order,
            roots,
            position,
            reads,
            ids,
        })
    }

    /// Index of a step by id.
    pub fn index(&self, id: &str) -> Option<usize> {
        self.ids.get(id).copied()
    }

    /// Incoming edges of a step: (source, edge).
    pub fn incoming(&self, step: usize) -> impl Iterator<Item = (usize, Edge)> + '_ {
        self.graph
            .edges_directed(NodeIndex::new(step), Direction::Incoming)
            .map(|e| (e.source().index(), *e.weight()))
    }

    /// Outgoing edges of a step: (target, edge).
    pub fn outgoing(&self, step: usize) -> impl Iterator<Item = (usize, Edge)> + '_ {
        self.graph
            .edges_directed(NodeIndex::new(step), Direction::Outgoing)
            .map(|e| (e.target().index(), *e.weight()))
    }

    /// `from` and every step reachable from it, as a mask over the steps.
    pub fn downstream(&self, from: usize) -> Vec<bool> {
        let mut seen = vec![false; self.order.len()];
        let mut stack = vec![from];
        while let Some(i) = stack.pop() {
            if !std::mem::replace(&mut seen[i], true) {
                stack.extend(self.outgoing(i).map(|(t, _)| t));
            }
        }
        seen
    }

    /// Whether `ancestor` has a path to `step` (a step is not its own ancestor).
    pub fn is_ancestor(&self, ancestor: usize, step: usize) -> bool {
        if ancestor == step || self.position[ancestor] >= self.position[step] {
            return false;
        }
        // Only steps between the two in topological order can be on a path: the search
        // is bounded by that window, which is usually a step or two.
        let floor = self.position[ancestor];
        let mut seen = vec![false; self.position[step] - floor];
        let mut stack = vec![step];
        while let Some(s) = stack.pop() {
            for (src, _) in self.incoming(s) {
                if src == ancestor {
                    return true;
                }
                let pos = self.position[src];
                if pos > floor && !std::mem::replace(&mut seen[pos - floor], true) {
                    stack.push(src);
                }
            }
        }
        false
    }

    /// Which steps can run at all, assuming any check may succeed or fail and any branch
    /// may pick any of its routes. A step that needs a branch without being one of its
    /// targets can never run through that edge.
    pub fn reachable(&self, runbook: &Runbook) -> Vec<bool> {
        let mut can = vec![false; self.order.len()];
        for &i in &self.order {
            let mut incoming = self.incoming(i).peekable();
            if incoming.peek().is_none() {
                can[i] = true;
                continue;
            }
            can[i] = incoming.any(|(src, edge)| can[src] && edge_can_be_taken(runbook, src, edge));
        }
        can
    }

    /// Steps that are skipped when `branch` takes the route `edge` (a case or the
    /// default), assuming every other step succeeds and every other branch may go
    /// anywhere. Used by `plan` and `show` to say what each decision leaves out.
    pub fn skipped_when(&self, runbook: &Runbook, branch: usize, chosen: Edge) -> Vec<usize> {
        let mut runs = vec![true; self.order.len()];
        let start = self.position[branch];
        for &i in &self.order[start + 1..] {
            let mut incoming = self.incoming(i).peekable();
            if incoming.peek().is_none() {
                continue;
            }
            runs[i] = incoming.any(|(src, edge)| {
                runs[src]
                    && if src == branch {
                        edge == chosen
                    } else {
                        edge_can_be_taken(runbook, src, edge) && edge != Edge::FailGoto
                    }
            });
        }
        self.order[start + 1..]
            .iter()
            .copied()
            .filter(|&i| !runs[i])
            .collect()
    }
}

fn edge_can_be_taken(runbook: &Runbook, src: usize, edge: Edge) -> bool {
    let is_branch = runbook.steps[src].kind.value == StepKind::Branch;
    match edge {
        Edge::Next | Edge::Needs => !is_branch,
        Edge::Case(_) | Edge::Default | Edge::FailGoto => true,
    }
}

/// A shortest cycle through the lowest-numbered step of the first cyclic component.
fn find_cycle(graph: &DiGraph<usize, Edge>) -> Vec<usize> {
    let sccs = petgraph::algo::tarjan_scc(graph);
    let component = sccs
        .into_iter()
        .filter(|c| c.len() > 1 || graph.contains_edge(c[0], c[0]))
        .min_by_key(|c| c.iter().map(|n| n.index()).min())
        .unwrap_or_default();
    let Some(&start) = component.iter().min_by_key(|n| n.index()) else {
        return Vec::new();
    };
    let in_component: std::collections::HashSet<NodeIndex> = component.iter().copied().collect();
    // BFS from start back to start inside the component.
    let mut prev: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(n) = queue.pop_front() {
        for next in graph.neighbors_directed(n, Direction::Outgoing) {
            if next == start {
                let mut path = vec![n.index()];
                let mut cur = n;
                while let Some(&p) = prev.get(&cur) {
                    path.push(p.index());
                    cur = p;
                }
                path.reverse();
                return path;
            }
            if in_component.contains(&next) && !prev.contains_key(&next) && next != start {
                prev.insert(next, n);
                queue.push_back(next);
            }
        }
    }
    vec![start.index()]
}
