//! The startup summary: when each node was ready, the critical path, and what the sequential
//! mode would have taken. Built by the scheduler from its own timeline, rendered by subscribers.

use std::fmt::Write as _;
use std::time::Duration;

use crate::config::{Condition, Config};
use crate::graph::Graph;

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

/// What a finished startup looked like.
#[derive(Debug, Clone)]
pub struct Summary {
    pub ready_after: Duration,
    /// The selected nodes, in startup order of readiness (not-ready ones last).
    pub timings: Vec<NodeTiming>,
    /// The chain of nodes that decided `ready_after`, first to last.
    pub critical_path: Vec<usize>,
    /// Sum of the start durations: roughly what one-at-a-time startup would take.
    pub sequential_estimate: Duration,
    /// Optional nodes still starting when the required ones were ready.
    pub pending_optional: Vec<usize>,
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
            .map(|t| t.node)
            .collect();
        Self {
            ready_after,
            critical_path: critical_path(config, graph, timings),
            timings: ordered,
            sequential_estimate,
            pending_optional,
        }
    }
}

/// Walks back from the required node that was ready last, each time to the dependency whose
/// condition was met last: the chain that the startup time is made of.
fn critical_path(config: &Config, graph: &Graph, timings: &[NodeTiming]) -> Vec<usize> {
    let by_node = |n: usize| timings.iter().find(|t| t.node == n);
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

pub(crate) fn seconds(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

/// The summary as the terminal and dagstart.log show it.
pub fn render(config: &Config, summary: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "startup complete: ready in {}",
        seconds(summary.ready_after)
    );
    let width = summary
        .timings
        .iter()
        .map(|t| config.nodes[t.node].name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        out,
        "  {:width$}  {:>9}  {:>9}  attempts",
        "node", "ready at", "took"
    );
    for t in &summary.timings {
        let node = &config.nodes[t.node];
        let ready = t.ready_at.map_or_else(|| "-".to_owned(), seconds);
        let took = t.start_duration().map_or_else(|| "-".to_owned(), seconds);
        let note = if t.ready_at.is_none() && !node.required {
            "  (optional, still starting)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {:width$}  {ready:>9}  {took:>9}  {:>8}{note}",
            node.name, t.attempts
        );
    }
    if !summary.critical_path.is_empty() {
        let steps: Vec<String> = summary
            .critical_path
            .iter()
            .map(|&n| {
                let took = summary
                    .timings
                    .iter()
                    .find(|t| t.node == n)
                    .and_then(NodeTiming::start_duration);
                format!(
                    "{} ({})",
                    config.nodes[n].name,
                    took.map_or_else(|| "-".into(), seconds)
                )
            })
            .collect();
        let _ = writeln!(out, "  critical path: {}", steps.join(" -> "));
    }
    let speedup =
        summary.sequential_estimate.as_secs_f64() / summary.ready_after.as_secs_f64().max(1e-3);
    let _ = writeln!(
        out,
        "  sequential estimate: {} (sum of start times); parallel took {}: {speedup:.1}x faster",
        seconds(summary.sequential_estimate),
        seconds(summary.ready_after)
    );
    out
}
