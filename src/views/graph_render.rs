//! `dagstart graph`: the startup order as text levels, Graphviz dot, Mermaid or JSON, with the
//! timings of the last recorded run when asked for.

use std::fmt::Write as _;

use serde::Serialize;

use crate::engine::config::{Condition, Config, Edge, NodeKind};
use crate::engine::graph::Graph;

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
    /// Runs only with one of these profiles active (empty: always).
    pub profiles: &'a [String],
    pub depends_on: Vec<JsonDependency<'a>>,
}

#[derive(Debug, Serialize)]
pub struct JsonDependency<'a> {
    pub name: &'a str,
    pub condition: Condition,
    /// false: the dependent goes on without it when it fails or is not part of the run.
    pub required: bool,
    /// The dependent restarts when it restarts.
    pub restart: bool,
    /// Needed once to start, then the link is dropped.
    pub milestone: bool,
}

/// The selected nodes, ordered by level and then by position in the file.
fn ordered(graph: &Graph, selected: &[bool]) -> Vec<usize> {
    let mut nodes: Vec<usize> = (0..graph.len()).filter(|&i| selected[i]).collect();
    nodes.sort_by_key(|&i| (graph.level(i), i));
    nodes
}

/// The dependencies of `node` that take part (an optional one of an inactive profile does
/// not), in file order.
fn sorted_dependencies(graph: &Graph, selected: &[bool], node: usize) -> Vec<(usize, Edge)> {
    let mut deps: Vec<_> = graph
        .dependencies(node)
        .filter(|&(d, _)| selected[d])
        .collect();
    deps.sort_unstable();
    deps
}

pub fn render_json(config: &Config, graph: &Graph, selected: &[bool]) -> String {
    let mut text = Vec::new();
    write_json(config, graph, selected, &mut text).expect("a graph serializes into memory");
    String::from_utf8(text).expect("serde_json writes UTF-8")
}

/// [`render_json`] written to `out` as it is made: the JSON of 100,000 nodes is 80 MB, which
/// is not worth holding.
pub fn write_json(
    config: &Config,
    graph: &Graph,
    selected: &[bool],
    out: impl std::io::Write,
) -> std::io::Result<()> {
    let nodes: Vec<JsonNode> = ordered(graph, selected)
        .into_iter()
        .map(|i| {
            let node = &config.nodes[i];
            JsonNode {
                name: &node.name,
                kind: node.kind,
                level: graph.level(i),
                required: node.required,
                profiles: &node.profiles,
                depends_on: sorted_dependencies(graph, selected, i)
                    .into_iter()
                    .map(|(d, edge)| JsonDependency {
                        name: &config.nodes[d].name,
                        condition: edge.condition,
                        required: edge.required,
                        restart: edge.restart,
                        milestone: edge.milestone,
                    })
                    .collect(),
            }
        })
        .collect();
    let depth = nodes.iter().map(|n| n.level + 1).max().unwrap_or(0);
    serde_json::to_writer_pretty(out, &JsonGraph { depth, nodes })?;
    Ok(())
}

/// "healthy" for a plain dependency, "healthy, optional, restart" for one with kinds.
fn edge_label(edge: Edge) -> String {
    let mut parts = vec![edge.condition.as_str()];
    parts.extend(edge.marks());
    parts.join(", ")
}

/// "  [debug, tools]" after a node that runs only with those profiles.
fn profiles_note(profiles: &[String]) -> String {
    if profiles.is_empty() {
        String::new()
    } else {
        format!("  [{}]", profiles.join(", "))
    }
}

/// "  1.02s *" for a node of a recorded run: its start time, right-aligned, and a star on the
/// critical path (two spaces where there is none, so the columns after it line up).
fn timing_note(timings: Option<&crate::views::report::RecordedRun>, name: &str) -> String {
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
        "  "
    };
    format!("  {took:>8}{star}")
}

pub fn render_text(
    config: &Config,
    graph: &Graph,
    selected: &[bool],
    timings: Option<&crate::views::report::RecordedRun>,
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
        let deps: Vec<String> = sorted_dependencies(graph, selected, i)
            .into_iter()
            .map(|(d, e)| format!("{} ({})", config.nodes[d].name, edge_label(e)))
            .collect();
        // Columns: name, kind, the start time of the last run (with --timings), dependencies.
        let deps = if deps.is_empty() {
            String::new()
        } else {
            format!("  <- {}", deps.join(", "))
        };
        let line = format!(
            "  {:width$}  {kind:<20}{}{deps}{}",
            node.name,
            timing_note(timings, &node.name),
            profiles_note(&node.profiles)
        );
        let _ = writeln!(out, "{}", line.trim_end());
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
    timings: Option<&crate::views::report::RecordedRun>,
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
        for (d, e) in sorted_dependencies(graph, selected, i) {
            let (from, to) = (&config.nodes[d].name, &config.nodes[i].name);
            let colour = if critical(from) && critical(to) {
                ", color=red, penwidth=2"
            } else {
                ""
            };
            // Optional: dashed. Milestone: dotted (the link ends once `to` is ready).
            let style = match (e.required, e.milestone) {
                (_, true) => ", style=dotted",
                (false, false) => ", style=dashed",
                (true, false) => "",
            };
            let _ = writeln!(
                out,
                "  \"{from}\" -> \"{to}\" [label=\"{}\"{style}{colour}];",
                edge_label(e)
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
        // Optional nodes (required = false) get a dashed outline, as in the dot output.
        let class = if node.required { "" } else { ":::optional" };
        let _ = match node.kind {
            NodeKind::Service => writeln!(out, "  {0}([{0}]){class}", node.name),
            NodeKind::Component => writeln!(out, "  {0}[{0}]{class}", node.name),
        };
    }
    for &i in &nodes {
        for (d, e) in sorted_dependencies(graph, selected, i) {
            // An optional edge is dashed: the dependent goes on without it.
            let arrow = if e.required { "-->" } else { "-.->" };
            let _ = writeln!(
                out,
                "  {} {arrow}|{}| {}",
                config.nodes[d].name,
                edge_label(e),
                config.nodes[i].name
            );
        }
    }
    if nodes.iter().any(|&i| !config.nodes[i].required) {
        out.push_str("  classDef optional stroke-dasharray: 5 5\n");
    }
    out
}
