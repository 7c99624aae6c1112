//! The kernel as the last line against orphans: the run's processes live in a PID namespace
//! whose init is ours.
//!
//! [`enter`] (called once, at the start of a run) creates a PID namespace and forks its init,
//! a small reaper that does nothing else. Every process dagstart starts afterwards (nodes,
//! probes, the `--` command) goes through [`spawn`], which has the spawning thread fork into
//! that namespace: the process is born there, stays dagstart's own child (so it is waited for
//! as before) and is seen by dagstart under its host pid. (A thread cannot keep "children in
//! another namespace" as its standing setting: the kernel then refuses to create threads, so
//! the setting is switched on around each fork only.)
//!
//! When the init dies, the kernel SIGKILLs every process left in the namespace: grandchildren,
//! `setsid()` escapees and processes that cleared their environment included. The init dies
//! with dagstart, however dagstart ends: it has `PR_SET_PDEATHSIG = SIGKILL`, and it also exits
//! when the pipe only dagstart holds closes (covering a dagstart killed before the death
//! signal was armed). `pkill -9 dagstart` therefore leaves nothing running.
//!
//! The init also mounts a fresh `/proc` in a mount namespace of its own, which every spawned
//! process joins (`setns`) between fork and exec, so that inside the namespace `getpid()`,
//! `/proc/<pid>`, `ps` and `pkill` all agree. Everything else in that mount namespace is the
//! host's, and later host mounts propagate into it.
//!
//! Creating the namespaces needs CAP_SYS_ADMIN (root). Elsewhere, or with
//! `[settings] pid_namespace = false`, the run goes on without them and the guardian
//! ([`crate::engine::guardian`]) is the last line.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd as _, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::sync::OnceLock;

use nix::libc;
use nix::sched::{CloneFlags, setns, unshare};
use nix::unistd::{ForkResult, Pid, fork, pipe2};

/// The namespace the run's processes are born in.
#[derive(Debug)]
pub struct Namespace {
    /// The init's pid as dagstart sees it.
    init: Pid,
    /// The write end of the pipe whose closing tells the init that dagstart is done.
    alive: std::sync::Mutex<Option<OwnedFd>>,
    /// The init's mount namespace (with the namespace's own `/proc`), joined by every child.
    mounts: OwnedFd,
    /// The namespace itself, and dagstart's own, to switch the spawning thread between.
    inside: OwnedFd,
    outside: OwnedFd,
}

static CURRENT: OnceLock<Namespace> = OnceLock::new();

/// Why the run's processes are not in a PID namespace.
#[derive(Debug)]
pub struct NotContained(pub String);

/// Creates the run's PID namespace and starts its init. Call on a thread that creates no
/// threads meanwhile (the main thread, before the runtime starts). On failure nothing has
/// changed and processes are spawned as before.
pub fn enter() -> Result<(), NotContained> {
    if CURRENT.get().is_some() {
        return Ok(());
    }
    let outside: OwnedFd = std::fs::File::open("/proc/self/ns/pid")
        .map_err(|e| NotContained(format!("cannot read the current PID namespace: {e}")))?
        .into();
    unshare(CloneFlags::CLONE_NEWPID)
        .map_err(|e| NotContained(format!("cannot create a PID namespace: {e}")))?;
    let started = start_init();
    // Whatever happened, this thread goes back to giving its children dagstart's own
    // namespace, or it could not create threads.
    setns(&outside, CloneFlags::CLONE_NEWPID)
        .map_err(|e| NotContained(format!("cannot leave the PID namespace: {e}")))?;
    let (init, alive, mounts, inside) = started.map_err(NotContained)?;
    let _ = CURRENT.set(Namespace {
        init,
        alive: std::sync::Mutex::new(Some(alive)),
        mounts,
        inside,
        outside,
    });
    Ok(())
}

/// Spawns `command` in the namespace (or plainly when the run is not contained). The calling
/// thread gives its children the namespace only for the duration of the fork.
pub fn spawn(command: &mut tokio::process::Command) -> io::Result<tokio::process::Child> {
    let Some(namespace) = CURRENT.get() else {
        return command.spawn();
    };
    setns(&namespace.inside, CloneFlags::CLONE_NEWPID).map_err(io::Error::from)?;
    let spawned = command.spawn();
    setns(&namespace.outside, CloneFlags::CLONE_NEWPID).map_err(io::Error::from)?;
    spawned
}

/// Ends the namespace: the init exits, the kernel kills whatever is left in it, and this
/// waits (at most `limit`) until all of it is gone. Call after the run stopped its nodes.
pub fn end(limit: std::time::Duration) {
    let Some(namespace) = CURRENT.get() else {
        return;
    };
    if let Ok(mut alive) = namespace.alive.lock() {
        drop(alive.take());
    }
    reap_until_gone(namespace.init, limit);
}

/// The init stays until every process of the namespace has been reaped, ours included (the
/// kernel waits for zombies whose parent is outside the namespace): reap everything until it
/// is gone.
fn reap_until_gone(init: Pid, limit: std::time::Duration) {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
            Ok(status) if status.pid() == Some(init) => return,
            Ok(WaitStatus::StillAlive) => std::thread::sleep(std::time::Duration::from_millis(2)),
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// Arranges for `command`'s process to join the namespace's mount namespace (its `/proc`)
/// between fork and exec, then to return to `cwd` (joining resets the working directory).
/// Must be called before any `pre_exec` that drops privileges. Does nothing when the run is
/// not contained.
#[allow(unsafe_code)]
pub fn join_in_child(command: &mut tokio::process::Command, cwd: &Path) -> io::Result<()> {
    let Some(namespace) = CURRENT.get() else {
        return Ok(());
    };
    let mounts: RawFd = namespace.mounts.as_raw_fd();
    let cwd = std::path::absolute(cwd)?;
    let cwd = CString::new(cwd.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a path"))?;
    // SAFETY: setns and chdir are async-signal-safe system calls; the closure neither
    // allocates nor takes locks (the path was built before the fork).
    unsafe {
        command.pre_exec(move || {
            if libc::setns(mounts, libc::CLONE_NEWNS) != 0 || libc::chdir(cwd.as_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

/// Forks the init (the first child born in the new namespace, so its pid 1) and waits until
/// it has mounted the namespace's `/proc`.
/// Returns the init's pid, the pipe end that keeps it, its mount namespace and the PID
/// namespace.
fn start_init() -> Result<(Pid, OwnedFd, OwnedFd, OwnedFd), String> {
    let (ready_read, ready_write) =
        pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("cannot create a pipe: {e}"))?;
    let (alive_read, alive_write) =
        pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("cannot create a pipe: {e}"))?;
    let strings = InitStrings::new();
    // SAFETY: the child only makes async-signal-safe system calls (see `init_main`) and never
    // returns; the parent goes on as before.
    #[allow(unsafe_code)]
    let forked = unsafe { fork() }.map_err(|e| format!("cannot fork the namespace's init: {e}"))?;
    let child = match forked {
        ForkResult::Child => init_main(ready_write.as_raw_fd(), alive_read.as_raw_fd(), &strings),
        ForkResult::Parent { child } => child,
    };
    drop(ready_write);
    drop(alive_read);
    let mut answer = [0u8; 1];
    let read = nix::unistd::read(&ready_read, &mut answer);
    if read != Ok(1) || answer[0] != b'1' {
        let _ = nix::sys::wait::waitpid(child, None);
        return Err("cannot mount /proc for the PID namespace".into());
    }
    let open = |what: &str| {
        std::fs::File::open(format!("/proc/{child}/ns/{what}"))
            .map(OwnedFd::from)
            .map_err(|e| format!("cannot open the namespace's {what}: {e}"))
    };
    Ok((child, alive_write, open("mnt")?, open("pid")?))
}

/// The C strings the init needs, made before the fork (the child must not allocate).
struct InitStrings {
    root: CString,
    proc_dir: CString,
    proc_type: CString,
    dev_null: CString,
}

impl InitStrings {
    fn new() -> Self {
        let c = |s: &str| CString::new(s).expect("no NUL in a literal");
        Self {
            root: c("/"),
            proc_dir: c("/proc"),
            proc_type: c("proc"),
            dev_null: c("/dev/null"),
        }
    }
}

extern "C" fn ignore(_: libc::c_int) {}

/// The init: mount the namespace's `/proc`, say so, then reap orphans until dagstart is gone.
/// Only async-signal-safe system calls: it runs in a fork of a process that may have threads.
#[allow(unsafe_code)]
fn init_main(ready: RawFd, alive: RawFd, strings: &InitStrings) -> ! {
    // SAFETY: plain system calls on descriptors and C strings this process owns.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // Out of the terminal's process group: Ctrl-C is for dagstart, which stops nodes in
        // order; the init must outlive that.
        libc::setpgid(0, 0);
        let mounted = libc::unshare(libc::CLONE_NEWNS) == 0
            && libc::mount(
                std::ptr::null(),
                strings.root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            ) == 0
            && libc::mount(
                strings.proc_type.as_ptr(),
                strings.proc_dir.as_ptr(),
                strings.proc_type.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null(),
            ) == 0;
        let answer: &[u8; 1] = if mounted { b"1" } else { b"0" };
        libc::write(ready, answer.as_ptr().cast(), 1);
        if !mounted {
            libc::_exit(1);
        }
        // Keep only the pipe from dagstart (as stdin); hold nothing else of dagstart's open,
        // or a reader of its stdout or of the guardian's pipe would wait for us.
        libc::dup2(alive, 0);
        let null = libc::open(strings.dev_null.as_ptr(), libc::O_RDWR);
        libc::dup2(null, 1);
        libc::dup2(null, 2);
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        let mut chld: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut chld);
        libc::sigaddset(&mut chld, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &chld, std::ptr::null_mut());
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = ignore as *const () as usize;
        libc::sigaction(libc::SIGCHLD, &action, std::ptr::null_mut());
        let mut during_wait: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut during_wait);
        loop {
            while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG | libc::__WALL) > 0 {}
            let mut pipe = libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            };
            // SIGCHLD is let through only while waiting here, so none is missed between the
            // reaping above and the wait.
            if libc::ppoll(&mut pipe, 1, std::ptr::null(), &during_wait) > 0 {
                // EOF: dagstart is gone or done. Exiting makes the kernel kill the rest.
                libc::_exit(0);
            }
        }
    }
}
