//! dagstart: bring a stack of services up as fast as its dependency graph allows.
//!
//! Three parts, and arrows only point down (`cli -> views -> engine`, `cli -> engine`):
//!
//! | part | what it is |
//! |---|---|
//! | [`engine`] | config, graph, the lifecycle core and its shell, processes, probes, readiness, events: no clap, no terminal, no web page |
//! | [`views`] | subscribers of the engine's events: log files, terminal, live view, history, reports, dashboard |
//! | [`cli`] | clap definitions, one function per command, the error type and exit codes |
//!
//! Beside them: [`convert`] (other tools' stack files into services.toml, for `dagstart
//! import`: it writes text that the loader then checks), [`demo`] (demo-svc, the fake service
//! of the demo stack and the tests) and [`synth`] (synthetic configurations for benchmarks and
//! scale tests). `src/main.rs` only parses the command line and calls
//! [`cli::commands::execute`].

pub mod cli;
pub mod convert;
pub mod demo;
pub mod engine;
pub mod synth;
pub mod views;

pub use cli::error::{Error, exit_code};
