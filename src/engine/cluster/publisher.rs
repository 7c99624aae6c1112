//! Writes this host's node states to etcd, in order, under the host's lease. Writes that pile
//! up while etcd is slow or away are coalesced (the latest value of each key wins), and a new
//! lease (after the old one lapsed) has every leased key written again. A request to stop the
//! run and this host's acknowledgement of the stop go through the same queue, after the
//! states written before them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::etcd::Etcd;
use super::keys::{Keys, NodeInfo, StopRequest};
use super::session::RETRY;

/// One write for etcd.
#[derive(Debug)]
pub(super) enum Write {
    Node(String, NodeInfo),
    /// A request to stop the whole run, for the leader (no lease: it must outlive this host).
    Stop(StopRequest),
    /// This host starts nothing more (after every state it published before).
    Stopping,
}

/// The latest value of one etcd key, and whether it lives on the host's lease.
struct Value {
    bytes: Vec<u8>,
    leased: bool,
}

/// The keys waiting to be written, oldest first, each once.
#[derive(Default)]
struct Pending {
    order: VecDeque<String>,
    queued: HashSet<String>,
}

impl Pending {
    fn push(&mut self, key: String) {
        if self.queued.insert(key.clone()) {
            self.order.push_back(key);
        }
    }

    fn front(&self) -> Option<&String> {
        self.order.front()
    }

    fn pop(&mut self) {
        if let Some(key) = self.order.pop_front() {
            self.queued.remove(&key);
        }
    }
}

pub(super) async fn run(
    etcd: Arc<Etcd>,
    keys: Keys,
    host: String,
    mut lease: watch::Receiver<i64>,
    mut updates: mpsc::UnboundedReceiver<Write>,
) {
    let mut latest: HashMap<String, Value> = HashMap::new();
    let mut pending = Pending::default();
    let note = |latest: &mut HashMap<String, Value>, pending: &mut Pending, write| {
        let (key, value) = resolve(&keys, &host, write);
        pending.push(key.clone());
        latest.insert(key, value);
    };
    loop {
        if pending.front().is_none() {
            tokio::select! {
                update = updates.recv() => match update {
                    Some(write) => note(&mut latest, &mut pending, write),
                    None => return,
                },
                changed = lease.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    for (key, _) in latest.iter().filter(|(_, v)| v.leased) {
                        pending.push(key.clone());
                    }
                }
            }
        }
        while let Ok(write) = updates.try_recv() {
            note(&mut latest, &mut pending, write);
        }
        let Some(key) = pending.front() else {
            continue;
        };
        let Some(value) = latest.get(key) else {
            pending.pop();
            continue;
        };
        // `borrow`, not `borrow_and_update`: a new lease seen here must still wake the
        // republishing of every leased key once the queue is empty.
        let on_lease = value.leased.then_some(*lease.borrow());
        if etcd.put(key, &value.bytes, on_lease).await.is_ok() {
            pending.pop();
        } else {
            tokio::time::sleep(RETRY).await;
        }
    }
}

/// The etcd key a write goes to, and its value.
fn resolve(keys: &Keys, host: &str, write: Write) -> (String, Value) {
    let (key, bytes, leased) = match write {
        Write::Node(name, info) => (keys.node(&name), serde_json::to_vec(&info), true),
        Write::Stop(request) => (keys.stop(), serde_json::to_vec(&request), false),
        Write::Stopping => (keys.stopping(host), Ok(Vec::new()), true),
    };
    let bytes = bytes.unwrap_or_default();
    (key, Value { bytes, leased })
}
