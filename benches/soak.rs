//! Soak: 200 services under constant restart churn; dagstart's RSS and open fds must stay flat.
//!
//! `cargo bench --bench soak` runs for SOAK_SECS seconds (default 120) and prints one sample
//! every 10 s: restarts so far, dagstart's RSS and its number of open file descriptors.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{fds, rss_kib};

const DAGSTART: &str = env!("CARGO_BIN_EXE_dagstart");
const DEMO_SVC: &str = env!("CARGO_BIN_EXE_demo-svc");

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let seconds: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for i in 0..200 {
        // Each lives 1 to 2 s, then exits non-zero and is restarted.
        let life = 1000 + (i * 37) % 1000;
        text.push_str(&format!(
            "[services.s{i}]\ncommand = [\"{DEMO_SVC}\", \"--name\", \"s{i}\", \"--exit-after\", \"{life}ms\", \"--exit-code\", \"1\", \"--chatter\", \"4\"]\n\
             health = {{ log = \"ready\" }}\nrestart = \"on-failure\"\nrestart_backoff = \"50ms\"\nmax_restarts = 1000000\nrestart_window = \"1s\"\n"
        ));
    }
    std::fs::write(dir.path().join("services.toml"), text).unwrap();
    let mut child = Command::new(DAGSTART)
        .current_dir(dir.path())
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let started = Instant::now();
    println!("| after | restarts | dagstart RSS | open fds |");
    println!("|---|---|---|---|");
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_secs(10));
        let restarts = count(&dir.path().join("logs/dagstart.log"), ": restarting in ");
        println!(
            "| {:>3} s | {restarts} | {:.1} MiB | {} |",
            started.elapsed().as_secs(),
            rss_kib(pid) as f64 / 1024.0,
            fds(pid)
        );
    }
    let _ = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
    let _ = child.wait();
}

fn count(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log).map_or(0, |l| l.matches(needle).count())
}
