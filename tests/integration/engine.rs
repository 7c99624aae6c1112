//! The engine-core defects, seen from outside with real processes: a stop during a restart
//! backoff, a node added back by a reload, a stack of lazy socket services, a crash-looping
//! dependency, a terminal that stops reading, a run that is SIGKILLed.

use std::io::Read as _;
use std::time::Duration;

use crate::harness::{
    Project, RUN_LIMIT, alive, free_port, project, records, spawn_in_background, spawned_pid,
    start_in_background, status_json, stderr_of, stdout_of, svc, wait_exit, wait_until,
};

fn state_of(p: &Project, name: &str) -> Option<String> {
    status_json(p)
        .iter()
        .find(|n| n["name"] == name)
        .map(|n| n["state"].as_str().unwrap_or_default().to_owned())
}

fn down(p: &Project, child: &mut std::process::Child) -> std::process::ExitStatus {
    let out = p.dagstart(&["down"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    wait_exit(child, RUN_LIMIT)
}

#[test]
fn a_service_stopped_during_its_restart_backoff_stays_down() {
    let p = project(|p| {
        format!(
            "[services.flaky]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n\
             restart = \"always\"\nrestart_backoff = \"1s\"\n\n\
             [services.other]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n",
            svc(p, "flaky", "--exit-after 300ms --exit-code 1"),
            svc(p, "other", ""),
        )
    });
    let mut child = start_in_background(&p, &["run"]);
    wait_until(RUN_LIMIT, "the restart backoff", || {
        p.own_log().contains("flaky: restarting in")
    });
    let out = p.dagstart(&["stop", "flaky"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    // Longer than the backoff: a wrong scheduler starts it again meanwhile.
    std::thread::sleep(Duration::from_millis(2500));
    let starts = records(&p.path().join("rec"))
        .iter()
        .filter(|r| r.name == "flaky" && r.event == "start")
        .count();
    assert_eq!(starts, 1, "started again after `dagstart stop`");
    assert_eq!(state_of(&p, "flaky").as_deref(), Some("stopped"));
    assert!(down(&p, &mut child).success());
}

#[test]
fn a_node_removed_by_a_reload_and_added_back_starts_again() {
    let mut text = String::new();
    let p = project(|p| {
        text = format!(
            "[services.a]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n\n\
             [services.b]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n",
            svc(p, "a", ""),
            svc(p, "b", ""),
        );
        text.clone()
    });
    let mut child = start_in_background(&p, &["run"]);
    let without_b = text[..text.find("[services.b]").unwrap()].to_owned();
    p.file("services.toml", &without_b);
    let out = p.dagstart(&["reload"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    wait_until(RUN_LIMIT, "b to be removed", || state_of(&p, "b").is_none());
    p.file("services.toml", &text);
    let out = p.dagstart(&["reload"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains("added: b"), "{}", stdout_of(&out));
    wait_until(RUN_LIMIT, "b to be ready again", || {
        state_of(&p, "b").as_deref() == Some("ready")
    });
    assert!(down(&p, &mut child).success());
}

#[test]
fn a_stack_of_lazy_socket_services_waits_for_its_first_connection() {
    let port = free_port();
    let p = project(|p| {
        format!(
            "[services.api]\ncommand = {}\nsockets = [{port}]\nlazy = true\n\
             health = {{ log = \"ready\" }}\n",
            svc(p, "api", "--socket-activated"),
        )
    });
    let mut child = start_in_background(&p, &["run"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "dagstart ended before any connection:\n{}",
        p.own_log()
    );
    let _connection = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    wait_until(RUN_LIMIT, "api to start on its first connection", || {
        state_of(&p, "api").as_deref() == Some("ready")
    });
    assert!(down(&p, &mut child).success());
}

#[test]
fn a_crash_looping_required_dependency_stops_what_needs_it_and_the_run_exits_7() {
    let p = project(|p| {
        format!(
            "[services.db]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n\
             restart = \"always\"\nrestart_backoff = \"100ms\"\nmax_restarts = 1\n\n\
             [services.app]\ncommand = {}\ndepends_on = [\"db\"]\nhealth = {{ log = \"ready\" }}\n",
            svc(p, "db", "--exit-after 700ms --exit-code 1"),
            svc(p, "app", ""),
        )
    });
    let out = p
        .dagstart(&["run"])
        .timeout(RUN_LIMIT)
        .output()
        .expect("dagstart runs");
    let log = p.own_log();
    assert_eq!(out.status.code(), Some(7), "{}\n{log}", stderr_of(&out));
    assert!(log.contains("db: FAILED: crash loop"), "{log}");
    assert!(log.contains("stopping app: needs `db`"), "{log}");
    assert!(stderr_of(&out).contains("db"), "{}", stderr_of(&out));
}

#[test]
fn a_terminal_that_stops_reading_loses_no_log_line_and_does_not_hold_up_sigterm() {
    const LINES: usize = 300_000;
    let p = Project::new(&format!(
        "[services.flood]\ncommand = \"seq 1 {LINES}; exec sleep 600\"\nshell = true\n"
    ));
    // stdout is a pipe nobody reads, like `dagstart run | less` left paused.
    let mut child = p
        .dagstart_std(&["run"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let log = p.path().join("logs/flood.log");
    wait_until(RUN_LIMIT, "every line in flood.log", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == LINES)
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines()
            .enumerate()
            .all(|(i, l)| dagstart::views::logfiles::split_stamp(l).1 == (i + 1).to_string())
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_exit(&mut child, RUN_LIMIT);
    assert_eq!(status.code(), Some(0), "{}", p.own_log());
    assert!(
        p.own_log().contains("the terminal did not keep up"),
        "{}",
        p.own_log()
    );
    // What the terminal got still ends well: no half-written lines.
    let mut shown = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut shown)
        .unwrap();
    assert!(
        shown.starts_with("dagstart |"),
        "{}",
        &shown[..200.min(shown.len())]
    );
}

/// `api` on `db`, both demo-svc ready on their "ready" line, each started with `flags`.
fn db_and_api(flags: &str) -> Project {
    project(|p| {
        format!(
            "[services.db]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n\n\
             [services.api]\ncommand = {}\ndepends_on = [\"db\"]\nhealth = {{ log = \"ready\" }}\n",
            svc(p, "db", flags),
            svc(p, "api", flags),
        )
    })
}

#[test]
fn a_killed_run_leaves_its_record_for_report() {
    let p = db_and_api("--delay 100ms");
    let mut child = start_in_background(&p, &["run"]);
    let api = spawned_pid(&p, "api");
    child.kill().unwrap();
    child.wait().unwrap();
    let out = p.dagstart(&["report"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let report = stdout_of(&out);
    assert!(report.contains("api") && report.contains("db"), "{report}");
    assert!(report.contains("critical"), "{report}");
    wait_until(RUN_LIMIT, "the guardian to take the stack down", || {
        !alive(api)
    });
}

/// Hardening: closing the terminal (SIGHUP) is a graceful shutdown like SIGTERM.
#[test]
fn sighup_stops_the_stack_gracefully() {
    let p = db_and_api("");
    let mut child = start_in_background(&p, &["run"]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    assert_eq!(wait_exit(&mut child, RUN_LIMIT).code(), Some(0));
    let log = p.own_log();
    assert!(log.contains("shutting down (received SIGHUP)"), "{log}");
    let (api, db) = (
        log.find("api: stopped").unwrap(),
        log.find("db: stopped").unwrap(),
    );
    assert!(api < db, "stopped in reverse dependency order:\n{log}");
    assert!(
        !log.contains("did not stop in time"),
        "no SIGKILL was needed:\n{log}"
    );
}

/// Hardening: one run per project rests on a lock, not on the control socket.
#[test]
fn a_second_run_is_refused_even_when_the_control_socket_is_gone() {
    let p = project(|p| format!("[services.a]\ncommand = {}\n", svc(p, "a", "")));
    let mut child = start_in_background(&p, &["run"]);
    std::fs::remove_file(p.path().join(".dagstart/control.sock")).unwrap();
    let second = p
        .dagstart(&["run"])
        .timeout(RUN_LIMIT)
        .output()
        .expect("dagstart runs");
    assert_eq!(second.status.code(), Some(6), "{}", stderr_of(&second));
    assert_eq!(
        records(&p.path().join("rec"))
            .iter()
            .filter(|r| r.event == "start")
            .count(),
        1,
        "a second supervisor started the stack again"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Hardening: the runtime directory has an unpredictable name, is private, and is removed by
/// the guardian when dagstart is SIGKILLed.
#[test]
fn the_runtime_directory_is_private_unpredictable_and_cleaned_up_after_a_kill() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let p = project(|p| format!("[services.a]\ncommand = {}\n", svc(p, "a", "")))
        .env("TMPDIR", tmp.path().to_str().unwrap());
    let mut child = start_in_background(&p, &["run"]);
    let entries: Vec<std::path::PathBuf> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let name = entries[0].file_name().unwrap().to_str().unwrap().to_owned();
    assert!(name.starts_with("dagstart-"), "{name}");
    assert_ne!(
        name,
        format!("dagstart-{}", child.id()),
        "named after the pid"
    );
    let mode = std::fs::metadata(&entries[0]).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    child.kill().unwrap();
    child.wait().unwrap();
    wait_until(
        RUN_LIMIT,
        "the guardian to remove the runtime directory",
        || !entries[0].exists(),
    );
    // Killed together with its guardian (`pkill -9 dagstart`): the next run cleans up.
    // (The log still says "startup complete" from the first run: wait for the guardian.)
    let mut child = spawn_in_background(&p, &["run"]);
    wait_until(RUN_LIMIT, "the second run's guardian", || {
        crate::harness::guardian_of(child.id()).is_some()
    });
    let guardian = crate::harness::guardian_of(child.id()).unwrap();
    let left: Vec<std::path::PathBuf> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(guardian),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(left[0].exists(), "nobody was left to remove it");
    crate::harness::assert_success(&crate::harness::run_with_command(&p, &["--", "true"]));
    assert!(
        !left[0].exists(),
        "the next run removes what a killed run left"
    );
}

/// Hardening: logs and run records are private to the user (services print secrets).
#[test]
fn logs_and_run_records_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    // Log readiness: `a` has written a line (so its log file exists) before the command runs.
    let p = project(|p| {
        format!(
            "[services.a]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n",
            svc(p, "a", "")
        )
    });
    crate::harness::assert_success(&crate::harness::run_with_command(&p, &["--", "true"]));
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let runs = p.path().join(".dagstart/runs");
    let record = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for (path, expected) in [
        (p.path().join("logs"), 0o700),
        (p.path().join("logs/a.log"), 0o600),
        (p.path().join("logs/dagstart.log"), 0o600),
        (runs.clone(), 0o700),
        (record, 0o600),
    ] {
        assert_eq!(mode(&path), expected, "{}", path.display());
    }
}

/// Hardening: a project however deep in the file system can run and be steered (unix socket
/// paths are limited to 108 bytes).
#[test]
fn a_project_deep_in_the_file_system_runs_and_answers() {
    let root = tempfile::tempdir().unwrap();
    let deep = root
        .path()
        .join("a-directory-name-of-sixty-characters-to-make-the-path-long-1")
        .join("a-directory-name-of-sixty-characters-to-make-the-path-long-2");
    std::fs::create_dir_all(&deep).unwrap();
    assert!(deep.join(".dagstart/control.sock").as_os_str().len() > 108);
    let run_in = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dagstart"));
        cmd.current_dir(&deep).args(args);
        cmd
    };
    std::fs::write(
        deep.join("services.toml"),
        format!(
            "[services.a]\ncommand = [\"{}\", \"--name\", \"a\"]\nhealth = {{ log = \"ready\" }}\n",
            crate::harness::demo_svc()
        ),
    )
    .unwrap();
    let mut child = crate::harness::Running::from(
        run_in(&["run"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_until(RUN_LIMIT, "startup to complete", || {
        std::fs::read_to_string(deep.join("logs/dagstart.log"))
            .is_ok_and(|l| l.contains("startup complete"))
    });
    let status = run_in(&["status"]).output().unwrap();
    assert!(status.status.success(), "{}", stderr_of(&status));
    assert!(
        stdout_of(&status).contains("ready"),
        "{}",
        stdout_of(&status)
    );
    assert!(run_in(&["down"]).output().unwrap().status.success());
    assert_eq!(wait_exit(&mut child, RUN_LIMIT).code(), Some(0));
}

/// Hardening: node logs are rotated by size and bounded in number.
#[test]
fn node_logs_rotate_by_size() {
    let p = Project::new(
        "[settings]\nlog_max_size = \"2KiB\"\nlog_keep = 2\n\n\
         [services.chatty]\ncommand = \"seq 1 2000; exec sleep 600\"\nshell = true\n\n\
         [services.own_rotation]\ncommand = \"seq 1 2000; exec sleep 600\"\nshell = true\n\
         log_max_size = \"4KiB\"\nlog_keep = 1\n",
    );
    let mut child = start_in_background(&p, &["run"]);
    let logs = p.path().join("logs");
    wait_until(RUN_LIMIT, "the last line in the current logs", || {
        ["chatty.log", "own_rotation.log"].iter().all(|name| {
            std::fs::read_to_string(logs.join(name)).is_ok_and(|t| t.ends_with("2000\n"))
        })
    });
    // A node's own settings win over [settings].
    let own = std::fs::read_to_string(logs.join("own_rotation.log.1")).unwrap();
    assert!(own.len() > 2048 && own.len() <= 4096, "{} bytes", own.len());
    assert!(!logs.join("own_rotation.log.2").exists());
    let read = |name: &str| std::fs::read_to_string(logs.join(name)).unwrap();
    let (current, older, oldest) = (
        read("chatty.log"),
        read("chatty.log.1"),
        read("chatty.log.2"),
    );
    assert!(
        !logs.join("chatty.log.3").exists(),
        "only log_keep old files are kept"
    );
    for text in [&current, &older, &oldest] {
        assert!(text.len() <= 2048, "{} bytes", text.len());
    }
    // The newest lines, in order, across the files.
    let lines: Vec<u32> = [&oldest, &older, &current]
        .iter()
        .flat_map(|t| {
            t.lines().map(|l| {
                dagstart::views::logfiles::split_stamp(l)
                    .1
                    .parse::<u32>()
                    .unwrap()
            })
        })
        .collect();
    assert!(lines.windows(2).all(|w| w[1] == w[0] + 1), "{lines:?}");
    assert_eq!(*lines.last().unwrap(), 2000);
    assert!(down(&p, &mut child).success());
}

/// Hardening: a log that cannot be written (a full disk, here a directory in its place) is
/// reported once, and the run goes on.
#[test]
fn a_log_that_cannot_be_written_is_reported_once() {
    let p = Project::new(
        "[services.late]\ncommand = \"sleep 1; seq 1 100; exec sleep 600\"\nshell = true\n",
    );
    let mut child = start_in_background(&p, &["run"]);
    // The node's file is created at its first line, a second from now.
    let log = p.path().join("logs/late.log");
    let _ = std::fs::remove_file(&log);
    std::fs::create_dir(&log).unwrap();
    wait_until(RUN_LIMIT, "the failure to be reported", || {
        p.own_log().contains("cannot write")
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        p.own_log().matches("cannot write").count(),
        1,
        "{}",
        p.own_log()
    );
    assert!(p.own_log().contains("late: output lost: cannot write"));
    // `status` says it too, and the run record has the event.
    let late = status_json(&p)
        .into_iter()
        .find(|n| n["name"] == "late")
        .unwrap();
    assert!(
        late["output_lost"]
            .as_str()
            .is_some_and(|r| r.contains("cannot write")),
        "{late}"
    );
    let out = p.dagstart(&["status"]).output().unwrap();
    assert!(stdout_of(&out).contains("output lost: cannot write"));
    assert!(down(&p, &mut child).success());
    let runs = p.path().join(".dagstart/runs");
    let record = std::fs::read_dir(&runs).unwrap().next().unwrap().unwrap();
    let record = std::fs::read_to_string(record.path()).unwrap();
    assert!(record.contains("\"event\":\"output_lost\""), "{record}");
}

/// Starts `sleep 300` as a process group leader whose pid (and so pgid) is `pid`, by steering
/// the kernel's next pid (`/proc/sys/kernel/ns_last_pid`, root only). `None` where that is not
/// possible.
fn stranger_with_pid(pid: i32) -> Option<std::process::Child> {
    use std::os::unix::process::CommandExt as _;
    for _ in 0..50 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).ok()?;
        let mut child = std::process::Command::new("sleep")
            .arg("300")
            .process_group(0)
            .spawn()
            .ok()?;
        if child.id() as i32 == pid {
            return Some(child);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    None
}

fn finished_component_project() -> Project {
    project(|p| {
        format!(
            "[components.once]\ncommand = [\"true\"]\n\n\
             [services.keep]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n",
            svc(p, "keep", "")
        )
    })
}

/// Who ends the run in a reused-number test.
#[derive(Clone, Copy, PartialEq)]
enum RunEnd {
    /// `dagstart down`: dagstart's own final sweep.
    Down,
    /// SIGKILL to dagstart: the guardian's sweep.
    Guardian,
}

/// Runs `p` (a component `once` beside a service `keep`), waits until `once`'s process group
/// is empty, gives its number to a stranger (steering `ns_last_pid`, root only), ends the run
/// as `end` says, and asserts that the stranger was never signalled.
fn a_stranger_with_the_number_of_once_survives(p: &Project, end: RunEnd) {
    let mut child = start_in_background(p, &["run"]);
    let keep = spawned_pid(p, "keep");
    let once = spawned_pid(p, "once");
    wait_until(RUN_LIMIT, "the component's group to be empty", || {
        !group_has_members(once)
    });
    let Some(mut stranger) = stranger_with_pid(once) else {
        eprintln!("skipped: /proc/sys/kernel/ns_last_pid cannot be steered here (needs root)");
        down(p, &mut child);
        return;
    };
    if end == RunEnd::Down {
        assert!(down(p, &mut child).success());
    } else {
        child.kill().unwrap();
        child.wait().unwrap();
        wait_until(RUN_LIMIT, "the guardian to take the stack down", || {
            !alive(keep)
        });
    }
    std::thread::sleep(Duration::from_millis(200));
    let alive = stranger.try_wait().unwrap().is_none();
    let _ = stranger.kill();
    let _ = stranger.wait();
    assert!(alive, "a process dagstart never started was signalled");
}

/// Hardening: the process group of a node that is gone is never signalled by the end of the
/// run once its number belongs to someone else (reproduced: an unrelated session leader
/// SIGKILLed by `dagstart down`).
#[test]
fn a_reused_process_group_number_is_not_signalled_at_the_end_of_the_run() {
    a_stranger_with_the_number_of_once_survives(&finished_component_project(), RunEnd::Down);
}

/// The same for the guardian, after dagstart was SIGKILLed.
#[test]
fn a_reused_process_group_number_is_not_signalled_by_the_guardian() {
    a_stranger_with_the_number_of_once_survives(&finished_component_project(), RunEnd::Guardian);
}

/// A component whose process group outlives it for a moment: its background child keeps the
/// group after the component exited 0, then ends unnoticed, and the group's number is free.
fn component_with_a_lingering_group() -> Project {
    project(|p| {
        format!(
            "[components.once]\ncommand = \"(sleep 0.5 >/dev/null 2>&1) & exit 0\"\nshell = true\n\n\
             [services.keep]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n",
            svc(p, "keep", "")
        )
    })
}

/// Hardening: a group that emptied after dagstart last looked at it is still not signalled
/// once its number belongs to another process: dagstart holds the leader's pidfd and signals
/// the group through it, which never reaches a process the kernel later gave the number to.
#[test]
fn a_group_that_emptied_unnoticed_is_not_signalled_once_its_number_is_reused() {
    a_stranger_with_the_number_of_once_survives(&component_with_a_lingering_group(), RunEnd::Down);
}

/// The same for the guardian, which gets the pidfds from dagstart.
#[test]
fn a_group_that_emptied_unnoticed_is_not_signalled_by_the_guardian() {
    a_stranger_with_the_number_of_once_survives(
        &component_with_a_lingering_group(),
        RunEnd::Guardian,
    );
}

/// True while process group `pgid` has a member.
fn group_has_members(pgid: i32) -> bool {
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), None).is_ok()
}

/// Hardening: a port another process holds on [::1] only used to pass preflight, and then that
/// process passed the service's health check in its place.
#[test]
fn a_port_taken_on_the_ipv6_loopback_fails_preflight() {
    let Ok(taken) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("skipped: this machine has no IPv6 loopback");
        return;
    };
    let port = taken.local_addr().unwrap().port();
    let p = project(|p| {
        format!(
            "[services.api]\ncommand = {}\nport = {port}\n",
            svc(p, "api", "")
        )
    });
    let out = p.dagstart(&["run"]).timeout(RUN_LIMIT).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains(&format!("api: port {port} is already in use")),
        "{}",
        stderr_of(&out)
    );
}

/// The most probe connections open at once against a health endpoint that accepts and never
/// answers, over 2.5 s of a start that then fails at its timeout.
fn most_probes_open_at_once(settings: &str) -> usize {
    use std::io::Read as _;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let p = Project::new(&format!(
        "{settings}[services.api]\ncommand = \"sleep 600\"\nstartup_timeout = \"2s\"\n\
         health = {{ http = \"http://127.0.0.1:{port}/health\", timeout = \"200ms\" }}\n"
    ));
    let mut child = p
        .dagstart_std(&["run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut open: Vec<std::net::TcpStream> = Vec::new();
    let (mut most, mut accepted) = (0, 0);
    let deadline = std::time::Instant::now() + Duration::from_millis(2500);
    while std::time::Instant::now() < deadline {
        while let Ok((stream, _)) = listener.accept() {
            stream.set_nonblocking(true).unwrap();
            open.push(stream);
            accepted += 1;
        }
        let mut buf = [0u8; 1024];
        open.retain_mut(|s| !matches!(s.read(&mut buf), Ok(0)));
        most = most.max(open.len());
        std::thread::sleep(Duration::from_millis(2));
    }
    let status = wait_exit(&mut child, RUN_LIMIT);
    assert_eq!(status.code(), Some(4), "the start fails at its timeout");
    assert!(accepted >= 3, "it kept probing: {accepted} attempts");
    most
}

/// Real stacks: against a health endpoint that hangs, probes never pile up (seen: 79 to 93
/// connections open at once): hedging allows two, without it one.
#[test]
fn a_hanging_health_endpoint_never_has_more_than_two_probes_open() {
    assert!(most_probes_open_at_once("") <= 2);
}

#[test]
fn without_hedging_one_probe_is_open_at_a_time() {
    let most = most_probes_open_at_once("[settings]\nparallel_health_checks = false\n\n");
    assert_eq!(most, 1);
}

/// Real stacks: waiting is not failing. A service that needs seconds to start (a JVM, a model
/// server) used to be killed and retried by default after three refused probes.
#[test]
fn a_slow_starter_is_waited_for_not_killed() {
    let port = free_port();
    let p = project(|p| {
        format!(
            "[services.slow]\ncommand = {}\nport = {port}\n",
            svc(p, "slow", &format!("--delay 3500ms --port {port}"))
        )
    });
    let out = p
        .dagstart(&["run", "--", "true"])
        .timeout(RUN_LIMIT)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", stderr_of(&out), p.own_log());
    let starts = records(&p.path().join("rec"))
        .iter()
        .filter(|r| r.name == "slow" && r.event == "start")
        .count();
    assert_eq!(starts, 1, "started once, never killed for being slow");
}

/// The run time dagstart.log gives a line that contains `needle`, in seconds.
fn logged_at(log: &str, needle: &str) -> f64 {
    let line = log
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no `{needle}` in\n{log}"));
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .trim_start_matches('+')
        .trim_end_matches('s')
        .parse()
        .unwrap()
}

/// Hardening: an escaped child that keeps the node's output pipes open used to add 2 s per
/// pipe to stopping the node; once the group is gone, dagstart no longer waits for the pipes.
#[test]
fn an_escaped_child_holding_the_pipes_does_not_hold_up_a_stop() {
    let p = project(|p| {
        format!(
            "[services.leaky]\ncommand = \"setsid sleep 30 & exec sleep 600\"\nshell = true\n\n\
             [services.other]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n",
            svc(p, "other", "")
        )
    });
    let mut child = start_in_background(&p, &["run"]);
    let out = p.dagstart(&["stop", "leaky"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    wait_until(RUN_LIMIT, "leaky to stop", || {
        p.own_log().contains("leaky: stopped")
    });
    let log = p.own_log();
    let stopping = logged_at(&log, "leaky: stopping");
    let stopped = logged_at(&log, "leaky: stopped");
    let line = log.lines().find(|l| l.contains("leaky: stopped")).unwrap();
    let took: f64 = line
        .rsplit(" in ")
        .next()
        .unwrap()
        .trim_end_matches('s')
        .parse()
        .unwrap();
    // Between the stop signal and the report: the stop itself, plus waiting for the pipes.
    let waited_for_pipes = stopped - stopping - took;
    assert!(
        waited_for_pipes < 1.0,
        "waited {waited_for_pipes:.2}s for the pipes:\n{log}"
    );
    assert!(down(&p, &mut child).success());
}

/// Hardening: where cgroup v2 is writable each node has a cgroup, so stopping a node also
/// stops what left its process group and session (a daemonizing child), while dagstart runs.
/// (The node is moved into its cgroup just after its spawn: it daemonizes a moment later, as
/// real daemons do after reading their configuration.)
#[test]
fn stopping_a_node_stops_what_escaped_its_group_through_its_cgroup() {
    // The sleep's length makes it findable among the processes of tests running beside us.
    let mark = u32::from(free_port()) + 100_000;
    let p = project(|p| {
        format!(
            "[services.daemonizer]\ncommand = \"sleep 0.2; (setsid sleep {mark} &); exec sleep 600\"\nshell = true\n\n\
             [services.other]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n",
            svc(p, "other", "")
        )
    });
    let mut child = start_in_background(&p, &["run"]);
    let cmdline = format!("sleep\0{mark}\0");
    let find = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .find(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == cmdline.as_bytes())
                    && alive(*pid)
            })
    };
    wait_until(RUN_LIMIT, "the daemon to start", || find().is_some());
    let daemon = find().unwrap();
    let cgroup = std::fs::read_to_string(format!("/proc/{daemon}/cgroup")).unwrap();
    if !cgroup.contains("/dagstart-") {
        eprintln!("skipped: no writable cgroup v2 here");
        assert!(down(&p, &mut child).success());
        return;
    }
    assert!(cgroup.contains("-daemonizer"), "{cgroup}");
    let out = p.dagstart(&["stop", "daemonizer"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    wait_until(RUN_LIMIT, "the daemon to be stopped with its node", || {
        !alive(daemon)
    });
    assert_eq!(
        state_of(&p, "other").as_deref(),
        Some("ready"),
        "the run goes on"
    );
    assert!(down(&p, &mut child).success());
    let run_cgroup = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .and_then(|path| path.rsplit_once('/'))
        .map(|(run, _)| run.to_owned())
        .unwrap();
    assert!(
        !std::path::Path::new(&format!("/sys/fs/cgroup/unified{run_cgroup}")).exists()
            && !std::path::Path::new(&format!("/sys/fs/cgroup{run_cgroup}")).exists(),
        "the run's cgroup {run_cgroup} is removed at the end"
    );
}

/// Real stacks: `down` returns once the stack has stopped (it used to return at once), so
/// `dagstart down && dagstart run` works.
#[test]
fn down_returns_when_everything_has_stopped() {
    let p = project(|p| {
        format!(
            "[services.slow_to_stop]\ncommand = {}\nhealth = {{ log = \"ready\" }}\nstop_timeout = \"1s\"\n",
            svc(p, "slow_to_stop", "--ignore-sigterm")
        )
    });
    let mut child = start_in_background(&p, &["run"]);
    let out = p.dagstart(&["down"]).timeout(RUN_LIMIT).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains("stopped"), "{}", stdout_of(&out));
    assert!(
        p.own_log().contains("everything stopped"),
        "down returned before the run ended:\n{}",
        p.own_log()
    );
    let again = p
        .dagstart(&["run", "--", "true"])
        .timeout(RUN_LIMIT)
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", stderr_of(&again));
    assert!(wait_exit(&mut child, RUN_LIMIT).success());
}

/// Real stacks: while a node is not ready, `status` says why (a service answering errors on
/// its health path used to show only "probing" and an empty `last` until its start failed).
#[test]
fn status_says_why_a_node_is_not_ready_yet() {
    let port = free_port();
    let p = project(|p| {
        format!(
            "[services.api]\ncommand = {}\nport = {port}\nstartup_timeout = \"5s\"\n\
             health = {{ http = \"/health\" }}\n",
            svc(p, "api", &format!("--port {port} --unhealthy-after 0s"))
        )
    });
    let mut child = spawn_in_background(&p, &["run"]);
    wait_until(RUN_LIMIT, "api to be spawned", || {
        p.own_log().contains("api: spawned")
    });
    wait_until(RUN_LIMIT, "status to show the failing probe", || {
        status_json(&p).first().is_some_and(|n| {
            n["state"] == "starting" && n["last"].as_str().is_some_and(|l| l.contains("500"))
        })
    });
    assert_eq!(wait_exit(&mut child, RUN_LIMIT).code(), Some(4));
    assert!(
        p.own_log().contains("api: not ready yet: "),
        "{}",
        p.own_log()
    );
}

/// Hardening: a `notify` service running as another user reaches the notify socket (the
/// runtime directory is private to dagstart's user: it gets an abstract twin).
#[test]
fn a_notify_service_running_as_another_user_can_say_it_is_ready() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: switching users needs root");
        return;
    }
    let p = Project::new(&format!(
        "[services.quiet]\ncommand = \"{} --name quiet --notify --delay 50ms\"\nuser = \"nobody\"\n\
         health = {{ notify = true }}\nstartup_timeout = \"20s\"\n",
        crate::harness::demo_svc()
    ));
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(p.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    crate::harness::assert_success(&crate::harness::run_with_command(&p, &["--", "true"]));
    let log = p.own_log();
    assert!(log.contains("quiet: ready"), "{log}");
    assert!(!log.contains("cannot notify"), "{log}");
}

/// Real stacks: `user` runs a node as another account (postgres refuses to run as root); an
/// unknown user is an error at its key.
#[test]
fn a_node_runs_as_its_user() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: switching users needs root");
        return;
    }
    let p = Project::new(
        "[services.as_nobody]\ncommand = \"sleep 600\"\nuser = \"nobody\"\n\n\
         [services.as_root]\ncommand = \"sleep 600\"\n",
    );
    let mut child = start_in_background(&p, &["run"]);
    let pid = status_json(&p)
        .iter()
        .find(|n| n["name"] == "as_nobody")
        .and_then(|n| n["pid"].as_i64())
        .unwrap();
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = proc_status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    assert!(
        uid.split_whitespace()
            .skip(1)
            .all(|u| u == nobody.to_string()),
        "{uid}"
    );
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(environ.split('\0').any(|v| v == "USER=nobody"), "{environ}");
    assert!(down(&p, &mut child).success());

    let unknown =
        Project::new("[services.a]\ncommand = \"sleep 1\"\nuser = \"no-such-user-here\"\n");
    let out = unknown
        .dagstart(&["check", "--config-only"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("no user `no-such-user-here`"),
        "{}",
        stderr_of(&out)
    );
}
