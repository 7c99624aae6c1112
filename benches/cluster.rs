//! Cross-host hand-off, run by `cargo bench --bench cluster` (needs `etcd` on the PATH):
//! a chain of 20 services, each ready as soon as it is spawned, placed alternately on two
//! hosts (the coordinator and an agent, two processes on this machine, through one etcd member
//! whose data is on tmpfs), against the same chain on one host. The difference per level is
//! what a hand-off through etcd costs: a write by the host whose node became ready, the watch
//! event at the other host, and its launch.
//!
//! Times come from the coordinator's run record (millisecond stamps of every node's `ready`,
//! a remote node's as the coordinator learned it). Prints a markdown table.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DAGSTART: &str = env!("CARGO_BIN_EXE_dagstart");
const LEVELS: usize = 20;
const REPEATS: usize = 7;

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    if Command::new("etcd").arg("--version").output().is_err() {
        eprintln!("etcd is not installed: nothing to measure");
        return;
    }
    let etcd = Etcd::start();
    let mut one = Vec::new();
    let mut two = Vec::new();
    // Interleaved, so that a slow minute of the machine hits both alike.
    for round in 0..REPEATS {
        one.push(chain(None, round));
        two.push(chain(Some(&etcd.url), round));
    }
    let (one, two) = (median(&mut one), median(&mut two));
    println!("| chain of {LEVELS}, ready at spawn | first to last ready | per level |");
    println!("|---|---|---|");
    println!(
        "| one host | {one:.1} ms | {:.2} ms |",
        one / (LEVELS - 1) as f64
    );
    println!(
        "| alternating between two hosts (etcd) | {two:.1} ms | {:.2} ms |",
        two / (LEVELS - 1) as f64
    );
    println!(
        "| cost of a hand-off across hosts | | {:.2} ms |",
        (two - one) / (LEVELS - 1) as f64
    );
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// One run of the chain; milliseconds from the first node's ready to the last's.
fn chain(etcd: Option<&str>, round: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    if let Some(url) = etcd {
        text.push_str(&format!(
            "[cluster]\nname = \"bench{round}\"\netcd = [\"{url}\"]\n\n[hosts.h2]\n\n"
        ));
    }
    for level in 0..LEVELS {
        text.push_str(&format!("[services.n{level}]\ncommand = \"sleep 1000\"\n"));
        if level > 0 {
            text.push_str(&format!("depends_on = [\"n{}\"]\n", level - 1));
        }
        if etcd.is_some() && level % 2 == 1 {
            text.push_str("host = \"h2\"\n");
        }
    }
    std::fs::write(dir.path().join("services.toml"), text).unwrap();
    let mut agent = etcd.map(|_| spawn(dir.path(), &["agent", "--host", "h2"]));
    let host: &[&str] = if etcd.is_some() {
        &["--host", "h1"]
    } else {
        &[]
    };
    let mut run = spawn(dir.path(), &[host, &["run"]].concat());
    let runs = match etcd {
        Some(_) => dir.path().join(".dagstart/hosts/h1/runs"),
        None => dir.path().join(".dagstart/runs"),
    };
    let took = wait_for_last_ready(&runs);
    let down: &[&str] = &[host, &["down"]].concat();
    let _ = Command::new(DAGSTART)
        .args(down)
        .current_dir(dir.path())
        .output();
    let _ = run.wait();
    if let Some(agent) = agent.as_mut() {
        let _ = agent.wait();
    }
    took
}

fn spawn(dir: &Path, args: &[&str]) -> Child {
    Command::new(DAGSTART)
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits for the last node's `ready` in the run record.
fn wait_for_last_ready(runs: &Path) -> f64 {
    let last = format!("\"node\":\"n{}\"", LEVELS - 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the chain did not get ready");
        let record = std::fs::read_dir(runs)
            .ok()
            .and_then(|mut entries| entries.next())
            .and_then(|e| e.ok())
            .and_then(|e| std::fs::read_to_string(e.path()).ok())
            .unwrap_or_default();
        let ready_at = |node: &str| {
            record
                .lines()
                .filter(|l| l.contains("\"event\":\"ready\"") && l.contains(node))
                .find_map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).ok()?;
                    v["t"].as_f64()
                })
        };
        if let (Some(first), Some(last)) = (ready_at("\"node\":\"n0\""), ready_at(&last)) {
            return (last - first) * 1000.0;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One etcd member on loopback, its data on tmpfs.
struct Etcd {
    child: Child,
    url: String,
    _data: tempfile::TempDir,
}

impl Etcd {
    fn start() -> Self {
        let data =
            tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
        let port = free_port();
        let peer = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let child = Command::new("etcd")
            .arg("--data-dir")
            .arg(data.path())
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
            ])
            .args([
                "--initial-cluster",
                &format!("default=http://127.0.0.1:{peer}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Command::new("etcdctl")
            .args(["--endpoints", &url, "endpoint", "health"])
            .env("ETCDCTL_API", "3")
            .output()
            .map_or(true, |o| !o.status.success())
        {
            assert!(Instant::now() < deadline, "etcd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            child,
            url,
            _data: data,
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
