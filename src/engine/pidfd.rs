//! Process file descriptors: a handle on one process, and through it on the process group it
//! leads, that can never come to mean another process the way a pid number can.
//!
//! A pidfd refers to the kernel's own record of the process (its `struct pid`), which is not
//! reused when the number is. Signalling a group through its leader's pidfd
//! (`PIDFD_SIGNAL_PROCESS_GROUP`, Linux 6.9) therefore reaches the group's members even after
//! the leader has been reaped, and reaches nothing once the group is empty, even if its
//! number has meanwhile been handed to an unrelated process.

use std::io;
use std::os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd};

use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::Signal;

/// A pidfd of one process.
#[derive(Debug)]
pub struct Pidfd(OwnedFd);

impl Pidfd {
    /// Opens a pidfd for `pid`, which must be a child of ours not yet reaped (only then is the
    /// number certainly still its).
    #[allow(unsafe_code)]
    pub fn of_child(pid: u32) -> io::Result<Self> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor the kernel just returned, owned by nothing else.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// Wraps a pidfd received from elsewhere (the guardian gets them over a socket).
    pub fn from_owned(fd: OwnedFd) -> Self {
        Self(fd)
    }

    pub fn as_owned(&self) -> &OwnedFd {
        &self.0
    }

    /// True once the process has exited (a pidfd polls readable then).
    pub fn has_exited(&self) -> bool {
        let mut poll = [nix::poll::PollFd::new(
            self.0.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        !matches!(
            nix::poll::poll(&mut poll, nix::poll::PollTimeout::ZERO),
            Ok(0)
        )
    }

    /// Sends `signal` to the process; one that has exited is fine.
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        match self.send(signal as libc::c_int, 0) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(io::Error::from(e)),
        }
    }

    /// Sends `signal` to every process of the group this process leads; with `None`, only
    /// asks whether the group has a member left. `ESRCH`: nothing is left of the group.
    /// `EINVAL`: the kernel predates group signalling through a pidfd (before 6.9).
    pub fn signal_group(&self, signal: Option<Signal>) -> Result<(), Errno> {
        self.send(
            signal.map_or(0, |s| s as libc::c_int),
            PIDFD_SIGNAL_PROCESS_GROUP,
        )
    }

    #[allow(unsafe_code)]
    fn send(&self, signal: libc::c_int, flags: libc::c_uint) -> Result<(), Errno> {
        // SAFETY: pidfd_send_signal with a descriptor we own, no siginfo, and flags.
        let result = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                flags,
            )
        };
        if result == 0 {
            Ok(())
        } else {
            Err(Errno::last())
        }
    }
}

/// From `<linux/pidfd.h>`: the signal goes to the process group of the pidfd's process.
const PIDFD_SIGNAL_PROCESS_GROUP: libc::c_uint = 1 << 2;

#[cfg(test)]
mod tests {
    use std::io::BufRead as _;
    use std::os::unix::process::CommandExt as _;

    use super::*;

    /// The leader exits and is reaped; its pidfd still reaches the member it left behind, and
    /// once that is gone too, the group counts as empty.
    #[test]
    fn a_group_is_reached_through_its_reaped_leader() {
        let mut leader = std::process::Command::new("sh")
            .args(["-c", "sleep 60 & echo $!"])
            .stdout(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let pidfd = Pidfd::of_child(leader.id()).unwrap();
        let mut line = String::new();
        std::io::BufReader::new(leader.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let member: i32 = line.trim().parse().unwrap();
        assert!(leader.wait().unwrap().success());
        assert!(pidfd.has_exited());
        match pidfd.signal_group(None) {
            Err(Errno::EINVAL) => return eprintln!("skipped: the kernel predates Linux 6.9"),
            other => assert_eq!(other, Ok(()), "the member keeps the group"),
        }
        pidfd.signal_group(Some(Signal::SIGKILL)).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while pidfd.signal_group(None).is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "pid {member} survived"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(pidfd.signal_group(None), Err(Errno::ESRCH));
    }
}
