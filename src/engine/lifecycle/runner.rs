//! One task per started node: spawn, wait for readiness, retry, then watch the process until
//! it exits or is told to stop. It reports to the scheduler; it never touches other nodes.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::Report;
use crate::engine::config::{Config, NodeKind, Probe};
use crate::engine::event::{EventKind, EventSink};
use crate::engine::health::{self, ProbeContext};
use crate::engine::notify::{NotifyHub, NotifyMessage, Subscription};
use crate::engine::process::ProcessGroup;
use crate::engine::process::{self, LineSink, LogWatch, SpawnExtras, Spawned, StopReport};
use crate::engine::sockets::BoundSockets;

/// Lines of output kept per node for failure reports.
pub(crate) const TAIL_LINES: usize = 20;
/// Pause before the first retry; it doubles per retry up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long to wait for the output pipes to drain after the process ended.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How often to look whether anything is left in the node's process group while draining.
const GROUP_POLL: Duration = Duration::from_millis(20);
/// Once the group is empty, how long the readers get for what is already in the pipes.
const AFTER_GROUP: Duration = Duration::from_millis(100);

/// What the scheduler can ask of a runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeControl {
    /// Graceful stop: stop signal to the group, grace period, then SIGKILL.
    Stop,
}

/// A runner's report on its instance, as it travels to the shell.
#[derive(Debug)]
pub(crate) struct RunnerMsg {
    pub node: usize,
    pub instance: u64,
    pub report: Report,
    /// With `Report::Spawned`: the new process group, which the shell keeps for its sweeps.
    pub group: Option<ProcessGroup>,
}

/// Everything a runner needs, cloned into its task.
#[derive(Clone)]
pub(crate) struct RunnerContext {
    pub config: Arc<Config>,
    pub node: usize,
    pub instance: u64,
    pub parallel_health_checks: bool,
    pub http: reqwest::Client,
    pub events: EventSink,
    pub to_shell: mpsc::UnboundedSender<RunnerMsg>,
    pub notify: Option<NotifyHub>,
    pub sockets: Arc<BoundSockets>,
    pub run_id: String,
}

impl RunnerContext {
    fn report(&self, report: Report) {
        self.send(report, None);
    }

    fn report_spawned(&self, spawned: &Spawned, attempt: u32) {
        let report = Report::Spawned {
            pid: spawned.pid,
            attempt,
        };
        self.send(report, Some(spawned.group.clone()));
    }

    fn send(&self, report: Report, group: Option<ProcessGroup>) {
        let _ = self.to_shell.send(RunnerMsg {
            node: self.node,
            instance: self.instance,
            report,
            group,
        });
    }
}

/// How one start attempt ended.
enum AttemptEnd {
    Ready,
    Failed(String),
    Told(NodeControl),
}

/// The ways a started process can tell that it is ready, besides being probed.
#[derive(Default)]
struct Signals {
    log_matched: Option<watch::Receiver<bool>>,
    ready_pipe: Option<OwnedFd>,
    notify: Option<Subscription>,
}

type Tail = Arc<Mutex<VecDeque<String>>>;

/// Runs a node through its start attempts and, for a service, supervises it afterwards.
pub(crate) async fn run(ctx: RunnerContext, mut control: mpsc::UnboundedReceiver<NodeControl>) {
    let node = &ctx.config.nodes[ctx.node];
    let tail: Tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
    let mut backoff = FIRST_BACKOFF;
    let attempts = node.retries + 1;
    for attempt in 1..=attempts {
        let reason = match spawn(&ctx, &tail) {
            Ok((mut spawned, signals)) => {
                ctx.report_spawned(&spawned, attempt);
                let (end, notify) = tokio::select! {
                    result = start_phase(&ctx, &mut spawned, signals) => result,
                    Some(c) = control.recv() => (AttemptEnd::Told(c), None),
                };
                match end {
                    AttemptEnd::Ready if node.kind == NodeKind::Component => {
                        drain(&mut spawned).await;
                        return ctx.report(Report::Completed);
                    }
                    AttemptEnd::Ready => {
                        ctx.report(Report::Ready);
                        return supervise(&ctx, spawned, notify, &tail, &mut control).await;
                    }
                    AttemptEnd::Told(NodeControl::Stop) => {
                        let report = stop(&ctx, &mut spawned).await;
                        return ctx.report(stopped(report));
                    }
                    AttemptEnd::Failed(reason) => {
                        process::kill(&mut spawned).await;
                        drain(&mut spawned).await;
                        reason
                    }
                }
            }
            Err(reason) => reason,
        };
        if attempt == attempts {
            return ctx.report(Report::Failed {
                reason,
                tail: tail_lines(&tail),
            });
        }
        if wait_backoff(&ctx, attempt, reason, &mut backoff, &mut control)
            .await
            .is_err()
        {
            return ctx.report(stopped(not_running()));
        }
    }
}

fn stopped(report: StopReport) -> Report {
    Report::Stopped {
        status: report
            .status
            .map_or_else(|| "not running".to_owned(), process::describe_status),
        killed: report.killed,
        took: report.took,
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
    ctx.report(Report::Retrying {
        attempt,
        reason,
        delay,
    });
    tokio::select! {
        () = tokio::time::sleep(delay) => Ok(()),
        Some(_) = control.recv() => Err(()),
    }
}

/// Spawns the node with whatever its readiness protocol needs: a log watch, a readiness pipe,
/// NOTIFY_SOCKET, or its listening sockets.
fn spawn(ctx: &RunnerContext, tail: &Tail) -> Result<(Spawned, Signals), String> {
    let node = &ctx.config.nodes[ctx.node];
    let mut signals = Signals::default();
    let mut extras = SpawnExtras {
        listen_fds: ctx.sockets.of(ctx.node),
        cgroup: crate::engine::cgroup::NodeCgroup::for_node(ctx.node, &node.name),
        ..SpawnExtras::default()
    };
    if !ctx.run_id.is_empty() {
        extras.env.push((
            crate::engine::guardian::RUN_MARKER.into(),
            ctx.run_id.clone(),
        ));
    }
    let mut log_watch = None;
    match &node.health.probe {
        Probe::Log { pattern } => {
            let (tx, rx) = watch::channel(false);
            log_watch = Some(LogWatch {
                pattern: pattern.clone(),
                matched: tx,
            });
            signals.log_matched = Some(rx);
        }
        Probe::ReadyFd { fd } => {
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| format!("cannot create the readiness pipe: {e}"))?;
            extras.ready_fd = Some((*fd, write));
            signals.ready_pipe = Some(read);
        }
        Probe::Notify => {
            if let Some(hub) = &ctx.notify {
                let other_user = node
                    .run_as
                    .as_ref()
                    .is_some_and(|r| r.uid != nix::unistd::geteuid().as_raw());
                extras
                    .env
                    .push(("NOTIFY_SOCKET".into(), hub.address_for(other_user)));
            }
            if let Some(watchdog) = node.watchdog {
                extras
                    .env
                    .push(("WATCHDOG_USEC".into(), watchdog.as_micros().to_string()));
            }
        }
        _ => {}
    }
    let sink = line_sink(ctx, tail.clone());
    let spawned = process::spawn(node, &ctx.config.env, sink, log_watch, extras).map_err(|e| {
        format!(
            "cannot start `{}`: {e} (the node is declared at {})",
            node.command.argv().first().map_or("", String::as_str),
            ctx.config.place(&node.name_span)
        )
    })?;
    // Datagrams the service sent before this subscription are kept for it by the hub.
    signals.notify = ctx
        .notify
        .as_ref()
        .filter(|_| node.health.probe == Probe::Notify)
        .map(|hub| hub.subscribe(&spawned.group));
    Ok((spawned, signals))
}

/// Sends each line to the event stream and keeps the last few for failure reports.
fn line_sink(ctx: &RunnerContext, tail: Tail) -> LineSink {
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
        let events = events.clone();
        Box::pin(async move { events.line(node, stream, line).await })
    })
}

fn tail_lines(tail: &Tail) -> Vec<String> {
    tail.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .cloned()
        .collect()
}

/// From spawn to ready: a component must exit 0, a service must pass its readiness check, both
/// within `startup_timeout` (which EXTEND_TIMEOUT_USEC can push back). Hands the notify
/// subscription on, for the watchdog.
async fn start_phase(
    ctx: &RunnerContext,
    spawned: &mut Spawned,
    signals: Signals,
) -> (AttemptEnd, Option<Subscription>) {
    let node = &ctx.config.nodes[ctx.node];
    let spawned_at = Instant::now();
    let budget = humantime::format_duration(node.startup_timeout);
    if node.kind == NodeKind::Component {
        let end = match tokio::time::timeout(node.startup_timeout, spawned.child.wait()).await {
            Ok(Ok(status)) if status.success() => AttemptEnd::Ready,
            Ok(Ok(status)) => {
                AttemptEnd::Failed(format!("exited with {}", process::describe_status(status)))
            }
            Ok(Err(e)) => AttemptEnd::Failed(format!("cannot wait for it: {e}")),
            Err(_) => AttemptEnd::Failed(format!("did not complete within {budget}")),
        };
        return (end, None);
    }
    let Signals {
        log_matched,
        ready_pipe,
        mut notify,
    } = signals;
    let probe_ctx = ProbeContext {
        log_matched,
        ..ProbeContext::for_node(&ctx.http, &ctx.config, node)
    };
    let health = &node.health;
    let tally = Mutex::new(health::ProbeTally::default());
    let readiness = async {
        match (&health.probe, ready_pipe) {
            (Probe::Notify, _) => std::future::pending().await,
            (Probe::ReadyFd { fd }, Some(pipe)) => wait_for_ready_pipe(pipe, *fd).await,
            _ => {
                // Why it is not ready yet, for `status` and the live view: each new answer once.
                let last_told = Mutex::new(String::new());
                let seen = |result: &str| {
                    let mut told = last_told
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if *told != result {
                        result.clone_into(&mut told);
                        ctx.report(Report::Probe(result.to_owned()));
                    }
                };
                health::wait_until_healthy(
                    health,
                    ctx.parallel_health_checks,
                    spawned_at,
                    &probe_ctx,
                    &seen,
                    &tally,
                )
                .await;
                Ok(())
            }
        }
    };
    tokio::pin!(readiness);
    // Counted from the spawn, so the message on expiry names exactly the configured timeout.
    let mut deadline = tokio::time::Instant::from_std(spawned_at) + node.startup_timeout;
    let end = loop {
        tokio::select! {
            result = &mut readiness => break match result {
                Ok(()) => AttemptEnd::Ready,
                Err(reason) => AttemptEnd::Failed(reason),
            },
            Some(message) = next_message(&mut notify) => match message {
                NotifyMessage::Ready => break AttemptEnd::Ready,
                NotifyMessage::ExtendTimeout(more) => {
                    deadline = deadline.max(tokio::time::Instant::now() + more);
                }
                other => tell(ctx, other),
            },
            status = spawned.child.wait() => break AttemptEnd::Failed(match status {
                Ok(s) => format!("exited before it was ready ({})", process::describe_status(s)),
                Err(e) => format!("cannot wait for it: {e}"),
            }),
            () = tokio::time::sleep_until(deadline) => break AttemptEnd::Failed(format!(
                "not ready within {} (waited for {})",
                whole_millis(deadline.duration_since(tokio::time::Instant::from_std(spawned_at))),
                health.probe.describe()
            )),
        }
    };
    // What probing cost, for `report`: before the report that ends the attempt.
    let tally = *tally
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if tally.sent > 0 {
        ctx.report(Report::Probed(tally));
    }
    (end, notify)
}

/// A duration for messages, without the sub-millisecond noise of timers.
fn whole_millis(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64))
}

/// The next notify message of a subscription; never, without one.
async fn next_message(notify: &mut Option<Subscription>) -> Option<NotifyMessage> {
    match notify {
        Some(subscription) => subscription.messages.recv().await,
        None => std::future::pending().await,
    }
}

/// Shows what a service says about itself (STATUS, MAINPID, STOPPING).
fn tell(ctx: &RunnerContext, message: NotifyMessage) {
    let name = &ctx.config.nodes[ctx.node].name;
    match message {
        // Through the scheduler, which keeps it for `dagstart status`.
        NotifyMessage::Status(text) => ctx.report(Report::Status(text)),
        NotifyMessage::MainPid(pid) => ctx.events.node(
            ctx.node,
            EventKind::note(format!("{name}: main pid is {pid}")),
        ),
        NotifyMessage::Stopping => ctx.events.node(
            ctx.node,
            EventKind::note(format!("{name}: says it is stopping")),
        ),
        NotifyMessage::Ready | NotifyMessage::Watchdog | NotifyMessage::ExtendTimeout(_) => {}
    }
}

/// s6/dinit readiness: any byte on the pipe means ready; end of file before any byte means
/// the start failed.
async fn wait_for_ready_pipe(pipe: OwnedFd, fd: i32) -> Result<(), String> {
    use tokio::io::AsyncReadExt as _;
    let mut receiver = tokio::net::unix::pipe::Receiver::from_owned_fd(pipe)
        .map_err(|e| format!("cannot watch the readiness pipe: {e}"))?;
    let mut byte = [0u8; 1];
    match receiver.read(&mut byte).await {
        Ok(0) => Err(format!(
            "closed its readiness fd {fd} without writing to it"
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("readiness fd {fd}: {e}")),
    }
}

/// After ready: wait for the service to exit on its own, to miss its watchdog, to fail its
/// liveness check, or to be told to stop.
async fn supervise(
    ctx: &RunnerContext,
    mut spawned: Spawned,
    mut notify: Option<Subscription>,
    tail: &Tail,
    control: &mut mpsc::UnboundedReceiver<NodeControl>,
) {
    let node = &ctx.config.nodes[ctx.node];
    let watchdog = node.watchdog;
    let mut watchdog_deadline = watchdog.map(|w| tokio::time::Instant::now() + w);
    let liveness = liveness_failure(ctx);
    tokio::pin!(liveness);
    let (status, success) = loop {
        tokio::select! {
            status = spawned.child.wait() => break match status {
                Ok(s) => (process::describe_status(s), s.success()),
                Err(e) => (e.to_string(), false),
            },
            Some(NodeControl::Stop) = control.recv() => {
                let report = stop(ctx, &mut spawned).await;
                return ctx.report(stopped(report));
            }
            Some(message) = next_message(&mut notify) => match message {
                NotifyMessage::Watchdog => {
                    watchdog_deadline = watchdog.map(|w| tokio::time::Instant::now() + w);
                }
                other => tell(ctx, other),
            },
            () = super::shell::sleep_until_opt(watchdog_deadline) => {
                process::kill(&mut spawned).await;
                let silence = humantime::format_duration(watchdog.unwrap_or_default());
                break (format!("killed: no WATCHDOG=1 for {silence}"), false);
            }
            reason = &mut liveness => {
                process::kill(&mut spawned).await;
                break (format!("killed: {reason}"), false);
            }
        }
    };
    // Whatever the leader left behind in its group or cgroup must not outlive it.
    spawned.sweep();
    drain(&mut spawned).await;
    ctx.report(Report::Exited {
        status,
        success,
        tail: tail_lines(tail),
    });
}

/// Resolves with the reason once the liveness probe has failed `failure_threshold` times in a
/// row; never, for a service without one.
async fn liveness_failure(ctx: &RunnerContext) -> String {
    let node = &ctx.config.nodes[ctx.node];
    let Some(liveness) = &node.liveness else {
        return std::future::pending().await;
    };
    let probe_ctx = ProbeContext::for_node(&ctx.http, &ctx.config, node);
    let mut misses = 0;
    loop {
        tokio::time::sleep(liveness.interval).await;
        match health::attempt(&liveness.probe, liveness.timeout, &probe_ctx).await {
            Ok(()) => misses = 0,
            Err(error) => {
                misses += 1;
                ctx.report(Report::Health(format!(
                    "liveness check failed ({misses}/{}): {error}",
                    liveness.failure_threshold
                )));
                if misses >= liveness.failure_threshold {
                    return format!("liveness failed {misses} times in a row ({error})");
                }
            }
        }
    }
}

async fn stop(ctx: &RunnerContext, spawned: &mut Spawned) -> StopReport {
    let node = &ctx.config.nodes[ctx.node];
    let report = process::stop(spawned, node.stop_signal, node.stop_timeout).await;
    drain(spawned).await;
    report
}

/// Waits until the output readers have forwarded every line, so no output is lost.
///
/// A process that left the group (a `setsid` escapee) may keep the pipes open for as long as
/// it lives: once nothing is left in the group, the readers get a moment to forward what is
/// already in the pipes and are then left to finish on their own (they still forward every
/// line), so an escapee never holds up a stop or the notice of an exit.
async fn drain(spawned: &mut Spawned) {
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    let group = spawned.group.clone();
    let group_gone = async move {
        while group.is_alive() {
            tokio::time::sleep(GROUP_POLL).await;
        }
        tokio::time::sleep(AFTER_GROUP).await;
    };
    tokio::pin!(group_gone);
    for reader in spawned.readers.drain(..) {
        tokio::select! {
            _ = reader => {}
            () = &mut group_gone => return,
            () = tokio::time::sleep_until(deadline) => return,
        }
    }
}
