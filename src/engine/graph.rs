//! The dependency graph: cycle detection at load time, levels, heights, selection.
//! Its renderings (`dagstart graph`) are a view: [`crate::views::graph_render`].
//!
//! Edges run from a dependency to its dependent, i.e. in startup order. A [`Graph`] is only
//! built from a validated [`Config`], which is free of cycles, so building never fails.

use std::collections::HashMap;

use petgraph::algo::kosaraju_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Dfs, Reversed};

use crate::engine::config::{Condition, Config, Edge, Node, NodeKind, Problem, did_you_mean};

/// The startup graph of a configuration. Node `i` of the graph is `config.nodes[i]`.
#[derive(Debug, Clone)]
pub struct Graph {
    inner: DiGraph<(), Edge>,
    /// Topological order (dependencies before dependents).
    order: Vec<usize>,
    /// Longest dependency chain below each node.
    levels: Vec<usize>,
    /// Longest chain of dependents above each node: the work still behind it.
    heights: Vec<usize>,
    /// Whether something may start on top of each node while it is down (see
    /// [`Graph::open_above`]).
    open_above: Vec<bool>,
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
    /// The order, levels and heights are computed on plain vectors; the petgraph serves the
    /// queries afterwards.
    pub fn build(config: &Config) -> Self {
        let nodes = &config.nodes;
        let mut inner = DiGraph::with_capacity(nodes.len(), nodes.len() * 4);
        for _ in nodes {
            inner.add_node(());
        }
        for (i, node) in nodes.iter().enumerate() {
            for dep in &node.depends_on {
                inner.add_edge(NodeIndex::new(dep.node), NodeIndex::new(i), dep.edge());
            }
        }
        let levels = levels(nodes).expect("a validated configuration has no cycles");
        let dependents = Dependents::of_nodes(nodes);
        let order = depth_first_order(&dependents);
        let mut heights = vec![0; nodes.len()];
        let mut open_above = vec![false; nodes.len()];
        for &n in order.iter().rev() {
            let above = dependents.of(n);
            heights[n] = above
                .iter()
                .map(|&(d, _)| heights[d] + 1)
                .max()
                .unwrap_or(0);
            open_above[n] =
                above
                    .iter()
                    .filter(|(_, edge)| edge.orders_stop())
                    .any(|&(d, edge)| {
                        !edge.binds()
                            || edge.condition == Condition::Listening
                            || nodes[d].kind == NodeKind::Component
                            || open_above[d]
                    });
        }
        Self {
            inner,
            order,
            levels,
            heights,
            open_above,
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

    /// Whether a node may start on top of `node` while it is down (so the stop order cannot
    /// take "down, stopped after its dependents" to mean "nothing above it runs"): somewhere
    /// among its dependents lies an optional edge, a `listening` edge (met while the
    /// dependency waits) or a component (once completed, it satisfies its dependents whatever
    /// happens below it).
    pub fn open_above(&self, node: usize) -> bool {
        self.open_above[node]
    }

    /// Number of levels: 0 for an empty graph, 1 when nothing depends on anything.
    pub fn depth(&self) -> usize {
        self.levels.iter().max().map_or(0, |m| m + 1)
    }

    /// The nodes `node` waits for, with the edge to each (its condition and kind).
    pub fn dependencies(&self, node: usize) -> impl Iterator<Item = (usize, Edge)> + '_ {
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

    /// The nodes that wait for `node`, with the edge from each.
    pub fn dependent_edges(&self, node: usize) -> impl Iterator<Item = (usize, Edge)> + '_ {
        self.inner
            .edges_directed(NodeIndex::new(node), petgraph::Direction::Outgoing)
            .map(|e| (petgraph::visit::EdgeRef::target(&e).index(), *e.weight()))
    }

    /// `targets` and every node that cannot run without them, directly or not (over
    /// [`Edge::binds`] edges), in no order: what a stop or a restart of them takes along.
    pub fn with_bound_dependents(&self, targets: &[usize]) -> Vec<usize> {
        let mut seen = vec![false; self.len()];
        let mut out = Vec::new();
        let mut stack = targets.to_vec();
        while let Some(n) = stack.pop() {
            if std::mem::replace(&mut seen[n], true) {
                continue;
            }
            out.push(n);
            stack.extend(self.bound_dependents(n));
        }
        out
    }

    /// The nodes that cannot run without `node` (over [`Edge::binds`] edges).
    pub fn bound_dependents(&self, node: usize) -> impl Iterator<Item = usize> + '_ {
        self.dependent_edges(node)
            .filter(|(_, e)| e.binds())
            .map(|(d, _)| d)
    }

    /// The named nodes and everything they depend on, directly or not, over every kind of edge
    /// (systemd's `Wants=` pulls in as `Requires=` does); all nodes when `names` is empty.
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
    if is_acyclic(nodes) {
        return Vec::new();
    }
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
    for component in kosaraju_scc(&graph) {
        if component.len() < 2 {
            continue;
        }
        let path = cycle_through(&graph, &component);
        let names: Vec<&str> = path.iter().map(|&(n, _)| nodes[n].name.as_str()).collect();
        let mut problem = Problem::error(
            "dagstart::config::cycle",
            format!("dependency cycle: {} -> {}", cycle_text(&names), names[0]),
        )
        .help("a cycle can never start; remove one of these dependencies");
        // A cycle through thousands of nodes is labelled where it starts; the message says
        // how long it is.
        for (i, &(n, entry)) in path.iter().enumerate().take(CYCLE_LABELS) {
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

/// Each node's dependents, with the edge from each, in the order the edges are added to the
/// petgraph (node order, then `depends_on` order): one vector, sliced per node.
struct Dependents {
    start: Vec<usize>,
    entries: Vec<(usize, Edge)>,
}

impl Dependents {
    fn of_nodes(nodes: &[Node]) -> Self {
        let mut start = vec![0usize; nodes.len() + 1];
        for node in nodes {
            for dep in &node.depends_on {
                start[dep.node + 1] += 1;
            }
        }
        for i in 0..nodes.len() {
            start[i + 1] += start[i];
        }
        // Every slot is written below; the first edge only fills them until then.
        let first = nodes.iter().find_map(|n| n.depends_on.first());
        let Some(filler) = first.map(|dep| (0, dep.edge())) else {
            return Self {
                start,
                entries: Vec::new(),
            };
        };
        let mut next_slot = start.clone();
        let mut entries = vec![filler; start[nodes.len()]];
        for (i, node) in nodes.iter().enumerate() {
            for dep in &node.depends_on {
                entries[next_slot[dep.node]] = (i, dep.edge());
                next_slot[dep.node] += 1;
            }
        }
        Self { start, entries }
    }

    fn len(&self) -> usize {
        self.start.len() - 1
    }

    fn of(&self, node: usize) -> &[(usize, Edge)] {
        &self.entries[self.start[node]..self.start[node + 1]]
    }
}

/// The order of `petgraph::algo::toposort` (a depth-first search from each node in index
/// order, the last-added edge first, as petgraph keeps them), without the second search it
/// makes for cycles: a validated configuration has none (and [`levels`] has just found
/// none), and that search was a sixth of building the graph of 100,000 nodes.
fn depth_first_order(dependents: &Dependents) -> Vec<usize> {
    let len = dependents.len();
    let (mut discovered, mut finished) = (vec![false; len], vec![false; len]);
    let mut order = Vec::with_capacity(len);
    let mut stack = Vec::new();
    for root in 0..len {
        if discovered[root] {
            continue;
        }
        stack.push(root);
        while let Some(&n) = stack.last() {
            if !std::mem::replace(&mut discovered[n], true) {
                let above = dependents.of(n).iter().rev();
                stack.extend(above.map(|&(d, _)| d).filter(|&d| !discovered[d]));
            } else {
                stack.pop();
                if !std::mem::replace(&mut finished[n], true) {
                    order.push(n);
                }
            }
        }
    }
    order.reverse();
    order
}

/// Whether the resolved dependencies form no cycle. The common case (a valid file) costs no
/// graph and no SCC search.
fn is_acyclic(nodes: &[Node]) -> bool {
    levels(nodes).is_some()
}

/// The number of levels of a validated configuration's graph, [`Graph::depth`] without
/// building the graph (`check` needs nothing else of it: 100,000 nodes, 15 ms instead of 150).
pub fn depth(nodes: &[Node]) -> usize {
    levels(nodes).map_or(0, |levels| levels.iter().max().map_or(0, |m| m + 1))
}

/// Each node's longest dependency chain below it, or `None` if the dependencies form a cycle.
/// A depth-first walk down `depends_on`: a node's level is final once its dependencies' are,
/// and a dependency met again on the walk's own path closes a cycle. It needs no table of
/// dependents (building one was most of the time of a Kahn pass: 100,000 nodes, 25 of 40 ms).
fn levels(nodes: &[Node]) -> Option<Vec<usize>> {
    const UNSEEN: usize = usize::MAX;
    const ON_PATH: usize = usize::MAX - 1;
    let mut levels = vec![UNSEEN; nodes.len()];
    // Each node on the path, with how many of its dependencies were walked into.
    let mut path: Vec<(usize, usize)> = Vec::new();
    for root in 0..nodes.len() {
        if levels[root] != UNSEEN {
            continue;
        }
        levels[root] = ON_PATH;
        path.push((root, 0));
        while let Some((node, walked)) = path.last_mut() {
            let dependencies = &nodes[*node].depends_on;
            if let Some(dep) = dependencies.get(*walked) {
                *walked += 1;
                match levels[dep.node] {
                    ON_PATH => return None,
                    UNSEEN => {
                        levels[dep.node] = ON_PATH;
                        path.push((dep.node, 0));
                    }
                    _ => {}
                }
                continue;
            }
            let node = *node;
            levels[node] = dependencies
                .iter()
                .map(|dep| levels[dep.node] + 1)
                .max()
                .unwrap_or(0);
            path.pop();
        }
    }
    Some(levels)
}

/// Edges of a cycle labelled at most, and nodes of it named in its message at most.
const CYCLE_LABELS: usize = 20;

/// The nodes of a cycle, first to last, shortened in the middle when there are many.
fn cycle_text(names: &[&str]) -> String {
    if names.len() <= 2 * CYCLE_LABELS {
        return names.join(" -> ");
    }
    format!(
        "{} -> ... ({} more) ... -> {}",
        names[..CYCLE_LABELS].join(" -> "),
        names.len() - 2 * CYCLE_LABELS,
        names[names.len() - CYCLE_LABELS..].join(" -> ")
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::config::{Environment, load_str};
    use petgraph::visit::EdgeRef as _;

    fn load(text: String) -> Config {
        load_str(
            std::path::Path::new("s.toml"),
            text,
            &Environment::default(),
        )
        .unwrap_or_else(|e| panic!("{:?}\n{}", e.problems, e.file.inner()))
    }

    /// A random DAG whose edges run both ways in file order, with components and every kind
    /// of edge dagstart can build without sockets.
    fn random_config(seed: u64) -> Config {
        let mut rng = crate::synth::Rng::new(seed + 1);
        let mut next = |n: usize| rng.below(n);
        let len = 1 + next(80);
        let rank: Vec<usize> = (0..len).map(|_| next(1000)).collect();
        let kinds = [
            "\"healthy\"",
            "\"started\"",
            "{ required = false }",
            "{ restart = true }",
            "{ milestone = true }",
        ];
        let mut text = String::new();
        for i in 0..len {
            let section = if i % 5 == 4 { "components" } else { "services" };
            text.push_str(&format!("[{section}.n{i}]\ncommand = \"true\"\n"));
            let mut deps = Vec::new();
            for _ in 0..next(5) {
                let d = next(len);
                if (rank[d], d) < (rank[i], i) && !deps.contains(&d) {
                    deps.push(d);
                }
            }
            let entries: Vec<String> = deps
                .iter()
                .map(|d| {
                    let kind = if d % 5 == 4 {
                        "{ required = false }"
                    } else {
                        kinds[next(kinds.len())]
                    };
                    format!("n{d} = {kind}")
                })
                .collect();
            text.push_str(&format!("depends_on = {{ {} }}\n", entries.join(", ")));
        }
        load(text)
    }

    /// The order, levels, heights and open-above marks computed on vectors are those the
    /// petgraph gives (its toposort, and the walks over its adjacency lists), on random graphs.
    #[test]
    fn the_graph_on_vectors_is_the_petgraph_one() {
        for seed in 0..300 {
            let config = random_config(seed);
            let graph = Graph::build(&config);
            let inner = &graph.inner;
            let order: Vec<usize> = petgraph::algo::toposort(inner, None)
                .expect("acyclic")
                .into_iter()
                .map(NodeIndex::index)
                .collect();
            assert_eq!(graph.order, order, "seed {seed}");
            let incoming = |n: usize| {
                inner.neighbors_directed(NodeIndex::new(n), petgraph::Direction::Incoming)
            };
            let mut heights = vec![0; graph.len()];
            let mut open_above = vec![false; graph.len()];
            for &n in order.iter().rev() {
                let out = || inner.edges_directed(NodeIndex::new(n), petgraph::Direction::Outgoing);
                heights[n] = out()
                    .map(|e| heights[e.target().index()] + 1)
                    .max()
                    .unwrap_or(0);
                open_above[n] = out().filter(|e| e.weight().orders_stop()).any(|e| {
                    let d = e.target().index();
                    !e.weight().binds()
                        || e.weight().condition == Condition::Listening
                        || config.nodes[d].kind == NodeKind::Component
                        || open_above[d]
                });
                let level = incoming(n)
                    .map(|d| graph.level(d.index()) + 1)
                    .max()
                    .unwrap_or(0);
                assert_eq!(graph.level(n), level, "seed {seed}");
            }
            assert_eq!(graph.heights, heights, "seed {seed}");
            assert_eq!(graph.open_above, open_above, "seed {seed}");
            assert_eq!(depth(&config.nodes), graph.depth(), "seed {seed}");
        }
        assert_eq!(depth(&[]), 0);
    }
}
