//! The web dashboard in a real browser (headless Chromium), and /metrics over real HTTP.

use std::io::{BufRead as _, Read as _, Write as _};
use std::process::{Command, Stdio};

use crate::harness::{RUN_LIMIT, project, svc, wait_exit, wait_until};

const CHROMIUM: &str = "/usr/bin/chromium";

/// `dagstart ARGS...` with a dashboard on a free port: the process and the address it printed.
fn with_dashboard(p: &crate::harness::Project, args: &[&str]) -> (std::process::Child, String) {
    let mut child = p
        .dagstart_std(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    stderr.read_line(&mut line).unwrap();
    // Keep the pipe open: a closed stderr would make dagstart's later messages fail.
    child.stderr = Some(stderr.into_inner());
    let address = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect(&line)
        .to_owned();
    (child, address)
}

/// The page's DOM once it has applied the run so far (`?once`: the event stream ends).
fn page(address: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
        ])
        .args([
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", &format!("http://{address}/?once")])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn state_of(dom: &str, node: &str) -> Option<String> {
    let marker = format!("id=\"node-{node}\" data-state=\"");
    let start = dom.find(&marker)? + marker.len();
    Some(dom[start..].split('"').next()?.to_owned())
}

fn http_get(address: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn the_dashboard_shows_node_states_changing_and_metrics() {
    if !std::path::Path::new(CHROMIUM).exists() {
        eprintln!("skipped: {CHROMIUM} is not installed (.ci/run installs it)");
        return;
    }
    let p = project(|p| {
        format!(
            "[services.fast]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n[services.slow]\ncommand = {}\ndepends_on = [\"fast\"]\nhealth = {{ exec = [\"test\", \"-f\", \"go\"] }}\n",
            svc(p, "fast", ""),
            svc(p, "slow", ""),
        )
    });
    let (mut child, address) = with_dashboard(&p, &["run", "--dashboard", "127.0.0.1:0"]);

    wait_until(RUN_LIMIT, "slow to be spawned", || {
        p.own_log().contains("slow: spawned")
    });
    let before = page(&address);
    assert_eq!(
        state_of(&before, "fast").as_deref(),
        Some("ready"),
        "{before}"
    );
    assert_eq!(
        state_of(&before, "slow").as_deref(),
        Some("starting"),
        "{before}"
    );

    // `slow` is ready once the test says so: however long the browser took to start.
    p.file("go", "");
    wait_until(RUN_LIMIT, "startup to complete", || {
        p.own_log().contains("startup complete")
    });
    let after = page(&address);
    assert_eq!(
        state_of(&after, "slow").as_deref(),
        Some("ready"),
        "the page follows the run:\n{after}"
    );
    assert!(after.contains("critical path: fast → slow"), "{after}");

    let metrics = http_get(&address, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("dagstart_node_state{node=\"slow\",state=\"ready\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("dagstart_startup_seconds "), "{metrics}");

    assert!(p.dagstart(&["down"]).output().unwrap().status.success());
    assert_eq!(wait_exit(&mut child, RUN_LIMIT).code(), Some(0));
}

#[test]
fn a_finished_run_is_served_on_the_same_page() {
    let p = project(|p| {
        format!(
            "[components.once]\ncommand = {}\n",
            svc(p, "once", "--oneshot")
        )
    });
    crate::harness::assert_success(&crate::harness::run_with_command(&p, &["--", "true"]));
    let (mut child, address) = with_dashboard(&p, &["report", "--dashboard", "127.0.0.1:0"]);
    let events = http_get(&address, "/events?once");
    assert!(
        events.contains("\"event\":\"startup_complete\""),
        "{events}"
    );
    assert!(http_get(&address, "/").contains("<title>dagstart</title>"));
    crate::harness::interrupt(&child);
    let _ = wait_exit(&mut child, RUN_LIMIT);
}
