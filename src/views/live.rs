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
    waits: Waits,
}

/// What each node still waits for: its dependencies that are not ready yet.
struct Waits {
    names: Vec<String>,
    dependencies: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
    ready: Vec<bool>,
    launched: Vec<bool>,
}

impl Waits {
    fn new(config: &Config) -> Self {
        let count = config.nodes.len();
        let mut dependents = vec![Vec::new(); count];
        let dependencies: Vec<Vec<usize>> = config
            .nodes
            .iter()
            .enumerate()
            .map(|(n, node)| {
                node.depends_on
                    .iter()
                    .map(|d| {
                        dependents[d.node].push(n);
                        d.node
                    })
                    .collect()
            })
            .collect();
        Self {
            names: config.nodes.iter().map(|n| n.name.clone()).collect(),
            dependencies,
            dependents,
            ready: vec![false; count],
            launched: vec![false; count],
        }
    }

    /// "waiting for a, b", naming only what is not ready yet.
    fn message(&self, n: usize) -> String {
        let pending: Vec<&str> = self.dependencies[n]
            .iter()
            .filter(|&&d| !self.ready[d])
            .map(|&d| self.names[d].as_str())
            .collect();
        if pending.is_empty() {
            "waiting".to_owned()
        } else {
            format!("waiting for {}", pending.join(", "))
        }
    }

    /// `d` is ready: the nodes still waiting on it, whose message changes.
    fn ready(&mut self, d: usize) -> Vec<usize> {
        self.ready[d] = true;
        self.dependents[d]
            .iter()
            .copied()
            .filter(|&n| !self.launched[n])
            .collect()
    }
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
        let waits = Waits::new(config);
        let bars = config
            .nodes
            .iter()
            .enumerate()
            .zip(selected)
            .map(|((n, node), &on)| {
                on.then(|| {
                    let bar = multi.add(
                        ProgressBar::new_spinner()
                            .with_style(style.clone())
                            .with_prefix(node.name.clone()),
                    );
                    bar.set_message(waits.message(n));
                    bar.enable_steady_tick(Duration::from_millis(120));
                    bar
                })
            })
            .collect();
        Self { multi, bars, waits }
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
        if let (Some(n), EventKind::Launched) = (event.node, &event.kind) {
            self.waits.launched[n] = true;
        }
        if let (Some(n), EventKind::Ready { .. }) = (event.node, &event.kind) {
            for waiting in self.waits.ready(n) {
                if let Some(Some(bar)) = self.bars.get(waiting) {
                    bar.set_message(self.waits.message(waiting));
                }
            }
        }
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
            (EventKind::Ready { took, .. }, Some(bar)) => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_node_names_only_what_it_still_waits_for() {
        let config = crate::engine::config::load_str(
            std::path::Path::new("services.toml"),
            "[services.db]\ncommand = \"a\"\n[services.cache]\ncommand = \"a\"\n\
             [services.api]\ncommand = \"a\"\ndepends_on = [\"db\", \"cache\"]\n"
                .into(),
            &crate::engine::config::Environment::default(),
        )
        .unwrap();
        let mut waits = Waits::new(&config);
        assert_eq!(waits.message(2), "waiting for db, cache");
        assert_eq!(waits.ready(0), vec![2]);
        assert_eq!(waits.message(2), "waiting for cache");
        waits.ready(1);
        assert_eq!(waits.message(2), "waiting");
    }
}
