//! The real stack of tests/fixtures/real_stack (Debian's postgresql, redis-server and nginx,
//! and an app reading both), run by `cargo bench --bench real_stack` as root with the
//! packages installed (`.ci/run` installs them).
//!
//! Three ways to start it, interleaved, medians of `REPEATS`: the defaults (hedged probes),
//! `PARALLEL_HEALTH_CHECKS=false` (one probe at a time), and `--sequential`. For each: time
//! to ready, and readiness probes sent (all nodes, from the `ready` events of
//! `--output json`). Prints a markdown table; docs/performance.md has the figures.

use std::path::Path;
use std::process::Command;

const DAGSTART: &str = env!("CARGO_BIN_EXE_dagstart");
const REPEATS: usize = 7;

struct Mode {
    name: &'static str,
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
}

const MODES: [Mode; 3] = [
    Mode {
        name: "defaults (hedged probes)",
        args: &[],
        env: &[],
    },
    Mode {
        name: "`PARALLEL_HEALTH_CHECKS=false`",
        args: &[],
        env: &[("PARALLEL_HEALTH_CHECKS", "false")],
    },
    Mode {
        name: "`--sequential`",
        args: &["--sequential"],
        env: &[],
    },
];

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` probes benches with these; there is nothing to list.
    }
    if !nix::unistd::geteuid().is_root() || which("initdb").is_none() || which("nginx").is_none() {
        eprintln!("skipped: needs root and postgresql, redis-server and nginx installed");
        return;
    }
    let project = stack_project();
    // The first run creates the database cluster; it is not measured.
    run(project.path(), &MODES[0]);
    let mut results: Vec<Vec<(f64, u64)>> = vec![Vec::new(); MODES.len()];
    for _ in 0..REPEATS {
        for (mode, out) in MODES.iter().zip(&mut results) {
            out.push(run(project.path(), mode));
        }
    }
    println!(
        "| real stack (6 nodes), median of {REPEATS} | ready | probes sent | spread of ready |"
    );
    println!("|---|---|---|---|");
    for (mode, runs) in MODES.iter().zip(&results) {
        let mut ready: Vec<f64> = runs.iter().map(|r| r.0).collect();
        let mut probes: Vec<u64> = runs.iter().map(|r| r.1).collect();
        ready.sort_by(f64::total_cmp);
        probes.sort_unstable();
        println!(
            "| {} | {:.0} ms | {} | {:.0}–{:.0} ms |",
            mode.name,
            ready[ready.len() / 2],
            probes[probes.len() / 2],
            ready[0],
            ready[ready.len() - 1]
        );
    }
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/lib/postgresql/15/bin".into()])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// The fixture in a fresh directory, with free ports and directories its users own.
fn stack_project() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/real_stack");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::copy(
        fixtures.join("services.toml"),
        dir.path().join("services.toml"),
    )
    .unwrap();
    let ports: Vec<u16> = (0..4)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect::<Vec<_>>()
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let nginx = std::fs::read_to_string(fixtures.join("nginx.conf.in"))
        .unwrap()
        .replace("@WEB_PORT@", &ports[3].to_string())
        .replace("@APP_PORT@", &ports[2].to_string());
    std::fs::write(dir.path().join("nginx.conf"), nginx).unwrap();
    let env = format!(
        "PG_PORT={}\nREDIS_PORT={}\nAPP_PORT={}\nWEB_PORT={}\nAPP=\"{DAGSTART} __demo-svc\"\n",
        ports[0], ports[1], ports[2], ports[3]
    );
    std::fs::write(dir.path().join(".env"), env).unwrap();
    for (sub, user) in [("pg", "postgres"), ("nginx", "www-data")] {
        let path = dir.path().join(sub);
        std::fs::create_dir(&path).unwrap();
        let user = nix::unistd::User::from_name(user).unwrap().unwrap();
        nix::unistd::chown(&path, Some(user.uid), Some(user.gid)).unwrap();
    }
    dir
}

/// One run to ready and back: (ms to ready, probes sent).
fn run(dir: &Path, mode: &Mode) -> (f64, u64) {
    let path = format!(
        "/usr/lib/postgresql/15/bin:/usr/sbin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(DAGSTART)
        .current_dir(dir)
        .args(["run", "--output", "json"])
        .args(mode.args)
        .args(["--", "true"])
        .envs(mode.env.iter().copied())
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut ready = None;
    let mut probes = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        match event["event"].as_str() {
            Some("ready") => probes += event["probes"].as_u64().unwrap_or(0),
            Some("startup_complete") => ready = event["ready_ms"].as_f64(),
            _ => {}
        }
    }
    (ready.expect("startup completed"), probes)
}
