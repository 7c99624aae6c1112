//! The lifecycle of every node of a run: one typed state per node, changed in one place.
//!
//! ```text
//!  runner reports ─┐                       ┌─► Launch / Stop / KillAll ──► runners, groups
//!  timers ─────────┤   ┌──────────────┐    ├─► Verify ──► verification task ──┐
//!  start/stop/...  ├──►│ Core::on     │───►┤                                  │
//!  reload ─────────┤   │ (pure, no IO)│    ├─► Publish ──► event stream       │
//!  signals ────────┘   └──────────────┘    └─► Answer / Startup ─► requesters │
//!         ▲                                                                   │
//!         └──────────────────────── Input::Verified ◄─────────────────────────┘
//! ```
//!
//! - `state`: [`NodeState`], the one enum a node's state lives in.
//! - `core`: [`Core`], the pure transitions: `on(Input, now) -> Vec<Effect>`
//!   (reports, stopping, user requests and reloads in files of their own).
//! - `input`, `effect`: what goes in and what comes out.
//! - `timers`: the deadline queue (startup, shutdown, restart backoffs).
//! - `reload`: mapping an edited services.toml onto the running one.
//! - `shell`: the async loop that feeds the core and performs its effects.
//! - `runner`: one task per started instance: spawn, readiness, supervision, stop.
//! - `mirror`: the runner of a node on another host of a cluster: follows its published state.

mod core;
mod effect;
mod input;
mod mirror;
mod reload;
mod runner;
mod shell;
mod state;
mod timers;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use self::core::Core;
pub use effect::Effect;
pub use input::{Input, NodeAction, Report, VerifyFailure};
pub use shell::{Control, RunSetup, Scheduler};
pub use state::{AfterStop, Live, NodeState};

/// How to run the graph.
#[derive(Debug, Clone)]
pub struct Options {
    /// Nodes in their start phase at once.
    pub max_workers: usize,
    /// Adapt the number of nodes starting at once to the CPU pressure (`max_workers = "auto"`).
    pub auto_workers: bool,
    pub sequential: bool,
    pub parallel_health_checks: bool,
    pub startup_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// The final verification pass probes again only the required services whose readiness
    /// is older than this: one confirmed a moment ago has nothing new to say.
    pub verify_older_than: Duration,
    /// The active profiles: a node a reload adds takes part only if they allow it.
    pub profiles: Vec<String>,
}

/// What `dagstart run` uses for [`Options::verify_older_than`].
pub const VERIFY_OLDER_THAN: Duration = Duration::from_secs(1);

/// One node as `dagstart status` shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub kind: String,
    /// [`NodeState::name`].
    pub state: String,
    pub required: bool,
    pub pid: Option<u32>,
    /// Milliseconds since the node became ready, while it is.
    pub uptime_ms: Option<u64>,
    pub restarts: u32,
    /// The last thing worth knowing: its STATUS, or why it failed, exited or was skipped.
    pub last: Option<String>,
    /// Why some of its output could not be kept (its log file cannot be written).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub output_lost: Option<String>,
    /// In a cluster run: the host the node runs on.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub host: Option<String>,
    /// Ready, but a dependency it needs is not up (it went down and this node does not
    /// restart with it): which, and why.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub degraded: Option<String>,
}

/// Where startup stands, for whoever waits on it (the `--` command).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Startup {
    Pending,
    Ready,
    Failed,
}

/// How a run ended, after everything was stopped.
#[derive(Debug)]
pub enum Outcome {
    /// Startup completed, every required node was fine (or stopped by the user) to the end.
    Stopped,
    /// Startup completed, but these required nodes failed for good later on.
    Degraded(Vec<String>),
    /// Shut down on request before startup completed.
    Interrupted,
    Failed(StartupError),
}

/// Why startup failed.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[non_exhaustive]
pub enum StartupError {
    #[error("required {kind} `{node}` failed: {reason}")]
    #[diagnostic(code(dagstart::startup::failed))]
    NodeFailed {
        node: String,
        kind: &'static str,
        reason: String,
        #[help]
        last_output: Option<String>,
    },
    #[error("required {kind} `{node}` was skipped: {reason}")]
    #[diagnostic(code(dagstart::startup::skipped))]
    Skipped {
        node: String,
        kind: &'static str,
        reason: String,
    },
    #[error("startup did not complete within {budget}")]
    #[diagnostic(
        code(dagstart::startup::timeout),
        help("{waiting}\nraise settings.startup_timeout or STARTUP_TIMEOUT if this is expected")
    )]
    Timeout { budget: String, waiting: String },
}
