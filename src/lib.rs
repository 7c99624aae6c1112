//! dagstart: bring a stack of services up as fast as its dependency graph allows.
//!
//! The engine lives here; `src/main.rs` only parses the command line and calls [`app::execute`].
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | services.toml: parsing, validation, diagnostics, resolved model |
//! | [`graph`] | the dependency graph: cycles, levels, selection, renderings |
//! | [`app`] | one function per command, wiring the modules together |
//! | [`error`] | the top-level error type and the exit-code table |
//! | [`cli`] | the clap definitions |
//! | [`synth`] | synthetic configurations for benchmarks and scale tests |

pub mod app;
pub mod cli;
pub mod config;
pub mod error;
pub mod graph;
pub mod run;
pub mod synth;

pub use error::{Error, exit_code};
