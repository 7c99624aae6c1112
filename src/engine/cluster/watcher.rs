//! Follows the run's keys in etcd: list at a revision, then watch from the next one, so no
//! change is missed; a compacted revision or a broken stream means listing again. One watch
//! over the run's whole prefix keeps every change in revision order: a host sees the run turn
//! to stopping before it sees the first node stop for it.
//!
//! Each remote node's latest published state goes to its feed (`None`: not published, or its
//! host's lease expired and etcd deleted it); the run's phase goes to the phase channel
//! (stopping once the leader said so, or the run's key is gone or another's); the leader (the
//! candidate with the lowest create revision) and the latest stop request go to theirs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use tokio::sync::watch;

use super::etcd::{Etcd, Kv, WatchEvent, WatchMessage};
use super::keys::{Keys, NodeInfo, Phase, RunInfo, StopRequest};

/// The leading host and the create revision of its candidacy.
pub(super) type Leader = Option<(String, i64)>;
use super::session::RETRY;

/// Where the watcher delivers what it sees.
pub(super) struct Feeds {
    pub local: String,
    pub run_id: String,
    pub names: Vec<String>,
    pub nodes: Vec<watch::Sender<Option<NodeInfo>>>,
    pub phase: watch::Sender<Phase>,
    pub leader: watch::Sender<Leader>,
    pub stop: watch::Sender<Option<StopRequest>>,
    /// Every candidate's create revision, by host.
    pub candidates: std::sync::Mutex<BTreeMap<String, i64>>,
    /// The hosts in the run (their keys exist).
    pub hosts: watch::Sender<BTreeSet<String>>,
    /// The hosts that saw the run stop and start nothing more.
    pub stopping: watch::Sender<BTreeSet<String>>,
}

impl Feeds {
    fn node(&self, n: usize, info: Option<NodeInfo>) {
        // This host's own nodes are its own to know.
        if info.as_ref().is_some_and(|i| i.host == self.local) {
            return;
        }
        self.nodes[n].send_if_modified(|current| {
            let changed = *current != info;
            *current = info;
            changed
        });
    }

    fn candidate(&self, host: &str, revision: Option<i64>) {
        let mut candidates = self
            .candidates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match revision {
            Some(revision) => candidates.insert(host.to_owned(), revision),
            None => candidates.remove(host),
        };
        let leader = candidates
            .iter()
            .min_by_key(|(_, revision)| **revision)
            .map(|(host, revision)| (host.clone(), *revision));
        self.leader.send_if_modified(|current| {
            let changed = *current != leader;
            *current = leader;
            changed
        });
    }

    fn member(set: &watch::Sender<BTreeSet<String>>, host: &str, present: bool) {
        set.send_if_modified(|hosts| {
            if present {
                hosts.insert(host.to_owned())
            } else {
                hosts.remove(host)
            }
        });
    }

    fn stop_request(&self, request: Option<StopRequest>) {
        let request = request.filter(|r| r.run == self.run_id);
        self.stop.send_if_modified(|current| {
            let changed = *current != request;
            *current = request;
            changed
        });
    }

    fn run(&self, run: Option<RunInfo>) {
        let stopping = run.is_none_or(|run| run.id != self.run_id || run.phase == Phase::Stopping);
        if stopping {
            self.phase.send_if_modified(|phase| {
                let changed = *phase != Phase::Stopping;
                *phase = Phase::Stopping;
                changed
            });
        }
    }
}

pub(super) async fn run(etcd: Arc<Etcd>, keys: Keys, feeds: Feeds) {
    let index: HashMap<&str, usize> = feeds
        .names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let node_of = |key: &str| {
        keys.node_name(key)
            .and_then(|name| index.get(name).copied())
    };
    let apply = |kv: &Kv| {
        if kv.key == keys.run() {
            feeds.run(serde_json::from_slice(&kv.value).ok());
        } else if kv.key == keys.stop() {
            feeds.stop_request(serde_json::from_slice(&kv.value).ok());
        } else if let Some(host) = keys.candidate_host(&kv.key) {
            feeds.candidate(host, Some(kv.create_revision));
        } else if let Some(host) = keys.host_name(&kv.key) {
            Feeds::member(&feeds.hosts, host, true);
        } else if let Some(host) = keys.stopping_host(&kv.key) {
            Feeds::member(&feeds.stopping, host, true);
        } else if let Some(n) = node_of(&kv.key) {
            feeds.node(n, serde_json::from_slice(&kv.value).ok());
        }
    };
    let remove = |key: &str| {
        if key == keys.run() {
            feeds.run(None);
        } else if key == keys.stop() {
            feeds.stop_request(None);
        } else if let Some(host) = keys.candidate_host(key) {
            feeds.candidate(host, None);
        } else if let Some(host) = keys.host_name(key) {
            Feeds::member(&feeds.hosts, host, false);
        } else if let Some(host) = keys.stopping_host(key) {
            Feeds::member(&feeds.stopping, host, false);
        } else if let Some(n) = node_of(key) {
            feeds.node(n, None);
        }
    };
    loop {
        let Ok((kvs, revision)) = etcd.range_prefix(keys.root()).await else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        let mut listed = vec![false; feeds.names.len()];
        for key in [keys.run(), keys.stop()] {
            if !kvs.iter().any(|kv| kv.key == key) {
                remove(&key);
            }
        }
        let gone: Vec<String> = feeds
            .candidates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .filter(|host| !kvs.iter().any(|kv| kv.key == keys.candidate(host)))
            .cloned()
            .collect();
        for host in gone {
            feeds.candidate(&host, None);
        }
        let listed_hosts: BTreeSet<String> = kvs
            .iter()
            .filter_map(|kv| keys.host_name(&kv.key).map(str::to_owned))
            .collect();
        let listed_stopping: BTreeSet<String> = kvs
            .iter()
            .filter_map(|kv| keys.stopping_host(&kv.key).map(str::to_owned))
            .collect();
        feeds.hosts.send_replace(listed_hosts);
        feeds.stopping.send_replace(listed_stopping);
        for kv in &kvs {
            if let Some(n) = node_of(&kv.key) {
                listed[n] = true;
            }
            apply(kv);
        }
        for (n, _) in listed.iter().enumerate().filter(|(_, l)| !**l) {
            feeds.node(n, None);
        }
        let Ok(mut stream) = etcd.watch_prefix(keys.root(), revision + 1).await else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        while let Ok(Some(WatchMessage::Events(events))) = stream.next().await {
            for event in events {
                match event {
                    WatchEvent::Put(kv) => apply(&kv),
                    WatchEvent::Delete { key, .. } => remove(&key),
                }
            }
        }
    }
}
