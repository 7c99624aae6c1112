//! Dependency kinds and profiles through the real binary and real processes.

use crate::harness::{
    Project, assert_success, at, project, records, run_with_command, stderr_of, svc,
};

/// An optional dependency that fails is gone around: the dependent starts, the run succeeds.
#[test]
fn a_failing_optional_dependency_does_not_hold_up_its_dependent() {
    let p = project(|p| {
        format!(
            "[services.cache]\ncommand = {}\nrequired = false\nhealth = {{ log = \"never printed\" }}\n\n\
             [services.api]\ncommand = {}\ndepends_on = {{ cache = {{ required = false }} }}\nhealth = {{ log = \"ready\" }}\n",
            svc(p, "cache", "--delay 200ms --oneshot --exit-code 3"),
            svc(p, "api", ""),
        )
    });
    let out = run_with_command(&p, &["--", "true"]);
    assert_success(&out);
    let rec = records(&p.path().join("rec"));
    assert!(
        rec.iter().any(|r| r.name == "api" && r.event == "ready"),
        "{rec:?}"
    );
    // cache exits 200 ms after its start; api waits for that (a lower bound, not a speed).
    assert!(
        at(&rec, "api", "start") >= at(&rec, "cache", "start") + 200_000_000,
        "api waited while cache was starting: {rec:?}"
    );
    let log = p.own_log();
    assert!(log.contains("cache: FAILED"), "{log}");
    assert!(!log.contains("api: skipped"), "{log}");
}

/// A milestone is waited for before the start, then may stop first: at shutdown nothing waits
/// for the dependent to stop before stopping it.
#[test]
fn a_milestone_gates_the_start_only() {
    let p = project(|p| {
        format!(
            "[services.seed]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n\n\
             [services.app]\ncommand = {}\ndepends_on = {{ seed = {{ milestone = true }} }}\nhealth = {{ log = \"ready\" }}\n",
            svc(p, "seed", "--delay 150ms"),
            svc(p, "app", ""),
        )
    });
    let out = run_with_command(&p, &["--", "true"]);
    assert_success(&out);
    let rec = records(&p.path().join("rec"));
    assert!(at(&rec, "app", "start") >= at(&rec, "seed", "ready"));
}

const PROFILED: &str = "[services.db]\ncommand = \"sleep 600\"\n\n\
     [services.debugger]\ncommand = \"sleep 600\"\nprofiles = [\"debug\"]\n\n\
     [services.api]\ncommand = \"sleep 600\"\ndepends_on = { db = \"started\", debugger = { condition = \"started\", required = false } }\n\n\
     [services.inspector]\ncommand = \"sleep 600\"\nprofiles = [\"tools\"]\ndepends_on = { debugger = \"started\" }\n";

fn started(p: &Project, args: &[&str]) -> String {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--", "true"]);
    let out = p.dagstart(&all).output().unwrap();
    assert_success(&out);
    p.own_log()
}

/// Profiles: without one, profiled nodes do not run and an optional edge to them is not waited
/// for; `--profile` and DAGSTART_PROFILES add them.
#[test]
fn profiles_choose_the_profiled_nodes() {
    let p = Project::new(PROFILED);
    let log = started(&p, &[]);
    assert!(log.contains("api: ready"), "{log}");
    assert!(!log.contains("debugger"), "{log}");

    let p = Project::new(PROFILED);
    let log = started(&p, &["--profile", "debug"]);
    assert!(log.contains("debugger: ready"), "{log}");
    assert!(!log.contains("inspector"), "{log}");

    let p = Project::new(PROFILED).env("DAGSTART_PROFILES", "debug,tools");
    let log = started(&p, &[]);
    assert!(log.contains("inspector: ready"), "{log}");
}

/// Profiles: a selected node that requires a node of an inactive profile is refused before
/// anything starts, naming both and the profile to add; an unknown profile is refused too.
#[test]
fn a_required_dependency_in_an_inactive_profile_is_a_clear_error() {
    let p = Project::new(PROFILED);
    let out = p
        .dagstart(&["run", "--profile", "tools", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains("`inspector` requires `debugger`, which runs only with the profile `debug`: add --profile debug"),
        "{err}"
    );
    assert!(!p.own_log().contains("ready"), "nothing started");

    let out = p
        .dagstart(&["run", "--profile", "tols", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(err.contains("no node has the profile `tols`"), "{err}");
    assert!(err.contains("did you mean `tools`?"), "{err}");

    // Named on the command line, it comes with what it requires, profiled or not.
    let log = started(&p, &["inspector"]);
    assert!(
        log.contains("debugger: ready") && log.contains("inspector: ready"),
        "{log}"
    );
}
