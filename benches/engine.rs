//! Engine benchmarks, run by `cargo bench --bench engine`. Prints markdown tables; the figures in
//! docs/performance.md come from them.
//!
//! (a) The lifecycle core alone, driven like the simulation tests (no processes): CPU time per
//!     input for independent services and for chains, as the graph grows. Flat means the work
//!     per event follows the node's degree, not the size of the graph.
//! (b) Whole runs with real, cheap processes (`sleep`, ready when spawned): up to 10,000
//!     independent services (that one with `output = "discard"`: logged, 10,000 nodes need
//!     30,000 descriptors) and a 2,000-level chain; dagstart's CPU time divided by the events it
//!     logged; for independent services the floor measured just before, a bash loop of
//!     `sleep 600 &`.
//! (c) A service printing 500 MB as fast as it can while dagstart's stdout is a pipe read at
//!     1 MB/s: dagstart's peak RSS, whether the node's log got every line (rotation set to
//!     1 GiB so it all stays in one file), and how long SIGTERM takes to end the run.
//!
//! `ENGINE_BENCH=a,b,c` picks the parts (all by default).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dagstart::engine::config::Environment;
use dagstart::engine::graph::Graph;
use dagstart::engine::lifecycle::{Core, Effect, Input, Options, Report};

mod common;

use common::{cpu_of, rss_kib};

const DAGSTART: &str = env!("CARGO_BIN_EXE_dagstart");

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let parts = std::env::var("ENGINE_BENCH").unwrap_or_else(|_| "a,b,c".into());
    if parts.contains('a') {
        core_alone();
    }
    if parts.contains('b') {
        whole_runs();
    }
    if parts.contains('c') {
        flood();
    }
}

// ----- (a) the core alone ------------------------------------------------------------------------

fn independent(n: usize) -> String {
    (0..n)
        .map(|i| format!("[services.s{i}]\ncommand = \"true\"\n"))
        .collect()
}

fn chain(n: usize) -> String {
    let mut text = String::from("[services.s0]\ncommand = \"true\"\n");
    for i in 1..n {
        text += &format!(
            "[services.s{i}]\ncommand = \"true\"\ndepends_on = {{ s{} = \"started\" }}\n",
            i - 1
        );
    }
    text
}

fn load(text: String) -> dagstart::engine::config::Config {
    dagstart::engine::config::load_str(
        Path::new("/bench/services.toml"),
        text,
        &Environment::from_pairs::<&str, &str>([]),
    )
    .expect("valid")
}

/// Runs a whole startup and shutdown through the core with instant fake processes; returns
/// the inputs fed and the time spent in `Core::on`.
fn drive(text: String) -> (usize, Duration) {
    let config = Arc::new(load(text));
    let graph = Arc::new(Graph::build(&config));
    let selected = vec![true; config.nodes.len()];
    let options = Options {
        max_workers: usize::MAX,
        auto_workers: false,
        sequential: false,
        parallel_health_checks: true,
        startup_timeout: Duration::from_secs(600),
        shutdown_timeout: Duration::from_secs(600),
        verify_older_than: std::time::Duration::ZERO,
        profiles: Vec::new(),
    };
    let mut core = Core::new(config, graph, &selected, options);
    let mut queue = std::collections::VecDeque::new();
    let mut inputs = 0;
    let mut spent = Duration::ZERO;
    let now = Duration::from_millis(1);
    fake_processes(core.begin(Duration::ZERO), &mut queue);
    let mut shutdown_sent = false;
    while !core.finished() {
        let input = match queue.pop_front() {
            Some(input) => input,
            None if !shutdown_sent => {
                shutdown_sent = true;
                Input::Shutdown("bench".into())
            }
            None => panic!("the core waits for nothing"),
        };
        let started = Instant::now();
        let effects = core.on(input, now);
        spent += started.elapsed();
        inputs += 1;
        fake_processes(effects, &mut queue);
    }
    (inputs, spent)
}

/// Instant fake processes: a launch is spawned and ready at once, a stop is done at once.
fn fake_processes(effects: Vec<Effect>, queue: &mut std::collections::VecDeque<Input>) {
    let report = |node, instance, report| Input::Report {
        node,
        instance,
        report,
    };
    for effect in effects {
        match effect {
            Effect::Launch { node, instance } => {
                queue.push_back(report(
                    node,
                    instance,
                    Report::Spawned { pid: 1, attempt: 1 },
                ));
                queue.push_back(report(node, instance, Report::Ready));
            }
            Effect::Stop { node, instance } => {
                let stopped = Report::Stopped {
                    status: "signal 15".into(),
                    killed: false,
                    took: Duration::ZERO,
                };
                queue.push_back(report(node, instance, stopped));
            }
            Effect::Verify(_) => queue.push_back(Input::Verified(Ok(()))),
            _ => {}
        }
    }
}

fn core_alone() {
    println!(
        "\n(a) the lifecycle core alone: a whole startup and shutdown with instant fake processes\n"
    );
    println!("| graph | nodes | inputs | core CPU | per input |");
    println!("|---|---|---|---|---|");
    for (shape, make) in [
        ("independent", independent as fn(usize) -> String),
        ("chain", chain),
    ] {
        for n in [500, 2000, 5000, 20000] {
            let (inputs, spent) = drive(make(n));
            println!(
                "| {shape} | {n} | {inputs} | {:.1} ms | {:.2} µs |",
                spent.as_secs_f64() * 1000.0,
                spent.as_secs_f64() * 1e6 / inputs as f64
            );
        }
    }
}

// ----- (b) whole runs with cheap processes -------------------------------------------------------

fn project(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("services.toml"), text).unwrap();
    dir
}

fn cheap(n: usize, chained: bool, output: &str) -> String {
    let mut text =
        String::from("[settings]\nshutdown_timeout = \"120s\"\nstartup_timeout = \"600s\"\n");
    for i in 0..n {
        text += &format!(
            "[services.s{i}]\ncommand = [\"sleep\", \"600\"]\nstop_timeout = \"30s\"\noutput = \"{output}\"\n"
        );
        if chained && i > 0 {
            text += &format!("depends_on = {{ s{} = \"started\" }}\n", i - 1);
        }
    }
    text
}

fn own_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("logs/dagstart.log")).unwrap_or_default()
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn whole_runs() {
    println!("\n(b) whole runs, `sleep 600` services ready once spawned (release build)\n");
    println!(
        "| graph | nodes | output | to ready | floor | dagstart CPU to ready | events logged | CPU per event | peak RSS | stop |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (shape, n, chained, output) in [
        ("independent", 1000, false, "log"),
        ("independent", 5000, false, "log"),
        ("independent", 10000, false, "discard"),
        ("chain", 500, true, "log"),
        ("chain", 2000, true, "log"),
    ] {
        let floor = if chained {
            "".to_owned()
        } else {
            format!("{:.2} s", bash_floor(n).as_secs_f64())
        };
        let dir = project(&cheap(n, chained, output));
        let started = Instant::now();
        let mut child = Command::new(DAGSTART)
            .current_dir(dir.path())
            .arg("run")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut peak = 0;
        wait_for("startup", Duration::from_secs(600), || {
            peak = peak.max(rss_kib(pid));
            own_log(dir.path()).contains("startup complete")
        });
        let ready = started.elapsed();
        let cpu = cpu_of(pid);
        let events = own_log(dir.path()).lines().count();
        let stop_started = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let _ = child.wait();
        let stop = stop_started.elapsed();
        println!(
            "| {shape} | {n} | {output} | {:.2} s | {floor} | {:.0} ms | {events} | {:.0} µs | {:.1} MiB | {:.2} s |",
            ready.as_secs_f64(),
            cpu.as_secs_f64() * 1000.0,
            cpu.as_secs_f64() * 1e6 / events.max(1) as f64,
            peak as f64 / 1024.0,
            stop.as_secs_f64()
        );
    }
}

/// The floor for `n` independent services: a bash loop of `sleep 600 &`, timed until the loop
/// is done (every process spawned); then the whole process group is killed.
fn bash_floor(n: usize) -> Duration {
    use std::os::unix::process::CommandExt as _;
    let started = Instant::now();
    let mut bash = Command::new("bash")
        .args([
            "-c",
            &format!(
                "for ((i = 0; i < {n}; i++)); do sleep 600 & done; echo spawned; exec sleep 600"
            ),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut line = String::new();
    let _ = std::io::BufRead::read_line(
        &mut std::io::BufReader::new(bash.stdout.take().unwrap()),
        &mut line,
    );
    let took = started.elapsed();
    let group = format!("-{}", bash.id());
    let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
    let _ = bash.wait();
    took
}

// ----- (c) a flood through a slow terminal -------------------------------------------------------

fn flood() {
    const LINES: usize = 5_000_000;
    const LINE: usize = 100;
    println!(
        "\n(c) one service prints {LINES} lines of {LINE} bytes (500 MB) as fast as it can; dagstart's stdout is a pipe read at 1 MB/s\n"
    );
    let payload = "x".repeat(LINE - 1);
    let text = format!(
        "[settings]\nlog_max_size = \"1GiB\"\n\n[services.flood]\ncommand = \"yes {payload} | head -n {LINES}; exec sleep 600\"\nshell = true\n"
    );
    let dir = project(&text);
    let started = Instant::now();
    let mut child = Command::new(DAGSTART)
        .current_dir(dir.path())
        .arg("run")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut total = 0usize;
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
            std::thread::sleep(Duration::from_millis(4)); // about 1 MB/s
        }
    });
    let log: PathBuf = dir.path().join("logs/flood.log");
    let mut peak = 0;
    wait_for("every line in flood.log", Duration::from_secs(900), || {
        peak = peak.max(rss_kib(pid));
        // Every line is stamped in the file ("2026-...Z ", 25 bytes).
        std::fs::metadata(&log).is_ok_and(|m| m.len() as usize >= LINES * (LINE + 25))
    });
    let logged = started.elapsed();
    let lines = std::fs::read_to_string(&log).map_or(0, |t| t.lines().count());
    let stop_started = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = child.wait().unwrap();
    let stop = stop_started.elapsed();
    let shown = reader.join().unwrap_or(0);
    println!(
        "| lines in flood.log | all logged after | dagstart peak RSS | SIGTERM to exit | exit | shown on the pipe |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {lines} of {LINES} | {:.1} s | {:.1} MiB | {:.2} s | {} | {:.1} MB |",
        logged.as_secs_f64(),
        peak as f64 / 1024.0,
        stop.as_secs_f64(),
        status.code().unwrap_or(-1),
        shown as f64 / 1e6
    );
}
