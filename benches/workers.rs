//! `max_workers = "auto"` against fixed limits, on CPU-heavy initialisations.
//!
//! `cargo bench --bench workers`: a chain of 4 components and 10 independent ones, each burning
//! 250 ms of CPU to initialise, on this machine's CPUs. The ideal is max(critical path, total
//! CPU work / CPUs). Too few workers serialise the work; too many share the CPUs among
//! everything, so the critical path crawls; auto lets in as many as the CPU pressure allows and
//! launches the critical path first.

use std::process::{Command, Stdio};

const DAGSTART: &str = env!("CARGO_BIN_EXE_dagstart");
const DEMO_SVC: &str = env!("CARGO_BIN_EXE_demo-svc");
const REPEATS: usize = 3;

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let mut text = String::new();
    for i in 0..4 {
        text.push_str(&component(&format!("chain{i}")));
        if i > 0 {
            text.push_str(&format!("depends_on = [\"chain{}\"]\n", i - 1));
        }
    }
    for i in 0..10 {
        text.push_str(&component(&format!("leaf{i}")));
    }
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let ideal = (4.0 * 250.0_f64).max(14.0 * 250.0 / cpus as f64);
    println!("| max_workers | median | ideal | ratio to ideal |");
    println!("|---|---|---|---|");
    for workers in ["1", "2", "14", "auto"] {
        let mut runs: Vec<f64> = (0..REPEATS).map(|_| run(&text, workers)).collect();
        runs.sort_by(f64::total_cmp);
        let m = runs[runs.len() / 2];
        println!(
            "| {workers} | {m:.0} ms | {ideal:.0} ms | {:.2} |",
            m / ideal
        );
    }
}

fn component(name: &str) -> String {
    format!(
        "[components.{name}]\ncommand = [\"{DEMO_SVC}\", \"--name\", \"{name}\", \"--burn\", \"250ms\", \"--oneshot\"]\n"
    )
}

fn run(text: &str, workers: &str) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("services.toml"), text).unwrap();
    let status = Command::new(DAGSTART)
        .current_dir(dir.path())
        .env("STARTUP_MAX_WORKERS", workers)
        .args(["run", "--", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let log = std::fs::read_to_string(dir.path().join("logs/dagstart.log")).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("startup complete"))
        .unwrap();
    let stamp = line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_start_matches('+')
        .trim_end_matches('s');
    stamp.parse::<f64>().unwrap() * 1000.0
}
