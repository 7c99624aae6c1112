//! The run history: every run's events (without output lines) kept in `.dagstart/runs/`
//! beside services.toml, the last `KEEP` runs, for `dagstart report` and `graph --timings`.
//!
//! A run is recorded as it happens, one JSON object per line (`<start ms>.jsonl`): first the
//! run's start and its nodes, then each event in the shape of `--output json`, then the nodes
//! again after each reload. A run that was killed leaves a record up to its last event, and
//! `report` reads it like any other. Records of earlier versions (`<id>.json`, one object)
//! are still read.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::engine::config::Config;
use crate::engine::event::EventKind;
use crate::engine::record::EventRecord;

/// How many runs are kept.
pub const KEEP: usize = 20;
/// Events recorded per run at most; a run that goes on restarting for days keeps its start.
pub const MAX_EVENTS: usize = 200_000;

/// One run as it is stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// When the run started, RFC 3339.
    pub started: String,
    pub nodes: Vec<RecordedNode>,
    /// The events of `--output json` (docs/events.md), output lines left out.
    pub events: Vec<EventRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordedNode {
    pub name: String,
    pub kind: String,
    pub required: bool,
    /// (dependency, condition)
    pub depends_on: Vec<(String, String)>,
    /// How its readiness was learnt: polled (`http`, `tcp`, `exec`) or pushed.
    #[serde(default)]
    pub polled: bool,
    /// dagstart binds its listening sockets before anything starts (`sockets`).
    #[serde(default)]
    pub socket_activated: bool,
}

fn recorded_nodes(config: &Config) -> Vec<RecordedNode> {
    config
        .nodes
        .iter()
        .map(|n| RecordedNode {
            name: n.name.clone(),
            kind: n.kind.as_str().to_owned(),
            required: n.required,
            depends_on: n
                .depends_on
                .iter()
                .map(|d| (d.name.clone(), d.condition.as_str().to_owned()))
                .collect(),
            polled: matches!(
                n.health.probe,
                crate::engine::config::Probe::Http { .. }
                    | crate::engine::config::Probe::Tcp { .. }
                    | crate::engine::config::Probe::Exec { .. }
            ),
            socket_activated: !n.sockets.is_empty(),
        })
        .collect()
}

pub fn runs_dir(project_dir: &Path) -> PathBuf {
    crate::engine::control::state_dir(project_dir).join("runs")
}

/// Appends a run's events to its record as they happen.
#[derive(Debug)]
pub struct Recorder {
    file: BufWriter<File>,
    events: usize,
}

impl Recorder {
    /// Starts the record of a run that started at `started`, pruning the history to make room.
    pub fn create(config: &Config, started: SystemTime) -> std::io::Result<Self> {
        let dir = runs_dir(&config.base_dir);
        super::private::create_dir(&dir)?;
        let runs = list(&config.base_dir);
        for old in runs.iter().take((runs.len() + 1).saturating_sub(KEEP)) {
            for ext in ["jsonl", "json"] {
                let _ = std::fs::remove_file(dir.join(format!("{old}.{ext}")));
            }
        }
        let id = started
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let mut file = BufWriter::new(super::private::create_file(
            &dir.join(format!("{id}.jsonl")),
        )?);
        let header = serde_json::json!({
            "started": humantime::format_rfc3339_millis(started).to_string(),
            "nodes": recorded_nodes(config),
        });
        writeln!(file, "{header}")?;
        file.flush()?;
        Ok(Self { file, events: 0 })
    }

    /// One event, in the shape of `--output json`.
    pub fn event(&mut self, event: &EventRecord) {
        self.events += 1;
        if self.events <= MAX_EVENTS {
            let _ = writeln!(self.file, "{}", event.to_json());
        } else if self.events == MAX_EVENTS + 1 {
            let note = EventRecord::run_wide(
                std::time::Duration::from_secs_f64(event.t.max(0.0)),
                EventKind::note("the record ends here: too many events"),
            );
            let _ = writeln!(self.file, "{}", note.to_json());
        }
    }

    /// The nodes after a reload.
    pub fn nodes(&mut self, config: &Config) {
        let nodes = serde_json::json!({ "nodes": recorded_nodes(config) });
        let _ = writeln!(self.file, "{nodes}");
    }

    pub fn flush(&mut self) {
        let _ = self.file.flush();
    }
}

/// The stored run ids, oldest first.
pub fn list(project_dir: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(runs_dir(project_dir))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name();
                    let name = name.to_str()?;
                    name.strip_suffix(".jsonl")
                        .or_else(|| name.strip_suffix(".json"))
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids.dedup();
    ids
}

/// The startup of each of the last `count` runs, oldest first: its id, when it started, how
/// long it took to be ready (none if it never was) and its slowest node. For the dashboard's
/// history.
pub fn startups(project_dir: &Path, count: usize) -> Vec<serde_json::Value> {
    let ids = list(project_dir);
    let dir = runs_dir(project_dir);
    let skip = ids.len().saturating_sub(count);
    ids[skip..]
        .iter()
        .filter_map(|id| {
            let record = read(&dir, id).ok()?;
            let run = crate::views::report::RecordedRun::from_record(&record);
            let slowest = run
                .timings
                .iter()
                .filter_map(|(name, t)| Some((name, t.took?)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            Some(serde_json::json!({
                "id": id,
                "started": record.started,
                "ready_ms": run.ready_ms,
                "slowest": slowest.map(|(name, took)| serde_json::json!({ "node": name, "took_ms": took })),
            }))
        })
        .collect()
}

/// Reads a record written by [`Recorder`], however far it got.
fn parse_lines(id: &str, text: &str) -> Result<RunRecord, String> {
    let mut lines = text.lines();
    let header: serde_json::Value = lines
        .next()
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| format!("run {id} cannot be read: no header"))?;
    let mut record = RunRecord {
        started: header["started"].as_str().unwrap_or_default().to_owned(),
        nodes: serde_json::from_value(header["nodes"].clone())
            .map_err(|e| format!("run {id} cannot be read: {e}"))?,
        events: Vec::new(),
    };
    #[derive(Deserialize)]
    struct NodesLine {
        nodes: Vec<RecordedNode>,
    }
    for line in lines {
        // A run killed mid-write may end with half a line; it is skipped.
        if let Ok(event) = serde_json::from_str::<EventRecord>(line) {
            record.events.push(event);
        } else if let Ok(after_reload) = serde_json::from_str::<NodesLine>(line) {
            record.nodes = after_reload.nodes;
        }
    }
    Ok(record)
}

/// A run by id (or `last`, or a 1-based number from the oldest, or a negative one from the
/// newest: -1 is the last run).
pub fn load(project_dir: &Path, which: Option<&str>) -> Result<(String, RunRecord), String> {
    let ids = list(project_dir);
    if ids.is_empty() {
        return Err(format!(
            "no runs recorded yet in {}",
            runs_dir(project_dir).display()
        ));
    }
    let id = match which.unwrap_or("last") {
        "last" => ids.last().cloned(),
        text => match text.parse::<i64>() {
            Ok(k) if k < 0 => ids
                .len()
                .checked_sub(k.unsigned_abs() as usize)
                .and_then(|i| ids.get(i))
                .cloned(),
            Ok(k) if k > 0 && ids.iter().all(|id| id != text) => ids.get(k as usize - 1).cloned(),
            _ => ids.iter().find(|id| *id == text).cloned(),
        },
    }
    .ok_or_else(|| {
        format!(
            "no run `{}`; recorded: {}",
            which.unwrap_or("last"),
            ids.join(", ")
        )
    })?;
    let record = read(&runs_dir(project_dir), &id)?;
    Ok((id, record))
}

/// The record of run `id` in `dir` (`<id>.jsonl`, or the older `<id>.json`).
fn read(dir: &Path, id: &str) -> Result<RunRecord, String> {
    if let Ok(text) = std::fs::read_to_string(dir.join(format!("{id}.jsonl"))) {
        return parse_lines(id, &text);
    }
    let text =
        std::fs::read_to_string(dir.join(format!("{id}.json"))).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| format!("run {id} cannot be read: {e}"))
}
