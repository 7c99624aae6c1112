//! Watching files: services.toml for `run --watch`, and each node's `watch` globs.
//!
//! Both poll modification times (every 250 ms here; no inotify limits to run into, and the
//! same on every filesystem) and act once what they see has been stable for a moment, so one
//! editor save is one reload or one restart.

use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use crate::engine::control::ReloadSource;
use crate::engine::event::{EventKind, EventSink};
use crate::engine::lifecycle::{Control, NodeAction};

const POLL: Duration = Duration::from_millis(250);
const SETTLE: Duration = Duration::from_millis(200);

/// `run --watch`: reloads when services.toml changes (once its modification time has been
/// stable for a moment, so an editor's save is one reload).
pub async fn config_file(
    source: ReloadSource,
    control: mpsc::UnboundedSender<Control>,
    events: EventSink,
) {
    let path = source.path.clone();
    let modified = move || {
        let path = path.clone();
        blocking(move || std::fs::metadata(&path).and_then(|m| m.modified()).ok())
    };
    let mut seen = modified().await;
    while !control.is_closed() {
        settled_change(&mut seen, &modified).await;
        let response = crate::engine::control::reload(&source, &control).await;
        if !response.ok {
            events.send(None, EventKind::note(response.message));
        }
    }
}

/// A node's `watch` globs: when a matching file appears, disappears or changes, restart the
/// node (with its running dependents), as `dagstart restart NODE` does. The globs are the ones
/// the run started with.
pub async fn node_files(
    name: String,
    patterns: Vec<String>,
    control: mpsc::UnboundedSender<Control>,
    events: EventSink,
) {
    let look = move || {
        let patterns = patterns.clone();
        blocking(move || snapshot(&patterns))
    };
    let mut seen = look().await;
    while !control.is_closed() {
        settled_change(&mut seen, &look).await;
        events.send(
            None,
            EventKind::note(format!("{name}: watched files changed, restarting")),
        );
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = Control::Nodes {
            action: NodeAction::Restart,
            names: vec![name.clone()],
            reply,
        };
        if control.send(request).is_err() {
            return;
        }
        if let Ok(Err(reason)) = answer.await {
            events.send(
                None,
                EventKind::note(format!("{name}: not restarted: {reason}")),
            );
        }
    }
}

/// Returns once `look()` differs from `seen` and has then held still for a moment; `seen`
/// becomes the new state.
async fn settled_change<T: PartialEq, F: Future<Output = T>>(seen: &mut T, look: impl Fn() -> F) {
    loop {
        tokio::time::sleep(POLL).await;
        let now = look().await;
        if now == *seen {
            continue;
        }
        tokio::time::sleep(SETTLE).await;
        let again = look().await;
        let settled = again == now;
        *seen = again;
        if settled {
            return;
        }
    }
}

/// Runs file-system work on tokio's blocking pool: glob walks and metadata calls block.
async fn blocking<T: Send + 'static + Default>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.unwrap_or_default()
}

/// Every matching path with its modification time, in a stable order.
fn snapshot(patterns: &[String]) -> Vec<(std::path::PathBuf, Option<SystemTime>)> {
    let mut files: Vec<_> = patterns
        .iter()
        .filter_map(|p| glob::glob(p).ok())
        .flatten()
        .flatten()
        .map(|path| {
            let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
            (path, modified)
        })
        .collect();
    files.sort();
    files
}
