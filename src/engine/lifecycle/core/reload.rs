//! A reload applied to the lifecycle: removed nodes stop, added ones (and ones added back)
//! start, changed ones restart with what needs them.

use std::sync::Arc;

use super::{Core, NodeRecord};
use crate::engine::config::Config;
use crate::engine::event::EventKind;
use crate::engine::graph::Graph;
use crate::engine::lifecycle::reload::{ReloadPlan, check_sockets_unchanged};
use crate::engine::lifecycle::state::{AfterStop, NodeState};
use crate::engine::selection::is_active;

impl Core {
    /// Applies an edited configuration: removed nodes stop, added nodes start once their
    /// dependencies are ready, changed nodes restart with the running nodes that need them, and
    /// untouched nodes keep running with the same pid.
    pub(super) fn reload(&mut self, new: Config) -> Result<String, String> {
        if self.shutdown.is_some() {
            return Err("dagstart is shutting down".into());
        }
        check_sockets_unchanged(&self.config, &new)?;
        let plan = ReloadPlan::new(&self.config, new);
        let old_len = self.nodes.len();
        for n in old_len..plan.merged.nodes.len() {
            let node = &plan.merged.nodes[n];
            let state = if is_active(&node.profiles, &self.options.profiles) {
                NodeState::Waiting {
                    demanded: !node.lazy,
                }
            } else {
                NodeState::Off
            };
            self.nodes.push(NodeRecord::new(n, state));
        }
        let merged = Arc::new(plan.merged);
        self.graph = Arc::new(Graph::build(&merged));
        self.config = merged.clone();
        self.recount();
        // Subscribers learn the new names before any event about the new nodes.
        self.publish(None, EventKind::Reloaded(merged));
        let mut added: Vec<usize> = plan
            .added
            .iter()
            .copied()
            .filter(|&n| self.nodes[n].state != NodeState::Off)
            .collect();
        for n in 0..old_len {
            if plan.removed.contains(&n) {
                continue;
            }
            // Back in services.toml after an earlier reload removed it.
            match self.nodes[n].state.clone() {
                NodeState::Removed => {
                    let lazy = self.config.nodes[n].lazy;
                    self.nodes[n].restarts.clear();
                    self.set(n, NodeState::Waiting { demanded: !lazy });
                    added.push(n);
                }
                NodeState::Stopping { .. } if self.relaunch_instead_of(n, &AfterStop::Remove) => {
                    added.push(n);
                }
                _ => {}
            }
        }
        let changed: Vec<usize> = plan
            .changed
            .iter()
            .copied()
            .filter(|n| !added.contains(n))
            .collect();
        let mut removed = Vec::new();
        for &n in &plan.removed {
            match &self.nodes[n].state {
                NodeState::Removed | NodeState::Off => {}
                state if state.is_live() => {
                    self.request_stop(n, AfterStop::Remove);
                    removed.push(n);
                }
                _ => {
                    self.set(n, NodeState::Removed);
                    removed.push(n);
                }
            }
        }
        let running: Vec<usize> = changed
            .iter()
            .copied()
            .filter(|&n| self.nodes[n].state.is_live())
            .collect();
        let restarted = if running.is_empty() {
            String::new()
        } else {
            self.restart_nodes(&running)
        };
        for &n in &changed {
            if self.nodes[n].state.is_down() && self.nodes[n].state != NodeState::Held {
                self.nodes[n].restarts.clear();
                self.set(n, NodeState::Waiting { demanded: true });
            }
        }
        let mut parts = Vec::new();
        for (label, list) in [
            ("added", &added),
            ("removed", &removed),
            ("changed", &changed),
        ] {
            if !list.is_empty() {
                parts.push(format!("{label}: {}", self.names_of(list)));
            }
        }
        if !restarted.is_empty() {
            parts.push(restarted);
        }
        parts.push(format!("unchanged: {}", plan.unchanged));
        let summary = format!("reloaded ({})", parts.join("; "));
        self.publish(None, EventKind::note(summary.clone()));
        Ok(summary)
    }
}
