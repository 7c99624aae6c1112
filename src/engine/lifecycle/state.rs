//! A node's state: one enum whose variants carry what is valid in them.
//!
//! Only [`Core`](super::Core) changes a node's state; everyone else reads it through the
//! names here ([`NodeState::name`]), which are the names `status`, the events, the dashboard
//! and `/metrics` all use.

use std::time::Duration;

/// One started instance of a node: a runner task and, once spawned, its process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Live {
    /// Tells this instance's reports from those of an earlier one of the same node.
    pub instance: u64,
    /// When its dependencies were met and its runner was launched (run time).
    pub launched_at: Duration,
    /// The pid of its current process, once spawned.
    pub pid: Option<u32>,
}

/// What happens to a node once its stop has completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterStop {
    /// Stopped by the user: stays down until started again.
    Hold,
    /// Stopped to be started again (`restart`, a restarting dependency, a changed definition).
    Relaunch,
    /// Gone from services.toml after a reload.
    Remove,
    /// The run is shutting down.
    Shutdown,
    /// A node it needs failed for good; the reason says which.
    DependencyDown(String),
}

/// Where a node stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeState {
    /// Not part of this run (not selected).
    Off,
    /// Gone from services.toml after a reload; a later reload may add it back.
    Removed,
    /// Waits for its dependencies. A lazy node is not `demanded` until a first connection on
    /// its sockets or a dependent about to start asks for it.
    Waiting {
        demanded: bool,
    },
    /// Its runner spawns, probes and retries it.
    Starting(Live),
    /// A service that passed its readiness check; `since` is the run time it did.
    Ready {
        live: Live,
        since: Duration,
    },
    /// A component that exited 0: final success.
    Completed,
    /// Its runner was (`signalled`) or will be told to stop, once nothing that depends on the
    /// node is still running.
    Stopping {
        live: Live,
        signalled: bool,
        then: AfterStop,
    },
    /// Ended after it was ready; the restart policy starts it again at run time `at`.
    Restarting {
        at: Duration,
    },
    /// Stopped by the user: stays down, and keeps the run alive, until started again.
    Held,
    /// Stopped by dagstart (a shutdown, or a dependency that failed for good).
    Stopped,
    /// A service that ended on its own after it was ready and is not restarted.
    Exited {
        status: String,
        success: bool,
    },
    Failed {
        reason: String,
    },
    Skipped {
        reason: String,
    },
    /// Still waiting when the shutdown began; never started.
    NotStarted,
}

impl NodeState {
    /// The one name of this state, everywhere it is shown. `Held` and `Stopped` share the name
    /// "stopped": both are down because they were stopped; `last` says by whom.
    pub fn name(&self) -> &'static str {
        match self {
            NodeState::Off => "off",
            NodeState::Removed => "removed",
            NodeState::Waiting { .. } => "waiting",
            NodeState::Starting(_) => "starting",
            NodeState::Ready { .. } => "ready",
            NodeState::Completed => "completed",
            NodeState::Stopping { .. } => "stopping",
            NodeState::Restarting { .. } => "restarting",
            // What the user did; that it keeps the run alive is dagstart's business.
            NodeState::Held => "stopped",
            NodeState::Stopped => "stopped",
            NodeState::Exited { .. } => "exited",
            NodeState::Failed { .. } => "failed",
            NodeState::Skipped { .. } => "skipped",
            NodeState::NotStarted => "not started",
        }
    }

    /// The live instance, while the node has a runner.
    pub fn live(&self) -> Option<&Live> {
        match self {
            NodeState::Starting(live)
            | NodeState::Ready { live, .. }
            | NodeState::Stopping { live, .. } => Some(live),
            _ => None,
        }
    }

    pub fn is_live(&self) -> bool {
        self.live().is_some()
    }

    /// Down and not about to come back by itself: a start request may bring it back.
    pub fn is_down(&self) -> bool {
        matches!(
            self,
            NodeState::Held
                | NodeState::Stopped
                | NodeState::Exited { .. }
                | NodeState::Failed { .. }
                | NodeState::Skipped { .. }
                | NodeState::NotStarted
        )
    }
}
