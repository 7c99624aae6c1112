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
//! The init also mounts a fresh `/proc` in a mount namespace of its own, where every process
//! is born too, so that inside the namespace `getpid()`, `/proc/<pid>`, `ps` and `pkill` all
//! agree. The spawning thread switches to those mounts around the spawn as it does for the
//! PID namespace (it has a file-system context of its own for that, `unshare(CLONE_FS)`), so
//! the spawn needs no code between fork and exec: the standard library can then spawn
//! through `posix_spawn`, a vfork that does not copy dagstart's memory map, instead of a fork
//! that copies it and makes both sides fault on every page written afterwards (measured:
//! most of dagstart's CPU when it starts 200 services). Everything else in that mount
//! namespace is the host's, and later host mounts propagate into it.
//!
//! Creating the namespaces needs CAP_SYS_ADMIN (root). Without it, where the system lets
//! unprivileged users create user namespaces, the init is born in a new user namespace that
//! maps only dagstart's own user and group onto themselves, and owns the PID and mount
//! namespaces: see [`Joining::ThroughUserNamespace`] for how a process gets in then. Where
//! neither is allowed, or with `[settings] pid_namespace = false`, the run goes on without
//! them and the guardian ([`crate::engine::guardian`]) is the last line.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd as _, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::sync::OnceLock;

use nix::libc;
use nix::sched::{CloneFlags, setns, unshare};
use nix::unistd::{ForkResult, Pid, fork, pipe2};

/// How a new process gets into the namespace.
#[derive(Debug)]
enum Joining {
    /// dagstart has CAP_SYS_ADMIN: the spawning thread forks straight into the namespace.
    Directly,
    /// dagstart is unprivileged: only a member of the namespaces' user namespace may enter
    /// them, and only a single-threaded process may join a user namespace, so the child (a
    /// fork, single-threaded) joins the user namespace and the mounts, sets the PID namespace
    /// for its children and forks once more. The grandchild, born in the namespace, execs the
    /// node's program; the child stays as its waiting parent: it ignores every signal but
    /// SIGKILL (the group's stop signal is for the node, which gets it too, being in the same
    /// process group) and ends the way the node ended, so dagstart sees the node's own exit.
    ThroughUserNamespace { user: OwnedFd },
}

/// The namespace the run's processes are born in.
#[derive(Debug)]
pub struct Namespace {
    joining: Joining,
    /// The init's pid as dagstart sees it.
    init: Pid,
    /// The write end of the pipe whose closing tells the init that dagstart is done.
    alive: std::sync::Mutex<Option<OwnedFd>>,
    /// The init's mount namespace (with the namespace's own `/proc`), joined by every child.
    mounts: OwnedFd,
    /// The namespace itself, to switch the spawning thread to, and dagstart's own.
    inside: OwnedFd,
    ours: Ours,
}

/// dagstart's own PID and mount namespaces and working directory, to switch the spawning
/// thread back to.
#[derive(Debug)]
struct Ours {
    pids: OwnedFd,
    mounts: OwnedFd,
    working_dir: OwnedFd,
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
    let outside_mounts: OwnedFd = std::fs::File::open("/proc/self/ns/mnt")
        .map_err(|e| NotContained(format!("cannot read the current mount namespace: {e}")))?
        .into();
    let working_dir: OwnedFd = std::fs::File::open(".")
        .map_err(|e| NotContained(format!("cannot open the working directory: {e}")))?
        .into();
    let ours = Ours {
        pids: outside,
        mounts: outside_mounts,
        working_dir,
    };
    let outside = &ours.pids;
    let namespace = match unshare(CloneFlags::CLONE_NEWPID) {
        Ok(()) => {
            let started = start_init(None);
            // Whatever happened, this thread goes back to giving its children dagstart's own
            // namespace, or it could not create threads.
            setns(outside, CloneFlags::CLONE_NEWPID)
                .map_err(|e| NotContained(format!("cannot leave the PID namespace: {e}")))?;
            let init = started.map_err(NotContained)?;
            init.into_namespace(Joining::Directly, ours)
        }
        Err(nix::errno::Errno::EPERM) => {
            let maps = UserMaps::of_this_process();
            let init = start_init(Some(&maps)).map_err(|e| {
                NotContained(format!(
                    "cannot create a PID namespace (not root) nor one through a user namespace: {e}"
                ))
            })?;
            let user = open_namespace(init.pid, "user").map_err(NotContained)?;
            init.into_namespace(Joining::ThroughUserNamespace { user }, ours)
        }
        Err(e) => return Err(NotContained(format!("cannot create a PID namespace: {e}"))),
    };
    let _ = CURRENT.set(namespace);
    Ok(())
}

/// True when the run's processes are in a PID namespace: when dagstart dies they die with
/// its init, so they need no death signal of their own.
pub fn is_contained() -> bool {
    CURRENT.get().is_some()
}

/// Runs `spawn` (a `Command::spawn` of std's or tokio's) so that its child is born in the
/// namespace, or plainly when the run is not contained. The calling thread gives its children
/// the namespace and its mounts only for the duration of the spawn. The command's working
/// directory must be absolute (the thread's own is elsewhere meanwhile).
pub fn spawn<T>(spawn: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let Some(namespace) = CURRENT.get() else {
        return spawn();
    };
    if let Joining::ThroughUserNamespace { .. } = namespace.joining {
        // The child gets in by itself (see `join_in_child`).
        return spawn();
    }
    if MOVED_IN.get() {
        return spawn();
    }
    own_file_system_context()?;
    setns(&namespace.inside, CloneFlags::CLONE_NEWPID).map_err(io::Error::from)?;
    let spawned = match setns(&namespace.mounts, CloneFlags::CLONE_NEWNS) {
        Ok(()) => spawn(),
        Err(e) => Err(io::Error::from(e)),
    };
    let back = setns(&namespace.ours.mounts, CloneFlags::CLONE_NEWNS)
        .and_then(|()| nix::unistd::fchdir(&namespace.ours.working_dir))
        .and_then(|()| setns(&namespace.ours.pids, CloneFlags::CLONE_NEWPID));
    // A thread that cannot get back would spawn everything later in the wrong place.
    back.expect("the spawning thread returns to dagstart's own namespaces");
    spawned
}

thread_local! {
    /// This thread gives its children the namespace for good ([`move_this_thread_in`]).
    static MOVED_IN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Makes the calling thread give all its children the namespace and its mounts from now on,
/// instead of switching around each spawn (five system calls, two of them mount namespace
/// switches, per node). For a thread that only spawns (`engine::spawner`): its working
/// directory is the namespace's root from here. Does nothing when the run is not contained
/// or is contained through a user namespace (the children get in by themselves).
pub fn move_this_thread_in() -> io::Result<()> {
    let Some(Namespace {
        joining: Joining::Directly,
        inside,
        mounts,
        ..
    }) = CURRENT.get()
    else {
        return Ok(());
    };
    own_file_system_context()?;
    setns(inside, CloneFlags::CLONE_NEWPID).map_err(io::Error::from)?;
    setns(mounts, CloneFlags::CLONE_NEWNS).map_err(io::Error::from)?;
    MOVED_IN.set(true);
    Ok(())
}

/// The descriptors that spawning into the namespace uses ([`spawn`], [`join_in_child`]): a
/// thread with a table of its own (`engine::spawner`) keeps these and closes the rest.
pub fn descriptors() -> Vec<RawFd> {
    let Some(namespace) = CURRENT.get() else {
        return Vec::new();
    };
    let mut fds = vec![
        namespace.mounts.as_raw_fd(),
        namespace.inside.as_raw_fd(),
        namespace.ours.pids.as_raw_fd(),
        namespace.ours.mounts.as_raw_fd(),
        namespace.ours.working_dir.as_raw_fd(),
    ];
    if let Joining::ThroughUserNamespace { user } = &namespace.joining {
        fds.push(user.as_raw_fd());
    }
    fds
}

/// Gives the calling thread a working directory and root of its own, which a thread must have
/// to switch mount namespaces (they are shared by all threads of a process otherwise). Done
/// before every switch: a thread this one created since shares its context again. Unsharing
/// what is not shared costs nothing.
fn own_file_system_context() -> io::Result<()> {
    unshare(CloneFlags::CLONE_FS).map_err(io::Error::from)
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

/// For a run contained through a user namespace, arranges for `command`'s process to get into
/// the namespace between fork and exec, the way [`Joining::ThroughUserNamespace`] describes,
/// and to return to `cwd` (joining the mounts resets the working directory). Must be called
/// before any `pre_exec` that drops privileges or places descriptors (those then run in the
/// process that execs). Does nothing otherwise: as root the process is born in the namespace
/// (see [`spawn`]).
#[allow(unsafe_code)]
pub fn join_in_child(command: &mut std::process::Command, cwd: &Path) -> io::Result<()> {
    let Some(Namespace {
        joining: Joining::ThroughUserNamespace { user },
        mounts,
        inside,
        ..
    }) = CURRENT.get()
    else {
        return Ok(());
    };
    let (user, mounts, pids): (RawFd, RawFd, RawFd) =
        (user.as_raw_fd(), mounts.as_raw_fd(), inside.as_raw_fd());
    let cwd = std::path::absolute(cwd)?;
    let cwd = CString::new(cwd.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a path"))?;
    // SAFETY: setns, chdir, fork, waitpid, sigaction, sigprocmask, close_range, kill and _exit
    // are async-signal-safe system calls; the closure neither allocates nor takes locks (the
    // path was built before the fork).
    unsafe {
        command.pre_exec(move || {
            if libc::setns(user, libc::CLONE_NEWUSER) != 0
                || libc::setns(mounts, libc::CLONE_NEWNS) != 0
                || libc::chdir(cwd.as_ptr()) != 0
                || libc::setns(pids, libc::CLONE_NEWPID) != 0
            {
                return Err(io::Error::last_os_error());
            }
            fork_into_namespace()
        });
    }
    Ok(())
}

/// Forks the process that will exec the node's program (born in the namespace this one gives
/// its children) and returns in it; this process becomes its waiting parent and never
/// returns. Only async-signal-safe system calls: this runs between fork and exec.
#[allow(unsafe_code)]
unsafe fn fork_into_namespace() -> io::Result<()> {
    // SAFETY: see the caller; all on this process's own signal state and descriptors.
    unsafe {
        // Both sides start with every signal blocked, so that neither dies of a stop signal
        // before the waiting parent ignores them; the node gets its mask back before exec.
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut before: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, &mut before);
        let node = libc::fork();
        if node < 0 {
            let error = io::Error::last_os_error();
            libc::sigprocmask(libc::SIG_SETMASK, &before, std::ptr::null_mut());
            return Err(error);
        }
        if node == 0 {
            libc::sigprocmask(libc::SIG_SETMASK, &before, std::ptr::null_mut());
            return Ok(());
        }
        wait_as_the_nodes_parent(node)
    }
}

/// The waiting parent: dies with dagstart, holds no descriptor (not dagstart's exec-error
/// pipe, which must close when the node execs, nor the node's output pipes), ignores every
/// signal it can, and ends as the node ended.
#[allow(unsafe_code)]
unsafe fn wait_as_the_nodes_parent(node: libc::pid_t) -> ! {
    // SAFETY: system calls on this process's own state.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
        for signal in 1..libc::SIGRTMAX() {
            // SIGCHLD keeps its default: ignoring it would reap the node before waitpid.
            if signal != libc::SIGKILL && signal != libc::SIGSTOP && signal != libc::SIGCHLD {
                libc::signal(signal, libc::SIG_IGN);
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        let mut status = 0;
        while libc::waitpid(node, &mut status, 0) != node {
            if *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
        }
        if libc::WIFSIGNALED(status) {
            let signal = libc::WTERMSIG(status);
            libc::signal(signal, libc::SIG_DFL);
            libc::kill(libc::getpid(), signal);
            libc::_exit(128 + signal);
        }
        libc::_exit(libc::WEXITSTATUS(status))
    }
}

/// The user namespace's maps: dagstart's own user and group onto themselves, nothing else
/// (all an unprivileged process may map). Made before the fork: the child must not allocate.
struct UserMaps {
    setgroups: CString,
    deny: &'static [u8],
    uid_map: CString,
    uid_line: Vec<u8>,
    gid_map: CString,
    gid_line: Vec<u8>,
}

impl UserMaps {
    fn of_this_process() -> Self {
        let c = |s: &str| CString::new(s).expect("no NUL in a literal");
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        Self {
            setgroups: c("/proc/self/setgroups"),
            deny: b"deny",
            uid_map: c("/proc/self/uid_map"),
            uid_line: format!("{uid} {uid} 1").into_bytes(),
            gid_map: c("/proc/self/gid_map"),
            gid_line: format!("{gid} {gid} 1").into_bytes(),
        }
    }

    /// Writes the maps for the calling process (just born in the new user namespace).
    /// Only async-signal-safe system calls.
    #[allow(unsafe_code)]
    fn write(&self) -> bool {
        let write = |path: &CString, text: &[u8]| {
            // SAFETY: open, write and close on a path and bytes this process owns.
            unsafe {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return false;
                }
                let written = libc::write(fd, text.as_ptr().cast(), text.len());
                libc::close(fd);
                written == text.len() as isize
            }
        };
        // Groups may not be dropped in the namespace (or a group meant to deny access could
        // be shed), which is what lets an unprivileged process map its group.
        write(&self.setgroups, self.deny)
            && write(&self.uid_map, &self.uid_line)
            && write(&self.gid_map, &self.gid_line)
    }
}

/// A started init, not yet the run's namespace.
struct Init {
    pid: Pid,
    alive: OwnedFd,
    mounts: OwnedFd,
    inside: OwnedFd,
}

impl Init {
    fn into_namespace(self, joining: Joining, ours: Ours) -> Namespace {
        Namespace {
            joining,
            init: self.pid,
            alive: std::sync::Mutex::new(Some(self.alive)),
            mounts: self.mounts,
            inside: self.inside,
            ours,
        }
    }
}

fn open_namespace(pid: Pid, what: &str) -> Result<OwnedFd, String> {
    std::fs::File::open(format!("/proc/{pid}/ns/{what}"))
        .map(OwnedFd::from)
        .map_err(|e| format!("cannot open the namespace's {what}: {e}"))
}

/// Forks the init (the first child born in the new namespace, so its pid 1) and waits until
/// it has mounted the namespace's `/proc`. With `maps`, the init is born in a new user namespace
/// and a new PID namespace at once (`clone`), and maps dagstart's user and group in it first;
/// without, the calling thread has already unshared the PID namespace.
fn start_init(maps: Option<&UserMaps>) -> Result<Init, String> {
    let (ready_read, ready_write) =
        pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("cannot create a pipe: {e}"))?;
    let (alive_read, alive_write) =
        pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("cannot create a pipe: {e}"))?;
    let strings = InitStrings::new();
    let child = match fork_init(maps) {
        Err(e) => return Err(format!("cannot start the namespace's init: {e}")),
        Ok(None) => {
            let mapped = maps.is_none_or(UserMaps::write);
            init_main(
                ready_write.as_raw_fd(),
                alive_read.as_raw_fd(),
                &strings,
                mapped,
            )
        }
        Ok(Some(child)) => child,
    };
    drop(ready_write);
    drop(alive_read);
    let mut answer = [0u8; 1];
    let read = nix::unistd::read(&ready_read, &mut answer);
    if read != Ok(1) || answer[0] != b'1' {
        let _ = nix::sys::wait::waitpid(child, None);
        return Err("cannot map the user or mount /proc for the PID namespace".into());
    }
    Ok(Init {
        pid: child,
        alive: alive_write,
        mounts: open_namespace(child, "mnt")?,
        inside: open_namespace(child, "pid")?,
    })
}

/// fork(), or with `maps` a fork into a new user and PID namespace: `Some(child)` in the
/// parent, `None` in the child.
#[allow(unsafe_code)]
fn fork_init(maps: Option<&UserMaps>) -> nix::Result<Option<Pid>> {
    if maps.is_none() {
        // SAFETY: the child only makes async-signal-safe system calls (see `init_main`) and
        // never returns; the parent goes on as before.
        return match unsafe { fork() }? {
            ForkResult::Child => Ok(None),
            ForkResult::Parent { child } => Ok(Some(child)),
        };
    }
    let flags = libc::CLONE_NEWUSER | libc::CLONE_NEWPID | libc::SIGCHLD;
    // SAFETY: clone without a new stack behaves as fork; as above, the child only makes
    // async-signal-safe system calls and never returns.
    let child = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match child {
        -1 => Err(nix::errno::Errno::last()),
        0 => Ok(None),
        pid => Ok(Some(Pid::from_raw(pid as i32))),
    }
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
fn init_main(ready: RawFd, alive: RawFd, strings: &InitStrings, mapped: bool) -> ! {
    // SAFETY: plain system calls on descriptors and C strings this process owns.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // Out of the terminal's process group: Ctrl-C is for dagstart, which stops nodes in
        // order; the init must outlive that.
        libc::setpgid(0, 0);
        let mounted = mapped
            && libc::unshare(libc::CLONE_NEWNS) == 0
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
