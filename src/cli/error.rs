//! The library's top-level error and the one table of exit codes.

use std::path::PathBuf;

use crate::engine::config::ConfigError;
use crate::engine::graph::UnknownNode;

/// Exit codes of the `dagstart` binary. Also documented in README.md.
pub mod exit_code {
    /// Success; or a shutdown that the user asked for after startup completed.
    pub const OK: i32 = 0;
    /// An unexpected failure (I/O error, cannot create the log directory, ...).
    pub const FAILURE: i32 = 1;
    /// services.toml is missing or invalid, or the command line names an unknown node.
    pub const CONFIG: i32 = 2;
    /// Preflight failed: a command, a working directory or a port is not usable. Nothing started.
    pub const PREFLIGHT: i32 = 3;
    /// A required node failed to start, or the startup budget ran out.
    pub const STARTUP: i32 = 4;
    /// `status`, `start`, `stop`, `restart` or `down` found no running dagstart.
    pub const NOT_RUNNING: i32 = 5;
    /// `run` found a dagstart already running for the same services.toml (or, in a cluster,
    /// the host already held, or a run already going on).
    pub const ALREADY_RUNNING: i32 = 6;
    /// After startup, a required node failed for good (a crash loop, a failed restart, or an
    /// exit with an error and no restart policy); what needed it was stopped. Reported when
    /// the run ends.
    pub const DEGRADED: i32 = 7;
    /// Interrupted (Ctrl-C / SIGTERM) before startup completed.
    pub const INTERRUPTED: i32 = 130;
}

/// Every failure a dagstart command can end with.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot read {}", path.display())]
    #[diagnostic(code(dagstart::config::read), help("pass another file with -f/--file"))]
    ReadConfig {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(transparent)]
    Config(#[from] ConfigError),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Import(#[from] crate::convert::ImportError),

    #[error(transparent)]
    #[diagnostic(transparent)]
    UnknownNode(#[from] UnknownNode),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Selection(#[from] crate::engine::selection::SelectionError),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Probe(#[from] crate::cli::probe::ProbeError),

    #[error(transparent)]
    #[diagnostic(transparent)]
    DashboardOpen(#[from] crate::views::dashboard_access::OpenToTheNetwork),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Preflight(#[from] crate::engine::preflight::PreflightError),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Startup(#[from] crate::engine::lifecycle::StartupError),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Control(#[from] crate::engine::control::ControlError),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Cluster(#[from] crate::engine::cluster::ClusterError),

    #[error("{0}")]
    #[diagnostic(code(dagstart::control::refused))]
    Refused(String),

    #[error("{0}")]
    #[diagnostic(
        code(dagstart::history),
        help("every `dagstart run` is recorded in .dagstart/runs/ beside services.toml")
    )]
    History(String),

    #[error("required nodes failed after startup: {}", .0.join("; "))]
    #[diagnostic(
        code(dagstart::degraded),
        help("see logs/dagstart.log and `dagstart report` for what happened before")
    )]
    Degraded(Vec<String>),

    #[error("interrupted before startup completed")]
    #[diagnostic(code(dagstart::interrupted))]
    Interrupted,

    #[error("{context}: {source}")]
    #[diagnostic(code(dagstart::io))]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::ReadConfig { .. }
            | Error::Config(_)
            | Error::UnknownNode(_)
            | Error::Selection(_)
            | Error::DashboardOpen(_)
            | Error::Import(_) => exit_code::CONFIG,
            Error::Preflight(_) => exit_code::PREFLIGHT,
            Error::Probe(crate::cli::probe::ProbeError::Timeout { .. }) => exit_code::STARTUP,
            Error::Probe(crate::cli::probe::ProbeError::Journalctl(_)) => exit_code::FAILURE,
            Error::Probe(_) => exit_code::CONFIG,
            Error::Startup(_) => exit_code::STARTUP,
            Error::Interrupted => exit_code::INTERRUPTED,
            Error::Degraded(_) => exit_code::DEGRADED,
            Error::Control(crate::engine::control::ControlError::NotRunning { .. }) => {
                exit_code::NOT_RUNNING
            }
            Error::Control(crate::engine::control::ControlError::AlreadyRunning { .. }) => {
                exit_code::ALREADY_RUNNING
            }
            Error::Cluster(cluster) => {
                use crate::engine::cluster::ClusterError as C;
                match cluster {
                    C::HostTaken { .. } | C::RunExists { .. } => exit_code::ALREADY_RUNNING,
                    C::OtherConfig { .. } | C::UnknownHost { .. } => exit_code::CONFIG,
                    C::Unreachable(_) | C::RunChanged => exit_code::FAILURE,
                }
            }
            Error::Control(_) | Error::Refused(_) | Error::History(_) => exit_code::FAILURE,
            Error::Io { .. } => exit_code::FAILURE,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<crate::engine::config::LoadError> for Error {
    fn from(e: crate::engine::config::LoadError) -> Self {
        match e {
            crate::engine::config::LoadError::Read { path, source } => {
                Error::ReadConfig { path, source }
            }
            crate::engine::config::LoadError::Invalid(c) => Error::Config(c),
        }
    }
}

/// Renders an error for a person: every diagnostic with its labels, then a summary line.
/// The one place errors are turned into text.
pub fn render(error: &Error, handler: &miette::GraphicalReportHandler) -> String {
    let mut out = String::new();
    match error {
        Error::Config(config) => out.push_str(&config.render(handler)),
        other => {
            let _ = handler.render_report(&mut out, other);
        }
    }
    out
}

/// The renderer for a terminal (colours unless NO_COLOR or not a terminal).
pub fn terminal_handler() -> miette::GraphicalReportHandler {
    miette::GraphicalReportHandler::new()
}

pub use crate::engine::config::plain_handler;
