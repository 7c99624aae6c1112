//! `dagstart graph` through the real binary.

use crate::harness::{Project, fixture, stderr_of, stdout_of};

fn stack() -> Project {
    Project::new(&std::fs::read_to_string(fixture("stack.toml")).unwrap())
}

#[test]
fn text_shows_levels_with_dependencies_and_kinds() {
    let out = stack().dagstart(&["graph"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    insta::assert_snapshot!(stdout_of(&out));
}

#[test]
fn json_lists_every_node_with_level_and_conditions() {
    let out = stack()
        .dagstart(&["graph", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["depth"], 3);
    let nodes = doc["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 6);
    let vision = nodes.iter().find(|n| n["name"] == "vision").unwrap();
    assert_eq!(vision["level"], 2);
    assert_eq!(vision["kind"], "service");
    assert_eq!(vision["required"], false);
    assert_eq!(
        vision["depends_on"],
        serde_json::json!([
            { "name": "backend", "condition": "healthy" },
            { "name": "preload_cache", "condition": "completed" }
        ])
    );
    let monitoring = nodes.iter().find(|n| n["name"] == "monitoring").unwrap();
    assert_eq!(monitoring["depends_on"][0]["condition"], "started");
}

#[test]
fn naming_nodes_restricts_to_them_and_what_they_need() {
    let out = stack()
        .dagstart(&["graph", "backend", "--format", "json"])
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut names: Vec<&str> = doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["backend", "load_models", "ws_router"]);
}

#[test]
fn unknown_node_on_the_command_line_suggests_one() {
    let out = stack().dagstart(&["graph", "bakend"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(
        err.contains("no service or component is named `bakend`"),
        "{err}"
    );
    assert!(err.contains("did you mean `backend`?"), "{err}");
}

#[test]
fn dot_and_mermaid_draw_every_edge() {
    let dot = stdout_of(
        &stack()
            .dagstart(&["graph", "--format", "dot"])
            .output()
            .unwrap(),
    );
    assert!(dot.starts_with("digraph dagstart {"));
    assert!(
        dot.contains("\"load_models\" -> \"backend\" [label=\"completed\"];"),
        "{dot}"
    );
    assert_eq!(dot.matches(" -> ").count(), 6);
    let mermaid = stdout_of(
        &stack()
            .dagstart(&["graph", "--format", "mermaid"])
            .output()
            .unwrap(),
    );
    assert!(mermaid.starts_with("flowchart LR"));
    assert!(
        mermaid.contains("ws_router -->|started| monitoring"),
        "{mermaid}"
    );
    assert_eq!(
        mermaid.matches("-->").count() + mermaid.matches("-.->").count(),
        6
    );
    // Optional nodes are marked (dashed outline, dashed edges into them), as in dot.
    assert!(mermaid.contains("vision([vision]):::optional"), "{mermaid}");
    assert!(
        mermaid.contains("preload_cache[preload_cache]:::optional"),
        "{mermaid}"
    );
    assert!(
        mermaid.contains("ws_router -.->|healthy| preload_cache"),
        "{mermaid}"
    );
    assert!(mermaid.contains("classDef optional"), "{mermaid}");
}

#[test]
fn a_large_generated_graph_is_handled() {
    let project = Project::new(&dagstart::synth::random_dag(5_000, 4, 7));
    let out = project.dagstart(&["check"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(stdout_of(&out).starts_with("ok: 5000 services, 0 components, depth "));
}
