//! One run over several hosts, coordinated through etcd (`[cluster]` in services.toml).
//!
//! Every host (the `dagstart run` that coordinates, and each `dagstart agent --host NAME`)
//! loads the same services.toml and runs the same lifecycle core over the whole graph. The
//! nodes placed on it are run as usual; every other node is *mirrored*: its runner
//! ([`crate::engine::lifecycle`]'s mirror) starts no process, it follows the node's key in etcd
//! and reports ready, exited, failed or stopped as the host that runs it publishes. So the
//! core's start conditions, restarts along edges and stop order work across hosts unchanged:
//!
//! - each host publishes its own nodes' states under its lease ([`publisher`]);
//! - each host lists, then watches from the next revision, every node key ([`watcher`]): no
//!   change is missed, and a compacted revision means listing again;
//! - a host's lease is kept alive while etcd answers ([`session`]); when it lapses (the host
//!   died or was cut off) etcd deletes its keys and every mirror of its nodes reports the node
//!   gone; the cut-off host keeps its nodes running, says so, and rejoins with a new lease;
//! - the hosts elect a leader (the oldest candidacy, each under its host's lease): a host asked
//!   to stop the run writes a request, and the leader turns it into the run's phase with a
//!   write conditioned on still leading ([`leader`]); every host then stops its nodes, and a
//!   mirror reports stopped only once the node really stopped on its host, so nothing is
//!   stopped while a node on any host still depends on it. If the `run` process dies, another
//!   host leads, and the run goes on.
//!
//! Keys and values are in [`keys`]; the etcd client is [`etcd`].

pub mod etcd;
pub mod keys;
mod leader;
mod publisher;
pub mod remote_logs;
mod session;
mod watcher;

use tokio::sync::{mpsc, watch};

use crate::engine::config::Config;
use crate::engine::config::{Restart, RestartPolicy};

pub use etcd::{Etcd, EtcdError};
pub use keys::{HostInfo, Keys, LogShare, NodeInfo, Phase, RunInfo, digest};
pub use session::{ClusterError, Joined, Role, find_run, join, machine_name};

/// What a host's scheduler uses of the cluster: which nodes are elsewhere, their states as
/// published, the run's phase, and where to publish its own nodes' states.
#[derive(Debug)]
pub struct ClusterLink {
    host: String,
    coordinator: bool,
    run: RunInfo,
    /// Per node: its state as its host published it (`None`: not published, or its host's
    /// lease expired). Only the entries of remote nodes change.
    feeds: Vec<watch::Receiver<Option<NodeInfo>>>,
    phase: watch::Sender<Phase>,
    publish: mpsc::UnboundedSender<publisher::Write>,
    barrier: StopBarrier,
}

/// While the run stops: which hosts are known to start nothing more. A host's stopping key
/// is written after every state it published before (one queue), and seen in revision order
/// (one watch): once it is seen, the host's published states are final but for stops, so a
/// node that is not running there now will not start there. A host that left the run (its
/// key gone) starts nothing either.
#[derive(Debug, Clone)]
pub struct StopBarrier {
    hosts: watch::Receiver<std::collections::BTreeSet<String>>,
    stopping: watch::Receiver<std::collections::BTreeSet<String>>,
}

impl StopBarrier {
    /// Resolves once `host` starts nothing more.
    pub async fn passed(&mut self, host: &str) {
        loop {
            let passed = !self.hosts.borrow_and_update().contains(host)
                || self.stopping.borrow_and_update().contains(host);
            if passed {
                return;
            }
            tokio::select! {
                changed = self.hosts.changed() => if changed.is_err() { return },
                changed = self.stopping.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Resolves once a node of `host`, whose published state `feed` follows, no longer runs
    /// there for sure: its host starts nothing more, and the node is not running, starting
    /// or stopping as published (or its key is gone).
    pub async fn stopped_on(&mut self, host: &str, feed: &mut watch::Receiver<Option<NodeInfo>>) {
        self.passed(host).await;
        while feed
            .borrow_and_update()
            .as_ref()
            .is_some_and(NodeInfo::may_run)
        {
            if feed.changed().await.is_err() {
                return;
            }
        }
    }
}

impl ClusterLink {
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn is_coordinator(&self) -> bool {
        self.coordinator
    }

    /// Node `n`'s state as published by the host that runs it.
    pub fn feed(&self, n: usize) -> watch::Receiver<Option<NodeInfo>> {
        self.feeds[n].clone()
    }

    /// The run's phase: `Stopping` once the leader said so, or once this host asked for it.
    pub fn phase(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Publishes the state of one of this host's nodes (in order; the latest wins).
    pub fn publish(&self, node: &str, info: NodeInfo) {
        let _ = self
            .publish
            .send(publisher::Write::Node(node.to_owned(), info));
    }

    /// The barrier of the run's stop ([`StopBarrier`]).
    pub fn barrier(&self) -> StopBarrier {
        self.barrier.clone()
    }

    /// This host has begun its shutdown and starts nothing more: the other hosts may count
    /// its published states as final.
    pub fn acknowledge_stop(&self) {
        let _ = self.publish.send(publisher::Write::Stopping);
    }

    /// Asks for the whole run to stop: the leader turns the request into the run's phase,
    /// which every host follows. This host counts the run as stopping at once: its mirrors
    /// must already wait for their nodes to stop on their hosts.
    pub fn request_stop(&self, reason: &str) {
        self.phase.send_replace(Phase::Stopping);
        let request = keys::StopRequest {
            run: self.run.id.clone(),
            by: self.host.clone(),
            reason: reason.to_owned(),
        };
        let _ = self.publish.send(publisher::Write::Stop(request));
    }
}

/// The config as host `local` runs it: every node placed (a node without `host` runs on the
/// coordinator's host), and the nodes of other hosts reduced to what a mirror needs. A mirror
/// is started again whenever its node comes back, however often: its host decides about
/// restarts and crash loops, this host only waits for news.
pub fn localize(config: &mut Config, local: &str, coordinator: &str) {
    for node in &mut config.nodes {
        let host = placed_on(node, coordinator).to_owned();
        node.host = Some(host.clone());
        if host == local {
            continue;
        }
        node.restart = Restart {
            policy: RestartPolicy::Always,
            backoff: std::time::Duration::from_millis(50),
            backoff_max: std::time::Duration::from_millis(500),
            max_restarts: u32::MAX,
            window: std::time::Duration::from_secs(1),
        };
        node.sockets.clear();
        // `lazy` stays: this host's core decides it over the whole graph as the owning host
        // does, so a mirror is launched (and waits) only when the node is asked for, and the
        // mirror of a lazy node nothing asks for holds up no startup. Without sockets here,
        // it means "started when a dependent is about to start", whatever woke it there.
        node.watch.clear();
        node.liveness = None;
        node.watchdog = None;
        node.run_as = None;
        node.port = None;
    }
    config.local_host = Some(local.to_owned());
}

/// The host `node` runs on: its `host`, or the coordinator's for a node without one.
pub fn placed_on<'a>(node: &'a crate::engine::config::Node, coordinator: &'a str) -> &'a str {
    node.host.as_deref().unwrap_or(coordinator)
}

/// A client of `config`'s etcd, and the run's keys there. Only for a config with a
/// `[cluster]` (the callers are reached only then).
fn connect(config: &Config) -> (Etcd, Keys) {
    let cluster = config.cluster.as_ref().expect("a [cluster] section");
    (Etcd::new(cluster.etcd.clone()), Keys::new(&cluster.name))
}

/// The nodes this host runs itself, among `selected`.
pub fn local_selection(config: &Config, selected: &[bool]) -> Vec<bool> {
    selected
        .iter()
        .enumerate()
        .map(|(n, &on)| on && !config.is_remote(n))
        .collect()
}
