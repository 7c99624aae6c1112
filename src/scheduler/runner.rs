//! One task per started node: spawn, wait for readiness, retry, then watch the process until
//! it exits or is told to stop. It reports to the scheduler; it never touches other nodes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::config::{Config, NodeKind, Probe};
use crate::event::{EventKind, EventSink};
use crate::health::{self, ProbeContext};
use crate::process::{self, LineSink, LogWatch, ProcessGroup, Spawned, StopReport};

/// Lines of output kept per node for failure reports.
pub(crate) const TAIL_LINES: usize = 20;
/// Pause before the first retry; it doubles per retry up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long to wait for the output pipes to drain after the process ended.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// What the scheduler can ask of a runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeControl {
    /// Graceful stop: stop signal to the group, grace period, then SIGKILL.
    Stop,
}

/// What a runner reports. `Failed`, `Completed`, `Exited` and `Stopped` are its last message.
#[derive(Debug)]
pub(crate) enum RunnerMsg {
    Spawned {
        pid: u32,
        group: ProcessGroup,
        attempt: u32,
    },
    Ready,
    Retrying {
        attempt: u32,
        reason: String,
        delay: Duration,
    },
    Failed {
        reason: String,
        tail: Vec<String>,
    },
    /// A component exited 0.
    Completed,
    /// A service ended on its own after it was ready.
    Exited {
        status: String,
        tail: Vec<String>,
    },
    Stopped {
        report: StopReport,
    },
}

impl RunnerMsg {
    pub(crate) fn is_last(&self) -> bool {
        matches!(
            self,
            RunnerMsg::Failed { .. }
                | RunnerMsg::Completed
                | RunnerMsg::Exited { .. }
                | RunnerMsg::Stopped { .. }
        )
    }
}

/// Everything a runner needs, cloned into its task.
#[derive(Clone)]
pub(crate) struct RunnerContext {
    pub config: Arc<Config>,
    pub node: usize,
    pub parallel_health_checks: bool,
    pub http: reqwest::Client,
    pub events: EventSink,
    pub to_scheduler: mpsc::UnboundedSender<(usize, RunnerMsg)>,
}

impl RunnerContext {
    fn report(&self, msg: RunnerMsg) {
        let _ = self.to_scheduler.send((self.node, msg));
    }
}

/// How one start attempt ended.
enum AttemptEnd {
    Ready,
    Failed(String),
    Told(NodeControl),
}

/// Runs a node through its start attempts and, for a service, supervises it afterwards.
pub(crate) async fn run(ctx: RunnerContext, mut control: mpsc::UnboundedReceiver<NodeControl>) {
    let node = &ctx.config.nodes[ctx.node];
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
    let mut backoff = FIRST_BACKOFF;
    let attempts = node.retries + 1;
    for attempt in 1..=attempts {
        let (mut spawned, log_matched) = match spawn(&ctx, &tail) {
            Ok(s) => s,
            Err(reason) => {
                if attempt == attempts {
                    return ctx.report(RunnerMsg::Failed {
                        reason,
                        tail: tail_lines(&tail),
                    });
                }
                if wait_backoff(&ctx, attempt, reason, &mut backoff, &mut control)
                    .await
                    .is_err()
                {
                    return ctx.report(RunnerMsg::Stopped {
                        report: not_running(),
                    });
                }
                continue;
            }
        };
        ctx.report(RunnerMsg::Spawned {
            pid: spawned.pid,
            group: spawned.group,
            attempt,
        });
        let end = tokio::select! {
            end = start_phase(&ctx, &mut spawned, log_matched) => end,
            Some(c) = control.recv() => AttemptEnd::Told(c),
        };
        match end {
            AttemptEnd::Ready if node.kind == NodeKind::Component => {
                drain(&mut spawned).await;
                return ctx.report(RunnerMsg::Completed);
            }
            AttemptEnd::Ready => {
                ctx.report(RunnerMsg::Ready);
                return supervise(&ctx, spawned, &tail, &mut control).await;
            }
            AttemptEnd::Told(NodeControl::Stop) => {
                let report = stop(&ctx, &mut spawned).await;
                return ctx.report(RunnerMsg::Stopped { report });
            }
            AttemptEnd::Failed(reason) => {
                process::kill(&mut spawned.child, spawned.group).await;
                drain(&mut spawned).await;
                if attempt == attempts {
                    return ctx.report(RunnerMsg::Failed {
                        reason,
                        tail: tail_lines(&tail),
                    });
                }
                if wait_backoff(&ctx, attempt, reason, &mut backoff, &mut control)
                    .await
                    .is_err()
                {
                    return ctx.report(RunnerMsg::Stopped {
                        report: not_running(),
                    });
                }
            }
        }
    }
}

fn not_running() -> StopReport {
    StopReport {
        status: None,
        killed: false,
        took: Duration::ZERO,
    }
}

/// Tells the scheduler about the retry and sleeps; `Err` when told to stop meanwhile.
async fn wait_backoff(
    ctx: &RunnerContext,
    attempt: u32,
    reason: String,
    backoff: &mut Duration,
    control: &mut mpsc::UnboundedReceiver<NodeControl>,
) -> Result<(), ()> {
    let delay = *backoff;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    ctx.report(RunnerMsg::Retrying {
        attempt,
        reason,
        delay,
    });
    tokio::select! {
        () = tokio::time::sleep(delay) => Ok(()),
        Some(_) = control.recv() => Err(()),
    }
}

fn spawn(
    ctx: &RunnerContext,
    tail: &Arc<Mutex<VecDeque<String>>>,
) -> Result<(Spawned, Option<watch::Receiver<bool>>), String> {
    let node = &ctx.config.nodes[ctx.node];
    let (log_watch, log_matched) = match &node.health.probe {
        Probe::Log { pattern } => {
            let (tx, rx) = watch::channel(false);
            (
                Some(LogWatch {
                    pattern: pattern.clone(),
                    matched: tx,
                }),
                Some(rx),
            )
        }
        _ => (None, None),
    };
    let sink = line_sink(ctx, tail.clone());
    let spawned = process::spawn(node, &ctx.config.env, sink, log_watch).map_err(|e| {
        format!(
            "cannot start `{}`: {e}",
            node.command.argv().first().map_or("", String::as_str)
        )
    })?;
    Ok((spawned, log_matched))
}

/// Sends each line to the event stream and keeps the last few for failure reports.
fn line_sink(ctx: &RunnerContext, tail: Arc<Mutex<VecDeque<String>>>) -> LineSink {
    let events = ctx.events.clone();
    let node = ctx.node;
    Arc::new(move |stream, line: String| {
        {
            let mut tail = tail
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line.clone());
        }
        events.node(node, EventKind::Output { stream, line });
    })
}

fn tail_lines(tail: &Arc<Mutex<VecDeque<String>>>) -> Vec<String> {
    tail.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .cloned()
        .collect()
}

/// From spawn to ready: a component must exit 0, a service must pass its health check, both
/// within `startup_timeout`.
async fn start_phase(
    ctx: &RunnerContext,
    spawned: &mut Spawned,
    log_matched: Option<watch::Receiver<bool>>,
) -> AttemptEnd {
    let node = &ctx.config.nodes[ctx.node];
    let spawned_at = Instant::now();
    let timeout = node.startup_timeout;
    let budget = humantime::format_duration(timeout);
    if node.kind == NodeKind::Component {
        return match tokio::time::timeout(timeout, spawned.child.wait()).await {
            Ok(Ok(status)) if status.success() => AttemptEnd::Ready,
            Ok(Ok(status)) => {
                AttemptEnd::Failed(format!("exited with {}", process::describe_status(status)))
            }
            Ok(Err(e)) => AttemptEnd::Failed(format!("cannot wait for it: {e}")),
            Err(_) => AttemptEnd::Failed(format!("did not complete within {budget}")),
        };
    }
    let probe_ctx = ProbeContext {
        http: ctx.http.clone(),
        cwd: node.cwd.clone(),
        env: process::node_env(&ctx.config.env, node)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        log_matched,
    };
    let health = &node.health;
    tokio::select! {
        result = health::wait_until_healthy(health, ctx.parallel_health_checks, spawned_at, &probe_ctx) => match result {
            Ok(()) => AttemptEnd::Ready,
            Err(u) => AttemptEnd::Failed(format!(
                "health check failed {} times in a row ({}); if it needs longer to start, set health.start_period",
                u.failures, u.last_error
            )),
        },
        status = spawned.child.wait() => AttemptEnd::Failed(match status {
            Ok(s) => format!("exited before it was ready ({})", process::describe_status(s)),
            Err(e) => format!("cannot wait for it: {e}"),
        }),
        () = tokio::time::sleep(timeout) => AttemptEnd::Failed(format!(
            "not ready within {budget} (waited for {})",
            health.probe.describe()
        )),
    }
}

/// After ready: wait for the service to exit on its own, or to be told to stop.
async fn supervise(
    ctx: &RunnerContext,
    mut spawned: Spawned,
    tail: &Arc<Mutex<VecDeque<String>>>,
    control: &mut mpsc::UnboundedReceiver<NodeControl>,
) {
    tokio::select! {
        status = spawned.child.wait() => {
            // Whatever the leader left behind in its group must not outlive it.
            let _ = spawned.group.signal(nix::sys::signal::Signal::SIGKILL);
            drain(&mut spawned).await;
            let status = match status {
                Ok(s) => process::describe_status(s),
                Err(e) => e.to_string(),
            };
            ctx.report(RunnerMsg::Exited { status, tail: tail_lines(tail) });
        }
        Some(NodeControl::Stop) = control.recv() => {
            let report = stop(ctx, &mut spawned).await;
            ctx.report(RunnerMsg::Stopped { report });
        }
    }
}

async fn stop(ctx: &RunnerContext, spawned: &mut Spawned) -> StopReport {
    let node = &ctx.config.nodes[ctx.node];
    let report = process::stop(
        &mut spawned.child,
        spawned.group,
        node.stop_signal,
        node.stop_timeout,
    )
    .await;
    drain(spawned).await;
    report
}

/// Waits until the output readers have forwarded every line, so no output is lost.
async fn drain(spawned: &mut Spawned) {
    for reader in spawned.readers.drain(..) {
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, reader).await;
    }
}
