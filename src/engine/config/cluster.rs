//! The multi-host part of services.toml: `[cluster]` (the etcd cluster that coordinates a run
//! over several hosts) and `[hosts.NAME]` (the hosts nodes may be placed on with `host`).
//!
//! Without a `[cluster]` section none of this exists and every node runs where `dagstart run`
//! runs. How a run uses it is [`crate::engine::cluster`]'s.

use std::time::Duration;

use super::Span;

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// The run's key in etcd (default: the project directory's name).
    pub name: String,
    /// etcd client URLs (`http://host:port`); `DAGSTART_ETCD` (comma-separated) overrides.
    pub etcd: Vec<String>,
    /// How long a host's keys outlive its last keep-alive: how fast a lost host is noticed.
    pub lease_ttl: Duration,
}

/// The default of `[cluster] lease_ttl`.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(3);

/// `[hosts.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    pub name: String,
    pub name_span: Span,
    /// Given to every node as `DAGSTART_HOST_<NAME>_ADDR`.
    pub address: Option<String>,
}

/// `DAGSTART_HOST_DB1_ADDR` for host `db1`: upper case, `-` as `_`.
pub fn host_address_var(host: &str) -> String {
    let name: String = host
        .chars()
        .map(|c| {
            if c == '-' {
                '_'
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect();
    format!("DAGSTART_HOST_{name}_ADDR")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_variable_names_are_shell_names() {
        assert_eq!(host_address_var("db1"), "DAGSTART_HOST_DB1_ADDR");
        assert_eq!(host_address_var("edge-2"), "DAGSTART_HOST_EDGE_2_ADDR");
    }
}
