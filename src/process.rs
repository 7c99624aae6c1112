//! A node's process: spawned in its own process group, output streamed line by line, stopped
//! through the group.
//!
//! Everything that signals a node goes through [`ProcessGroup`], so a signal always reaches the
//! whole group (children started by `sh -c` and their children included), never a bare pid.

use std::collections::BTreeMap;
use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Node;

/// A process group whose id is the pid of its leader, the node's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessGroup(Pid);

impl ProcessGroup {
    pub fn id(self) -> i32 {
        self.0.as_raw()
    }

    /// Sends `signal` to every process in the group; a group that is already gone is fine.
    pub fn signal(self, signal: Signal) -> io::Result<()> {
        match killpg(self.0, signal) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(io::Error::from(e)),
        }
    }

    /// True while any process of the group is alive.
    pub fn is_alive(self) -> bool {
        !matches!(killpg(self.0, None), Err(Errno::ESRCH))
    }
}

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Where a node's output lines go. Called from the reader tasks, in order per stream.
pub type LineSink = std::sync::Arc<dyn Fn(Stream, String) + Send + Sync>;

/// Watches the output for a line matching a pattern (the `log` health probe).
#[derive(Debug, Clone)]
pub struct LogWatch {
    pub pattern: regex::Regex,
    pub matched: watch::Sender<bool>,
}

/// A running node process.
#[derive(Debug)]
pub struct Spawned {
    pub child: Child,
    pub group: ProcessGroup,
    pub pid: u32,
    /// The stdout and stderr readers; they end at EOF of their pipe.
    pub readers: Vec<JoinHandle<()>>,
}

/// The environment a node runs with: dagstart's own, then `[env]`, then the node's `env`.
pub fn node_env<'a>(
    global: &'a BTreeMap<String, String>,
    node: &'a Node,
) -> impl Iterator<Item = (&'a String, &'a String)> {
    global.iter().chain(node.env.iter())
}

/// Spawns `argv` for `node` in a new process group, with output going to `sink`.
pub fn spawn(
    node: &Node,
    global_env: &BTreeMap<String, String>,
    sink: LineSink,
    log_watch: Option<LogWatch>,
) -> io::Result<Spawned> {
    let argv = node.command.argv();
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(&node.cwd)
        .envs(node_env(global_env, node))
        .env("DAGSTART_NODE", &node.name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    die_with_parent(&mut command);
    let mut child = command.spawn()?;
    let pid = child.id().expect("a just-spawned child has a pid");
    let group = ProcessGroup(Pid::from_raw(pid as i32));
    let mut readers = Vec::with_capacity(2);
    if let Some(out) = child.stdout.take() {
        readers.push(read_lines(
            out,
            Stream::Stdout,
            sink.clone(),
            log_watch.clone(),
        ));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(read_lines(err, Stream::Stderr, sink, log_watch));
    }
    Ok(Spawned {
        child,
        group,
        pid,
        readers,
    })
}

/// Asks the kernel to SIGKILL the child if dagstart dies. Spawns only happen on the runtime's
/// worker threads, which live as long as dagstart (the signal fires when the forking *thread*
/// exits, so never spawn from `spawn_blocking`).
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    // SAFETY: the closure runs between fork and exec; prctl(PR_SET_PDEATHSIG) is async-signal-safe
    // and the closure neither allocates nor takes locks.
    unsafe {
        command
            .pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from));
    }
}

/// Forwards every line of `pipe` to `sink`; a last line without a newline is kept too.
fn read_lines<R: AsyncRead + Unpin + Send + 'static>(
    pipe: R,
    stream: Stream,
    sink: LineSink,
    log_watch: Option<LogWatch>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::with_capacity(256);
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    while matches!(buf.last(), Some(b'\n' | b'\r')) {
                        buf.pop();
                    }
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    if let Some(watch) = &log_watch {
                        if !*watch.matched.borrow() && watch.pattern.is_match(&line) {
                            watch.matched.send_replace(true);
                        }
                    }
                    sink(stream, line);
                }
            }
        }
    })
}

/// How a stop ended.
#[derive(Debug, Clone, Copy)]
pub struct StopReport {
    pub status: Option<ExitStatus>,
    /// True when the stop signal was not enough and the group got SIGKILL.
    pub killed: bool,
    pub took: Duration,
}

/// The one shape of a graceful stop: `signal` to the group, wait up to `grace` for the leader,
/// then SIGKILL the group. The group is always swept with SIGKILL at the end, so grandchildren
/// that outlive the leader do not survive it.
pub async fn stop(
    child: &mut Child,
    group: ProcessGroup,
    signal: Signal,
    grace: Duration,
) -> StopReport {
    let started = Instant::now();
    if let Ok(Some(status)) = child.try_wait() {
        let _ = group.signal(Signal::SIGKILL);
        return StopReport {
            status: Some(status),
            killed: false,
            took: started.elapsed(),
        };
    }
    let _ = group.signal(signal);
    let (status, killed) = match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => (status.ok(), false),
        Err(_) => {
            let _ = group.signal(Signal::SIGKILL);
            (child.wait().await.ok(), true)
        }
    };
    let _ = group.signal(Signal::SIGKILL);
    StopReport {
        status,
        killed,
        took: started.elapsed(),
    }
}

/// Kills the group at once and reaps the leader.
pub async fn kill(child: &mut Child, group: ProcessGroup) -> Option<ExitStatus> {
    let _ = group.signal(Signal::SIGKILL);
    child.wait().await.ok()
}

/// "exit 3", "killed by SIGKILL", ... for messages.
pub fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("killed by {}", s.as_str()),
            Err(_) => format!("killed by signal {sig}"),
        },
        _ => "ended".into(),
    }
}

/// A shell's exit code for a status: the code, or 128 + the signal number.
pub fn exit_code_of(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}
