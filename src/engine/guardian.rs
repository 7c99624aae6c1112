//! No orphans, even when dagstart itself is killed.
//!
//! Where the run has a PID namespace ([`crate::engine::containment`]) the kernel is the last
//! line; these three layers hold with or without it, each covering what the one before cannot:
//! 1. Every node process gets `PR_SET_PDEATHSIG = SIGKILL`: the kernel kills it when dagstart
//!    dies (see [`crate::engine::process`]).
//! 2. dagstart is a child subreaper, and every node runs with `DAGSTART_RUN=<id>` in its
//!    environment. At the end of a run every process group it created is SIGKILLed, and so is
//!    every process still carrying the run's marker, wherever it went (a `setsid()` escapee has
//!    left the group but not its environment). Orphans re-parented to dagstart are reaped.
//! 3. A guardian process (`dagstart __guardian`), started first, in its own process group and
//!    without the marker, is sent every new process group over a socket, with its leader's
//!    pidfd (see [`crate::engine::pidfd`]), so that it never signals a group whose number was
//!    handed to someone else. When the socket closes (dagstart exited, however it died) it
//!    does the same sweep as 2 and exits: the grandchildren that PDEATHSIG cannot reach are
//!    gone within moments.
//!
//! What these do not cover (the namespace does): a process that both leaves the group and
//! clears its environment.

use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use nix::unistd::Pid;

use crate::engine::pidfd::Pidfd;
use crate::engine::process::ProcessGroup;

/// The hidden first argument that runs the guardian.
pub const GUARDIAN: &str = "__guardian";
/// The environment variable that marks every process of a run.
pub const RUN_MARKER: &str = "DAGSTART_RUN";

/// What dagstart tells the guardian: one message per datagram, the group's id as text,
/// negative to forget it, a new group's leader pidfd attached where there is one; `0` when
/// dagstart has ended everything itself.
enum Tell {
    Watch(i32, Option<std::sync::Arc<Pidfd>>),
    Forget(i32),
    Done,
}

/// dagstart's end of the guardian. New process groups are sent by a thread of their own, so
/// a guardian that reads slowly never blocks the scheduler.
#[derive(Debug)]
pub struct Guardian {
    child: Child,
    groups: Option<std::sync::mpsc::Sender<Tell>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Tell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Watch(id, _) => write!(f, "watch {id}"),
            Self::Forget(id) => write!(f, "forget {id}"),
            Self::Done => write!(f, "done"),
        }
    }
}

impl Guardian {
    /// Starts the guardian for run `run_id`, whose private runtime directory is `runtime_dir`
    /// (removed by the guardian if dagstart could not).
    /// With `cgroup`, the run's cgroup is killed and removed too.
    pub fn start(
        run_id: &str,
        runtime_dir: &std::path::Path,
        cgroup: Option<&std::path::Path>,
    ) -> std::io::Result<Self> {
        // Datagrams keep each message with its descriptor.
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        let child = Command::new(std::env::current_exe()?)
            .args([GUARDIAN, run_id])
            .arg(runtime_dir)
            .args(cgroup)
            .env_remove(RUN_MARKER)
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            // Its own group: a Ctrl-C on the terminal must not take the guardian down early.
            .process_group(0)
            .spawn()?;
        let (groups, rx) = std::sync::mpsc::channel::<Tell>();
        let writer = std::thread::Builder::new()
            .name("dagstart-guardian".into())
            .spawn(move || {
                for tell in rx {
                    if send(&ours, &tell).is_err() {
                        break;
                    }
                }
                // Closing the socket here is the guardian's cue to sweep and exit.
            })?;
        Ok(Self {
            child,
            groups: Some(groups),
            writer: Some(writer),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Tells the guardian about a new process group.
    pub fn watch(&mut self, group: &ProcessGroup) {
        if let Some(groups) = &self.groups {
            let _ = groups.send(Tell::Watch(group.id(), group.leader().cloned()));
        }
    }

    /// Tells the guardian that process group `id` is gone and must be forgotten.
    pub fn forget(&mut self, id: i32) {
        if let Some(groups) = &self.groups {
            let _ = groups.send(Tell::Forget(id));
        }
    }

    /// Ends the guardian without its sweep, for a run whose processes all end with its PID
    /// namespace at the end of `dagstart run` (which removes the cgroups and the runtime
    /// directory itself): the sweep would look through every process on the machine, and
    /// remove every node's cgroup, while the stop waits.
    pub fn finish_contained(mut self) {
        if let Some(groups) = &self.groups {
            let _ = groups.send(Tell::Done);
        }
        drop(self.groups.take());
    }
}

fn send(socket: &OwnedFd, tell: &Tell) -> nix::Result<usize> {
    let (text, pidfd) = match tell {
        Tell::Watch(id, pidfd) => (id.to_string(), pidfd.as_ref()),
        Tell::Forget(id) => ((-id).to_string(), None),
        Tell::Done => ("0".to_owned(), None),
    };
    let fds = pidfd.map(|p| [p.as_owned().as_raw_fd()]);
    let rights: Vec<ControlMessage<'_>> = fds
        .iter()
        .map(|fds| ControlMessage::ScmRights(fds))
        .collect();
    sendmsg::<()>(
        socket.as_raw_fd(),
        &[std::io::IoSlice::new(text.as_bytes())],
        &rights,
        MsgFlags::empty(),
        None,
    )
}

impl Drop for Guardian {
    fn drop(&mut self) {
        // Closing the socket is the guardian's cue; after a clean sweep it finds nothing left.
        drop(self.groups.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        let _ = self.child.wait();
    }
}

/// The guardian itself: collect process groups until its socket (stdin) closes, then kill what
/// is left (the run's cgroup too) and remove the run's runtime directory and cgroup.
pub fn run_guardian(
    run_id: &str,
    runtime_dir: Option<&std::path::Path>,
    cgroup: Option<&std::path::Path>,
) -> i32 {
    // A group is forgotten once it is gone: its number may be handed to an unrelated process
    // later, which must never be signalled (the pidfd makes sure of it where there is one).
    let mut groups = std::collections::HashMap::new();
    while let Some(tell) = receive() {
        match tell {
            Tell::Watch(id, pidfd) => {
                groups.insert(id, pidfd);
            }
            Tell::Forget(id) => {
                groups.remove(&id);
            }
            Tell::Done => return 0,
        }
    }
    for (id, pidfd) in groups {
        match pidfd.map(|p| p.signal_group(Some(Signal::SIGKILL))) {
            Some(Err(nix::errno::Errno::EINVAL)) | None => {
                let _ = killpg(Pid::from_raw(id), Signal::SIGKILL);
            }
            Some(_) => {}
        }
    }
    kill_marked(run_id);
    if let Some(cgroup) = cgroup {
        crate::engine::cgroup::remove_run(cgroup, std::time::Duration::from_secs(2));
    }
    // A killed dagstart could not remove its runtime directory.
    if let Some(dir) = runtime_dir.filter(|d| is_runtime_dir(d)) {
        let _ = std::fs::remove_dir_all(dir);
    }
    0
}

/// The next message on the guardian's stdin; `None` once dagstart has closed it.
fn receive() -> Option<Tell> {
    let mut text = [0u8; 16];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    loop {
        let mut iov = [std::io::IoSliceMut::new(&mut text)];
        let message = match recvmsg::<()>(0, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return None,
            Ok(message) => message,
        };
        if message.bytes == 0 {
            return None;
        }
        let pidfd = message
            .cmsgs()
            .ok()
            .into_iter()
            .flatten()
            .find_map(|c| match c {
                #[allow(unsafe_code)]
                ControlMessageOwned::ScmRights(fds) => fds.first().map(|&fd| {
                    use std::os::fd::FromRawFd as _;
                    // SAFETY: a descriptor the kernel just passed to us, owned by nothing else.
                    Pidfd::from_owned(unsafe { OwnedFd::from_raw_fd(fd) })
                }),
                _ => None,
            });
        let bytes = message.bytes;
        let Some(id) = std::str::from_utf8(&text[..bytes])
            .ok()
            .and_then(|t| t.parse::<i32>().ok())
        else {
            continue;
        };
        return Some(if id == 0 {
            Tell::Done
        } else if id < 0 {
            Tell::Forget(-id)
        } else {
            Tell::Watch(id, pidfd.map(std::sync::Arc::new))
        });
    }
}

/// The name every runtime directory has: `dagstart-` and six random characters (`mkdtemp`).
pub const RUNTIME_DIR_PREFIX: &str = "dagstart-";

/// True when `pid` is a running dagstart (not a zombie, not another program that got the
/// number since): how leftovers of runs killed together with their guardian are recognised.
pub fn is_running_dagstart(pid: u32) -> bool {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    comm.trim() == "dagstart"
        && stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
}

/// Only ever remove what looks like one of our runtime directories.
fn is_runtime_dir(dir: &std::path::Path) -> bool {
    dir.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(RUNTIME_DIR_PREFIX))
}

/// SIGKILLs every process whose environment carries `DAGSTART_RUN=run_id`; returns their pids.
pub fn kill_marked(run_id: &str) -> Vec<i32> {
    let marker = format!("{RUN_MARKER}={run_id}");
    let me = std::process::id() as i32;
    let mut killed = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return killed;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if environ
            .split(|&b| b == 0)
            .any(|var| var == marker.as_bytes())
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            killed.push(pid);
        }
    }
    killed
}

/// Reaps the given pids if they became our children (orphans re-parented to the subreaper).
pub fn reap(pids: &[i32]) {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let me = std::process::id() as i32;
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
    let mut left: Vec<i32> = pids
        .iter()
        .copied()
        .filter(|&p| parent_of(p) == Some(me))
        .collect();
    while !left.is_empty() && std::time::Instant::now() < deadline {
        left.retain(|&pid| {
            matches!(
                waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)),
                Ok(WaitStatus::StillAlive)
            )
        });
        if !left.is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Makes dagstart the reaper of orphans of its descendants, so escapees stay findable.
pub fn become_subreaper() {
    let _ = nix::sys::prctl::set_child_subreaper(true);
}
