//! `dagstart check` through the real binary.

use crate::harness::{Project, fixture, stderr_of, stdout_of};

#[test]
fn valid_file_prints_counts_and_depth() {
    let project = Project::new(&std::fs::read_to_string(fixture("stack.toml")).unwrap());
    let out = project
        .dagstart(&["check", "--config-only"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out), "ok: 4 services, 2 components, depth 3\n");
}

#[test]
fn invalid_file_exits_2_with_every_diagnostic() {
    let project = Project::new(
        "[services.api]\ncomand = \"a\"\ncommand = \"a\"\ndepends_on = [\"bd\"]\n\n[services.db]\ncommand = \"d\"\n",
    );
    let out = project.dagstart(&["check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(err.contains("unknown key `comand`"), "{err}");
    assert!(err.contains("`api` depends on `bd`"), "{err}");
    assert!(err.contains("2 errors in services.toml"), "{err}");
    assert!(stdout_of(&out).is_empty());
}

#[test]
fn json_format_gives_positions() {
    let project = Project::new("[services.api]\ncommand = \"a\"\nstop_signal = \"SIGFOO\"\n");
    let out = project
        .dagstart(&["check", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json on stdout");
    assert_eq!(doc["ok"], false);
    let diag = &doc["diagnostics"][0];
    assert_eq!(diag["code"], "dagstart::config::signal");
    assert_eq!(diag["severity"], "error");
    assert_eq!(diag["labels"][0]["line"], 3);
    assert_eq!(diag["labels"][0]["column"], 15);
}

#[test]
fn json_format_on_a_valid_file() {
    let project = Project::new(&std::fs::read_to_string(fixture("stack.toml")).unwrap());
    let out = project
        .dagstart(&["check", "--format", "json", "--config-only"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["summary"]["services"], 4);
    assert_eq!(doc["summary"]["depth"], 3);
}

#[test]
fn missing_file_is_a_config_error() {
    let project = Project::new("");
    let out = project
        .dagstart(&["-f", "nope.toml", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("cannot read nope.toml"));
}

#[test]
fn warnings_do_not_fail_the_check() {
    let project = Project::new(
        "[components.m]\ncommand = \"true\"\nrequired = false\n[services.a]\ncommand = \"true\"\ndepends_on = [\"m\"]\n",
    );
    let out = project.dagstart(&["check"]).output().unwrap();
    assert!(out.status.success());
    assert!(stderr_of(&out).contains("required `a` depends on optional `m`"));
}

#[test]
fn dotenv_beside_the_file_fills_variables_and_the_environment_wins() {
    let project = Project::new(
        "[services.api]\ncommand = \"./api --port ${PORT:?set PORT} --mode ${MODE}\"\n",
    );
    project.file(".env", "PORT=8010\nMODE=dotenv\n");
    let out = project
        .dagstart(&["config", "--format", "json"])
        .env("MODE", "real")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["services"]["api"]["command"],
        serde_json::json!(["./api", "--port", "8010", "--mode", "real"])
    );
}

#[test]
fn env_file_setting_names_another_file() {
    let project = Project::new(
        "[settings]\nenv_file = \"conf/dev.env\"\n[services.api]\ncommand = \"./api ${X:?x}\"\n",
    );
    project.file("conf/dev.env", "X=from-file\n");
    let out = project
        .dagstart(&["config", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["services"]["api"]["command"][1], "from-file");
}

#[test]
fn no_input_makes_it_panic() {
    for text in [
        "",
        "\u{0}\u{1}",
        "[[services]]\n",
        "services = 3",
        "[services.a]\ncommand = []",
        "[services.a.health]\n",
    ] {
        let project = Project::new(text);
        let out = project.dagstart(&["check"]).output().unwrap();
        assert!(
            matches!(out.status.code(), Some(0 | 2)),
            "{text:?}: {}",
            stderr_of(&out)
        );
        assert!(!stderr_of(&out).contains("panicked"), "{text:?}");
    }
}

/// Real stacks: `check` says what `run` would trip over, at the node that names it (a missing
/// command used to pass `check` silently and fail only at `run`, without a line number). A
/// missing command is a warning (an earlier component may build it); a missing working
/// directory is refused as `run` would (exit 3).
#[test]
fn check_locates_missing_commands_and_refuses_missing_directories() {
    let project = Project::new(
        "[services.ok]\ncommand = \"true\"\n\n[services.api]\ncommand = \"./no-such-api\"\n",
    );
    let out = project.dagstart(&["check"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains("`api`: command `./no-such-api` does not exist"),
        "{err}"
    );
    assert!(err.contains("services.toml:4:"), "{err}");
    let json = project
        .dagstart(&["check", "--format", "json"])
        .output()
        .unwrap();
    assert!(json.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(doc["diagnostics"][0]["severity"], "warning");
    assert_eq!(doc["diagnostics"][0]["labels"][0]["line"], 4);

    let project = Project::new("[services.api]\ncommand = \"true\"\ncwd = \"missing-dir\"\n");
    let out = project.dagstart(&["check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("working directory"),
        "{}",
        stderr_of(&out)
    );
    let only = project
        .dagstart(&["check", "--config-only"])
        .output()
        .unwrap();
    assert!(only.status.success(), "{}", stderr_of(&only));
}

/// Real stacks: `-f` after the command (as docker compose users type it) works for every
/// command but `logs`, whose `-f` follows; it used to be refused with a hint to write `-- -f`.
#[test]
fn the_file_option_works_after_the_command_too() {
    let p = crate::harness::Project::new("");
    p.file(
        "other.toml",
        "[services.a]\ncommand = \"true\"\n[components.b]\ncommand = \"true\"\n",
    );
    for args in [
        &["check", "-f", "other.toml"][..],
        &["check", "--file", "other.toml"],
        &["check", "--file=other.toml"],
    ] {
        let out = p.dagstart(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr_of(&out));
        assert_eq!(stdout_of(&out), "ok: 1 service, 1 component, depth 1\n");
    }
}
