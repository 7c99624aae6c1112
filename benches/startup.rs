//! Startup benchmarks with real processes (demo-svc), run by `cargo bench --bench startup`.
//!
//! (a) a chain of 20 services, each ready 50 ms after spawn, tcp health: wall time against
//!     the ideal 1000 ms and the overhead per level;
//! (b) 200 independent services: time to all ready, dagstart's peak RSS and CPU time;
//! (c) the demo stack (services.toml), parallel against `--sequential`.
//!
//! Times come from dagstart.log (millisecond stamps). Prints a markdown table; the figures in
//! docs/performance.md come from it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DAGSTART: &str = env!("CARGO_BIN_EXE_dagstart");
const DEMO_SVC: &str = env!("CARGO_BIN_EXE_demo-svc");
/// Runs per scenario; the chains are short and noisy on a shared VM, so take the median of many.
const REPEATS: usize = 9;

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` probes benches with these; there is nothing to list.
    }
    println!("| scenario | median | ideal | ratio to ideal | notes |");
    println!("|---|---|---|---|---|");
    chain();
    wide();
    demo();
}

/// `n` distinct ports that were free a moment ago: all are held until all are chosen, so the
/// kernel cannot hand the same one out twice.
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn temp_project(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("services.toml"), text).unwrap();
    dir
}

/// Milliseconds from the start of the run to "startup complete", read from dagstart.log.
fn ready_ms(dir: &Path) -> Option<f64> {
    let log = std::fs::read_to_string(dir.join("logs/dagstart.log")).ok()?;
    let line = log.lines().find(|l| l.contains("startup complete"))?;
    let stamp = line
        .split_whitespace()
        .nth(1)?
        .trim_start_matches('+')
        .trim_end_matches('s');
    stamp.parse::<f64>().ok().map(|s| s * 1000.0)
}

fn run_to_ready(dir: &Path, extra: &[&str], env: &[(&str, String)]) -> f64 {
    let mut cmd = Command::new(DAGSTART);
    cmd.current_dir(dir)
        .arg("run")
        .args(extra)
        .args(["--", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let status = cmd.status().expect("dagstart runs");
    assert!(status.success(), "dagstart failed in {}", dir.display());
    ready_ms(dir).expect("startup complete in dagstart.log")
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// How the services of a chain tell that they are ready, and what each waits for.
#[derive(Clone, Copy, PartialEq)]
enum Readiness {
    /// tcp probe on the port, `healthy` dependencies.
    Tcp,
    /// READY=1 on NOTIFY_SOCKET, `healthy` dependencies.
    Notify,
    /// socket-activated, http probe, `listening` dependencies.
    Sockets,
}

fn chain_config(levels: usize, readiness: Readiness) -> String {
    let mut text = String::from("[settings]\nlog_dir = \"logs\"\n");
    for (i, port) in free_ports(levels).into_iter().enumerate() {
        let common = format!("\"{DEMO_SVC}\", \"--name\", \"s{i}\", \"--delay\", \"50ms\"");
        let (flags, keys) = match readiness {
            Readiness::Tcp => (
                format!(", \"--port\", \"{port}\""),
                format!("port = {port}\n"),
            ),
            Readiness::Notify => (
                ", \"--notify\"".to_owned(),
                "health = { notify = true }\n".to_owned(),
            ),
            Readiness::Sockets => (
                ", \"--socket-activated\"".to_owned(),
                format!("sockets = [{port}]\nhealth = {{ http = \"http://127.0.0.1:{port}/\" }}\n"),
            ),
        };
        text.push_str(&format!(
            "[services.s{i}]\ncommand = [{common}{flags}]\n{keys}"
        ));
        if i > 0 {
            let condition = if readiness == Readiness::Sockets {
                "listening"
            } else {
                "healthy"
            };
            text.push_str(&format!(
                "depends_on = {{ s{} = \"{condition}\" }}\n",
                i - 1
            ));
        }
    }
    text
}

fn chain_run(levels: usize, readiness: Readiness) -> (f64, Vec<f64>) {
    let runs: Vec<f64> = (0..REPEATS)
        .map(|_| {
            let dir = temp_project(&chain_config(levels, readiness));
            run_to_ready(dir.path(), &[], &[])
        })
        .collect();
    (
        median(runs.clone()),
        runs.iter().map(|r| r.round()).collect(),
    )
}

fn chain() {
    let levels = 20;
    let ideal = 50.0 * levels as f64;
    let floor = median((0..REPEATS).map(|_| hand_chain(levels)).collect());
    let (tcp, tcp_runs) = chain_run(levels, Readiness::Tcp);
    println!(
        "| (a) chain of {levels}, 50 ms each, tcp health | {tcp:.0} ms | {ideal:.0} ms | {:.3} | {:.2} ms overhead per level; runs {tcp_runs:?} |",
        tcp / ideal,
        (tcp - ideal) / levels as f64,
    );
    println!(
        "| (a') the same chain by hand: spawn, read the ready line, spawn the next | {floor:.0} ms | {ideal:.0} ms | {:.3} | the floor of exec + helper start-up: {:.2} ms per level; dagstart adds {:.2} ms per level over it |",
        floor / ideal,
        (floor - ideal) / levels as f64,
        (tcp - floor) / levels as f64
    );
    let (notify, notify_runs) = chain_run(levels, Readiness::Notify);
    println!(
        "| (d) the chain with notify readiness | {notify:.0} ms | {ideal:.0} ms | {:.3} | dagstart adds {:.2} ms per level over the floor; runs {notify_runs:?} |",
        notify / ideal,
        (notify - floor) / levels as f64,
    );
    let (sockets, socket_runs) = chain_run(levels, Readiness::Sockets);
    println!(
        "| (e) the chain socket-activated, `listening` dependencies | {sockets:.0} ms | 50 ms | {:.2} | {:.1}x faster than the health-gated chain (a); runs {socket_runs:?} |",
        sockets / 50.0,
        tcp / sockets,
    );
}

/// The physical floor of a chain: each demo-svc spawned the instant the previous one printed
/// its ready line (read from a pipe, no probing), with no supervisor in between.
fn hand_chain(levels: usize) -> f64 {
    use std::io::BufRead as _;
    let started = Instant::now();
    let mut children = Vec::new();
    for (i, port) in free_ports(levels).into_iter().enumerate() {
        let mut child = Command::new(DEMO_SVC)
            .args([
                "--name",
                &format!("s{i}"),
                "--delay",
                "50ms",
                "--port",
                &port.to_string(),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        while let Some(Ok(line)) = lines.next() {
            if line.contains(" ready on ") {
                break;
            }
        }
        children.push(child);
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    ms
}

fn wide() {
    let count = 200;
    let mut text = String::new();
    for (i, port) in free_ports(count).into_iter().enumerate() {
        text.push_str(&format!(
            "[services.w{i}]\ncommand = [\"{DEMO_SVC}\", \"--name\", \"w{i}\", \"--delay\", \"50ms\", \"--port\", \"{port}\"]\nport = {port}\n"
        ));
    }
    let mut times = Vec::new();
    let mut rss = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..REPEATS {
        let dir = temp_project(&text);
        let (ms, peak_kb, cpu_ms) = run_and_measure(dir.path());
        times.push(ms);
        rss.push(peak_kb as f64);
        cpu.push(cpu_ms);
    }
    let m = median(times);
    println!(
        "| (b) {count} independent services, 50 ms each | {m:.0} ms | 50 ms | {:.2} | dagstart peak RSS {:.1} MiB, CPU {:.0} ms to ready (medians) |",
        m / 50.0,
        median(rss) / 1024.0,
        median(cpu)
    );
}

/// Runs dagstart without a command, samples its own RSS and CPU once startup completes, then
/// stops it with SIGINT.
fn run_and_measure(dir: &Path) -> (f64, u64, f64) {
    let mut child = Command::new(DAGSTART)
        .current_dir(dir)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let ms = loop {
        if let Some(ms) = ready_ms(dir) {
            break ms;
        }
        assert!(Instant::now() < deadline, "no startup within 120 s");
        assert!(
            child.try_wait().unwrap().is_none(),
            "dagstart exited early in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let peak_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    let cpu_ms = ticks * 1000.0 / 100.0; // USER_HZ is 100 on Linux
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let _ = child.wait();
    (ms, peak_kb, cpu_ms)
}

fn demo() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("services.toml")).unwrap();
    let mut results = Vec::new();
    for extra in [&[][..], &["--sequential"][..]] {
        let runs: Vec<f64> = (0..REPEATS)
            .map(|_| {
                let dir = temp_project(&text);
                let ports = free_ports(5);
                let mut env: Vec<(&str, String)> = vec![("DEMO_SVC", DEMO_SVC.to_owned())];
                for (var, port) in [
                    "WS_ROUTER_PORT",
                    "BACKEND_PORT",
                    "VISION_PORT",
                    "VOICE_PORT",
                    "MONITORING_PORT",
                ]
                .into_iter()
                .zip(ports)
                {
                    env.push((var, port.to_string()));
                }
                run_to_ready(dir.path(), extra, &env)
            })
            .collect();
        results.push(median(runs));
    }
    // Required critical path: max(ws_router 400, load_models 800) + backend 1000.
    let ideal = 1800.0;
    println!(
        "| (c) demo stack, parallel | {:.0} ms | {ideal:.0} ms | {:.3} | |",
        results[0],
        results[0] / ideal
    );
    println!(
        "| (c) demo stack, `--sequential` | {:.0} ms | | | parallel is {:.2}x faster |",
        results[1],
        results[1] / results[0]
    );
}
