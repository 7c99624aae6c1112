//! The dependency graph: cycle detection at load time, levels, selection, and its renderings.
//!
//! Edges run from a dependency to its dependent, i.e. in startup order. A [`Graph`] is only
//! built from a validated [`Config`], which is free of cycles, so building never fails.

use std::collections::HashMap;
use std::fmt::Write as _;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Dfs, Reversed};
use serde::Serialize;

use crate::config::{Condition, Config, Node, NodeKind, Problem, did_you_mean};

/// The startup graph of a configuration. Node `i` of the graph is `config.nodes[i]`.
#[derive(Debug, Clone)]
pub struct Graph {
    inner: DiGraph<(), Condition>,
    /// Topological order (dependencies before dependents).
    order: Vec<usize>,
    /// Longest dependency chain below each node.
    levels: Vec<usize>,
    /// Longest chain of dependents above each node: the work still behind it.
    heights: Vec<usize>,
}

/// A node named on the command line that the configuration does not declare.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("no service or component is named `{name}`")]
#[diagnostic(code(dagstart::unknown_node))]
pub struct UnknownNode {
    pub name: String,
    #[help]
    pub help: Option<String>,
}

impl Graph {
    /// Builds the graph of a validated configuration (no unknown dependencies, no cycles).
    pub fn build(config: &Config) -> Self {
        let mut inner = DiGraph::with_capacity(config.nodes.len(), config.nodes.len() * 4);
        for _ in &config.nodes {
            inner.add_node(());
        }
        for (i, node) in config.nodes.iter().enumerate() {
            for dep in &node.depends_on {
                inner.add_edge(NodeIndex::new(dep.node), NodeIndex::new(i), dep.condition);
            }
        }
        let order: Vec<usize> = petgraph::algo::toposort(&inner, None)
            .expect("a validated configuration has no cycles")
            .into_iter()
            .map(NodeIndex::index)
            .collect();
        let mut levels = vec![0; config.nodes.len()];
        for &n in &order {
            let level = inner
                .neighbors_directed(NodeIndex::new(n), petgraph::Direction::Incoming)
                .map(|d| levels[d.index()] + 1)
                .max()
                .unwrap_or(0);
            levels[n] = level;
        }
        let mut heights = vec![0; config.nodes.len()];
        for &n in order.iter().rev() {
            heights[n] = inner
                .neighbors_directed(NodeIndex::new(n), petgraph::Direction::Outgoing)
                .map(|d| heights[d.index()] + 1)
                .max()
                .unwrap_or(0);
        }
        Self {
            inner,
            order,
            levels,
            heights,
        }
    }

    pub fn len(&self) -> usize {
        self.levels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// Dependencies before dependents.
    pub fn topological_order(&self) -> &[usize] {
        &self.order
    }

    pub fn level(&self, node: usize) -> usize {
        self.levels[node]
    }

    /// The longest chain of nodes that wait, directly or not, for `node`.
    pub fn height(&self, node: usize) -> usize {
        self.heights[node]
    }

    /// Number of levels: 0 for an empty graph, 1 when nothing depends on anything.
    pub fn depth(&self) -> usize {
        self.levels.iter().max().map_or(0, |m| m + 1)
    }

    /// The nodes `node` waits for, with the condition of each.
    pub fn dependencies(&self, node: usize) -> impl Iterator<Item = (usize, Condition)> + '_ {
        self.inner
            .edges_directed(NodeIndex::new(node), petgraph::Direction::Incoming)
            .map(|e| (petgraph::visit::EdgeRef::source(&e).index(), *e.weight()))
    }

    /// The nodes that wait for `node`.
    pub fn dependents(&self, node: usize) -> impl Iterator<Item = usize> + '_ {
        self.inner
            .neighbors_directed(NodeIndex::new(node), petgraph::Direction::Outgoing)
            .map(NodeIndex::index)
    }

    /// The named nodes and everything they need; all nodes when `names` is empty.
    pub fn select(&self, config: &Config, names: &[String]) -> Result<Vec<bool>, UnknownNode> {
        if names.is_empty() {
            return Ok(vec![true; self.len()]);
        }
        let index = name_index(&config.nodes);
        let mut selected = vec![false; self.len()];
        let reversed = Reversed(&self.inner);
        for name in names {
            let Some(&start) = index.get(name.as_str()) else {
                let suggestion = did_you_mean(name, config.nodes.iter().map(|n| n.name.as_str()));
                return Err(UnknownNode {
                    name: name.clone(),
                    help: suggestion.map(|s| format!("did you mean `{s}`?")),
                });
            };
            let mut dfs = Dfs::new(reversed, NodeIndex::new(start));
            while let Some(n) = dfs.next(reversed) {
                selected[n.index()] = true;
            }
        }
        Ok(selected)
    }
}

fn name_index(nodes: &[Node]) -> HashMap<&str, usize> {
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect()
}

/// One problem per dependency cycle, naming the whole path and labelling each edge.
pub(crate) fn cycle_problems(nodes: &[Node]) -> Vec<Problem> {
    let mut graph: DiGraph<(), usize> = DiGraph::with_capacity(nodes.len(), nodes.len());
    for _ in nodes {
        graph.add_node(());
    }
    for (i, node) in nodes.iter().enumerate() {
        for (k, dep) in node.depends_on.iter().enumerate() {
            // Edge node -> dependency, weighted by the entry's position in depends_on.
            graph.add_edge(NodeIndex::new(i), NodeIndex::new(dep.node), k);
        }
    }
    let mut problems = Vec::new();
    for component in tarjan_scc(&graph) {
        if component.len() < 2 {
            continue;
        }
        let path = cycle_through(&graph, &component);
        let names: Vec<&str> = path.iter().map(|&(n, _)| nodes[n].name.as_str()).collect();
        let mut problem = Problem::error(
            "dagstart::config::cycle",
            format!("dependency cycle: {} -> {}", names.join(" -> "), names[0]),
        )
        .help("a cycle can never start; remove one of these dependencies");
        for (i, &(n, entry)) in path.iter().enumerate() {
            let next = names[(i + 1) % names.len()];
            problem = problem.label(
                nodes[n].depends_on[entry].span.clone(),
                format!("`{}` waits for `{next}`", nodes[n].name),
            );
        }
        problems.push(problem);
    }
    problems
}

/// A cycle inside a strongly connected component: each step is (node, depends_on entry).
fn cycle_through(graph: &DiGraph<(), usize>, component: &[NodeIndex]) -> Vec<(usize, usize)> {
    let inside: std::collections::HashSet<NodeIndex> = component.iter().copied().collect();
    let start = *component.iter().min().expect("non-empty component");
    // Breadth-first search back to `start` gives the shortest cycle through it.
    let mut came_from: HashMap<NodeIndex, (NodeIndex, usize)> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(n) = queue.pop_front() {
        for edge in graph.edges(n) {
            let target = petgraph::visit::EdgeRef::target(&edge);
            if !inside.contains(&target) || came_from.contains_key(&target) {
                continue;
            }
            came_from.insert(target, (n, *edge.weight()));
            if target == start {
                queue.clear();
                break;
            }
            queue.push_back(target);
        }
    }
    let mut path = Vec::new();
    let mut at = start;
    loop {
        let (prev, entry) = came_from[&at];
        path.push((prev.index(), entry));
        at = prev;
        if at == start {
            break;
        }
    }
    path.reverse();
    path
}

// ----- renderings --------------------------------------------------------------------------------

/// `dagstart graph --format json`: every node with its level and its dependencies.
#[derive(Debug, Serialize)]
pub struct JsonGraph<'a> {
    pub depth: usize,
    pub nodes: Vec<JsonNode<'a>>,
}

#[derive(Debug, Serialize)]
pub struct JsonNode<'a> {
    pub name: &'a str,
    pub kind: NodeKind,
    pub level: usize,
    pub required: bool,
    pub depends_on: Vec<JsonDependency<'a>>,
}

#[derive(Debug, Serialize)]
pub struct JsonDependency<'a> {
    pub name: &'a str,
    pub condition: Condition,
}

/// The selected nodes, ordered by level and then by position in the file.
fn ordered(graph: &Graph, selected: &[bool]) -> Vec<usize> {
    let mut nodes: Vec<usize> = (0..graph.len()).filter(|&i| selected[i]).collect();
    nodes.sort_by_key(|&i| (graph.level(i), i));
    nodes
}

fn sorted_dependencies(graph: &Graph, node: usize) -> Vec<(usize, Condition)> {
    let mut deps: Vec<_> = graph.dependencies(node).collect();
    deps.sort_unstable();
    deps
}

pub fn render_json(config: &Config, graph: &Graph, selected: &[bool]) -> String {
    let nodes: Vec<JsonNode> = ordered(graph, selected)
        .into_iter()
        .map(|i| {
            let node = &config.nodes[i];
            JsonNode {
                name: &node.name,
                kind: node.kind,
                level: graph.level(i),
                required: node.required,
                depends_on: sorted_dependencies(graph, i)
                    .into_iter()
                    .map(|(d, condition)| JsonDependency {
                        name: &config.nodes[d].name,
                        condition,
                    })
                    .collect(),
            }
        })
        .collect();
    let depth = nodes.iter().map(|n| n.level + 1).max().unwrap_or(0);
    serde_json::to_string_pretty(&JsonGraph { depth, nodes }).expect("graph serializes")
}

/// " 1.02s *" for a node of a recorded run: its start time, and a star on the critical path.
fn timing_note(timings: Option<&crate::report::RecordedRun>, name: &str) -> String {
    let Some(run) = timings else {
        return String::new();
    };
    let took = run
        .timings
        .get(name)
        .and_then(|t| t.took)
        .map_or_else(|| "-".to_owned(), |ms| format!("{:.2}s", ms / 1000.0));
    let star = if run.critical_path.iter().any(|n| n == name) {
        " *"
    } else {
        ""
    };
    format!("  {took}{star}")
}

pub fn render_text(
    config: &Config,
    graph: &Graph,
    selected: &[bool],
    timings: Option<&crate::report::RecordedRun>,
) -> String {
    let nodes = ordered(graph, selected);
    let width = nodes
        .iter()
        .map(|&i| config.nodes[i].name.len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    let mut current_level = None;
    for i in nodes {
        let node = &config.nodes[i];
        let level = graph.level(i);
        if current_level != Some(level) {
            let _ = writeln!(out, "level {level}");
            current_level = Some(level);
        }
        let kind = if node.required {
            node.kind.as_str().to_owned()
        } else {
            format!("{} (optional)", node.kind.as_str())
        };
        let deps: Vec<String> = sorted_dependencies(graph, i)
            .into_iter()
            .map(|(d, c)| format!("{} ({})", config.nodes[d].name, c.as_str()))
            .collect();
        let line = if deps.is_empty() {
            format!("  {:width$}  {kind}", node.name)
        } else {
            format!("  {:width$}  {kind:<20}  <- {}", node.name, deps.join(", "))
        };
        let _ = writeln!(
            out,
            "{}{}",
            line.trim_end(),
            timing_note(timings, &node.name)
        );
    }
    if timings.is_some() {
        out.push_str("(start times of the last run; * marks its critical path)\n");
    }
    out
}

pub fn render_dot(
    config: &Config,
    graph: &Graph,
    selected: &[bool],
    timings: Option<&crate::report::RecordedRun>,
) -> String {
    let critical = |name: &str| timings.is_some_and(|t| t.critical_path.iter().any(|n| n == name));
    let mut out = String::from("digraph dagstart {\n  rankdir=LR;\n");
    let nodes = ordered(graph, selected);
    for &i in &nodes {
        let node = &config.nodes[i];
        let shape = match node.kind {
            NodeKind::Service => "ellipse",
            NodeKind::Component => "box",
        };
        let style = if node.required { "solid" } else { "dashed" };
        let note = timing_note(timings, &node.name);
        let colour = if critical(&node.name) {
            ", color=red, penwidth=2"
        } else {
            ""
        };
        let label = format!(
            "{}{}",
            node.name,
            note.replace(" *", "").replace("  ", "\\n")
        );
        let _ = writeln!(
            out,
            "  \"{}\" [label=\"{label}\", shape={shape}, style={style}{colour}];",
            node.name
        );
    }
    for &i in &nodes {
        for (d, c) in sorted_dependencies(graph, i) {
            let (from, to) = (&config.nodes[d].name, &config.nodes[i].name);
            let colour = if critical(from) && critical(to) {
                ", color=red, penwidth=2"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  \"{from}\" -> \"{to}\" [label=\"{}\"{colour}];",
                c.as_str()
            );
        }
    }
    out.push_str("}\n");
    out
}

pub fn render_mermaid(config: &Config, graph: &Graph, selected: &[bool]) -> String {
    let mut out = String::from("flowchart LR\n");
    let nodes = ordered(graph, selected);
    for &i in &nodes {
        let node = &config.nodes[i];
        let _ = match node.kind {
            NodeKind::Service => writeln!(out, "  {0}([{0}])", node.name),
            NodeKind::Component => writeln!(out, "  {0}[{0}]", node.name),
        };
    }
    for &i in &nodes {
        for (d, c) in sorted_dependencies(graph, i) {
            let _ = writeln!(
                out,
                "  {} -->|{}| {}",
                config.nodes[d].name,
                c.as_str(),
                config.nodes[i].name
            );
        }
    }
    out
}
