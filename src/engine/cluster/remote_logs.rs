//! `dagstart logs` of nodes that another host runs: fetched from that host's log endpoint,
//! which it publishes with its key (`views::log_share` serves it), and followed from where the
//! last answer ended.

use super::etcd::Etcd;
use super::keys::{HostInfo, Keys, LogShare, RunInfo};
use super::session::ClusterError;
use crate::engine::config::Config;

/// The header with which a host tells where in the node's log file its answer ends.
pub const END_HEADER: &str = "x-dagstart-end";

/// One node's log on the host that runs it, and how far it has been read.
#[derive(Debug)]
pub struct RemoteLog {
    pub node: String,
    host: String,
    share: LogShare,
    /// The byte of the log file the last answer ended at.
    end: u64,
}

/// A node of another host: its log, or why it cannot be had.
pub type Located = (String, Result<RemoteLog, String>);

/// The logs of each of `names` that another host than `local` runs. Empty when no run is
/// going on.
pub async fn locate(
    config: &Config,
    local: &str,
    names: &[&str],
) -> Result<Vec<Located>, ClusterError> {
    let (etcd, keys) = super::connect(config);
    let run = etcd
        .get(&keys.run())
        .await
        .map_err(ClusterError::Unreachable)?;
    let Some(run) = run.and_then(|kv| serde_json::from_slice::<RunInfo>(&kv.value).ok()) else {
        return Ok(Vec::new());
    };
    let mut located = Vec::new();
    for name in names {
        let Some(node) = config.node(name) else {
            continue;
        };
        let host = super::placed_on(node, &run.coordinator).to_owned();
        if host == local {
            continue;
        }
        let log = share_of(&etcd, &keys, &host).await.map(|share| RemoteLog {
            node: (*name).to_owned(),
            host,
            share,
            end: 0,
        });
        located.push(((*name).to_owned(), log));
    }
    Ok(located)
}

/// Where `host` serves its logs, as it published with its key.
async fn share_of(etcd: &Etcd, keys: &Keys, host: &str) -> Result<LogShare, String> {
    let info = etcd
        .get(&keys.host(host))
        .await
        .map_err(|e| e.to_string())?
        .and_then(|kv| serde_json::from_slice::<HostInfo>(&kv.value).ok())
        .ok_or_else(|| format!("host `{host}` is not in the run"))?;
    info.logs
        .ok_or_else(|| format!("host `{host}` does not share its logs"))
}

impl RemoteLog {
    /// The last `lines` lines; following goes on from their end.
    pub async fn tail(
        &mut self,
        http: &reqwest::Client,
        lines: usize,
    ) -> Result<Vec<String>, String> {
        self.ask(http, &format!("lines={lines}")).await
    }

    /// The lines written since the last answer.
    pub async fn since(&mut self, http: &reqwest::Client) -> Result<Vec<String>, String> {
        self.ask(http, &format!("from={}", self.end)).await
    }

    async fn ask(&mut self, http: &reqwest::Client, query: &str) -> Result<Vec<String>, String> {
        let (host, url) = (&self.host, &self.share.url);
        let response = http
            .get(format!("{url}/logs/{}?{query}", self.node))
            .bearer_auth(&self.share.token)
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| format!("host `{host}` ({url}): {e}"))?;
        let status = response.status();
        let end = response
            .headers()
            .get(END_HEADER)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let text = response.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("host `{host}` answered {status}: {text}"));
        }
        if let Some(end) = end {
            self.end = end;
        }
        Ok(text.lines().map(str::to_owned).collect())
    }
}
