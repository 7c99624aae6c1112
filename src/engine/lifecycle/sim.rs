//! Deterministic simulation of the lifecycle core: random DAGs, fake processes, a fake clock,
//! and random schedules of faults and requests, with the invariants checked after every step.
//!
//! Nothing here forks or sleeps: a schedule of hundreds of steps runs in well under a
//! millisecond of real time per step, so thousands of schedules run in `cargo test`.
//! A failure names its seed; `DAGSTART_SIM_SEED=<seed> cargo test --lib sim` replays exactly
//! that schedule (`DAGSTART_SIM_TOML=1` also prints its services.toml and the final states,
//! `DAGSTART_SIM_TRACE=<n>` the last n steps instead of 40), and
//! `DAGSTART_SIM_CASES=<n>` runs more (or fewer) schedules.
//!
//! The invariants (also listed in docs/architecture.md):
//! 1. A node is launched only when every dependency meets its condition: every required one,
//!    and every optional one that is live (an optional dependency that is down is not waited
//!    for); a milestone only until the node was first ready.
//! 2. At most one live instance per node.
//! 3. A stop is sent only after every node that depends on the node, directly or through
//!    nodes without an instance (a completed component), over edges other than milestones,
//!    has ended, unless an optional edge lies on the way and that node is not being stopped
//!    itself; a kill is exempt.
//! 4. A node stopped by the user is not launched again until it is started (or restarted)
//!    by the user, or removed and added back by a reload.
//! 5. Startup completes only with every required node (that anything demanded) ready.
//! 6. The core's counters agree with its node states after every step.
//! 7. After a shutdown request the run ends within the shutdown budget plus the time the
//!    fake processes take to die, and nothing it started is still alive then.
//! 8. After a reload every node in the file is part of the run (a node added back starts
//!    again) and every node gone from it is removed or being stopped.
//! 9. The run ends by itself only when nothing runs, no node stopped by the user waits to
//!    be started, and no lazy socket service waits for its first connection.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{Core, Effect, Input, NodeAction, NodeState, Options, Report, VerifyFailure};
use crate::engine::config::{Condition, Config, Environment};
use crate::engine::event::EventKind;
use crate::engine::graph::Graph;
use crate::synth::Rng;

const MS: Duration = Duration::from_millis(1);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

// ----- random services.toml --------------------------------------------------------------------

/// A `depends_on` entry: the name, the condition and the kinds (explicit `restart` or the
/// node's `restart_with_dependency`).
#[derive(Debug, Clone)]
struct Dep {
    name: String,
    condition: &'static str,
    /// Written, or the node's own `required` (the world reads the resolved edge).
    required: Option<bool>,
    restart: Option<bool>,
    milestone: bool,
}

impl Dep {
    fn random(rng: &mut Rng, on: &Spec) -> Self {
        let milestone = rng.below(6) == 0;
        Self {
            name: on.name.clone(),
            condition: condition_on(rng, on),
            required: match rng.below(6) {
                0 => Some(false),
                1 => Some(true),
                _ => None,
            },
            restart: match rng.below(6) {
                0 if !milestone => Some(true),
                1 => Some(false),
                _ => None,
            },
            milestone,
        }
    }

    fn toml(&self) -> String {
        let mut kinds = vec![format!("condition = \"{}\"", self.condition)];
        if let Some(required) = self.required {
            kinds.push(format!("required = {required}"));
        }
        if let Some(restart) = self.restart {
            kinds.push(format!("restart = {restart}"));
        }
        if self.milestone {
            kinds.push("milestone = true".into());
        }
        if kinds.len() == 1 {
            format!("{} = \"{}\"", self.name, self.condition)
        } else {
            format!("{} = {{ {} }}", self.name, kinds.join(", "))
        }
    }
}

#[derive(Debug, Clone)]
struct Spec {
    name: String,
    component: bool,
    required: bool,
    lazy: bool,
    port: Option<u16>,
    restart: &'static str,
    max_restarts: u32,
    bound: bool,
    deps: Vec<Dep>,
    generation: u32,
    /// Placed on host `h2` of a cluster run.
    remote: bool,
}

/// The nodes of a simulated services.toml, in an order where every node depends only on
/// nodes before it (so every mutation stays acyclic).
#[derive(Debug, Clone)]
struct Specs {
    nodes: Vec<Spec>,
    removed: Vec<Spec>,
    next_id: usize,
    next_port: u16,
    /// A cluster run seen from host `main`: the nodes with `remote` are mirrored (placed on
    /// `h2`), so they take no start slot and are not verified here.
    cluster: bool,
}

impl Specs {
    fn random(rng: &mut Rng, count: usize) -> Self {
        let mut specs = Self {
            nodes: Vec::new(),
            removed: Vec::new(),
            next_id: 0,
            next_port: 20000,
            cluster: rng.below(4) == 0,
        };
        for _ in 0..count {
            let spec = specs.new_spec(rng);
            specs.nodes.push(spec);
        }
        specs
    }

    fn new_spec(&mut self, rng: &mut Rng) -> Spec {
        let name = format!("n{}", self.next_id);
        self.next_id += 1;
        let component = rng.below(5) == 0;
        let lazy = rng.below(10) == 0;
        // Lazy services are socket-activated half the time (the "first connection" path).
        let port = (!component && rng.below(if lazy { 2 } else { 8 }) == 0).then(|| {
            self.next_port += 1;
            self.next_port
        });
        let mut deps = Vec::new();
        if !self.nodes.is_empty() {
            for _ in 0..rng.below(4) {
                let d = &self.nodes[self.nodes.len() - 1 - rng.below(self.nodes.len().min(8))];
                if deps.iter().any(|dep: &Dep| dep.name == d.name) {
                    continue;
                }
                deps.push(Dep::random(rng, d));
            }
        }
        // Sockets do not cross hosts (a mirrored node has none); laziness does.
        let remote = self.cluster && port.is_none() && rng.below(3) == 0;
        Spec {
            name,
            component,
            required: rng.below(5) != 0,
            lazy,
            port,
            remote,
            restart: ["no", "on-failure", "always"][rng.below(3)],
            max_restarts: rng.below(4) as u32,
            bound: !component && rng.below(4) == 0,
            deps,
            generation: 0,
        }
    }

    fn toml(&self) -> String {
        let mut out = String::new();
        if self.cluster {
            out += "[cluster]\netcd = [\"http://127.0.0.1:2379\"]\n[hosts.h2]\n";
        }
        for spec in &self.nodes {
            let table = if spec.component {
                "components"
            } else {
                "services"
            };
            out += &format!("[{table}.{}]\ncommand = \"true\"\n", spec.name);
            out += &format!("required = {}\nlazy = {}\n", spec.required, spec.lazy);
            if spec.remote {
                out += "host = \"h2\"\n";
            }
            out += &format!("env = {{ GENERATION = \"{}\" }}\n", spec.generation);
            if let Some(port) = spec.port {
                out += &format!("sockets = [{port}]\n");
            }
            if !spec.component {
                out += &format!(
                    "restart = \"{}\"\nmax_restarts = {}\nrestart_backoff = \"20ms\"\nrestart_window = \"5s\"\nrestart_with_dependency = {}\n",
                    spec.restart, spec.max_restarts, spec.bound
                );
            }
            if !spec.deps.is_empty() {
                let deps: Vec<String> = spec.deps.iter().map(Dep::toml).collect();
                out += &format!("depends_on = {{ {} }}\n", deps.join(", "));
            }
            out.push('\n');
        }
        out
    }

    /// One edit a user might make: add, remove, change, or add back a removed node.
    fn mutate(&mut self, rng: &mut Rng) {
        match rng.below(4) {
            0 => {
                let spec = self.new_spec(rng);
                self.nodes.push(spec);
            }
            1 if self.nodes.len() > 1 => {
                let gone = self.nodes.remove(rng.below(self.nodes.len()));
                for spec in &mut self.nodes {
                    spec.deps.retain(|d| d.name != gone.name);
                }
                self.removed.push(gone);
            }
            2 if !self.nodes.is_empty() => {
                let i = rng.below(self.nodes.len());
                self.nodes[i].generation += 1;
            }
            _ if !self.removed.is_empty() => {
                let mut back = self.removed.remove(rng.below(self.removed.len()));
                back.deps
                    .retain(|d| self.nodes.iter().any(|s| s.name == d.name));
                self.nodes.push(back);
            }
            _ => {}
        }
    }

    fn load(&self) -> Config {
        let text = self.toml();
        let mut config = crate::engine::config::load_str(
            Path::new("/simulated/services.toml"),
            text.clone(),
            &Environment::from_pairs::<&str, &str>([]),
        )
        .unwrap_or_else(|e| panic!("the generator wrote an invalid file: {e:?}\n{text}"));
        if self.cluster {
            crate::engine::cluster::localize(&mut config, "main", "main");
        }
        config
    }
}

fn condition_on(rng: &mut Rng, dep: &Spec) -> &'static str {
    match (dep.component, dep.port.is_some(), rng.below(3)) {
        (true, _, 0) => "completed",
        (true, _, 1) => "started",
        (false, true, 0) => "listening",
        (_, _, 2) => "started",
        _ => "healthy",
    }
}

// ----- fake processes ----------------------------------------------------------------------------

/// Something that will happen at a simulated time.
#[derive(Debug)]
enum Pending {
    Report {
        node: usize,
        instance: u64,
        report: Report,
    },
    Verified(Result<(), VerifyFailure>),
    Activated(usize),
}

/// The live instance of a node as the fake world sees it (what the core has been told).
#[derive(Debug)]
struct Fake {
    instance: u64,
    spawned: bool,
    ready: bool,
    stopping: bool,
    /// Its scheduled happenings, to cancel when it is stopped or killed.
    plans: Vec<u64>,
}

struct World {
    seed: u64,
    rng: Rng,
    core: Core,
    specs: Specs,
    /// The file as it was before a reload, to go back to if the reload is refused.
    specs_before_reload: Option<Specs>,
    now: Duration,
    agenda: BinaryHeap<Reverse<(Duration, u64)>>,
    pending: HashMap<u64, Pending>,
    next_seq: u64,
    live: HashMap<usize, Fake>,
    completed: HashSet<usize>,
    /// Nodes that have been ready or completed at least once (their milestones are reached).
    ever_up: HashSet<usize>,
    /// Live nodes the core was stopping before the current step: a node over an optional edge
    /// must have ended before what it depends on is stopped only if it was being stopped then
    /// (one that starts to be stopped later in the same step may see its dependency go first).
    stopping_before_step: HashSet<usize>,
    /// Nodes the user stopped: they must stay down (invariant 4). The value says whether
    /// the node was stopped along with one it needs (`start` of that one brings it back)
    /// rather than by name.
    held: HashMap<String, bool>,
    killed: bool,
    shutdown_at: Option<Duration>,
    steps: usize,
    trace: Vec<String>,
}

impl World {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let count = if rng.below(10) == 0 {
            60 + rng.below(240)
        } else {
            1 + rng.below(30)
        };
        let specs = Specs::random(&mut rng, count);
        let config = Arc::new(specs.load());
        let graph = Arc::new(Graph::build(&config));
        let selected = vec![true; config.nodes.len()];
        let options = Options {
            max_workers: [usize::MAX, usize::MAX, 1, 2, 4][rng.below(5)],
            auto_workers: false,
            sequential: false,
            parallel_health_checks: true,
            startup_timeout: Duration::from_secs(30),
            shutdown_timeout: SHUTDOWN_TIMEOUT,
            verify_older_than: Duration::ZERO,
            profiles: Vec::new(),
        };
        Self {
            seed,
            rng,
            core: Core::new(config, graph, &selected, options),
            specs,
            specs_before_reload: None,
            now: Duration::ZERO,
            agenda: BinaryHeap::new(),
            pending: HashMap::new(),
            next_seq: 0,
            live: HashMap::new(),
            completed: HashSet::new(),
            ever_up: HashSet::new(),
            stopping_before_step: HashSet::new(),
            held: HashMap::new(),
            killed: false,
            shutdown_at: None,
            steps: 0,
            trace: Vec::new(),
        }
    }

    fn fail(&self, what: &str) -> ! {
        if std::env::var_os("DAGSTART_SIM_TOML").is_some() {
            eprintln!("services.toml of the run:\n{}", self.specs.toml());
            for (n, node) in self.core.config().nodes.iter().enumerate() {
                eprintln!("{}: {:?}", node.name, self.core.state(n));
            }
        }
        let shown = env_number("DAGSTART_SIM_TRACE").map_or(40, |n| n as usize);
        let tail: Vec<&String> = self.trace.iter().rev().take(shown).collect();
        let tail: Vec<String> = tail.into_iter().rev().cloned().collect();
        panic!(
            "simulation seed {} failed at step {} ({:?}): {what}\nreplay: DAGSTART_SIM_SEED={} cargo test --lib sim\nlast steps:\n  {}",
            self.seed,
            self.steps,
            self.now,
            self.seed,
            tail.join("\n  ")
        );
    }

    fn schedule(&mut self, after: Duration, what: Pending) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.agenda.push(Reverse((self.now + after, seq)));
        self.pending.insert(seq, what);
        seq
    }

    fn ms(&mut self, range: usize) -> Duration {
        MS * self.rng.below(range.max(1)) as u32
    }

    fn report_later(&mut self, after: Duration, node: usize, instance: u64, report: Report) {
        let seq = self.schedule(
            after,
            Pending::Report {
                node,
                instance,
                report,
            },
        );
        if let Some(fake) = self.live.get_mut(&node) {
            fake.plans.push(seq);
        }
    }

    fn cancel_plans(&mut self, node: usize) {
        if let Some(fake) = self.live.get_mut(&node) {
            for seq in fake.plans.drain(..) {
                self.pending.remove(&seq);
            }
        }
    }

    // ----- stepping ------------------------------------------------------------------------

    fn step(&mut self, input: Input) {
        self.steps += 1;
        let shown = match &input {
            Input::Reload(config) => {
                let names: Vec<&str> = config.nodes.iter().map(|n| n.name.as_str()).collect();
                format!("Reload [{}]", names.join(" "))
            }
            other => format!("{other:?}"),
        };
        self.trace.push(format!("{:?} {shown}", self.now));
        let request = match &input {
            Input::Nodes { action, names } => Some((*action, names.clone())),
            _ => None,
        };
        let reload = matches!(input, Input::Reload(_));
        self.stopping_before_step = self
            .live
            .keys()
            .copied()
            .filter(|&n| matches!(self.core.state(n), NodeState::Stopping { .. }))
            .collect();
        let effects = self.core.on(input, self.now);
        self.apply(effects, request, reload);
        self.core.assert_consistent();
    }

    fn apply(
        &mut self,
        effects: Vec<Effect>,
        request: Option<(NodeAction, Vec<String>)>,
        reload: bool,
    ) {
        let reloaded = reload && effects.iter().any(|e| matches!(e, Effect::Answer(Ok(_))));
        if reloaded {
            // A node added back by a reload is a new node: whatever the user did to the old
            // one no longer applies.
            let present: HashSet<String> =
                self.specs.nodes.iter().map(|s| s.name.clone()).collect();
            self.held.retain(|n, _| present.contains(n));
        }
        for effect in effects {
            let shown = match &effect {
                Effect::Publish {
                    kind: EventKind::Reloaded(_),
                    ..
                } => "Publish Reloaded".to_owned(),
                other => format!("{other:?}"),
            };
            self.trace
                .push(format!("    -> {shown}").chars().take(300).collect());
            match effect {
                Effect::Launch { node, instance } => self.launch(node, instance),
                Effect::Stop { node, instance } => self.stop(node, instance),
                Effect::KillAll => self.kill_all(),
                Effect::Verify(nodes) => {
                    let result = if self.rng.below(30) == 0 {
                        Err(VerifyFailure {
                            node: nodes[0],
                            reason: "simulated: connection refused".into(),
                        })
                    } else {
                        Ok(())
                    };
                    let after = self.ms(10);
                    self.schedule(after, Pending::Verified(result));
                }
                Effect::Publish { kind, .. } => self.check_event(&kind),
                Effect::Startup(_) => {}
                Effect::Answer(Ok(_)) => {
                    if let Some((action, names)) = &request {
                        self.user_request_done(*action, names);
                    }
                }
                Effect::Answer(Err(_)) => {
                    if let (true, Some(before)) = (reload, self.specs_before_reload.take()) {
                        self.specs = before;
                    }
                }
            }
        }
        if reloaded {
            let present: HashSet<&str> = self.specs.nodes.iter().map(|s| s.name.as_str()).collect();
            self.check_reloaded(&present);
        }
    }

    /// Invariant 8: after a reload, every node in the file is part of the run again, and
    /// every node gone from it is removed or on its way out.
    fn check_reloaded(&self, present: &HashSet<&str>) {
        for (n, node) in self.core.config().nodes.iter().enumerate() {
            let state = self.core.state(n);
            let removed = matches!(
                state,
                NodeState::Removed
                    | NodeState::Stopping {
                        then: super::AfterStop::Remove | super::AfterStop::Shutdown,
                        ..
                    }
            );
            if present.contains(node.name.as_str()) == removed && !self.core.shutting_down() {
                self.fail(&format!(
                    "invariant 8: after the reload `{}` is {state:?}",
                    node.name
                ));
            }
        }
    }

    fn user_request_done(&mut self, action: NodeAction, names: &[String]) {
        let graph = self.core.graph().clone();
        let config = self.core.config().clone();
        let index = |name: &String| config.nodes.iter().position(|n| &n.name == name).unwrap();
        let targets: Vec<usize> = names.iter().map(index).collect();
        match action {
            NodeAction::Stop => {
                for &n in &targets {
                    self.held.insert(config.nodes[n].name.clone(), false);
                }
                let mut stack = targets;
                let mut seen = HashSet::new();
                while let Some(n) = stack.pop() {
                    if seen.insert(n) {
                        self.held
                            .entry(config.nodes[n].name.clone())
                            .or_insert(true);
                        stack.extend(graph.bound_dependents(n));
                    }
                }
            }
            NodeAction::Start => {
                let by_name = |held: &HashMap<String, bool>, n: usize| {
                    held.get(&config.nodes[n].name) == Some(&false)
                };
                // Whether `n` requires, directly or not, a node stopped by name.
                let needs_held = |held: &HashMap<String, bool>, n: usize| {
                    let mut seen = HashSet::new();
                    let mut stack = vec![n];
                    while let Some(x) = stack.pop() {
                        for (d, e) in graph.dependencies(x) {
                            if e.required && seen.insert(d) {
                                if by_name(held, d) {
                                    return true;
                                }
                                stack.push(d);
                            }
                        }
                    }
                    false
                };
                let mut stack = targets;
                let mut seen = HashSet::new();
                while let Some(n) = stack.pop() {
                    if seen.insert(n) {
                        self.held.remove(&config.nodes[n].name);
                        stack.extend(
                            graph
                                .dependencies(n)
                                .filter(|(_, e)| e.required)
                                .map(|(d, _)| d),
                        );
                        stack.extend(graph.bound_dependents(n).filter(|&d| {
                            self.held.get(&config.nodes[d].name) == Some(&true)
                                && !needs_held(&self.held, d)
                        }));
                    }
                }
            }
            NodeAction::Restart => {
                for n in targets {
                    self.held.remove(&config.nodes[n].name);
                }
            }
        }
    }

    fn launch(&mut self, node: usize, instance: u64) {
        let config = self.core.config().clone();
        let name = &config.nodes[node].name;
        if self.live.contains_key(&node) {
            self.fail(&format!(
                "invariant 2: `{name}` launched while an instance is live"
            ));
        }
        if self.held.contains_key(name) {
            self.fail(&format!(
                "invariant 4: `{name}` launched after the user stopped it"
            ));
        }
        for (dep, edge) in self.core.graph().dependencies(node) {
            let waived = (edge.milestone && self.ever_up.contains(&node))
                || (!edge.required && !self.live.contains_key(&dep));
            if !waived && !self.condition_holds(dep, edge.condition) {
                self.fail(&format!(
                    "invariant 1: `{name}` launched before `{}` was {} ({:?})",
                    config.nodes[dep].name,
                    edge.condition.as_str(),
                    edge.marks()
                ));
            }
        }
        self.completed.remove(&node);
        self.live.insert(
            node,
            Fake {
                instance,
                spawned: false,
                ready: false,
                stopping: false,
                plans: Vec::new(),
            },
        );
        self.plan_fate(
            node,
            instance,
            config.nodes[node].kind == crate::engine::config::NodeKind::Component,
        );
    }

    fn condition_holds(&self, dep: usize, condition: Condition) -> bool {
        let live = self.live.get(&dep);
        let ready = live.is_some_and(|f| f.ready) || self.completed.contains(&dep);
        match condition {
            Condition::Listening => true,
            Condition::Started => live.is_some_and(|f| f.spawned) || ready,
            Condition::Healthy => ready,
            Condition::Completed => self.completed.contains(&dep),
        }
    }

    /// What this instance will do, drawn at launch: spawn, then become ready, complete, fail,
    /// hang, crash later, or take its runner down with it.
    fn plan_fate(&mut self, node: usize, instance: u64, component: bool) {
        let pid = 1000 + instance as u32;
        if self.rng.below(30) == 0 {
            let after = self.ms(3);
            return self.report_later(after, node, instance, failed("simulated: cannot start"));
        }
        let spawn = self.ms(3);
        self.report_later(spawn, node, instance, Report::Spawned { pid, attempt: 1 });
        let start = spawn + self.ms(40) + MS;
        let fate = self.rng.below(100);
        let last = match fate {
            0..=1 => Report::Crashed("simulated runner panic".into()),
            2..=13 => Report::Failed {
                reason: "simulated: exited before it was ready".into(),
                tail: vec!["a line".into()],
            },
            14..=17 => {
                // Hangs until its start timeout, then fails.
                let after = spawn + Duration::from_secs(2);
                let hung = failed("simulated: not ready within 2s");
                return self.report_later(after, node, instance, hung);
            }
            _ if component => Report::Completed,
            _ => Report::Ready,
        };
        if fate >= 18 && self.rng.below(5) == 0 {
            let reason = "simulated: probe refused".to_owned();
            let delay = 5 * MS;
            self.report_later(
                start / 2,
                node,
                instance,
                Report::Retrying {
                    attempt: 1,
                    reason,
                    delay,
                },
            );
        }
        if !component && self.rng.below(3) == 0 {
            // Why it is not ready yet, told while starting.
            let result = Report::Probe("simulated: answered 503".into());
            self.report_later(start / 3 + MS, node, instance, result);
        }
        let ready = last == Report::Ready;
        self.report_later(start, node, instance, last);
        if ready {
            if self.rng.below(4) == 0 {
                let text = "simulated: all good".to_owned();
                self.report_later(start + MS, node, instance, Report::Status(text));
            }
            if self.rng.below(4) == 0 {
                let success = self.rng.below(2) == 0;
                let status = if success {
                    "exit status 0"
                } else {
                    "exit status 1"
                };
                let after = start + self.ms(500) + MS;
                let exited = Report::Exited {
                    status: status.into(),
                    success,
                    tail: vec![],
                };
                self.report_later(after, node, instance, exited);
            }
        }
    }

    fn stop(&mut self, node: usize, instance: u64) {
        if !self.killed {
            self.check_stop_order(node);
        }
        let Some(fake) = self.live.get(&node) else {
            return;
        };
        if fake.instance != instance || fake.stopping {
            return;
        }
        // A report already on its way (its time is within 1 ms) still arrives first.
        let in_flight = self.rng.below(3) == 0;
        let now = self.now;
        let keep: Option<u64> = in_flight
            .then(|| {
                fake.plans.iter().copied().find(|seq| {
                    self.agenda
                        .iter()
                        .any(|Reverse((at, s))| s == seq && *at <= now + MS)
                })
            })
            .flatten();
        self.live
            .get_mut(&node)
            .unwrap()
            .plans
            .retain(|&s| Some(s) != keep);
        self.cancel_plans(node);
        if let Some(seq) = keep {
            self.live.get_mut(&node).unwrap().plans.push(seq);
        }
        self.live.get_mut(&node).unwrap().stopping = true;
        let (after, killed) = if self.rng.below(10) == 0 {
            (Duration::from_millis(500), true)
        } else {
            (self.ms(30), false)
        };
        let stopped = Report::Stopped {
            status: "signal 15".into(),
            killed,
            took: after,
        };
        self.report_later(after + 2 * MS, node, instance, stopped);
    }

    fn kill_all(&mut self) {
        self.killed = true;
        let nodes: Vec<usize> = self.live.keys().copied().collect();
        for node in nodes {
            self.cancel_plans(node);
            let fake = self.live.get_mut(&node).unwrap();
            fake.stopping = true;
            let instance = fake.instance;
            let report = if fake.ready {
                Report::Exited {
                    status: "signal 9".into(),
                    success: false,
                    tail: vec![],
                }
            } else {
                failed("simulated: killed")
            };
            self.report_later(MS, node, instance, report);
        }
    }

    /// Invariant 3: nothing that depends on `node` (through nodes without an instance) is live.
    fn check_stop_order(&self, node: usize) {
        let graph = self.core.graph();
        // Keyed by whether the way there binds: a node reached both ways is looked past twice.
        let mut seen = HashSet::from([(node, true)]);
        let mut stack = vec![(node, true)];
        while let Some((x, bound)) = stack.pop() {
            for (d, edge) in graph.dependent_edges(x) {
                if !edge.orders_stop() {
                    continue;
                }
                let bound = bound && edge.binds();
                if self.live.contains_key(&d) {
                    if bound || self.stopping_before_step.contains(&d) {
                        let names = &self.core.config().nodes;
                        self.fail(&format!(
                            "invariant 3: `{}` told to stop while `{}`, which depends on it{}, is live ({})",
                            names[node].name,
                            names[d].name,
                            if bound { "" } else { " over an optional edge, and was being stopped" },
                            self.core.state(d).name()
                        ));
                    }
                } else if seen.insert((d, bound)) {
                    stack.push((d, bound));
                }
            }
        }
    }

    /// Invariant 5, judged by what the fake processes told the core (the core's own states
    /// may have moved on within the same step, e.g. to a shutdown).
    fn check_event(&self, kind: &EventKind) {
        if let EventKind::ShutdownStarted { reason } = kind {
            if reason.starts_with("nothing") {
                self.check_nothing_left();
            }
        }
        if let EventKind::StartupComplete(_) = kind {
            let config = self.core.config();
            for (n, node) in config.nodes.iter().enumerate() {
                let up = self.live.get(&n).is_some_and(|f| f.ready) || self.completed.contains(&n);
                let not_asked = matches!(
                    self.core.state(n),
                    NodeState::Off | NodeState::Removed | NodeState::Held
                ) || (node.lazy && !self.live.contains_key(&n));
                if node.required && !up && !not_asked {
                    self.fail(&format!(
                        "invariant 5: startup complete while required `{}` is not ready ({})",
                        node.name,
                        self.core.state(n).name()
                    ));
                }
            }
        }
    }

    /// Invariant 9: the run ends by itself only when nothing runs, nothing the user stopped
    /// waits to be started, and no lazy socket service waits for its first connection.
    fn check_nothing_left(&self) {
        let config = self.core.config();
        if let Some(name) = self.held.keys().next() {
            self.fail(&format!(
                "invariant 9: ended by itself while `{name}` is held"
            ));
        }
        for (n, node) in config.nodes.iter().enumerate() {
            let waiting_lazy = node.lazy
                && !node.sockets.is_empty()
                && !self.live.contains_key(&n)
                && !self.completed.contains(&n)
                && matches!(self.core.state(n), NodeState::NotStarted);
            if self.live.contains_key(&n) || waiting_lazy {
                self.fail(&format!(
                    "invariant 9: ended by itself while `{}` is still wanted",
                    node.name
                ));
            }
        }
    }

    fn deliver(&mut self, what: Pending) {
        let input = match what {
            Pending::Report {
                node,
                instance,
                report,
            } => {
                let Some(fake) = self.live.get_mut(&node).filter(|f| f.instance == instance) else {
                    return;
                };
                match &report {
                    Report::Spawned { .. } => fake.spawned = true,
                    Report::Ready => fake.ready = true,
                    _ => {}
                }
                if matches!(report, Report::Ready | Report::Completed) {
                    self.ever_up.insert(node);
                }
                if report == Report::Completed {
                    // Exit 0 is final success, even while a stop was on its way: the component
                    // is done, not held, so what was stopped along with it may come back.
                    let name = self.core.config().nodes[node].name.clone();
                    self.held.remove(&name);
                }
                if report.is_last() {
                    self.live.remove(&node);
                    if report == Report::Completed {
                        self.completed.insert(node);
                    }
                }
                Input::Report {
                    node,
                    instance,
                    report,
                }
            }
            Pending::Verified(result) => Input::Verified(result),
            Pending::Activated(node) => Input::Activated(node),
        };
        self.step(input);
    }

    // ----- the user --------------------------------------------------------------------------

    fn random_request(&mut self) {
        let names: Vec<String> = self.specs.nodes.iter().map(|s| s.name.clone()).collect();
        let pick = |rng: &mut Rng| names[rng.below(names.len())].clone();
        let input = match self.rng.below(20) {
            0..=3 => Input::Nodes {
                action: NodeAction::Stop,
                names: vec![pick(&mut self.rng)],
            },
            4..=7 => Input::Nodes {
                action: NodeAction::Start,
                names: vec![pick(&mut self.rng)],
            },
            8..=10 => Input::Nodes {
                action: NodeAction::Restart,
                names: vec![pick(&mut self.rng), pick(&mut self.rng)],
            },
            11 => Input::Nodes {
                action: NodeAction::Stop,
                names: vec!["no-such-node".into()],
            },
            // A cluster run refuses reloads (the shell answers before the core hears of it).
            12..=14 if !self.specs.cluster => {
                self.specs_before_reload = Some(self.specs.clone());
                self.specs.mutate(&mut self.rng);
                Input::Reload(Box::new(self.specs.load()))
            }
            15 => {
                let lazy: Vec<usize> = (0..self.core.config().nodes.len())
                    .filter(|&n| {
                        let node = &self.core.config().nodes[n];
                        node.lazy && !node.sockets.is_empty()
                    })
                    .collect();
                if lazy.is_empty() {
                    return;
                }
                let n = lazy[self.rng.below(lazy.len())];
                let after = self.ms(5);
                self.schedule(after, Pending::Activated(n));
                return;
            }
            16 => Input::WorkerLimit(1 + self.rng.below(4)),
            // A report from an instance that ended long ago must change nothing.
            18 if self.next_seq % 2 == 0 => {
                let node = self.rng.below(self.core.config().nodes.len());
                let instance = self
                    .core
                    .state(node)
                    .live()
                    .map_or(0, |l| l.instance.saturating_sub(1));
                Input::Report {
                    node,
                    instance,
                    report: Report::Ready,
                }
            }
            17 => Input::Shutdown("simulated SIGTERM".into()),
            _ => Input::Tick,
        };
        if matches!(input, Input::Shutdown(_)) {
            self.shutdown_at.get_or_insert(self.now);
        }
        self.step(input);
    }

    /// The time of the next thing: a fake happening, a core deadline, or the user.
    fn advance(&mut self, user_at: Option<Duration>) -> Option<Duration> {
        let agenda = self.agenda.peek().map(|Reverse((at, _))| *at);
        [agenda, self.core.next_deadline(), user_at]
            .into_iter()
            .flatten()
            .min()
    }

    fn run(mut self) {
        let requests = self.rng.below(80);
        let effects = self.core.begin(self.now);
        self.apply(effects, None, false);
        self.core.assert_consistent();
        let mut requests_left = requests;
        let mut user_at = Some(self.ms(50));
        loop {
            if self.core.finished() {
                break;
            }
            let Some(next) = self.advance(user_at) else {
                if self.shutdown_at.is_none() {
                    self.shutdown_at = Some(self.now);
                    self.step(Input::Shutdown("simulated Ctrl-C".into()));
                    continue;
                }
                self.fail("the run waits for nothing but never ends");
            };
            self.now = self.now.max(next);
            if let Some(since) = self.shutdown_at {
                if self.now > since + SHUTDOWN_TIMEOUT + Duration::from_secs(5) {
                    self.fail("invariant 7: the run did not end after a shutdown request");
                }
            }
            if self.steps > 200_000 {
                self.fail("too many steps");
            }
            if user_at == Some(next) {
                if requests_left == 0 {
                    user_at = None;
                    self.shutdown_at.get_or_insert(self.now);
                    self.step(Input::Shutdown("simulated Ctrl-C".into()));
                } else {
                    requests_left -= 1;
                    self.random_request();
                    let gap = self.ms(200);
                    user_at = Some(self.now + gap + MS);
                    // Sometimes a second Ctrl-C follows the first.
                    if self.shutdown_at.is_some() && !self.killed && self.rng.below(8) == 0 {
                        self.step(Input::Kill);
                    }
                }
                continue;
            }
            if let Some(&Reverse((at, seq))) = self.agenda.peek() {
                if at <= self.now {
                    self.agenda.pop();
                    if let Some(what) = self.pending.remove(&seq) {
                        self.deliver(what);
                    }
                    continue;
                }
            }
            self.step(Input::Tick);
        }
        if let Some((&node, _)) = self.live.iter().next() {
            let name = self.core.config().nodes[node].name.clone();
            self.fail(&format!(
                "invariant 7: the run ended with `{name}` still live"
            ));
        }
        if self.shutdown_at.is_none() {
            // Only "nothing is left running" may end a run on its own.
            self.trace.push("ended by itself".into());
        }
    }
}

fn failed(reason: &str) -> Report {
    Report::Failed {
        reason: reason.into(),
        tail: vec![],
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

#[test]
fn random_schedules_keep_every_invariant() {
    if let Some(seed) = env_number("DAGSTART_SIM_SEED") {
        return World::new(seed).run();
    }
    let cases = env_number("DAGSTART_SIM_CASES").unwrap_or(1500);
    for case in 0..cases {
        World::new(0x5EED_0000 + case).run();
    }
}
