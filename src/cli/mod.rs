//! The command line: clap definitions, one function per command wiring the engine and the
//! views, the top-level error and the exit-code table.
//!
//! | module | owns |
//! |---|---|
//! | [`args`] | the clap definitions (help text lives here) |
//! | [`commands`] | one function per command |
//! | [`run`] | `dagstart run`: signals, the `--` command, output threads, exit codes |
//! | [`logs`] | `dagstart logs`: the nodes' log files, tailed and followed |
//! | [`schema`] | the JSON Schema of services.toml (`dagstart schema`) |
//! | [`error`] | the top-level error type, the exit-code table, the one renderer |

pub mod args;
pub mod commands;
pub mod error;
pub mod logs;
pub mod probe;
pub mod run;
pub mod schema;
