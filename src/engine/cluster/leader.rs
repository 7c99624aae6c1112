//! What the run's leader does: turn a request to stop the run into the run's phase. The
//! leader is the host whose candidacy is the oldest (the lowest create revision under
//! `/election/`); its candidacy lives on its lease, so a dead leader's goes by itself and the
//! next oldest leads. Its write is a transaction that lands only while its candidacy is the
//! one it had when it decided: a leader that lost its lease in between writes nothing.

use std::sync::Arc;

use tokio::sync::watch;

use super::etcd::Etcd;
use super::keys::{Keys, Phase, RunInfo, StopRequest};
use super::session::RETRY;
use super::watcher::Leader;

pub(super) async fn run(
    etcd: Arc<Etcd>,
    keys: Keys,
    host: String,
    run: RunInfo,
    mut leader: watch::Receiver<Leader>,
    mut stop: watch::Receiver<Option<StopRequest>>,
) {
    loop {
        let leading = leader
            .borrow_and_update()
            .as_ref()
            .filter(|(who, _)| *who == host)
            .map(|(_, revision)| *revision);
        let requested = stop.borrow_and_update().is_some();
        if let (Some(revision), true) = (leading, requested) {
            let stopping = RunInfo {
                phase: Phase::Stopping,
                ..run.clone()
            };
            let value = serde_json::to_vec(&stopping).unwrap_or_default();
            match etcd
                .put_guarded(&keys.candidate(&host), revision, &keys.run(), &value)
                .await
            {
                Ok(true) => return,
                // Not leading any more: the next leader sees the same request.
                Ok(false) => {}
                Err(_) => {
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            }
        }
        tokio::select! {
            changed = leader.changed() => if changed.is_err() { return },
            changed = stop.changed() => if changed.is_err() { return },
        }
    }
}
