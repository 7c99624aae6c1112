//! The defects the engine-core issue listed, each pinned by a deterministic test of the core:
//! a services.toml, a fake clock, and reports fed by hand.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{AfterStop, Core, Effect, Input, NodeAction, NodeState, Options, Outcome, Report};
use crate::engine::config::Environment;
use crate::engine::event::EventKind;
use crate::engine::graph::Graph;

const MS: Duration = Duration::from_millis(1);

fn load(text: &str) -> crate::engine::config::Config {
    crate::engine::config::load_str(
        Path::new("/test/services.toml"),
        text.to_owned(),
        &Environment::from_pairs::<&str, &str>([]),
    )
    .expect("valid services.toml")
}

/// The options of the tests: a minute to start, ten seconds to stop, no verification delay.
fn options(max_workers: usize) -> Options {
    Options {
        max_workers,
        auto_workers: false,
        sequential: false,
        parallel_health_checks: true,
        startup_timeout: Duration::from_secs(60),
        shutdown_timeout: Duration::from_secs(10),
        verify_older_than: Duration::ZERO,
        profiles: Vec::new(),
    }
}

/// A core over `text` and what it last asked for.
struct Harness {
    core: Core,
    now: Duration,
    effects: Vec<Effect>,
}

impl Harness {
    fn new(text: &str) -> Self {
        Self::with_workers(text, usize::MAX)
    }

    fn with_workers(text: &str, max_workers: usize) -> Self {
        Self::placed(text, max_workers, None)
    }

    /// As host `host` of a cluster run coordinated by `main`: the other hosts' nodes are
    /// mirrored.
    fn placed(text: &str, max_workers: usize, host: Option<&str>) -> Self {
        let mut config = load(text);
        if let Some(host) = host {
            crate::engine::cluster::localize(&mut config, host, "main");
        }
        let config = Arc::new(config);
        let graph = Arc::new(Graph::build(&config));
        let selected = vec![true; config.nodes.len()];
        let mut core = Core::new(config, graph, &selected, options(max_workers));
        let effects = core.begin(Duration::ZERO);
        Self {
            core,
            now: Duration::ZERO,
            effects,
        }
    }

    fn n(&self, name: &str) -> usize {
        self.core
            .config()
            .nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    fn state(&self, name: &str) -> NodeState {
        self.core.state(self.n(name)).clone()
    }

    fn on(&mut self, input: Input) -> &[Effect] {
        self.effects = self.core.on(input, self.now);
        self.core.assert_consistent();
        &self.effects
    }

    fn at(&mut self, now: Duration) -> &[Effect] {
        self.now = now;
        self.on(Input::Tick)
    }

    fn instance(&self, name: &str) -> u64 {
        self.core
            .state(self.n(name))
            .live()
            .unwrap_or_else(|| panic!("{name} has no instance"))
            .instance
    }

    fn report(&mut self, name: &str, report: Report) -> &[Effect] {
        let (node, instance) = (self.n(name), self.instance(name));
        self.on(Input::Report {
            node,
            instance,
            report,
        })
    }

    /// Spawned and ready (or completed, for a component).
    fn up(&mut self, name: &str) -> &[Effect] {
        self.report(name, Report::Spawned { pid: 7, attempt: 1 });
        let component = self.core.config().nodes[self.n(name)].kind
            == crate::engine::config::NodeKind::Component;
        self.report(
            name,
            if component {
                Report::Completed
            } else {
                Report::Ready
            },
        )
    }

    fn verify_ok(&mut self) {
        assert!(
            self.effects.iter().any(|e| matches!(e, Effect::Verify(_))),
            "a verification pass was asked for: {:?}",
            self.effects
        );
        self.on(Input::Verified(Ok(())));
        assert!(self.published(|k| matches!(k, EventKind::StartupComplete(_))));
    }

    fn exited(&mut self, name: &str, success: bool) -> &[Effect] {
        let status = if success {
            "exit status 0"
        } else {
            "exit status 1"
        };
        self.report(
            name,
            Report::Exited {
                status: status.into(),
                success,
                tail: vec![],
            },
        )
    }

    fn stopped(&mut self, name: &str) -> &[Effect] {
        self.report(
            name,
            Report::Stopped {
                status: "signal 15".into(),
                killed: false,
                took: MS,
            },
        )
    }

    fn request(&mut self, action: NodeAction, names: &[&str]) -> Result<String, String> {
        let names = names.iter().map(|s| (*s).to_owned()).collect();
        self.on(Input::Nodes { action, names });
        self.effects
            .iter()
            .find_map(|e| match e {
                Effect::Answer(a) => Some(a.clone()),
                _ => None,
            })
            .expect("an answer")
    }

    fn launched(&self, name: &str) -> bool {
        let n = self.n(name);
        self.effects
            .iter()
            .any(|e| matches!(e, Effect::Launch { node, .. } if *node == n))
    }

    fn stop_sent(&self, name: &str) -> bool {
        let n = self.n(name);
        self.effects
            .iter()
            .any(|e| matches!(e, Effect::Stop { node, .. } if *node == n))
    }

    fn published(&self, what: impl Fn(&EventKind) -> bool) -> bool {
        self.effects
            .iter()
            .any(|e| matches!(e, Effect::Publish { kind, .. } if what(kind)))
    }
}

const ALWAYS: &str = r#"
[services.a]
command = "a"
restart = "always"
restart_backoff = "100ms"
max_restarts = 3
"#;

#[test]
fn stop_during_a_restart_backoff_keeps_the_node_down() {
    let mut h = Harness::new(ALWAYS);
    h.up("a");
    h.verify_ok();
    h.exited("a", false);
    assert!(matches!(h.state("a"), NodeState::Restarting { .. }));
    assert_eq!(
        h.request(NodeAction::Stop, &["a"]),
        Ok("stopping: a".into())
    );
    h.at(Duration::from_secs(5));
    assert!(!h.launched("a"), "started again after the backoff");
    assert_eq!(h.state("a"), NodeState::Held);
    assert!(!h.core.shutting_down(), "a held node keeps the run alive");
    h.request(NodeAction::Start, &["a"]).unwrap();
    assert!(h.launched("a"));
}

#[test]
fn stop_while_waiting_keeps_the_node_down() {
    let mut h = Harness::new(
        r#"
[services.db]
command = "db"
[services.api]
command = "api"
depends_on = ["db"]
"#,
    );
    assert!(h.launched("db") && !h.launched("api"));
    h.request(NodeAction::Stop, &["api"]).unwrap();
    h.up("db");
    assert!(
        !h.launched("api"),
        "a stopped node started when its dependency was ready"
    );
    assert_eq!(h.state("api"), NodeState::Held);
}

#[test]
fn a_node_removed_by_a_reload_and_added_back_starts_again() {
    let two = "[services.a]\ncommand = \"a\"\n[services.b]\ncommand = \"b\"\n";
    let mut h = Harness::new(two);
    h.up("a");
    h.up("b");
    h.verify_ok();
    h.on(Input::Reload(Box::new(load(
        "[services.a]\ncommand = \"a\"\n",
    ))));
    assert!(h.stop_sent("b"));
    h.stopped("b");
    assert_eq!(h.state("b"), NodeState::Removed);
    h.on(Input::Reload(Box::new(load(two))));
    assert!(
        h.launched("b"),
        "b was added back but not started: {:?}",
        h.effects
    );
}

#[test]
fn a_stack_of_lazy_socket_services_waits_for_the_first_connection() {
    let mut h = Harness::new(
        r#"
[services.api]
command = "api"
sockets = [18080]
lazy = true
"#,
    );
    assert!(!h.launched("api"));
    assert!(
        !h.core.shutting_down(),
        "shut down at once: {:?}",
        h.effects
    );
    let api = h.n("api");
    h.on(Input::Activated(api));
    assert!(h.launched("api"));
}

#[test]
fn a_runner_that_dies_fails_its_node_and_the_run_ends() {
    let mut h = Harness::new("[services.a]\ncommand = \"a\"\n");
    h.report("a", Report::Spawned { pid: 7, attempt: 1 });
    h.report("a", Report::Crashed("index out of bounds".into()));
    assert!(
        matches!(h.state("a"), NodeState::Failed { reason } if reason.contains("index out of bounds"))
    );
    assert!(h.core.finished(), "the run hangs after a runner died");
    assert!(matches!(h.core.outcome(), Outcome::Failed(_)));
}

#[test]
fn the_verification_pass_does_not_hold_up_requests() {
    let mut h = Harness::new("[services.a]\ncommand = \"a\"\nport = 18081\n");
    h.up("a");
    assert!(h.effects.iter().any(|e| matches!(e, Effect::Verify(_))));
    // While the pass runs, requests are answered and a shutdown is taken at once.
    assert_eq!(
        h.request(NodeAction::Start, &["a"]),
        Ok("already running".into())
    );
    h.on(Input::Shutdown("SIGINT".into()));
    assert!(h.stop_sent("a"));
}

#[test]
fn a_failed_restart_attempt_is_one_more_failure_not_the_end() {
    let mut h = Harness::new(ALWAYS);
    h.up("a");
    h.verify_ok();
    h.exited("a", false);
    h.at(Duration::from_secs(1));
    assert!(h.launched("a"));
    h.report(
        "a",
        Report::Failed {
            reason: "exited before it was ready".into(),
            tail: vec![],
        },
    );
    assert!(
        matches!(h.state("a"), NodeState::Restarting { .. }),
        "a failed restart attempt gave up: {:?}",
        h.state("a")
    );
    // Two more failures use up max_restarts = 3: then it is a crash loop.
    for t in [2, 3] {
        h.at(Duration::from_secs(t));
        h.report(
            "a",
            Report::Failed {
                reason: "exited before it was ready".into(),
                tail: vec![],
            },
        );
    }
    assert!(matches!(h.state("a"), NodeState::Failed { reason } if reason.contains("crash loop")));
}

#[test]
fn a_required_node_that_fails_for_good_stops_what_needs_it_and_the_run_says_so() {
    let mut h = Harness::new(
        r#"
[services.db]
command = "db"
restart = "always"
max_restarts = 0
[services.app]
command = "app"
depends_on = ["db"]
[services.other]
command = "other"
"#,
    );
    h.up("db");
    h.up("app");
    h.up("other");
    h.verify_ok();
    h.exited("db", false);
    assert!(matches!(h.state("db"), NodeState::Failed { .. }));
    assert!(
        h.stop_sent("app"),
        "the app kept running on a dead database"
    );
    assert!(
        h.published(|k| matches!(k, EventKind::Note { text: t } if t.contains("stopping app")))
    );
    h.stopped("app");
    assert_eq!(h.state("app"), NodeState::Stopped);
    assert!(!h.core.shutting_down(), "other still runs");
    h.on(Input::Shutdown("SIGINT".into()));
    h.stopped("other");
    assert!(h.core.finished());
    assert!(matches!(h.core.outcome(), Outcome::Degraded(failed) if failed[0].contains("db")));
}

#[test]
fn an_optional_node_failing_after_startup_leaves_the_outcome_alone() {
    let mut h = Harness::new(
        "[services.a]\ncommand = \"a\"\n[services.extra]\ncommand = \"x\"\nrequired = false\n",
    );
    h.up("extra");
    h.up("a");
    h.verify_ok();
    h.exited("extra", false);
    h.on(Input::Shutdown("SIGINT".into()));
    h.stopped("a");
    assert!(matches!(h.core.outcome(), Outcome::Stopped));
}

const THROUGH_A_COMPONENT: &str = r#"
[services.postgres]
command = "postgres"
[components.migrate]
command = "migrate"
depends_on = ["postgres"]
[services.app]
command = "app"
depends_on = ["migrate"]
"#;

#[test]
fn shutdown_stops_the_database_only_after_the_app_that_uses_it_through_a_migration() {
    let mut h = Harness::new(THROUGH_A_COMPONENT);
    h.up("postgres");
    h.up("migrate");
    h.up("app");
    h.verify_ok();
    h.on(Input::Shutdown("SIGINT".into()));
    assert!(h.stop_sent("app"));
    assert!(
        !h.stop_sent("postgres"),
        "postgres stopped together with the app"
    );
    h.stopped("app");
    assert!(h.stop_sent("postgres"));
}

#[test]
fn stopping_the_database_stops_the_app_behind_the_migration_first() {
    let mut h = Harness::new(THROUGH_A_COMPONENT);
    h.up("postgres");
    h.up("migrate");
    h.up("app");
    h.verify_ok();
    h.request(NodeAction::Stop, &["postgres"]).unwrap();
    assert!(h.stop_sent("app") && !h.stop_sent("postgres"));
    h.stopped("app");
    assert!(h.stop_sent("postgres"));
    assert!(matches!(
        h.state("postgres"),
        NodeState::Stopping {
            then: AfterStop::Hold,
            ..
        }
    ));
}

#[test]
fn a_report_of_an_ended_instance_changes_nothing() {
    let mut h = Harness::new(ALWAYS);
    h.up("a");
    h.verify_ok();
    let old = h.instance("a");
    h.exited("a", false);
    h.at(Duration::from_secs(1));
    let a = h.n("a");
    h.on(Input::Report {
        node: a,
        instance: old,
        report: Report::Ready,
    });
    assert!(matches!(h.state("a"), NodeState::Starting(_)));
}

/// Handling one event examines the nodes it concerns, not all of them.
#[test]
fn one_event_costs_the_degree_of_its_node_not_the_size_of_the_graph() {
    let mut text = String::new();
    for i in 0..5000 {
        text += &format!("[services.s{i}]\ncommand = \"true\"\n");
    }
    let mut h = Harness::new(&text);
    let before = h.core.examined();
    h.up("s17");
    assert!(
        h.core.examined() - before <= 4,
        "{} nodes examined for one node's reports",
        h.core.examined() - before
    );
}

/// With one start slot, a required node is not queued behind an optional one: optional nodes
/// never hold up startup (the demo's `--sequential` startup took 3.9 s instead of 2.6 s).
#[test]
fn a_scarce_start_slot_goes_to_the_required_node_first() {
    let mut h = Harness::with_workers(
        r#"
[services.base]
command = "base"
[services.extra]
command = "extra"
depends_on = ["base"]
required = false
[services.needed]
command = "needed"
depends_on = ["base"]
"#,
        1,
    );
    h.up("base");
    assert!(
        h.launched("needed") && !h.launched("extra"),
        "{:?}",
        h.effects
    );
}

const REDIS_APP_NGINX: &str = r#"
[services.redis]
command = "redis"
restart = "always"
restart_backoff = "100ms"
[services.app]
command = "app"
depends_on = ["redis"]
restart_with_dependency = true
[services.nginx]
command = "nginx"
depends_on = ["app"]
"#;

/// Real stacks: a dependent bound to a restarting dependency used to hang in `stopping`
/// when something depended on it in turn (nginx on the app on redis): it waited for nginx,
/// which nobody stopped. Now nginx stops first, then the app, and both come back after redis.
#[test]
fn a_restart_with_dependency_takes_the_dependents_of_the_follower_along() {
    let mut h = Harness::new(REDIS_APP_NGINX);
    h.up("redis");
    h.up("app");
    h.up("nginx");
    h.verify_ok();
    h.exited("redis", false);
    assert!(h.stop_sent("nginx"), "nginx is stopped first");
    assert!(!h.stop_sent("app"), "the app waits for nginx to be down");
    h.stopped("nginx");
    assert!(h.stop_sent("app"));
    h.stopped("app");
    h.at(Duration::from_secs(1));
    assert!(h.launched("redis"));
    h.up("redis");
    assert!(h.launched("app"), "the app follows redis back");
    h.up("app");
    assert!(h.launched("nginx"), "and nginx follows the app");
}

/// Real stacks: what `stop X` stopped along with X, `start X` brings back; a dependent that
/// was stopped by name stays down.
#[test]
fn start_brings_back_what_stop_stopped_along() {
    let mut h = Harness::new(
        r#"
[services.db]
command = "db"
[services.api]
command = "api"
depends_on = ["db"]
[services.worker]
command = "worker"
depends_on = ["db"]
"#,
    );
    h.up("db");
    h.up("api");
    h.up("worker");
    h.verify_ok();
    h.request(NodeAction::Stop, &["worker"]).unwrap();
    h.stopped("worker");
    let answer = h.request(NodeAction::Stop, &["db"]).unwrap();
    assert!(answer.contains("db") && answer.contains("api"), "{answer}");
    h.stopped("api");
    h.stopped("db");
    assert_eq!(h.state("api"), NodeState::Held);
    let answer = h.request(NodeAction::Start, &["db"]).unwrap();
    assert!(answer.contains("db") && answer.contains("api"), "{answer}");
    assert!(!answer.contains("worker"), "{answer}");
    assert!(h.launched("db") && !h.launched("api"));
    h.up("db");
    assert!(h.launched("api"));
    assert_eq!(
        h.state("worker"),
        NodeState::Held,
        "stopped by name: stays down"
    );
}

/// The physical limit: the verification pass probes again only services whose readiness is
/// older than `verify_older_than`; one confirmed a moment ago is not probed twice.
#[test]
fn the_verification_pass_skips_services_ready_a_moment_ago() {
    let text = "[services.old]\ncommand = \"old\"\n[services.new]\ncommand = \"new\"\n";
    let mut h = Harness::new(text);
    h.core.set_verify_older_than(Duration::from_secs(1));
    h.up("old");
    h.at(Duration::from_secs(2));
    h.up("new");
    let old = h.n("old");
    let verify = h.effects.iter().find_map(|e| match e {
        Effect::Verify(nodes) => Some(nodes.clone()),
        _ => None,
    });
    assert_eq!(verify, Some(vec![old]), "only the service ready 2 s ago");
    h.on(Input::Verified(Ok(())));
    assert!(h.published(|k| matches!(k, EventKind::StartupComplete(_))));

    let mut h = Harness::new(text);
    h.core.set_verify_older_than(Duration::from_secs(1));
    h.up("old");
    h.up("new");
    assert!(
        h.published(|k| matches!(k, EventKind::StartupComplete(_))),
        "both fresh: complete at once, no verification"
    );
}

/// Dependency kinds: an optional dependency is waited for while it is on its way up, and its
/// failure neither skips the dependent nor stops it.
#[test]
fn an_optional_dependency_is_waited_for_while_starting_and_its_failure_is_gone_around() {
    let text = r#"
[services.cache]
command = "cache"
required = false
[services.api]
command = "api"
depends_on = { cache = { required = false } }
"#;
    let mut h = Harness::new(text);
    assert!(
        h.launched("cache") && !h.launched("api"),
        "waits while cache starts"
    );
    h.report("cache", Report::Spawned { pid: 7, attempt: 1 });
    h.report(
        "cache",
        Report::Failed {
            reason: "no".into(),
            tail: vec![],
        },
    );
    assert!(
        h.launched("api"),
        "goes on without a failed optional dependency"
    );
    h.up("api");

    // Up first, then down for good: the dependent keeps running.
    let mut h = Harness::new(text);
    h.up("cache");
    h.up("api");
    h.verify_ok();
    h.exited("cache", false);
    assert!(!h.stop_sent("api"));
    assert!(matches!(h.state("api"), NodeState::Ready { .. }));
    // A user stop of it does not take the dependent along either.
    let mut h = Harness::new(text);
    h.up("cache");
    h.up("api");
    h.verify_ok();
    let answer = h.request(NodeAction::Stop, &["cache"]).unwrap();
    assert_eq!(answer, "stopping: cache");
    assert!(h.stop_sent("cache"), "nothing it must wait for");
}

/// Dependency kinds: at shutdown an optional edge still orders the stop: the dependent first.
#[test]
fn an_optional_edge_still_stops_its_dependent_first_at_shutdown() {
    let mut h = Harness::new(
        "[services.cache]\ncommand = \"c\"\n[services.api]\ncommand = \"a\"\ndepends_on = { cache = { required = false } }\n",
    );
    h.up("cache");
    h.up("api");
    h.verify_ok();
    h.on(Input::Shutdown("test".into()));
    assert!(h.stop_sent("api") && !h.stop_sent("cache"));
    h.stopped("api");
    assert!(h.stop_sent("cache"));
}

/// Dependency kinds: a node not part of the run (not selected) is not waited for over an
/// optional edge.
#[test]
fn an_optional_dependency_that_is_not_selected_is_not_waited_for() {
    let config = Arc::new(load(
        "[services.debugger]\ncommand = \"d\"\nprofiles = [\"debug\"]\n[services.api]\ncommand = \"a\"\ndepends_on = { debugger = { required = false } }\n",
    ));
    let graph = Arc::new(Graph::build(&config));
    let selected = crate::engine::selection::select(&config, &graph, &[], &[]).unwrap();
    assert_eq!(selected, [false, true]);
    let mut core = Core::new(config, graph, &selected, options(usize::MAX));
    let effects = core.begin(Duration::ZERO);
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Launch { node: 1, .. })),
        "{effects:?}"
    );
}

/// Dependency kinds: `restart = true` on one edge restarts the dependent with that dependency
/// only; its other dependencies' restarts leave it running.
#[test]
fn restart_on_an_edge_follows_that_dependency_only() {
    let mut h = Harness::new(
        r#"
[services.redis]
command = "redis"
restart = "always"
restart_backoff = "100ms"
[services.queue]
command = "queue"
restart = "always"
restart_backoff = "100ms"
[services.app]
command = "app"
depends_on = { redis = { restart = true }, queue = "healthy" }
"#,
    );
    h.up("redis");
    h.up("queue");
    h.up("app");
    h.verify_ok();
    h.exited("queue", false);
    assert!(!h.stop_sent("app"), "queue's restart leaves app alone");
    // ... which runs degraded meanwhile, and is told so.
    let degraded = |h: &Harness| {
        h.core
            .status()
            .into_iter()
            .find(|n| n.name == "app")
            .unwrap()
            .degraded
    };
    assert_eq!(
        degraded(&h).as_deref(),
        Some("needs `queue`, which is restarting")
    );
    assert!(h.published(
        |k| matches!(k, EventKind::Note { text } if text == "app keeps running without it until it is back (degraded)")
    ));
    h.at(Duration::from_secs(1));
    h.up("queue");
    assert_eq!(degraded(&h), None, "no longer once queue is back");
    h.exited("redis", false);
    assert!(h.stop_sent("app"), "redis's restart takes app along");
    h.stopped("app");
    h.at(Duration::from_secs(2));
    assert!(h.launched("redis"));
    h.up("redis");
    assert!(h.launched("app"), "and app comes back after redis");
}

/// Dependency kinds: the node-level `restart_with_dependency` is each edge's default, and an
/// edge can say otherwise.
#[test]
fn restart_with_dependency_is_the_default_of_each_edge() {
    let config = load(
        r#"
[services.a]
command = "a"
[services.b]
command = "b"
[services.c]
command = "c"
restart_with_dependency = true
depends_on = { a = "healthy", b = { restart = false } }
"#,
    );
    let c = config.node("c").unwrap();
    let restart: Vec<(&str, bool)> = c
        .depends_on
        .iter()
        .map(|d| (d.name.as_str(), d.restart))
        .collect();
    assert_eq!(restart, [("a", true), ("b", false)]);
}

/// Dependency kinds: a node's own `required` is the default of its edges: an optional node
/// goes on without a dependency that fails, unless the edge says `required = true`.
#[test]
fn an_optional_nodes_dependencies_are_optional_unless_it_says_otherwise() {
    let mut h = Harness::new(
        r#"
[services.models]
command = "m"
required = false
[services.captions]
command = "c"
required = false
depends_on = ["models"]
[services.vision]
command = "v"
required = false
depends_on = { models = { required = true } }
"#,
    );
    h.report(
        "models",
        Report::Failed {
            reason: "no".into(),
            tail: vec![],
        },
    );
    assert!(h.launched("captions"));
    assert!(matches!(h.state("vision"), NodeState::Skipped { .. }));
}

/// Dependency kinds: a milestone is needed to start; once the dependent was ready the link is
/// dropped: the dependency may stop first and fail without touching it.
#[test]
fn a_milestone_is_needed_once_then_the_link_is_dropped() {
    let mut h = Harness::new(
        r#"
[services.bootstrap]
command = "b"
[services.app]
command = "app"
restart = "always"
restart_backoff = "100ms"
depends_on = { bootstrap = { milestone = true } }
"#,
    );
    assert!(!h.launched("app"), "waits for the milestone");
    h.up("bootstrap");
    assert!(h.launched("app"));
    h.up("app");
    h.verify_ok();
    // The milestone may stop while app runs.
    h.request(NodeAction::Stop, &["bootstrap"]).unwrap();
    assert!(
        h.stop_sent("bootstrap"),
        "app does not hold the milestone up"
    );
    h.stopped("bootstrap");
    assert!(matches!(h.state("app"), NodeState::Ready { .. }));
    // app's own restart does not need it again.
    h.exited("app", false);
    h.at(Duration::from_secs(1));
    assert!(h.launched("app"), "restarts without the milestone");
}

/// Dependency kinds: a milestone that fails before its dependent ever started still skips it.
#[test]
fn a_failed_milestone_before_the_first_start_skips_the_dependent() {
    let mut h = Harness::new(
        "[services.boot]\ncommand = \"b\"\nrequired = false\n[services.app]\ncommand = \"a\"\nrequired = false\ndepends_on = { boot = { milestone = true, required = true } }\n",
    );
    h.report(
        "boot",
        Report::Failed {
            reason: "no".into(),
            tail: vec![],
        },
    );
    assert!(matches!(h.state("app"), NodeState::Skipped { .. }));
}

/// Cluster: a node of another host takes no start slot while its mirror waits for news, and
/// is not verified here (its own host probes it); it is restarted however often it goes away.
#[test]
fn a_mirrored_node_takes_no_start_slot_and_is_not_verified_here() {
    let cluster = "[cluster]\netcd = [\"http://127.0.0.1:2379\"]\n[hosts.h2]\n";
    let mut h = Harness::placed(
        &format!(
            "{cluster}[services.far]\ncommand = \"f\"\nhost = \"h2\"\n[services.near]\ncommand = \"n\"\n"
        ),
        1,
        Some("main"),
    );
    assert!(
        h.launched("far") && h.launched("near"),
        "one slot, both launched: {:?}",
        h.effects
    );
    h.up("near");
    h.report("far", Report::Ready);
    let verified: Vec<usize> = h
        .effects
        .iter()
        .find_map(|e| match e {
            Effect::Verify(nodes) => Some(nodes.clone()),
            _ => None,
        })
        .expect("a verification pass");
    assert_eq!(verified, vec![h.n("near")]);
    h.verify_ok();
    // Its host was lost, again and again: the mirror comes back each time.
    for round in 1..=10u64 {
        h.exited("far", false);
        h.at(Duration::from_secs(round));
        assert!(h.launched("far"), "round {round}: {:?}", h.state("far"));
        h.report("far", Report::Ready);
    }
}
