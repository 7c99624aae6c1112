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
            { "name": "backend", "condition": "healthy", "required": false, "restart": false, "milestone": false },
            { "name": "preload_cache", "condition": "completed", "required": false, "restart": false, "milestone": false }
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
    // Optional nodes are marked (dashed outline), as in dot, and so are their edges (an
    // optional node's dependencies are optional unless it says otherwise).
    assert!(mermaid.contains("vision([vision]):::optional"), "{mermaid}");
    assert!(
        mermaid.contains("preload_cache[preload_cache]:::optional"),
        "{mermaid}"
    );
    assert!(
        mermaid.contains("ws_router -.->|healthy, optional| preload_cache"),
        "{mermaid}"
    );
    assert!(mermaid.contains("classDef optional"), "{mermaid}");
}

/// Dependency kinds: every format shows optional (dashed), restart and milestone edges, and
/// the profiles of a node; `--profile` selects the profiled nodes.
#[test]
fn every_format_shows_the_kind_of_each_edge_and_the_profiles() {
    let project = Project::new(
        "[services.db]\ncommand = \"db\"\n\n\
         [services.cache]\ncommand = \"cache\"\n\n\
         [components.migrate]\ncommand = \"migrate\"\n\n\
         [services.debugger]\ncommand = \"dbg\"\nprofiles = [\"debug\"]\n\n\
         [services.api]\ncommand = \"api\"\n\
         depends_on = { db = { restart = true }, cache = { required = false }, migrate = { milestone = true }, debugger = { required = false } }\n",
    );
    let graph = |args: &[&str]| {
        let mut all = vec!["graph"];
        all.extend_from_slice(args);
        let out = project.dagstart(&all).output().unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
        stdout_of(&out)
    };
    let text = graph(&[]);
    assert!(
        text.contains(
            "<- db (healthy, restart), cache (healthy, optional), migrate (completed, milestone)"
        ),
        "{text}"
    );
    assert!(!text.contains("debugger"), "{text}");
    let text = graph(&["--profile", "debug"]);
    assert!(text.contains("debugger  service"), "{text}");
    assert!(text.contains("[debug]"), "{text}");
    let dot = graph(&["--format", "dot"]);
    assert!(
        dot.contains("\"cache\" -> \"api\" [label=\"healthy, optional\", style=dashed];"),
        "{dot}"
    );
    assert!(
        dot.contains("\"migrate\" -> \"api\" [label=\"completed, milestone\", style=dotted];"),
        "{dot}"
    );
    assert!(
        dot.contains("\"db\" -> \"api\" [label=\"healthy, restart\"];"),
        "{dot}"
    );
    let mermaid = graph(&["--format", "mermaid"]);
    assert!(
        mermaid.contains("cache -.->|healthy, optional| api"),
        "{mermaid}"
    );
    assert!(
        mermaid.contains("db -->|healthy, restart| api"),
        "{mermaid}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&graph(&["--format", "json", "--profile", "debug"])).unwrap();
    let api = json["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "api")
        .unwrap();
    let debugger_edge = api["depends_on"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "debugger")
        .unwrap();
    assert_eq!(debugger_edge["required"], false);
    let debugger = json["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "debugger")
        .unwrap();
    assert_eq!(debugger["profiles"], serde_json::json!(["debug"]));
}

#[test]
fn a_large_generated_graph_is_handled() {
    let project = Project::new(&dagstart::synth::random_dag(5_000, 4, 7));
    let out = project.dagstart(&["check"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(stdout_of(&out).starts_with("ok: 5000 services, 0 components, depth "));
}
