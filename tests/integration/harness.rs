//! A builder around the real `dagstart` binary: a temp dir per test with its services.toml.

use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;

/// A project directory with a services.toml, and a way to run dagstart in it.
pub(crate) struct Project {
    dir: tempfile::TempDir,
    envs: Vec<(String, String)>,
}

impl Project {
    pub(crate) fn new(services_toml: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("services.toml"), services_toml).expect("write config");
        Self {
            dir,
            envs: Vec::new(),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// dagstart's own log of the run (empty until it exists).
    /// Waits (up to [`RUN_LIMIT`]) until dagstart.log says the startup completed.
    pub(crate) fn wait_for_startup(&self) {
        wait_until(RUN_LIMIT, "startup to complete", || {
            self.own_log().contains("startup complete")
        });
    }

    pub(crate) fn own_log(&self) -> String {
        std::fs::read_to_string(self.path().join("logs/dagstart.log")).unwrap_or_default()
    }

    pub(crate) fn file(&self, name: &str, contents: &str) -> &Self {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, contents).expect("write file");
        self
    }

    pub(crate) fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// `dagstart ARGS...` run in the project directory, with a clean dagstart environment.
    pub(crate) fn dagstart(&self, args: &[&str]) -> Command {
        Command::from_std(self.dagstart_std(args))
    }

    /// The same as a plain std command, for tests that signal a running dagstart.
    pub(crate) fn dagstart_std(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dagstart"));
        cmd.current_dir(self.dir.path()).args(args);
        for var in [
            "STARTUP_MAX_WORKERS",
            "STARTUP_TIMEOUT",
            "USE_PARALLEL_STARTUP",
            "PARALLEL_HEALTH_CHECKS",
            "DAGSTART_FILE",
            "NO_COLOR",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        cmd
    }
}

/// The stdout of a finished command as text.
pub(crate) fn stdout_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(crate) fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Path of a fixture file in tests/fixtures.
pub(crate) fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The demo/test service binary.
pub(crate) fn demo_svc() -> &'static str {
    env!("CARGO_BIN_EXE_demo-svc")
}

/// A port that was free a moment ago (bound to port 0, then released).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One line of a demo-svc `--record` file.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub name: String,
    pub event: String,
    pub nanos: u128,
}

/// The records demo-svc services appended to `path`.
pub(crate) fn records(path: &Path) -> Vec<Record> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some(Record {
                name: parts.next()?.to_owned(),
                event: parts.next()?.to_owned(),
                nanos: parts.next()?.parse().ok()?,
            })
        })
        .collect()
}

/// When `name` recorded `event` (the first time).
pub(crate) fn at(records: &[Record], name: &str, event: &str) -> u128 {
    records
        .iter()
        .find(|r| r.name == name && r.event == event)
        .unwrap_or_else(|| panic!("no `{event}` record for {name}: {records:?}"))
        .nanos
}

/// True while `pid` is a live process (zombies count as gone).
pub(crate) fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits for `child` up to `limit`; kills it and panics if it does not exit.
pub(crate) fn wait_exit(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("dagstart did not exit within {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Polls until `condition` holds, up to `limit`.
pub(crate) fn wait_until(
    limit: std::time::Duration,
    what: &str,
    mut condition: impl FnMut() -> bool,
) {
    let deadline = std::time::Instant::now() + limit;
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Generous bound for a whole run on a slow CI machine.
pub(crate) const RUN_LIMIT: Duration = Duration::from_secs(60);

/// A TOML argv array running demo-svc as `name`, recording into the project's `rec` file.
pub(crate) fn svc(project: &Project, name: &str, flags: &str) -> String {
    let mut argv = vec![
        demo_svc().to_owned(),
        "--name".into(),
        name.into(),
        "--record".into(),
        project.path().join("rec").display().to_string(),
    ];
    argv.extend(flags.split_whitespace().map(str::to_owned));
    let quoted: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// A project whose services.toml is produced by `build` (which gets the project for `svc`).
pub(crate) fn project(build: impl FnOnce(&Project) -> String) -> Project {
    let project = Project::new("");
    let text = build(&project);
    project.file("services.toml", &text);
    project
}

pub(crate) fn run_with_command(project: &Project, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["run"];
    args.extend_from_slice(extra);
    project
        .dagstart(&args)
        .timeout(RUN_LIMIT)
        .output()
        .expect("dagstart runs")
}

/// Sends SIGINT to a running dagstart, as Ctrl-C would.
pub(crate) fn interrupt(child: &std::process::Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
}

/// Asserts that a finished dagstart succeeded, showing its output if not.
pub(crate) fn assert_success(out: &std::process::Output) {
    assert!(out.status.success(), "{}{}", stdout_of(out), stderr_of(out));
}

/// A dagstart running in the background; killed if the test ends without stopping it (a failed
/// assertion must not leave a stack running on the machine).
pub(crate) struct Running(std::process::Child);

impl std::ops::Deref for Running {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl From<std::process::Child> for Running {
    fn from(child: std::process::Child) -> Self {
        Self(child)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill(); // SIGKILL: dagstart's guardian takes the stack down with it
            let _ = self.0.wait();
        }
    }
}

/// `dagstart ARGS...` in the background, output discarded.
pub(crate) fn spawn_in_background(p: &Project, args: &[&str]) -> Running {
    let child = p
        .dagstart_std(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    Running(child)
}

/// `dagstart ARGS...` in the background, each line of its stdout sent on as it comes.
pub(crate) fn spawn_reading_lines(
    p: &Project,
    args: &[&str],
) -> (Running, std::sync::mpsc::Receiver<String>) {
    let mut child = p
        .dagstart_std(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Running(child), rx)
}

/// The first line from `lines` that `wanted` accepts, waiting up to [`RUN_LIMIT`]; on timeout,
/// panics with the lines seen.
pub(crate) fn wait_for_line(
    lines: &std::sync::mpsc::Receiver<String>,
    what: &str,
    mut wanted: impl FnMut(&str) -> bool,
) -> String {
    let deadline = std::time::Instant::now() + RUN_LIMIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if wanted(&line) => return line,
            Ok(line) => seen.push(line),
            Err(_) => panic!(
                "timed out waiting for {what}; lines seen:\n{}",
                seen.join("\n")
            ),
        }
    }
}

/// A service that prints `tick 1`, `tick 2`, ... every 50 ms, ready at its first.
pub(crate) const TICKER: &str = "command = \"i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.05; done\"\nshell = true\nhealth = { log = \"tick\" }\n";

/// The number of a `tick N` line (as `dagstart logs` prints it), if it is one.
pub(crate) fn tick(line: &str) -> Option<u64> {
    line.rsplit_once("tick ")?.1.trim().parse().ok()
}

/// Follows `lines` (from `dagstart logs -f` of a [`TICKER`]) until it shows ticks written after
/// the follower printed its first: new lines keep arriving.
pub(crate) fn assert_follows_ticks(lines: &std::sync::mpsc::Receiver<String>) {
    let first = tick(&wait_for_line(lines, "a tick", |l| tick(l).is_some())).unwrap();
    wait_for_line(lines, "later ticks, followed", |l| {
        tick(l).is_some_and(|n| n >= first + 10)
    });
}

/// `dagstart ARGS...` in the background (output discarded), once its startup has completed.
pub(crate) fn start_in_background(p: &Project, args: &[&str]) -> Running {
    let child = spawn_in_background(p, args);
    p.wait_for_startup();
    child
}

/// `dagstart status --format json` of the dagstart running in `p`.
pub(crate) fn status_json(p: &Project) -> Vec<serde_json::Value> {
    let out = p
        .dagstart(&["status", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The host pid of every node a run spawned, from dagstart.log (`<node>: spawned (pid N)`):
/// the pids the services record themselves are those of their PID namespace.
pub(crate) fn spawned_pids(p: &Project) -> Vec<(String, i32)> {
    let log = p.own_log();
    log.lines()
        .filter_map(|line| {
            let (head, pid) = line.split_once(": spawned (pid ")?;
            let name = head.rsplit(' ').next()?.to_owned();
            Some((name, pid.split(')').next()?.parse().ok()?))
        })
        .collect()
}

/// The host pid of `node`'s first spawn.
pub(crate) fn spawned_pid(p: &Project, node: &str) -> i32 {
    spawned_pids(p)
        .into_iter()
        .find(|(name, _)| name == node)
        .unwrap_or_else(|| panic!("{node} was never spawned:\n{}", p.own_log()))
        .1
}

/// Every process (host pids) in the PID namespace of the run whose dagstart is `dagstart`,
/// found through dagstart's children (its namespace's init is one of them); empty when the
/// run has no namespace of its own.
pub(crate) fn run_namespace_processes(dagstart: u32) -> Vec<i32> {
    let own = std::fs::read_link("/proc/self/ns/pid").unwrap();
    let namespace_of = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let children = std::fs::read_dir(format!("/proc/{dagstart}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
                .collect::<Vec<_>>()
        });
    let Some(run_namespace) = children
        .filter_map(namespace_of)
        .find(|namespace| *namespace != own)
    else {
        return Vec::new();
    };
    processes_in(&run_namespace)
}

/// The pids of every process in the PID namespace named by the `/proc/<pid>/ns/pid` link.
pub(crate) fn processes_in(namespace: &Path) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|n| n == namespace)
        })
        .collect()
}

/// The pid of the guardian of the run whose dagstart is `dagstart`.
pub(crate) fn guardian_of(dagstart: u32) -> Option<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let parent = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            parent == Some(dagstart) && cmdline.windows(10).any(|w| w == b"__guardian")
        })
}
