//! `dagstart logs` of nodes that another host runs: fetched from that host's log endpoint,
//! which it publishes with its key (`views::log_share` serves it).

use super::etcd::Etcd;
use super::keys::{HostInfo, Keys, RunInfo};
use super::session::ClusterError;
use crate::engine::config::Config;

/// One node's lines from the host that runs it, or why they could not be had.
pub type Fetched = (String, Result<Vec<String>, String>);

/// The last `lines` lines of each of `names` that another host than `local` runs, by node.
/// Empty when no run is going on.
pub async fn fetch(
    config: &Config,
    local: &str,
    names: &[&str],
    lines: usize,
) -> Result<Vec<Fetched>, ClusterError> {
    let (etcd, keys) = super::connect(config);
    let run = etcd
        .get(&keys.run())
        .await
        .map_err(ClusterError::Unreachable)?;
    let Some(run) = run.and_then(|kv| serde_json::from_slice::<RunInfo>(&kv.value).ok()) else {
        return Ok(Vec::new());
    };
    let http = reqwest::Client::new();
    let mut fetched = Vec::new();
    for name in names {
        let Some(node) = config.node(name) else {
            continue;
        };
        let host = node.host.clone().unwrap_or_else(|| run.coordinator.clone());
        if host == local {
            continue;
        }
        let answer = from_host(&etcd, &keys, &http, &host, name, lines).await;
        fetched.push(((*name).to_owned(), answer));
    }
    Ok(fetched)
}

async fn from_host(
    etcd: &Etcd,
    keys: &Keys,
    http: &reqwest::Client,
    host: &str,
    node: &str,
    lines: usize,
) -> Result<Vec<String>, String> {
    let info = etcd
        .get(&keys.host(host))
        .await
        .map_err(|e| e.to_string())?
        .and_then(|kv| serde_json::from_slice::<HostInfo>(&kv.value).ok())
        .ok_or_else(|| format!("host `{host}` is not in the run"))?;
    let share = info
        .logs
        .ok_or_else(|| format!("host `{host}` does not share its logs"))?;
    let response = http
        .get(format!("{}/logs/{node}?lines={lines}", share.url))
        .bearer_auth(&share.token)
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("host `{host}` ({}): {e}", share.url))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("host `{host}` answered {status}: {text}"));
    }
    Ok(text.lines().map(str::to_owned).collect())
}
