//! The pure lifecycle core: the only place a node's state changes.
//!
//! [`Core::on`] takes one [`Input`] and the current run time and returns the [`Effect`]s to
//! carry out. It does no I/O, reads no clock and spawns nothing, so the simulation tests drive
//! it with a fake clock and fake processes, and the async shell only performs effects.
//!
//! Work is proportional to what changed: every state change goes through [`Core::set`], which
//! keeps three counters (live instances, nodes that keep the run alive, required nodes not yet
//! ready) and marks the nodes whose decisions it may change (its dependents, for their start
//! conditions; its dependencies, for their stop order). Only marked nodes are examined. Nodes
//! whose conditions hold wait in a queue ordered by height (the most work behind them first),
//! and deadlines wait in a timer queue.
//!
//! User requests (`requests.rs`) and reloads (`reload.rs`) are further `impl Core` blocks in
//! files of their own; they change states only through [`Core::set`] as well.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

mod reload;
mod reports;
mod requests;
mod stopping;

use super::effect::Effect;
use super::input::{Input, VerifyFailure};
use super::state::{AfterStop, Live, NodeState};
use super::timers::{Timer, Timers};
use super::{NodeStatus, Options, Outcome, Startup, StartupError};
use crate::engine::config::{Condition, Config, Edge, NodeKind};
use crate::engine::event::EventKind;
use crate::engine::graph::Graph;
use crate::engine::timing::{NodeTiming, Summary};

/// Whether a dependency condition holds.
#[derive(Debug, PartialEq, Eq)]
enum DepState {
    Met,
    Pending,
    Broken(String),
}

/// Where startup stands inside the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartupPhase {
    Pending,
    /// Every required node is ready; the verification pass runs.
    Verifying,
    Done,
    Failed,
}

#[derive(Debug)]
struct ShutdownState {
    started: Duration,
    killed: bool,
}

/// Everything the core knows about one node besides its state.
#[derive(Debug)]
struct NodeRecord {
    state: NodeState,
    /// Restarts within the restart window, for backoff and the crash-loop limit.
    restarts: VecDeque<Duration>,
    total_restarts: u32,
    /// The last thing worth knowing: its STATUS, or why it failed, exited or was skipped.
    last: Option<String>,
    /// The latest failed readiness probe of the current start: shown instead of `last`
    /// while the node is starting, forgotten once it is ready.
    probe: Option<String>,
    /// What probing cost since the node was last ready (all attempts of this start).
    probes: crate::engine::health::ProbeTally,
    /// Why some of its output could not be kept, once that happened.
    output_lost: Option<String>,
    /// Held by `stop` because a node it needs was stopped (not named itself): starting that
    /// node again brings it back too.
    held_along: bool,
    timing: NodeTiming,
    /// Counts against `max_workers` (from launch until ready or gone).
    holds_worker: bool,
    /// Has been ready or completed at least once: a failed start is then a failed restart,
    /// and its milestones are reached.
    ever_ready: bool,
    /// Down after a stop that was sent once nothing depending on it ran any more: nothing that
    /// depends on it runs now, and nothing can start while it is down (it is not
    /// [`Graph::open_above`]), so the stop order need not look past it.
    quiet: bool,
}

impl NodeRecord {
    fn new(node: usize, state: NodeState) -> Self {
        Self {
            state,
            restarts: VecDeque::new(),
            total_restarts: 0,
            last: None,
            probe: None,
            probes: crate::engine::health::ProbeTally::default(),
            output_lost: None,
            held_along: false,
            timing: NodeTiming {
                node,
                ..NodeTiming::default()
            },
            holds_worker: false,
            ever_ready: false,
            quiet: false,
        }
    }
}

/// What one node contributes to the core's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Contribution {
    live: bool,
    keeps_alive: bool,
    required_unready: bool,
}

#[derive(Debug, Default)]
struct Counters {
    live: usize,
    keeping_alive: usize,
    required_unready: usize,
}

impl Counters {
    fn add(&mut self, c: Contribution) {
        self.live += usize::from(c.live);
        self.keeping_alive += usize::from(c.keeps_alive);
        self.required_unready += usize::from(c.required_unready);
    }

    fn remove(&mut self, c: Contribution) {
        self.live -= usize::from(c.live);
        self.keeping_alive -= usize::from(c.keeps_alive);
        self.required_unready -= usize::from(c.required_unready);
    }
}

/// Which ready node gets a scarce start slot first: a required one before an optional one
/// (optional nodes never hold up startup), then the one with the most work still behind it (the
/// critical path is never queued behind leaves: list scheduling by height), then the earlier
/// in topological order (what `--sequential` promises).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Priority {
    required: bool,
    height: usize,
    rank: Reverse<usize>,
}

/// What the restart policy decided for a service that ended.
enum Restart {
    Scheduled,
    Not,
    CrashLoop(String),
}

/// The lifecycle of every node of a run.
#[derive(Debug)]
pub struct Core {
    config: Arc<Config>,
    graph: Arc<Graph>,
    options: Options,
    nodes: Vec<NodeRecord>,
    now: Duration,
    worker_limit: usize,
    busy_workers: usize,
    startup: StartupPhase,
    shutdown: Option<ShutdownState>,
    failure: Option<StartupError>,
    timers: Timers,
    counters: Counters,
    /// Nodes to examine before the next input.
    dirty: Vec<usize>,
    is_dirty: Vec<bool>,
    /// Nodes whose conditions held when examined, most urgent first (see [`Priority`]).
    ready: BinaryHeap<(Priority, usize)>,
    /// Nodes whose dependencies are met that need no start slot (mirrors of other hosts'
    /// nodes in a cluster): launched whatever the worker limit.
    ready_unslotted: Vec<usize>,
    queued: Vec<bool>,
    /// Each node's position in the topological order, for ties.
    rank: Vec<usize>,
    next_instance: u64,
    effects: Vec<Effect>,
    /// How many times a node was examined, to show that work follows what changed.
    examined: u64,
}

impl Core {
    /// A core for the `selected` nodes of `config`, at run time zero.
    pub fn new(
        config: Arc<Config>,
        graph: Arc<Graph>,
        selected: &[bool],
        options: Options,
    ) -> Self {
        let nodes = selected
            .iter()
            .enumerate()
            .map(|(n, &on)| {
                let state = if on {
                    NodeState::Waiting {
                        demanded: !config.nodes[n].lazy,
                    }
                } else {
                    NodeState::Off
                };
                NodeRecord::new(n, state)
            })
            .collect();
        let mut core = Self {
            worker_limit: options.max_workers,
            config,
            graph,
            options,
            nodes,
            now: Duration::ZERO,
            busy_workers: 0,
            startup: StartupPhase::Pending,
            shutdown: None,
            failure: None,
            timers: Timers::default(),
            counters: Counters::default(),
            dirty: Vec::new(),
            is_dirty: Vec::new(),
            ready: BinaryHeap::new(),
            ready_unslotted: Vec::new(),
            queued: Vec::new(),
            rank: Vec::new(),
            next_instance: 1,
            effects: Vec::new(),
            examined: 0,
        };
        core.recount();
        core.timers
            .arm(core.options.startup_timeout, Timer::Startup);
        core
    }

    /// The first step of a run: announce the plan and launch what can start.
    pub fn begin(&mut self, now: Duration) -> Vec<Effect> {
        self.now = now;
        let selected = self.selected().count();
        self.publish(
            None,
            EventKind::Plan {
                nodes: selected,
                sequential: self.options.sequential,
                max_workers: (self.options.max_workers != usize::MAX)
                    .then_some(self.options.max_workers),
            },
        );
        self.settle();
        self.take_effects()
    }

    /// The effects of the step, each event stamped with its node's state after the step: the
    /// one state `status`, the events, the dashboard and `/metrics` all show.
    fn take_effects(&mut self) -> Vec<Effect> {
        let mut effects = std::mem::take(&mut self.effects);
        for effect in &mut effects {
            if let Effect::Publish {
                node: Some(n),
                state,
                ..
            } = effect
            {
                *state = Some(self.nodes[*n].state.name());
            }
        }
        effects
    }

    /// Reacts to one input at run time `now` and returns what to carry out.
    pub fn on(&mut self, input: Input, now: Duration) -> Vec<Effect> {
        self.now = now.max(self.now);
        match input {
            Input::Report {
                node,
                instance,
                report,
            } => self.on_report(node, instance, report),
            Input::Activated(n) => self.on_activated(n),
            Input::Tick => {}
            Input::Nodes { action, names } => {
                let answer = self.act_on_nodes(action, &names);
                self.effects.push(Effect::Answer(answer));
            }
            Input::Reload(config) => {
                let answer = self.reload(*config);
                self.effects.push(Effect::Answer(answer));
            }
            Input::Shutdown(reason) => self.begin_shutdown(&reason),
            Input::Kill => self.kill_everything(),
            Input::Verified(result) => self.on_verified(result),
            Input::WorkerLimit(limit) => self.worker_limit = limit.max(1),
            Input::OutputLost { node, reason } => self.on_output_lost(node, reason),
        }
        self.fire_due_timers();
        self.settle();
        self.take_effects()
    }

    /// Said once per node: the first reason is kept for `status`.
    fn on_output_lost(&mut self, n: usize, reason: String) {
        let Some(record) = self.nodes.get_mut(n) else {
            return;
        };
        if record.output_lost.is_none() {
            record.output_lost = Some(reason.clone());
            self.publish(Some(n), EventKind::OutputLost { reason });
        }
    }

    /// For tests of the verification pass.
    #[cfg(test)]
    pub(crate) fn set_verify_older_than(&mut self, age: Duration) {
        self.options.verify_older_than = age;
    }

    // ----- queries -----------------------------------------------------------------------------

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    pub fn graph(&self) -> &Arc<Graph> {
        &self.graph
    }

    /// The last thing worth knowing about node `n` (its STATUS, or why it failed or exited).
    pub fn last(&self, n: usize) -> Option<&str> {
        self.nodes[n].last.as_deref()
    }

    pub fn state(&self, n: usize) -> &NodeState {
        &self.nodes[n].state
    }

    /// The earliest deadline, for the shell's timer.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.timers.next()
    }

    /// Nodes could start but the worker limit holds them back (for `max_workers = "auto"`).
    pub fn held_back(&self) -> bool {
        !self.ready.is_empty() && self.busy_workers >= self.worker_limit
    }

    /// How many times a node was examined so far: work follows what changed.
    pub fn examined(&self) -> u64 {
        self.examined
    }

    pub fn busy_workers(&self) -> usize {
        self.busy_workers
    }

    pub fn shutting_down(&self) -> bool {
        self.shutdown.is_some()
    }

    /// The run is over: a shutdown began and every instance has ended.
    pub fn finished(&self) -> bool {
        self.shutdown.is_some() && self.counters.live == 0
    }

    /// How long the shutdown took so far.
    pub fn shutdown_took(&self) -> Duration {
        self.shutdown
            .as_ref()
            .map_or(Duration::ZERO, |s| self.now.saturating_sub(s.started))
    }

    /// How the run ended; call once [`finished`](Self::finished).
    pub fn outcome(&mut self) -> Outcome {
        if let Some(error) = self.failure.take() {
            return Outcome::Failed(error);
        }
        if self.startup != StartupPhase::Done {
            return Outcome::Interrupted;
        }
        let failed: Vec<String> = self
            .selected()
            .filter(|&n| self.config.nodes[n].required)
            .filter_map(|n| match &self.nodes[n].state {
                NodeState::Failed { reason } => Some(format!("`{}`: {reason}", self.name(n))),
                NodeState::Exited {
                    status,
                    success: false,
                } => Some(format!("`{}` exited ({status})", self.name(n))),
                _ => None,
            })
            .collect();
        if failed.is_empty() {
            Outcome::Stopped
        } else {
            Outcome::Degraded(failed)
        }
    }

    /// Each node of the run as `dagstart status` shows it.
    pub fn status(&self) -> Vec<NodeStatus> {
        self.selected()
            .map(|n| {
                let node = &self.config.nodes[n];
                let record = &self.nodes[n];
                NodeStatus {
                    name: node.name.clone(),
                    kind: node.kind.as_str().to_owned(),
                    state: record.state.name().to_owned(),
                    required: node.required,
                    pid: record.state.live().and_then(|l| l.pid),
                    uptime_ms: match record.state {
                        NodeState::Ready { since, .. } => {
                            Some(self.now.saturating_sub(since).as_millis() as u64)
                        }
                        _ => None,
                    },
                    restarts: record.total_restarts,
                    last: match record.state {
                        NodeState::Starting(_) => record.probe.clone().or(record.last.clone()),
                        _ => record.last.clone(),
                    },
                    output_lost: record.output_lost.clone(),
                    host: self.config.host_of(n).map(str::to_owned),
                    degraded: self.degraded(n),
                }
            })
            .collect()
    }

    fn selected(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len())
            .filter(|&n| !matches!(self.nodes[n].state, NodeState::Off | NodeState::Removed))
    }

    fn name(&self, n: usize) -> &str {
        &self.config.nodes[n].name
    }

    /// The counters and worker count agree with the node states (simulation invariant 6).
    #[cfg(test)]
    pub(super) fn assert_consistent(&self) {
        let mut counters = Counters::default();
        let mut holding = 0;
        for n in 0..self.nodes.len() {
            counters.add(self.contribution(n, &self.nodes[n].state));
            if self.nodes[n].holds_worker {
                holding += 1;
                assert!(
                    matches!(
                        self.nodes[n].state,
                        NodeState::Starting(_) | NodeState::Stopping { .. }
                    ),
                    "`{}` holds a worker while {}",
                    self.name(n),
                    self.nodes[n].state.name()
                );
            }
        }
        assert_eq!(
            (
                counters.live,
                counters.keeping_alive,
                counters.required_unready
            ),
            (
                self.counters.live,
                self.counters.keeping_alive,
                self.counters.required_unready
            ),
            "counters (live, keeping alive, required unready) drifted from the states"
        );
        assert_eq!(holding, self.busy_workers, "busy workers drifted");
        assert!(self.dirty.is_empty(), "nodes left unexamined after a step");
    }

    // ----- the one place a state changes -------------------------------------------------------

    fn contribution(&self, n: usize, state: &NodeState) -> Contribution {
        let node = &self.config.nodes[n];
        let live = state.is_live();
        let keeps_alive = live
            || match state {
                NodeState::Held | NodeState::Restarting { .. } => true,
                NodeState::Waiting { demanded: true } => true,
                // A lazy socket service waits for its first connection.
                NodeState::Waiting { demanded: false } => !node.sockets.is_empty(),
                _ => false,
            };
        let required_unready = node.required
            && !matches!(
                state,
                NodeState::Off
                    | NodeState::Removed
                    | NodeState::Ready { .. }
                    | NodeState::Completed
                    | NodeState::Held
                    | NodeState::Waiting { demanded: false }
            );
        Contribution {
            live,
            keeps_alive,
            required_unready,
        }
    }

    /// Moves node `n` to `state`, keeping the counters and marking who must look again.
    fn set(&mut self, n: usize, state: NodeState) {
        let before = self.contribution(n, &self.nodes[n].state);
        let after = self.contribution(n, &state);
        self.counters.remove(before);
        self.counters.add(after);
        self.nodes[n].state = state;
        self.nodes[n].quiet = false;
        self.mark(n);
        let graph = self.graph.clone();
        for d in graph.dependents(n) {
            self.mark(d);
        }
        if before.live && !after.live {
            // An instance ended: nodes it held up from stopping may go now, through nodes
            // that have no instance (a completed migration between an app and its database).
            self.mark_upstream(n);
        } else {
            for (d, _) in graph.dependencies(n) {
                self.mark(d);
            }
        }
    }

    fn mark(&mut self, n: usize) {
        if !self.is_dirty[n] {
            self.is_dirty[n] = true;
            self.dirty.push(n);
        }
    }

    fn mark_upstream(&mut self, n: usize) {
        let graph = self.graph.clone();
        let mut seen = HashSet::from([n]);
        let mut stack = vec![n];
        while let Some(x) = stack.pop() {
            for (d, _) in graph.dependencies(x) {
                if !seen.insert(d) {
                    continue;
                }
                self.mark(d);
                if self.passes_through(d) {
                    stack.push(d);
                }
            }
        }
    }

    /// Counters, marks and the ready queue from scratch (start, reload).
    fn recount(&mut self) {
        self.counters = Counters::default();
        for n in 0..self.nodes.len() {
            let c = self.contribution(n, &self.nodes[n].state);
            self.counters.add(c);
        }
        self.is_dirty = vec![false; self.nodes.len()];
        self.queued = vec![false; self.nodes.len()];
        self.dirty.clear();
        self.ready.clear();
        self.rank = vec![0; self.nodes.len()];
        for (position, &n) in self.graph.topological_order().iter().enumerate() {
            self.rank[n] = position;
        }
        for n in 0..self.nodes.len() {
            self.mark(n);
        }
    }

    fn publish(&mut self, node: Option<usize>, kind: EventKind) {
        self.effects.push(Effect::Publish {
            node,
            state: None,
            kind,
        });
    }

    fn note(&mut self, n: usize, text: String) {
        self.publish(Some(n), EventKind::note(text));
    }

    // ----- settling: examine what changed, launch what can start ------------------------------

    fn settle(&mut self) {
        loop {
            while let Some(n) = self.dirty.pop() {
                self.is_dirty[n] = false;
                self.examine(n);
            }
            self.launch_queued();
            self.check_startup_complete();
            if self.startup == StartupPhase::Done
                && self.shutdown.is_none()
                && self.counters.keeping_alive == 0
            {
                self.begin_shutdown("nothing is left running");
            }
            if self.dirty.is_empty() {
                break;
            }
        }
    }

    fn examine(&mut self, n: usize) {
        self.examined += 1;
        match self.nodes[n].state.clone() {
            NodeState::Waiting { demanded: true } if self.shutdown.is_none() => {
                match self.dependencies_state(n) {
                    DepState::Broken(reason) => self.skip(n, reason),
                    DepState::Met => self.queue(n),
                    DepState::Pending => self.demand_lazy_dependencies(n),
                }
            }
            // Its backoff is over, and the dependents bound to it have stopped.
            NodeState::Restarting { at }
                if at <= self.now
                    && self.shutdown.is_none()
                    && self.restart_followers(n).is_empty() =>
            {
                self.set(n, NodeState::Waiting { demanded: true });
            }
            NodeState::Stopping {
                live,
                signalled: false,
                then,
            } if !self.dependents_live(n) => self.send_stop(n, live, then),
            _ => {}
        }
    }

    /// Tells the runner of `live` to stop now.
    fn send_stop(&mut self, n: usize, live: Live, then: AfterStop) {
        self.set(
            n,
            NodeState::Stopping {
                live,
                signalled: true,
                then,
            },
        );
        self.effects.push(Effect::Stop {
            node: n,
            instance: live.instance,
        });
        self.publish(Some(n), EventKind::Stopping);
    }

    fn queue(&mut self, n: usize) {
        if std::mem::replace(&mut self.queued[n], true) {
            return;
        }
        if self.config.is_remote(n) {
            self.ready_unslotted.push(n);
            return;
        }
        let priority = Priority {
            required: self.config.nodes[n].required,
            height: self.graph.height(n),
            rank: Reverse(self.rank[n]),
        };
        self.ready.push((priority, n));
    }

    /// Launches queued nodes while start slots are free, most urgent first ([`Priority`]).
    fn launch_queued(&mut self) {
        for n in std::mem::take(&mut self.ready_unslotted) {
            self.queued[n] = false;
            if self.still_ready(n) {
                self.launch(n);
            }
        }
        while self.busy_workers < self.worker_limit {
            let Some((_, n)) = self.ready.pop() else {
                break;
            };
            self.queued[n] = false;
            if self.still_ready(n) {
                self.launch(n);
            }
        }
    }

    /// A queued node may still be launched: nothing changed its mind since it was queued.
    fn still_ready(&self, n: usize) -> bool {
        self.shutdown.is_none()
            && self.nodes[n].state == NodeState::Waiting { demanded: true }
            && self.dependencies_state(n) == DepState::Met
    }

    fn launch(&mut self, n: usize) {
        let instance = self.next_instance;
        self.next_instance += 1;
        let live = Live {
            instance,
            launched_at: self.now,
            pid: None,
        };
        self.set(n, NodeState::Starting(live));
        // A node of another host only waits for news here: it takes no start slot.
        let holds_worker = !self.config.is_remote(n);
        let record = &mut self.nodes[n];
        record.holds_worker = holds_worker;
        record.timing.launched_at = Some(self.now);
        self.busy_workers += usize::from(holds_worker);
        self.effects.push(Effect::Launch { node: n, instance });
        self.publish(Some(n), EventKind::Launched);
    }

    fn release_worker(&mut self, n: usize) {
        if std::mem::take(&mut self.nodes[n].holds_worker) {
            self.busy_workers -= 1;
        }
    }

    fn dependencies_state(&self, n: usize) -> DepState {
        let mut state = DepState::Met;
        for (dep, edge) in self.graph.dependencies(n) {
            match self.edge_state(n, dep, edge) {
                DepState::Met => {}
                DepState::Pending => state = DepState::Pending,
                broken @ DepState::Broken(_) => return broken,
            }
        }
        state
    }

    /// Whether `n` may start as far as its edge to `dep` goes. An optional edge waits only
    /// for a dependency on its way up (not for one that failed, was stopped, is not part of the
    /// run, or is lazy and not asked for); a milestone no longer counts once `n` was ready.
    fn edge_state(&self, n: usize, dep: usize, edge: Edge) -> DepState {
        if edge.milestone && self.nodes[n].ever_ready {
            return DepState::Met;
        }
        match self.condition_state(dep, edge.condition) {
            DepState::Broken(_) if !edge.required => DepState::Met,
            DepState::Pending
                if !edge.required
                    && self.nodes[dep].state == (NodeState::Waiting { demanded: false }) =>
            {
                DepState::Met
            }
            state => state,
        }
    }

    /// A ready node runs degraded while a dependency it needs is not up (it went down, and
    /// the node does not restart with it): which one, and why.
    fn degraded(&self, n: usize) -> Option<String> {
        if !matches!(self.nodes[n].state, NodeState::Ready { .. }) {
            return None;
        }
        // An optional dependency on its way back up is not waited for by a running node; a
        // milestone is met for good once the node was ready (`edge_state` knows).
        self.graph
            .dependencies(n)
            .filter(|&(_, edge)| edge.required)
            .find_map(|(d, edge)| match self.edge_state(n, d, edge) {
                DepState::Met => None,
                DepState::Pending => Some(format!(
                    "needs `{}`, which is {}",
                    self.name(d),
                    self.nodes[d].state.name()
                )),
                DepState::Broken(why) => Some(why),
            })
    }

    fn condition_state(&self, dep: usize, condition: Condition) -> DepState {
        let name = self.name(dep);
        let broken = |why: &str| DepState::Broken(format!("needs `{name}`, which {why}"));
        match (&self.nodes[dep].state, condition) {
            // Being stopped (for a restart or by the user): not something to start against.
            (NodeState::Stopping { .. }, _) => DepState::Pending,
            (
                NodeState::Waiting { .. }
                | NodeState::Starting(_)
                | NodeState::Restarting { .. }
                | NodeState::Ready { .. }
                | NodeState::Completed,
                Condition::Listening,
            )
            | (NodeState::Ready { .. } | NodeState::Completed, _) => DepState::Met,
            (NodeState::Starting(live), Condition::Started) if live.pid.is_some() => DepState::Met,
            (
                NodeState::Waiting { .. } | NodeState::Starting(_) | NodeState::Restarting { .. },
                _,
            ) => DepState::Pending,
            (NodeState::Failed { .. }, _) => broken("failed"),
            (NodeState::Skipped { .. }, _) => broken("was skipped"),
            (NodeState::Exited { .. }, _) => broken("exited"),
            (NodeState::Held, _) => broken("was stopped"),
            (NodeState::Removed, _) => broken("was removed"),
            (NodeState::Off | NodeState::Stopped | NodeState::NotStarted, _) => {
                broken("is not running")
            }
        }
    }

    /// A node that waits only on lazy nodes demands those not demanded yet: it is about to
    /// start, so they must.
    fn demand_lazy_dependencies(&mut self, n: usize) {
        let graph = self.graph.clone();
        let blockers: Vec<usize> = graph
            .dependencies(n)
            .filter(|&(d, e)| self.edge_state(n, d, e) == DepState::Pending)
            .map(|(d, _)| d)
            .collect();
        if !blockers.iter().all(|&d| self.config.nodes[d].lazy) {
            return;
        }
        for d in blockers {
            if self.nodes[d].state == (NodeState::Waiting { demanded: false }) {
                self.set(d, NodeState::Waiting { demanded: true });
                let text = format!(
                    "{}: lazy, starting: needed by `{}`",
                    self.name(d),
                    self.name(n)
                );
                self.note(d, text);
            }
        }
    }

    fn on_activated(&mut self, n: usize) {
        if self.nodes[n].state == (NodeState::Waiting { demanded: false }) {
            self.set(n, NodeState::Waiting { demanded: true });
            let text = format!("{}: first connection, starting", self.name(n));
            self.note(n, text);
        }
    }

    fn skip(&mut self, n: usize, reason: String) {
        self.set(
            n,
            NodeState::Skipped {
                reason: reason.clone(),
            },
        );
        self.nodes[n].last = Some(reason.clone());
        self.publish(
            Some(n),
            EventKind::Skipped {
                reason: reason.clone(),
            },
        );
        let node = &self.config.nodes[n];
        if node.required && !self.startup_over() {
            self.abort(StartupError::Skipped {
                node: node.name.clone(),
                kind: node.kind.as_str(),
                reason,
            });
        }
    }

    /// Whether a node that must stop before `n` still has a live instance: one that depends
    /// on `n`, directly or through nodes without an instance (a completed component, a failed
    /// optional node), over edges that order the stop (all but milestones). A dependent that
    /// can run without `n` (an optional edge on the way) counts only once it is being stopped
    /// itself: `n` may stop under it, but not before it when both go.
    fn dependents_live(&self, n: usize) -> bool {
        // Keyed by whether the way there binds: a node reached both ways is looked past twice.
        let mut seen = HashSet::from([(n, true)]);
        let mut stack = vec![(n, true)];
        while let Some((x, bound)) = stack.pop() {
            for (d, edge) in self.graph.dependent_edges(x) {
                if !edge.orders_stop() {
                    continue;
                }
                let bound = bound && edge.binds();
                let state = &self.nodes[d].state;
                if state.is_live() {
                    if bound || matches!(state, NodeState::Stopping { .. }) {
                        return true;
                    }
                } else if self.passes_through(d) && seen.insert((d, bound)) {
                    stack.push((d, bound));
                }
            }
        }
        false
    }

    /// Live dependents of `n` that restart with it (`restart = true` on their edge).
    fn restart_followers(&self, n: usize) -> Vec<usize> {
        self.graph
            .dependent_edges(n)
            .filter(|(d, e)| e.restart && self.nodes[*d].state.is_live())
            .map(|(d, _)| d)
            .collect()
    }

    // ----- startup -----------------------------------------------------------------------------

    fn startup_over(&self) -> bool {
        matches!(self.startup, StartupPhase::Done | StartupPhase::Failed)
    }

    fn check_startup_complete(&mut self) {
        if self.startup != StartupPhase::Pending
            || self.shutdown.is_some()
            || self.counters.required_unready > 0
        {
            return;
        }
        // The guide's verification pass: every required service is probed once more before
        // startup is declared complete, unless its readiness was confirmed a moment ago
        // (it would only add the probes' own time). A component's exit 0 is final.
        let to_verify: Vec<usize> = self
            .selected()
            .filter(|&n| {
                let node = &self.config.nodes[n];
                node.required
                    && node.kind == NodeKind::Service
                    && !self.config.is_remote(n)
                    && matches!(self.nodes[n].state, NodeState::Ready { since, .. }
                        if self.now.saturating_sub(since) >= self.options.verify_older_than)
            })
            .collect();
        if to_verify.is_empty() {
            self.complete_startup();
        } else {
            self.startup = StartupPhase::Verifying;
            self.effects.push(Effect::Verify(to_verify));
        }
    }

    fn on_verified(&mut self, result: Result<(), VerifyFailure>) {
        if self.startup != StartupPhase::Verifying {
            return;
        }
        self.startup = StartupPhase::Pending;
        match result {
            Ok(()) if self.counters.required_unready == 0 && self.shutdown.is_none() => {
                self.complete_startup();
            }
            // Something changed meanwhile: settle decides again.
            Ok(()) => {}
            Err(VerifyFailure { node, reason }) => {
                let n = &self.config.nodes[node];
                self.abort(StartupError::NodeFailed {
                    node: n.name.clone(),
                    kind: n.kind.as_str(),
                    reason: format!("failed the final verification: {reason}"),
                    last_output: None,
                });
            }
        }
    }

    fn complete_startup(&mut self) {
        self.startup = StartupPhase::Done;
        let timings: Vec<NodeTiming> = self
            .selected()
            .map(|n| self.nodes[n].timing.clone())
            .collect();
        let summary = Summary::build(
            &self.config,
            &self.graph,
            &timings,
            self.now,
            self.options.sequential,
        );
        self.publish(None, EventKind::StartupComplete(Box::new(summary)));
        self.effects.push(Effect::Startup(Startup::Ready));
    }

    fn fire_due_timers(&mut self) {
        for timer in self.timers.due(self.now) {
            match timer {
                Timer::Startup => {
                    if !self.startup_over() && self.shutdown.is_none() {
                        self.startup_timed_out();
                    }
                }
                Timer::Shutdown => {
                    if self.shutdown.as_ref().is_some_and(|s| !s.killed) {
                        self.publish(
                            None,
                            EventKind::note("shutdown_timeout passed: killing what is left"),
                        );
                        self.kill_everything();
                    }
                }
                Timer::Restart(n) => self.mark(n),
            }
        }
    }

    fn startup_timed_out(&mut self) {
        let waiting: Vec<String> = self
            .selected()
            .filter(|&n| self.config.nodes[n].required)
            .filter_map(|n| {
                let node = &self.config.nodes[n];
                match &self.nodes[n].state {
                    NodeState::Waiting { .. } => {
                        let pending: Vec<String> = self
                            .graph
                            .dependencies(n)
                            .filter(|&(d, e)| self.edge_state(n, d, e) == DepState::Pending)
                            .map(|(d, e)| format!("{} ({})", self.name(d), e.condition.as_str()))
                            .collect();
                        Some(format!(
                            "`{}` was waiting for {}",
                            node.name,
                            pending.join(", ")
                        ))
                    }
                    NodeState::Starting(_) => Some(format!(
                        "`{}` was starting (waiting for {})",
                        node.name,
                        node.health.probe.describe()
                    )),
                    _ => None,
                }
            })
            .collect();
        self.abort(StartupError::Timeout {
            budget: humantime::format_duration(self.options.startup_timeout).to_string(),
            waiting: waiting.join("\n"),
        });
    }

    fn abort(&mut self, error: StartupError) {
        if self.failure.is_some() || self.shutdown.is_some() {
            return;
        }
        self.publish(
            None,
            EventKind::StartupFailed {
                reason: error.to_string(),
            },
        );
        self.failure = Some(error);
        self.startup = StartupPhase::Failed;
        self.effects.push(Effect::Startup(Startup::Failed));
        self.begin_shutdown("startup failed");
    }

    /// Aborts the startup because required node `n` failed, quoting its last output lines.
    fn abort_with_output(&mut self, n: usize, reason: String, tail: &[String]) {
        let node = &self.config.nodes[n];
        let last_output = (!tail.is_empty()).then(|| {
            format!(
                "last {} lines of {}:\n  {}",
                tail.len(),
                node.name,
                tail.join("\n  ")
            )
        });
        self.abort(StartupError::NodeFailed {
            node: node.name.clone(),
            kind: node.kind.as_str(),
            reason,
            last_output,
        });
    }
}

/// Which intention wins when a node already being stopped is asked to stop again.
fn strength(then: &AfterStop) -> u8 {
    match then {
        AfterStop::Relaunch => 0,
        AfterStop::DependencyDown(_) => 1,
        AfterStop::Hold => 2,
        AfterStop::Remove => 3,
        AfterStop::Shutdown => 4,
    }
}
