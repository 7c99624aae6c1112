//! The one typed form of an event outside the engine: what `--output json` prints, what the run
//! record stores, what `report` and the dashboard read back. Serialized with serde in the shape
//! documented in docs/events.md; a field is added here once and every view has it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::config::Config;
use crate::engine::event::{Event, EventKind};
use crate::engine::process::Stream;

/// One event with names instead of indices, times in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Seconds since the run started, to the millisecond.
    pub t: f64,
    /// What happened, with its fields (`"event": "spawned", "pid": ...`).
    #[serde(flatten)]
    pub what: What,
    /// The node it happened to; `None` for run-wide events.
    pub node: Option<String>,
    /// The node's state once dagstart handled the event (`NodeState::name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// What happened. The variant names are the `event` field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum What {
    Plan {
        nodes: usize,
        sequential: bool,
        max_workers: Option<usize>,
    },
    Launched,
    Spawned {
        pid: u32,
        attempt: u32,
    },
    Ready {
        took_ms: u64,
    },
    Retrying {
        attempt: u32,
        reason: String,
        delay_ms: u64,
    },
    Failed {
        reason: String,
    },
    Skipped {
        reason: String,
    },
    Restarting {
        delay_ms: u64,
        restart: u32,
        reason: String,
    },
    Exited {
        status: String,
    },
    Output {
        stream: Stream,
        line: String,
    },
    Status {
        text: String,
    },
    StartupComplete {
        ready_ms: u64,
        critical_path: Vec<String>,
        sequential_estimate_ms: u64,
        pending_optional: Vec<String>,
    },
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
        took_ms: u64,
    },
    ShutdownComplete {
        took_ms: u64,
    },
    Note {
        text: String,
    },
    /// Not from the engine: what a slow terminal was not shown.
    Dropped {
        lines: u64,
        events: u64,
    },
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl EventRecord {
    /// The record of `event`, naming nodes by `config`; `None` for events that only matter
    /// inside the process (a reload's new configuration).
    pub fn of(config: &Config, event: &Event) -> Option<Self> {
        let names = |list: &[usize]| -> Vec<String> {
            list.iter().map(|&n| config.nodes[n].name.clone()).collect()
        };
        let what = match &event.kind {
            EventKind::Plan {
                nodes,
                sequential,
                max_workers,
            } => What::Plan {
                nodes: *nodes,
                sequential: *sequential,
                max_workers: *max_workers,
            },
            EventKind::Launched => What::Launched,
            EventKind::Spawned { pid, attempt } => What::Spawned {
                pid: *pid,
                attempt: *attempt,
            },
            EventKind::Ready { took } => What::Ready { took_ms: ms(*took) },
            EventKind::Retrying {
                attempt,
                reason,
                delay,
            } => What::Retrying {
                attempt: *attempt,
                reason: reason.clone(),
                delay_ms: ms(*delay),
            },
            EventKind::Failed { reason } => What::Failed {
                reason: reason.clone(),
            },
            EventKind::Skipped { reason } => What::Skipped {
                reason: reason.clone(),
            },
            EventKind::Restarting {
                delay,
                restart,
                reason,
            } => What::Restarting {
                delay_ms: ms(*delay),
                restart: *restart,
                reason: reason.clone(),
            },
            EventKind::Exited { status } => What::Exited {
                status: status.clone(),
            },
            EventKind::Output { stream, line } => What::Output {
                stream: *stream,
                line: line.clone(),
            },
            EventKind::Status { text } => What::Status { text: text.clone() },
            EventKind::StartupComplete(summary) => What::StartupComplete {
                ready_ms: ms(summary.ready_after),
                critical_path: names(&summary.critical_path),
                sequential_estimate_ms: ms(summary.sequential_estimate),
                pending_optional: names(&summary.pending_optional),
            },
            EventKind::StartupFailed { reason } => What::StartupFailed {
                reason: reason.clone(),
            },
            EventKind::ShutdownStarted { reason } => What::ShutdownStarted {
                reason: reason.clone(),
            },
            EventKind::Stopping => What::Stopping,
            EventKind::Stopped {
                status,
                killed,
                took,
            } => What::Stopped {
                status: status.clone(),
                killed: *killed,
                took_ms: ms(*took),
            },
            EventKind::ShutdownComplete { took } => What::ShutdownComplete { took_ms: ms(*took) },
            EventKind::Note(text) => What::Note { text: text.clone() },
            EventKind::Reloaded(_) => return None,
        };
        Some(Self {
            t: seconds(event.at),
            what,
            node: event.node.map(|n| config.nodes[n].name.clone()),
            state: event.state.map(str::to_owned),
        })
    }

    /// The milliseconds since the run started.
    pub fn millis(&self) -> f64 {
        self.t * 1000.0
    }

    /// One line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Seconds to the millisecond, as every record has them.
pub fn seconds(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_shape() {
        let record = EventRecord {
            t: 0.003,
            what: What::Spawned {
                pid: 4242,
                attempt: 1,
            },
            node: Some("db".into()),
            state: Some("starting".into()),
        };
        let json: serde_json::Value = serde_json::from_str(&record.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"t": 0.003, "event": "spawned", "node": "db", "state": "starting", "pid": 4242, "attempt": 1})
        );
        let back: EventRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, record);
        let run_wide: EventRecord =
            serde_json::from_str(r#"{"t":1.5,"event":"stopping","node":null}"#).unwrap();
        assert_eq!(run_wide.what, What::Stopping);
    }
}
