//! `dagstart import`: docker compose, process-compose and Procfile files, modelled on the
//! published specifications and on what real projects write (tests/fixtures/import/), become
//! a services.toml that `dagstart check` accepts, with everything not carried over listed.

use serde_json::Value;

use crate::harness::{Project, fixture, stderr_of, stdout_of};

/// A project holding a copy of fixture directory `name` (and no services.toml yet).
fn project_with(name: &str) -> Project {
    let p = Project::new("");
    std::fs::remove_file(p.path().join("services.toml")).unwrap();
    copy_dir(&fixture(&format!("import/{name}")), p.path());
    p
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Imports `file` in `p`, checks the result with `dagstart check`, and returns the stderr
/// of the import (the list of what was not carried) and the resolved configuration.
fn import_and_check(p: &Project, file: &str) -> (String, Value) {
    let out = p.dagstart(&["import", file]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let listed = stderr_of(&out);
    let check = p.dagstart(&["check"]).output().unwrap();
    assert!(
        check.status.success(),
        "check refused the import:\n{}\n{}",
        stderr_of(&check),
        std::fs::read_to_string(p.path().join("services.toml")).unwrap()
    );
    (listed, json_of(p, &["config", "--format", "json"]))
}

/// What `dagstart ARGS` printed, as JSON; the command must succeed.
fn json_of(p: &Project, args: &[&str]) -> Value {
    let out = p.dagstart(args).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    serde_json::from_str(&stdout_of(&out)).unwrap()
}

fn header(p: &Project) -> String {
    std::fs::read_to_string(p.path().join("services.toml"))
        .unwrap()
        .lines()
        .take_while(|l| l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every item is said on stderr and in the file's header comment.
fn assert_listed(p: &Project, listed: &str, items: &[&str]) {
    let header = header(p);
    for item in items {
        assert!(listed.contains(item), "{item:?} not on stderr:\n{listed}");
        assert!(
            header.contains(item),
            "{item:?} not in the header:\n{header}"
        );
    }
}

#[test]
fn compose_becomes_processes_and_says_what_containers_had() {
    let p = project_with("compose").env("PASSED_THROUGH", "yes");
    let (listed, config) = import_and_check(&p, "docker-compose.yml");
    let services = &config["services"];
    let components = &config["components"];

    let db = &services["db"];
    assert_eq!(
        db["command"],
        serde_json::json!(["postgres", "-c", "max_connections=200"])
    );
    assert_eq!(
        db["health"]["exec"],
        serde_json::json!(["pg_isready", "-U", "postgres"])
    );
    assert_eq!(db["health"]["interval"], "2s");
    assert_eq!(db["health"]["timeout"], "1s");
    assert_eq!(db["stop_signal"], "SIGINT");
    assert_eq!(db["stop_timeout"], "1m 30s");
    assert_eq!(
        db["env"]["POSTGRES_DB"], "shop",
        "${{DB_NAME:-shop}} kept for dagstart"
    );

    let cache = &services["cache"];
    assert_eq!(
        cache["command"],
        serde_json::json!(["redis-server", "--save", "", "--appendonly", "no"])
    );
    assert_eq!(
        cache["health"]["exec"],
        serde_json::json!(["sh", "-c", "redis-cli ping"])
    );
    assert_eq!(cache["restart"], "always");

    // Waited for with service_completed_successfully: a one-shot step.
    let migrate = &components["migrate"];
    assert_eq!(
        migrate["command"],
        serde_json::json!(["./migrate.sh", "up", "--all"])
    );
    assert_eq!(migrate["depends_on"]["db"]["condition"], "healthy");
    assert_eq!(migrate["env"]["MIGRATE_DIR"], "./sql");
    assert_eq!(migrate["env"]["MIGRATE_LOCK"], "on");

    let api = &services["api"];
    assert_eq!(api["depends_on"]["migrate"]["condition"], "completed");
    assert_eq!(api["depends_on"]["cache"]["condition"], "started");
    assert_eq!(api["depends_on"]["search"]["condition"], "healthy");
    // compose's per-edge `restart: true` and `required: false` are dagstart's edge kinds.
    assert_eq!(api["depends_on"]["cache"]["restart"], true);
    assert_eq!(api["depends_on"]["migrate"]["restart"], false);
    assert_eq!(api["depends_on"]["search"]["required"], false);
    assert_eq!(api["depends_on"]["cache"]["required"], true);
    assert_eq!(api["restart_with_dependency"], false);
    assert_eq!(api["restart"], "on-failure");
    assert_eq!(api["max_restarts"], 3);
    assert!(api["cwd"].as_str().unwrap().ends_with("/api"));
    assert_eq!(api["env"]["RUST_LOG"], "debug");
    assert_eq!(api["env"]["API_KEY"], "s3cret");
    assert_eq!(
        api["env"]["GREETING"], "",
        "GREETING unset at import: `:+` gives nothing"
    );
    assert!(
        api["env"].get("PASSED_THROUGH").is_none(),
        "inherited, as every variable is"
    );
    // Compose interpolates `$DB_URL` from the environment where compose runs, not from the
    // env_file (only the container sees that): unset here, it is empty, as in compose.
    assert_eq!(
        api["command"],
        serde_json::json!(["./api", "--port", "8010", "--db", "--flag", "off"])
    );
    assert_eq!(
        api["health"]["exec"][2],
        "curl -fsS http://localhost:8010/health || exit 1"
    );

    let worker = &services["worker"];
    assert_eq!(worker["health"]["spawned"], true, "healthcheck disabled");
    assert_eq!(worker["depends_on"]["cache"]["condition"], "started");
    assert_eq!(worker["restart"], "always");
    assert_eq!(worker["profiles"], serde_json::json!(["jobs"]));

    let search = &services["search"];
    assert_eq!(search["health"]["spawned"], true, "test NONE");
    assert!(
        search["shell"].as_bool().unwrap(),
        "a placeholder that says what to do"
    );

    // `web.frontend` is not a node name dagstart takes.
    assert_eq!(
        services["web_frontend"]["depends_on"]["api"]["condition"],
        "started"
    );

    assert_listed(
        &p,
        &listed,
        &[
            "services.db.image",
            "services.db.volumes",
            "services.db.ports",
            "services.db.healthcheck.retries",
            "services.db.healthcheck.start_period",
            "services.db.healthcheck.start_interval",
            "services.migrate.build",
            "services.migrate.env_file: migrate.env",
            "services.api.networks",
            "services.api.x-owner",
            "services.api.restart: on-failure:3",
            "services.api: `${FLAG-off}` became `${FLAG:-off}`",
            "services.api: `${GREETING:+hello}` was resolved at import",
            "services.worker.working_dir: /srv/worker is a path in the container",
            "services.search.command: none",
            "services.search.deploy",
            "web.frontend: renamed `web_frontend`",
            "x-common-env",
            "networks",
            "volumes",
        ],
    );
    for carried in ["required", "profiles", "restart: true"] {
        assert!(
            !listed.contains(carried),
            "{carried:?} is carried:\n{listed}"
        );
    }
}

#[test]
fn process_compose_processes_keep_their_conditions_probes_and_policies() {
    let p = project_with("process-compose");
    let (listed, config) = import_and_check(&p, "process-compose.yaml");
    let services = &config["services"];
    let components = &config["components"];
    assert_eq!(config["env"]["STACK"], "dev");

    let db = &services["db"];
    assert_eq!(db["command"], "postgres -D ./data");
    assert_eq!(db["shell"], true);
    assert_eq!(
        db["health"]["exec"],
        serde_json::json!(["sh", "-c", "pg_isready -h 127.0.0.1"])
    );
    assert_eq!(db["health"]["interval"], "2s");
    assert_eq!(db["stop_signal"], "SIGINT");
    assert_eq!(db["stop_timeout"], "20s");

    assert_eq!(
        components["migrate"]["depends_on"]["db"]["condition"],
        "healthy"
    );
    assert_eq!(
        components["seed"]["depends_on"]["migrate"]["condition"],
        "completed"
    );

    let api = &services["api"];
    assert_eq!(api["depends_on"]["seed"]["condition"], "completed");
    assert_eq!(api["depends_on"]["broker"]["condition"], "healthy");
    assert_eq!(api["depends_on"]["db"]["condition"], "started");
    assert_eq!(api["health"]["http"], "http://127.0.0.1:8010/health");
    assert_eq!(api["health"]["interval"], "1s");
    assert_eq!(api["liveness"]["http"], "http://127.0.0.1:8010/live");
    assert_eq!(api["liveness"]["failure_threshold"], 3);
    assert_eq!(api["restart"], "on-failure");
    assert_eq!(api["restart_backoff"], "2s");
    assert_eq!(api["max_restarts"], 5);
    assert_eq!(api["env"]["PORT"], "8010");

    let broker = &services["broker"];
    assert_eq!(broker["health"]["log"], r"broker ready \(port 4222\)");
    assert_eq!(broker["restart"], "always");

    assert_eq!(services["tls-proxy"]["health"]["tcp"], "127.0.0.1:8443");
    assert_eq!(services["debugger"]["lazy"], true);

    assert_listed(
        &p,
        &listed,
        &[
            "log_location",
            "processes.db.readiness_probe.initial_delay_seconds",
            "processes.db.readiness_probe.failure_threshold",
            "processes.api.depends_on.seed: process_completed",
            "processes.api.shutdown.command",
            "processes.tls-proxy.readiness_probe.http_get: https",
            "processes.tls-proxy.availability.restart: exit_on_failure",
            "processes.debugger.disabled: carried as `lazy = true`",
            "processes.debugger.namespace",
            "processes.legacy.is_daemon",
        ],
    );
}

#[test]
fn a_procfile_gives_shell_services_with_their_port_and_the_env_beside_it() {
    let p = project_with("procfile");
    let (listed, config) = import_and_check(&p, "Procfile");
    let services = &config["services"];
    assert_eq!(
        services["web"]["command"],
        "gunicorn -b 0.0.0.0:$PORT app:app"
    );
    assert_eq!(services["web"]["shell"], true);
    assert_eq!(services["web"]["env"]["PORT"], "5000");
    assert_eq!(services["worker"]["env"]["PORT"], "5100");
    assert_eq!(services["release_task"]["env"]["PORT"], "5200");
    assert_eq!(config["env"]["DATABASE_URL"], "postgres://localhost/app");
    assert_eq!(config["env"]["SECRET_KEY"], "dev-only");
    assert_listed(
        &p,
        &listed,
        &[
            ".env: its variables are copied",
            "line 5",
            "release.task: renamed",
        ],
    );
}

#[test]
fn import_refuses_to_overwrite_and_can_print_instead() {
    let p = project_with("procfile");
    p.file("services.toml", "# mine\n");
    let out = p.dagstart(&["import", "Procfile"]).output().unwrap();
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("--force"), "{}", stderr_of(&out));
    assert_eq!(
        std::fs::read_to_string(p.path().join("services.toml")).unwrap(),
        "# mine\n"
    );
    let printed = p
        .dagstart(&["import", "Procfile", "-o", "-"])
        .output()
        .unwrap();
    assert!(printed.status.success());
    assert!(stdout_of(&printed).contains("[services.web]"));
    let forced = p
        .dagstart(&["import", "Procfile", "--force"])
        .output()
        .unwrap();
    assert!(forced.status.success());
    assert!(
        std::fs::read_to_string(p.path().join("services.toml"))
            .unwrap()
            .contains("[services.web]")
    );
}

#[test]
fn a_file_that_cannot_be_imported_says_why() {
    let p = Project::new("");
    p.file("stack.yaml", "services: [unclosed\n");
    let out = p.dagstart(&["import", "stack.yaml"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("cannot tell the format"),
        "{}",
        stderr_of(&out)
    );
    let out = p
        .dagstart(&["import", "stack.yaml", "--from", "compose", "-o", "-"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("not valid YAML"),
        "{}",
        stderr_of(&out)
    );
    p.file("other.yaml", "something: else\n");
    let out = p
        .dagstart(&[
            "import",
            "other.yaml",
            "--from",
            "process-compose",
            "-o",
            "-",
        ])
        .output()
        .unwrap();
    assert!(
        stderr_of(&out).contains("no `processes` mapping"),
        "{}",
        stderr_of(&out)
    );
}

/// A process-compose file that uses only what dagstart can say: import, export and import
/// again give the same graph, and the export says it carried everything.
#[test]
fn process_compose_survives_import_export_import() {
    let first = project_with("round-trip");
    let out = first
        .dagstart(&["import", "process-compose.yaml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let graph = |p: &Project| json_of(p, &["graph", "--format", "json"]);
    let second = Project::new("");
    std::fs::remove_file(second.path().join("services.toml")).unwrap();
    let out = first
        .dagstart(&[
            "export",
            "process-compose",
            "-o",
            second.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let exported = std::fs::read_to_string(second.path().join("process-compose.yaml")).unwrap();
    assert!(
        exported.contains("# Everything was carried over."),
        "{exported}"
    );
    assert!(
        exported.contains("condition: process_log_ready"),
        "{exported}"
    );
    let out = second
        .dagstart(&["import", "process-compose.yaml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(graph(&first), graph(&second));
    let config = |p: &Project| json_of(p, &["config", "--format", "json"]);
    let (a, b) = (config(&first), config(&second));
    for node in ["db", "api", "broker", "worker"] {
        for key in [
            "command",
            "depends_on",
            "health",
            "restart",
            "restart_backoff",
            "max_restarts",
            "stop_signal",
            "stop_timeout",
            "env",
        ] {
            assert_eq!(
                a["services"][node][key], b["services"][node][key],
                "{node}.{key}"
            );
        }
    }
}

/// What process-compose cannot say is listed by `export`, as by `import`.
#[test]
fn export_lists_what_process_compose_cannot_say() {
    let p = Project::new(
        "[services.api]\ncommand = [\"sleep\", \"600\"]\nsockets = [\"127.0.0.1:0\"]\nhealth = { notify = true }\nwatchdog = \"5s\"\nrequired = false\n\
         [services.web]\ncommand = \"sleep 600\"\ndepends_on = { api = \"listening\" }\nlazy = true\nrestart_with_dependency = true\n\
         [services.tool]\ncommand = \"sleep 600\"\nprofiles = [\"debug\"]\ndepends_on = { web = { required = false }, api = { milestone = true } }\n",
    );
    let out = p.dagstart(&["export", "process-compose"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    for item in [
        "services.api.health: process-compose has no notify",
        "services.api.sockets",
        "services.api.watchdog",
        "services.api.required",
        "services.web.depends_on: `listening`",
        "services.web.lazy: became `disabled: true`",
        "services.web.depends_on.restart",
        "services.tool.depends_on.required",
        "services.tool.depends_on.milestone",
        "services.tool.profiles",
    ] {
        assert!(text.contains(item), "{item:?} not in:\n{text}");
        assert!(stderr_of(&out).contains(item), "{item:?} not on stderr");
    }
    assert!(text.contains("disabled: true"), "{text}");
}

/// Imported from another directory, relative working directories still point where the
/// imported file meant them.
#[test]
fn paths_stay_right_when_services_toml_is_written_elsewhere() {
    let p = Project::new("");
    std::fs::remove_file(p.path().join("services.toml")).unwrap();
    let sub = p.path().join("deploy");
    std::fs::create_dir_all(&sub).unwrap();
    copy_dir(&fixture("import/compose"), &sub);
    let out = p
        .dagstart(&["import", "deploy/docker-compose.yml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let config = json_of(&p, &["config", "--format", "json"]);
    let cwd = config["services"]["api"]["cwd"].as_str().unwrap();
    assert!(cwd.ends_with("/deploy/api"), "{cwd}");
    assert!(p.dagstart(&["check"]).output().unwrap().status.success());
}
