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
//!    without the marker, reads the id of every new process group from a pipe. When the pipe
//!    closes (dagstart exited, however it died) it does the same sweep as 2 and exits: the
//!    grandchildren that PDEATHSIG cannot reach are gone within moments.
//!
//! What these do not cover (the namespace does): a process that both leaves the group and
//! clears its environment.

use std::io::{BufRead as _, Write as _};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::engine::process::ProcessGroup;

/// The hidden first argument that runs the guardian.
pub const GUARDIAN: &str = "__guardian";
/// The environment variable that marks every process of a run.
pub const RUN_MARKER: &str = "DAGSTART_RUN";

/// dagstart's end of the guardian. New process groups are written to its pipe by a thread
/// of their own, so a guardian that reads slowly never blocks the scheduler.
#[derive(Debug)]
pub struct Guardian {
    child: Child,
    groups: Option<std::sync::mpsc::Sender<i32>>,
    writer: Option<std::thread::JoinHandle<()>>,
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
        let mut child = Command::new(std::env::current_exe()?)
            .args([GUARDIAN, run_id])
            .arg(runtime_dir)
            .args(cgroup)
            .env_remove(RUN_MARKER)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            // Its own group: a Ctrl-C on the terminal must not take the guardian down early.
            .process_group(0)
            .spawn()?;
        let mut pipe = child.stdin.take().expect("the guardian's stdin is piped");
        let (groups, rx) = std::sync::mpsc::channel::<i32>();
        let writer = std::thread::Builder::new()
            .name("dagstart-guardian".into())
            .spawn(move || {
                for group in rx {
                    if writeln!(pipe, "{group}").is_err() {
                        break;
                    }
                }
                // Dropping the pipe here is the guardian's cue to sweep and exit.
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
    pub fn watch(&mut self, group: ProcessGroup) {
        if let Some(groups) = &self.groups {
            let _ = groups.send(group.id());
        }
    }

    /// Tells the guardian that a process group is gone and must be forgotten.
    pub fn forget(&mut self, group: ProcessGroup) {
        if let Some(groups) = &self.groups {
            let _ = groups.send(-group.id());
        }
    }
}

impl Drop for Guardian {
    fn drop(&mut self) {
        // Closing the pipe is the guardian's cue; after a clean sweep it finds nothing left.
        drop(self.groups.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        let _ = self.child.wait();
    }
}

/// The guardian itself: collect process groups until stdin closes, then kill what is left
/// (the run's cgroup too) and remove the run's runtime directory and cgroup.
pub fn run_guardian(
    run_id: &str,
    runtime_dir: Option<&std::path::Path>,
    cgroup: Option<&std::path::Path>,
) -> i32 {
    // "<pgid>" adds a group, "-<pgid>" forgets one that is gone: its number may be handed to
    // an unrelated process later, which must never be signalled.
    let mut groups = std::collections::HashSet::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match line.trim().parse::<i32>() {
            Ok(gone) if gone < 0 => {
                groups.remove(&-gone);
            }
            Ok(group) => {
                groups.insert(group);
            }
            Err(_) => {}
        }
    }
    for group in groups {
        let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
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
