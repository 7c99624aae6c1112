//! dagstart: bring a stack of services up as fast as its dependency graph allows.
//!
//! The engine lives here; `src/main.rs` only parses the command line and calls [`app::execute`].
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | services.toml: parsing, validation, diagnostics, resolved model |
//! | [`graph`] | the dependency graph: cycles, levels, selection, renderings |
//! | [`preflight`] | the environment check before anything is spawned |
//! | [`lifecycle`] | the one typed node lifecycle: a pure core and the async shell that runs it |
//! | [`process`] | a node's process group: spawn, output lines, graceful stop |
//! | [`health`] | probe attempts and the adaptive wait for readiness |
//! | [`guardian`] | no orphans: subreaper, run marker sweep, and the guardian process |
//! | [`notify`] | systemd's notify protocol: the run's NOTIFY_SOCKET and its routing |
//! | [`sockets`] | socket activation: listening sockets bound before anything starts |
//! | [`event`] | the event stream the lifecycle core publishes |
//! | [`record`] | `EventRecord`: the one serde form of an event (JSON output, run record, report, dashboard) |
//! | [`output`] | the log thread: log files, run record, dashboard feed, then the terminal |
//! | [`terminal`] | the terminal thread: lines, live view, JSON; drops and counts when behind |
//! | [`timing`] | a run's timeline: critical path, sequential estimate (computed by the core) |
//! | [`report`] | rendering timings: the startup summary, `dagstart report` of recorded runs |
//! | [`run`] | `dagstart run`: signals, the `--` command, exit codes |
//! | [`control`] | the control socket: steering a running dagstart from another terminal |
//! | [`logs`] | `dagstart logs`: the nodes' log files, tailed and followed |
//! | [`watch`] | polling services.toml (`run --watch`) and each node's `watch` globs |
//! | [`pressure`] | CPU pressure (PSI, or runnable tasks) for `max_workers = "auto"` |
//! | [`history`] | the run history in `.dagstart/runs/`, for reports |
//! | [`gantt`] | the SVG/HTML Gantt chart of a recorded startup |
//! | [`schema`] | the JSON Schema of services.toml (`dagstart schema`) |
//! | [`live`] | the live view on a terminal while starting (indicatif) |
//! | [`dashboard`] | the web dashboard (SSE) and `/metrics`: a subscriber of the events |
//! | [`demo`] | demo-svc, the configurable fake service of the demo stack and the tests |
//! | [`app`] | one function per command, wiring the modules together |
//! | [`error`] | the top-level error type and the exit-code table |
//! | [`cli`] | the clap definitions |
//! | [`synth`] | synthetic configurations for benchmarks and scale tests |

pub mod app;
pub mod cli;
pub mod config;
pub mod control;
pub mod dashboard;
pub mod demo;
pub mod error;
pub mod event;
pub mod gantt;
pub mod graph;
pub mod guardian;
pub mod health;
pub mod history;
pub mod lifecycle;
pub mod live;
pub mod logs;
pub mod notify;
pub mod output;
pub mod preflight;
pub mod pressure;
pub mod process;
pub mod record;
pub mod report;
pub mod run;
pub mod schema;
pub mod sockets;
pub mod synth;
pub mod terminal;
pub mod timing;
pub mod watch;

pub use error::{Error, exit_code};
