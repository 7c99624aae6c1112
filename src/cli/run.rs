//! `dagstart run`: load, select, preflight, then drive the scheduler with signals and the
//! optional `--` command, and turn how it ended into an exit code.

use std::path::Path;
use std::sync::{Arc, PoisonError};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

use crate::cli::error::{Error, exit_code};
use crate::engine::config::{Config, Environment, MaxWorkers, Probe};
use crate::engine::event::EventSink;
use crate::engine::graph::Graph;
use crate::engine::lifecycle::{Control, Options, Outcome, RunSetup, Scheduler, Startup};
use crate::engine::notify::NotifyHub;
use crate::engine::pidfd::Pidfd;
use crate::engine::sockets::BoundSockets;
use crate::views::logfiles::Output;

/// A private directory for the run's sockets (mode 0700, an unpredictable name from
/// `mkdtemp`, so another local user can neither guess nor pre-create it), removed when the run
/// ends (by the guardian when dagstart was killed). It lives in the temp dir because socket
/// paths are limited to 108 bytes.
struct RuntimeDir(std::path::PathBuf);

/// The file in a runtime directory that names the dagstart it belongs to.
const OWNER_FILE: &str = "owner";

impl RuntimeDir {
    fn create() -> std::io::Result<Self> {
        remove_stale_runtime_dirs();
        let template = std::env::temp_dir().join(format!(
            "{}XXXXXX",
            crate::engine::guardian::RUNTIME_DIR_PREFIX
        ));
        let path = nix::unistd::mkdtemp(&template).map_err(std::io::Error::from)?;
        let dir = Self(path);
        std::fs::write(dir.0.join(OWNER_FILE), std::process::id().to_string())?;
        Ok(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Removes this user's runtime directories of earlier runs whose dagstart and guardian were
/// both killed (the guardian removes it when only dagstart was).
fn remove_stale_runtime_dirs() {
    use std::os::unix::fs::MetadataExt as _;
    let me = nix::unistd::geteuid().as_raw();
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(crate::engine::guardian::RUNTIME_DIR_PREFIX))
            && std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == me);
        let owner = std::fs::read_to_string(path.join(OWNER_FILE))
            .ok()
            .and_then(|pid| pid.trim().parse::<u32>().ok());
        if let (true, Some(pid)) = (ours, owner) {
            if !crate::engine::guardian::is_running_dagstart(pid) {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }
}

/// Which host of a `[cluster]` this process is, and whether it coordinates the run.
#[derive(Debug, Clone)]
pub struct ClusterRequest {
    pub host: String,
    pub role: crate::engine::cluster::Role,
}

/// What `dagstart run` was asked for, in the engine's terms (the command line builds it).
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// In a `[cluster]`: this process's host (`run` or `agent`).
    pub cluster: Option<ClusterRequest>,
    /// Run only these nodes and what they need; all when empty.
    pub nodes: Vec<String>,
    /// The active profiles (`--profile`, else `DAGSTART_PROFILES`).
    pub profiles: Vec<String>,
    pub sequential: bool,
    /// Reload when services.toml changes.
    pub watch: bool,
    /// Serve the web dashboard here, with these rules.
    pub dashboard: Option<(std::net::SocketAddr, crate::views::dashboard_access::Access)>,
    /// One JSON object per event on stdout instead of text.
    pub json: bool,
    /// The full-screen terminal UI instead of lines (quitting it stops the stack).
    pub ui: bool,
    /// Run this once startup is complete, then stop everything and exit with its status.
    pub command: Vec<String>,
}

/// Starts the graph of `config` (loaded and validated) and supervises it until the run ends;
/// returns the exit code.
pub fn run(mut config: Config, env: &Environment, args: RunRequest) -> Result<i32, Error> {
    let placed_for = match &args.cluster {
        Some(cluster) => Some(place_nodes(&mut config, cluster)?),
        None => None,
    };
    let graph = Graph::build(&config);
    let selected = crate::engine::selection::select(&config, &graph, &args.nodes, &args.profiles)?;
    // The nodes of other hosts are not checked, bound or spawned here.
    let local = crate::engine::cluster::local_selection(&config, &selected);
    // The control socket doubles as the lock that refuses a second run of the same project.
    let (control_listener, _control_file) = crate::engine::control::bind(&config.base_dir)?;
    raise_open_files_limit(local.iter().filter(|&&on| on).count());
    // Commands that do not resolve are said (an earlier component may build them); the
    // rest of preflight refuses to start anything.
    let missing = crate::engine::preflight::files(&config, &local);
    let unresolved: Vec<_> = crate::cli::commands::located_missing(&config, &missing)
        .into_iter()
        .filter(|p| !p.is_error())
        .collect();
    crate::cli::commands::print_problems(&config, &unresolved);
    crate::engine::preflight::check(&config, &local, &missing)?;
    // Bound before anything starts, so `listening` dependents can start at once.
    let sockets = Arc::new(BoundSockets::bind(&config, &local)?);
    let keeper = Keeper::start(control_listener, sockets)?;
    if config.settings.pid_namespace {
        // Before the runtime's threads exist: they inherit the namespace for children.
        if let Err(why) = crate::engine::containment::enter() {
            tracing::info!("the run's processes are not in a PID namespace: {}", why.0);
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("dagstart-worker")
        .build()
        .map_err(|e| Error::io("starting the async runtime", e))?;
    let result = runtime.block_on(run_graph(
        Arc::new(config),
        Arc::new(graph),
        selected,
        env.clone(),
        args,
        keeper.setup,
        placed_for,
    ));
    // Reader tasks of processes that escaped their group may still hold a pipe; do not wait.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    // Whatever is still in the namespace (an escapee that ignored everything) dies now.
    crate::engine::containment::end(std::time::Duration::from_secs(5));
    crate::engine::cgroup::end(std::time::Duration::from_secs(5));
    drop(keeper.runtime_dir);
    result
}

/// Places every node on its host for this process: an agent first waits for the run (on a
/// runtime of its own, before the run's threads exist) to learn its coordinator, which runs
/// the nodes without `host`. Returns the coordinator's name.
fn place_nodes(config: &mut Config, cluster: &ClusterRequest) -> Result<String, Error> {
    use crate::engine::cluster::Role;
    let coordinator = match cluster.role {
        Role::Coordinator => cluster.host.clone(),
        Role::Agent => {
            let waiting = |text: &str| eprintln!("dagstart: {text}");
            let found = crate::engine::cluster::find_run(config, &waiting);
            crate::cli::commands::block_on(found)??.coordinator
        }
    };
    crate::engine::cluster::localize(config, &cluster.host, &coordinator);
    Ok(coordinator)
}

/// What keeps a run from leaving anything behind, set up before any thread that spawns
/// exists: the runtime directory, and the guardian (outside the run's PID namespace, so that
/// it outlives it and can remove that directory after a kill -9).
struct Keeper {
    runtime_dir: RuntimeDir,
    setup: KeeperSetup,
}

/// The parts the run takes over: those, and what was bound before anything started.
struct KeeperSetup {
    control_listener: std::os::unix::net::UnixListener,
    sockets: Arc<BoundSockets>,
    run_id: String,
    guardian: crate::engine::guardian::Guardian,
    runtime_path: std::path::PathBuf,
}

impl Keeper {
    fn start(
        control_listener: std::os::unix::net::UnixListener,
        sockets: Arc<BoundSockets>,
    ) -> Result<Self, Error> {
        let runtime_dir =
            RuntimeDir::create().map_err(|e| Error::io("creating the runtime directory", e))?;
        let run_id = format!("{}-{}", std::process::id(), unix_nanos());
        crate::engine::guardian::become_subreaper();
        let cgroup = crate::engine::cgroup::create_run()
            .inspect_err(|why| tracing::info!("nodes get no cgroups: {why}"))
            .ok();
        let guardian = crate::engine::guardian::Guardian::start(
            &run_id,
            runtime_dir.path(),
            cgroup.as_deref(),
        )
        .map_err(|e| Error::io("starting the guardian process", e))?;
        let runtime_path = runtime_dir.path().to_owned();
        Ok(Self {
            runtime_dir,
            setup: KeeperSetup {
                control_listener,
                sockets,
                run_id,
                guardian,
                runtime_path,
            },
        })
    }
}

/// Descriptors a node holds at most while it runs (its two output pipes, a readiness pipe,
/// a pidfd or notify subscription), plus dagstart's own.
const FDS_PER_NODE: u64 = 4;
const OWN_FDS: u64 = 256;

/// Raises the soft limit of open files to the hard limit (as systemd and Go programs do), and,
/// as root, the hard limit too when the nodes need more (up to `fs.nr_open`): at the usual
/// default of 1,024 only about 250 services would fit.
fn raise_open_files_limit(nodes: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let needed = nodes as u64 * FDS_PER_NODE + OWN_FDS;
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(hard);
    if hard < needed
        && setrlimit(
            Resource::RLIMIT_NOFILE,
            needed.min(ceiling),
            needed.min(ceiling),
        )
        .is_ok()
    {
        return;
    }
    if soft < hard {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn options(config: &Config, sequential: bool, profiles: &[String]) -> Options {
    let sequential = sequential || !config.settings.parallel;
    let max_workers = match (sequential, config.settings.max_workers) {
        (true, _) => 1,
        (false, MaxWorkers::Unlimited) => usize::MAX,
        (false, MaxWorkers::Fixed(n)) => n,
        // Auto starts at one per CPU (where `AutoWorkers` starts too) and moves from there:
        // starting unlimited, nothing was ever held back, so it never moved (measured: auto
        // behaved as "everything at once", 2146 ms against 1792 ms for one per CPU).
        (false, MaxWorkers::Auto) => std::thread::available_parallelism().map_or(2, usize::from),
    };
    Options {
        max_workers,
        auto_workers: !sequential && config.settings.max_workers == MaxWorkers::Auto,
        sequential,
        parallel_health_checks: config.settings.parallel_health_checks,
        startup_timeout: config.settings.startup_timeout,
        shutdown_timeout: config.settings.shutdown_timeout,
        verify_older_than: crate::engine::lifecycle::VERIFY_OLDER_THAN,
        profiles: profiles.to_vec(),
    }
}

async fn run_graph(
    config: Arc<Config>,
    graph: Arc<Graph>,
    selected: Vec<bool>,
    env: Environment,
    args: RunRequest,
    keeper: KeeperSetup,
    placed_for: Option<String>,
) -> Result<i32, Error> {
    let json = args.json;
    let output = Output::open(config.clone(), &selected, json).map_err(|e| {
        Error::io(
            format!(
                "opening the log directory {}",
                config.settings.log_dir.display()
            ),
            e,
        )
    })?;
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let source = crate::engine::control::ReloadSource {
        path: config.path.clone(),
        env,
    };
    let output = if args.ui {
        output.without_terminal()
    } else {
        output
    };
    let output = match args.dashboard.clone() {
        Some((address, access)) => {
            let listener = crate::views::dashboard::bind(address, "metrics on /metrics").await?;
            let dashboard = crate::views::dashboard::Dashboard::new(&config, &selected);
            let steering = crate::views::dashboard::Steering {
                control: control_tx.clone(),
                source: source.clone(),
            };
            tokio::spawn(dashboard.clone().serve(listener, access, Some(steering)));
            output.with_dashboard(dashboard)
        }
        None => output,
    };
    let (events, event_rx) = EventSink::new(tokio::time::Instant::now());
    let lost_tx = control_tx.clone();
    let output = output.on_output_lost(Box::new(move |node, reason| {
        lost_tx.send(Control::OutputLost { node, reason }).is_ok()
    }));
    let output_threads = output
        .spawn(event_rx)
        .map_err(|e| Error::io("starting the output threads", e))?;
    let joined = match (&args.cluster, placed_for) {
        (Some(cluster), Some(placed_for)) => {
            let logs = share_logs(&config, &cluster.host, &selected).await?;
            Some(
                crate::engine::cluster::join(
                    &config,
                    &cluster.host,
                    cluster.role,
                    &placed_for,
                    &keeper.run_id,
                    Some(logs),
                    &events,
                )
                .await?,
            )
        }
        _ => None,
    };
    let command_pid: RunningCommand = Arc::default();
    forward_signals(control_tx.clone(), command_pid.clone())?;
    let server =
        crate::engine::control::serve(keeper.control_listener, control_tx.clone(), source.clone());
    supervise(&events, "the control socket", server);
    if args.watch {
        let watcher = crate::engine::watch::config_file(source, control_tx.clone(), events.clone());
        supervise(&events, "the services.toml watcher", watcher);
    }
    for (n, node) in config
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, node)| !node.watch.is_empty())
    {
        if selected[n] {
            let task = crate::engine::watch::node_files(
                node.name.clone(),
                node.watch.clone(),
                control_tx.clone(),
                events.clone(),
            );
            supervise(&events, "a `watch` watcher", task);
        }
    }
    let opts = options(&config, args.sequential, &args.profiles);
    let notify = if config
        .nodes
        .iter()
        .zip(&selected)
        .any(|(n, &on)| on && n.health.probe == Probe::Notify)
    {
        Some(
            NotifyHub::bind(&keeper.runtime_path, events.clone())
                .map_err(|e| Error::io("binding the notify socket", e))?,
        )
    } else {
        None
    };
    let setup = RunSetup {
        run_id: keeper.run_id,
        guardian: Some(keeper.guardian),
        notify,
        sockets: keeper.sockets,
        cluster: joined.as_ref().map(|j| j.link.clone()),
    };
    let ui = if args.ui {
        Some(start_ui(&config, &events)?)
    } else {
        None
    };
    let (scheduler, startup) =
        Scheduler::new(config, graph, &selected, opts, events.clone(), setup);
    let scheduler = tokio::spawn(scheduler.run(control_rx));
    let command_status = if args.command.is_empty() {
        None
    } else {
        run_command_when_ready(&args.command, startup, &control_tx, &command_pid, &events).await
    };
    let mut outcome = scheduler.await.unwrap_or(Outcome::Interrupted);
    if let Some(joined) = joined {
        // An agent whose run was stopped (by `down` or the `run` process) was not
        // interrupted: it did what the run asked, even before its own startup completed.
        let run_stopped = *joined.link.phase().borrow() == crate::engine::cluster::Phase::Stopping;
        if matches!(outcome, Outcome::Interrupted) && run_stopped && !joined.link.is_coordinator() {
            outcome = Outcome::Stopped;
        }
        joined.leave().await;
    }
    if let Some((ended, thread)) = ui {
        // The terminal is restored before anything else is printed.
        ended.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
    drop(events);
    output_threads.join();
    match (outcome, command_status) {
        (Outcome::Failed(error), _) => Err(error.into()),
        (_, Some(code)) => Ok(code),
        (Outcome::Stopped, None) => Ok(exit_code::OK),
        (Outcome::Interrupted, None) => Err(Error::Interrupted),
        (Outcome::Degraded(failed), None) => Err(Error::Degraded(failed)),
    }
}

/// In a cluster: serves this host's node logs to the other hosts, on its `[hosts]` address
/// (loopback for a host without one).
async fn share_logs(
    config: &Config,
    host: &str,
    selected: &[bool],
) -> Result<crate::engine::cluster::LogShare, Error> {
    let address = config
        .hosts
        .iter()
        .find(|h| h.name == host)
        .and_then(|h| h.address.as_deref()?.parse().ok())
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    let local = crate::engine::cluster::local_selection(config, selected);
    let nodes = config
        .nodes
        .iter()
        .zip(local)
        .filter(|(_, on)| *on)
        .map(|(node, _)| node.name.clone())
        .collect();
    crate::views::log_share::serve(address, config.settings.log_dir.clone(), nodes)
        .await
        .map_err(|e| Error::io(format!("serving this host's logs on {address}"), e))
}

/// `run --ui`: the terminal UI on a thread of its own, attached through the control socket as
/// `dagstart ui` is; it says when it ends (the flag), and quitting it stops the stack.
fn start_ui(
    config: &Config,
    events: &EventSink,
) -> Result<
    (
        Arc<std::sync::atomic::AtomicBool>,
        std::thread::JoinHandle<()>,
    ),
    Error,
> {
    let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let options = crate::views::tui::UiOptions {
        project_dir: config.base_dir.clone(),
        stop_on_quit: true,
        ended: Some(ended.clone()),
    };
    let config = config.clone();
    let events = events.clone();
    let thread = std::thread::Builder::new()
        .name("dagstart-ui".into())
        .spawn(move || {
            if let Err(e) = crate::views::tui::run(config, &options) {
                events.send(
                    None,
                    crate::engine::event::EventKind::note(format!("the terminal UI failed: {e}")),
                );
            }
        })
        .map_err(|e| Error::io("starting the terminal UI", e))?;
    Ok((ended, thread))
}

/// Runs a helper task (control socket, watcher) whose panic must not pass unseen: it is told
/// in the log, and the run goes on without it.
fn supervise(
    events: &EventSink,
    what: &'static str,
    task: impl Future<Output = ()> + Send + 'static,
) {
    let handle = tokio::spawn(task);
    let events = events.clone();
    tokio::spawn(async move {
        if let Err(error) = handle.await {
            if error.is_panic() {
                events.send(
                    None,
                    crate::engine::event::EventKind::note(format!(
                        "internal error: {what} stopped unexpectedly; the run goes on without it"
                    )),
                );
            }
        }
    });
}

/// SIGINT, SIGTERM and SIGHUP (the terminal was closed) become a graceful shutdown; a second
/// one kills everything at once.
fn forward_signals(
    control: mpsc::UnboundedSender<Control>,
    command_pid: RunningCommand,
) -> Result<(), Error> {
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|e| Error::io("installing the SIGINT handler", e))?;
    let mut terminate = signal(SignalKind::terminate())
        .map_err(|e| Error::io("installing the SIGTERM handler", e))?;
    let mut hangup =
        signal(SignalKind::hangup()).map_err(|e| Error::io("installing the SIGHUP handler", e))?;
    tokio::spawn(async move {
        let mut received = 0;
        loop {
            let name = tokio::select! {
                Some(()) = interrupt.recv() => "SIGINT",
                Some(()) = terminate.recv() => "SIGTERM",
                Some(()) = hangup.recv() => "SIGHUP",
                else => return,
            };
            received += 1;
            // The `--` command shares our terminal and gets Ctrl-C itself; SIGTERM it must be told.
            if name == "SIGTERM" {
                if let Some(pidfd) = &*command_pid.lock().unwrap_or_else(PoisonError::into_inner) {
                    let _ = pidfd.signal(nix::sys::signal::Signal::SIGTERM);
                }
            }
            let request = if received == 1 {
                Control::Shutdown(format!("received {name}"))
            } else {
                Control::Kill
            };
            if control.send(request).is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// The `--` command while it runs, for forwarding SIGTERM (a pidfd: never another process).
type RunningCommand = Arc<std::sync::Mutex<Option<Pidfd>>>;

/// Waits for startup; if it completed, runs the command and then asks for a shutdown.
/// Returns the command's exit code, or `None` when it never ran.
async fn run_command_when_ready(
    command: &[String],
    mut startup: watch::Receiver<Startup>,
    control: &mpsc::UnboundedSender<Control>,
    command_pid: &RunningCommand,
    events: &EventSink,
) -> Option<i32> {
    let state = startup
        .wait_for(|s| *s != Startup::Pending)
        .await
        .map(|s| *s)
        .unwrap_or(Startup::Failed);
    if state != Startup::Ready {
        return None;
    }
    let (program, args) = command.split_first()?;
    events.send(
        None,
        crate::engine::event::EventKind::note(format!("running: {}", shell_words::join(command))),
    );
    let mut child = tokio::process::Command::new(program);
    child.args(args);
    let spawned = std::env::current_dir()
        .and_then(|cwd| crate::engine::containment::join_in_child(child.as_std_mut(), &cwd))
        .and_then(|()| crate::engine::containment::spawn(|| child.spawn()));
    let code = match spawned {
        Ok(mut child) => {
            let pidfd = child.id().and_then(|pid| Pidfd::of_child(pid).ok());
            *command_pid.lock().unwrap_or_else(PoisonError::into_inner) = pidfd;
            let status = child.wait().await;
            *command_pid.lock().unwrap_or_else(PoisonError::into_inner) = None;
            match status {
                Ok(status) => crate::engine::process::exit_code_of(status),
                Err(_) => exit_code::FAILURE,
            }
        }
        Err(e) => {
            events.send(
                None,
                crate::engine::event::EventKind::note(format!("cannot run `{program}`: {e}")),
            );
            127
        }
    };
    events.send(
        None,
        crate::engine::event::EventKind::note(format!("command exited with {code}")),
    );
    let _ = control.send(Control::Shutdown("the command finished".into()));
    Some(code)
}

fn unix_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `max_workers = "auto"` must start with a limit it can adjust: unlimited, nothing is
    /// ever held back, and the adjustment (made while nodes are held back) never runs.
    #[test]
    fn auto_workers_start_at_one_per_cpu() {
        let config = crate::engine::config::load_str(
            Path::new("/t/services.toml"),
            "[settings]\nmax_workers = \"auto\"\n[services.a]\ncommand = \"a\"\n".into(),
            &Environment::from_pairs::<&str, &str>([]),
        )
        .unwrap();
        let opts = options(&config, false, &[]);
        assert!(opts.auto_workers);
        assert_eq!(
            opts.max_workers,
            std::thread::available_parallelism().map_or(2, usize::from)
        );
    }
}
