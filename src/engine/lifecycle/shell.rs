//! The async shell around the lifecycle core: it turns runner reports, timers, control
//! requests and signals into [`Input`]s, and carries out the [`Effect`]s the core returns.
//!
//! The loop never blocks and never waits on a probe: the verification pass runs in a task of
//! its own and answers with `Input::Verified`. Runners live in a [`JoinSet`]; a runner that
//! panics is noticed when it is joined, its process group is killed, and the core hears
//! `Report::Crashed`, so a bug in a runner fails that node instead of hanging the run.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::runner::{self, NodeControl, RunnerContext, RunnerMsg};
use super::{Core, Effect, Input, NodeAction, NodeStatus, Options, Outcome, Startup};
use super::{Report, VerifyFailure};
use crate::engine::cluster::{ClusterLink, NodeInfo, Phase};
use crate::engine::config::{Config, NodeKind, Probe};
use crate::engine::event::{EventKind, EventSink};
use crate::engine::graph::Graph;
use crate::engine::health::{self, ProbeContext};
use crate::engine::notify::NotifyHub;
use crate::engine::process::ProcessGroup;
use crate::engine::sockets::BoundSockets;

/// Requests from outside: signals, the control socket, the `--` command, watchers.
#[derive(Debug)]
pub enum Control {
    /// Stop everything gracefully, in reverse dependency order (in a cluster: the `run`
    /// process stops the whole run, an agent leaves it).
    Shutdown(String),
    /// `dagstart down`: stop the whole run, on every host of a cluster.
    StopRun(String),
    /// Kill every process group at once.
    Kill,
    /// Answer with a snapshot of every node of the run.
    Status(oneshot::Sender<Vec<NodeStatus>>),
    /// Apply an edited (already validated) services.toml without a full restart.
    Reload {
        config: Box<Config>,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// Start, stop or restart nodes; the answer says what was done, or what was wrong.
    Nodes {
        action: NodeAction,
        names: Vec<String>,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// Node `node`'s output could not be kept (told by whoever writes its log).
    OutputLost { node: usize, reason: String },
}

/// What the run set up before the scheduler starts.
#[derive(Debug, Default)]
pub struct RunSetup {
    /// The value of `DAGSTART_RUN` in every node's environment.
    pub run_id: String,
    /// Told about every new process group, to kill them if dagstart dies.
    pub guardian: Option<crate::engine::guardian::Guardian>,
    /// The notify socket, when any node uses `notify` readiness.
    pub notify: Option<NotifyHub>,
    /// The listening sockets of socket-activated services.
    pub sockets: Arc<BoundSockets>,
    /// In a cluster run: the other hosts' nodes, and where this host's states go.
    pub cluster: Option<Arc<ClusterLink>>,
}

/// `max_workers = "auto"`: the limit doubles while the CPUs have room and halves (never below
/// one per CPU) while runnable tasks wait for a CPU; it is adjusted every `AUTO_TICK`.
#[derive(Debug)]
struct AutoWorkers {
    pressure: crate::engine::pressure::CpuPressure,
    limit: usize,
}

const AUTO_TICK: Duration = Duration::from_millis(25);
/// CPU pressure above which no more nodes are let into their start phase.
const AUTO_BUSY: f64 = 0.3;

impl AutoWorkers {
    fn new() -> Self {
        let pressure = crate::engine::pressure::CpuPressure::new();
        let limit = pressure.cpus();
        Self { pressure, limit }
    }

    fn adjust(&mut self, busy: usize) -> usize {
        let cpus = self.pressure.cpus();
        if self.pressure.sample() > AUTO_BUSY {
            self.limit = (self.limit / 2).max(cpus);
        } else if busy >= self.limit {
            self.limit = (self.limit * 2).min(64 * cpus);
        }
        self.limit
    }
}

/// The live instance of a node, as the shell knows it.
struct Instance {
    id: u64,
    control: mpsc::UnboundedSender<NodeControl>,
    group: Option<ProcessGroup>,
}

/// Drives a [`Core`] with real runners, timers and requests.
pub struct Scheduler {
    core: Core,
    options: Options,
    events: EventSink,
    http: reqwest::Client,
    to_shell: mpsc::UnboundedSender<RunnerMsg>,
    from_runners: mpsc::UnboundedReceiver<RunnerMsg>,
    runners: JoinSet<()>,
    /// Which node and instance each runner task runs.
    tasks: HashMap<tokio::task::Id, (usize, u64)>,
    instances: HashMap<usize, Instance>,
    activated_tx: mpsc::UnboundedSender<usize>,
    activated_rx: mpsc::UnboundedReceiver<usize>,
    verified_tx: mpsc::UnboundedSender<Result<(), VerifyFailure>>,
    verified_rx: mpsc::UnboundedReceiver<Result<(), VerifyFailure>>,
    startup_tx: watch::Sender<Startup>,
    /// The process groups this run created that may still have members, by node, for the
    /// final sweep. A group is forgotten the moment it is empty: its number can then be handed
    /// to an unrelated process, which must never be signalled.
    groups: HashMap<usize, Vec<ProcessGroup>>,
    notify: Option<NotifyHub>,
    sockets: Arc<BoundSockets>,
    run_id: String,
    guardian: Option<crate::engine::guardian::Guardian>,
    auto: Option<AutoWorkers>,
    /// Who waits for the answer to the request being handled.
    reply: Option<oneshot::Sender<Result<String, String>>>,
    cluster: Option<Arc<ClusterLink>>,
    /// The run's phase in a cluster, until it turned to stopping.
    phase: Option<watch::Receiver<Phase>>,
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
        let (to_shell, from_runners) = mpsc::unbounded_channel();
        let (verified_tx, verified_rx) = mpsc::unbounded_channel();
        let (activated_tx, activated_rx) = mpsc::unbounded_channel();
        let (startup_tx, startup_rx) = watch::channel(Startup::Pending);
        let scheduler = Self {
            core: Core::new(config, graph, selected, options.clone()),
            auto: options.auto_workers.then(AutoWorkers::new),
            options,
            events,
            http: health::http_client(),
            to_shell,
            from_runners,
            runners: JoinSet::new(),
            tasks: HashMap::new(),
            instances: HashMap::new(),
            activated_tx,
            activated_rx,
            verified_tx,
            verified_rx,
            startup_tx,
            groups: HashMap::new(),
            notify: setup.notify,
            sockets: setup.sockets,
            run_id: setup.run_id,
            guardian: setup.guardian,
            phase: setup.cluster.as_ref().map(|c| c.phase()),
            cluster: setup.cluster,
            reply: None,
        };
        (scheduler, startup_rx)
    }

    fn now(&self) -> Duration {
        self.events.elapsed()
    }

    /// Runs until everything it started has stopped again.
    pub async fn run(mut self, mut control: mpsc::UnboundedReceiver<Control>) -> Outcome {
        self.watch_lazy_sockets();
        let effects = self.core.begin(self.now());
        self.perform(effects);
        while !self.core.finished() {
            let Some(input) = self.next_input(&mut control).await else {
                continue;
            };
            let shutdown = matches!(input, Input::Shutdown(_));
            let effects = self.core.on(input, self.now());
            self.perform(effects);
            if let Some(cluster) = self.cluster.as_ref().filter(|_| shutdown) {
                // After the states of every launch before it, in the same queue.
                cluster.acknowledge_stop();
            }
        }
        self.sweep_groups().await;
        // Closing the guardian waits for its sweep: a blocking wait, off the async threads.
        // In the run's PID namespace there is nothing for it to sweep: what is left ends with
        // the namespace.
        if let Some(guardian) = self.guardian.take() {
            let contained = crate::engine::containment::is_contained();
            let _ = tokio::task::spawn_blocking(move || {
                if contained {
                    guardian.finish_contained();
                } else {
                    drop(guardian);
                }
            })
            .await;
        }
        let took = self.core.shutdown_took();
        self.events.send(None, EventKind::ShutdownComplete { took });
        self.core.outcome()
    }

    /// Waits for the next thing that happens; `None` when it needs no input of the core.
    async fn next_input(
        &mut self,
        control: &mut mpsc::UnboundedReceiver<Control>,
    ) -> Option<Input> {
        let deadline = self.core.next_deadline().map(|d| self.events.epoch() + d);
        let auto_tick = self.auto.is_some() && self.core.held_back();
        let phase = self.phase.as_mut();
        tokio::select! {
            Some(why) = run_stops(phase) => {
                self.phase = None;
                Some(Input::Shutdown(why))
            }
            Some(msg) = self.from_runners.recv() => Some(self.on_runner_msg(msg)),
            Some(joined) = self.runners.join_next_with_id() => self.on_runner_end(joined),
            Some(request) = control.recv() => self.on_control(request),
            Some(result) = self.verified_rx.recv() => Some(Input::Verified(result)),
            Some(node) = self.activated_rx.recv() => Some(Input::Activated(node)),
            () = sleep_until_opt(deadline), if deadline.is_some() => Some(Input::Tick),
            () = tokio::time::sleep(AUTO_TICK), if auto_tick => {
                let busy = self.core.busy_workers();
                // Sampling reads /proc: tell the runtime this thread blocks for a moment.
                let auto = self.auto.as_mut();
                tokio::task::block_in_place(|| auto.map(|auto| Input::WorkerLimit(auto.adjust(busy))))
            }
        }
    }

    fn on_runner_msg(&mut self, msg: RunnerMsg) -> Input {
        let RunnerMsg {
            node,
            instance,
            report,
            group,
        } = msg;
        if let Some(group) = group {
            // An earlier attempt's group may be gone by now.
            self.forget_empty_groups(node);
            self.groups.entry(node).or_default().push(group.clone());
            if let Some(guardian) = &mut self.guardian {
                guardian.watch(&group);
            }
            if let Some(live) = self.instances.get_mut(&node).filter(|i| i.id == instance) {
                live.group = Some(group);
            }
        }
        if report.is_last() {
            if self.instances.get(&node).is_some_and(|i| i.id == instance) {
                self.instances.remove(&node);
            }
            self.forget_empty_groups(node);
        }
        Input::Report {
            node,
            instance,
            report,
        }
    }

    /// A runner task ended. Normally it reported its last word before; a panic did not.
    fn on_runner_end(
        &mut self,
        joined: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
    ) -> Option<Input> {
        let (id, error) = match joined {
            Ok((id, ())) => (id, None),
            Err(error) => (error.id(), Some(error)),
        };
        let (node, instance) = self.tasks.remove(&id)?;
        let error = error?;
        if self.instances.get(&node).is_some_and(|i| i.id == instance) {
            if let Some(group) = self.instances.remove(&node).and_then(|i| i.group) {
                let _ = group.signal(Signal::SIGKILL);
            }
        }
        let message = if error.is_panic() {
            panic_message(error.into_panic())
        } else {
            "cancelled".to_owned()
        };
        Some(Input::Report {
            node,
            instance,
            report: Report::Crashed(message),
        })
    }

    fn on_control(&mut self, request: Control) -> Option<Input> {
        match request {
            Control::Shutdown(reason) => {
                // The `run` process stops the whole run; an agent leaves it alone.
                if let Some(cluster) = self.cluster.as_ref().filter(|c| c.is_coordinator()) {
                    cluster.request_stop(&reason);
                }
                Some(Input::Shutdown(reason))
            }
            Control::StopRun(reason) => {
                if let Some(cluster) = &self.cluster {
                    cluster.request_stop(&reason);
                }
                Some(Input::Shutdown(reason))
            }
            Control::Kill => Some(Input::Kill),
            Control::OutputLost { node, reason } => Some(Input::OutputLost { node, reason }),
            Control::Status(reply) => {
                // Bring the core's clock up to date first, for uptimes.
                let effects = self.core.on(Input::Tick, self.now());
                self.perform(effects);
                let _ = reply.send(self.core.status());
                None
            }
            Control::Reload { config, reply } => {
                if self.cluster.is_some() {
                    // A reloaded file would have to be placed and agreed on by every host.
                    let _ = reply.send(Err(
                        "reload is not supported in a cluster run yet: stop the run and start it again".into(),
                    ));
                    return None;
                }
                self.reply = Some(reply);
                Some(Input::Reload(config))
            }
            Control::Nodes {
                action,
                names,
                reply,
            } => {
                if let Some(refusal) = self.elsewhere(&names) {
                    let _ = reply.send(Err(refusal));
                    return None;
                }
                self.reply = Some(reply);
                Some(Input::Nodes { action, names })
            }
        }
    }

    /// A start, stop or restart of a node that another host of the cluster runs is that
    /// host's to do: this host only mirrors it.
    fn elsewhere(&self, names: &[String]) -> Option<String> {
        let config = self.core.config();
        let (name, host) = names.iter().find_map(|name| {
            let n = config.nodes.iter().position(|node| &node.name == name)?;
            config
                .is_remote(n)
                .then(|| (name, config.host_of(n).unwrap_or_default()))
        })?;
        Some(format!(
            "`{name}` runs on host `{host}`: ask there (`dagstart --host {host} ...`)"
        ))
    }

    fn perform(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Launch { node, instance } => self.launch(node, instance),
                Effect::Stop { node, instance } => {
                    if let Some(live) = self.instances.get(&node).filter(|i| i.id == instance) {
                        match self.dependents_elsewhere(node) {
                            Some(stopped) => {
                                let control = live.control.clone();
                                tokio::spawn(async move {
                                    stopped.await;
                                    let _ = control.send(NodeControl::Stop);
                                });
                            }
                            None => {
                                let _ = live.control.send(NodeControl::Stop);
                            }
                        }
                    }
                }
                Effect::KillAll => {
                    for group in self.instances.values().filter_map(|i| i.group.as_ref()) {
                        let _ = group.signal(Signal::SIGKILL);
                    }
                }
                Effect::Verify(nodes) => self.verify(nodes),
                Effect::Publish { node, state, kind } => {
                    if let (Some(n), Some(state)) = (node, state) {
                        self.publish_to_cluster(n, state);
                    }
                    self.events.send_with_state(node, state, kind);
                }
                Effect::Startup(state) => {
                    self.startup_tx.send_replace(state);
                }
                Effect::Answer(answer) => {
                    if let Some(reply) = self.reply.take() {
                        let _ = reply.send(answer);
                    }
                }
            }
        }
    }

    /// While a cluster run stops: this host's node `n` has dependents on other hosts, and
    /// the stop must wait until none of them may still run there (as published). The core
    /// already waited for the dependents it sees live; this covers a mirror that was between
    /// instances (its node restarting, or its host just back) while the node ran on its host.
    fn dependents_elsewhere(&self, n: usize) -> Option<impl Future<Output = ()> + use<>> {
        let cluster = self.cluster.as_ref()?;
        let config = self.core.config();
        if config.is_remote(n) || *cluster.phase().borrow() != Phase::Stopping {
            return None;
        }
        let feeds: Vec<_> = self
            .core
            .graph()
            .dependent_edges(n)
            .filter(|&(d, edge)| edge.orders_stop() && config.is_remote(d))
            .map(|(d, _)| {
                (
                    config.host_of(d).unwrap_or_default().to_owned(),
                    cluster.feed(d),
                )
            })
            .collect();
        if feeds.is_empty() {
            return None;
        }
        let mut barrier = cluster.barrier();
        Some(async move {
            for (host, mut feed) in feeds {
                barrier.stopped_on(&host, &mut feed).await;
            }
        })
    }

    /// In a cluster: this host's node `n` is now in `state`, for the other hosts to see.
    fn publish_to_cluster(&self, n: usize, state: &str) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let config = self.core.config();
        if config.is_remote(n) {
            return;
        }
        let info = NodeInfo {
            host: cluster.host().to_owned(),
            state: state.to_owned(),
            instance: self.core.state(n).live().map_or(0, |live| live.instance),
            last: self.core.last(n).map(str::to_owned),
        };
        cluster.publish(&config.nodes[n].name, info);
    }

    fn launch(&mut self, node: usize, instance: u64) {
        let (control, control_rx) = mpsc::unbounded_channel();
        let task = match self.mirror_context(node, instance) {
            Some(mirror) => self.runners.spawn(super::mirror::run(mirror, control_rx)),
            None => {
                let ctx = RunnerContext {
                    config: self.core.config().clone(),
                    node,
                    instance,
                    parallel_health_checks: self.options.parallel_health_checks,
                    http: self.http.clone(),
                    events: self.events.clone(),
                    to_shell: self.to_shell.clone(),
                    notify: self.notify.clone(),
                    sockets: self.sockets.clone(),
                    run_id: self.run_id.clone(),
                };
                self.runners.spawn(runner::run(ctx, control_rx))
            }
        };
        self.tasks.insert(task.id(), (node, instance));
        self.instances.insert(
            node,
            Instance {
                id: instance,
                control,
                group: None,
            },
        );
    }

    /// What the mirror of `node` needs, when the node runs on another host of the cluster.
    fn mirror_context(&self, node: usize, instance: u64) -> Option<super::mirror::MirrorContext> {
        let cluster = self.cluster.as_ref()?;
        let config = self.core.config();
        config
            .is_remote(node)
            .then(|| super::mirror::MirrorContext {
                node,
                instance,
                host: config.host_of(node).unwrap_or_default().to_owned(),
                to_shell: self.to_shell.clone(),
                feed: cluster.feed(node),
                phase: cluster.phase(),
                barrier: cluster.barrier(),
            })
    }

    /// The guide's verification pass, off the loop: every required service is probed once
    /// more, in parallel; the first failure is the answer.
    fn verify(&self, nodes: Vec<usize>) {
        let config = self.core.config().clone();
        let http = self.http.clone();
        let groups: Vec<Option<ProcessGroup>> = nodes
            .iter()
            .map(|n| self.instances.get(n).and_then(|i| i.group.clone()))
            .collect();
        let answer = self.verified_tx.clone();
        tokio::spawn(async move {
            let mut checks = JoinSet::new();
            for (n, group) in nodes.into_iter().zip(groups) {
                let node = &config.nodes[n];
                debug_assert_eq!(node.kind, NodeKind::Service);
                let probe = node.health.probe.clone();
                let timeout = node.health.timeout;
                let ctx = ProbeContext::for_node(&http, &config, node);
                checks.spawn(async move { (n, verify_one(&probe, timeout, group, &ctx).await) });
            }
            let mut result = Ok(());
            while let Some(joined) = checks.join_next().await {
                if let Ok((node, Err(reason))) = joined {
                    result = Err(VerifyFailure { node, reason });
                    break;
                }
            }
            let _ = answer.send(result);
        });
    }

    /// A lazy node with sockets starts on the first connection to any of them.
    fn watch_lazy_sockets(&self) {
        let config = self.core.config().clone();
        for (n, node) in config.nodes.iter().enumerate() {
            let waiting = matches!(
                self.core.state(n),
                super::NodeState::Waiting { demanded: false }
            );
            if !node.lazy || !waiting || self.sockets.of(n).is_empty() {
                continue;
            }
            match self.sockets.first_connection(n) {
                Ok(first) => {
                    let activated = self.activated_tx.clone();
                    tokio::spawn(async move {
                        first.await;
                        let _ = activated.send(n);
                    });
                }
                Err(e) => self
                    .events
                    .node(n, EventKind::note(format!("cannot watch the sockets: {e}"))),
            }
        }
    }

    /// Forgets the groups of `node` that have no member left (the runner has reaped its
    /// leader, so an empty group stays empty until its number is reused).
    fn forget_empty_groups(&mut self, node: usize) {
        let Some(groups) = self.groups.get_mut(&node) else {
            return;
        };
        let guardian = &mut self.guardian;
        groups.retain(|group| {
            let alive = group.is_alive();
            if !alive {
                if let Some(guardian) = guardian.as_mut() {
                    guardian.forget(group.id());
                }
            }
            alive
        });
    }

    /// The end of every run: SIGKILL every process group it created and every process that
    /// still carries the run's marker (escapees from their group), then reap those that were
    /// re-parented to us. Reading /proc blocks, so it runs on a blocking thread.
    async fn sweep_groups(&self) {
        for group in self.groups.values().flatten() {
            let _ = group.signal(Signal::SIGKILL);
        }
        // Marked processes that left their groups: in the run's PID namespace they end with
        // it (`containment::end`), without a look through every process on the machine.
        if !self.run_id.is_empty() && !crate::engine::containment::is_contained() {
            let run_id = self.run_id.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let escaped = crate::engine::guardian::kill_marked(&run_id);
                crate::engine::guardian::reap(&escaped);
            })
            .await;
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned())
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

/// Resolves once the cluster's run turned to stopping (never without a cluster).
async fn run_stops(phase: Option<&mut watch::Receiver<Phase>>) -> Option<String> {
    let Some(phase) = phase else {
        return std::future::pending().await;
    };
    loop {
        if *phase.borrow_and_update() == Phase::Stopping {
            return Some("the run is stopping (its leader said so)".to_owned());
        }
        if phase.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}
