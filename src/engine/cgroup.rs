//! A cgroup per node, where cgroup v2 is writable: what a node started is found and stopped
//! even after it left the node's process group and session (systemd's way).
//!
//! At the start of a run dagstart creates `dagstart-<pid>` under its own cgroup (v2), and a
//! child of it for each node that is spawned (`<index>-<name>`). A thread of dagstart's makes
//! it and moves each node's process there right after the spawn; what it starts from then on
//! is born there and cannot leave (only a privileged process could move it out). Whenever a
//! node's process group gets its final SIGKILL (stop, kill, exit of the leader) its cgroup
//! gets `cgroup.kill`, which takes the escapees too. At the end of the run, or by the
//! guardian after a kill -9 of dagstart, the whole run's cgroup is killed and removed.
//!
//! Why a thread and not the child itself between fork and exec: each move waits for an RCU
//! grace period in the kernel, 10 ms and more on a busy machine, and a child that waits
//! delays its exec, its readiness and the spawn that waits for its exec (measured: 13 ms per
//! level of a chain of services). The price: what a node forks in its first moments, before
//! the move, stays outside its cgroup; the run's PID namespace still ends it with the run.
//!
//! Where cgroup v2 is not mounted or not writable (not root, no delegation) nothing of this
//! happens and process groups are what a stop reaches.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::engine::pidfd::Pidfd;

static RUN: OnceLock<PathBuf> = OnceLock::new();

/// The prefix of every run's cgroup directory (the guardian removes only such directories).
pub const RUN_PREFIX: &str = "dagstart-";

/// Creates the run's cgroup under dagstart's own; its path, or why not.
pub fn create_run() -> Result<PathBuf, String> {
    if let Some(path) = RUN.get() {
        return Ok(path.clone());
    }
    let own = own_cgroup().ok_or("no writable cgroup v2 hierarchy")?;
    remove_stale(&own);
    let path = own.join(format!("{RUN_PREFIX}{}", std::process::id()));
    std::fs::create_dir(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let (moves, queue) = std::sync::mpsc::channel::<Move>();
    std::thread::Builder::new()
        .name("dagstart-cgroup".into())
        .spawn(move || {
            for Move { pid, pidfd, cgroup } in queue {
                // Moving by number is only safe while the number is the node's: a node that
                // has already exited may be reaped any moment and its number handed on.
                if !pidfd.has_exited() {
                    // Made here at the node's first spawn, not on the spawn's path: making a
                    // cgroup takes the kernel 0.1 ms and more (200 spawns: 10-20 ms).
                    let _ = std::fs::create_dir(&cgroup);
                    move_with_descendants(pid, &cgroup.join("cgroup.procs"));
                }
            }
        })
        .map_err(|e| format!("cannot start the cgroup thread: {e}"))?;
    let _ = MOVER.set(std::sync::Mutex::new(moves));
    let _ = RUN.set(path.clone());
    Ok(path)
}

/// Moves `pid` and what it has started by now (its descendants that are still its
/// descendants) into the cgroup whose `cgroup.procs` is `procs`. A process gone meanwhile is
/// fine.
fn move_with_descendants(pid: u32, procs: &Path) {
    let mut stack = vec![pid];
    while let Some(pid) = stack.pop() {
        let _ = std::fs::write(procs, pid.to_string());
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            if let Ok(children) = std::fs::read_to_string(task.path().join("children")) {
                stack.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
    }
}

/// A node process to move: its pid, a pidfd that tells whether it is still the same
/// process, and where to.
struct Move {
    pid: u32,
    pidfd: Arc<Pidfd>,
    cgroup: PathBuf,
}

/// The thread that moves new node processes into their cgroups.
static MOVER: OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<Move>>> = OnceLock::new();

/// Removes the cgroups of earlier runs whose dagstart and guardian were both killed.
fn remove_stale(own: &Path) {
    let Ok(entries) = std::fs::read_dir(own) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(RUN_PREFIX))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if !crate::engine::guardian::is_running_dagstart(pid) {
            remove_run(&entry.path(), Duration::from_millis(500));
        }
    }
}

/// Where dagstart's own cgroup is in the file system: the cgroup2 mount (from
/// `/proc/self/mountinfo`) joined with the `0::` line of `/proc/self/cgroup`.
fn own_cgroup() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mountinfo.lines().find_map(|line| {
        let (fields, fs) = line.split_once(" - ")?;
        if !fs.starts_with("cgroup2 ") {
            return None;
        }
        let mut fields = fields.split(' ');
        let root = fields.nth(3)?;
        let point = fields.next()?;
        (root == "/").then(|| PathBuf::from(point))
    })?;
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = cgroups.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(mount.join(own.trim_start_matches('/')))
}

/// A node's cgroup.
#[derive(Debug, Clone)]
pub struct NodeCgroup {
    path: PathBuf,
}

impl NodeCgroup {
    /// The cgroup of node number `index` called `name` (made by the cgroup thread with the
    /// first move into it), or `None` when the run has no cgroup.
    pub fn for_node(index: usize, name: &str) -> Option<Self> {
        let run = RUN.get()?;
        // Node names are file-name safe (the config checks them); the index keeps a node
        // removed and added again by a reload apart from a new one of the same name.
        Some(Self {
            path: run.join(format!("{index}-{name}")),
        })
    }

    /// Moves the just-spawned process `pid`, whose pidfd is `pidfd`, into this cgroup, soon
    /// (see the module doc).
    pub fn adopt(&self, pid: u32, pidfd: Arc<Pidfd>) {
        let Some(mover) = MOVER.get() else {
            return;
        };
        if let Ok(mover) = mover.lock() {
            let _ = mover.send(Move {
                pid,
                pidfd,
                cgroup: self.path.clone(),
            });
        }
    }

    /// SIGKILLs every process in the cgroup, wherever it went.
    pub fn kill(&self) {
        let _ = std::fs::write(self.path.join("cgroup.kill"), "1");
    }
}

fn populated(path: &Path) -> bool {
    std::fs::read_to_string(path.join("cgroup.events"))
        .map(|events| events.lines().any(|l| l == "populated 1"))
        .unwrap_or(false)
}

/// Kills everything in the run's cgroup `run` and removes it, waiting at most `limit` for its
/// processes to be gone (a cgroup with processes cannot be removed). Used at the end of a run
/// and by the guardian.
pub fn remove_run(run: &Path, limit: Duration) {
    if !run
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(RUN_PREFIX))
    {
        return;
    }
    let _ = std::fs::write(run.join("cgroup.kill"), "1");
    let deadline = Instant::now() + limit;
    while populated(run) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    if let Ok(entries) = std::fs::read_dir(run) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = std::fs::remove_dir(entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(run);
}

/// The end of the run: everything left in the run's cgroup is killed and the cgroups removed.
pub fn end(limit: Duration) {
    if let Some(run) = RUN.get() {
        remove_run(run, limit);
    }
}
