//! Keeping the stack up, with real processes: restart policies with backoff, the crash-loop
//! limit, liveness checks, and dependents bound to a restarting dependency.

use std::time::Duration;

use crate::harness::{
    Project, RUN_LIMIT, free_port, interrupt, project, records, spawn_in_background, svc, wait_exit,
};

/// Runs dagstart until `done` holds for its own log, then stops it with Ctrl-C.
fn run_until(p: &Project, what: &str, done: impl Fn(&str) -> bool) -> String {
    let mut child = spawn_in_background(p, &["run"]);
    let deadline = std::time::Instant::now() + RUN_LIMIT;
    while !done(&p.own_log()) {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("timed out waiting for {what}:\n{}", p.own_log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    interrupt(&child);
    assert_eq!(
        wait_exit(&mut child, RUN_LIMIT).code(),
        Some(0),
        "{}",
        p.own_log()
    );
    p.own_log()
}

fn starts(p: &Project, name: &str) -> Vec<u128> {
    records(&p.path().join("rec"))
        .into_iter()
        .filter(|r| r.name == name && r.event == "start")
        .map(|r| r.nanos)
        .collect()
}

#[test]
fn on_failure_restarts_with_growing_backoff_until_the_crash_loop_limit() {
    let p = project(|p| {
        format!(
            "[services.flaky]\ncommand = {}\nhealth = {{ log = \"ready\" }}\nrequired = false\n\
             restart = \"on-failure\"\nrestart_backoff = \"200ms\"\nmax_restarts = 2\n\n\
             [services.steady]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n",
            svc(p, "flaky", "--exit-after 200ms --exit-code 3"),
            svc(p, "steady", ""),
        )
    });
    let log = run_until(&p, "the crash loop", |l| {
        l.contains("flaky: FAILED: crash loop")
    });
    assert!(
        log.contains("flaky: restarting in 200ms (restart 1)"),
        "{log}"
    );
    assert!(
        log.contains("flaky: restarting in 400ms (restart 2)"),
        "{log}"
    );
    assert!(
        log.contains("flaky: FAILED: crash loop: 2 restarts within 1m, last end: exit 3"),
        "{log}"
    );
    let t = starts(&p, "flaky");
    assert_eq!(t.len(), 3, "{t:?}");
    // Each gap is the 200 ms run plus at least the backoff.
    assert!(t[1] - t[0] >= 400_000_000, "{t:?}");
    assert!(t[2] - t[1] >= 600_000_000, "{t:?}");
    assert!(!log.contains("steady: exited"), "{log}");
}

#[test]
fn on_failure_leaves_a_clean_exit_alone_and_always_restarts_it() {
    let p = project(|p| {
        format!(
            "[services.clean]\ncommand = {}\nhealth = {{ log = \"ready\" }}\nrequired = false\nrestart = \"on-failure\"\n\n\
             [services.forever]\ncommand = {}\nhealth = {{ log = \"ready\" }}\nrequired = false\n\
             restart = \"always\"\nrestart_backoff = \"50ms\"\nmax_restarts = 100\n",
            svc(p, "clean", "--exit-after 100ms"),
            svc(p, "forever", "--exit-after 100ms"),
        )
    });
    let log = run_until(&p, "three starts of `forever`", |l| {
        l.matches("forever: spawned").count() >= 3
    });
    assert!(log.contains("clean: exited (exit 0)"), "{log}");
    assert_eq!(log.matches("clean: spawned").count(), 1, "{log}");
}

#[test]
fn failed_liveness_restarts_the_service() {
    let port = free_port();
    let p = project(|p| {
        format!(
            "[services.api]\ncommand = {}\nport = {port}\nhealth = {{ http = \"/\" }}\n\
             liveness = {{ http = \"/\", interval = \"100ms\", failure_threshold = 2 }}\n\
             restart = \"on-failure\"\nrestart_backoff = \"100ms\"\n",
            svc(p, "api", &format!("--port {port} --unhealthy-after 300ms")),
        )
    });
    let log = run_until(&p, "a restart after failed liveness", |l| {
        l.matches("api: spawned").count() >= 2
    });
    assert!(log.contains("api: liveness check failed (1/2)"), "{log}");
    assert!(
        log.contains("api: exited (killed: liveness failed 2 times in a row"),
        "{log}"
    );
    assert!(
        log.contains("api: restarting in 100ms (restart 1)"),
        "{log}"
    );
}

#[test]
fn bound_dependents_stop_first_and_start_again_after_the_dependency_is_healthy() {
    let p = project(|p| {
        format!(
            "[services.db]\ncommand = {}\nhealth = {{ log = \"ready\" }}\nrestart = \"on-failure\"\nrestart_backoff = \"100ms\"\n\n\
             [services.api]\ncommand = {}\ndepends_on = [\"db\"]\nrestart_with_dependency = true\nhealth = {{ log = \"ready\" }}\n\n\
             [services.other]\ncommand = {}\ndepends_on = [\"db\"]\nhealth = {{ log = \"ready\" }}\n",
            svc(p, "db", "--delay 100ms --exit-after 600ms --exit-code 1"),
            svc(p, "api", ""),
            svc(p, "other", ""),
        )
    });
    let log = run_until(&p, "api to be started again", |l| {
        l.matches("api: ready after").count() >= 2
    });
    let find = |needle: &str, nth: usize| {
        log.match_indices(needle)
            .nth(nth)
            .unwrap_or_else(|| panic!("no {needle} #{nth} in:\n{log}"))
            .0
    };
    let db_exit = find("db: exited", 0);
    let api_stop = find("api: stopping because `db` restarts", 0);
    let db_ready_again = find("db: ready after", 1);
    let api_again = find("api: spawned", 1);
    assert!(
        db_exit < api_stop && api_stop < db_ready_again && db_ready_again < api_again,
        "{log}"
    );
    assert_eq!(
        log.matches("other: spawned").count(),
        1,
        "`other` is not bound and keeps running:\n{log}"
    );
}
