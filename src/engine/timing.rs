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
    /// Nodes were started one at a time (`--sequential`): no critical path, no speedup.
    #[serde(default)]
    pub sequential: bool,
    /// Sum of the start durations along the critical path: what the graph's shape makes the
    /// least possible startup, in the same measure as `sequential_estimate`.
    #[serde(
        rename = "critical_chain_ms",
        with = "crate::engine::event::millis_opt",
        default
    )]
    pub critical_chain: Option<Duration>,
    /// When the last required node was ready (`ready_after` adds the verification pass).
    #[serde(
        rename = "last_ready_ms",
        with = "crate::engine::event::millis_opt",
        default
    )]
    pub last_ready: Option<Duration>,
}

impl Summary {
    pub fn build(
        config: &Config,
        graph: &Graph,
        timings: &[NodeTiming],
        ready_after: Duration,
        sequential: bool,
    ) -> Self {
        let mut ordered: Vec<NodeTiming> = timings.to_vec();
        ordered.sort_by_key(|t| (t.ready_at.is_none(), t.ready_at, t.node));
        let sequential_estimate = timings.iter().filter_map(NodeTiming::start_duration).sum();
        let pending_optional = timings
            .iter()
            .filter(|t| t.ready_at.is_none() && !config.nodes[t.node].required)
            .map(|t| config.nodes[t.node].name.clone())
            .collect();
        let path = if sequential {
            Vec::new()
        } else {
            critical_path(config, graph, timings)
        };
        let critical_chain = (!sequential).then(|| {
            let mut by_node = vec![None; config.nodes.len()];
            for t in timings {
                by_node[t.node] = t.start_duration();
            }
            path.iter().filter_map(|&n| by_node[n]).sum()
        });
        let last_ready = timings
            .iter()
            .filter(|t| config.nodes[t.node].required)
            .filter_map(|t| t.ready_at)
            .max();
        Self {
            ready_after,
            critical_path: path
                .into_iter()
                .map(|n| config.nodes[n].name.clone())
                .collect(),
            timings: ordered,
            sequential_estimate,
            pending_optional,
            sequential,
            critical_chain,
            last_ready,
        }
    }

    /// Time on the way to ready that was not a node's own start: spawning, hand-offs between
    /// nodes, waiting for a start slot (along the critical chain; all of it when sequential).
    pub fn between_nodes(&self) -> Option<Duration> {
        let own = if self.sequential {
            self.sequential_estimate
        } else {
            self.critical_chain?
        };
        Some(self.last_ready?.saturating_sub(own))
    }

    /// The final verification pass: from the last required node ready to startup complete.
    pub fn verification(&self) -> Option<Duration> {
        Some(self.ready_after.saturating_sub(self.last_ready?))
    }

    /// What parallelism bought, like with like: one node at a time (the sum of the start
    /// times) against the critical chain (the sum along it). `None` when sequential.
    pub fn speedup(&self) -> Option<f64> {
        let chain = self.critical_chain?.as_secs_f64();
        (!self.sequential && chain > 0.0).then(|| self.sequential_estimate.as_secs_f64() / chain)
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
            .filter_map(|(dep, edge)| {
                let t = by_node(dep)?;
                let met = match edge.condition {
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
