//! The live view on a terminal: one line per node (waiting for X, starting, probing, ready,
//! failed, skipped) with its elapsed time, kept at the bottom while log lines scroll above it.
//! It collapses when startup ends; from then on the output is plain lines.

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::engine::config::Config;
use crate::engine::event::{Event, EventKind};

pub struct LiveView {
    multi: MultiProgress,
    bars: Vec<Option<ProgressBar>>,
}

impl LiveView {
    /// One line per selected node.
    pub fn new(config: &Config, selected: &[bool]) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let width = config.nodes.iter().map(|n| n.name.len()).max().unwrap_or(4);
        let style = ProgressStyle::with_template(&format!(
            "{{spinner}} {{prefix:<{width}}} {{elapsed:>4}}  {{msg}}"
        ))
        .expect("a valid template");
        let bars = config
            .nodes
            .iter()
            .zip(selected)
            .map(|(node, &on)| {
                on.then(|| {
                    let bar = multi.add(
                        ProgressBar::new_spinner()
                            .with_style(style.clone())
                            .with_prefix(node.name.clone()),
                    );
                    let deps: Vec<&str> = node.depends_on.iter().map(|d| d.name.as_str()).collect();
                    bar.set_message(if deps.is_empty() {
                        "waiting".to_owned()
                    } else {
                        format!("waiting for {}", deps.join(", "))
                    });
                    bar.enable_steady_tick(Duration::from_millis(120));
                    bar
                })
            })
            .collect();
        Self { multi, bars }
    }

    /// Prints a line above the node lines.
    pub fn println(&self, line: &str) {
        let _ = self.multi.println(line);
    }

    /// Updates the node line an event is about. Returns false when the view should go: startup
    /// is over one way or another.
    pub fn update(&mut self, event: &Event) -> bool {
        let bar = event
            .node
            .and_then(|n| self.bars.get(n))
            .and_then(Option::as_ref);
        match (&event.kind, bar) {
            (EventKind::Launched, Some(bar)) => bar.set_message("starting"),
            (EventKind::Spawned { pid, attempt: 1 }, Some(bar)) => {
                bar.set_message(format!("probing (pid {pid})"))
            }
            (EventKind::Spawned { pid, attempt }, Some(bar)) => {
                bar.set_message(format!("probing (pid {pid}, attempt {attempt})"))
            }
            (EventKind::Retrying { attempt, .. }, Some(bar)) => {
                bar.set_message(format!("retrying after attempt {attempt}"))
            }
            (EventKind::Status { text }, Some(bar)) => bar.set_message(format!("probing: {text}")),
            (EventKind::Probe { result }, Some(bar)) => {
                bar.set_message(format!("not ready yet: {result}"));
            }
            (EventKind::Ready { took }, Some(bar)) => {
                bar.finish_with_message(format!("ready after {:.2}s", took.as_secs_f64()))
            }
            (EventKind::Failed { reason }, Some(bar)) => {
                bar.finish_with_message(format!("failed: {reason}"))
            }
            (EventKind::Skipped { reason }, Some(bar)) => {
                bar.finish_with_message(format!("skipped: {reason}"))
            }
            (
                EventKind::StartupComplete(_)
                | EventKind::StartupFailed { .. }
                | EventKind::ShutdownStarted { .. },
                _,
            ) => {
                return false;
            }
            _ => {}
        }
        true
    }

    /// Removes the node lines, leaving the terminal to plain output.
    pub fn close(self) {
        for bar in self.bars.into_iter().flatten() {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}
