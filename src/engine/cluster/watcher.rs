//! Follows the run's keys in etcd: list at a revision, then watch from the next one, so no
//! change is missed; a compacted revision or a broken stream means listing again. One watch
//! over the run's whole prefix keeps every change in revision order: a host sees the run turn
//! to stopping before it sees the first node stop for it.
//!
//! Each remote node's latest published state goes to its feed (`None`: not published, or its
//! host's lease expired and etcd deleted it); the run's phase goes to the phase channel
//! (stopping once the coordinator began the shutdown, or the run's key is gone or another's).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;

use super::etcd::{Etcd, Kv, WatchEvent, WatchMessage};
use super::keys::{Keys, NodeInfo, Phase, RunInfo};
use super::session::RETRY;

/// Where the watcher delivers what it sees.
pub(super) struct Feeds {
    pub local: String,
    pub run_id: String,
    pub names: Vec<String>,
    pub nodes: Vec<watch::Sender<Option<NodeInfo>>>,
    pub phase: watch::Sender<Phase>,
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
        } else if let Some(n) = node_of(&kv.key) {
            feeds.node(n, serde_json::from_slice(&kv.value).ok());
        }
    };
    loop {
        let Ok((kvs, revision)) = etcd.range_prefix(keys.root()).await else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        let mut listed = vec![false; feeds.names.len()];
        if !kvs.iter().any(|kv| kv.key == keys.run()) {
            feeds.run(None);
        }
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
                    WatchEvent::Delete { key, .. } if key == keys.run() => feeds.run(None),
                    WatchEvent::Delete { key, .. } => {
                        if let Some(n) = node_of(&key) {
                            feeds.node(n, None);
                        }
                    }
                }
            }
        }
    }
}
