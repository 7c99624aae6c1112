//! Stopping: a stop request waits until nothing that depends on the node runs; shutdown and
//! kill.

use super::{Core, ShutdownState, StartupPhase, strength};
use crate::engine::event::EventKind;
use crate::engine::lifecycle::Startup;
use crate::engine::lifecycle::effect::Effect;
use crate::engine::lifecycle::state::{AfterStop, NodeState};
use crate::engine::lifecycle::timers::Timer;

impl Core {
    /// Asks live node `n` to stop, then do `then`; the stop is sent once nothing that depends
    /// on it is running. A stop already under way keeps the stronger of the two intentions.
    pub(super) fn request_stop(&mut self, n: usize, then: AfterStop) {
        let state = match &self.nodes[n].state {
            NodeState::Starting(live) | NodeState::Ready { live, .. } => NodeState::Stopping {
                live: *live,
                signalled: false,
                then,
            },
            NodeState::Stopping {
                live,
                signalled,
                then: before,
            } => NodeState::Stopping {
                live: *live,
                signalled: *signalled,
                then: if strength(&then) >= strength(before) {
                    then
                } else {
                    before.clone()
                },
            },
            _ => return,
        };
        self.set(n, state);
    }

    /// The instance of `n` has ended while it was being stopped (or during a shutdown).
    pub(super) fn finish_stop(&mut self, n: usize) {
        let (then, signalled) = match &self.nodes[n].state {
            NodeState::Stopping {
                then, signalled, ..
            } => (then.clone(), *signalled),
            _ if self.shutdown.is_some() => (AfterStop::Shutdown, false),
            _ => (AfterStop::Hold, false),
        };
        let state = match then {
            AfterStop::Hold => NodeState::Held,
            AfterStop::Relaunch if self.shutdown.is_none() => NodeState::Waiting { demanded: true },
            AfterStop::Relaunch | AfterStop::Shutdown => NodeState::Stopped,
            AfterStop::Remove => NodeState::Removed,
            AfterStop::DependencyDown(reason) => {
                self.nodes[n].last = Some(reason);
                NodeState::Stopped
            }
        };
        // Quiet only if nothing can start on top of it while it is down (what does could be
        // stopped later, after it, if the walk stopped here).
        let quiet =
            signalled && !matches!(state, NodeState::Waiting { .. }) && !self.graph.open_above(n);
        self.set(n, state);
        self.nodes[n].quiet = quiet;
    }

    /// Whether node `n`, without an instance, can stand between a live dependent and a
    /// dependency, so that the stop order must look past it (a completed migration between an
    /// app and its database). A quiet node cannot.
    pub(super) fn passes_through(&self, n: usize) -> bool {
        !self.nodes[n].state.is_live() && !self.nodes[n].quiet
    }

    pub(super) fn begin_shutdown(&mut self, reason: &str) {
        if self.shutdown.is_some() {
            return;
        }
        self.shutdown = Some(ShutdownState {
            started: self.now,
            killed: false,
        });
        self.timers
            .arm(self.now + self.options.shutdown_timeout, Timer::Shutdown);
        if !self.startup_over() {
            self.startup = StartupPhase::Failed;
            self.effects.push(Effect::Startup(Startup::Failed));
        }
        self.publish(
            None,
            EventKind::ShutdownStarted {
                reason: reason.to_owned(),
            },
        );
        for n in 0..self.nodes.len() {
            match &self.nodes[n].state {
                NodeState::Waiting { .. } | NodeState::Restarting { .. } => {
                    self.set(n, NodeState::NotStarted);
                }
                NodeState::Starting(_) | NodeState::Ready { .. } | NodeState::Stopping { .. } => {
                    self.request_stop(n, AfterStop::Shutdown);
                }
                _ => {}
            }
        }
    }

    /// Second Ctrl-C or shutdown timeout: SIGKILL every live group, then let runners report.
    pub(super) fn kill_everything(&mut self) {
        self.begin_shutdown("killed");
        if let Some(shutdown) = &mut self.shutdown {
            shutdown.killed = true;
        }
        self.effects.push(Effect::KillAll);
        for n in 0..self.nodes.len() {
            if let NodeState::Stopping {
                live,
                signalled: false,
                then,
            } = self.nodes[n].state.clone()
            {
                self.send_stop(n, live, then);
            }
        }
    }

    /// A stop under way of node `n` ends in a start again instead of what it was for; true
    /// when `n` was being stopped for `reason`.
    pub(super) fn relaunch_instead_of(&mut self, n: usize, reason: &AfterStop) -> bool {
        let NodeState::Stopping {
            live,
            signalled,
            then,
        } = self.nodes[n].state.clone()
        else {
            return false;
        };
        if then != *reason {
            return false;
        }
        self.set(
            n,
            NodeState::Stopping {
                live,
                signalled,
                then: AfterStop::Relaunch,
            },
        );
        true
    }
}
