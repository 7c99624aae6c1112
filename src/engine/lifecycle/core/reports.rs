//! Runner reports: spawned, ready, completed, failed, exited, stopped; and the restart policy
//! that decides what an end means.

use super::{Core, Restart};
use crate::engine::config::{NodeKind, RestartPolicy};
use crate::engine::event::EventKind;
use crate::engine::lifecycle::input::Report;
use crate::engine::lifecycle::state::{AfterStop, Live, NodeState};
use crate::engine::lifecycle::timers::Timer;

impl Core {
    pub(super) fn on_report(&mut self, n: usize, instance: u64, report: Report) {
        let Some(live) = self.nodes[n].state.live().copied() else {
            return;
        };
        if live.instance != instance {
            // From an instance that ended already: nothing it says applies any more.
            return;
        }
        if report.is_last() {
            self.release_worker(n);
        }
        match report {
            Report::Spawned { pid, attempt } => self.on_spawned(n, pid, attempt),
            Report::Ready => self.on_ready(n, live),
            Report::Completed => self.on_completed(n, live),
            Report::Retrying {
                attempt,
                reason,
                delay,
            } => self.publish(
                Some(n),
                EventKind::Retrying {
                    attempt,
                    reason,
                    delay,
                },
            ),
            Report::Status(text) => {
                self.nodes[n].last = Some(text.clone());
                self.publish(Some(n), EventKind::Status { text });
            }
            Report::Probed(tally) => {
                let probes = &mut self.nodes[n].probes;
                probes.sent += tally.sent;
                probes.busy += tally.busy;
            }
            Report::Probe(result) => {
                self.nodes[n].probe = Some(result.clone());
                self.publish(Some(n), EventKind::Probe { result });
            }
            Report::Health(text) => {
                let note = format!("{}: {text}", self.name(n));
                self.nodes[n].last = Some(text);
                self.note(n, note);
            }
            Report::Failed { reason, tail } => self.on_failed(n, reason, &tail),
            Report::Exited {
                status,
                success,
                tail,
            } => self.on_exited(n, status, success, &tail),
            Report::Stopped {
                status,
                killed,
                took,
            } => {
                self.publish(
                    Some(n),
                    EventKind::Stopped {
                        status,
                        killed,
                        took,
                    },
                );
                self.finish_stop(n);
            }
            Report::Crashed(message) => {
                let reason = format!("internal error: its runner stopped unexpectedly ({message})");
                self.tell_failure(n, &reason);
                if matches!(self.nodes[n].state, NodeState::Stopping { .. }) {
                    self.finish_stop(n);
                } else {
                    self.fail_for_good(n, reason, &[]);
                }
            }
        }
    }

    pub(super) fn on_spawned(&mut self, n: usize, pid: u32, attempt: u32) {
        // A new attempt: the probes of the last one say nothing about it.
        self.nodes[n].probe = None;
        let with_pid = |live: &Live| Live {
            pid: Some(pid),
            ..*live
        };
        let state = match &self.nodes[n].state {
            NodeState::Starting(live) => NodeState::Starting(with_pid(live)),
            NodeState::Stopping {
                live,
                signalled,
                then,
            } => NodeState::Stopping {
                live: with_pid(live),
                signalled: *signalled,
                then: then.clone(),
            },
            NodeState::Ready { live, since } => NodeState::Ready {
                live: with_pid(live),
                since: *since,
            },
            _ => return,
        };
        self.set(n, state);
        let timing = &mut self.nodes[n].timing;
        timing.attempts = attempt;
        timing.first_spawn_at.get_or_insert(self.now);
        self.publish(Some(n), EventKind::Spawned { pid, attempt });
    }

    pub(super) fn on_ready(&mut self, n: usize, live: Live) {
        self.release_worker(n);
        self.nodes[n].probe = None;
        if !matches!(self.nodes[n].state, NodeState::Starting(_)) {
            return;
        }
        self.set(
            n,
            NodeState::Ready {
                live,
                since: self.now,
            },
        );
        self.mark_ready(n, live);
    }

    pub(super) fn on_completed(&mut self, n: usize, live: Live) {
        if let NodeState::Stopping { then, .. } = &self.nodes[n].state {
            if *then != AfterStop::Hold && *then != AfterStop::Shutdown {
                return self.finish_stop(n);
            }
        }
        // A component's exit 0 is final success, even while it was being stopped.
        self.set(n, NodeState::Completed);
        self.mark_ready(n, live);
    }

    pub(super) fn mark_ready(&mut self, n: usize, live: Live) {
        let record = &mut self.nodes[n];
        record.timing.ready_at = Some(self.now);
        record.ever_ready = true;
        let took = self.now.saturating_sub(live.launched_at);
        let probes = std::mem::take(&mut record.probes);
        self.publish(
            Some(n),
            EventKind::Ready {
                took,
                probes: probes.sent,
                probe_time: probes.busy,
            },
        );
    }

    /// The node's `last` and a `failed` event: why it failed.
    fn tell_failure(&mut self, n: usize, reason: &str) {
        self.nodes[n].last = Some(reason.to_owned());
        self.publish(
            Some(n),
            EventKind::Failed {
                reason: reason.to_owned(),
            },
        );
    }

    pub(super) fn on_failed(&mut self, n: usize, reason: String, tail: &[String]) {
        self.tell_failure(n, &reason);
        if matches!(self.nodes[n].state, NodeState::Stopping { .. }) {
            return self.finish_stop(n);
        }
        // A failed restart attempt is one more failure within the crash-loop window.
        if self.nodes[n].ever_ready {
            match self.restart_or_give_up(n, &reason, false) {
                Restart::Scheduled => return,
                Restart::CrashLoop(crash) => return self.crash_loop(n, crash, tail),
                Restart::Not => {}
            }
        }
        self.fail_for_good(n, reason, tail);
    }

    pub(super) fn on_exited(&mut self, n: usize, status: String, success: bool, tail: &[String]) {
        self.publish(
            Some(n),
            EventKind::Exited {
                status: status.clone(),
            },
        );
        self.nodes[n].last = Some(format!("exited ({status})"));
        if matches!(self.nodes[n].state, NodeState::Stopping { .. }) {
            return self.finish_stop(n);
        }
        match self.restart_or_give_up(n, &status, success) {
            Restart::Scheduled => {}
            Restart::CrashLoop(reason) => self.crash_loop(n, reason, tail),
            Restart::Not => {
                self.set(
                    n,
                    NodeState::Exited {
                        status: status.clone(),
                        success,
                    },
                );
                let node = &self.config.nodes[n];
                if node.required && !self.startup_over() {
                    let reason = format!("exited after it was ready ({status})");
                    self.abort_with_output(n, reason, tail);
                }
                self.stop_dependents(n, "exited");
            }
        }
    }

    pub(super) fn crash_loop(&mut self, n: usize, reason: String, tail: &[String]) {
        self.tell_failure(n, &reason);
        self.fail_for_good(n, reason, tail);
    }

    /// Node `n` failed and will not be started again by dagstart: a required node aborts the
    /// startup; after startup, whatever needs it is stopped (dependents first).
    pub(super) fn fail_for_good(&mut self, n: usize, reason: String, tail: &[String]) {
        self.set(
            n,
            NodeState::Failed {
                reason: reason.clone(),
            },
        );
        if self.config.nodes[n].required && !self.startup_over() {
            self.abort_with_output(n, reason, tail);
        }
        self.stop_dependents(n, "failed");
    }

    /// Stops every live node that needs `n`, directly or not, because `n` is down for good.
    pub(super) fn stop_dependents(&mut self, n: usize, why: &str) {
        if self.shutdown.is_some() {
            return;
        }
        let reason = format!("needs `{}`, which {why}", self.name(n));
        let mut affected = self.graph.with_bound_dependents(&[n]);
        affected.retain(|&d| d != n && self.nodes[d].state.is_live());
        let mut names = Vec::new();
        for d in affected {
            self.request_stop(d, AfterStop::DependencyDown(reason.clone()));
            names.push(self.name(d).to_owned());
        }
        if !names.is_empty() {
            let text = format!("stopping {}: {reason}", names.join(", "));
            self.note(n, text);
        }
    }

    /// Applies the restart policy to a service that ended. A restart stops the dependents
    /// that restart with it (`restart = true` on their edge) first.
    pub(super) fn restart_or_give_up(&mut self, n: usize, status: &str, success: bool) -> Restart {
        let node = &self.config.nodes[n];
        let policy = &node.restart;
        let wanted = match policy.policy {
            RestartPolicy::No => false,
            RestartPolicy::OnFailure => !success,
            RestartPolicy::Always => true,
        };
        if !wanted || node.kind == NodeKind::Component || self.shutdown.is_some() {
            return Restart::Not;
        }
        let now = self.now;
        let record = &mut self.nodes[n];
        record
            .restarts
            .retain(|&t| now.saturating_sub(t) < policy.window);
        let recent = record.restarts.len() as u32;
        if recent >= policy.max_restarts {
            return Restart::CrashLoop(format!(
                "crash loop: {recent} restarts within {}, last end: {status}",
                humantime::format_duration(policy.window)
            ));
        }
        let delay = policy
            .backoff
            .saturating_mul(1 << recent.min(20))
            .min(policy.backoff_max);
        record.restarts.push_back(now);
        record.total_restarts += 1;
        let at = now + delay;
        self.set(n, NodeState::Restarting { at });
        self.timers.arm(at, Timer::Restart(n));
        self.publish(
            Some(n),
            EventKind::Restarting {
                delay,
                restart: recent + 1,
                reason: status.to_owned(),
            },
        );
        self.follow_restart(n);
        Restart::Scheduled
    }

    /// The running dependents that need `n` and do not restart with it keep running without
    /// it until it is back: said once, as a note on `n` (their status shows it meanwhile).
    fn tell_degraded(&mut self, n: usize, bound: &[usize]) {
        let graph = self.graph.clone();
        let degraded: Vec<usize> = graph
            .dependent_edges(n)
            .filter(|&(d, edge)| {
                edge.required
                    && !edge.milestone
                    && !bound.contains(&d)
                    && self.nodes[d].state.is_live()
            })
            .map(|(d, _)| d)
            .collect();
        if !degraded.is_empty() {
            let text = format!(
                "{} {} running without it until it is back (degraded)",
                self.names_of(&degraded),
                if degraded.len() == 1 { "keeps" } else { "keep" }
            );
            self.note(n, text);
        }
    }

    /// The dependents that restart with `n` (`restart = true` on their edge) stop while it
    /// restarts and start again after it; so do the running nodes that cannot run without
    /// them (they are stopped first).
    fn follow_restart(&mut self, n: usize) {
        let bound = self.restart_followers(n);
        self.tell_degraded(n, &bound);
        if bound.is_empty() {
            return;
        }
        let mut along = self.graph.with_bound_dependents(&bound);
        along.retain(|&d| !bound.contains(&d) && self.nodes[d].state.is_live());
        for &d in bound.iter().chain(&along) {
            self.request_stop(d, AfterStop::Relaunch);
        }
        for &d in &bound {
            let text = format!(
                "{}: stopping because `{}` restarts",
                self.name(d),
                self.name(n)
            );
            self.note(d, text);
        }
        if !along.is_empty() {
            let text = format!(
                "stopping {} too (they need {}); they start again after it",
                self.names_of(&along),
                self.names_of(&bound)
            );
            self.note(n, text);
        }
    }
}
