//! Rendering timings for people: the startup summary the core computed
//! ([`crate::engine::timing::Summary`]), and reports of recorded runs (`dagstart report`).

use std::fmt::Write as _;
use std::time::Duration;

use crate::engine::config::Config;
use crate::engine::event::EventKind;
pub use crate::engine::timing::{NodeTiming, Summary};

pub(crate) fn seconds(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

/// The summary as the terminal and dagstart.log show it.
pub fn render(config: &Config, summary: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "startup complete: ready in {}",
        seconds(summary.ready_after)
    );
    let width = summary
        .timings
        .iter()
        .map(|t| config.nodes[t.node].name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        out,
        "  {:width$}  {:>9}  {:>9}  attempts",
        "node", "ready at", "took"
    );
    for t in &summary.timings {
        let node = &config.nodes[t.node];
        let ready = t.ready_at.map_or_else(|| "-".to_owned(), seconds);
        let took = t.start_duration().map_or_else(|| "-".to_owned(), seconds);
        let note = if t.ready_at.is_none() && !node.required {
            "  (optional, still starting)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {:width$}  {ready:>9}  {took:>9}  {:>8}{note}",
            node.name, t.attempts
        );
    }
    if !summary.critical_path.is_empty() {
        let steps: Vec<String> = summary
            .critical_path
            .iter()
            .map(|name| {
                let took = summary
                    .timings
                    .iter()
                    .find(|t| config.nodes[t.node].name == *name)
                    .and_then(NodeTiming::start_duration);
                format!("{name} ({})", took.map_or_else(|| "-".into(), seconds))
            })
            .collect();
        let _ = writeln!(out, "  critical path: {}", steps.join(" -> "));
    }
    let speedup =
        summary.sequential_estimate.as_secs_f64() / summary.ready_after.as_secs_f64().max(1e-3);
    let _ = writeln!(
        out,
        "  sequential estimate: {} (sum of start times); parallel took {}: {speedup:.1}x faster",
        seconds(summary.sequential_estimate),
        seconds(summary.ready_after)
    );
    out
}

// ----- reports of recorded runs ------------------------------------------------------------------

/// One node's timeline in a recorded run, in milliseconds since the run started.
#[derive(Debug, Clone, Default)]
pub struct RecordedTiming {
    pub launched: Option<f64>,
    pub spawned: Option<f64>,
    pub ready: Option<f64>,
    pub took: Option<f64>,
    pub attempts: u64,
}

/// What `dagstart report` and `graph --timings` read from a recorded run.
#[derive(Debug, Clone, Default)]
pub struct RecordedRun {
    pub timings: std::collections::BTreeMap<String, RecordedTiming>,
    pub ready_ms: Option<f64>,
    pub critical_path: Vec<String>,
    pub sequential_estimate_ms: Option<f64>,
}

impl RecordedRun {
    pub fn from_record(record: &crate::views::history::RunRecord) -> Self {
        let mut run = Self::default();
        for event in &record.events {
            let t = event.millis();
            if let EventKind::StartupComplete(summary) = &event.kind {
                run.ready_ms = Some(millis(summary.ready_after));
                run.sequential_estimate_ms = Some(millis(summary.sequential_estimate));
                run.critical_path.clone_from(&summary.critical_path);
                continue;
            }
            let Some(node) = &event.node else {
                continue;
            };
            let timing = run.timings.entry(node.clone()).or_default();
            match &event.kind {
                EventKind::Launched => {
                    timing.launched.get_or_insert(t);
                }
                EventKind::Spawned { attempt, .. } => {
                    timing.spawned.get_or_insert(t);
                    timing.attempts = timing.attempts.max(u64::from(*attempt));
                }
                EventKind::Ready { took } if timing.ready.is_none() => {
                    timing.ready = Some(t);
                    timing.took = Some(millis(*took));
                }
                _ => {}
            }
        }
        run
    }
}

fn millis(d: Duration) -> f64 {
    d.as_millis() as f64
}

fn secs_ms(ms: f64) -> String {
    format!("{:.2}s", ms / 1000.0)
}

/// `dagstart report`: blame, the critical chain, parallel against sequential, and hints.
pub fn render_recorded(id: &str, record: &crate::views::history::RunRecord) -> String {
    let run = RecordedRun::from_record(record);
    let mut out = String::new();
    let _ = writeln!(out, "run {id}, started {}", record.started);
    match run.ready_ms {
        Some(ms) => {
            let _ = writeln!(out, "ready in {}", secs_ms(ms));
        }
        None => {
            let _ = writeln!(out, "startup did not complete");
        }
    }
    let mut blame: Vec<(&String, f64)> = run
        .timings
        .iter()
        .filter_map(|(n, t)| Some((n, t.took?)))
        .collect();
    blame.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let _ = writeln!(out, "\nblame (time from spawn to ready, slowest first):");
    for (name, took) in &blame {
        let _ = writeln!(out, "  {:>8}  {name}", secs_ms(*took));
    }
    if !run.critical_path.is_empty() {
        let _ = writeln!(
            out,
            "\ncritical chain (@ when it was launched, + how long it took to be ready):"
        );
        let mut previous: Option<&String> = None;
        for name in &run.critical_path {
            let t = run.timings.get(name).cloned().unwrap_or_default();
            let at = t.launched.map_or_else(|| "-".into(), secs_ms);
            let took = t.took.map_or_else(|| "-".into(), secs_ms);
            let waited = match previous {
                Some(dep) => format!("  (waited {at} for {dep})"),
                None => String::new(),
            };
            let _ = writeln!(out, "  {name} @{at} +{took}{waited}");
            previous = Some(name);
        }
    }
    if let (Some(ready), Some(sequential)) = (run.ready_ms, run.sequential_estimate_ms) {
        let _ = writeln!(
            out,
            "\nparallel {} against sequential {} (sum of start times): {:.1}x faster",
            secs_ms(ready),
            secs_ms(sequential),
            sequential / ready.max(1.0)
        );
    }
    let polled: Vec<&str> = run
        .critical_path
        .iter()
        .filter(|n| record.nodes.iter().any(|r| &r.name == *n && r.polled))
        .map(String::as_str)
        .collect();
    // Probing paces itself at 1/64 of the time waited (at least 250 µs): an upper bound of the
    // time between a service being ready and a probe seeing it.
    let probe_cost: f64 = polled
        .iter()
        .filter_map(|n| run.timings.get(*n)?.took)
        .map(|took| took / 64.0 + 0.25)
        .sum();
    if !polled.is_empty() {
        let _ = writeln!(
            out,
            "\ntime lost to waiting on probes: at most {probe_cost:.0} ms of the critical chain ({} polled); none with notify, ready_fd or log readiness",
            polled.join(", ")
        );
    }
    let hints = hints(record, &run);
    if !hints.is_empty() {
        let _ = writeln!(out, "\nhints:");
        for hint in hints {
            let _ = writeln!(out, "  - {hint}");
        }
    }
    out
}

/// Where the startup could be shorter: edges of the critical chain whose dependency serves
/// only that one dependent, and a chain that leaves no room for parallelism.
fn hints(record: &crate::views::history::RunRecord, run: &RecordedRun) -> Vec<String> {
    let mut hints = Vec::new();
    for pair in run.critical_path.windows(2) {
        let (dep, node) = (&pair[0], &pair[1]);
        let dependents = record
            .nodes
            .iter()
            .filter(|n| n.depends_on.iter().any(|(d, _)| d == dep))
            .count();
        let waited = run
            .timings
            .get(node)
            .and_then(|t| t.launched)
            .unwrap_or(0.0);
        if dependents == 1 {
            hints.push(format!(
                "`{node}` waited {} for `{dep}`; nothing else needs `{dep}`: if `{node}` can start before `{dep}` is ready, use the `started` or `listening` condition, or make `{dep}` start faster",
                secs_ms(waited)
            ));
        }
    }
    if let (Some(ready), Some(sequential)) = (run.ready_ms, run.sequential_estimate_ms) {
        if sequential < ready * 1.2 && run.critical_path.len() > 1 {
            hints.push("startup is mostly one chain, so parallelism cannot help much: shorten the critical chain".into());
        }
    }
    hints
}

/// `dagstart report --compare A B`: startup time and each node's start time, side by side.
pub fn render_comparison(
    a: (&str, &crate::views::history::RunRecord),
    b: (&str, &crate::views::history::RunRecord),
) -> String {
    let (run_a, run_b) = (RecordedRun::from_record(a.1), RecordedRun::from_record(b.1));
    let mut names: Vec<&String> = run_a.timings.keys().chain(run_b.timings.keys()).collect();
    names.sort();
    names.dedup();
    let width = names.iter().map(|n| n.len()).max().unwrap_or(4).max(5);
    let show = |ms: Option<f64>| ms.map_or_else(|| "-".to_owned(), secs_ms);
    let delta = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => format!("{:+.2}s", (y - x) / 1000.0),
        _ => String::new(),
    };
    let mut out = String::new();
    let _ = writeln!(out, "{:width$}  {:>10}  {:>10}  change", "", a.0, b.0);
    let _ = writeln!(
        out,
        "{:width$}  {:>10}  {:>10}  {}",
        "ready",
        show(run_a.ready_ms),
        show(run_b.ready_ms),
        delta(run_a.ready_ms, run_b.ready_ms)
    );
    for name in names {
        let took_a = run_a.timings.get(name).and_then(|t| t.took);
        let took_b = run_b.timings.get(name).and_then(|t| t.took);
        let _ = writeln!(
            out,
            "{name:width$}  {:>10}  {:>10}  {}",
            show(took_a),
            show(took_b),
            delta(took_a, took_b)
        );
    }
    out
}
