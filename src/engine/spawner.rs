//! Spawning from a small descriptor table.
//!
//! A spawn is a vfork and an exec, and both cost the size of the spawning process's descriptor
//! table: the child takes a reference on every open file, and exec closes every close-on-exec
//! descriptor again, one by one. dagstart holds one to three descriptors per node, so with
//! thousands of nodes every spawn paid for all the others (5,000 nodes: a third of dagstart's
//! CPU in the kernel's `dup_fd` and `do_close_on_exec`).
//!
//! The spawner is a thread per CPU, each with a descriptor table of its own
//! (`unshare(CLONE_FILES)`) in which everything is closed but what spawning needs (the run
//! namespace's descriptors and one end of a socket pair), and each living in the run's
//! namespace for good. Nodes are spawned there; their output pipes come back to dagstart's
//! table over the socket pair (`SCM_RIGHTS`) and are closed in the spawner's. A node with
//! descriptors of dagstart's to inherit (sockets, a readiness pipe) is spawned in place, as
//! before.

use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::sync::{Mutex, OnceLock, mpsc};

use nix::sched::{CloneFlags, unshare};
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};

/// The spawner, started at the first spawn; `None` where it cannot work here.
pub fn get() -> Option<&'static Spawner> {
    static SPAWNER: OnceLock<Option<Spawner>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            Spawner::start()
                .inspect_err(|e| tracing::debug!("spawning in place: {e}"))
                .ok()
        })
        .as_ref()
}

/// One spawner thread per CPU, so that spawns still run side by side.
pub struct Spawner {
    /// One caller at a time per lane: the pipes on a lane's socket are its last reply's.
    lanes: Vec<Mutex<Calls>>,
    next: std::sync::atomic::AtomicUsize,
}

struct Calls {
    requests: mpsc::Sender<Request>,
    /// dagstart's end of the socket pair, where the pipes arrive.
    pipes: OwnedFd,
}

struct Request {
    command: std::process::Command,
    reply: mpsc::SyncSender<io::Result<Sent>>,
}

/// What the spawner did: the child's pid, and which pipes it put on the socket.
struct Sent {
    pid: u32,
    stdout: bool,
    stderr: bool,
}

/// A child spawned by the spawner, its pipes in dagstart's table.
#[derive(Debug)]
pub struct Born {
    pub pid: u32,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

impl Spawner {
    fn start() -> io::Result<Self> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
        let lanes = (0..threads)
            .map(|_| Self::start_lane().map(Mutex::new))
            .collect::<io::Result<_>>()?;
        Ok(Self {
            lanes,
            next: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// A free lane, or the next one in turn when all are busy.
    fn lane(&self) -> io::Result<std::sync::MutexGuard<'_, Calls>> {
        for lane in &self.lanes {
            if let Ok(calls) = lane.try_lock() {
                return Ok(calls);
            }
        }
        let turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lanes[turn % self.lanes.len()]
            .lock()
            .map_err(|_| gone())
    }

    fn start_lane() -> io::Result<Calls> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        let (requests, incoming) = mpsc::channel::<Request>();
        let (ready, started) = mpsc::sync_channel::<io::Result<()>>(1);
        let their_end = theirs.as_raw_fd();
        std::thread::Builder::new()
            .name("dagstart-spawn".into())
            .spawn(move || {
                // The thread's table is a copy: `theirs` must be closed in dagstart's (below)
                // and `ours` in this one, where closing everything else takes care of it.
                #[allow(unsafe_code)]
                let socket = match own_small_table(their_end) {
                    // SAFETY: the number is `theirs`, open in the table this thread now has
                    // and owned by nothing else in it.
                    Ok(()) => unsafe { OwnedFd::from_raw_fd(their_end) },
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                let _ = ready.send(Ok(()));
                serve(incoming, &socket);
            })?;
        let started = started
            .recv()
            .map_err(|_| io::Error::other("the spawner thread ended at once"));
        // Closed in dagstart's table only now: the thread's copy of the table was made above.
        drop(theirs);
        started??;
        Ok(Calls {
            requests,
            pipes: ours,
        })
    }

    /// Spawns `command` from the spawner's table. Only for a command that places no
    /// descriptors of dagstart's in the child (those numbers mean nothing there).
    pub fn spawn(&self, command: std::process::Command) -> io::Result<Born> {
        let calls = self.lane()?;
        let (reply, answer) = mpsc::sync_channel(1);
        calls
            .requests
            .send(Request { command, reply })
            .map_err(|_| gone())?;
        let sent = answer.recv().map_err(|_| gone())??;
        if !sent.stdout && !sent.stderr {
            return Ok(Born {
                pid: sent.pid,
                stdout: None,
                stderr: None,
            });
        }
        match receive_pipes(&calls.pipes) {
            Ok(mut pipes) => {
                let stdout = if sent.stdout { pipes.pop_front() } else { None };
                let stderr = if sent.stderr { pipes.pop_front() } else { None };
                Ok(Born {
                    pid: sent.pid,
                    stdout,
                    stderr,
                })
            }
            Err(e) => {
                end_unread(sent.pid);
                Err(e)
            }
        }
    }
}

fn gone() -> io::Error {
    io::Error::other("the spawner thread is gone")
}

/// The pipes of one reply, in the order they were sent.
fn receive_pipes(socket: &OwnedFd) -> io::Result<std::collections::VecDeque<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let mut iov = [io::IoSliceMut::new(&mut byte)];
    let message = loop {
        match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other.map_err(io::Error::from)?,
        }
    };
    let mut pipes = std::collections::VecDeque::new();
    for cmsg in message.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            // SAFETY: descriptors the kernel just passed to us, owned by nothing else.
            #[allow(unsafe_code)]
            pipes.extend(
                fds.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    if message.flags.contains(MsgFlags::MSG_CTRUNC) {
        // No room for them in dagstart's table (the open-files limit).
        return Err(io::Error::from_raw_os_error(nix::libc::EMFILE));
    }
    Ok(pipes)
}

/// Gives the calling thread a descriptor table of its own and closes in it everything but
/// stdio, `socket` and what spawning into the run's namespace needs; then moves the thread
/// into that namespace for good.
fn own_small_table(socket: RawFd) -> io::Result<()> {
    unshare(CloneFlags::CLONE_FILES).map_err(io::Error::from)?;
    let mut keep = crate::engine::containment::descriptors();
    keep.push(socket);
    keep.sort_unstable();
    let mut from = 3;
    for fd in keep.into_iter().chain([RawFd::MAX]) {
        if fd > from {
            close_range(from, fd - 1);
        }
        from = fd.saturating_add(1).max(from);
    }
    crate::engine::containment::move_this_thread_in()
}

#[allow(unsafe_code)]
fn close_range(first: RawFd, last: RawFd) {
    // SAFETY: closes descriptors of this thread's own table, none of which any Rust object of
    // this thread owns (the table was just copied from the process's).
    unsafe {
        nix::libc::syscall(nix::libc::SYS_close_range, first as u32, last as u32, 0);
    }
}

/// The spawner's loop: spawn, send the pipes over, close them here, tell.
fn serve(incoming: mpsc::Receiver<Request>, socket: &OwnedFd) {
    for mut request in incoming {
        let answer =
            crate::engine::containment::spawn(|| request.command.spawn()).and_then(|child| {
                let pipes: Vec<RawFd> = [
                    child.stdout.as_ref().map(|p| p.as_raw_fd()),
                    child.stderr.as_ref().map(|p| p.as_raw_fd()),
                ]
                .into_iter()
                .flatten()
                .collect();
                let sent = Sent {
                    pid: child.id(),
                    stdout: child.stdout.is_some(),
                    stderr: child.stderr.is_some(),
                };
                let passed = if pipes.is_empty() {
                    Ok(())
                } else {
                    send_pipes(socket, &pipes)
                };
                // std's Child neither waits nor kills when dropped: this closes the pipes here
                // (their copies travel in the socket), and the caller owns the process.
                drop(child);
                match passed {
                    Ok(()) => Ok(sent),
                    Err(e) => {
                        end_unread(sent.pid);
                        Err(e)
                    }
                }
            });
        let _ = request.reply.send(answer);
    }
}

fn send_pipes(socket: &OwnedFd, pipes: &[RawFd]) -> io::Result<()> {
    let rights = [ControlMessage::ScmRights(pipes)];
    loop {
        match sendmsg::<()>(
            socket.as_raw_fd(),
            &[io::IoSlice::new(b"p")],
            &rights,
            MsgFlags::empty(),
            None,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other.map(drop).map_err(io::Error::from),
        }
    }
}

/// A child whose output cannot be read must not run: killed and reaped (by `ChildProcess`).
fn end_unread(pid: u32) {
    let pidfd = crate::engine::pidfd::Pidfd::of_child(pid).ok();
    drop(crate::engine::child::ChildProcess::new(
        pid,
        pidfd.map(std::sync::Arc::new),
    ));
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;
    use std::process::{Command, Stdio};

    use super::*;

    /// Whether every spawner thread's descriptor table is small (tests may start several).
    fn spawner_tables_are_small() -> bool {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|c| c.trim() == "dagstart-spawn")
            })
            .all(|t| std::fs::read_dir(t.path().join("fd")).unwrap().count() < 10)
    }

    #[test]
    fn a_child_spawned_there_is_read_here_and_the_spawner_keeps_nothing_of_ours() {
        // Something of dagstart's that must not stay open through the spawner's copy of the
        // table: a listening socket, whose port must be free again once dagstart closes it.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let many: Vec<std::fs::File> = (0..100)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let spawner = Spawner::start().unwrap();
        assert!(spawner_tables_are_small());
        let mut command = Command::new("sh");
        command
            .args(["-c", "echo out; echo err >&2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let born = spawner.spawn(command).unwrap();
        let mut out = String::new();
        std::fs::File::from(born.stdout.unwrap())
            .read_to_string(&mut out)
            .unwrap();
        let mut err = String::new();
        std::fs::File::from(born.stderr.unwrap())
            .read_to_string(&mut err)
            .unwrap();
        assert_eq!((out.as_str(), err.as_str()), ("out\n", "err\n"));
        let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(born.pid as i32), None);
        assert!(matches!(
            status,
            Ok(nix::sys::wait::WaitStatus::Exited(_, 0))
        ));
        assert!(spawner_tables_are_small(), "the pipes were closed there");
        drop(many);
        drop(listener);
        std::net::TcpListener::bind(address).expect("the port is free again");
    }

    #[test]
    fn a_failed_spawn_says_why() {
        let spawner = Spawner::start().unwrap();
        let error = spawner
            .spawn(Command::new("/nonexistent/program"))
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }
}
