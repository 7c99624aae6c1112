//! The command line: clap definitions only. `main.rs` parses them and hands them to [`crate::cli::commands`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Bring a stack of services up as fast as its dependency graph allows, and keep it up.
///
/// dagstart reads services.toml, checks the dependency graph, and starts every service and
/// component the moment its dependencies are ready: no fixed sleeps, no level barriers.
///
/// Examples:
///   dagstart check                 validate services.toml
///   dagstart graph                 show the startup order
///   dagstart run                   start everything, stop it all on Ctrl-C
///   dagstart run -- cargo test     start, run the tests, stop, exit with their status
///   dagstart status                what the running dagstart is doing (from another terminal)
#[derive(Debug, Parser)]
#[command(name = "dagstart", version, verbatim_doc_comment, max_term_width = 100)]
pub struct Cli {
    /// The configuration file to read: `dagstart -f dev.toml run` (after the command works
    /// too, except after `logs`, where `-f` means `--follow`).
    #[arg(
        short = 'f',
        long = "file",
        default_value = "services.toml",
        env = "DAGSTART_FILE"
    )]
    pub file: PathBuf,

    /// In a `[cluster]`: the host this process is (`run`: default the machine's name;
    /// `agent`: required), or whose run `status`, `down`, `logs`... talk to. A named host keeps
    /// its lock, control socket and run records in .dagstart/hosts/NAME and its logs in
    /// <log_dir>/NAME.
    #[arg(long, global = true, env = "DAGSTART_HOST", value_name = "NAME")]
    pub host: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

impl Command {
    /// `check`, `graph` and `config`: read services.toml, print, exit.
    pub fn is_one_shot_over_the_config(&self) -> bool {
        matches!(
            self,
            Command::Check(_) | Command::Graph(_) | Command::Config(_)
        )
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Check(CheckArgs),
    Graph(GraphArgs),
    Config(ConfigArgs),
    Run(RunArgs),
    Agent(AgentArgs),
    Status(StatusArgs),
    Start(NodesArgs),
    Stop(NodesArgs),
    Restart(NodesArgs),
    Logs(LogsArgs),
    Report(ReportArgs),
    /// Apply an edited services.toml to the running dagstart without a full restart.
    ///
    /// Removed nodes stop; added nodes start once their dependencies are ready; changed nodes
    /// restart together with the running nodes that need them; untouched nodes keep running
    /// with the same pid. An invalid file is rejected with its diagnostics and nothing changes.
    ///
    /// Example:
    ///   dagstart reload
    #[command(verbatim_doc_comment)]
    Reload,
    Import(ImportArgs),
    Export(ExportArgs),
    Probe(ProbeArgs),
    /// A full-screen terminal UI over the running dagstart of this project.
    ///
    /// A table of the nodes (state, pid, uptime, restarts, CPU and memory of each node's process
    /// group, the latest probe result or reason), the selected node's log (or all nodes' merged
    /// by time) with search and follow, and the dependency tree of the selected node. Keys:
    /// ↑↓/jk select, s start, x stop, r restart (the nodes taken along are shown first, y to
    /// confirm), R reload, a all logs, / search (Esc clears), f follow, PgUp/PgDn scroll, q quit.
    /// Quitting leaves the stack running (`dagstart run --ui` stops it). NO_COLOR turns colours
    /// off. Exits 5 when no dagstart is running here.
    ///
    /// Example:
    ///   dagstart ui
    #[command(verbatim_doc_comment)]
    Ui,
    /// Print a shell completion script.
    ///
    /// Examples:
    ///   dagstart completions bash > /etc/bash_completion.d/dagstart
    ///   dagstart completions zsh > ~/.zfunc/_dagstart
    #[command(verbatim_doc_comment)]
    Completions {
        shell: clap_complete::Shell,
    },
    /// Print a JSON Schema of services.toml, for editors that complete and validate TOML.
    ///
    /// Example (taplo / Even Better TOML): save it and point `#:schema` at it:
    ///   dagstart schema > services.schema.json
    #[command(verbatim_doc_comment)]
    Schema,
    /// Print the man page (roff), made from the same definitions as --help.
    ///
    /// With --dir, write dagstart.1 and a page for every command (dagstart-run.1, ...), which
    /// the main page refers to.
    ///
    /// Examples:
    ///   dagstart man > /usr/local/share/man/man1/dagstart.1
    ///   dagstart man --dir /usr/local/share/man/man1
    #[command(verbatim_doc_comment)]
    Man {
        /// Write every page into this directory instead of printing the main one.
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
    /// Stop the running dagstart gracefully, as Ctrl-C in its terminal would.
    ///
    /// Returns once everything has stopped (at most 120 s), so `dagstart down && dagstart run`
    /// works. In a cluster, it stops the whole run, on every host, in reverse dependency order
    /// across hosts (`--host NAME` picks which host's dagstart to ask).
    ///
    /// Example:
    ///   dagstart down
    #[command(verbatim_doc_comment)]
    Down,
}

/// Show the state of every node of the running dagstart.
///
/// A table of node, kind, state, pid, uptime, restarts and the last thing worth knowing (its
/// STATUS, or why it failed, exited or was skipped). Exits 5 when no dagstart is running here.
///
/// Examples:
///   dagstart status
///   dagstart status --format json | jq '.[] | select(.state != "ready")'
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct StatusArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = CheckFormat::Text)]
    pub format: CheckFormat,
}

/// Start, stop or restart nodes of the running dagstart.
///
/// `stop` stops the nodes and everything that depends on them (dependents first); they stay
/// stopped until `start`. `start` starts the nodes and whatever they need. `restart` stops the
/// nodes and their running dependents, dependents first, then starts them all again in order.
///
/// Examples:
///   dagstart restart backend
///   dagstart stop vision voice
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct NodesArgs {
    #[arg(value_name = "NODE", required = true)]
    pub nodes: Vec<String>,
}

/// Where startup time went, from the run history (systemd-analyze style).
///
/// Blame (nodes by time from spawn to ready, slowest first), the critical chain (when each
/// node on it was launched, how long it took, what it waited for), parallel against sequential,
/// and hints. Every run is recorded in .dagstart/runs/ beside services.toml (the last 20).
///
/// Examples:
///   dagstart report            the last run
///   dagstart report -2         the run before it
///   dagstart report --compare -2 -1
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ReportArgs {
    /// Which run: `last` (default), a run id, N (the N-th oldest) or -N (N-th newest).
    #[arg(allow_hyphen_values = true)]
    pub run: Option<String>,

    /// Also write a self-contained SVG Gantt chart of the startup to this file.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<std::path::PathBuf>,

    /// Also write an HTML page with the chart and this report to this file.
    #[arg(long, value_name = "FILE")]
    pub html: Option<std::path::PathBuf>,

    /// Serve the run on the web dashboard (the same page as `run --dashboard`) until Ctrl-C.
    #[arg(long, value_name = "ADDR")]
    pub dashboard: Option<std::net::SocketAddr>,

    #[command(flatten)]
    pub dashboard_access: DashboardAccessArgs,

    /// Compare two runs instead: startup time and each node's start time, side by side.
    #[arg(long, num_args = 2, value_names = ["RUN_A", "RUN_B"], allow_hyphen_values = true, conflicts_with = "run")]
    pub compare: Option<Vec<String>>,
}

/// Show the output of nodes, from their log files.
///
/// Prints the last lines of each node's log (all nodes when none are named), prefixed with the
/// node's name; `-f` keeps printing new lines as they are written. Works without a running
/// dagstart too: then it shows the last run's logs and says so. In a cluster, the lines of
/// nodes that other hosts run are fetched from those hosts, and `-f` follows them there.
///
/// Examples:
///   dagstart logs backend --tail 50
///   dagstart logs -f
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct LogsArgs {
    #[arg(value_name = "NODE")]
    pub nodes: Vec<String>,
    /// Keep printing new lines until interrupted.
    #[arg(short, long)]
    pub follow: bool,
    /// How many of the last lines of each log to print.
    #[arg(long, default_value_t = 20)]
    pub tail: usize,
    /// Show when dagstart received each line (UTC, to the millisecond).
    #[arg(short, long)]
    pub timestamps: bool,
}

/// Validate services.toml without starting anything.
///
/// Reports every problem in the file at once, each pointing at the exact place, with a
/// suggestion where there is one; then every command (a warning: an earlier component may
/// build it) and working directory (an error, as `run` would refuse it) that does not exist, at
/// the node that names it. Exits 0 when all is well (warnings allowed), 2 when the file is
/// invalid, 3 when a working directory is missing.
///
/// Examples:
///   dagstart check --format json
///   dagstart check --config-only        only the file (e.g. in CI, before anything is built)
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct CheckArgs {
    /// How to print the result.
    #[arg(long, value_enum, default_value_t = CheckFormat::Text)]
    pub format: CheckFormat,
    /// Check the file only, not whether its commands and working directories exist here.
    #[arg(long)]
    pub config_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckFormat {
    Text,
    Json,
}

/// Print the startup order as levels.
///
/// A node's level is the length of the longest dependency chain below it: level 0 needs
/// nothing, level 1 needs only level-0 nodes, and so on. Nodes start as soon as their own
/// dependencies are ready, not level by level; levels are a way to read the graph.
///
/// Examples:
///   dagstart graph                       the whole graph
///   dagstart graph backend               backend and everything it needs
///   dagstart graph --format dot | dot -Tsvg > graph.svg
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct GraphArgs {
    /// Show only these nodes and everything they need.
    #[arg(value_name = "NODE")]
    pub nodes: Vec<String>,

    /// Show the run with this profile active (repeat, or separate with commas; default:
    /// DAGSTART_PROFILES).
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    pub profile: Vec<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
    pub format: GraphFormat,

    /// Annotate with the last run's start times and mark its critical path (text and dot).
    #[arg(long)]
    pub timings: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    Text,
    Dot,
    Mermaid,
    Json,
}

/// Print the fully resolved configuration.
///
/// Defaults are filled in, `${VAR}` is expanded, and environment overrides
/// (STARTUP_TIMEOUT, `<NODE>_TIMEOUT`, ...) are applied; each value that came from the
/// environment is marked with the variable it came from.
///
/// Example:
///   STARTUP_TIMEOUT=2m dagstart config
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ConfigArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = ConfigFormat::Toml)]
    pub format: ConfigFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConfigFormat {
    Toml,
    Json,
}

/// Start the graph and supervise it until Ctrl-C.
///
/// Every node starts the moment its dependencies meet their condition. Output of each node is
/// shown prefixed with its name and written to `<log_dir>/<node>.log` (rotated by size). Ctrl-C,
/// SIGTERM or SIGHUP stops everything in reverse dependency order; a second Ctrl-C kills at once.
/// Exit status 7: a required node failed for good after startup (what needed it was stopped).
///
/// With `-- CMD ARGS...`, dagstart starts the graph, waits until it is ready, runs CMD, then
/// stops everything and exits with CMD's exit status.
///
/// Examples:
///   dagstart run                        start everything
///   dagstart run backend                backend and what it needs
///   dagstart run --profile debug        also the nodes with profiles = ["debug"]
///   dagstart run --sequential           one node at a time (legacy mode), for comparison
///   dagstart run -- curl -f localhost:8010/health
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct RunArgs {
    /// Start only these nodes and everything they need.
    #[arg(value_name = "NODE")]
    pub nodes: Vec<String>,

    /// Also run the nodes of this profile (repeat, or separate with commas; default:
    /// DAGSTART_PROFILES). Nodes without `profiles` always run.
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    pub profile: Vec<String>,

    /// Start one node at a time in topological order (same as USE_PARALLEL_STARTUP=false).
    #[arg(long)]
    pub sequential: bool,

    /// Reload when services.toml changes, as `dagstart reload` does.
    #[arg(long)]
    pub watch: bool,

    /// Serve a live web dashboard and /metrics on this address (loopback; port 0 picks one).
    #[arg(long, value_name = "ADDR")]
    pub dashboard: Option<std::net::SocketAddr>,

    #[command(flatten)]
    pub dashboard_access: DashboardAccessArgs,

    /// What the terminal shows: text, or one JSON object per event (docs/events.md).
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// The full-screen terminal UI (as `dagstart ui`) instead of lines; quitting it stops the
    /// stack. The log files get every line as always.
    #[arg(long, conflicts_with = "output")]
    pub ui: bool,

    /// Run this command once the graph is ready, then stop everything and exit with its status.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Join the cluster run of this services.toml as host NAME and run the nodes placed on it.
///
/// Needs a `[cluster]` section (etcd endpoints) and `--host NAME` of a `[hosts.NAME]` table.
/// The agent waits for the run to appear (`dagstart run` on the coordinating host), refuses a
/// run started from another services.toml and a host that another process already holds,
/// then starts its nodes as their dependencies (on any host) become ready. Its nodes' states
/// travel through etcd under the host's lease: if the agent dies or is cut off, the other
/// hosts see its nodes gone within `lease_ttl`. It ends when the run ends (stopping its nodes
/// in reverse dependency order across hosts); Ctrl-C leaves the run, stopping its own nodes
/// (`dagstart --host NAME down` stops the whole run instead). If the `run` process dies,
/// another host leads and the run goes on.
/// docs/cluster.md has the design and a walk-through.
///
/// Example:
///   dagstart agent --host db1
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct AgentArgs {
    /// What the terminal shows: text, or one JSON object per event (docs/events.md).
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

impl Cli {
    /// Parses the command line. `-f FILE` given after the command (`dagstart run -f x.toml`,
    /// as docker compose users type it) is taken as if given before it; `logs -f` still
    /// follows.
    pub fn parse_args() -> Self {
        let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        match <Self as clap::Parser>::try_parse_from(&args) {
            Ok(cli) => cli,
            Err(error) => match file_before_command(&args) {
                Some(moved) => {
                    <Self as clap::Parser>::try_parse_from(moved).unwrap_or_else(|_| error.exit())
                }
                None => error.exit(),
            },
        }
    }
}

/// `args` with a `-f FILE`, `--file FILE` or `--file=FILE` that follows the command (and
/// precedes any `--`) moved to the front; `None` when there is none.
fn file_before_command(args: &[std::ffi::OsString]) -> Option<Vec<std::ffi::OsString>> {
    let end = args.iter().position(|a| a == "--").unwrap_or(args.len());
    let at = (2..end).find(|&i| {
        let arg = args[i].to_string_lossy();
        arg == "-f" || arg == "--file" || arg.starts_with("--file=")
    })?;
    let taken = if args[at].to_string_lossy().starts_with("--file=") {
        1
    } else {
        2
    };
    if at + taken > end {
        return None;
    }
    let mut moved = vec![args[0].clone()];
    moved.extend_from_slice(&args[at..at + taken]);
    moved.extend_from_slice(&args[1..at]);
    moved.extend_from_slice(&args[at + taken..]);
    Some(moved)
}

/// Convert a docker compose file, a process-compose file or a Procfile into services.toml.
///
/// Everything that cannot be carried over is listed, with the reason, in a comment at the top
/// of the new file and on stderr; nothing is dropped silently. The result passes
/// `dagstart check`. docs/import-export.md says what maps to what.
///
/// Examples:
///   dagstart import docker-compose.yml
///   dagstart import Procfile -o services.toml
///   dagstart import stack.yaml --from process-compose -o -
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ImportArgs {
    /// The file to convert.
    pub file: std::path::PathBuf,

    /// Where to write services.toml; `-` prints it.
    #[arg(short, long, default_value = "services.toml")]
    pub output: std::path::PathBuf,

    /// The file's format, when its name and contents do not tell.
    #[arg(long, value_enum)]
    pub from: Option<ImportFormat>,

    /// Overwrite the output file if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    /// docker compose (compose.yaml, docker-compose.yml)
    Compose,
    /// process-compose (process-compose.yaml)
    ProcessCompose,
    /// a Procfile (foreman, honcho), with the .env beside it
    Procfile,
}

impl From<ImportFormat> for crate::convert::Format {
    fn from(format: ImportFormat) -> Self {
        match format {
            ImportFormat::Compose => Self::Compose,
            ImportFormat::ProcessCompose => Self::ProcessCompose,
            ImportFormat::Procfile => Self::Procfile,
        }
    }
}

/// Write services.toml in another tool's format.
///
/// What the other format cannot say is listed, with the reason, in a comment at the top of
/// the file and on stderr. docs/import-export.md says what maps to what.
///
/// Examples:
///   dagstart export process-compose               print process-compose.yaml
///   dagstart export process-compose -o deploy/    write deploy/process-compose.yaml
///   dagstart export systemd -o /etc/systemd/system  <project>.target and its units
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ExportArgs {
    /// The format to write.
    #[arg(value_enum)]
    pub format: ExportFormat,

    /// The directory to write into (printed when not given).
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// process-compose.yaml
    ProcessCompose,
    /// <project>.target, a .service per node, a .socket per node with sockets
    Systemd,
}

/// Who may see and steer the web dashboard.
#[derive(Debug, Clone, Default, Args)]
pub struct DashboardAccessArgs {
    /// Every request to the dashboard needs this token (open the page as /?token=TOKEN;
    /// Prometheus sends it as a bearer token). With it the page can start, stop and restart
    /// nodes and reload.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "DAGSTART_DASHBOARD_TOKEN",
        hide_env_values = true
    )]
    pub dashboard_token: Option<String>,

    /// Also accept this name in requests' Host header (a proxy's, or a name of your own);
    /// repeat for more. The bound address, and localhost on loopback, are always accepted.
    #[arg(long, value_name = "NAME")]
    pub dashboard_host: Vec<String>,

    /// Allow a dashboard on a non-loopback address without a token: anyone who can reach it
    /// reads every line the services print.
    #[arg(long)]
    pub dashboard_public: bool,
}

impl DashboardAccessArgs {
    /// The access rules of the dashboard, refused if `address` would be open to the network.
    pub fn access(
        &self,
        address: std::net::SocketAddr,
    ) -> Result<
        crate::views::dashboard_access::Access,
        crate::views::dashboard_access::OpenToTheNetwork,
    > {
        let access = crate::views::dashboard_access::Access {
            token: self.dashboard_token.clone().filter(|t| !t.is_empty()),
            hosts: self.dashboard_host.clone(),
        };
        access.check_bind(address, self.dashboard_public)?;
        Ok(access)
    }
}

/// Check one node's readiness until it passes or its time is up (exit 0, or 4 on timeout).
///
/// The same probe `dagstart run` would send (http, tcp, exec, or a line of its output), with
/// the same pacing. The units of `dagstart export systemd` run it as `ExecStartPost=`, so
/// that what depends on the node waits for it. A `log` check follows the unit's journal
/// (`journalctl`): the lines of the invocation systemd runs it from, or of `--unit`.
///
/// Examples:
///   dagstart probe api
///   dagstart probe api --timeout 30s
///   dagstart probe worker --unit shop-worker.service
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ProbeArgs {
    /// The node whose health check to run.
    #[arg(value_name = "NODE")]
    pub node: String,

    /// How long to wait (default: the node's startup_timeout).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub timeout: Option<std::time::Duration>,

    /// For a `log` check outside systemd: whose journal to follow.
    #[arg(long, value_name = "UNIT")]
    pub unit: Option<String>,
}
