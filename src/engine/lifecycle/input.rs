//! What the lifecycle core reacts to: a runner's report, a timer, a user's request, a reload,
//! a signal. The async shell turns everything that happens into one of these.

use std::time::Duration;

use crate::engine::config::Config;

/// One thing that happened, fed to [`Core::on`](super::Core::on).
#[derive(Debug)]
pub enum Input {
    /// A runner reports on the instance it runs.
    Report {
        node: usize,
        instance: u64,
        report: Report,
    },
    /// A first connection arrived on a lazy node's sockets.
    Activated(usize),
    /// Time passed: whatever timer is due fires.
    Tick,
    /// `dagstart start|stop|restart` (answered with [`Effect::Answer`](super::Effect)).
    Nodes {
        action: NodeAction,
        names: Vec<String>,
    },
    /// An edited, already validated services.toml (answered with `Effect::Answer`).
    Reload(Box<Config>),
    /// Stop everything gracefully, in reverse dependency order.
    Shutdown(String),
    /// A second Ctrl-C: kill every process group at once.
    Kill,
    /// The verification pass asked for by `Effect::Verify` is over.
    Verified(Result<(), VerifyFailure>),
    /// `max_workers = "auto"` moved the limit of nodes starting at once.
    WorkerLimit(usize),
    /// Some of the node's output could not be kept (its log cannot be written).
    OutputLost { node: usize, reason: String },
}

/// A required service that failed the final verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyFailure {
    pub node: usize,
    pub reason: String,
}

/// What `dagstart start|stop|restart` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeAction {
    /// Start the nodes (and what they need) if they are not running.
    Start,
    /// Stop the nodes and everything that depends on them, dependents first; they stay stopped.
    Stop,
    /// Stop the nodes and their running dependents, dependents first, and start them again.
    Restart,
}

/// What a runner reports about its instance. `Failed`, `Completed`, `Exited`, `Stopped` and
/// `Crashed` are the last report of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    Spawned {
        pid: u32,
        attempt: u32,
    },
    /// A service passed its readiness check.
    Ready,
    Retrying {
        attempt: u32,
        reason: String,
        delay: Duration,
    },
    /// Every start attempt failed.
    Failed {
        reason: String,
        tail: Vec<String>,
    },
    /// A component exited 0.
    Completed,
    /// A service ended on its own after it was ready (or was killed for missing its watchdog
    /// or failing its liveness check).
    Exited {
        status: String,
        /// Exit status 0: not a failure for `restart = "on-failure"`.
        success: bool,
        tail: Vec<String>,
    },
    /// Stopped as asked.
    Stopped {
        status: String,
        killed: bool,
        took: Duration,
    },
    /// What the service says about itself (STATUS=).
    Status(String),
    /// A failed liveness check that did not (yet) end the service.
    Health(String),
    /// While starting: the latest failed readiness probe (each new answer once).
    Probe(String),
    /// What the readiness probes of a start attempt cost (before the attempt's last report).
    Probed(crate::engine::health::ProbeTally),
    /// The runner task itself died (a panic): the shell has killed the process group.
    Crashed(String),
}

impl Report {
    /// The runner is gone after this report.
    pub fn is_last(&self) -> bool {
        matches!(
            self,
            Report::Failed { .. }
                | Report::Completed
                | Report::Exited { .. }
                | Report::Stopped { .. }
                | Report::Crashed(_)
        )
    }
}
