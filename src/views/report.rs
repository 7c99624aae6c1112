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
    for line in where_the_time_went(summary) {
        let _ = writeln!(out, "  {line}");
    }
    out
}

/// What parallelism bought (like with like: sums of start times, one node at a time against
/// the critical chain) and what was not the nodes' own start. Shared by the end-of-startup
/// summary and `dagstart report`.
pub fn where_the_time_went(summary: &Summary) -> Vec<String> {
    let mut lines = Vec::new();
    match (summary.sequential, summary.speedup(), summary.critical_chain) {
        (true, _, _) => lines.push(format!(
            "sequential: one node at a time, {} of start times in all",
            seconds(summary.sequential_estimate)
        )),
        (false, Some(speedup), Some(chain)) => lines.push(format!(
            "parallel: the critical chain took {} of start time where one node at a time would take {} (sum of start times): {speedup:.1}x from parallelism",
            seconds(chain),
            seconds(summary.sequential_estimate)
        )),
        // A record from before these figures were kept.
        _ => lines.push(format!(
            "sequential estimate: {} (sum of start times); parallel took {}",
            seconds(summary.sequential_estimate),
            seconds(summary.ready_after)
        )),
    }
    if let (Some(between), Some(verification)) = (summary.between_nodes(), summary.verification()) {
        lines.push(format!(
            "besides the nodes' own start: {} between nodes (spawn, hand-off), {} final verification",
            seconds(between),
            seconds(verification)
        ));
    }
    lines
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
    /// Readiness probes sent before it was ready, and the time they took (measured).
    pub probes: u32,
    pub probe_ms: f64,
    /// In a cluster run: the host it ran on. The other hosts' nodes are timed as this host
    /// learned of them through etcd, a hand-off later than on their own host.
    pub host: Option<String>,
}

/// What `dagstart report` and `graph --timings` read from a recorded run.
#[derive(Debug, Clone, Default)]
pub struct RecordedRun {
    pub timings: std::collections::BTreeMap<String, RecordedTiming>,
    pub ready_ms: Option<f64>,
    pub critical_path: Vec<String>,
    pub sequential_estimate_ms: Option<f64>,
    /// The startup summary the run recorded, when startup completed.
    pub summary: Option<Summary>,
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
                run.summary = Some((**summary).clone());
                continue;
            }
            let Some(node) = &event.node else {
                continue;
            };
            let timing = run.timings.entry(node.clone()).or_default();
            if timing.host.is_none() {
                timing.host.clone_from(&event.host);
            }
            match &event.kind {
                EventKind::Launched => {
                    timing.launched.get_or_insert(t);
                }
                EventKind::Spawned { attempt, .. } => {
                    timing.spawned.get_or_insert(t);
                    timing.attempts = timing.attempts.max(u64::from(*attempt));
                }
                EventKind::Ready {
                    took,
                    probes,
                    probe_time,
                } if timing.ready.is_none() => {
                    timing.ready = Some(t);
                    timing.took = Some(millis(*took));
                    timing.probes = *probes;
                    timing.probe_ms = probe_time.as_secs_f64() * 1000.0;
                }
                _ => {}
            }
        }
        run
    }
}

/// " on db1" for a node of a cluster run; nothing otherwise.
fn on_host(timing: &RecordedTiming) -> String {
    timing
        .host
        .as_ref()
        .map(|h| format!(" on {h}"))
        .unwrap_or_default()
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
    let mut blame: Vec<(&String, &RecordedTiming, f64)> = run
        .timings
        .iter()
        .filter_map(|(n, t)| Some((n, t, t.took?)))
        .collect();
    blame.sort_by(|a, b| b.2.total_cmp(&a.2).then_with(|| a.0.cmp(b.0)));
    let _ = writeln!(
        out,
        "\nblame (time from launch to ready, slowest first; readiness probes sent, and the time they took):"
    );
    for (name, timing, took) in &blame {
        let probes = match timing.probes {
            0 => String::new(),
            n => format!(
                "  ({n} {}, {:.0} ms)",
                if n == 1 { "probe" } else { "probes" },
                timing.probe_ms
            ),
        };
        let _ = writeln!(
            out,
            "  {:>8}  {name}{}{probes}",
            secs_ms(*took),
            on_host(timing)
        );
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
            let _ = writeln!(out, "  {name}{} @{at} +{took}{waited}", on_host(&t));
            previous = Some(name);
        }
    }
    if let Some(summary) = &run.summary {
        let _ = writeln!(out);
        for line in where_the_time_went(summary) {
            let _ = writeln!(out, "{line}");
        }
    }
    let probes: u32 = run.timings.values().map(|t| t.probes).sum();
    if probes > 0 {
        let busy: f64 = run.timings.values().map(|t| t.probe_ms).sum();
        let _ = writeln!(
            out,
            "readiness probes: {probes} sent, {busy:.0} ms in them (measured); none with notify, ready_fd or log readiness"
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

/// Where acting would shorten the startup, and only that: the node that weighs most on the
/// critical chain, a socket-activated dependency waited for when its listening socket would
/// do, and a startup that is one chain.
fn hints(record: &crate::views::history::RunRecord, run: &RecordedRun) -> Vec<String> {
    let mut hints = Vec::new();
    let Some(ready) = run.ready_ms else {
        return hints;
    };
    let took = |name: &str| run.timings.get(name).and_then(|t| t.took);
    // Every node on the chain delays the end by its whole start: the heaviest is worth it.
    if let Some((name, ms)) = run
        .critical_path
        .iter()
        .filter_map(|n| Some((n, took(n)?)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .filter(|(_, ms)| *ms >= ready * 0.3 && *ms >= 50.0)
    {
        hints.push(format!(
            "`{name}` took {} of the {} startup on the critical chain: every bit it starts faster is saved in full",
            secs_ms(ms),
            secs_ms(ready)
        ));
    }
    // With socket activation the kernel queues connections while the service initialises:
    // a dependent waiting for it to be healthy could start at once with `listening`.
    for pair in run.critical_path.windows(2) {
        let (dep, node) = (&pair[0], &pair[1]);
        let Some(recorded) = record.nodes.iter().find(|n| &n.name == node) else {
            continue;
        };
        let waits_healthy = recorded
            .depends_on
            .iter()
            .any(|(d, condition)| d == dep && condition == "healthy");
        let activated = record
            .nodes
            .iter()
            .any(|n| &n.name == dep && n.socket_activated);
        if waits_healthy && activated && took(dep).is_some_and(|ms| ms >= 50.0) {
            hints.push(format!(
                "`{dep}` is socket-activated: `{node}` could depend on it with `listening` and start {} earlier (connections wait in the kernel's queue)",
                secs_ms(took(dep).unwrap_or_default())
            ));
        }
    }
    if let Some(summary) = &run.summary {
        if summary.speedup().is_some_and(|s| s < 1.2) && run.critical_path.len() > 1 {
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
