//! The views: subscribers of the engine's events, each on its own bounded feed. They read
//! [`EventRecord`](crate::engine::record::EventRecord)s and
//! [`Event`](crate::engine::event::Event)s; they never change what the engine decides.
//!
//! | module | owns |
//! |---|---|
//! | [`logfiles`] | the log thread: `<node>.log`, `dagstart.log`, the run record, the dashboard feed |
//! | [`terminal`] | the terminal thread: lines, live view or JSON; drops and counts when behind |
//! | [`live`] | the live view on a terminal while starting (indicatif) |
//! | [`history`] | the run history in `.dagstart/runs/`: written as it happens, read for reports |
//! | [`report`] | the startup summary and `dagstart report` of recorded runs |
//! | [`gantt`] | the SVG/HTML Gantt chart of a recorded startup |
//! | [`dashboard`] | the web dashboard (SSE) and `/metrics` |
//! | [`log_share`] | in a cluster: this host's node logs served to the other hosts (`dagstart logs` there) |
//! | [`graph_render`] | `dagstart graph`: text, dot, Mermaid, JSON |
//! | `private` | log and record files only the user may read (0600 in 0700 directories) |

pub mod dag_layout;
pub mod dashboard;
pub mod dashboard_access;
pub mod gantt;
pub mod graph_render;
pub mod history;
pub mod live;
pub mod log_share;
pub mod logfiles;
mod private;
pub mod report;
pub mod terminal;
pub mod tui;
