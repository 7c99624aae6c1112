//! Writes this host's node states to etcd, in order, under the host's lease. Writes that pile
//! up while etcd is slow or away are coalesced (the latest state of each node wins), and a new
//! lease (after the old one lapsed) has every node written again. A request to stop the run
//! goes through the same queue, before the states of the nodes this host then stops.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::etcd::Etcd;
use super::keys::{Keys, NodeInfo, StopRequest};

/// One write for etcd.
#[derive(Debug)]
pub(super) enum Write {
    Node(String, NodeInfo),
    /// A request to stop the whole run, for the leader (no lease: it must outlive this host).
    Stop(StopRequest),
    /// This host starts nothing more (after every state it published before).
    Stopping,
}

/// The names under which the stop request and this host's acknowledgement wait in the queue
/// (no node name is empty or has a space).
const STOP: &str = "";
const STOPPING: &str = " stopping";
use super::session::RETRY;

pub(super) async fn run(
    etcd: Arc<Etcd>,
    keys: Keys,
    host: String,
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
                    pending = latest.keys().filter(|k| k.as_str() != STOP).cloned().collect();
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
        let host = host.as_str();
        let written = if name == STOP {
            etcd.put(&keys.stop(), value, None).await
        } else if name == STOPPING {
            etcd.put(&keys.stopping(host), value, Some(current)).await
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
        Write::Stop(request) => (STOP.to_owned(), serde_json::to_vec(&request)),
        Write::Stopping => (STOPPING.to_owned(), Ok(Vec::new())),
    };
    if !pending.contains(&name) {
        pending.push(name.clone());
    }
    latest.insert(name, value.unwrap_or_default());
}
