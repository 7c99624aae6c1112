//! The one typed form of an event outside the engine: what `--output json` prints, what the run
//! record stores, what `report` and the dashboard read back. It is the engine's own
//! [`EventKind`] with the time and the node's name around it, serialized with serde in the shape
//! documented in docs/events.md.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::config::Config;
use crate::engine::event::{Event, EventKind};

/// One event with the node's name instead of its index.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventRecord {
    /// Seconds since the run started, to the millisecond.
    pub t: f64,
    /// What happened, with its fields (`"event": "spawned", "pid": ...`).
    #[serde(flatten)]
    pub kind: EventKind,
    /// The node it happened to; `None` for run-wide events.
    pub node: Option<String>,
    /// The node's state once dagstart handled the event (`NodeState::name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// In a cluster run: the host the node runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl EventRecord {
    /// The record of `event`, naming nodes by `config`; `None` for events that only matter
    /// inside the process (a reload's new configuration).
    pub fn of(config: &Config, event: &Event) -> Option<Self> {
        if let EventKind::Reloaded(_) = event.kind {
            return None;
        }
        Some(Self {
            t: seconds(event.at),
            kind: event.kind.clone(),
            node: event.node.map(|n| config.nodes[n].name.clone()),
            state: event.state.map(str::to_owned),
            host: event
                .node
                .and_then(|n| config.host_of(n))
                .map(str::to_owned),
        })
    }

    /// A record of something that is not about a node.
    pub fn run_wide(at: Duration, kind: EventKind) -> Self {
        Self {
            t: seconds(at),
            kind,
            node: None,
            state: None,
            host: None,
        }
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

    fn round_trip(json: serde_json::Value) {
        let record: EventRecord = serde_json::from_value(json.clone()).unwrap();
        let again: serde_json::Value = serde_json::from_str(&record.to_json()).unwrap();
        assert_eq!(again, json);
    }

    #[test]
    fn the_documented_shape_round_trips() {
        round_trip(
            serde_json::json!({"t": 0.003, "event": "spawned", "node": "db", "state": "starting", "pid": 4242, "attempt": 1}),
        );
        round_trip(
            serde_json::json!({"t": 0.301, "event": "ready", "node": "db", "state": "ready", "took_ms": 298, "probes": 12, "probe_ms": 40}),
        );
        round_trip(serde_json::json!({"t": 1.5, "event": "stopping", "node": null}));
        round_trip(
            serde_json::json!({"t": 2.0, "event": "startup_complete", "node": null, "ready_ms": 2000, "critical_path": ["db", "api"], "sequential_estimate_ms": 2500, "pending_optional": [], "sequential": false, "critical_chain_ms": 1900, "last_ready_ms": 1950}),
        );
        round_trip(
            serde_json::json!({"t": 2.1, "event": "note", "node": null, "text": "reloaded"}),
        );
    }
}
