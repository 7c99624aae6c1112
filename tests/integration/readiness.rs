//! Readiness without polling, with real processes: sd_notify, a readiness fd, socket
//! activation, and lazy start.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use crate::harness::{
    RUN_LIMIT, assert_success, at, free_port, interrupt, project, records, run_with_command,
    spawn_in_background, start_in_background, stderr_of, stdout_of, svc, wait_exit, wait_until,
};

fn log_of(p: &crate::harness::Project, file: &str) -> String {
    std::fs::read_to_string(p.path().join("logs").join(file)).unwrap_or_default()
}

#[test]
fn notify_ready_gates_dependents_and_status_is_shown() {
    let p = project(|p| {
        format!(
            "[services.db]\ncommand = {}\nhealth = {{ notify = true }}\n\n\
             [services.api]\ncommand = {}\ndepends_on = [\"db\"]\nhealth = {{ notify = true }}\n",
            svc(p, "db", "--notify --delay 300ms --status warming-caches"),
            svc(p, "api", "--notify"),
        )
    });
    let out = run_with_command(&p, &["--", "true"]);
    assert_success(&out);
    let rec = records(&p.path().join("rec"));
    assert!(
        at(&rec, "api", "start") >= at(&rec, "db", "ready"),
        "{rec:?}"
    );
    assert!(
        stdout_of(&out).contains("db: status: warming-caches"),
        "{}",
        stdout_of(&out)
    );
}

#[test]
fn extend_timeout_usec_extends_the_startup_timeout() {
    let p = project(|p| {
        format!(
            "[services.slow]\ncommand = {}\nhealth = {{ notify = true }}\nstartup_timeout = \"500ms\"\n",
            svc(p, "slow", "--notify --extend-timeout 5s --delay 1500ms"),
        )
    });
    let out = run_with_command(&p, &["--", "true"]);
    assert_success(&out);

    let without = project(|p| {
        format!(
            "[services.slow]\ncommand = {}\nhealth = {{ notify = true }}\nstartup_timeout = \"500ms\"\n",
            svc(p, "slow", "--notify --delay 1500ms"),
        )
    });
    let out = run_with_command(&without, &["--", "true"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "without the extension the timeout holds"
    );
    assert!(
        stderr_of(&out).contains("not ready within 500ms (waited for READY=1 on NOTIFY_SOCKET)"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn a_missed_watchdog_kills_the_service_and_a_pinging_one_lives() {
    let p = project(|p| {
        format!(
            "[services.quiet]\ncommand = {}\nhealth = {{ notify = true }}\nwatchdog = \"400ms\"\nrequired = false\n\n\
             [services.lively]\ncommand = {}\nhealth = {{ notify = true }}\nwatchdog = \"400ms\"\n",
            svc(p, "quiet", "--notify --watchdog-stop-after 300ms"),
            svc(p, "lively", "--notify"),
        )
    });
    let mut child = spawn_in_background(&p, &["run"]);
    wait_until(RUN_LIMIT, "the watchdog to fire", || {
        p.own_log()
            .contains("quiet: exited (killed: no WATCHDOG=1 for 400ms)")
    });
    // Three watchdog periods later the pinging service is still up.
    std::thread::sleep(Duration::from_millis(1200));
    interrupt(&child);
    let code = wait_exit(&mut child, RUN_LIMIT).code();
    assert_eq!(code, Some(0), "{}", p.own_log());
    let log = p.own_log();
    assert!(!log.contains("lively: exited"), "{log}");
    assert!(log.contains("lively: stopped"), "{log}");
}

#[test]
fn notify_messages_from_other_processes_are_dropped() {
    let p = project(|p| {
        format!(
            "[services.waiting]\ncommand = {}\nhealth = {{ notify = true }}\nstartup_timeout = \"3s\"\n",
            svc(p, "waiting", "--hang --print-env NOTIFY_SOCKET"),
        )
    });
    let mut child = spawn_in_background(&p, &["run"]);
    let prefix = "waiting: NOTIFY_SOCKET=";
    wait_until(RUN_LIMIT, "the service to print its NOTIFY_SOCKET", || {
        log_of(&p, "waiting.log").contains(prefix)
    });
    let log = log_of(&p, "waiting.log");
    let path = log
        .lines()
        .find_map(|l| {
            dagstart::views::logfiles::split_stamp(l)
                .1
                .strip_prefix(prefix)
        })
        .unwrap()
        .to_owned();
    let socket = std::os::unix::net::UnixDatagram::unbound().unwrap();
    socket
        .send_to(b"READY=1\n", &path)
        .expect("the notify socket accepts datagrams");
    let status = wait_exit(&mut child, RUN_LIMIT);
    assert_eq!(
        status.code(),
        Some(4),
        "a foreign READY=1 must not make the node ready"
    );
    let own = p.own_log();
    assert!(
        own.contains(&format!(
            "ignored a notify message from pid {}",
            std::process::id()
        )),
        "{own}"
    );
}

#[test]
fn systemd_notify_from_the_real_package_works() {
    if !std::path::Path::new("/usr/bin/systemd-notify").exists() {
        eprintln!("skipped: systemd-notify is not installed");
        return;
    }
    let p = project(|_| {
        "[services.classic]\ncommand = \"sleep 0.2; systemd-notify --ready --status='up and running'; exec sleep 60\"\n\
         shell = true\nhealth = { notify = true }\n"
            .to_owned()
    });
    let out = run_with_command(&p, &["--", "true"]);
    assert_success(&out);
    assert!(
        stdout_of(&out).contains("classic: ready after"),
        "{}",
        stdout_of(&out)
    );
}

#[test]
fn a_readiness_fd_gates_dependents() {
    let p = project(|p| {
        format!(
            "[services.db]\ncommand = {}\nhealth = {{ ready_fd = 3 }}\n\n\
             [services.api]\ncommand = {}\ndepends_on = [\"db\"]\nhealth = {{ ready_fd = 5 }}\n",
            svc(p, "db", "--delay 300ms --ready-fd 3"),
            svc(p, "api", "--ready-fd 5"),
        )
    });
    let out = run_with_command(&p, &["--", "true"]);
    assert_success(&out);
    let rec = records(&p.path().join("rec"));
    assert!(
        at(&rec, "api", "start") >= at(&rec, "db", "ready"),
        "{rec:?}"
    );
}

#[test]
fn a_readiness_fd_closed_without_a_byte_fails_the_start() {
    let p = project(|p| {
        format!(
            "[services.db]\ncommand = {}\nhealth = {{ ready_fd = 3 }}\n",
            svc(p, "db", "--hang --close-ready-fd --ready-fd 3"),
        )
    });
    let out = run_with_command(&p, &["--", "true"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stderr_of(&out).contains("closed its readiness fd 3 without writing to it"),
        "{}",
        stderr_of(&out)
    );
}

fn http_get(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(RUN_LIMIT)).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[test]
fn socket_activation_hands_over_the_socket_and_listening_dependents_start_at_once() {
    let port = free_port();
    let p = project(|p| {
        format!(
            "[services.api]\ncommand = {}\nsockets = [\"127.0.0.1:{port}\"]\nhealth = {{ http = \"http://127.0.0.1:{port}/\" }}\n\n\
             [services.web]\ncommand = {}\ndepends_on = {{ api = \"listening\" }}\nhealth = {{ log = \"ready\" }}\n",
            svc(p, "api", "--socket-activated --delay 500ms"),
            svc(p, "web", ""),
        )
    });
    let mut child = start_in_background(&p, &["run"]);
    assert!(http_get(port).starts_with("HTTP/1.1 200 OK"));
    interrupt(&child);
    assert_eq!(wait_exit(&mut child, RUN_LIMIT).code(), Some(0));
    assert!(log_of(&p, "api.log").contains("serving on activated fd 3 (LISTEN_PID ok)"));
    let rec = records(&p.path().join("rec"));
    assert!(
        at(&rec, "web", "start") < at(&rec, "api", "ready"),
        "web must not wait for api: {rec:?}"
    );
}

#[test]
fn a_lazy_socket_service_starts_on_its_first_connection_and_serves_it() {
    let port = free_port();
    let p = project(|p| {
        format!(
            "[services.api]\ncommand = {}\nsockets = [{port}]\nlazy = true\nhealth = {{ http = \"http://127.0.0.1:{port}/\" }}\n\n\
             [services.other]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n",
            svc(p, "api", "--socket-activated --delay 200ms"),
            svc(p, "other", ""),
        )
    });
    let mut child = start_in_background(&p, &["run"]);
    assert!(
        !records(&p.path().join("rec"))
            .iter()
            .any(|r| r.name == "api"),
        "api must not start before a connection"
    );
    assert!(
        http_get(port).starts_with("HTTP/1.1 200 OK"),
        "the first connection is served, not dropped"
    );
    interrupt(&child);
    assert_eq!(wait_exit(&mut child, RUN_LIMIT).code(), Some(0));
    assert!(p.own_log().contains("api: first connection, starting"));
}

#[test]
fn a_lazy_node_without_sockets_starts_only_when_needed() {
    let p = project(|p| {
        format!(
            "[components.models]\ncommand = {}\nlazy = true\n\n[components.unused]\ncommand = {}\nlazy = true\n\n\
             [services.api]\ncommand = {}\ndepends_on = [\"models\"]\nhealth = {{ log = \"ready\" }}\n",
            svc(p, "models", "--oneshot --delay 100ms"),
            svc(p, "unused", "--oneshot"),
            svc(p, "api", ""),
        )
    });
    let out = run_with_command(&p, &["--", "true"]);
    assert_success(&out);
    let rec = records(&p.path().join("rec"));
    assert!(
        at(&rec, "api", "start") >= at(&rec, "models", "ready"),
        "{rec:?}"
    );
    assert!(
        !rec.iter().any(|r| r.name == "unused"),
        "nothing needs `unused`: {rec:?}"
    );
}

#[test]
fn listening_on_a_node_without_sockets_is_a_config_error() {
    let p = project(|_| {
        "[services.a]\ncommand = \"a\"\n[services.b]\ncommand = \"b\"\ndepends_on = { a = \"listening\" }\n".into()
    });
    let out = p.dagstart(&["check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("`a` has no sockets to listen on"),
        "{}",
        stderr_of(&out)
    );
}
