//! dagstart's integration tests: the real binary, real files, real processes.

mod harness;

mod check;
mod cluster;
mod config_cmd;
mod control;
mod dashboard;
mod diagnostics;
mod docs;
mod engine;
mod graph_cmd;
mod import;
mod kinds;
mod lifecycle;
mod loader_fuzz;
mod readiness;
mod real_stack;
mod report;
mod run;
mod systemd;
mod tui;
