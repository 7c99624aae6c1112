//! The runner of a node that runs on another host of the cluster: it starts nothing, it
//! follows the state that host publishes (through [`crate::engine::cluster`]) and reports it
//! to the core like any runner, so that start conditions, restarts along edges and the stop
//! order work across hosts as they do on one.
//!
//! - Starting: it waits for the node to be ready (or completed) on its host, and says what it
//!   waits on as the latest probe answer; a node that failed for good there fails here.
//! - Ready: a new instance, another state, or the key gone (the host's lease expired) ends
//!   this instance as an exit; the core restarts the mirror, which waits for the node again.
//! - Told to stop: while the whole run stops, it reports stopped only once the node really
//!   stopped on its host (so nothing it needs here stops before it); otherwise (this host
//!   leaves alone, or a user stop here) at once: the node is not this host's to stop.

use tokio::sync::{mpsc, watch};

use super::Report;
use super::runner::{NodeControl, RunnerMsg};
use crate::engine::cluster::{NodeInfo, Phase, StopBarrier};

/// What a mirror needs: where to report, and the node's published state.
pub(crate) struct MirrorContext {
    pub node: usize,
    pub instance: u64,
    pub host: String,
    pub to_shell: mpsc::UnboundedSender<RunnerMsg>,
    pub feed: watch::Receiver<Option<NodeInfo>>,
    pub phase: watch::Receiver<Phase>,
    pub barrier: StopBarrier,
}

impl MirrorContext {
    fn report(&self, report: Report) {
        let _ = self.to_shell.send(RunnerMsg {
            node: self.node,
            instance: self.instance,
            report,
            group: None,
        });
    }
}

pub(crate) async fn run(mut ctx: MirrorContext, mut control: mpsc::UnboundedReceiver<NodeControl>) {
    let Some(instance) = wait_until_up(&mut ctx, &mut control).await else {
        return;
    };
    loop {
        tokio::select! {
            told = control.recv() => {
                if told.is_some() {
                    stop(&mut ctx).await;
                }
                return;
            }
            changed = ctx.feed.changed() => {
                let now = ctx.feed.borrow_and_update().clone();
                // While the run stops, a node going down on its host is the shutdown itself:
                // the stop of this mirror (once nothing here needs it) waits for it.
                if *ctx.phase.borrow() == Phase::Stopping && changed.is_ok() {
                    continue;
                }
                if changed.is_err() || !still(&now, instance) {
                    let status = match &now {
                        None => format!("host `{}` left the run or was lost", ctx.host),
                        Some(info) => format!("{} on host `{}`", info.state, info.host),
                    };
                    ctx.report(Report::Exited { status, success: false, tail: Vec::new() });
                    return;
                }
            }
        }
    }
}

/// Waits for the node to come up on its host; the published instance it came up as, or
/// `None` when this instance has ended (reported).
async fn wait_until_up(
    ctx: &mut MirrorContext,
    control: &mut mpsc::UnboundedReceiver<NodeControl>,
) -> Option<u64> {
    let mut last_said = String::new();
    loop {
        let now = ctx.feed.borrow_and_update().clone();
        match &now {
            Some(info) if info.state == "ready" => {
                ctx.report(Report::Ready);
                return Some(info.instance);
            }
            Some(info) if info.state == "completed" => {
                ctx.report(Report::Completed);
                return None;
            }
            Some(info) if info.failed_for_good() => {
                let why = info.last.clone().unwrap_or_else(|| info.state.clone());
                ctx.report(Report::Failed {
                    reason: format!("on host `{}`: {why}", info.host),
                    tail: Vec::new(),
                });
                return None;
            }
            _ => {}
        }
        let waiting = match &now {
            None => format!("waiting for host `{}` to publish it", ctx.host),
            Some(info) => format!("{} on host `{}`", info.state, info.host),
        };
        if waiting != last_said {
            ctx.report(Report::Probe(waiting.clone()));
            last_said = waiting;
        }
        tokio::select! {
            told = control.recv() => {
                if told.is_some() {
                    stop(ctx).await;
                }
                return None;
            }
            changed = ctx.feed.changed() => {
                if changed.is_err() {
                    return None;
                }
            }
        }
    }
}

/// The node is still the ready instance this mirror reported.
fn still(now: &Option<NodeInfo>, instance: u64) -> bool {
    now.as_ref()
        .is_some_and(|info| info.instance == instance && info.is_up())
}

async fn stop(ctx: &mut MirrorContext) {
    let started = tokio::time::Instant::now();
    if *ctx.phase.borrow() == Phase::Stopping {
        // Stopped (or gone) on its host: only then may what it needs here stop. Its state is
        // final once its host starts nothing more (a start may be on its way until then).
        ctx.barrier.stopped_on(&ctx.host, &mut ctx.feed).await;
    }
    ctx.report(Report::Stopped {
        status: format!("stopped on host `{}`", ctx.host),
        killed: false,
        took: started.elapsed(),
    });
}
