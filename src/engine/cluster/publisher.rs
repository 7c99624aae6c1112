//! Writes this host's node states to etcd, in order, under the host's lease. Writes that pile
//! up while etcd is slow or away are coalesced (the latest state of each node wins), and a new
//! lease (after the old one lapsed) has every node written again. The coordinator's change of
//! the run's phase goes through the same queue, so that every host sees the run stopping
//! before it sees the first node stop (one watch, in revision order).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::etcd::Etcd;
use super::keys::{Keys, NodeInfo, RunInfo};

/// One write for etcd.
#[derive(Debug)]
pub(super) enum Write {
    Node(String, NodeInfo),
    /// The run's key (no lease: the run outlives any one host).
    Run(RunInfo),
}

/// The name under which a write waits in the queue (the run's key has none of a node's).
const RUN: &str = "";
use super::session::RETRY;

pub(super) async fn run(
    etcd: Arc<Etcd>,
    keys: Keys,
    mut lease: watch::Receiver<i64>,
    mut updates: mpsc::UnboundedReceiver<Write>,
) {
    let mut latest: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut pending: Vec<String> = Vec::new();
    loop {
        if pending.is_empty() {
            tokio::select! {
                update = updates.recv() => match update {
                    Some(write) => note(&mut latest, &mut pending, write),
                    None => return,
                },
                changed = lease.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    pending = latest.keys().filter(|k| k.as_str() != RUN).cloned().collect();
                }
            }
        }
        while let Ok(write) = updates.try_recv() {
            note(&mut latest, &mut pending, write);
        }
        let Some(name) = pending.first().cloned() else {
            continue;
        };
        let Some(value) = latest.get(&name) else {
            pending.remove(0);
            continue;
        };
        let current = *lease.borrow_and_update();
        let written = if name == RUN {
            etcd.put(&keys.run(), value, None).await
        } else {
            etcd.put(&keys.node(&name), value, Some(current)).await
        };
        if written.is_ok() {
            pending.remove(0);
        } else {
            tokio::time::sleep(RETRY).await;
        }
    }
}

fn note(latest: &mut BTreeMap<String, Vec<u8>>, pending: &mut Vec<String>, write: Write) {
    let (name, value) = match write {
        Write::Node(name, info) => (name, serde_json::to_vec(&info)),
        Write::Run(run) => (RUN.to_owned(), serde_json::to_vec(&run)),
    };
    if !pending.contains(&name) {
        pending.push(name.clone());
    }
    latest.insert(name, value.unwrap_or_default());
}
