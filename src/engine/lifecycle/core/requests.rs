//! What `dagstart start|stop|restart` do to the lifecycle.

use super::Core;
use crate::engine::lifecycle::input::NodeAction;
use crate::engine::lifecycle::state::{AfterStop, NodeState};

impl Core {
    pub(super) fn act_on_nodes(
        &mut self,
        action: NodeAction,
        names: &[String],
    ) -> Result<String, String> {
        if self.shutdown.is_some() {
            return Err("dagstart is shutting down".into());
        }
        let mut targets = Vec::new();
        for name in names {
            match self.config.nodes.iter().position(|n| &n.name == name) {
                Some(n) if self.nodes[n].state == NodeState::Removed => {
                    return Err(format!("`{name}` was removed from services.toml"));
                }
                Some(n) if self.nodes[n].state != NodeState::Off => targets.push(n),
                Some(_) => return Err(format!("`{name}` is not part of this run")),
                None => {
                    let known = self.selected().map(|n| self.config.nodes[n].name.as_str());
                    let hint = crate::engine::config::did_you_mean(name, known)
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                    return Err(format!("no node is named `{name}`{hint}"));
                }
            }
        }
        Ok(match action {
            NodeAction::Stop => self.stop_nodes(&targets),
            NodeAction::Restart => self.restart_nodes(&targets),
            NodeAction::Start => self.start_nodes(&targets),
        })
    }

    /// Held, or being stopped to be held, by `stop`.
    fn is_user_held(&self, n: usize) -> bool {
        matches!(
            self.nodes[n].state,
            NodeState::Held
                | NodeState::Stopping {
                    then: AfterStop::Hold,
                    ..
                }
        )
    }

    /// Something `n` requires, directly or not, was stopped by name: bringing `n` back (which
    /// starts what it requires) must not override that.
    fn needs_a_user_stopped_node(&self, n: usize) -> bool {
        let mut seen = vec![false; self.nodes.len()];
        let mut stack = vec![n];
        while let Some(x) = stack.pop() {
            for (d, e) in self.graph.dependencies(x) {
                if !e.required || std::mem::replace(&mut seen[d], true) {
                    continue;
                }
                if self.is_user_held(d) && !self.nodes[d].held_along {
                    return true;
                }
                stack.push(d);
            }
        }
        false
    }

    pub(super) fn names_of(&self, nodes: &[usize]) -> String {
        nodes
            .iter()
            .map(|&n| self.name(n))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Stops `targets` and everything that depends on them, dependents first. They stay down,
    /// and keep the run alive, until started again: a node waiting for its dependencies or for
    /// its restart backoff is held as well.
    pub(super) fn stop_nodes(&mut self, targets: &[usize]) -> String {
        let mut affected = self.graph.with_bound_dependents(targets);
        affected.retain(|&n| !matches!(self.nodes[n].state, NodeState::Off | NodeState::Removed));
        for &n in &affected {
            if targets.contains(&n) {
                self.nodes[n].held_along = false;
            } else if !self.is_user_held(n) {
                self.nodes[n].held_along = true;
            }
            match &self.nodes[n].state {
                NodeState::Starting(_) | NodeState::Ready { .. } | NodeState::Stopping { .. } => {
                    self.request_stop(n, AfterStop::Hold);
                }
                // A completed component counts as stopped too: `start` runs it again.
                _ => self.set(n, NodeState::Held),
            }
        }
        format!("stopping: {}", self.names_of(&affected))
    }

    /// Stops `targets` and their running dependents, dependents first, and starts them again.
    pub(super) fn restart_nodes(&mut self, targets: &[usize]) -> String {
        let mut affected = self.graph.with_bound_dependents(targets);
        affected.retain(|&n| targets.contains(&n) || self.nodes[n].state.is_live());
        for &n in targets {
            // Restarted by name: no longer down because of another node's stop.
            self.nodes[n].held_along = false;
        }
        for &n in &affected {
            match &self.nodes[n].state {
                NodeState::Starting(_) | NodeState::Ready { .. } | NodeState::Stopping { .. } => {
                    self.request_stop(n, AfterStop::Relaunch);
                }
                NodeState::Off | NodeState::Removed => {}
                _ => {
                    self.nodes[n].restarts.clear();
                    self.set(n, NodeState::Waiting { demanded: true });
                }
            }
        }
        format!("restarting: {}", self.names_of(&affected))
    }

    /// Starts `targets`, whatever they need that is not running, and the dependents that a
    /// `stop` of one of them held (what `stop X` stopped, `start X` brings back).
    pub(super) fn start_nodes(&mut self, targets: &[usize]) -> String {
        let mut started = Vec::new();
        let mut seen = vec![false; self.nodes.len()];
        let mut stack = targets.to_vec();
        while let Some(n) = stack.pop() {
            if std::mem::replace(&mut seen[n], true) {
                continue;
            }
            // What it requires; an optional dependency is waited for only if it is on its way.
            stack.extend(
                self.graph
                    .dependencies(n)
                    .filter(|(_, e)| e.required)
                    .map(|(d, _)| d),
            );
            self.nodes[n].held_along = false;
            match self.nodes[n].state.clone() {
                NodeState::Stopping { .. } if self.relaunch_instead_of(n, &AfterStop::Hold) => {
                    started.push(n);
                }
                state if state.is_down() || state == (NodeState::Waiting { demanded: false }) => {
                    self.nodes[n].restarts.clear();
                    self.set(n, NodeState::Waiting { demanded: true });
                    started.push(n);
                }
                _ => {}
            }
            // After `n` itself is on its way, so that it no longer counts as stopped by name.
            let graph = self.graph.clone();
            stack.extend(
                graph
                    .bound_dependents(n)
                    .filter(|&d| self.nodes[d].held_along && !self.needs_a_user_stopped_node(d)),
            );
        }
        if started.is_empty() {
            "already running".to_owned()
        } else {
            format!("starting: {}", self.names_of(&started))
        }
    }
}
