//! What the scheduler publishes: every change of a node's state, every output line, and the
//! milestones of a run. Subscribers (terminal, log files, reports) only ever read these.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::process::Stream;
use crate::report::Summary;

/// One thing that happened, `at` this long after the run started.
#[derive(Debug, Clone)]
pub struct Event {
    pub at: Duration,
    /// Index into `Config::nodes`; `None` for run-wide events.
    pub node: Option<usize>,
    pub kind: EventKind,
}

#[derive(Debug, Clone)]
pub enum EventKind {
    /// Before anything starts: what will be started and how.
    Plan {
        nodes: usize,
        sequential: bool,
        max_workers: Option<usize>,
    },
    /// The node's dependencies are met and it was handed to a worker.
    Launched,
    Spawned {
        pid: u32,
        attempt: u32,
    },
    /// Healthy (a service) or completed (a component), `took` after its first spawn.
    Ready {
        took: Duration,
    },
    Retrying {
        attempt: u32,
        reason: String,
        delay: Duration,
    },
    Failed {
        reason: String,
    },
    Skipped {
        reason: String,
    },
    /// The restart policy starts the node again after `delay`.
    Restarting {
        delay: Duration,
        /// Which restart this is within the restart window.
        restart: u32,
        reason: String,
    },
    /// A service ended on its own after it was ready.
    Exited {
        status: String,
    },
    Output {
        stream: Stream,
        line: String,
    },
    /// What a notify service says about itself (`STATUS=`).
    Status {
        text: String,
    },
    StartupComplete(Box<Summary>),
    StartupFailed {
        reason: String,
    },
    ShutdownStarted {
        reason: String,
    },
    Stopping,
    Stopped {
        status: String,
        killed: bool,
        took: Duration,
    },
    ShutdownComplete {
        took: Duration,
    },
    /// A reload changed the configuration; node indices of the old one stay valid.
    Reloaded(std::sync::Arc<crate::config::Config>),
    /// Anything else worth telling the user.
    Note(String),
}

/// The sending side of the event stream.
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: mpsc::UnboundedSender<Event>,
    epoch: tokio::time::Instant,
}

impl EventSink {
    pub fn new(epoch: tokio::time::Instant) -> (Self, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx, epoch }, rx)
    }

    /// The instant run times are measured from.
    pub fn epoch(&self) -> tokio::time::Instant {
        self.epoch
    }

    pub fn elapsed(&self) -> Duration {
        self.epoch.elapsed()
    }

    pub fn send(&self, node: Option<usize>, kind: EventKind) {
        // A closed stream means the run is being torn down; nothing is left to tell.
        let _ = self.tx.send(Event {
            at: self.elapsed(),
            node,
            kind,
        });
    }

    pub fn node(&self, node: usize, kind: EventKind) {
        self.send(Some(node), kind);
    }
}
