//! `dagstart run` with real processes: ordering, overlap, failures, retries, timeouts,
//! readiness kinds, sequential mode, the `--` command, and cleanup.

use std::time::Duration;

use crate::harness::{
    Project, RUN_LIMIT, alive, assert_success, at, demo_svc, free_port, guardian_of, interrupt,
    project, records, run_namespace_processes, run_with_command, spawn_in_background, spawned_pid,
    spawned_pids, start_in_background, stderr_of, stdout_of, svc, wait_exit, wait_until,
};

#[test]
fn nothing_starts_before_its_dependencies_meet_their_condition() {
    let port = free_port();
    let p = project(|p| {
        format!(
            "[services.db]\ncommand = {}\nport = {port}\nhealth = {{ http = \"/health\" }}\n\n\
             [components.migrate]\ncommand = {}\ndepends_on = [\"db\"]\n\n\
             [services.api]\ncommand = {}\ndepends_on = [\"migrate\"]\nhealth = {{ log = \"ready\" }}\n\n\
             [services.sidecar]\ncommand = {}\ndepends_on = {{ db = \"started\" }}\nhealth = {{ log = \"ready\" }}\n",
            svc(p, "db", &format!("--delay 300ms --port {port}")),
            svc(p, "migrate", "--delay 200ms --oneshot"),
            svc(p, "api", ""),
            svc(p, "sidecar", ""),
        )
    });
    let out = run_with_command(&p, &["--", "true"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let rec = records(&p.path().join("rec"));
    assert!(
        at(&rec, "migrate", "start") >= at(&rec, "db", "ready"),
        "{rec:?}"
    );
    assert!(
        at(&rec, "api", "start") >= at(&rec, "migrate", "ready"),
        "{rec:?}"
    );
    // `started` only needs the spawn: the sidecar starts while db is still initialising.
    assert!(
        at(&rec, "sidecar", "start") < at(&rec, "db", "ready"),
        "{rec:?}"
    );
    let stdout = stdout_of(&out);
    assert!(stdout.contains("startup complete: ready in"), "{stdout}");
    assert!(stdout.contains("critical path: db"), "{stdout}");
    assert!(stdout.contains("x from parallelism"), "{stdout}");
    assert!(stdout.contains("between nodes"), "{stdout}");
    assert!(
        !stdout.contains('\x1b'),
        "no escape codes when not on a terminal:\n{stdout}"
    );
}

#[test]
fn independent_nodes_start_in_parallel() {
    let p = project(|p| {
        format!(
            "[services.x]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n\n[services.y]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n",
            svc(p, "x", "--delay 500ms"),
            svc(p, "y", "--delay 500ms"),
        )
    });
    let out = run_with_command(&p, &["--", "true"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let rec = records(&p.path().join("rec"));
    assert!(at(&rec, "x", "start") < at(&rec, "y", "ready"), "{rec:?}");
    assert!(at(&rec, "y", "start") < at(&rec, "x", "ready"), "{rec:?}");
}

fn two_independent_slow_services(p: &Project) -> String {
    format!(
        "[services.x]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n\n[services.y]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n",
        svc(p, "x", "--delay 300ms"),
        svc(p, "y", "--delay 300ms"),
    )
}

fn assert_no_overlap(p: &Project) {
    let rec = records(&p.path().join("rec"));
    let (x0, x1) = (at(&rec, "x", "start"), at(&rec, "x", "ready"));
    let (y0, y1) = (at(&rec, "y", "start"), at(&rec, "y", "ready"));
    assert!(y0 >= x1 || x0 >= y1, "start phases overlap: {rec:?}");
}

#[test]
fn sequential_flag_starts_one_node_at_a_time() {
    let p = project(two_independent_slow_services);
    let out = run_with_command(&p, &["--sequential", "--", "true"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let stdout = stdout_of(&out);
    assert!(stdout.contains("sequential, one at a time"));
    // Summaries that hold: no critical path and no speedup when nothing ran in parallel.
    assert!(!stdout.contains("critical path"), "{stdout}");
    assert!(
        !stdout.contains("faster") && !stdout.contains("parallelism"),
        "{stdout}"
    );
    assert!(
        stdout.contains("sequential: one node at a time"),
        "{stdout}"
    );
    assert_no_overlap(&p);
}

#[test]
fn use_parallel_startup_false_is_the_sequential_mode() {
    let p = project(two_independent_slow_services).env("USE_PARALLEL_STARTUP", "false");
    let out = run_with_command(&p, &["--", "true"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_no_overlap(&p);
}

#[test]
fn max_workers_bounds_nodes_in_their_start_phase() {
    let p = project(|p| {
        let mut text = String::from("[settings]\nmax_workers = 2\n");
        for name in ["a", "b", "c", "d"] {
            text.push_str(&format!(
                "[components.{name}]\ncommand = {}\n",
                svc(p, name, "--delay 200ms --oneshot")
            ));
        }
        text
    });
    let out = run_with_command(&p, &["--", "true"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let rec = records(&p.path().join("rec"));
    let phases: Vec<(u128, u128)> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| (at(&rec, n, "start"), at(&rec, n, "ready")))
        .collect();
    for &(start, _) in &phases {
        let busy = phases
            .iter()
            .filter(|(s, r)| *s <= start && start < *r)
            .count();
        assert!(busy <= 2, "more than 2 in their start phase: {rec:?}");
    }
}

#[test]
fn optional_failure_skips_exactly_its_dependents() {
    let p = project(|p| {
        format!(
            "[components.models]\ncommand = {}\nrequired = false\n\n\
             [services.vision]\ncommand = {}\ndepends_on = {{ models = {{ required = true }} }}\nrequired = false\n\n\
             [services.captions]\ncommand = {}\ndepends_on = [\"models\"]\nrequired = false\n\n\
             [services.api]\ncommand = {}\n",
            svc(p, "models", "--oneshot --exit-code 3"),
            svc(p, "vision", ""),
            svc(p, "captions", ""),
            svc(p, "api", ""),
        )
    });
    // Without `--`, so the run lasts until the optional failure has played out.
    let mut child = spawn_in_background(&p, &["run"]);
    let log_path = p.path().join("logs/dagstart.log");
    let rec_path = p.path().join("rec");
    wait_until(RUN_LIMIT, "vision to be skipped and captions ready", || {
        std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains("vision: skipped"))
            && records(&rec_path)
                .iter()
                .any(|r| r.name == "captions" && r.event == "ready")
    });
    interrupt(&child);
    assert_eq!(
        wait_exit(&mut child, RUN_LIMIT).code(),
        Some(0),
        "an optional failure is not a failed run"
    );
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("models: FAILED: exited with exit 3"), "{log}");
    assert!(
        log.contains("vision: skipped: needs `models`, which failed"),
        "{log}"
    );
    let rec = records(&p.path().join("rec"));
    assert!(
        rec.iter().any(|r| r.name == "api" && r.event == "ready"),
        "{rec:?}"
    );
    assert!(
        !rec.iter().any(|r| r.name == "vision"),
        "vision must never start: {rec:?}"
    );
    // An optional node's own dependencies are optional unless it says otherwise: it goes on.
    assert!(
        rec.iter()
            .any(|r| r.name == "captions" && r.event == "ready"),
        "{rec:?}"
    );
}

#[test]
fn required_failure_aborts_names_the_node_and_leaves_no_process() {
    let p = project(|p| {
        format!(
            "[services.db]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n\n\
             [services.api]\ncommand = {}\ndepends_on = [\"db\"]\nhealth = {{ log = \"ready\" }}\n\n\
             [services.worker]\ncommand = {}\nhealth = {{ log = \"never printed\" }}\n",
            svc(p, "db", ""),
            svc(p, "api", "--crash-times 99 --chatter 3"),
            svc(p, "worker", "--ignore-sigterm"),
        )
    });
    let marker = p.path().join("command-ran");
    let script = format!("touch {}", marker.display());
    let out = run_with_command(&p, &["--", "sh", "-c", &script]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr_of(&out));
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("required service `api` failed: exited before it was ready (exit 1)"),
        "{stderr}"
    );
    assert!(stderr.contains("last 4 lines of api"), "{stderr}");
    assert!(
        stderr.contains("api: crashing on start as asked"),
        "{stderr}"
    );
    assert!(
        !marker.exists(),
        "the -- command must not run when startup fails"
    );
    for (name, pid) in spawned_pids(&p) {
        assert!(!alive(pid), "{name} (pid {pid}) survived");
    }
}

#[test]
fn retries_then_success() {
    let p = project(|p| {
        let state = p.path().join("crashes");
        format!(
            "[services.flaky]\ncommand = {}\nretries = 2\nhealth = {{ log = \"ready\" }}\n",
            svc(
                p,
                "flaky",
                &format!("--crash-times 2 --state-file {}", state.display())
            ),
        )
    });
    let out = run_with_command(&p, &["--", "true"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let stdout = stdout_of(&out);
    assert!(
        stdout
            .contains("flaky: attempt 1 failed: exited before it was ready (exit 1); retrying in"),
        "{stdout}"
    );
    assert!(stdout.contains("flaky: spawned (pid"), "{stdout}");
    assert!(stdout.contains("attempt 3)"), "{stdout}");
    assert!(stdout.contains("flaky: ready after"), "{stdout}");
}

#[test]
fn startup_timeout_says_what_it_waited_for() {
    let port = free_port();
    let p = project(|p| {
        format!(
            "[services.stuck]\ncommand = {}\nport = {port}\nstartup_timeout = \"1s\"\n",
            svc(p, "stuck", "--hang"),
        )
    });
    let out = run_with_command(&p, &[]);
    assert_eq!(out.status.code(), Some(4));
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains(&format!(
            "not ready within 1s (waited for tcp localhost:{port})"
        )),
        "{stderr}"
    );
}

#[test]
fn global_startup_timeout_lists_what_was_pending() {
    let p = project(|p| {
        format!(
            "[settings]\nstartup_timeout = \"1s\"\n[services.slow]\ncommand = {}\nhealth = {{ log = \"never\" }}\n\
             [services.api]\ncommand = {}\ndepends_on = [\"slow\"]\n",
            svc(p, "slow", "--hang"),
            svc(p, "api", ""),
        )
    });
    let out = run_with_command(&p, &[]);
    assert_eq!(out.status.code(), Some(4));
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("startup did not complete within 1s"),
        "{stderr}"
    );
    assert!(
        stderr.contains("`api` was waiting for slow (healthy)"),
        "{stderr}"
    );
}

#[test]
fn log_readiness_and_exec_probe() {
    let port = free_port();
    let p = project(|p| {
        format!(
            "[services.logged]\ncommand = {}\nhealth = {{ log = \"warmed-up\" }}\n\n\
             [services.execd]\ncommand = {}\nport = {port}\nhealth = {{ exec = [\"sh\", \"-c\", \"grep -q 'execd ready' {rec}\"] }}\n\
             [services.after]\ncommand = {}\ndepends_on = [\"logged\", \"execd\"]\nhealth = {{ log = \"ready\" }}\n",
            svc(p, "logged", "--delay 200ms --ready-line warmed-up"),
            svc(p, "execd", &format!("--delay 200ms --port {port}")),
            svc(p, "after", ""),
            rec = p.path().join("rec").display(),
        )
    });
    let out = run_with_command(&p, &["--", "true"]);
    assert_success(&out);
    let rec = records(&p.path().join("rec"));
    assert!(at(&rec, "after", "start") >= at(&rec, "logged", "ready"));
}

#[test]
fn command_exit_status_becomes_dagstarts() {
    let p = project(|p| {
        format!(
            "[services.api]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n",
            svc(p, "api", "")
        )
    });
    let out = run_with_command(&p, &["--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr_of(&out));
    assert!(!alive(spawned_pid(&p, "api")));
}

#[test]
fn component_exit_zero_is_final_success_for_the_command() {
    let p = project(|p| {
        format!(
            "[components.only]\ncommand = {}\n",
            svc(p, "only", "--oneshot")
        )
    });
    let out = run_with_command(&p, &["--", "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
}

#[test]
fn preflight_reports_every_problem_and_starts_nothing() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let p = project(|p| {
        format!(
            "[services.a]\ncommand = \"./no-such-binary\"\n\n[services.b]\ncommand = {}\ncwd = \"missing-dir\"\n\n\
             [services.c]\ncommand = {}\nport = {port}\n\n[services.d]\ncommand = \"definitely-not-on-path-xyz\"\n",
            svc(p, "b", ""),
            svc(p, "c", ""),
        )
    });
    let out = run_with_command(&p, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    let stderr = stderr_of(&out);
    // Commands that do not resolve are warnings, located (an earlier component may build
    // them); the rest refuses the run.
    assert!(
        stderr.contains("`a`: command `./no-such-binary` does not exist"),
        "{stderr}"
    );
    assert!(stderr.contains("services.toml:1:11"), "{stderr}");
    assert!(stderr.contains("b: working directory"), "{stderr}");
    // The process holding the port is named (here: this test).
    assert!(
        stderr.contains(&format!(
            "c: port {port} is already in use (by `{}`, pid {})",
            std::fs::read_to_string("/proc/self/comm").unwrap().trim(),
            std::process::id()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("`d`: command `definitely-not-on-path-xyz` is not found in PATH"),
        "{stderr}"
    );
    assert!(
        records(&p.path().join("rec")).is_empty(),
        "nothing may start"
    );
}

#[test]
fn every_output_line_reaches_the_terminal_and_the_log_file() {
    let p = project(|p| {
        format!(
            "[components.talker]\ncommand = {}\n",
            svc(p, "talker", "--chatter 500 --oneshot")
        )
    });
    let out = run_with_command(&p, &["--", "true"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let log = std::fs::read_to_string(p.path().join("logs/talker.log")).unwrap();
    for i in 0..500 {
        assert!(
            log.contains(&format!("talker: chatter line {i}\n")),
            "line {i} missing from the log"
        );
    }
    let stdout = stdout_of(&out);
    assert_eq!(stdout.matches("talker | talker: chatter line").count(), 500);
    let own = p.own_log();
    assert!(own.contains("talker: completed after"), "{own}");
}

/// Touches `both-null` if the shell's stdout and stderr are /dev/null (`test` is a builtin:
/// /proc/self is the shell).
const NULL_CHECK: &str =
    "[ /proc/self/fd/1 -ef /dev/null ] && [ /proc/self/fd/2 -ef /dev/null ] && touch both-null";

#[test]
fn a_discarded_output_goes_to_dev_null_and_nowhere_else() {
    let p = project(|p| {
        format!(
            "[components.talker]\ncommand = {}\noutput = \"discard\"\n\
             [components.where]\ncommand = [\"sh\", \"-c\", \"{NULL_CHECK}\"]\noutput = \"discard\"\n",
            svc(p, "talker", "--chatter 50 --oneshot")
        )
    });
    let out = run_with_command(&p, &["--", "true"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(!stdout_of(&out).contains("chatter line"));
    let log = std::fs::read_to_string(p.path().join("logs/talker.log")).unwrap_or_default();
    assert!(!log.contains("chatter line"), "{log}");
    assert!(p.path().join("both-null").exists());
    assert!(p.own_log().contains("talker: completed after"));
}

#[test]
fn sigterm_stops_everything_in_reverse_order_and_leaves_no_process() {
    let p = project(|p| {
        let grandchild = p.path().join("grandchild.pid");
        format!(
            "[services.base]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n\n\
             [services.stubborn]\ncommand = {}\ndepends_on = [\"base\"]\nstop_timeout = \"300ms\"\nhealth = {{ log = \"ready\" }}\n\n\
             [services.forker]\ncommand = \"exec {} --name forker --record {} --grandchild-pid-file {} --setsid-grandchild-pid-file {}\"\n\
             shell = true\ndepends_on = [\"base\"]\nhealth = {{ log = \"ready\" }}\n",
            svc(p, "base", ""),
            svc(p, "stubborn", "--ignore-sigterm"),
            demo_svc(),
            p.path().join("rec").display(),
            grandchild.display(),
            p.path().join("escapee.pid").display(),
        )
    });
    let mut child = start_in_background(&p, &["run"]);
    wait_until(RUN_LIMIT, "the grandchildren to start", || {
        p.path().join("grandchild.pid").exists() && p.path().join("escapee.pid").exists()
    });
    // The init, three services, a grandchild and an escapee.
    let run = run_namespace_processes(child.id());
    assert!(run.len() >= 6, "{run:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_exit(&mut child, RUN_LIMIT);
    assert_eq!(status.code(), Some(0));
    for pid in run {
        assert!(!alive(pid), "pid {pid} survived dagstart");
    }
    let log = p.own_log();
    let base_stop = log.find("base: stopping").expect("base stopped");
    for dependent in ["stubborn: did not stop in time", "forker: stopped"] {
        assert!(
            log.find(dependent).expect(dependent) < base_stop,
            "{dependent} must stop before base:\n{log}"
        );
    }
    assert!(
        log.contains("stubborn: did not stop in time, killed"),
        "{log}"
    );
}

#[test]
fn interrupt_before_ready_exits_130_and_cleans_up() {
    let p = project(|p| {
        format!(
            "[services.slow]\ncommand = {}\nhealth = {{ log = \"never\" }}\n",
            svc(p, "slow", "--hang")
        )
    });
    let mut child = spawn_in_background(&p, &["run"]);
    let rec = p.path().join("rec");
    wait_until(RUN_LIMIT, "the service to start", || {
        !records(&rec).is_empty()
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = wait_exit(&mut child, RUN_LIMIT);
    assert_eq!(status.code(), Some(130));
    assert!(!alive(spawned_pid(&p, "slow")));
}

#[test]
fn naming_nodes_starts_only_them_and_what_they_need() {
    let p = project(|p| {
        format!(
            "[services.db]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n\
             [services.api]\ncommand = {}\ndepends_on = [\"db\"]\nhealth = {{ log = \"ready\" }}\n\
             [services.other]\ncommand = {}\n",
            svc(p, "db", ""),
            svc(p, "api", ""),
            svc(p, "other", ""),
        )
    });
    let out = run_with_command(&p, &["api", "--", "true"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let rec = records(&p.path().join("rec"));
    assert!(rec.iter().any(|r| r.name == "db") && rec.iter().any(|r| r.name == "api"));
    assert!(!rec.iter().any(|r| r.name == "other"), "{rec:?}");
}

#[test]
fn the_shipped_demo_stack_starts_and_stops_cleanly() {
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/services.toml")).unwrap();
    let mut p = Project::new(&shipped).env("DEMO_SVC", demo_svc());
    for var in [
        "WS_ROUTER_PORT",
        "BACKEND_PORT",
        "VISION_PORT",
        "VOICE_PORT",
        "MONITORING_PORT",
    ] {
        p = p.env(var, &free_port().to_string());
    }
    let out = run_with_command(&p, &["--", "true"]);
    assert_success(&out);
    let stdout = stdout_of(&out);
    assert!(stdout.contains("startup complete: ready in"), "{stdout}");
    assert!(stdout.contains("critical path: load_models"), "{stdout}");
    assert!(stdout.contains("everything stopped in"), "{stdout}");
}

/// The project of the kill -9 tests: a service with a grandchild, one with a `setsid()`
/// escapee, one whose escapee also clears its environment (invisible to the guardian's
/// marker sweep), and a plain one; `settings` goes first in the file.
fn forking_project(settings: &str, hider_sleep: u32) -> Project {
    project(|p| {
        format!(
            "{settings}[services.forker]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n\n\
             [services.escaper]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n\n\
             [services.hider]\ncommand = \"(env -i setsid sleep {hider_sleep} &); echo ready; exec sleep 3600\"\n\
             shell = true\nhealth = {{ log = \"ready\" }}\n\n\
             [services.plain]\ncommand = \"exec {} --name plain --record {}\"\nshell = true\nhealth = {{ log = \"ready\" }}\n",
            svc(
                p,
                "forker",
                &format!(
                    "--grandchild-pid-file {}",
                    p.path().join("grandchild.pid").display()
                )
            ),
            svc(
                p,
                "escaper",
                &format!(
                    "--setsid-grandchild-pid-file {}",
                    p.path().join("escapee.pid").display()
                )
            ),
            demo_svc(),
            p.path().join("rec").display(),
        )
    })
}

/// Hardening: `pkill -9 dagstart` (dagstart and its guardian at once) leaves nothing: the
/// kernel ends the run's PID namespace, escapees that cleared their environment included.
#[test]
fn sigkill_of_dagstart_and_its_guardian_leaves_nothing_in_the_pid_namespace() {
    let p = forking_project("", 3600);
    let mut child = start_in_background(&p, &["run"]);
    wait_until(RUN_LIMIT, "the grandchildren to start", || {
        p.path().join("grandchild.pid").exists() && p.path().join("escapee.pid").exists()
    });
    let run = run_namespace_processes(child.id());
    if run.is_empty() {
        eprintln!("skipped: no PID namespace here (needs root)");
        return;
    }
    // The init, four services, a grandchild, two escapees and the hider's shell at least.
    assert!(run.len() >= 8, "{run:?}");
    sigkill_dagstart_and_its_guardian(&mut child);
    wait_until_all_gone(&run);
}

/// `pkill -9 dagstart`: SIGKILL to the guardian and to dagstart, so no cleanup code of either
/// runs.
fn sigkill_dagstart_and_its_guardian(dagstart: &mut std::process::Child) {
    let guardian = guardian_of(dagstart.id()).expect("the guardian runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(guardian),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    dagstart.kill().unwrap();
    let _ = dagstart.wait();
}

fn wait_until_all_gone(pids: &[i32]) {
    wait_until(
        Duration::from_secs(10),
        "every process of the run to be gone",
        || pids.iter().all(|&pid| !alive(pid)),
    );
}

/// Without the namespace (not root, or `pid_namespace = false`) the guardian is the last
/// line: grandchildren and escapees that keep the run's marker are gone after a kill -9.
#[test]
fn sigkill_of_dagstart_leaves_nothing_running_through_the_guardian() {
    let p = forking_project("[settings]\npid_namespace = false\n\n", 3599);
    let mut child = start_in_background(&p, &["run"]);
    let mut pids = spawned_pids(&p);
    for file in ["grandchild.pid", "escapee.pid"] {
        let pid = std::fs::read_to_string(p.path().join(file))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        pids.push((file.to_owned(), pid));
    }
    // The hider's escapee cleared its environment: only the namespace would catch it.
    pids.retain(|(name, _)| name != "hider");
    assert!(pids.iter().all(|&(_, pid)| alive(pid)), "{pids:?}");
    child.kill().unwrap(); // SIGKILL: no handler, no cleanup code in dagstart runs.
    let _ = child.wait();
    wait_until(
        Duration::from_secs(10),
        "every process of the run to be gone",
        || pids.iter().all(|&(_, pid)| !alive(pid)),
    );
    let _ = std::process::Command::new("pkill")
        .args(["-f", "^sleep 3599$"])
        .status();
}

#[test]
fn scarce_start_slots_go_to_the_critical_path_first() {
    let p = project(|p| {
        format!(
            "[settings]\nmax_workers = 1\n\n[components.leaf]\ncommand = {}\n\n\
             [components.head]\ncommand = {}\n\n[components.tail]\ncommand = {}\ndepends_on = [\"head\"]\n",
            svc(p, "leaf", "--oneshot --delay 100ms"),
            svc(p, "head", "--oneshot --delay 100ms"),
            svc(p, "tail", "--oneshot"),
        )
    });
    let out = run_with_command(&p, &["--", "true"]);
    assert_success(&out);
    let rec = records(&p.path().join("rec"));
    // `leaf` comes first in the file, but `head` has work behind it.
    assert!(
        at(&rec, "head", "start") < at(&rec, "leaf", "start"),
        "{rec:?}"
    );
}

#[test]
fn auto_workers_start_cpu_heavy_nodes_and_finish() {
    let p = project(|p| {
        let mut text = String::from("[settings]\nmax_workers = \"auto\"\n");
        for i in 0..6 {
            text.push_str(&format!(
                "[components.c{i}]\ncommand = {}\n",
                svc(p, &format!("c{i}"), "--oneshot --burn 100ms")
            ));
        }
        text
    });
    let out = run_with_command(&p, &["--", "true"]);
    assert_success(&out);
    assert_eq!(
        records(&p.path().join("rec"))
            .iter()
            .filter(|r| r.event == "ready")
            .count(),
        6
    );
}

#[test]
fn output_json_gives_one_object_per_event() {
    let p = project(|p| {
        format!(
            "[services.db]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n[components.migrate]\ncommand = {}\ndepends_on = [\"db\"]\n",
            svc(p, "db", "--chatter 2"),
            svc(p, "migrate", "--oneshot"),
        )
    });
    let out = run_with_command(&p, &["--output", "json", "--", "true"]);
    assert_success(&out);
    let events: Vec<serde_json::Value> = stdout_of(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"plan"));
    assert_eq!(kinds.last(), Some(&"shutdown_complete"));
    let spawned = events
        .iter()
        .find(|e| e["event"] == "spawned" && e["node"] == "db")
        .unwrap();
    assert!(spawned["pid"].as_u64().is_some() && spawned["attempt"] == 1);
    assert!(
        events.iter().any(|e| e["event"] == "output"
            && e["node"] == "db"
            && e["line"] == "db: chatter line 0")
    );
    let complete = events
        .iter()
        .find(|e| e["event"] == "startup_complete")
        .unwrap();
    assert_eq!(
        complete["critical_path"],
        serde_json::json!(["db", "migrate"])
    );
    assert!(
        events
            .windows(2)
            .all(|w| w[0]["t"].as_f64() <= w[1]["t"].as_f64()),
        "in time order"
    );
}

#[test]
fn on_a_terminal_a_live_view_shows_each_node_and_collapses_to_the_summary() {
    if !std::path::Path::new("/usr/bin/script").exists() {
        eprintln!("skipped: script(1) is not installed to provide a terminal");
        return;
    }
    let p = project(|p| {
        format!(
            "[services.db]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n[services.api]\ncommand = {}\ndepends_on = [\"db\"]\nhealth = {{ log = \"ready\" }}\n",
            svc(p, "db", "--delay 400ms"),
            svc(p, "api", ""),
        )
    });
    let command = format!("{} run -- true", env!("CARGO_BIN_EXE_dagstart"));
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(p.path())
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        screen.contains("waiting for db"),
        "the live view shows what api waits for:\n{screen}"
    );
    assert!(screen.contains("probing (pid"), "{screen}");
    assert!(screen.contains("startup complete: ready in"), "{screen}");
}

/// Real stacks: a command that does not resolve is only a warning at `run` (an earlier
/// component may build it); if it still does not exist at spawn, the failure names where
/// the node is declared.
#[test]
fn a_command_built_by_an_earlier_component_runs_and_a_missing_one_is_located_at_spawn() {
    let p = project(|p| {
        format!(
            "[components.build]\ncommand = \"printf '#!/bin/sh\\\\necho built\\\\n' > tool && chmod +x tool\"\nshell = true\n\n\
             [components.use]\ncommand = \"./tool\"\ndepends_on = [\"build\"]\n\n\
             [services.never]\ncommand = {}\ndepends_on = [\"use\"]\nhealth = {{ log = \"ready\" }}\n",
            svc(p, "never", "")
        )
    });
    let out = run_with_command(&p, &["--", "true"]);
    assert_success(&out);
    assert!(stderr_of(&out).contains("`use`: command `./tool` does not exist"));
    assert!(stdout_of(&out).contains("built"), "{}", stdout_of(&out));

    let p = Project::new("[services.ghost]\ncommand = \"./not-there\"\n");
    let out = run_with_command(&p, &["--", "true"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr_of(&out));
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("cannot start `./not-there`")
            && stderr.contains("declared at services.toml:1:11"),
        "{stderr}"
    );
}

/// `dagstart` as `nobody` (in `p`, made writable for it), through setpriv; `None` where that
/// is not possible (needs root and setpriv).
fn as_nobody(p: &Project, args: &[&str]) -> Option<std::process::Command> {
    use std::os::unix::fs::PermissionsExt as _;
    if !nix::unistd::geteuid().is_root() || !std::path::Path::new("/usr/bin/setpriv").exists() {
        eprintln!("skipped: needs root to become nobody, and setpriv");
        return None;
    }
    std::fs::set_permissions(p.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut command = std::process::Command::new("/usr/bin/setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_dagstart"))
        .args(args)
        .current_dir(p.path())
        .env("TMPDIR", "/tmp");
    Some(command)
}

/// True where this machine lets an unprivileged user create a user namespace.
fn unprivileged_user_namespaces() -> bool {
    let allowed = std::process::Command::new("/usr/bin/setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["unshare", "--user", "--pid", "--fork", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !allowed {
        eprintln!("skipped: unprivileged user namespaces are not allowed here");
    }
    allowed
}

/// Hardening: without root, the run's processes are still in a PID namespace (through a user
/// namespace that maps only the user's own ids): the nodes and the `--` command see the
/// namespace's pids, and run as the user, unprivileged.
#[test]
fn an_unprivileged_run_is_contained_through_a_user_namespace() {
    let p = Project::new(
        "[services.a]\ncommand = \"grep NSpid /proc/self/status; echo ready; exec sleep 600\"\n\
         shell = true\nhealth = { log = \"ready\" }\n",
    );
    let Some(mut command) = as_nobody(
        &p,
        &[
            "run",
            "--",
            "sh",
            "-c",
            "readlink /proc/self/ns/pid; echo pid $$; id -u; grep CapEff /proc/self/status",
        ],
    ) else {
        return;
    };
    if !unprivileged_user_namespaces() {
        return;
    }
    let out = command.output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let stdout = stdout_of(&out);
    let own = std::fs::read_link("/proc/self/ns/pid").unwrap();
    assert!(stdout.contains("pid:["), "{stdout}");
    assert!(!stdout.contains(&*own.to_string_lossy()), "{stdout}");
    // The namespace's own numbers: its init is 1, the node and its waiting parent come next.
    let pid: u32 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("pid "))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(pid < 100, "{stdout}");
    assert!(stdout.contains("\n65534\n"), "{stdout}");
    assert!(stdout.contains("CapEff:\t0000000000000000"), "{stdout}");
}

/// ... and `pkill -9 dagstart` as that user leaves nothing either: grandchildren, escapees,
/// escapees that cleared their environment, and the nodes' waiting parents.
#[test]
fn an_unprivileged_sigkill_of_dagstart_and_its_guardian_leaves_nothing() {
    let p = forking_project("", 3598);
    let Some(mut command) = as_nobody(&p, &["run"]) else {
        return;
    };
    if !unprivileged_user_namespaces() {
        return;
    }
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(RUN_LIMIT, "the grandchildren to start", || {
        p.path().join("grandchild.pid").exists() && p.path().join("escapee.pid").exists()
    });
    p.wait_for_startup();
    // setpriv execs dagstart: the child is dagstart.
    let mut run = run_namespace_processes(child.id());
    assert!(run.len() >= 8, "{run:?}");
    run.extend(spawned_pids(&p).into_iter().map(|(_, pid)| pid));
    sigkill_dagstart_and_its_guardian(&mut child);
    wait_until_all_gone(&run);
}

/// Without the namespace (`pid_namespace = false`, or where user namespaces are not allowed)
/// an unprivileged run works as before.
#[test]
fn an_unprivileged_run_works_without_the_pid_namespace() {
    let p = Project::new(
        "[settings]\npid_namespace = false\n\n[services.a]\ncommand = \"sleep 600\"\n",
    );
    let Some(mut command) = as_nobody(&p, &["run", "--", "readlink", "/proc/self/ns/pid"]) else {
        return;
    };
    let out = command.output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains("startup complete"));
    let own = std::fs::read_link("/proc/self/ns/pid").unwrap();
    assert!(
        stdout_of(&out).contains(&*own.to_string_lossy()),
        "{}",
        stdout_of(&out)
    );
}
