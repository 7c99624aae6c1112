//! A node's process: spawned in its own process group, output streamed line by line, stopped
//! through the group.
//!
//! Everything that signals a node goes through [`ProcessGroup`], so a signal always reaches the
//! whole group (children started by `sh -c` and their children included), never a bare pid.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::process::CommandExt as _;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::engine::cgroup::NodeCgroup;
use crate::engine::child::ChildProcess;
use crate::engine::config::{Node, Output};
use crate::engine::pidfd::Pidfd;
use crate::engine::spawner::Born;

/// A process group whose id is the pid of its leader, the node's process, held through the
/// leader's pidfd: a signal reaches the group's members even after the leader was reaped, and
/// nothing once the group is empty, even if its number now belongs to an unrelated process.
#[derive(Debug, Clone)]
pub struct ProcessGroup {
    id: Pid,
    /// `None` where the kernel has no pidfds; then (and on kernels before 6.9, which cannot
    /// signal a group through one) the number is used, and forgetting an empty group at once
    /// is what keeps a stranger safe.
    leader: Option<Arc<Pidfd>>,
}

impl PartialEq for ProcessGroup {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for ProcessGroup {}

impl ProcessGroup {
    /// The group led by `pid`, a just-spawned child not yet reaped: nodes are spawned with
    /// `process_group(0)`, so the group's id is its leader's pid.
    pub fn of_child(pid: u32) -> Self {
        Self::led_by(pid, Pidfd::of_child(pid).ok().map(Arc::new))
    }

    /// The group led by `pid`, held through `leader`, the pidfd of that child where there is one.
    pub fn led_by(pid: u32, leader: Option<Arc<Pidfd>>) -> Self {
        Self {
            id: Pid::from_raw(pid as i32),
            leader,
        }
    }

    pub fn id(&self) -> i32 {
        self.id.as_raw()
    }

    /// The leader's pidfd, where there is one.
    pub fn leader(&self) -> Option<&Arc<Pidfd>> {
        self.leader.as_ref()
    }

    /// Sends `signal` to every process in the group; a group that is already gone is fine.
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        match self.send(Some(signal)) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(io::Error::from(e)),
        }
    }

    /// True while any process of the group is alive.
    pub fn is_alive(&self) -> bool {
        !matches!(self.send(None), Err(Errno::ESRCH))
    }

    fn send(&self, signal: Option<Signal>) -> Result<(), Errno> {
        match self
            .leader
            .as_ref()
            .map(|leader| leader.signal_group(signal))
        {
            Some(Err(Errno::EINVAL)) | None => killpg(self.id, signal),
            Some(sent) => sent,
        }
    }
}

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Where a node's output lines go. Called from the reader tasks, in order per stream; the
/// reader waits for the returned future, so a sink that is full slows the reader (and, through
/// its pipe, the service) instead of growing a queue.
pub type LineSink = std::sync::Arc<
    dyn Fn(Stream, String) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync,
>;

/// The longest line kept whole; a longer one is passed on in pieces of this size, so a service
/// that prints without newlines cannot make dagstart's memory grow.
pub const MAX_LINE: usize = 64 << 10;

/// Watches the output for a line matching a pattern (the `log` health probe).
#[derive(Debug, Clone)]
pub struct LogWatch {
    pub pattern: regex::Regex,
    pub matched: watch::Sender<bool>,
}

/// A running node process.
#[derive(Debug)]
pub struct Spawned {
    pub child: ChildProcess,
    pub group: ProcessGroup,
    pub pid: u32,
    /// The stdout and stderr readers; they end at EOF of their pipe.
    pub readers: Vec<JoinHandle<()>>,
    /// The node's cgroup, where the run has them.
    pub cgroup: Option<NodeCgroup>,
}

impl Spawned {
    /// The final SIGKILL: the group, and the cgroup (escapees that left the group included).
    pub fn sweep(&self) {
        let _ = self.group.signal(Signal::SIGKILL);
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill();
        }
    }
}

/// The environment a node runs with: dagstart's own, then `[env]`, then the node's `env`.
pub fn node_env<'a>(
    global: &'a BTreeMap<String, String>,
    node: &'a Node,
) -> impl Iterator<Item = (&'a String, &'a String)> {
    global.iter().chain(node.env.iter())
}

/// What a readiness protocol adds to a spawn.
#[derive(Debug, Default)]
pub struct SpawnExtras<'a> {
    /// Listening sockets handed over systemd-style as fds 3, 4, ... with LISTEN_FDS,
    /// LISTEN_FDNAMES and LISTEN_PID.
    pub listen_fds: &'a [OwnedFd],
    /// The write end of a readiness pipe and the fd number the service expects it at.
    pub ready_fd: Option<(i32, OwnedFd)>,
    /// Extra environment (NOTIFY_SOCKET, WATCHDOG_USEC).
    pub env: Vec<(String, String)>,
    /// The cgroup the process is born in.
    pub cgroup: Option<NodeCgroup>,
}

/// The hidden first argument that makes `dagstart` set LISTEN_PID and exec the real program.
pub const LISTEN_EXEC: &str = "__listen-exec";

/// Spawns `argv` for `node` in a new process group, with output going to `sink`.
pub fn spawn(
    node: &Node,
    global_env: &BTreeMap<String, String>,
    sink: LineSink,
    log_watch: Option<LogWatch>,
    extras: SpawnExtras<'_>,
) -> io::Result<Spawned> {
    let mut argv = node.command.argv();
    if !extras.listen_fds.is_empty() {
        // LISTEN_PID must be the service's own pid, known only after fork: a re-exec of
        // dagstart sets it in the child's own environment and then execs the service.
        let me = std::env::current_exe()?.display().to_string();
        argv.splice(0..0, [me, LISTEN_EXEC.to_owned()]);
    }
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(std::path::absolute(&node.cwd)?)
        .envs(node_env(global_env, node))
        .envs(extras.env.iter().map(|(k, v)| (k, v)))
        .env("DAGSTART_NODE", &node.name)
        .stdin(Stdio::null())
        .stdout(output_to(node.output))
        .stderr(output_to(node.output))
        .process_group(0);
    if !extras.listen_fds.is_empty() {
        let names = vec![node.name.as_str(); extras.listen_fds.len()].join(":");
        command
            .env("LISTEN_FDS", extras.listen_fds.len().to_string())
            .env("LISTEN_FDNAMES", names);
    }
    // Parent-side copies at high numbers, so that placing them at 3, 4, ... in the child can
    // never overwrite a source that is still to be placed. They close when this returns.
    let mut placed = Vec::new();
    let mut fd_map = Vec::new();
    for (i, fd) in extras.listen_fds.iter().enumerate() {
        let copy = high_copy(fd)?;
        fd_map.push((copy.as_raw_fd(), 3 + i as i32));
        placed.push(copy);
    }
    if let Some((target, write_end)) = &extras.ready_fd {
        let copy = high_copy(write_end)?;
        fd_map.push((copy.as_raw_fd(), *target));
        placed.push(copy);
    }
    if let Some(run_as) = &node.run_as {
        command
            .env("HOME", &run_as.home)
            .env("USER", &run_as.user)
            .env("LOGNAME", &run_as.user);
    }
    // Joining the namespace's mounts needs the privileges the `user` switch gives up: first.
    crate::engine::containment::join_in_child(&mut command, &node.cwd)?;
    // In the run's PID namespace nothing needs doing between fork and exec (the namespace
    // dies with dagstart), and a spawn without it is a vfork (see `containment`).
    let places_descriptors = !fd_map.is_empty();
    if !crate::engine::containment::is_contained() || places_descriptors || node.run_as.is_some() {
        die_with_parent(&mut command, fd_map, node.run_as.clone());
    }
    let born = match crate::engine::spawner::get() {
        // The descriptors to place are numbers in dagstart's table: those spawn here.
        Some(spawner) if !places_descriptors => spawner.spawn(command)?,
        _ => spawn_in_place(command)?,
    };
    drop(placed);
    drop(extras.ready_fd);
    let pid = born.pid;
    let leader = Pidfd::of_child(pid).ok().map(Arc::new);
    let group = ProcessGroup::led_by(pid, leader.clone());
    if let (Some(cgroup), Some(leader)) = (&extras.cgroup, &leader) {
        cgroup.adopt(pid, leader.clone());
    }
    let child = ChildProcess::new(pid, leader);
    let mut readers = Vec::with_capacity(2);
    if let Some(out) = born.stdout {
        readers.push(read_lines(
            tokio::process::ChildStdout::from_std(out.into())?,
            Stream::Stdout,
            sink.clone(),
            log_watch.clone(),
        ));
    }
    if let Some(err) = born.stderr {
        readers.push(read_lines(
            tokio::process::ChildStderr::from_std(err.into())?,
            Stream::Stderr,
            sink,
            log_watch,
        ));
    }
    Ok(Spawned {
        child,
        group,
        pid,
        readers,
        cgroup: extras.cgroup,
    })
}

/// Spawns from this thread, with dagstart's whole descriptor table (see `spawner`). std's
/// spawn, not tokio's: tokio's would open a second pidfd per node to wait on (see `child`).
fn spawn_in_place(mut command: Command) -> io::Result<Born> {
    let mut child = crate::engine::containment::spawn(|| command.spawn())?;
    let born = Born {
        pid: child.id(),
        stdout: child.stdout.take().map(OwnedFd::from),
        stderr: child.stderr.take().map(OwnedFd::from),
    };
    // std's `Child` neither waits nor kills when dropped; `ChildProcess` owns both from here.
    drop(child);
    Ok(born)
}

fn output_to(output: Output) -> Stdio {
    match output {
        Output::Log => Stdio::piped(),
        Output::Discard => Stdio::null(),
    }
}

#[allow(unsafe_code)]
fn high_copy(fd: &OwnedFd) -> io::Result<OwnedFd> {
    let raw = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(100))
        .map_err(io::Error::from)?;
    // SAFETY: F_DUPFD_CLOEXEC just returned this new descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// In the child, between fork and exec: asks the kernel to SIGKILL it if dagstart dies, and
/// places each `(source, target)` fd. Spawns only happen on the runtime's worker threads,
/// which live as long as dagstart (the death signal fires when the forking *thread* exits, so
/// never spawn from `spawn_blocking`).
///
/// With `run_as`, the child first takes the node's groups, group and user (in that order:
/// after `setuid` it could not change its groups); the death signal is set after the switch,
/// because changing credentials clears it.
#[allow(unsafe_code)]
fn die_with_parent(
    command: &mut Command,
    fd_map: Vec<(RawFd, RawFd)>,
    run_as: Option<crate::engine::config::RunAs>,
) {
    let groups: Vec<nix::unistd::Gid> = run_as
        .iter()
        .flat_map(|r| r.groups.iter().map(|&g| nix::unistd::Gid::from_raw(g)))
        .collect();
    // SAFETY: the closure runs between fork and exec. setgroups, setgid, setuid, prctl and dup2
    // are async-signal-safe system calls, and the closure neither allocates nor takes locks
    // (fd_map, groups and run_as were built before the fork).
    unsafe {
        command.pre_exec(move || {
            if let Some(run_as) = &run_as {
                nix::unistd::setgroups(&groups).map_err(io::Error::from)?;
                nix::unistd::setgid(nix::unistd::Gid::from_raw(run_as.gid))
                    .map_err(io::Error::from)?;
                nix::unistd::setuid(nix::unistd::Uid::from_raw(run_as.uid))
                    .map_err(io::Error::from)?;
            }
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
            for &(source, target) in &fd_map {
                // dup2 leaves the new descriptor without FD_CLOEXEC, so it survives the exec.
                if nix::libc::dup2(source, target) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// The `__listen-exec` step, run in the service's own process: sets LISTEN_PID to its pid and
/// execs the real program. Only returns (with an exit code) if the exec fails.
pub fn exec_with_listen_pid(argv: &[std::ffi::OsString]) -> i32 {
    use std::os::unix::process::CommandExt as _;
    let Some((program, args)) = argv.split_first() else {
        eprintln!("dagstart {LISTEN_EXEC}: no program given");
        return 127;
    };
    let error = std::process::Command::new(program)
        .args(args)
        .env("LISTEN_PID", std::process::id().to_string())
        .exec();
    eprintln!(
        "dagstart: cannot run {}: {error}",
        program.to_string_lossy()
    );
    127
}

/// Forwards every line of `pipe` to `sink`; a last line without a newline is kept too.
fn read_lines<R: AsyncRead + Unpin + Send + 'static>(
    pipe: R,
    stream: Stream,
    sink: LineSink,
    log_watch: Option<LogWatch>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = LineReader::new(pipe);
        while let Some(piece) = lines.next().await {
            let mut piece = piece;
            while matches!(piece.last(), Some(b'\n' | b'\r')) {
                piece = &piece[..piece.len() - 1];
            }
            let line = String::from_utf8_lossy(piece).into_owned();
            if let Some(watch) = &log_watch {
                if !*watch.matched.borrow() && watch.pattern.is_match(&line) {
                    watch.matched.send_replace(true);
                }
            }
            sink(stream, line).await;
        }
    })
}

/// Splits a pipe into lines (pieces of at most [`MAX_LINE`]) with a buffer that grows with
/// what the pipe delivers and is given back when a burst is over: most services print a few
/// lines and then nothing, and a fixed 8 KiB per pipe was a third of dagstart's memory with
/// 200 services.
struct LineReader<R> {
    pipe: R,
    buf: Vec<u8>,
    /// Where the unread part of `buf` starts.
    start: usize,
    /// How much to read at once next time: doubled while reads fill it.
    want: usize,
}

/// The smallest and largest single read.
const FIRST_READ: usize = 512;
const LARGEST_READ: usize = 64 << 10;

impl<R: AsyncRead + Unpin> LineReader<R> {
    fn new(pipe: R) -> Self {
        Self {
            pipe,
            buf: Vec::new(),
            start: 0,
            want: FIRST_READ,
        }
    }

    /// The next line with its newline, or a piece of a longer one, or the last bytes before
    /// EOF; `None` at EOF (or a read error).
    async fn next(&mut self) -> Option<&[u8]> {
        loop {
            let unread = &self.buf[self.start..];
            let end = match memchr_newline(&unread[..unread.len().min(MAX_LINE)]) {
                Some(at) => Some(at + 1),
                None if unread.len() >= MAX_LINE => Some(MAX_LINE),
                None => None,
            };
            if let Some(end) = end {
                let piece = self.start..self.start + end;
                self.start += end;
                return Some(&self.buf[piece]);
            }
            if !self.fill().await {
                let rest = self.start..self.buf.len();
                self.start = self.buf.len();
                return (!rest.is_empty()).then(|| &self.buf[rest]);
            }
        }
    }

    /// Reads more; false at EOF or on an error.
    async fn fill(&mut self) -> bool {
        self.buf.drain(..self.start);
        self.start = 0;
        if self.buf.is_empty() && self.buf.capacity() > 4 * FIRST_READ {
            // A burst is over: give the memory back.
            self.buf = Vec::new();
            self.want = FIRST_READ;
        }
        self.buf.reserve(self.want);
        let room = self.buf.capacity() - self.buf.len();
        match (&mut self.pipe)
            .take(room as u64)
            .read_buf(&mut self.buf)
            .await
        {
            Ok(0) | Err(_) => false,
            Ok(read) => {
                if read == room {
                    self.want = (self.want * 2).min(LARGEST_READ);
                }
                true
            }
        }
    }
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
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
/// then SIGKILL the group. The group (and the node's cgroup) is always swept with SIGKILL at
/// the end, so grandchildren that outlive the leader do not survive it.
pub async fn stop(spawned: &mut Spawned, signal: Signal, grace: Duration) -> StopReport {
    let started = Instant::now();
    if let Ok(Some(status)) = spawned.child.try_wait() {
        spawned.sweep();
        return StopReport {
            status: Some(status),
            killed: false,
            took: started.elapsed(),
        };
    }
    let _ = spawned.group.signal(signal);
    let (status, killed) = match tokio::time::timeout(grace, spawned.child.wait()).await {
        Ok(status) => (status.ok(), false),
        Err(_) => {
            spawned.sweep();
            (spawned.child.wait().await.ok(), true)
        }
    };
    spawned.sweep();
    StopReport {
        status,
        killed,
        took: started.elapsed(),
    }
}

/// Kills the group (and cgroup) at once and reaps the leader.
pub async fn kill(spawned: &mut Spawned) -> Option<ExitStatus> {
    spawned.sweep();
    spawned.child.wait().await.ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn pieces(input: &[u8]) -> Vec<Vec<u8>> {
        let mut reader = LineReader::new(input);
        let mut out = Vec::new();
        while let Some(piece) = reader.next().await {
            out.push(piece.to_vec());
        }
        out
    }

    #[tokio::test]
    async fn lines_come_whole_with_their_newline_and_the_last_without() {
        let got = pieces(b"one\r\ntwo\n\nthree").await;
        assert_eq!(got, [&b"one\r\n"[..], b"two\n", b"\n", b"three"]);
    }

    #[tokio::test]
    async fn a_line_longer_than_the_limit_comes_in_pieces_none_lost() {
        let mut input = vec![b'x'; MAX_LINE * 2 + 10];
        input.extend_from_slice(b"\nafter\n");
        let got = pieces(&input).await;
        let sizes: Vec<usize> = got.iter().map(Vec::len).collect();
        assert_eq!(sizes, [MAX_LINE, MAX_LINE, 11, 6]);
        assert_eq!(got.concat(), input);
    }

    #[tokio::test]
    async fn the_buffer_is_given_back_after_a_burst() {
        let burst = "line\n".repeat(20_000);
        let mut reader = LineReader::new(burst.as_bytes());
        while reader.next().await.is_some() {}
        assert!(
            reader.buf.capacity() <= FIRST_READ,
            "{}",
            reader.buf.capacity()
        );
    }
}
