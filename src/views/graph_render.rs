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
/// is not worth holding. The second half of the nodes is written out on another thread while
/// this one writes the first (100,000 nodes: the pretty-printer took 150 ms on one); each node
/// is printed on its own and indented into place, which gives exactly serde_json's pretty
/// printing of the whole graph.
pub fn write_json(
    config: &Config,
    graph: &Graph,
    selected: &[bool],
    mut out: impl std::io::Write,
) -> std::io::Result<()> {
    let order = ordered(graph, selected);
    let depth = order.iter().map(|&i| graph.level(i) + 1).max().unwrap_or(0);
    if order.is_empty() {
        let nodes = Vec::new();
        serde_json::to_writer_pretty(out, &JsonGraph { depth, nodes })?;
        return Ok(());
    }
    write!(out, "{{\n  \"depth\": {depth},\n  \"nodes\": [\n")?;
    let (first, second) = order.split_at(order.len() / 2);
    let (written, second) = crate::engine::parallel::join(
        || write_nodes(config, graph, selected, first, &mut out),
        || {
            let mut text = Vec::new();
            write_nodes(config, graph, selected, second, &mut text).map(|()| text)
        },
    );
    written?;
    if !first.is_empty() {
        out.write_all(b",\n")?;
    }
    out.write_all(&second?)?;
    out.write_all(b"\n  ]\n}")
}

/// The `nodes` of the JSON graph, each as an element of its array, separated by commas.
fn write_nodes(
    config: &Config,
    graph: &Graph,
    selected: &[bool],
    nodes: &[usize],
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    let mut node_text = Vec::new();
    for (k, &i) in nodes.iter().enumerate() {
        if k > 0 {
            out.write_all(b",\n")?;
        }
        node_text.clear();
        serde_json::to_writer_pretty(&mut node_text, &json_node(config, graph, selected, i))?;
        // JSON strings hold no line breaks: every one starts a line of the node's own text.
        for (n, line) in node_text.split(|&b| b == b'\n').enumerate() {
            if n > 0 {
                out.write_all(b"\n")?;
            }
            out.write_all(b"    ")?;
            out.write_all(line)?;
        }
    }
    Ok(())
}

fn json_node<'a>(config: &'a Config, graph: &Graph, selected: &[bool], i: usize) -> JsonNode<'a> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::config::{Environment, load_str};

    /// The graph printed whole by serde_json, which [`write_json`] must give byte for byte.
    fn printed_whole(config: &Config, graph: &Graph, selected: &[bool]) -> String {
        let nodes: Vec<JsonNode> = ordered(graph, selected)
            .into_iter()
            .map(|i| json_node(config, graph, selected, i))
            .collect();
        let depth = nodes.iter().map(|n| n.level + 1).max().unwrap_or(0);
        serde_json::to_string_pretty(&JsonGraph { depth, nodes }).unwrap()
    }

    #[test]
    fn the_json_written_in_halves_is_serde_s_pretty_print_of_the_whole() {
        let profiles = "[services.p]\ncommand = \"x\"\nprofiles = [\"a\", \"b-c\"]\n\
            [components.q]\ncommand = \"y\"\ndepends_on = [\"p\"]\n";
        let texts = [
            "[services.one]\ncommand = \"x\"\n".to_owned(),
            profiles.to_owned(),
            crate::synth::random_dag(101, 3, 7),
        ];
        for text in texts {
            let config = load_str(
                std::path::Path::new("s.toml"),
                text,
                &Environment::default(),
            )
            .unwrap_or_else(|e| panic!("{:?}", e.problems));
            let graph = Graph::build(&config);
            let all = vec![true; config.nodes.len()];
            let some: Vec<bool> = (0..config.nodes.len()).map(|i| i % 3 != 1).collect();
            let none = vec![false; config.nodes.len()];
            for selected in [all, some, none] {
                let mut written = Vec::new();
                write_json(&config, &graph, &selected, &mut written).unwrap();
                assert_eq!(
                    String::from_utf8(written).unwrap(),
                    printed_whole(&config, &graph, &selected)
                );
            }
        }
    }
}
