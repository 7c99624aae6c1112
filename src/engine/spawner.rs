//! Spawning from a small descriptor table.
//!
//! A spawn is a vfork and an exec, and both cost the size of the spawning process's descriptor
//! table: the child takes a reference on every open file, and exec closes every close-on-exec
//! descriptor again, one by one. dagstart holds one to three descriptors per node, so with
//! thousands of nodes every spawn paid for all the others (5,000 nodes: a third of dagstart's
//! CPU in the kernel's `dup_fd` and `do_close_on_exec`).
//!
//! The spawner is a thread with a descriptor table of its own (`unshare(CLONE_FILES)`), from
//! which everything is closed but what spawning needs (the run namespace's descriptors).
//! Nodes are spawned there; their output pipes are then copied into dagstart's table with
//! `pidfd_getfd` on a pidfd of the thread (Linux 6.9) and closed in the spawner's. A node
//! with descriptors to inherit (sockets, a readiness pipe), or a kernel without thread pidfds,
//! is spawned in place, as before.

use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::sync::{Mutex, OnceLock, mpsc};

use nix::libc;
use nix::sched::{CloneFlags, unshare};

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

pub struct Spawner {
    requests: Mutex<mpsc::Sender<Request>>,
    /// A pidfd of the spawner thread: `pidfd_getfd` reads its descriptor table through it.
    thread: OwnedFd,
}

/// What a spawned child left in the spawner's table, by number there.
struct LeftThere {
    pid: u32,
    stdout: Option<RawFd>,
    stderr: Option<RawFd>,
}

struct Request {
    command: std::process::Command,
    reply: mpsc::SyncSender<io::Result<LeftThere>>,
    /// Signalled once the caller has its copies of the pipes: the spawner's go then.
    taken: mpsc::Receiver<()>,
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
        let (requests, incoming) = mpsc::channel::<Request>();
        let (ready, started) = mpsc::sync_channel::<io::Result<(libc::pid_t, RawFd)>>(1);
        std::thread::Builder::new()
            .name("dagstart-spawn".into())
            .spawn(move || match own_small_table() {
                Ok(probe) => {
                    // SAFETY: gettid has no preconditions.
                    #[allow(unsafe_code)]
                    let tid = unsafe { libc::gettid() };
                    let _ = ready.send(Ok((tid, probe.as_raw_fd())));
                    serve(incoming);
                    drop(probe);
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                }
            })?;
        let (tid, probe) = started
            .recv()
            .map_err(|_| io::Error::other("the spawner thread ended at once"))??;
        let thread = thread_pidfd(tid)?;
        let spawner = Self {
            requests: Mutex::new(requests),
            thread,
        };
        // One copy, to know that pidfd_getfd works here (a seccomp filter may forbid it).
        drop(spawner.pull(probe)?);
        Ok(spawner)
    }

    /// Spawns `command` from the spawner's table. Only for a command that places no
    /// descriptors of dagstart's in the child (those numbers mean nothing there).
    pub fn spawn(&self, command: std::process::Command) -> io::Result<Born> {
        let (reply, answer) = mpsc::sync_channel(1);
        let (taken, wait_taken) = mpsc::sync_channel(1);
        let sent = self.requests.lock().map_err(|_| gone())?.send(Request {
            command,
            reply,
            taken: wait_taken,
        });
        sent.map_err(|_| gone())?;
        let born = answer.recv().map_err(|_| gone())??;
        let pulled = (|| {
            Ok::<_, io::Error>((
                born.stdout.map(|fd| self.pull(fd)).transpose()?,
                born.stderr.map(|fd| self.pull(fd)).transpose()?,
            ))
        })();
        let _ = taken.send(());
        match pulled {
            Ok((stdout, stderr)) => Ok(Born {
                pid: born.pid,
                stdout,
                stderr,
            }),
            Err(e) => {
                // A child whose output cannot be read must not run: killed and reaped.
                let pidfd = crate::engine::pidfd::Pidfd::of_child(born.pid).ok();
                drop(crate::engine::child::ChildProcess::new(
                    born.pid,
                    pidfd.map(std::sync::Arc::new),
                ));
                Err(e)
            }
        }
    }

    /// A copy, in dagstart's table, of descriptor `fd` of the spawner's.
    #[allow(unsafe_code)]
    fn pull(&self, fd: RawFd) -> io::Result<OwnedFd> {
        // SAFETY: pidfd_getfd with a pidfd we own, a number and no flags; it returns a new
        // descriptor (close-on-exec) or -1.
        let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, self.thread.as_raw_fd(), fd, 0) };
        if copy < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor the kernel just returned, owned by nothing else.
        Ok(unsafe { OwnedFd::from_raw_fd(copy as RawFd) })
    }
}

fn gone() -> io::Error {
    io::Error::other("the spawner thread is gone")
}

/// Gives the calling thread a descriptor table of its own and closes in it everything but
/// stdio and what spawning into the run's namespace needs; returns a descriptor opened there
/// to probe `pidfd_getfd` with.
fn own_small_table() -> io::Result<OwnedFd> {
    unshare(CloneFlags::CLONE_FILES).map_err(io::Error::from)?;
    let mut keep = crate::engine::containment::descriptors();
    keep.sort_unstable();
    let mut from = 3;
    for fd in keep.into_iter().chain([RawFd::MAX]) {
        if fd > from {
            close_range(from, fd - 1);
        }
        from = fd.saturating_add(1).max(from);
    }
    Ok(std::fs::File::open("/dev/null")?.into())
}

#[allow(unsafe_code)]
fn close_range(first: RawFd, last: RawFd) {
    // SAFETY: closes descriptors of this thread's own table, none of which any Rust object of
    // this thread owns (the table was just copied from the process's).
    unsafe {
        libc::syscall(libc::SYS_close_range, first as u32, last as u32, 0);
    }
}

/// From `<linux/pidfd.h>`: a pidfd of one thread rather than of its thread group (6.9).
const PIDFD_THREAD: libc::c_int = libc::O_EXCL;

#[allow(unsafe_code)]
fn thread_pidfd(tid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open with a thread id of ours and a flag; a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, tid, PIDFD_THREAD) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just returned, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The spawner's loop: spawn, tell, wait until the caller has copied the pipes, close them.
fn serve(incoming: mpsc::Receiver<Request>) {
    for mut request in incoming {
        let child = crate::engine::containment::spawn(|| request.command.spawn());
        let child = match child {
            Ok(child) => child,
            Err(e) => {
                let _ = request.reply.send(Err(e));
                continue;
            }
        };
        let born = LeftThere {
            pid: child.id(),
            stdout: child.stdout.as_ref().map(|p| p.as_raw_fd()),
            stderr: child.stderr.as_ref().map(|p| p.as_raw_fd()),
        };
        if request.reply.send(Ok(born)).is_ok() {
            let _ = request.taken.recv();
        }
        // std's Child neither waits nor kills when dropped: this closes the pipes, and the
        // caller's ChildProcess owns the process.
        drop(child);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;
    use std::process::{Command, Stdio};

    use super::*;

    fn thread_table_size(spawner: &Spawner) -> usize {
        let info =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", spawner.thread.as_raw_fd()))
                .unwrap();
        let tid = info
            .lines()
            .find_map(|l| l.strip_prefix("Pid:"))
            .unwrap()
            .trim()
            .to_owned();
        std::fs::read_dir(format!("/proc/self/task/{tid}/fd"))
            .unwrap()
            .count()
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
        let Ok(spawner) = Spawner::start() else {
            eprintln!("skipped: no thread pidfds or pidfd_getfd here (Linux 6.9+)");
            return;
        };
        assert!(thread_table_size(&spawner) < 10);
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
        assert!(
            thread_table_size(&spawner) < 10,
            "the pipes were closed there"
        );
        drop(many);
        drop(listener);
        std::net::TcpListener::bind(address).expect("the port is free again");
    }

    #[test]
    fn a_failed_spawn_says_why() {
        let Ok(spawner) = Spawner::start() else {
            return;
        };
        let error = spawner
            .spawn(Command::new("/nonexistent/program"))
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }
}
