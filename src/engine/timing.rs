//! A run's timeline and what it says: when each node was launched, spawned and ready, the
//! critical path, and what one-at-a-time startup would have taken. Pure functions of the
//! timeline, computed by the lifecycle core when startup completes; the views render them.

use std::time::Duration;

use crate::engine::config::{Condition, Config};
use crate::engine::graph::Graph;

/// One node's timeline, relative to the start of the run.
#[derive(Debug, Clone, Default)]
pub struct NodeTiming {
    pub node: usize,
    /// When its dependencies were met and it was handed to a worker.
    pub launched_at: Option<Duration>,
    pub first_spawn_at: Option<Duration>,
    pub ready_at: Option<Duration>,
    pub attempts: u32,
}

impl NodeTiming {
    /// From first spawn to ready: the node's own start duration, retries included.
    pub fn start_duration(&self) -> Option<Duration> {
        Some(self.ready_at?.saturating_sub(self.first_spawn_at?))
    }
}

/// What a finished startup looked like. Serialized as the `startup_complete` event
/// (docs/events.md); the per-node timings stay in the process (a record has them as events).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    #[serde(rename = "ready_ms", with = "crate::engine::event::millis")]
    pub ready_after: Duration,
    /// The selected nodes, in startup order of readiness (not-ready ones last).
    #[serde(skip)]
    pub timings: Vec<NodeTiming>,
    /// The names of the chain of nodes that decided `ready_after`, first to last.
    pub critical_path: Vec<String>,
    /// Sum of the start durations: roughly what one-at-a-time startup would take.
    #[serde(
        rename = "sequential_estimate_ms",
        with = "crate::engine::event::millis"
    )]
    pub sequential_estimate: Duration,
    /// Names of the optional nodes still starting when the required ones were ready.
    pub pending_optional: Vec<String>,
}

impl Summary {
    pub fn build(
        config: &Config,
        graph: &Graph,
        timings: &[NodeTiming],
        ready_after: Duration,
    ) -> Self {
        let mut ordered: Vec<NodeTiming> = timings.to_vec();
        ordered.sort_by_key(|t| (t.ready_at.is_none(), t.ready_at, t.node));
        let sequential_estimate = timings.iter().filter_map(NodeTiming::start_duration).sum();
        let pending_optional = timings
            .iter()
            .filter(|t| t.ready_at.is_none() && !config.nodes[t.node].required)
            .map(|t| config.nodes[t.node].name.clone())
            .collect();
        Self {
            ready_after,
            critical_path: critical_path(config, graph, timings)
                .into_iter()
                .map(|n| config.nodes[n].name.clone())
                .collect(),
            timings: ordered,
            sequential_estimate,
            pending_optional,
        }
    }
}

/// Walks back from the required node that was ready last, each time to the dependency whose
/// condition was met last: the chain that the startup time is made of.
fn critical_path(config: &Config, graph: &Graph, timings: &[NodeTiming]) -> Vec<usize> {
    let mut index = vec![None; config.nodes.len()];
    for t in timings {
        index[t.node] = Some(t);
    }
    let by_node = |n: usize| index.get(n).copied().flatten();
    let last = timings
        .iter()
        .filter(|t| config.nodes[t.node].required && t.ready_at.is_some())
        .max_by_key(|t| t.ready_at);
    let Some(mut current) = last.map(|t| t.node) else {
        return Vec::new();
    };
    let mut path = vec![current];
    loop {
        let gate = graph
            .dependencies(current)
            .filter_map(|(dep, condition)| {
                let t = by_node(dep)?;
                let met = match condition {
                    Condition::Started => t.first_spawn_at,
                    Condition::Listening => t.launched_at,
                    Condition::Healthy | Condition::Completed => t.ready_at,
                }?;
                Some((met, dep))
            })
            .max();
        match gate {
            Some((_, dep)) => {
                path.push(dep);
                current = dep;
            }
            None => break,
        }
    }
    path.reverse();
    path
}
