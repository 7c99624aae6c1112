//! Health checks: one probe attempt of each kind, and the adaptive loop that waits for a
//! service to become ready.
//!
//! Probing starts right after spawn and backs off in proportion to the time waited so far, up
//! to `interval`, so a service that becomes ready is seen within milliseconds of it. A probe
//! costs the service something (a connection, a database session, a Perl interpreter for
//! `pg_isready`): the pause before the next attempt is never shorter than the last attempt
//! took, so probing never takes more than half of what the service gives it. With hedging
//! (`parallel_health_checks = true`, the default) a second attempt starts only when the first
//! has been out twice as long as attempts usually take, never more than two in flight; without,
//! one at a time. The first success wins.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::engine::config::{Health, Probe};

/// The shortest pause between attempts.
const MIN_PAUSE: Duration = Duration::from_millis(1);
/// The pause between attempts is this fraction of the time waited so far (capped at `interval`),
/// so a service is seen ready at most ~1.5 % of its own startup time late.
const PAUSE_DIVISOR: u32 = 64;

/// Attempts in flight at once with hedging; one without.
const HEDGED_IN_FLIGHT: usize = 2;

/// The pause before the next attempt, `waited` after spawn, when the last attempt took `cost`.
fn pause_after(waited: Duration, interval: Duration, cost: Duration) -> Duration {
    (waited / PAUSE_DIVISOR)
        .clamp(MIN_PAUSE, interval.max(MIN_PAUSE))
        .max(cost)
}

/// What an attempt may need besides the probe itself.
#[derive(Debug, Clone)]
pub struct ProbeContext {
    pub http: reqwest::Client,
    pub cwd: PathBuf,
    pub env: BTreeMap<String, String>,
    /// Set by the output reader when a line matches a `log` probe.
    pub log_matched: Option<watch::Receiver<bool>>,
}

impl ProbeContext {
    /// The context for probing `node`: its working directory and its full environment.
    pub fn for_node(
        http: &reqwest::Client,
        config: &crate::engine::config::Config,
        node: &crate::engine::config::Node,
    ) -> Self {
        Self {
            http: http.clone(),
            cwd: node.cwd.clone(),
            env: crate::engine::process::node_env(&config.env, node)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            log_matched: None,
        }
    }
}

/// An HTTP client for probes: no proxy (targets are local), no connection reuse.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .expect("the HTTP client builds without TLS or proxies")
}

/// One attempt of `probe`, bounded by `timeout`.
pub async fn attempt(probe: &Probe, timeout: Duration, ctx: &ProbeContext) -> Result<(), String> {
    match tokio::time::timeout(timeout, attempt_unbounded(probe, ctx)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "{} did not answer within {}",
            probe.describe(),
            humantime::format_duration(timeout)
        )),
    }
}

async fn attempt_unbounded(probe: &Probe, ctx: &ProbeContext) -> Result<(), String> {
    match probe {
        // Readiness that is pushed, not polled: nothing to probe again.
        Probe::Spawned | Probe::Exited | Probe::Notify | Probe::ReadyFd { .. } => Ok(()),
        Probe::Tcp { host, port } => tcp(host, *port).await,
        Probe::Http { url } => http(&ctx.http, url).await,
        Probe::Exec { argv } => exec(argv, ctx).await,
        Probe::Log { pattern } => match &ctx.log_matched {
            Some(rx) if *rx.borrow() => Ok(()),
            _ => Err(format!("no output line matched /{}/ yet", pattern.as_str())),
        },
    }
}

/// The addresses a host stands for; `localhost` is both loopbacks, whatever /etc/hosts says.
/// Names are resolved on tokio's blocking pool, never on the async threads.
async fn addresses(host: &str, port: u16) -> Vec<SocketAddr> {
    if host == "localhost" {
        return vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
        ];
    }
    match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map(Iterator::collect)
            .unwrap_or_default(),
    }
}

/// Succeeds when any of the host's addresses accepts a connection.
async fn tcp(host: &str, port: u16) -> Result<(), String> {
    let addrs = addresses(host, port).await;
    if addrs.is_empty() {
        return Err(format!("cannot resolve {host}"));
    }
    let mut attempts: JoinSet<std::io::Result<()>> = JoinSet::new();
    for addr in addrs {
        attempts.spawn(async move { TcpStream::connect(addr).await.map(drop) });
    }
    let mut last_error = String::new();
    while let Some(result) = attempts.join_next().await {
        match result {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => last_error = e.to_string(),
            Err(e) => last_error = e.to_string(),
        }
    }
    Err(format!("tcp {host}:{port}: {last_error}"))
}

/// Any 2xx answer. A `localhost` URL is tried on 127.0.0.1 and ::1 at once.
async fn http(client: &reqwest::Client, url: &str) -> Result<(), String> {
    let urls: Vec<String> = match url.split_once("://localhost") {
        Some((scheme, rest)) => vec![
            format!("{scheme}://127.0.0.1{rest}"),
            format!("{scheme}://[::1]{rest}"),
        ],
        None => vec![url.to_owned()],
    };
    let mut attempts: JoinSet<Result<(), String>> = JoinSet::new();
    for target in urls {
        let client = client.clone();
        attempts.spawn(async move {
            let response = client
                .get(&target)
                .send()
                .await
                .map_err(|e| error_chain(&e))?;
            if response.status().is_success() {
                Ok(())
            } else {
                Err(format!("answered {}", response.status()))
            }
        });
    }
    let mut last_error = String::new();
    while let Some(result) = attempts.join_next().await {
        match result {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => last_error = e,
            Err(e) => last_error = e.to_string(),
        }
    }
    Err(format!("http {url}: {last_error}"))
}

/// reqwest's top-level message hides the cause ("connection refused"); show the innermost.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut inner = error;
    while let Some(source) = inner.source() {
        inner = source;
    }
    inner.to_string()
}

async fn exec(argv: &[String], ctx: &ProbeContext) -> Result<(), String> {
    let (program, args) = argv.split_first().ok_or("empty exec probe")?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .current_dir(std::path::absolute(&ctx.cwd).map_err(|e| format!("exec {program}: {e}"))?)
        .envs(&ctx.env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    crate::engine::containment::join_in_child(command.as_std_mut(), &ctx.cwd)
        .map_err(|e| format!("exec {program}: {e}"))?;
    let mut child = crate::engine::containment::spawn(|| command.spawn())
        .map_err(|e| format!("exec {program}: {e}"))?;
    // If the attempt times out this future is dropped: kill_on_drop ends the probe itself and
    // the guard its process group (through the leader's pidfd: by then the leader may have been
    // reaped and its number reused).
    let _guard = child
        .id()
        .map(|pid| ExecGuard(crate::engine::process::ProcessGroup::of_child(pid)));
    let status = child.wait().await.map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "exec {program}: {}",
            crate::engine::process::describe_status(status)
        ))
    }
}

/// Kills an exec probe's process group when the attempt ends, however it ends.
struct ExecGuard(crate::engine::process::ProcessGroup);

impl Drop for ExecGuard {
    fn drop(&mut self) {
        let _ = self.0.signal(nix::sys::signal::Signal::SIGKILL);
    }
}

/// What probing a node cost: attempts started, and the time they took, added up (measured,
/// not estimated; attempts still out when another succeeded count with what they had taken).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbeTally {
    pub sent: u32,
    pub busy: Duration,
}

/// Probes until the first success: waiting is not failing, so a failed attempt never ends
/// the wait (only the caller's `startup_timeout`, or the process exiting, does). `seen` hears
/// every failed attempt, so that one can tell why a node is not ready yet; `tally` what the
/// probing cost so far (the caller keeps it if this future is dropped).
pub async fn wait_until_healthy(
    health: &Health,
    hedged: bool,
    spawned_at: Instant,
    ctx: &ProbeContext,
    seen: &(dyn Fn(&str) + Send + Sync),
    tally: &std::sync::Mutex<ProbeTally>,
) {
    if let Probe::Log { .. } = health.probe {
        return wait_for_log_line(ctx).await;
    }
    let count = |sent: u32, busy: Duration| {
        let mut t = tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        t.sent += sent;
        t.busy += busy;
    };
    let mut in_flight: JoinSet<(Result<(), String>, Instant, Duration)> = JoinSet::new();
    // When each attempt still in flight started, and what attempts usually cost.
    let mut started: Vec<Instant> = Vec::new();
    let mut usual: Option<Duration> = None;
    let mut next_attempt = tokio::time::Instant::now();
    let limit = if hedged { HEDGED_IN_FLIGHT } else { 1 };
    let mut timer = crate::engine::fine_timer::FineTimer::new();
    let _probing = Probing::start();
    loop {
        tokio::select! {
            () = timer.sleep_until(next_attempt, few_probing()), if in_flight.len() < limit => {
                let (probe, timeout, ctx) = (health.probe.clone(), health.timeout, ctx.clone());
                let now = Instant::now();
                started.push(now);
                count(1, Duration::ZERO);
                in_flight.spawn(async move {
                    let result = attempt(&probe, timeout, &ctx).await;
                    (result, now, now.elapsed())
                });
                // A hedge, if this one is still out when it is overdue (without hedging the
                // branch stays closed while an attempt is in flight).
                next_attempt = tokio::time::Instant::from_std(now + hedge_after(usual, health));
            }
            Some(result) = in_flight.join_next(), if !in_flight.is_empty() => {
                let (outcome, began, cost) = result
                    .unwrap_or_else(|e| (Err(e.to_string()), Instant::now(), Duration::ZERO));
                started.retain(|&s| s != began);
                tracing::trace!(probe = %health.probe.describe(), ?outcome, ?cost, "probe attempt");
                count(0, cost);
                match outcome {
                    Ok(()) => {
                        // Hedges still out are dropped now; what they took counts too.
                        let out: Duration = started.iter().map(Instant::elapsed).sum();
                        count(0, out);
                        return;
                    }
                    Err(error) => seen(&error),
                }
                usual = Some(usual.map_or(cost, |u| (u * 3 + cost) / 4));
                let paced = Instant::now() + pause_after(spawned_at.elapsed(), health.interval, cost);
                // Another attempt still out: the next one is a hedge for it, not a third.
                let due = match started.iter().min() {
                    Some(&out_since) => paced.max(out_since + hedge_after(usual, health)),
                    None => paced,
                };
                next_attempt = tokio::time::Instant::from_std(due);
            }
        }
    }
}

/// How many nodes are waiting for readiness by probing, right now.
static PROBING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Counts a node in [`PROBING`] while it lives.
struct Probing;

impl Probing {
    fn start() -> Self {
        PROBING.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self
    }
}

impl Drop for Probing {
    fn drop(&mut self) {
        PROBING.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// True while no more nodes are probed at once than there are CPUs: pauses between attempts
/// are then kept to the microsecond (on a chain, where each level waits for the one before,
/// that is most of what dagstart adds per level); with more, they end on the runtime's
/// millisecond tick, which wakes them together.
fn few_probing() -> bool {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cpus = *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from));
    PROBING.load(std::sync::atomic::Ordering::Relaxed) <= cpus
}

/// How long an attempt may be out before a hedge starts beside it: twice what attempts
/// usually take, or half the timeout before any has come back.
fn hedge_after(usual: Option<Duration>, health: &Health) -> Duration {
    usual.map_or(health.timeout / 2, |u| (u * 2).max(MIN_PAUSE))
}

async fn wait_for_log_line(ctx: &ProbeContext) {
    let Some(mut rx) = ctx.log_matched.clone() else {
        // Not reachable: the runner always watches the output of a node with a log probe.
        return std::future::pending().await;
    };
    if rx.wait_for(|matched| *matched).await.is_ok() {
        return;
    }
    // The output closed without a match. That is the process exiting (the caller's exit branch
    // reports it with its status) or closing its pipes; then only startup_timeout can end it.
    std::future::pending().await
}
