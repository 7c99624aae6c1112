//! A spawned node process, waited on through the pidfd that also signals its group
//! ([`crate::engine::pidfd`]). tokio's `Child` would open a second pidfd of its own for the
//! same wait: one descriptor per node less, which is what decides how many nodes fit under the
//! open-files limit (10,000 nodes with output captured need 30,000 instead of 40,000).
//!
//! Where the kernel has no pidfds (before 5.3) the exit is polled every
//! [`POLL_WITHOUT_PIDFD`].

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::ExitStatusExt as _;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::Signal;
use tokio::io::unix::AsyncFd;

use crate::engine::pidfd::Pidfd;

/// How often an exit is looked for without a pidfd to wait on.
pub const POLL_WITHOUT_PIDFD: Duration = Duration::from_millis(20);

/// A child of ours until it is reaped. Dropped unreaped, it is killed and reaped in the
/// background, so that neither the process nor its zombie outlives its owner.
#[derive(Debug)]
pub struct ChildProcess {
    pid: u32,
    pidfd: Option<Arc<Pidfd>>,
    /// Registered with the runtime at the first wait.
    exit: Option<AsyncFd<Shared>>,
    status: Option<ExitStatus>,
    /// Killed by a dropped owner and being reaped by a task of its own.
    orphaned: bool,
}

/// The pidfd as the runtime's reactor sees it: readable once the process has exited.
#[derive(Debug)]
struct Shared(Arc<Pidfd>);

impl AsRawFd for Shared {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_owned().as_raw_fd()
    }
}

impl ChildProcess {
    /// Takes over `pid`, a child just spawned and not yet reaped, and `pidfd`, its pidfd where
    /// the kernel gave one.
    pub fn new(pid: u32, pidfd: Option<Arc<Pidfd>>) -> Self {
        Self {
            pid,
            pidfd,
            exit: None,
            status: None,
            orphaned: false,
        }
    }

    pub fn id(&self) -> u32 {
        self.pid
    }

    /// The exit status, if the process has exited; reaps it then.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = reap(self.pid)?;
        }
        Ok(self.status)
    }

    /// Waits for the exit and reaps. Cancel-safe: dropping the future loses nothing.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            let Some(pidfd) = &self.pidfd else {
                tokio::time::sleep(POLL_WITHOUT_PIDFD).await;
                continue;
            };
            if self.exit.is_none() {
                // SAFETY: the AsyncFd owns an Arc of the pidfd, and nothing closes a pidfd
                // while any Arc of it lives: the descriptor stays this one while registered.
                #[allow(unsafe_code)]
                let registered = unsafe {
                    AsyncFd::register_with_interest(
                        Shared(pidfd.clone()),
                        tokio::io::Interest::READABLE,
                    )
                };
                self.exit = Some(registered.map_err(io::Error::from)?);
            }
            let exit = self.exit.as_ref().expect("registered above");
            // Readable stays readable once the process has exited; the next `try_wait` reaps.
            exit.readable().await?.retain_ready();
        }
    }

    fn kill(&self) {
        match &self.pidfd {
            Some(pidfd) => {
                let _ = pidfd.signal(Signal::SIGKILL);
            }
            None => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(self.pid as i32),
                    Signal::SIGKILL,
                );
            }
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if self.status.is_some() || matches!(self.try_wait(), Ok(Some(_)) | Err(_)) {
            return;
        }
        self.kill();
        if !self.orphaned {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let mut orphan = ChildProcess::new(self.pid, self.pidfd.take());
                orphan.orphaned = true;
                runtime.spawn(async move {
                    let _ = orphan.wait().await;
                });
                return;
            }
        }
        // Outside a runtime (a test, the end of `main`), or an orphan whose reaping task was
        // dropped with its runtime: a SIGKILLed child exits at once.
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(self.pid as i32), None);
    }
}

/// `waitpid(pid, WNOHANG)` with the raw status std understands. We are the only reaper of our
/// children (nothing waits for "any child" while nodes run), so the number is still ours.
#[allow(unsafe_code)]
fn reap(pid: u32) -> io::Result<Option<ExitStatus>> {
    let mut raw = 0;
    loop {
        // SAFETY: waitpid with a pid, a pointer to a local int and flags.
        let reaped = unsafe { libc::waitpid(pid as libc::pid_t, &mut raw, libc::WNOHANG) };
        match reaped {
            0 => return Ok(None),
            -1 if Errno::last() == Errno::EINTR => continue,
            -1 => return Err(io::Error::last_os_error()),
            _ => return Ok(Some(ExitStatus::from_raw(raw))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spawn_pid(args: &[&str]) -> u32 {
        let child = std::process::Command::new(args[0])
            .args(&args[1..])
            .spawn()
            .unwrap();
        let pid = child.id();
        // std's Child does not reap on drop; ChildProcess owns the wait from here.
        drop(child);
        pid
    }

    fn spawn(args: &[&str]) -> ChildProcess {
        let pid = spawn_pid(args);
        ChildProcess::new(pid, Pidfd::of_child(pid).ok().map(Arc::new))
    }

    #[tokio::test]
    async fn wait_gives_the_exit_status() {
        let mut child = spawn(&["sh", "-c", "exit 3"]);
        assert_eq!(child.wait().await.unwrap().code(), Some(3));
        // Asking again answers from what was reaped.
        assert_eq!(child.try_wait().unwrap().and_then(|s| s.code()), Some(3));
    }

    #[tokio::test]
    async fn a_wait_cancelled_midway_loses_nothing() {
        let mut child = spawn(&["sleep", "0.2"]);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), child.wait())
                .await
                .is_err()
        );
        assert!(child.wait().await.unwrap().success());
    }

    #[tokio::test]
    async fn without_a_pidfd_the_exit_is_polled() {
        let mut child = ChildProcess::new(spawn_pid(&["true"]), None);
        assert!(child.wait().await.unwrap().success());
    }

    #[tokio::test]
    async fn dropped_unreaped_it_is_killed_and_reaped() {
        let child = spawn(&["sleep", "600"]);
        let pid = child.id();
        drop(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        // Gone from the process table: killed, and reaped (a zombie would still be listed).
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(std::time::Instant::now() < deadline, "{pid} is still there");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
