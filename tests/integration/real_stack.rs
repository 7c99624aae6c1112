//! Real software in the loop: Debian's postgresql, redis-server and nginx, and a small app
//! that reads both on every request (tests/fixtures/real_stack). `.ci/run` installs the
//! packages; where they are missing, or dagstart is not root (postgres and nginx run as
//! their own users), the tests say so and pass.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::time::Duration;

use crate::harness::{
    Project, RUN_LIMIT, alive, free_port, run_namespace_processes, start_in_background,
    status_json, wait_exit, wait_until,
};

const PROGRAMS: &[&str] = &[
    "initdb",
    "postgres",
    "pg_isready",
    "psql",
    "redis-server",
    "redis-cli",
    "nginx",
];

/// Why the real stack cannot run here, if it cannot.
fn missing() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root (postgres and nginx run as their own users)".into());
    }
    let path = std::env::var("PATH").unwrap_or_default();
    let on_path = |program: &str| {
        std::env::split_paths(&path)
            .chain(["/usr/sbin".into(), "/usr/lib/postgresql/15/bin".into()])
            .any(|dir| dir.join(program).is_file())
    };
    let absent: Vec<&str> = PROGRAMS.iter().copied().filter(|p| !on_path(p)).collect();
    if !absent.is_empty() {
        return Some(format!("not installed: {}", absent.join(", ")));
    }
    for user in ["postgres", "www-data"] {
        if nix::unistd::User::from_name(user).ok().flatten().is_none() {
            return Some(format!("no user {user}"));
        }
    }
    None
}

/// The stack's ports, chosen free for this test.
struct Ports {
    pg: u16,
    redis: u16,
    app: u16,
    web: u16,
}

/// A project with the real stack: the fixture, nginx.conf for these ports, and directories
/// the services' users own.
fn real_stack() -> Option<(Project, Ports)> {
    if let Some(why) = missing() {
        eprintln!("skipped: the real stack cannot run here: {why}");
        return None;
    }
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/real_stack");
    let ports = Ports {
        pg: free_port(),
        redis: free_port(),
        app: free_port(),
        web: free_port(),
    };
    let toml = std::fs::read_to_string(fixtures.join("services.toml")).unwrap();
    let app = format!("{} __demo-svc", env!("CARGO_BIN_EXE_dagstart"));
    let p = Project::new(&toml)
        .env("PG_PORT", &ports.pg.to_string())
        .env("REDIS_PORT", &ports.redis.to_string())
        .env("APP_PORT", &ports.app.to_string())
        .env("WEB_PORT", &ports.web.to_string())
        .env("APP", &app)
        .env(
            "PATH",
            &format!(
                "/usr/lib/postgresql/15/bin:/usr/sbin:{}",
                std::env::var("PATH").unwrap_or_default()
            ),
        );
    let nginx = std::fs::read_to_string(fixtures.join("nginx.conf.in"))
        .unwrap()
        .replace("@WEB_PORT@", &ports.web.to_string())
        .replace("@APP_PORT@", &ports.app.to_string());
    p.file("nginx.conf", &nginx);
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(p.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for (dir, user) in [("pg", "postgres"), ("nginx", "www-data")] {
        let path = p.path().join(dir);
        std::fs::create_dir(&path).unwrap();
        let user = nix::unistd::User::from_name(user).unwrap().unwrap();
        nix::unistd::chown(&path, Some(user.uid), Some(user.gid)).unwrap();
    }
    Some((p, ports))
}

/// GET `path` from 127.0.0.1:`port`: the status line and the body.
fn get(port: u16, path: &str) -> Option<(String, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_owned(), body.to_owned()))
}

/// Where `what` first appears in dagstart.log.
fn at(log: &str, what: &str) -> usize {
    log.find(what)
        .unwrap_or_else(|| panic!("`{what}` not in dagstart.log:\n{log}"))
}

fn node<'a>(status: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    status.iter().find(|n| n["name"] == name).unwrap()
}

/// The processes whose working directory is in the project: everything the stack runs.
fn processes_in_project(project: &Path) -> Vec<i32> {
    let project = project.canonicalize().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd"))
                .is_ok_and(|cwd| cwd.starts_with(&project))
                && alive(*pid)
        })
        .collect()
}

#[test]
fn a_real_stack_starts_in_order_serves_follows_a_crash_and_stops_in_order() {
    let Some((p, ports)) = real_stack() else {
        return;
    };
    let mut child = start_in_background(&p, &["run"]);
    let log = p.own_log();
    // Startup order: every node after what it needs.
    assert!(at(&log, "initdb: completed") < at(&log, "postgres: spawned"));
    assert!(at(&log, "postgres: ready") < at(&log, "migrate: spawned"));
    assert!(at(&log, "migrate: completed") < at(&log, "app: spawned"));
    assert!(at(&log, "redis: ready") < at(&log, "app: spawned"));
    assert!(at(&log, "app: ready") < at(&log, "nginx: spawned"));
    // The app answers through nginx, with what it read from postgres and redis.
    let (status, body) = get(ports.web, "/").expect("nginx answers");
    assert!(status.contains("200"), "{status}\n{body}");
    assert!(body.starts_with("apple\n"), "{body}");
    // kill -9 of redis: it is restarted, and the app (restart_with_dependency) follows.
    let status = status_json(&p);
    for node in &status {
        // `last` used to keep the probe failures from before the node was ready.
        let last = node["last"].as_str().unwrap_or_default();
        assert!(!last.contains("refused"), "stale `last` in {node}");
    }
    let redis = node(&status, "redis")["pid"].as_i64().unwrap() as i32;
    let app_before = node(&status, "app")["pid"].as_i64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(redis),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until(RUN_LIMIT, "redis and the app to be back", || {
        let status = status_json(&p);
        let (redis, app) = (node(&status, "redis"), node(&status, "app"));
        redis["state"] == "ready"
            && redis["restarts"].as_u64() >= Some(1)
            && app["state"] == "ready"
            && app["pid"].as_i64() != Some(app_before)
    });
    wait_until(RUN_LIMIT, "the stack to answer again", || {
        get(ports.web, "/").is_some_and(|(status, _)| status.contains("200"))
    });
    // SIGTERM: stopped in reverse order, through the component, and nothing is left.
    let namespace = run_namespace_processes(child.id());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(wait_exit(&mut child, RUN_LIMIT).code(), Some(0));
    let log = p.own_log();
    let shutdown = at(&log, "shutting down");
    let after = |what: &str| shutdown + at(&log[shutdown..], what);
    assert!(after("nginx: stopped") < after("app: stopping"), "{log}");
    assert!(after("app: stopped") < after("postgres: stopping"), "{log}");
    assert!(after("app: stopped") < after("redis: stopping"), "{log}");
    assert!(!log.contains("did not stop in time"), "{log}");
    for pid in namespace {
        assert!(!alive(pid), "pid {pid} of the run survived it");
    }
    let left = processes_in_project(p.path());
    assert!(left.is_empty(), "still running in the project: {left:?}");
}

#[test]
fn a_real_stack_leaves_nothing_after_a_kill_9_of_dagstart() {
    let Some((p, _ports)) = real_stack() else {
        return;
    };
    let mut child = start_in_background(&p, &["run"]);
    assert!(!processes_in_project(p.path()).is_empty());
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    wait_until(
        Duration::from_secs(10),
        "every process of the stack to be gone",
        || processes_in_project(p.path()).is_empty(),
    );
}
