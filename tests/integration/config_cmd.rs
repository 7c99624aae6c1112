//! `dagstart config` through the real binary.

use crate::harness::{Project, fixture, stderr_of, stdout_of};

#[test]
fn toml_output_fills_defaults_and_marks_environment_values() {
    let project = Project::new(&std::fs::read_to_string(fixture("stack.toml")).unwrap())
        .env("STARTUP_TIMEOUT", "2m")
        .env("BACKEND_TIMEOUT", "45s")
        .env("USE_PARALLEL_STARTUP", "false");
    let out = project.dagstart(&["config"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    assert!(
        text.contains("startup_timeout = \"2m\"  # from STARTUP_TIMEOUT"),
        "{text}"
    );
    assert!(
        text.contains("parallel = false  # from USE_PARALLEL_STARTUP"),
        "{text}"
    );
    assert!(
        text.contains("startup_timeout = \"45s\"  # from BACKEND_TIMEOUT"),
        "{text}"
    );
    assert!(text.contains("stop_signal = \"SIGTERM\""), "{text}");
    let redacted = text.replace(&project.path().display().to_string(), "[DIR]");
    insta::assert_snapshot!(redacted);
}

#[test]
fn toml_output_is_itself_a_valid_configuration() {
    let project = Project::new(&std::fs::read_to_string(fixture("stack.toml")).unwrap());
    let first = stdout_of(&project.dagstart(&["config"]).output().unwrap());
    let again = Project::new(&first);
    let out = again.dagstart(&["config"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out), first);
}

#[test]
fn json_output_lists_environment_sources() {
    let project = Project::new("[services.api]\ncommand = \"./api ${PORT:-8000}\"\n")
        .env("STARTUP_MAX_WORKERS", "3");
    let out = project
        .dagstart(&["config", "--format", "json"])
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["settings"]["max_workers"], 3);
    assert_eq!(
        doc["from_env"]["settings.max_workers"],
        "STARTUP_MAX_WORKERS"
    );
    assert_eq!(doc["from_env"]["services.api.command"], "${PORT}");
    assert_eq!(doc["services"]["api"]["health"]["spawned"], true);
}

#[test]
fn service_with_a_port_and_no_health_is_probed_by_tcp() {
    let project = Project::new("[services.api]\ncommand = \"a\"\nport = 9000\n");
    let out = project
        .dagstart(&["config", "--format", "json"])
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["services"]["api"]["health"]["tcp"], "localhost:9000");
}

/// What this session added to services.toml is shown resolved too, and survives the round
/// trip: `pid_namespace`, and a node's own log rotation.
#[test]
fn config_shows_pid_namespace_and_node_log_rotation() {
    let project = Project::new(
        "[settings]\npid_namespace = false\n\n[services.a]\ncommand = \"a\"\nlog_max_size = \"2MiB\"\nlog_keep = 2\n",
    );
    let first = stdout_of(&project.dagstart(&["config"]).output().unwrap());
    assert!(first.contains("pid_namespace = false"), "{first}");
    assert!(
        first.contains("log_max_size = \"2MiB\"") && first.contains("log_keep = 2"),
        "{first}"
    );
    let again = Project::new(&first);
    assert_eq!(
        stdout_of(&again.dagstart(&["config"]).output().unwrap()),
        first
    );
    let json = stdout_of(
        &project
            .dagstart(&["config", "--format", "json"])
            .output()
            .unwrap(),
    );
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["settings"]["pid_namespace"], false);
    assert_eq!(json["services"]["a"]["log_keep"], 2);
}
