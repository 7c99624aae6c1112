//! What the lifecycle core publishes: every change of a node's state, every output line, and the
//! milestones of a run. Subscribers (terminal, log files, reports) only ever read these.

use std::time::Duration;

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};

use serde::{Deserialize, Serialize};

use crate::engine::process::Stream;
use crate::engine::timing::Summary;

/// One thing that happened, `at` this long after the run started.
#[derive(Debug, Clone)]
pub struct Event {
    pub at: Duration,
    /// Index into `Config::nodes`; `None` for run-wide events.
    pub node: Option<usize>,
    /// The node's state once the core handled what this event tells
    /// ([`NodeState::name`](crate::engine::lifecycle::NodeState::name)); `None` for run-wide events
    /// and output lines.
    pub state: Option<&'static str>,
    pub kind: EventKind,
}

/// What happened. Serialized (with serde) in the shape of docs/events.md: the variant is the
/// `event` field, durations are whole milliseconds in `*_ms` fields. The same type is what the
/// engine publishes, what `--output json` prints, what the run record stores, and what
/// `report` and the dashboard read back ([`crate::engine::record::EventRecord`] adds the time
/// and the node's name).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
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
    /// Healthy (a service) or completed (a component), `took` after its launch; `probes`
    /// readiness probes were sent on the way, busy `probe_time` in all (measured).
    Ready {
        #[serde(rename = "took_ms", with = "millis")]
        took: Duration,
        #[serde(default)]
        probes: u32,
        #[serde(rename = "probe_ms", with = "millis", default)]
        probe_time: Duration,
    },
    Retrying {
        attempt: u32,
        reason: String,
        #[serde(rename = "delay_ms", with = "millis")]
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
        #[serde(rename = "delay_ms", with = "millis")]
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
    /// While starting: why it is not ready yet (the latest failed probe, each new answer once).
    Probe {
        result: String,
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
        #[serde(rename = "took_ms", with = "millis")]
        took: Duration,
    },
    ShutdownComplete {
        #[serde(rename = "took_ms", with = "millis")]
        took: Duration,
    },
    /// A reload changed the configuration; node indices of the old one stay valid. Only for
    /// subscribers in this process: it is never serialized.
    #[serde(skip)]
    Reloaded(std::sync::Arc<crate::engine::config::Config>),
    /// Some of the node's output could not be kept (its log file cannot be written: a full
    /// disk); said once per node, the run goes on.
    OutputLost {
        reason: String,
    },
    /// Anything else worth telling the user.
    Note {
        text: String,
    },
    /// Not from the engine: how much a terminal that did not keep up was not shown.
    Dropped {
        lines: u64,
        events: u64,
    },
}

impl EventKind {
    pub fn note(text: impl Into<String>) -> Self {
        EventKind::Note { text: text.into() }
    }
}

/// Durations as whole milliseconds, the way every `*_ms` field has them.
pub mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        // Written as integers; read as any number, for records of other versions.
        f64::deserialize(deserializer).map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0))
    }
}

/// The same for an optional duration: absent (or null) is `None`.
pub mod millis_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        d: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => serializer.serialize_some(&(d.as_millis() as u64)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<f64>::deserialize(deserializer)?
            .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0)))
    }
}

/// Bytes of output lines that may be on their way to the log files at once. A service that
/// prints faster than the disk takes it waits (its pipe fills); nothing else ever does.
pub const LINE_BUDGET: usize = 4 << 20;

/// The sending side of the event stream.
///
/// Lifecycle events are few (a handful per start, stop or restart) and never wait. Output lines
/// are the bulk: each takes its length from [`LINE_BUDGET`] before it is queued and gives it
/// back when the log thread receives it, so what is queued stays bounded however fast services
/// print, and the reader of a fast service simply waits for the budget.
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: mpsc::UnboundedSender<Event>,
    epoch: tokio::time::Instant,
    budget: Arc<Semaphore>,
}

/// The receiving side: the log thread.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::UnboundedReceiver<Event>,
    budget: Arc<Semaphore>,
}

impl EventSink {
    pub fn new(epoch: tokio::time::Instant) -> (Self, EventStream) {
        let (tx, rx) = mpsc::unbounded_channel();
        let budget = Arc::new(Semaphore::new(LINE_BUDGET));
        let stream = EventStream {
            rx,
            budget: budget.clone(),
        };
        (Self { tx, epoch, budget }, stream)
    }

    /// The instant run times are measured from.
    pub fn epoch(&self) -> tokio::time::Instant {
        self.epoch
    }

    pub fn elapsed(&self) -> Duration {
        self.epoch.elapsed()
    }

    pub fn send(&self, node: Option<usize>, kind: EventKind) {
        self.send_with_state(node, None, kind);
    }

    /// An event about `node` together with the state the node is in after it.
    pub fn send_with_state(
        &self,
        node: Option<usize>,
        state: Option<&'static str>,
        kind: EventKind,
    ) {
        // A closed stream means the run is being torn down; nothing is left to tell.
        let _ = self.tx.send(Event {
            at: self.elapsed(),
            node,
            state,
            kind,
        });
    }

    pub fn node(&self, node: usize, kind: EventKind) {
        self.send(Some(node), kind);
    }

    /// Queues one output line of `node`, waiting while the lines already queued use up the
    /// budget.
    pub async fn line(&self, node: usize, stream: Stream, line: String) {
        if let Ok(permit) = self.budget.acquire_many(line_cost(&line)).await {
            permit.forget();
        }
        self.node(node, EventKind::Output { stream, line });
    }
}

impl EventStream {
    /// The next event; `None` once every sender is gone. Blocks: for the log thread only.
    pub fn blocking_recv(&mut self) -> Option<Event> {
        let event = self.rx.blocking_recv()?;
        Some(self.received(event))
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Option<Event> {
        let event = self.rx.try_recv().ok()?;
        Some(self.received(event))
    }

    fn received(&self, event: Event) -> Event {
        if let EventKind::Output { line, .. } = &event.kind {
            self.budget.add_permits(line_cost(line) as usize);
        }
        event
    }
}

/// What a line takes from the budget: its length (an empty line still counts one).
fn line_cost(line: &str) -> u32 {
    line.len().clamp(1, LINE_BUDGET) as u32
}
