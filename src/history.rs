//! The run history: every run's events (without output lines) kept in `.dagstart/runs/`
//! beside services.toml, the last `KEEP` runs, for `dagstart report` and `graph --timings`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Config;

/// How many runs are kept.
pub const KEEP: usize = 20;

/// One run as it is stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// When the run started, RFC 3339.
    pub started: String,
    pub nodes: Vec<RecordedNode>,
    /// The events of `--output json` (docs/events.md), output lines left out.
    pub events: Vec<serde_json::Value>,
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
}

impl RunRecord {
    pub fn new(started: String, config: &Config, events: Vec<serde_json::Value>) -> Self {
        let nodes = config
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
                    crate::config::Probe::Http { .. }
                        | crate::config::Probe::Tcp { .. }
                        | crate::config::Probe::Exec { .. }
                ),
            })
            .collect();
        Self {
            started,
            nodes,
            events,
        }
    }
}

pub fn runs_dir(project_dir: &Path) -> PathBuf {
    project_dir.join(".dagstart").join("runs")
}

/// Stores a run and prunes the history to the last `KEEP` runs.
pub fn save(project_dir: &Path, id: &str, record: &RunRecord) -> std::io::Result<()> {
    let dir = runs_dir(project_dir);
    std::fs::create_dir_all(&dir)?;
    let text = serde_json::to_string(record).map_err(std::io::Error::other)?;
    std::fs::write(dir.join(format!("{id}.json")), text)?;
    let runs = list(project_dir);
    for old in runs.iter().take(runs.len().saturating_sub(KEEP)) {
        let _ = std::fs::remove_file(dir.join(format!("{old}.json")));
    }
    Ok(())
}

/// The stored run ids, oldest first.
pub fn list(project_dir: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(runs_dir(project_dir))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()?
                        .strip_suffix(".json")
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
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
    let text = std::fs::read_to_string(runs_dir(project_dir).join(format!("{id}.json")))
        .map_err(|e| e.to_string())?;
    let record =
        serde_json::from_str(&text).map_err(|e| format!("run {id} cannot be read: {e}"))?;
    Ok((id, record))
}
