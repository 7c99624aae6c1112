//! The services.toml model: what a user declared, resolved and validated.
//!
//! [`load`] reads a file (plus `.env` and the process environment) and returns a [`Config`] in
//! which every value is final: defaults filled in, `${VAR}` expanded, environment overrides
//! applied. Every problem of the file is collected into one [`ConfigError`]. Nothing here starts
//! a process; the dependency graph itself is checked by [`crate::engine::graph`].

pub mod cluster;
mod diagnostic;
mod expand;
mod load;
mod render;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::Serialize;

pub use diagnostic::{
    ConfigError, JsonLabel, JsonProblem, LineIndex, Problem, Span, did_you_mean, line_column,
    plain_handler, report as diagnostic_report,
};
pub use load::{Environment, KNOWN_KEYS, LoadError, load, load_str};
pub use render::{node_fingerprint, render_json, render_toml};
pub(crate) use render::{quote, quote_all};

/// A fully resolved services.toml.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// The directory relative paths are resolved against (the file's directory).
    pub base_dir: PathBuf,
    pub settings: Settings,
    /// Environment given to every node (before its own `env`).
    pub env: BTreeMap<String, String>,
    /// Services and components, in file order (services first).
    pub nodes: Vec<Node>,
    /// `[cluster]`: the run spans several hosts, coordinated through etcd.
    pub cluster: Option<cluster::Cluster>,
    /// `[hosts.NAME]`, in file order.
    pub hosts: Vec<cluster::Host>,
    /// In a cluster run: the host this process runs the nodes of (set by
    /// [`crate::engine::cluster::localize`]); the other nodes are mirrored, not run.
    pub local_host: Option<String>,
    /// Which keys took their value from an environment variable: key path -> variable.
    pub from_env: BTreeMap<String, String>,
    /// Warnings found while loading; the config is usable despite them.
    pub warnings: Vec<Problem>,
    /// The text of the file, for diagnostics raised after loading.
    pub source: miette::NamedSource<std::sync::Arc<String>>,
}

impl Config {
    /// Node `n` runs on another host of the cluster: this process mirrors its state.
    pub fn is_remote(&self, n: usize) -> bool {
        self.local_host.is_some() && self.nodes[n].host != self.local_host
    }

    /// In a cluster run: the host node `n` runs on; `None` outside one.
    pub fn host_of(&self, n: usize) -> Option<&str> {
        self.local_host.as_ref().and(self.nodes[n].host.as_deref())
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// "services.toml:17:11": where `span` is in the file, for messages raised after loading.
    pub fn place(&self, span: &Span) -> String {
        let (line, column) = LineIndex::new(&self.source).line_column(span.start);
        format!("{}:{line}:{column}", self.source.name())
    }

    pub fn count(&self, kind: NodeKind) -> usize {
        self.nodes.iter().filter(|n| n.kind == kind).count()
    }
}

/// The `[settings]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub max_workers: MaxWorkers,
    pub startup_timeout: Duration,
    pub parallel: bool,
    pub parallel_health_checks: bool,
    pub log_dir: PathBuf,
    pub shutdown_timeout: Duration,
    /// A node's log is rotated when it reaches this many bytes.
    pub log_max_size: u64,
    /// Rotated logs kept per node (`<node>.log.1` is the newest).
    pub log_keep: u32,
    /// Run the nodes in a PID namespace of their own where the system allows it (see
    /// [`crate::engine::containment`]).
    pub pid_namespace: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_workers: MaxWorkers::Unlimited,
            startup_timeout: Duration::from_secs(300),
            parallel: true,
            parallel_health_checks: true,
            log_dir: PathBuf::from("logs"),
            shutdown_timeout: Duration::from_secs(30),
            log_max_size: 100 << 20,
            log_keep: 5,
            pid_namespace: true,
        }
    }
}

/// How many nodes may be in their start phase (spawned, not yet ready) at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxWorkers {
    Unlimited,
    Fixed(usize),
    /// Adapt to the machine's load (not implemented yet; behaves as the number of CPUs).
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// Long-running; ready when its health check passes.
    Service,
    /// One-shot; done when it exits 0.
    Component,
}

impl NodeKind {
    /// Both kinds, in the order the loader reads their sections.
    pub const ALL: [NodeKind; 2] = [NodeKind::Service, NodeKind::Component];

    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Service => "service",
            NodeKind::Component => "component",
        }
    }

    /// The table a node of this kind is declared in: `[services.NAME]`, `[components.NAME]`.
    pub const fn section(self) -> &'static str {
        match self {
            NodeKind::Service => "services",
            NodeKind::Component => "components",
        }
    }
}

/// A service or a component.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub name_span: Span,
    pub kind: NodeKind,
    pub command: Command,
    /// Working directory, already joined onto the config's directory.
    pub cwd: PathBuf,
    pub env: BTreeMap<String, String>,
    pub depends_on: Vec<Dependency>,
    pub port: Option<u16>,
    pub health: Health,
    pub startup_timeout: Duration,
    /// Extra start attempts after a failed start.
    pub retries: u32,
    pub required: bool,
    pub stop_signal: Signal,
    pub stop_timeout: Duration,
    /// With a `notify` probe: the longest gap allowed between `WATCHDOG=1` pings once ready.
    pub watchdog: Option<Duration>,
    /// Sockets dagstart binds before anything starts and hands over systemd-style (fds from 3).
    pub sockets: Vec<SocketAddress>,
    /// Started only when needed: on the first connection (with sockets) or when a node that
    /// depends on it is about to start (without).
    pub lazy: bool,
    /// What happens when the service ends after it was ready.
    pub restart: Restart,
    /// Checked while the service runs; `failure_threshold` misses in a row restart it.
    pub liveness: Option<Liveness>,
    /// Stop this node when a dependency restarts, and start it again once that is ready
    /// (systemd's PartOf/BindsTo).
    pub restart_with_dependency: bool,
    /// Glob patterns (absolute, resolved against services.toml's directory): a change to a
    /// matching file restarts the node.
    pub watch: Vec<String>,
    /// The account the node runs as (`user` and `group`), resolved at load.
    pub run_as: Option<RunAs>,
    /// This node's own `log_max_size` and `log_keep`, over `[settings]`.
    pub log_max_size: Option<u64>,
    pub log_keep: Option<u32>,
    /// Where the node's stdout and stderr go.
    pub output: Output,
    /// The node runs only when one of these is active (`run --profile`, `DAGSTART_PROFILES`);
    /// a node without profiles always runs.
    pub profiles: Vec<String>,
    /// The host it runs on, in a `[cluster]`; `None` is the host of `dagstart run`.
    pub host: Option<String>,
}

/// Where a node's stdout and stderr go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Output {
    /// Read by dagstart line by line: the node's log file, the terminal, `logs`, the dashboard.
    #[default]
    Log,
    /// To /dev/null. The node then costs dagstart no pipe: 10,000 such nodes fit where the
    /// open-files limit would not let 10,000 logged ones (three descriptors each) start.
    Discard,
}

impl Output {
    pub const NAMES: &'static [&'static str] = &["log", "discard"];

    pub fn as_str(self) -> &'static str {
        match self {
            Output::Log => "log",
            Output::Discard => "discard",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "log" => Some(Output::Log),
            "discard" => Some(Output::Discard),
            _ => None,
        }
    }
}

/// A user (and group) a node runs as, resolved from names or numbers when the file is loaded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RunAs {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups of the user (and the group, when given).
    pub groups: Vec<u32>,
    pub home: std::path::PathBuf,
}

/// `restart = "no" | "on-failure" | "always"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    No,
    /// After a non-zero exit, a signal, a missed watchdog or failed liveness.
    OnFailure,
    /// After any end the user did not ask for.
    Always,
}

impl RestartPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Always => "always",
        }
    }
}

/// The restart policy of a service and its limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Restart {
    pub policy: RestartPolicy,
    /// Pause before the first restart; it doubles with each restart in the window.
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// More restarts than this within `window` is a crash loop: the node is failed.
    pub max_restarts: u32,
    pub window: Duration,
}

impl Default for Restart {
    fn default() -> Self {
        Self {
            policy: RestartPolicy::No,
            backoff: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            max_restarts: 5,
            window: Duration::from_secs(60),
        }
    }
}

/// A probe that keeps being checked after the service is ready.
#[derive(Debug, Clone, PartialEq)]
pub struct Liveness {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
}

/// A socket a service is activated with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketAddress {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for SocketAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SocketAddress::Tcp(addr) => write!(f, "{addr}"),
            SocketAddress::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// What to run. No shell is involved unless the user asked for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Argv(Vec<String>),
    /// Run through `/bin/sh -c`.
    Shell(String),
}

impl Command {
    /// The program and its arguments as they are passed to exec.
    pub fn argv(&self) -> Vec<String> {
        match self {
            Command::Argv(argv) => argv.clone(),
            Command::Shell(script) => vec!["/bin/sh".into(), "-c".into(), script.clone()],
        }
    }
}

#[derive(Debug, Clone)]
pub struct Dependency {
    pub name: String,
    /// Index of the dependency in [`Config::nodes`].
    pub node: usize,
    /// The entry in `depends_on`, for diagnostics.
    pub span: Span,
    pub condition: Condition,
    /// `false`: the dependent waits for the dependency only while it is selected and on its
    /// way up, and goes on without it otherwise (OpenRC `use`, dinit `waits-for`). Defaults to
    /// the dependent's own `required`: an optional node goes on without what fails.
    pub required: bool,
    /// The dependent restarts when the dependency restarts (compose's `depends_on.restart`,
    /// systemd's `PartOf`). Defaults to the dependent's `restart_with_dependency`.
    pub restart: bool,
    /// Needed once, to start: after the dependent has been ready the link is dropped, so the
    /// dependency may stop, fail or restart without touching it (dinit's `depends-ms`).
    pub milestone: bool,
}

impl Dependency {
    /// What the graph and the lifecycle need to know of this entry.
    pub fn edge(&self) -> Edge {
        Edge {
            condition: self.condition,
            required: self.required,
            restart: self.restart,
            milestone: self.milestone,
        }
    }
}

/// One dependency as the graph holds it: when the dependent may start, and how the two stay
/// linked afterwards. See [`Dependency`] for each kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Edge {
    pub condition: Condition,
    pub required: bool,
    pub restart: bool,
    pub milestone: bool,
}

impl Edge {
    /// The dependent cannot run without the dependency: a failure, a stop or a restart of the
    /// dependency reaches it.
    pub fn binds(self) -> bool {
        self.required && !self.milestone
    }

    /// The dependent stops before the dependency (every kind but a milestone).
    pub fn orders_stop(self) -> bool {
        !self.milestone
    }

    /// The kinds that differ from a plain dependency, for `graph` and messages:
    /// "optional", "restart", "milestone".
    pub fn marks(self) -> Vec<&'static str> {
        let mut marks = Vec::new();
        if !self.required {
            marks.push("optional");
        }
        if self.restart {
            marks.push("restart");
        }
        if self.milestone {
            marks.push("milestone");
        }
        marks
    }
}

/// When a dependent may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    /// The dependency's process has been spawned.
    Started,
    /// The dependency passed its health check.
    Healthy,
    /// The dependency (a component) exited 0.
    Completed,
    /// The dependency's sockets are bound and listening (it may not even be running yet).
    Listening,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Started => "started",
            Condition::Healthy => "healthy",
            Condition::Completed => "completed",
            Condition::Listening => "listening",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "started" => Some(Condition::Started),
            "healthy" => Some(Condition::Healthy),
            "completed" => Some(Condition::Completed),
            "listening" => Some(Condition::Listening),
            _ => None,
        }
    }

    pub(crate) const NAMES: [&'static str; 4] = ["started", "healthy", "completed", "listening"];
}

/// How dagstart decides that a node is ready.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub probe: Probe,
    /// Upper bound of the time between probe attempts (probing starts faster and backs off).
    pub interval: Duration,
    /// Time limit of one attempt.
    pub timeout: Duration,
}

impl Health {
    pub(crate) fn with_probe(probe: Probe) -> Self {
        Self {
            probe,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Probe {
    /// Ready once spawned (a service with neither `health` nor `port`).
    Spawned,
    /// Ready when the process exits 0 (every component).
    Exited,
    /// Any 2xx answer. A `localhost` host tries 127.0.0.1 and ::1.
    Http { url: String },
    /// A TCP connect succeeds.
    Tcp { host: String, port: u16 },
    /// The command exits 0.
    Exec { argv: Vec<String> },
    /// A line of the node's stdout or stderr matches.
    Log { pattern: regex::Regex },
    /// `READY=1` on the NOTIFY_SOCKET dagstart passes (systemd's protocol).
    Notify,
    /// A write to this file descriptor, which dagstart connects to a pipe (s6/dinit style).
    ReadyFd { fd: i32 },
}

impl PartialEq for Probe {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Probe::Log { pattern: a }, Probe::Log { pattern: b }) => a.as_str() == b.as_str(),
            (Probe::Http { url: a }, Probe::Http { url: b }) => a == b,
            (Probe::Tcp { host: a, port: p }, Probe::Tcp { host: b, port: q }) => a == b && p == q,
            (Probe::Exec { argv: a }, Probe::Exec { argv: b }) => a == b,
            (Probe::ReadyFd { fd: a }, Probe::ReadyFd { fd: b }) => a == b,
            (Probe::Spawned, Probe::Spawned)
            | (Probe::Exited, Probe::Exited)
            | (Probe::Notify, Probe::Notify) => true,
            _ => false,
        }
    }
}

impl Probe {
    pub fn describe(&self) -> String {
        match self {
            Probe::Spawned => "spawned".into(),
            Probe::Exited => "exit 0".into(),
            Probe::Http { url } => format!("http {url}"),
            Probe::Tcp { host, port } => format!("tcp {host}:{port}"),
            Probe::Exec { argv } => format!("exec {}", shell_words::join(argv)),
            Probe::Log { pattern } => format!("log /{}/", pattern.as_str()),
            Probe::Notify => "READY=1 on NOTIFY_SOCKET".into(),
            Probe::ReadyFd { fd } => format!("a write to fd {fd}"),
        }
    }
}

/// Whether `c` may be part of a node or profile name (letters, digits, `_`, `-`).
pub fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Whether `text` is a valid name of a node, profile, host or cluster: not empty, and only
/// [`is_name_char`]s.
pub fn is_name(text: &str) -> bool {
    !text.is_empty() && text.chars().all(is_name_char)
}

/// `text` with every character a name cannot take turned into `_`.
pub fn clean_name(text: &str) -> String {
    text.chars()
        .map(|c| if is_name_char(c) { c } else { '_' })
        .collect()
}

/// Name of the per-node timeout variable: `<NODE>_TIMEOUT`, upper-cased, non-alphanumerics -> `_`.
///
/// ```
/// assert_eq!(dagstart::engine::config::timeout_env_var("backend"), "BACKEND_TIMEOUT");
/// assert_eq!(dagstart::engine::config::timeout_env_var("ws-router.v2"), "WS_ROUTER_V2_TIMEOUT");
/// ```
pub fn timeout_env_var(node: &str) -> String {
    let mut var: String = node
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    var.push_str("_TIMEOUT");
    var
}
