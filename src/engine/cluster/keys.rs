//! Where a run lives in etcd, and what its keys hold (JSON).
//!
//! ```text
//! /dagstart/<cluster>/run            RunInfo: the run's id, coordinator, config digest, phase
//! /dagstart/<cluster>/hosts/<host>   HostInfo, under the host's lease
//! /dagstart/<cluster>/nodes/<node>   NodeInfo, under the lease of the host that runs it
//! /dagstart/<cluster>/election/<host>  a candidate, under its host's lease: the oldest leads
//! /dagstart/<cluster>/stop           StopRequest: a host asks the leader to stop the run
//! /dagstart/<cluster>/stopping/<host>  a host starts nothing more (under its lease)
//! ```
//!
//! A host's keys live on its lease: when the host dies or is cut off, etcd deletes them once
//! the lease expires, and every other host sees the deletion on its watch.

use serde::{Deserialize, Serialize};

/// The key prefix of one cluster's run.
#[derive(Debug, Clone)]
pub struct Keys {
    cluster: String,
    root: String,
}

impl Keys {
    pub fn new(cluster: &str) -> Self {
        Self {
            cluster: cluster.to_owned(),
            root: format!("/dagstart/{cluster}/"),
        }
    }

    /// The cluster's name (`[cluster] name`).
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Every key of the run.
    pub fn root(&self) -> &str {
        &self.root
    }

    pub fn run(&self) -> String {
        format!("{}run", self.root)
    }

    pub fn host(&self, host: &str) -> String {
        format!("{}hosts/{host}", self.root)
    }

    /// Host `host`'s candidacy: the candidate with the lowest create revision leads.
    pub fn candidate(&self, host: &str) -> String {
        format!("{}election/{host}", self.root)
    }

    /// The host a key under the election prefix stands for.
    pub fn candidate_host<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(self.root.as_str())?
            .strip_prefix("election/")
    }

    /// The host a key under the hosts prefix names.
    pub fn host_name<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(self.root.as_str())?.strip_prefix("hosts/")
    }

    /// Host `host` has seen the run stop and starts nothing more: every state it published
    /// before is at a lower revision (one queue, one watch).
    pub fn stopping(&self, host: &str) -> String {
        format!("{}stopping/{host}", self.root)
    }

    pub fn stopping_host<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(self.root.as_str())?
            .strip_prefix("stopping/")
    }

    pub fn stop(&self) -> String {
        format!("{}stop", self.root)
    }

    pub fn nodes(&self) -> String {
        format!("{}nodes/", self.root)
    }

    pub fn node(&self, node: &str) -> String {
        format!("{}{node}", self.nodes())
    }

    /// The node a key under [`Keys::nodes`] is about.
    pub fn node_name<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(self.root.as_str())?.strip_prefix("nodes/")
    }
}

/// Where the run as a whole stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Running,
    /// Every host stops its nodes, in reverse dependency order across hosts.
    Stopping,
}

/// `/run`: written by the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    pub id: String,
    pub coordinator: String,
    /// [`digest`] of the coordinator's services.toml: an agent with another file is refused.
    pub digest: String,
    pub phase: Phase,
}

/// `/stop`: written by any host that was asked to stop the whole run (`dagstart down`, or the
/// `run` process's Ctrl-C); the leader turns it into the run's phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopRequest {
    /// The run it is about: a request left over from an earlier run means nothing.
    pub run: String,
    pub by: String,
    pub reason: String,
}

/// `/hosts/<host>`: who holds the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    pub pid: u32,
    /// The machine's own name.
    pub machine: String,
    /// Where this host serves its node logs to the other hosts, and the token it asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogShare>,
}

/// A host's log endpoint (`views::log_share`): `GET {url}/logs/NODE?lines=N` with
/// `Authorization: Bearer {token}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogShare {
    pub url: String,
    pub token: String,
}

/// `/nodes/<node>`: a node's state as the host that runs it sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub host: String,
    /// [`NodeState::name`](crate::engine::lifecycle::NodeState::name).
    pub state: String,
    /// The started instance it is about: a new one after every restart.
    pub instance: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
}

impl NodeInfo {
    /// The node is up and can be relied on (a ready service or a completed component).
    pub fn is_up(&self) -> bool {
        self.state == "ready" || self.state == "completed"
    }

    /// A process of the node may still be running on its host.
    pub fn may_run(&self) -> bool {
        matches!(self.state.as_str(), "starting" | "ready" | "stopping")
    }

    /// Failed for good on its host: it will not come up in this run.
    pub fn failed_for_good(&self) -> bool {
        self.state == "failed" || self.state == "skipped"
    }
}

/// A digest of services.toml's text (FNV-1a, 64 bits): equal files, equal digests. It tells
/// a mistake (an agent started from another checkout), it is not a signature.
pub fn digest(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_keys_name_their_node() {
        let keys = Keys::new("shop");
        assert_eq!(keys.node("db"), "/dagstart/shop/nodes/db");
        assert_eq!(keys.node_name("/dagstart/shop/nodes/db"), Some("db"));
        assert_eq!(keys.node_name("/dagstart/shop/hosts/db"), None);
    }

    #[test]
    fn digests_tell_files_apart() {
        assert_eq!(digest("a"), digest("a"));
        assert_ne!(digest("[services.a]"), digest("[services.b]"));
    }
}
