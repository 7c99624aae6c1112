//! The terminal and the log files: a subscriber of the scheduler's events.
//!
//! Every node line goes to the terminal prefixed with the node's name (a stable colour per node
//! on a terminal, unless NO_COLOR is set) and, whole and unprefixed, to `<log_dir>/<node>.log`.
//! dagstart's own events go to the terminal and, timestamped, to `<log_dir>/dagstart.log`.
//! It runs on its own thread so slow terminals or disks never stall the scheduler.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal as _, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use crate::config::{Config, NodeKind};
use crate::event::{Event, EventKind};
use crate::report;

const COLOURS: [u8; 6] = [36, 33, 32, 35, 34, 31];
const OWN_NAME: &str = "dagstart";

/// Renders events until the stream closes; returns when every line is written and flushed.
pub struct Output {
    config: Arc<Config>,
    colour: bool,
    width: usize,
    terminal: BufWriter<io::Stdout>,
    node_logs: Vec<Option<BufWriter<File>>>,
    own_log: BufWriter<File>,
    /// `--output json`: the terminal gets one JSON object per event instead of text.
    json: bool,
    /// The web dashboard, fed every event.
    dashboard: Option<Arc<crate::dashboard::Dashboard>>,
    /// The live view, on a terminal, until startup ends.
    live: Option<crate::live::LiveView>,
    /// The run's events for the history (output lines left out), and when it started.
    history: Vec<serde_json::Value>,
    started: SystemTime,
}

impl Output {
    /// Creates the log directory and truncates the log files of the `selected` nodes.
    pub fn open(config: Arc<Config>, selected: &[bool], json: bool) -> io::Result<Self> {
        let dir = &config.settings.log_dir;
        std::fs::create_dir_all(dir)?;
        let node_logs = config
            .nodes
            .iter()
            .zip(selected)
            .map(|(node, &on)| {
                on.then(|| create(&dir.join(format!("{}.log", node.name))))
                    .transpose()
            })
            .collect::<io::Result<Vec<_>>>()?;
        let own_log = create(&dir.join("dagstart.log"))?;
        let width = config
            .nodes
            .iter()
            .zip(selected)
            .filter(|(_, on)| **on)
            .map(|(n, _)| n.name.len())
            .chain([OWN_NAME.len()])
            .max()
            .unwrap_or(OWN_NAME.len());
        let colour =
            io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        let live = (!json && io::stdout().is_terminal())
            .then(|| crate::live::LiveView::new(&config, selected));
        Ok(Self {
            config,
            colour,
            width,
            terminal: BufWriter::new(io::stdout()),
            node_logs,
            own_log,
            live,
            dashboard: None,
            json,
            history: Vec::new(),
            started: SystemTime::now(),
        })
    }

    /// Consumes events on a thread of its own; join the handle to know all output is written.
    pub fn spawn(
        mut self,
        mut events: mpsc::UnboundedReceiver<Event>,
    ) -> std::thread::JoinHandle<()> {
        std::thread::Builder::new()
            .name("dagstart-output".into())
            .spawn(move || {
                // The run ends with ShutdownComplete; senders that outlive it (the notify
                // socket, readers of processes that escaped their group) must not keep us.
                let mut done = false;
                while !done {
                    let Some(event) = events.blocking_recv() else {
                        break;
                    };
                    done = self.write_last(&event);
                    // Batch whatever else is queued, then flush once.
                    while !done {
                        let Ok(event) = events.try_recv() else { break };
                        done = self.write_last(&event);
                    }
                    self.flush();
                }
                self.flush();
            })
            .expect("spawn the output thread")
    }

    /// Feeds every event to `dashboard` too.
    pub fn with_dashboard(mut self, dashboard: Arc<crate::dashboard::Dashboard>) -> Self {
        self.dashboard = Some(dashboard);
        self
    }

    /// Writes `event`; true when it is the run's last one (then the run is also recorded).
    fn write_last(&mut self, event: &Event) -> bool {
        self.write(event);
        let is_output = matches!(event.kind, EventKind::Output { .. });
        // Output lines are the bulk of the events: only the dashboard needs them as JSON.
        if !is_output || self.dashboard.is_some() {
            let json = self.event_json(event);
            if let (Some(dashboard), Some(json)) = (&self.dashboard, &json) {
                dashboard.observe(json);
            }
            if !is_output {
                self.history.extend(json);
            }
        }
        let last = matches!(event.kind, EventKind::ShutdownComplete { .. });
        if last {
            self.record_run();
        }
        last
    }

    fn record_run(&mut self) {
        let started = humantime::format_rfc3339_millis(self.started).to_string();
        let id = self
            .started
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
            .to_string();
        let record = crate::history::RunRecord::new(
            started,
            &self.config,
            std::mem::take(&mut self.history),
        );
        if let Err(e) = crate::history::save(&self.config.base_dir, &id, &record) {
            let _ = writeln!(self.own_log, "cannot record the run in the history: {e}");
        }
    }

    fn flush(&mut self) {
        let _ = self.terminal.flush();
        let _ = self.own_log.flush();
        for log in self.node_logs.iter_mut().flatten() {
            let _ = log.flush();
        }
    }

    /// After a reload: the new names, and log files for the nodes that were added.
    fn apply_reload(&mut self, config: &Arc<Config>) {
        for node in config.nodes.iter().skip(self.node_logs.len()) {
            let file = create(&config.settings.log_dir.join(format!("{}.log", node.name))).ok();
            self.width = self.width.max(node.name.len());
            self.node_logs.push(file);
        }
        self.config = config.clone();
    }

    fn write(&mut self, event: &Event) {
        if let EventKind::Reloaded(config) = &event.kind {
            return self.apply_reload(config);
        }
        if self.json {
            if let Some(value) = self.event_json(event) {
                let _ = writeln!(self.terminal, "{value}");
            }
        }
        if let Some(live) = &mut self.live {
            if !live.update(event) {
                if let Some(live) = self.live.take() {
                    live.close();
                }
            }
        }
        if let (Some(n), EventKind::Output { line, .. }) = (event.node, &event.kind) {
            if !self.json {
                let prefix = self.prefix(&self.config.nodes[n].name, n);
                self.show(&format!("{prefix} | {line}"));
            }
            if let Some(Some(log)) = self.node_logs.get_mut(n) {
                let _ = writeln!(log, "{line}");
            }
            return;
        }
        let Some(text) = self.describe(event) else {
            return;
        };
        let stamp = humantime::format_rfc3339_millis(SystemTime::now());
        for line in text.lines() {
            let _ = writeln!(
                self.own_log,
                "{stamp} +{:.3}s {line}",
                event.at.as_secs_f64()
            );
        }
        if self.on_terminal(event) && !self.json {
            let prefix = self.prefix(OWN_NAME, usize::MAX);
            let at = format!("+{:.3}s", event.at.as_secs_f64());
            for (i, line) in text.lines().enumerate() {
                let stamp = if i == 0 { at.as_str() } else { "" };
                self.show(&format!("{prefix} | {stamp:>8} {line}"));
            }
        }
    }

    /// `--output json`: one object per event, for scripts. The shape is documented in
    /// docs/events.md and kept stable.
    fn event_json(&self, event: &Event) -> Option<serde_json::Value> {
        use serde_json::json;
        let ms = |d: &std::time::Duration| d.as_millis() as u64;
        let (name, fields) = match &event.kind {
            EventKind::Plan {
                nodes,
                sequential,
                max_workers,
            } => (
                "plan",
                json!({ "nodes": nodes, "sequential": sequential, "max_workers": max_workers }),
            ),
            EventKind::Launched => ("launched", json!({})),
            EventKind::Spawned { pid, attempt } => {
                ("spawned", json!({ "pid": pid, "attempt": attempt }))
            }
            EventKind::Ready { took } => ("ready", json!({ "took_ms": ms(took) })),
            EventKind::Retrying {
                attempt,
                reason,
                delay,
            } => (
                "retrying",
                json!({ "attempt": attempt, "reason": reason, "delay_ms": ms(delay) }),
            ),
            EventKind::Failed { reason } => ("failed", json!({ "reason": reason })),
            EventKind::Skipped { reason } => ("skipped", json!({ "reason": reason })),
            EventKind::Restarting {
                delay,
                restart,
                reason,
            } => (
                "restarting",
                json!({ "delay_ms": ms(delay), "restart": restart, "reason": reason }),
            ),
            EventKind::Exited { status } => ("exited", json!({ "status": status })),
            EventKind::Output { stream, line } => {
                ("output", json!({ "stream": stream, "line": line }))
            }
            EventKind::Status { text } => ("status", json!({ "text": text })),
            EventKind::StartupComplete(summary) => {
                let names = |list: &[usize]| {
                    list.iter()
                        .map(|&n| self.config.nodes[n].name.clone())
                        .collect::<Vec<_>>()
                };
                (
                    "startup_complete",
                    json!({
                        "ready_ms": ms(&summary.ready_after),
                        "critical_path": names(&summary.critical_path),
                        "sequential_estimate_ms": ms(&summary.sequential_estimate),
                        "pending_optional": names(&summary.pending_optional),
                    }),
                )
            }
            EventKind::StartupFailed { reason } => ("startup_failed", json!({ "reason": reason })),
            EventKind::ShutdownStarted { reason } => {
                ("shutdown_started", json!({ "reason": reason }))
            }
            EventKind::Stopping => ("stopping", json!({})),
            EventKind::Stopped {
                status,
                killed,
                took,
            } => (
                "stopped",
                json!({ "status": status, "killed": killed, "took_ms": ms(took) }),
            ),
            EventKind::ShutdownComplete { took } => {
                ("shutdown_complete", json!({ "took_ms": ms(took) }))
            }
            EventKind::Note(text) => ("note", json!({ "text": text })),
            EventKind::Reloaded(_) => return None,
        };
        let mut value = json!({
            "t": (event.at.as_secs_f64() * 1000.0).round() / 1000.0,
            "event": name,
            "node": event.node.map(|n| self.config.nodes[n].name.as_str()),
        });
        if let (Some(object), serde_json::Value::Object(extra)) = (value.as_object_mut(), fields) {
            object.extend(extra);
        }
        Some(value)
    }

    /// A line for the terminal: above the live view while there is one.
    fn show(&mut self, line: &str) {
        match &self.live {
            Some(live) => live.println(line),
            None => {
                let _ = writeln!(self.terminal, "{line}");
            }
        }
    }

    /// Launches are only worth a line in the log file; the terminal shows the spawn.
    fn on_terminal(&self, event: &Event) -> bool {
        !matches!(event.kind, EventKind::Launched)
    }

    fn prefix(&self, name: &str, index: usize) -> String {
        let padded = format!("{name:>width$}", width = self.width);
        if !self.colour {
            return padded;
        }
        let code = if index == usize::MAX {
            1
        } else {
            COLOURS[index % COLOURS.len()]
        };
        format!("\x1b[{code}m{padded}\x1b[0m")
    }

    fn describe(&self, event: &Event) -> Option<String> {
        let name = event
            .node
            .map(|n| self.config.nodes[n].name.as_str())
            .unwrap_or_default();
        let is_component = event
            .node
            .is_some_and(|n| self.config.nodes[n].kind == NodeKind::Component);
        let text = match &event.kind {
            EventKind::Plan {
                nodes,
                sequential,
                max_workers,
            } => {
                let mode = match (sequential, max_workers) {
                    (true, _) => "sequential, one at a time".to_owned(),
                    (false, Some(w)) => format!("parallel, at most {w} starting at once"),
                    (false, None) => "parallel".to_owned(),
                };
                format!("starting {nodes} nodes ({mode})")
            }
            EventKind::Launched => format!("{name}: dependencies met, starting"),
            EventKind::Spawned { pid, attempt: 1 } => format!("{name}: spawned (pid {pid})"),
            EventKind::Spawned { pid, attempt } => {
                format!("{name}: spawned (pid {pid}, attempt {attempt})")
            }
            EventKind::Ready { took } if is_component => {
                format!("{name}: completed after {}", secs(*took))
            }
            EventKind::Ready { took } => format!("{name}: ready after {}", secs(*took)),
            EventKind::Retrying {
                attempt,
                reason,
                delay,
            } => {
                format!(
                    "{name}: attempt {attempt} failed: {reason}; retrying in {}",
                    humantime::format_duration(*delay)
                )
            }
            EventKind::Failed { reason } => format!("{name}: FAILED: {reason}"),
            EventKind::Skipped { reason } => format!("{name}: skipped: {reason}"),
            EventKind::Exited { status } => format!("{name}: exited ({status})"),
            EventKind::Restarting { delay, restart, .. } => {
                format!(
                    "{name}: restarting in {} (restart {restart})",
                    humantime::format_duration(*delay)
                )
            }
            EventKind::Output { .. } => return None,
            EventKind::Status { text } => format!("{name}: status: {text}"),
            EventKind::StartupComplete(summary) => report::render(&self.config, summary),
            EventKind::StartupFailed { reason } => format!("startup failed: {reason}"),
            EventKind::ShutdownStarted { reason } => {
                format!("shutting down ({reason}): stopping in reverse dependency order")
            }
            EventKind::Stopping => format!("{name}: stopping"),
            EventKind::Stopped {
                status,
                killed: true,
                took,
            } => {
                format!(
                    "{name}: did not stop in time, killed ({status}) after {}",
                    secs(*took)
                )
            }
            EventKind::Stopped { status, took, .. } => {
                format!("{name}: stopped ({status}) in {}", secs(*took))
            }
            EventKind::ShutdownComplete { took } => {
                format!("everything stopped in {}", secs(*took))
            }
            EventKind::Note(text) => text.clone(),
            EventKind::Reloaded(_) => return None,
        };
        Some(text)
    }
}

fn secs(d: Duration) -> String {
    report::seconds(d)
}

fn create(path: &Path) -> io::Result<BufWriter<File>> {
    File::create(path)
        .map(BufWriter::new)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}
