//! `dagstart graph`: the startup order as text levels, Graphviz dot, Mermaid or JSON, with the
//! timings of the last recorded run when asked for.

use std::fmt::Write as _;

use serde::Serialize;

use crate::engine::config::{Condition, Config, NodeKind};
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
        let deps: Vec<String> = sorted_dependencies(graph, i)
            .into_iter()
            .map(|(d, c)| format!("{} ({})", config.nodes[d].name, c.as_str()))
            .collect();
        // Columns: name, kind, the start time of the last run (with --timings), dependencies.
        let deps = if deps.is_empty() {
            String::new()
        } else {
            format!("  <- {}", deps.join(", "))
        };
        let line = format!(
            "  {:width$}  {kind:<20}{}{deps}",
            node.name,
            timing_note(timings, &node.name)
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
        // Optional nodes (required = false) get a dashed outline, as in the dot output.
        let class = if node.required { "" } else { ":::optional" };
        let _ = match node.kind {
            NodeKind::Service => writeln!(out, "  {0}([{0}]){class}", node.name),
            NodeKind::Component => writeln!(out, "  {0}[{0}]{class}", node.name),
        };
    }
    for &i in &nodes {
        for (d, c) in sorted_dependencies(graph, i) {
            // An edge into an optional node is dashed: it never blocks the startup.
            let arrow = if config.nodes[i].required {
                "-->"
            } else {
                "-.->"
            };
            let _ = writeln!(
                out,
                "  {} {arrow}|{}| {}",
                config.nodes[d].name,
                c.as_str(),
                config.nodes[i].name
            );
        }
    }
    if nodes.iter().any(|&i| !config.nodes[i].required) {
        out.push_str("  classDef optional stroke-dasharray: 5 5\n");
    }
    out
}
