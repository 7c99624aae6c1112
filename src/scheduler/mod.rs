//! The executor: the one owner of node state.
//!
//! A node is launched the moment every dependency meets its condition (no level barriers),
//! limited only by `max_workers` start slots. Each launched node gets a runner task
//! ([`runner`]) that spawns, probes, retries and supervises it, reporting back over a channel.
//! The scheduler turns those reports into state changes and publishes each as an
//! [`Event`](crate::event::Event); everything the user sees is a subscriber of that stream.
//!
//! ```text
//!   signals ──Control──►┌───────────┐──NodeControl──► runner (one per node) ──► process group
//!                       │ scheduler │◄──RunnerMsg────        │
//!                       └───────────┘                        │ output lines
//!                             │ events                       ▼
//!                             └────────────────────────► EventSink ──► terminal, log files
//! ```
//!
//! Shutdown stops a node only after every node that depends on it has stopped; independent
//! branches stop in parallel. At the very end every process group ever spawned is swept with
//! SIGKILL, so nothing outlives the run.

mod runner;

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::{Condition, Config, NodeKind, Probe, RestartPolicy};
use crate::event::{EventKind, EventSink};
use crate::graph::Graph;
use crate::health::{self, ProbeContext};
use crate::notify::NotifyHub;
use crate::process::{self, ProcessGroup};
use crate::report::{NodeTiming, Summary};
use crate::sockets::BoundSockets;
use runner::{NodeControl, RunnerContext, RunnerMsg};

/// How to run the graph.
#[derive(Debug, Clone)]
pub struct Options {
    /// Nodes in their start phase at once.
    pub max_workers: usize,
    /// Adapt the number of nodes starting at once to the CPU pressure (`max_workers = "auto"`).
    pub auto_workers: bool,
    pub sequential: bool,
    pub parallel_health_checks: bool,
    pub startup_timeout: Duration,
    pub shutdown_timeout: Duration,
}

/// Requests from outside: signals, the end of the `--` command.
#[derive(Debug)]
pub enum Control {
    /// Stop everything gracefully, in reverse dependency order.
    Shutdown(String),
    /// Kill every process group at once.
    Kill,
    /// Answer with a snapshot of every node of the run.
    Status(tokio::sync::oneshot::Sender<Vec<NodeStatus>>),
    /// Apply an edited (already validated) services.toml without a full restart.
    Reload {
        config: Box<Config>,
        reply: tokio::sync::oneshot::Sender<Result<String, String>>,
    },
    /// Start, stop or restart nodes; the answer says what was done, or what was wrong.
    Nodes {
        action: NodeAction,
        names: Vec<String>,
        reply: tokio::sync::oneshot::Sender<Result<String, String>>,
    },
}

/// What `dagstart start|stop|restart` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeAction {
    /// Start the nodes (and what they need) if they are not running.
    Start,
    /// Stop the nodes and everything that depends on them, dependents first; they stay stopped.
    Stop,
    /// Stop the nodes and their running dependents, dependents first, and start them again.
    Restart,
}

/// One node as `dagstart status` shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub kind: String,
    pub state: String,
    pub required: bool,
    pub pid: Option<u32>,
    /// Milliseconds since the node became ready, while it is.
    pub uptime_ms: Option<u64>,
    pub restarts: u32,
    /// The last thing worth knowing: its STATUS, or why it failed, exited or was skipped.
    pub last: Option<String>,
}

/// Where startup stands, for whoever waits on it (the `--` command).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Startup {
    Pending,
    Ready,
    Failed,
}

/// How a run ended, after everything was stopped.
#[derive(Debug)]
pub enum Outcome {
    /// Startup completed and the user (or the `--` command) ended the run.
    Stopped,
    /// Shut down on request before startup completed.
    Interrupted,
    Failed(StartupError),
}

/// Why startup failed.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[non_exhaustive]
pub enum StartupError {
    #[error("required {kind} `{node}` failed: {reason}")]
    #[diagnostic(code(dagstart::startup::failed))]
    NodeFailed {
        node: String,
        kind: &'static str,
        reason: String,
        #[help]
        last_output: Option<String>,
    },
    #[error("required {kind} `{node}` was skipped: {reason}")]
    #[diagnostic(code(dagstart::startup::skipped))]
    Skipped {
        node: String,
        kind: &'static str,
        reason: String,
    },
    #[error("startup did not complete within {budget}")]
    #[diagnostic(
        code(dagstart::startup::timeout),
        help("{waiting}\nraise settings.startup_timeout or STARTUP_TIMEOUT if this is expected")
    )]
    Timeout { budget: String, waiting: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Not part of this run.
    Off,
    Waiting,
    Starting,
    Ready,
    Completed,
    Failed,
    Skipped,
    Exited,
    /// Ended after it was ready; starts again at `Slot::restart_at` (restart policy).
    Restarting,
    Stopped,
    /// Still waiting when shutdown began; never started.
    NotStarted,
}

fn phase_name(phase: &Phase) -> &'static str {
    match phase {
        Phase::Off => "off",
        Phase::Waiting => "waiting",
        Phase::Starting => "starting",
        Phase::Ready => "ready",
        Phase::Completed => "completed",
        Phase::Failed => "failed",
        Phase::Skipped => "skipped",
        Phase::Exited => "exited",
        Phase::Restarting => "restarting",
        Phase::Stopped => "stopped",
        Phase::NotStarted => "not started",
    }
}

/// Socket activation binds before anything starts; a reload cannot rebind.
fn check_sockets_unchanged(old: &Config, new: &Config) -> Result<(), String> {
    for node in &new.nodes {
        let before = old
            .node(&node.name)
            .map_or(&[][..], |o| o.sockets.as_slice());
        if before != node.sockets.as_slice() {
            return Err(format!(
                "the sockets of `{}` changed; socket activation needs a full restart (`dagstart down`, then `dagstart run`)",
                node.name
            ));
        }
    }
    Ok(())
}

/// How an edited configuration maps onto the running one. Node indices are kept: a node of the
/// old configuration keeps its index (removed ones stay as tombstones without dependencies) and
/// new nodes are appended, so runners and their reports stay valid.
struct ReloadPlan {
    merged: Config,
    added: Vec<usize>,
    removed: Vec<usize>,
    changed: Vec<usize>,
    unchanged: usize,
}

impl ReloadPlan {
    fn new(old: &Config, new: Config) -> Self {
        let mut nodes = Vec::with_capacity(old.nodes.len() + new.nodes.len());
        let (mut removed, mut changed, mut unchanged) = (Vec::new(), Vec::new(), 0);
        for (i, before) in old.nodes.iter().enumerate() {
            match new.node(&before.name) {
                Some(after) => {
                    if crate::config::node_fingerprint(old, before)
                        == crate::config::node_fingerprint(&new, after)
                    {
                        unchanged += 1;
                    } else {
                        changed.push(i);
                    }
                    nodes.push(after.clone());
                }
                None => {
                    removed.push(i);
                    nodes.push(crate::config::Node {
                        depends_on: Vec::new(),
                        ..before.clone()
                    });
                }
            }
        }
        let mut added = Vec::new();
        for after in &new.nodes {
            if old.node(&after.name).is_none() {
                added.push(nodes.len());
                nodes.push(after.clone());
            }
        }
        let index: std::collections::HashMap<String, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        for node in &mut nodes {
            for dep in &mut node.depends_on {
                dep.node = index[&dep.name];
            }
        }
        Self {
            merged: Config { nodes, ..new },
            added,
            removed,
            changed,
            unchanged,
        }
    }
}

/// What the restart policy decided for a service that ended.
enum Restart {
    Scheduled,
    Not,
    CrashLoop(String),
}

/// Whether a dependency condition holds.
enum DepState {
    Met,
    Pending,
    Broken(String),
}

struct Slot {
    phase: Phase,
    /// Gone from services.toml after a reload: stopped, then off.
    removed: bool,
    pid: Option<u32>,
    up_since: Option<Instant>,
    total_restarts: u32,
    last: Option<String>,
    /// Asked to stop (by the user or a restart) while the run goes on.
    stop_requested: bool,
    /// Stopped by the user: stays stopped, and keeps the run alive, until started again.
    held: bool,
    /// When the current runner was launched.
    launched: Option<Instant>,
    /// When a `Restarting` node may start again.
    restart_at: Option<Instant>,
    /// Restarts within the restart window, for backoff and the crash-loop limit.
    restarts: std::collections::VecDeque<std::time::Instant>,
    /// Stopped because a dependency restarts: wait for it again instead of staying stopped.
    relaunch_after_stop: bool,
    /// A lazy node starts only once demanded: by a first connection or by a dependent.
    demanded: bool,
    spawned: bool,
    runner: Option<mpsc::UnboundedSender<NodeControl>>,
    group: Option<ProcessGroup>,
    stop_sent: bool,
    holds_worker: bool,
    timing: NodeTiming,
}

impl Slot {
    fn new(node: usize, selected: bool, lazy: bool) -> Self {
        Self {
            phase: if selected { Phase::Waiting } else { Phase::Off },
            removed: false,
            pid: None,
            up_since: None,
            total_restarts: 0,
            last: None,
            stop_requested: false,
            held: false,
            launched: None,
            restart_at: None,
            restarts: std::collections::VecDeque::new(),
            relaunch_after_stop: false,
            demanded: !lazy,
            spawned: false,
            runner: None,
            group: None,
            stop_sent: false,
            holds_worker: false,
            timing: NodeTiming {
                node,
                ..NodeTiming::default()
            },
        }
    }
}

pub struct Scheduler {
    config: Arc<Config>,
    graph: Arc<Graph>,
    options: Options,
    slots: Vec<Slot>,
    events: EventSink,
    http: reqwest::Client,
    to_scheduler: mpsc::UnboundedSender<(usize, RunnerMsg)>,
    from_runners: mpsc::UnboundedReceiver<(usize, RunnerMsg)>,
    busy_workers: usize,
    startup_done: bool,
    startup_tx: watch::Sender<Startup>,
    shutdown: Option<Shutdown>,
    failure: Option<StartupError>,
    /// Every process group this run created, for the final sweep.
    groups: Vec<ProcessGroup>,
    notify: Option<NotifyHub>,
    sockets: Arc<BoundSockets>,
    run_id: String,
    guardian: Option<crate::guardian::Guardian>,
    /// The adaptive limit, with `max_workers = "auto"`.
    auto: Option<AutoWorkers>,
    /// Nodes were ready to launch but the limit held them back.
    held_back: bool,
}

/// `max_workers = "auto"`: the limit doubles while the CPUs have room and halves (never below
/// one per CPU) while runnable tasks wait for a CPU; it is adjusted every `AUTO_TICK`.
#[derive(Debug)]
struct AutoWorkers {
    pressure: crate::pressure::CpuPressure,
    limit: usize,
}

const AUTO_TICK: Duration = Duration::from_millis(25);
/// CPU pressure above which no more nodes are let into their start phase.
const AUTO_BUSY: f64 = 0.3;

impl AutoWorkers {
    fn new() -> Self {
        let pressure = crate::pressure::CpuPressure::new();
        let limit = pressure.cpus();
        Self { pressure, limit }
    }

    fn adjust(&mut self, busy: usize) {
        let cpus = self.pressure.cpus();
        if self.pressure.sample() > AUTO_BUSY {
            self.limit = (self.limit / 2).max(cpus);
        } else if busy >= self.limit {
            self.limit = (self.limit * 2).min(64 * cpus);
        }
    }
}

/// What the run set up before the scheduler starts.
#[derive(Debug, Default)]
pub struct RunSetup {
    /// The value of `DAGSTART_RUN` in every node's environment.
    pub run_id: String,
    /// Told about every new process group, to kill them if dagstart dies.
    pub guardian: Option<crate::guardian::Guardian>,
    /// The notify socket, when any node uses `notify` readiness.
    pub notify: Option<NotifyHub>,
    /// The listening sockets of socket-activated services.
    pub sockets: Arc<BoundSockets>,
}

struct Shutdown {
    started: Instant,
    deadline: Instant,
    killed: bool,
}

impl Scheduler {
    /// A scheduler for the `selected` nodes, publishing to `events`.
    pub fn new(
        config: Arc<Config>,
        graph: Arc<Graph>,
        selected: &[bool],
        options: Options,
        events: EventSink,
        setup: RunSetup,
    ) -> (Self, watch::Receiver<Startup>) {
        let slots = selected
            .iter()
            .enumerate()
            .map(|(i, &on)| Slot::new(i, on, config.nodes[i].lazy))
            .collect();
        let (to_scheduler, from_runners) = mpsc::unbounded_channel();
        let (startup_tx, startup_rx) = watch::channel(Startup::Pending);
        let auto_workers = options.auto_workers;
        let scheduler = Self {
            config,
            graph,
            options,
            slots,
            events,
            http: health::http_client(),
            to_scheduler,
            from_runners,
            busy_workers: 0,
            startup_done: false,
            startup_tx,
            shutdown: None,
            failure: None,
            groups: Vec::new(),
            notify: setup.notify,
            sockets: setup.sockets,
            run_id: setup.run_id,
            guardian: setup.guardian,
            auto: auto_workers.then(AutoWorkers::new),
            held_back: false,
        };
        (scheduler, startup_rx)
    }

    /// Runs until everything it started has stopped again.
    pub async fn run(mut self, mut control: mpsc::UnboundedReceiver<Control>) -> Outcome {
        let startup_deadline = Instant::now() + self.options.startup_timeout;
        let selected = self.slots.iter().filter(|s| s.phase != Phase::Off).count();
        self.events.send(
            None,
            EventKind::Plan {
                nodes: selected,
                sequential: self.options.sequential,
                max_workers: (self.options.max_workers != usize::MAX)
                    .then_some(self.options.max_workers),
            },
        );
        self.watch_lazy_sockets();
        loop {
            if self.shutdown.is_none() {
                self.launch_ready_nodes();
                self.check_startup_complete().await;
            }
            if self.startup_done && self.shutdown.is_none() && self.nothing_left() {
                self.begin_shutdown("nothing is left running");
            }
            self.advance_stops();
            if self.shutdown.is_some() && self.slots.iter().all(|s| s.runner.is_none()) {
                break;
            }
            let shutdown_deadline = self
                .shutdown
                .as_ref()
                .filter(|s| !s.killed)
                .map(|s| s.deadline);
            let startup_pending = !self.startup_done && self.shutdown.is_none();
            let next_restart = self.next_restart();
            tokio::select! {
                Some((node, msg)) = self.from_runners.recv() => self.handle(node, msg),
                Some(request) = control.recv() => match request {
                    Control::Shutdown(reason) => self.begin_shutdown(&reason),
                    Control::Kill => self.kill_everything(),
                    Control::Status(reply) => {
                        let _ = reply.send(self.status());
                    }
                    Control::Reload { config, reply } => {
                        let _ = reply.send(self.reload(*config));
                    }
                    Control::Nodes { action, names, reply } => {
                        let _ = reply.send(self.act_on_nodes(action, &names));
                    }
                },
                () = tokio::time::sleep_until(startup_deadline), if startup_pending => self.startup_timed_out(),
                () = sleep_until_opt(next_restart), if next_restart.is_some() => {}
                () = tokio::time::sleep(AUTO_TICK), if self.auto.is_some() && self.held_back => {
                    let busy = self.busy_workers;
                    if let Some(auto) = &mut self.auto {
                        auto.adjust(busy);
                    }
                }
                () = sleep_until_opt(shutdown_deadline), if shutdown_deadline.is_some() => {
                    self.events.send(None, EventKind::Note("shutdown_timeout passed: killing what is left".into()));
                    self.kill_everything();
                }
            }
        }
        self.sweep_groups();
        let took = self
            .shutdown
            .as_ref()
            .map_or(Duration::ZERO, |s| s.started.elapsed());
        self.events.send(None, EventKind::ShutdownComplete { took });
        match (self.failure, self.startup_done) {
            (Some(error), _) => Outcome::Failed(error),
            (None, true) => Outcome::Stopped,
            (None, false) => Outcome::Interrupted,
        }
    }

    // ----- starting ------------------------------------------------------------------------

    fn launch_ready_nodes(&mut self) {
        self.promote_due_restarts();
        let graph = self.graph.clone();
        let mut ready = Vec::new();
        loop {
            ready.clear();
            let mut demanded_more = false;
            for &n in graph.topological_order() {
                if self.slots[n].phase != Phase::Waiting || !self.slots[n].demanded {
                    continue;
                }
                match self.dependencies_state(n) {
                    DepState::Broken(reason) => self.skip(n, reason),
                    DepState::Pending => demanded_more |= self.demand_lazy_dependencies(n),
                    DepState::Met => ready.push(n),
                }
                if self.shutdown.is_some() {
                    return;
                }
            }
            // A lazy node demanded just now may come earlier in the order: go round again.
            if !demanded_more {
                break;
            }
        }
        // When start slots are scarce, the node with the most work still behind it goes first:
        // the critical path is never queued behind leaves (list scheduling by height).
        ready.sort_by_key(|&n| std::cmp::Reverse(graph.height(n)));
        self.held_back = false;
        for n in ready {
            if !self.may_launch() {
                self.held_back = true;
                break;
            }
            self.launch(n);
        }
    }

    /// Whether one more node may enter its start phase: below `max_workers`, and with
    /// `max_workers = "auto"` below the limit the CPU pressure currently allows.
    fn may_launch(&self) -> bool {
        let limit = self
            .auto
            .as_ref()
            .map_or(self.options.max_workers, |auto| auto.limit);
        self.busy_workers < limit
    }

    /// A node that waits only on lazy nodes demands those not demanded yet. True when it
    /// demanded any.
    fn demand_lazy_dependencies(&mut self, n: usize) -> bool {
        let lazy_blockers: Vec<usize> = self
            .graph
            .dependencies(n)
            .filter(|&(d, c)| matches!(self.condition_state(d, c), DepState::Pending))
            .map(|(d, _)| d)
            .collect();
        // Demand only once everything else the node needs is there: it is about to start.
        let only_lazy = lazy_blockers.iter().all(|&d| self.config.nodes[d].lazy);
        let mut demanded = false;
        if only_lazy {
            for d in lazy_blockers {
                if !self.slots[d].demanded {
                    self.slots[d].demanded = true;
                    let reason = format!("needed by `{}`", self.config.nodes[n].name);
                    self.events.node(
                        d,
                        EventKind::Note(format!(
                            "{}: lazy, starting: {reason}",
                            self.config.nodes[d].name
                        )),
                    );
                    demanded = true;
                }
            }
        }
        demanded
    }

    /// A lazy node with sockets starts on the first connection to any of them.
    fn watch_lazy_sockets(&self) {
        for n in self.selected() {
            if !self.config.nodes[n].lazy || self.sockets.of(n).is_empty() {
                continue;
            }
            match self.sockets.first_connection(n) {
                Ok(first) => {
                    let to_scheduler = self.to_scheduler.clone();
                    tokio::spawn(async move {
                        first.await;
                        let _ = to_scheduler.send((n, RunnerMsg::Activated));
                    });
                }
                Err(e) => self
                    .events
                    .node(n, EventKind::Note(format!("cannot watch the sockets: {e}"))),
            }
        }
    }

    fn dependencies_state(&self, n: usize) -> DepState {
        let mut state = DepState::Met;
        for (dep, condition) in self.graph.dependencies(n) {
            match self.condition_state(dep, condition) {
                DepState::Met => {}
                DepState::Pending => state = DepState::Pending,
                broken @ DepState::Broken(_) => return broken,
            }
        }
        state
    }

    fn condition_state(&self, dep: usize, condition: Condition) -> DepState {
        let slot = &self.slots[dep];
        let name = &self.config.nodes[dep].name;
        if slot.stop_requested {
            // Being stopped (for a restart or by the user): not something to start against.
            return DepState::Pending;
        }
        match (&slot.phase, condition) {
            (
                Phase::Waiting
                | Phase::Starting
                | Phase::Restarting
                | Phase::Ready
                | Phase::Completed,
                Condition::Listening,
            ) => DepState::Met,
            (Phase::Ready | Phase::Completed, _) => DepState::Met,
            (Phase::Starting, Condition::Started) if slot.spawned => DepState::Met,
            (Phase::Waiting | Phase::Starting | Phase::Restarting, _) => DepState::Pending,
            (Phase::Failed, _) => DepState::Broken(format!("needs `{name}`, which failed")),
            (Phase::Skipped, _) => DepState::Broken(format!("needs `{name}`, which was skipped")),
            (Phase::Exited, _) => DepState::Broken(format!("needs `{name}`, which exited")),
            (Phase::Off | Phase::Stopped | Phase::NotStarted, _) => {
                DepState::Broken(format!("needs `{name}`, which is not running"))
            }
        }
    }

    fn launch(&mut self, n: usize) {
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let ctx = RunnerContext {
            config: self.config.clone(),
            node: n,
            parallel_health_checks: self.options.parallel_health_checks,
            http: self.http.clone(),
            events: self.events.clone(),
            to_scheduler: self.to_scheduler.clone(),
            notify: self.notify.clone(),
            sockets: self.sockets.clone(),
            run_id: self.run_id.clone(),
        };
        tracing::debug!(node = %self.config.nodes[n].name, busy = self.busy_workers, "launching");
        tokio::spawn(runner::run(ctx, control_rx));
        let slot = &mut self.slots[n];
        slot.phase = Phase::Starting;
        slot.runner = Some(control_tx);
        // A fresh runner: nothing has been asked of it yet.
        slot.stop_sent = false;
        slot.stop_requested = false;
        slot.launched = Some(Instant::now());
        slot.holds_worker = true;
        slot.timing.launched_at = Some(self.events.elapsed());
        self.busy_workers += 1;
        self.events.node(n, EventKind::Launched);
    }

    fn skip(&mut self, n: usize, reason: String) {
        self.slots[n].phase = Phase::Skipped;
        self.slots[n].last = Some(reason.clone());
        self.events.node(
            n,
            EventKind::Skipped {
                reason: reason.clone(),
            },
        );
        let node = &self.config.nodes[n];
        if node.required && !self.startup_done {
            self.abort(StartupError::Skipped {
                node: node.name.clone(),
                kind: node.kind.as_str(),
                reason,
            });
        }
    }

    fn release_worker(&mut self, n: usize) {
        if std::mem::take(&mut self.slots[n].holds_worker) {
            self.busy_workers -= 1;
        }
    }

    // ----- reports from runners --------------------------------------------------------------

    fn handle(&mut self, n: usize, msg: RunnerMsg) {
        tracing::debug!(node = %self.config.nodes[n].name, ?msg, "runner report");
        if msg.is_last() {
            self.slots[n].runner = None;
        }
        let now = self.events.elapsed();
        match msg {
            RunnerMsg::Spawned {
                pid,
                group,
                attempt,
            } => {
                let slot = &mut self.slots[n];
                slot.spawned = true;
                slot.pid = Some(pid);
                slot.group = Some(group);
                slot.timing.attempts = attempt;
                slot.timing.first_spawn_at.get_or_insert(now);
                self.groups.push(group);
                if let Some(guardian) = &mut self.guardian {
                    guardian.watch(group);
                }
                self.events.node(n, EventKind::Spawned { pid, attempt });
            }
            RunnerMsg::Ready | RunnerMsg::Completed => {
                let completed = matches!(msg, RunnerMsg::Completed);
                self.release_worker(n);
                let slot = &mut self.slots[n];
                slot.phase = if completed {
                    Phase::Completed
                } else {
                    Phase::Ready
                };
                slot.timing.ready_at = Some(now);
                slot.up_since = Some(Instant::now());
                // This launch's start time; the timing for the summary keeps the first one.
                let took = slot.launched.map_or_else(
                    || slot.timing.start_duration().unwrap_or_default(),
                    |t| t.elapsed(),
                );
                self.events.node(n, EventKind::Ready { took });
            }
            RunnerMsg::Activated => {
                let slot = &mut self.slots[n];
                if !slot.demanded {
                    slot.demanded = true;
                    let name = &self.config.nodes[n].name;
                    self.events.node(
                        n,
                        EventKind::Note(format!("{name}: first connection, starting")),
                    );
                }
            }
            RunnerMsg::Retrying {
                attempt,
                reason,
                delay,
            } => {
                self.events.node(
                    n,
                    EventKind::Retrying {
                        attempt,
                        reason,
                        delay,
                    },
                );
            }
            RunnerMsg::Health(text) => {
                let name = &self.config.nodes[n].name;
                self.events
                    .node(n, EventKind::Note(format!("{name}: {text}")));
                self.slots[n].last = Some(text);
            }
            RunnerMsg::Status(text) => {
                self.slots[n].last = Some(text.clone());
                self.events.node(n, EventKind::Status { text });
            }
            RunnerMsg::Failed { reason, tail } => {
                self.release_worker(n);
                self.slots[n].phase = Phase::Failed;
                self.slots[n].last = Some(reason.clone());
                self.events.node(
                    n,
                    EventKind::Failed {
                        reason: reason.clone(),
                    },
                );
                if self.config.nodes[n].required && !self.startup_done {
                    self.abort_with_output(n, reason, &tail);
                }
            }
            RunnerMsg::Exited {
                status,
                success,
                tail,
            } => {
                self.events.node(
                    n,
                    EventKind::Exited {
                        status: status.clone(),
                    },
                );
                self.slots[n].last = Some(format!("exited ({status})"));
                let reason = match self.restart_or_give_up(n, &status, success) {
                    Restart::Scheduled => return,
                    Restart::Not => {
                        self.slots[n].phase = Phase::Exited;
                        format!("exited after it was ready ({status})")
                    }
                    Restart::CrashLoop(reason) => {
                        self.slots[n].phase = Phase::Failed;
                        self.events.node(
                            n,
                            EventKind::Failed {
                                reason: reason.clone(),
                            },
                        );
                        reason
                    }
                };
                if self.config.nodes[n].required && !self.startup_done {
                    self.abort_with_output(n, reason, &tail);
                }
            }
            RunnerMsg::Stopped { report } => {
                self.release_worker(n);
                let shutting_down = self.shutdown.is_some();
                let slot = &mut self.slots[n];
                slot.stop_requested = false;
                slot.up_since = None;
                slot.phase = if slot.removed {
                    slot.held = false;
                    Phase::Off
                } else if std::mem::take(&mut slot.relaunch_after_stop) && !shutting_down {
                    // Stopped for a restarting dependency: start again once it is back.
                    slot.stop_sent = false;
                    Phase::Waiting
                } else {
                    Phase::Stopped
                };
                let status = report
                    .status
                    .map_or_else(|| "not running".to_owned(), process::describe_status);
                self.events.node(
                    n,
                    EventKind::Stopped {
                        status,
                        killed: report.killed,
                        took: report.took,
                    },
                );
            }
        }
    }

    /// Nothing runs and nothing is about to: the run has nothing left to supervise.
    fn nothing_left(&self) -> bool {
        self.slots.iter().all(|s| {
            s.runner.is_none()
                && !s.held
                && s.phase != Phase::Restarting
                && !(s.phase == Phase::Waiting && s.demanded)
        })
    }

    // ----- control -----------------------------------------------------------------------------

    fn status(&self) -> Vec<NodeStatus> {
        self.selected()
            .map(|n| {
                let node = &self.config.nodes[n];
                let slot = &self.slots[n];
                let alive = slot.runner.is_some();
                NodeStatus {
                    name: node.name.clone(),
                    kind: node.kind.as_str().to_owned(),
                    state: phase_name(&slot.phase).to_owned(),
                    required: node.required,
                    pid: slot.pid.filter(|_| alive),
                    uptime_ms: slot
                        .up_since
                        .filter(|_| alive && slot.phase == Phase::Ready)
                        .map(|t| t.elapsed().as_millis() as u64),
                    restarts: slot.total_restarts,
                    last: slot.last.clone(),
                }
            })
            .collect()
    }

    fn act_on_nodes(&mut self, action: NodeAction, names: &[String]) -> Result<String, String> {
        if self.shutdown.is_some() {
            return Err("dagstart is shutting down".into());
        }
        let mut targets = Vec::new();
        for name in names {
            match self.config.nodes.iter().position(|n| &n.name == name) {
                Some(n) if self.slots[n].phase != Phase::Off => targets.push(n),
                Some(_) => return Err(format!("`{name}` is not part of this run")),
                None => {
                    let known = self.selected().map(|n| self.config.nodes[n].name.as_str());
                    let hint = crate::config::did_you_mean(name, known)
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                    return Err(format!("no node is named `{name}`{hint}"));
                }
            }
        }
        match action {
            NodeAction::Stop => Ok(self.stop_nodes(&targets, false)),
            NodeAction::Restart => Ok(self.stop_nodes(&targets, true)),
            NodeAction::Start => Ok(self.start_nodes(&targets)),
        }
    }

    /// Stops `targets` and every running node that depends on them, dependents first.
    fn stop_nodes(&mut self, targets: &[usize], start_again: bool) -> String {
        let mut affected = Vec::new();
        let mut stack = targets.to_vec();
        while let Some(n) = stack.pop() {
            if affected.contains(&n) {
                continue;
            }
            affected.push(n);
            stack.extend(
                self.graph
                    .dependents(n)
                    .filter(|&d| self.slots[d].runner.is_some()),
            );
        }
        for &n in &affected {
            let slot = &mut self.slots[n];
            if slot.runner.is_some() {
                slot.stop_requested = true;
                slot.relaunch_after_stop = start_again;
                slot.held = !start_again;
            } else if start_again {
                slot.phase = Phase::Waiting;
                slot.demanded = true;
            } else {
                slot.held = true;
            }
        }
        let names: Vec<&str> = affected
            .iter()
            .map(|&n| self.config.nodes[n].name.as_str())
            .collect();
        let verb = if start_again {
            "restarting"
        } else {
            "stopping"
        };
        format!("{verb}: {}", names.join(", "))
    }

    /// Starts `targets` and whatever they need that is not running.
    fn start_nodes(&mut self, targets: &[usize]) -> String {
        let mut started = Vec::new();
        let mut stack = targets.to_vec();
        while let Some(n) = stack.pop() {
            stack.extend(self.graph.dependencies(n).map(|(d, _)| d));
            let slot = &mut self.slots[n];
            slot.held = false;
            let down = matches!(
                slot.phase,
                Phase::Stopped | Phase::Exited | Phase::Failed | Phase::Skipped | Phase::NotStarted
            );
            if down || (slot.phase == Phase::Waiting && !slot.demanded) {
                slot.phase = Phase::Waiting;
                slot.demanded = true;
                slot.restarts.clear();
                started.push(self.config.nodes[n].name.as_str());
            }
        }
        if started.is_empty() {
            "already running".to_owned()
        } else {
            format!("starting: {}", started.join(", "))
        }
    }

    // ----- reload ------------------------------------------------------------------------------

    /// Applies an edited configuration: removed nodes stop, added nodes start once their
    /// dependencies are ready, changed nodes restart with the running nodes that need them, and
    /// untouched nodes keep running with the same pid.
    fn reload(&mut self, new: Config) -> Result<String, String> {
        if self.shutdown.is_some() {
            return Err("dagstart is shutting down".into());
        }
        let old = self.config.clone();
        check_sockets_unchanged(&old, &new)?;
        let plan = ReloadPlan::new(&old, new);
        for n in old.nodes.len()..plan.merged.nodes.len() {
            self.slots
                .push(Slot::new(n, true, plan.merged.nodes[n].lazy));
        }
        let merged = Arc::new(plan.merged);
        self.graph = Arc::new(Graph::build(&merged));
        self.config = merged.clone();
        // Subscribers learn the new names before any event about the new nodes.
        self.events.send(None, EventKind::Reloaded(merged));
        for &n in &plan.removed {
            let slot = &mut self.slots[n];
            slot.removed = true;
            slot.held = false;
            if slot.runner.is_some() {
                slot.stop_requested = true;
                slot.relaunch_after_stop = false;
            } else {
                slot.phase = Phase::Off;
            }
        }
        let running: Vec<usize> = plan
            .changed
            .iter()
            .copied()
            .filter(|&n| self.slots[n].runner.is_some())
            .collect();
        let restarted = if running.is_empty() {
            String::new()
        } else {
            self.stop_nodes(&running, true)
        };
        for &n in &plan.changed {
            let slot = &mut self.slots[n];
            let down = matches!(
                slot.phase,
                Phase::Failed | Phase::Exited | Phase::Skipped | Phase::Stopped | Phase::NotStarted
            );
            if slot.runner.is_none() && down && !slot.held {
                slot.phase = Phase::Waiting;
                slot.restarts.clear();
            }
        }
        let names = |list: &[usize]| {
            list.iter()
                .map(|&n| self.config.nodes[n].name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts = Vec::new();
        for (label, list) in [
            ("added", &plan.added),
            ("removed", &plan.removed),
            ("changed", &plan.changed),
        ] {
            if !list.is_empty() {
                parts.push(format!("{label}: {}", names(list)));
            }
        }
        if !restarted.is_empty() {
            parts.push(restarted);
        }
        parts.push(format!("unchanged: {}", plan.unchanged));
        let summary = format!("reloaded ({})", parts.join("; "));
        self.events.send(None, EventKind::Note(summary.clone()));
        Ok(summary)
    }

    // ----- restarts ----------------------------------------------------------------------------

    /// Applies the restart policy to a service that ended after it was ready. A restart stops
    /// the dependents bound to it (`restart_with_dependency`) first.
    fn restart_or_give_up(&mut self, n: usize, status: &str, success: bool) -> Restart {
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
        let now = std::time::Instant::now();
        let slot = &mut self.slots[n];
        slot.restarts
            .retain(|t| now.duration_since(*t) < policy.window);
        let recent = slot.restarts.len() as u32;
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
        slot.restarts.push_back(now);
        slot.total_restarts += 1;
        slot.up_since = None;
        slot.phase = Phase::Restarting;
        slot.restart_at = Some(Instant::now() + delay);
        slot.spawned = false;
        self.events.node(
            n,
            EventKind::Restarting {
                delay,
                restart: recent + 1,
                reason: status.to_owned(),
            },
        );
        let bound: Vec<usize> = self
            .graph
            .dependents(n)
            .filter(|&d| {
                self.config.nodes[d].restart_with_dependency && self.slots[d].runner.is_some()
            })
            .collect();
        for d in bound {
            let slot = &mut self.slots[d];
            slot.relaunch_after_stop = true;
            if !slot.stop_sent {
                slot.stop_sent = true;
                if let Some(runner) = &slot.runner {
                    let _ = runner.send(NodeControl::Stop);
                }
                let reason = format!("`{}` restarts", node.name);
                self.events.node(
                    d,
                    EventKind::Note(format!(
                        "{}: stopping because {reason}",
                        self.config.nodes[d].name
                    )),
                );
            }
        }
        Restart::Scheduled
    }

    /// The earliest future restart, for the scheduler's timer.
    fn next_restart(&self) -> Option<Instant> {
        let now = Instant::now();
        self.slots
            .iter()
            .filter(|s| s.phase == Phase::Restarting)
            .filter_map(|s| s.restart_at)
            .filter(|&at| at > now)
            .min()
    }

    /// Restarting nodes whose backoff is over, and whose bound dependents have stopped, wait
    /// for their dependencies again (normally already met), so the next pass launches them.
    fn promote_due_restarts(&mut self) {
        let now = Instant::now();
        for n in 0..self.slots.len() {
            let slot = &self.slots[n];
            if slot.phase != Phase::Restarting || slot.restart_at.is_some_and(|at| at > now) {
                continue;
            }
            let bound_still_running = self
                .graph
                .dependents(n)
                .any(|d| self.slots[d].relaunch_after_stop && self.slots[d].runner.is_some());
            if !bound_still_running {
                let slot = &mut self.slots[n];
                slot.phase = Phase::Waiting;
                slot.restart_at = None;
                slot.stop_sent = false;
            }
        }
    }

    // ----- ready -------------------------------------------------------------------------------

    async fn check_startup_complete(&mut self) {
        if self.startup_done || self.shutdown.is_some() {
            return;
        }
        let all_required_ready = self.selected().all(|n| {
            !self.config.nodes[n].required
                || !self.slots[n].demanded
                || matches!(self.slots[n].phase, Phase::Ready | Phase::Completed)
        });
        if !all_required_ready {
            return;
        }
        if let Err(error) = self.verify().await {
            self.abort(error);
            return;
        }
        self.startup_done = true;
        let ready_after = self.events.elapsed();
        let timings: Vec<NodeTiming> = self
            .selected()
            .map(|n| self.slots[n].timing.clone())
            .collect();
        let summary = Summary::build(&self.config, &self.graph, &timings, ready_after);
        self.events
            .send(None, EventKind::StartupComplete(Box::new(summary)));
        self.startup_tx.send_replace(Startup::Ready);
    }

    fn selected(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.slots.len()).filter(|&n| self.slots[n].phase != Phase::Off)
    }

    /// The guide's verification phase: every required service is probed once more, in parallel,
    /// before startup is declared complete. A component's exit 0 is final and not re-checked.
    async fn verify(&self) -> Result<(), StartupError> {
        let mut checks = JoinSet::new();
        for n in self.selected() {
            let node = &self.config.nodes[n];
            // Lazy nodes nobody demanded have nothing to verify (and a probe would wake them).
            if !node.required
                || node.kind == NodeKind::Component
                || self.slots[n].phase != Phase::Ready
            {
                continue;
            }
            let group = self.slots[n].group;
            let probe = node.health.probe.clone();
            let timeout = node.health.timeout;
            let ctx = ProbeContext::for_node(&self.http, &self.config, node);
            checks.spawn(async move { (n, verify_one(&probe, timeout, group, &ctx).await) });
        }
        while let Some(joined) = checks.join_next().await {
            let Ok((n, Err(reason))) = joined else {
                continue;
            };
            let node = &self.config.nodes[n];
            return Err(StartupError::NodeFailed {
                node: node.name.clone(),
                kind: node.kind.as_str(),
                reason: format!("failed the final verification: {reason}"),
                last_output: None,
            });
        }
        Ok(())
    }

    fn startup_timed_out(&mut self) {
        let waiting: Vec<String> = self
            .selected()
            .filter(|&n| self.config.nodes[n].required)
            .filter_map(|n| {
                let node = &self.config.nodes[n];
                match self.slots[n].phase {
                    Phase::Waiting => {
                        let pending: Vec<String> = self
                            .graph
                            .dependencies(n)
                            .filter(|&(d, c)| {
                                matches!(self.condition_state(d, c), DepState::Pending)
                            })
                            .map(|(d, c)| format!("{} ({})", self.config.nodes[d].name, c.as_str()))
                            .collect();
                        Some(format!(
                            "`{}` was waiting for {}",
                            node.name,
                            pending.join(", ")
                        ))
                    }
                    Phase::Starting => Some(format!(
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

    fn abort(&mut self, error: StartupError) {
        if self.failure.is_some() || self.shutdown.is_some() {
            return;
        }
        self.events.send(
            None,
            EventKind::StartupFailed {
                reason: error.to_string(),
            },
        );
        self.failure = Some(error);
        self.startup_tx.send_replace(Startup::Failed);
        self.begin_shutdown("startup failed");
    }

    // ----- stopping ----------------------------------------------------------------------------

    fn begin_shutdown(&mut self, reason: &str) {
        if self.shutdown.is_some() {
            return;
        }
        let now = Instant::now();
        self.shutdown = Some(Shutdown {
            started: now,
            deadline: now + self.options.shutdown_timeout,
            killed: false,
        });
        if !self.startup_done && self.failure.is_none() {
            self.startup_tx.send_replace(Startup::Failed);
        }
        self.events.send(
            None,
            EventKind::ShutdownStarted {
                reason: reason.to_owned(),
            },
        );
        for slot in &mut self.slots {
            if matches!(slot.phase, Phase::Waiting | Phase::Restarting) {
                slot.phase = Phase::NotStarted;
            }
        }
    }

    /// Sends a stop to every running node none of whose dependents is still running.
    /// Sends a stop to every node asked to stop (all of them, in a shutdown) once none of its
    /// dependents is still running: dependents stop first, independent branches in parallel.
    fn advance_stops(&mut self) {
        let everything = self.shutdown.is_some();
        for n in 0..self.slots.len() {
            let slot = &self.slots[n];
            if slot.runner.is_none() || slot.stop_sent || !(everything || slot.stop_requested) {
                continue;
            }
            let dependents_running = self
                .graph
                .dependents(n)
                .any(|d| self.slots[d].runner.is_some());
            if dependents_running {
                continue;
            }
            let slot = &mut self.slots[n];
            slot.stop_sent = true;
            if let Some(runner) = &slot.runner {
                let _ = runner.send(NodeControl::Stop);
            }
            self.events.node(n, EventKind::Stopping);
        }
    }

    /// Second Ctrl-C or shutdown timeout: SIGKILL every live group, then let runners report.
    fn kill_everything(&mut self) {
        self.begin_shutdown("killed");
        if let Some(shutdown) = &mut self.shutdown {
            shutdown.killed = true;
        }
        for slot in &mut self.slots {
            if let (Some(runner), Some(group)) = (&slot.runner, slot.group) {
                let _ = group.signal(Signal::SIGKILL);
                if !slot.stop_sent {
                    slot.stop_sent = true;
                    let _ = runner.send(NodeControl::Stop);
                }
            }
        }
    }

    /// The end of every run: SIGKILL every process group it created and every process that
    /// still carries the run's marker (escapees from their group), then reap those that were
    /// re-parented to us.
    fn sweep_groups(&self) {
        for group in &self.groups {
            let _ = group.signal(Signal::SIGKILL);
        }
        if !self.run_id.is_empty() {
            let escaped = crate::guardian::kill_marked(&self.run_id);
            crate::guardian::reap(&escaped);
        }
    }
}

pub(crate) async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// One more look at a ready service: a few quick attempts of its probe, or for probes that
/// cannot be repeated (log, spawned), that its process group is still alive.
async fn verify_one(
    probe: &Probe,
    timeout: Duration,
    group: Option<ProcessGroup>,
    ctx: &ProbeContext,
) -> Result<(), String> {
    match probe {
        Probe::Log { .. }
        | Probe::Spawned
        | Probe::Exited
        | Probe::Notify
        | Probe::ReadyFd { .. } => match group {
            Some(g) if g.is_alive() => Ok(()),
            _ => Err("its process is gone".into()),
        },
        _ => {
            let mut last = String::new();
            for _ in 0..3 {
                match health::attempt(probe, timeout, ctx).await {
                    Ok(()) => return Ok(()),
                    Err(e) => last = e,
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(last)
        }
    }
}
