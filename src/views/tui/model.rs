//! What the terminal UI shows and how keys change it, without a terminal: the nodes (from the
//! control socket's `status`), their log lines (from the log files), the selection, the log
//! view's search and follow, and a confirmation waiting for `y`.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::PathBuf;

use crate::engine::config::Config;
use crate::engine::control::Request;
use crate::engine::graph::Graph;
use crate::engine::lifecycle::NodeStatus;
use crate::views::tui::usage::Usage;

/// Log lines kept per node.
const LINES: usize = 2000;
/// How much of a log file is read when the UI opens (the end of it).
const FIRST_READ: u64 = 64 * 1024;

/// A line of a node's log: its stamp (for merging by time) and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub stamp: String,
    pub node: String,
    pub text: String,
}

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Up,
    Down,
    Char(char),
    Enter,
    Escape,
    Backspace,
    PageUp,
    PageDown,
}

/// What the loop must do after a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Nothing,
    Send(Request),
    Quit,
}

/// The UI's state.
#[derive(Debug)]
pub struct Model {
    pub config: Config,
    graph: Graph,
    pub nodes: Vec<NodeStatus>,
    pub usage: BTreeMap<String, Usage>,
    pub selected: usize,
    /// All nodes' lines merged by time instead of the selected node's.
    pub all_logs: bool,
    /// Keep the log view at its end.
    pub follow: bool,
    /// Lines scrolled back from the end when not following.
    pub scroll: usize,
    /// The search being typed (Some while typing), and the one applied.
    pub typing: Option<String>,
    pub search: Option<String>,
    /// An action waiting for `y`: the request and the question.
    pub confirm: Option<(Request, String)>,
    /// The answer to the last action, or a note.
    pub message: Option<String>,
    logs: BTreeMap<String, Log>,
}

#[derive(Debug, Default)]
struct Log {
    path: PathBuf,
    offset: u64,
    partial: String,
    lines: VecDeque<Line>,
}

impl Model {
    pub fn new(config: Config) -> Self {
        let graph = Graph::build(&config);
        let logs = config
            .nodes
            .iter()
            .map(|n| {
                let log = Log {
                    path: config.settings.log_dir.join(format!("{}.log", n.name)),
                    ..Log::default()
                };
                (n.name.clone(), log)
            })
            .collect();
        Self {
            config,
            graph,
            nodes: Vec::new(),
            usage: BTreeMap::new(),
            selected: 0,
            all_logs: false,
            follow: true,
            scroll: 0,
            typing: None,
            search: None,
            confirm: None,
            message: None,
            logs,
        }
    }

    pub fn selected_name(&self) -> Option<&str> {
        self.nodes.get(self.selected).map(|n| n.name.as_str())
    }

    /// Takes a fresh `status`, keeping the selection on the same node.
    pub fn set_nodes(&mut self, nodes: Vec<NodeStatus>) {
        let keep = self.selected_name().map(str::to_owned);
        self.nodes = nodes;
        self.selected = keep
            .and_then(|name| self.nodes.iter().position(|n| n.name == name))
            .unwrap_or(0)
            .min(self.nodes.len().saturating_sub(1));
    }

    /// Reads what the log files gained since the last call (a rotated file is read anew).
    pub fn read_logs(&mut self) {
        for (node, log) in &mut self.logs {
            let Ok(mut file) = std::fs::File::open(&log.path) else {
                continue;
            };
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            if len < log.offset {
                log.offset = 0;
                log.partial.clear();
            }
            if log.offset == 0 && len > FIRST_READ {
                log.offset = len - FIRST_READ;
            }
            if len == log.offset || file.seek(SeekFrom::Start(log.offset)).is_err() {
                continue;
            }
            let mut bytes = Vec::new();
            if file.read_to_end(&mut bytes).is_err() {
                continue;
            }
            log.offset += bytes.len() as u64;
            log.partial += &String::from_utf8_lossy(&bytes);
            while let Some(end) = log.partial.find('\n') {
                let raw: String = log.partial.drain(..=end).collect();
                let (stamp, text) = crate::views::logfiles::split_stamp(raw.trim_end_matches('\n'));
                if log.lines.len() == LINES {
                    log.lines.pop_front();
                }
                log.lines.push_back(Line {
                    stamp: stamp.unwrap_or_default().to_owned(),
                    node: node.clone(),
                    text: text.to_owned(),
                });
            }
        }
    }

    /// The lines the log view shows: the selected node's, or all merged by time; only those
    /// that contain the search, when there is one.
    pub fn visible_lines(&self) -> Vec<&Line> {
        let mut lines: Vec<&Line> = if self.all_logs {
            let mut all: Vec<&Line> = self.logs.values().flat_map(|l| l.lines.iter()).collect();
            all.sort_by(|a, b| a.stamp.cmp(&b.stamp));
            all
        } else {
            self.selected_name()
                .and_then(|n| self.logs.get(n))
                .map(|l| l.lines.iter().collect())
                .unwrap_or_default()
        };
        if let Some(search) = self.search.as_deref().filter(|s| !s.is_empty()) {
            lines.retain(|l| l.text.contains(search));
        }
        lines
    }

    /// The dependency tree of the selected node, one line each ("├─ db (healthy)").
    pub fn tree(&self) -> Vec<String> {
        let Some(root) = self
            .selected_name()
            .and_then(|name| self.config.nodes.iter().position(|n| n.name == name))
        else {
            return Vec::new();
        };
        let mut out = vec![self.config.nodes[root].name.clone()];
        self.tree_below(root, "", &mut out, 0);
        out
    }

    fn tree_below(&self, n: usize, prefix: &str, out: &mut Vec<String>, depth: usize) {
        let deps: Vec<_> = self.graph.dependencies(n).collect();
        for (i, (d, edge)) in deps.iter().enumerate() {
            let last = i + 1 == deps.len();
            let mut label = format!(
                "{} ({}",
                self.config.nodes[*d].name,
                edge.condition.as_str()
            );
            for mark in edge.marks() {
                label += ", ";
                label += mark;
            }
            label.push(')');
            out.push(format!(
                "{prefix}{}{label}",
                if last { "└─ " } else { "├─ " }
            ));
            if depth < 12 {
                let deeper = format!("{prefix}{}", if last { "   " } else { "│  " });
                self.tree_below(*d, &deeper, out, depth + 1);
            }
        }
    }

    /// The running nodes that a stop or restart of `name` takes along (those that cannot run
    /// without it), dependents first as they will be stopped.
    pub fn taken_along(&self, name: &str) -> Vec<String> {
        let Some(start) = self.config.nodes.iter().position(|n| n.name == name) else {
            return Vec::new();
        };
        // What the core stops along with it (`Graph::with_bound_dependents`), without itself.
        let mut along = self.graph.with_bound_dependents(&[start]);
        along.retain(|&d| d != start);
        let running = |name: &str| {
            self.nodes.iter().any(|s| {
                s.name == name
                    && !matches!(
                        s.state.as_str(),
                        "stopped" | "not started" | "skipped" | "failed" | "exited" | "removed"
                    )
            })
        };
        along.sort_by_key(|&d| std::cmp::Reverse(self.graph.level(d)));
        along
            .into_iter()
            .map(|d| self.config.nodes[d].name.clone())
            .filter(|n| running(n))
            .collect()
    }

    /// What a key does.
    pub fn on_key(&mut self, key: Key) -> Step {
        if let Some(text) = &mut self.typing {
            match key {
                Key::Char(c) => text.push(c),
                Key::Backspace => {
                    text.pop();
                }
                Key::Enter => {
                    self.search = self.typing.take().filter(|s| !s.is_empty());
                    self.scroll = 0;
                }
                Key::Escape => self.typing = None,
                _ => {}
            }
            return Step::Nothing;
        }
        if let Some((request, _)) = self.confirm.take() {
            return match key {
                Key::Char('y' | 'Y') | Key::Enter => Step::Send(request),
                _ => {
                    self.message = Some("cancelled".into());
                    Step::Nothing
                }
            };
        }
        let name = self.selected_name().map(str::to_owned);
        match key {
            Key::Up | Key::Char('k') => self.selected = self.selected.saturating_sub(1),
            Key::Down | Key::Char('j') => {
                self.selected = (self.selected + 1).min(self.nodes.len().saturating_sub(1));
            }
            Key::PageUp => {
                self.follow = false;
                self.scroll += 10;
            }
            Key::PageDown => {
                self.scroll = self.scroll.saturating_sub(10);
                self.follow = self.scroll == 0;
            }
            Key::Char('q') => return Step::Quit,
            Key::Char('a') => self.all_logs = !self.all_logs,
            Key::Char('f') => {
                self.follow = !self.follow;
                self.scroll = 0;
            }
            Key::Char('/') => self.typing = Some(String::new()),
            Key::Escape => self.search = None,
            Key::Char('R') => return Step::Send(Request::Reload),
            Key::Char('s') => {
                if let Some(name) = name {
                    return Step::Send(Request::Start { nodes: vec![name] });
                }
            }
            Key::Char(c @ ('x' | 'r')) => {
                if let Some(name) = name {
                    let verb = if c == 'x' { "stop" } else { "restart" };
                    let along = self.taken_along(&name);
                    let question = if along.is_empty() {
                        format!("{verb} {name}? y/n")
                    } else {
                        format!("{verb} {name}, and first {}? y/n", along.join(", "))
                    };
                    let nodes = vec![name];
                    let request = if c == 'x' {
                        Request::Stop { nodes }
                    } else {
                        Request::Restart { nodes }
                    };
                    self.confirm = Some((request, question));
                }
            }
            _ => {}
        }
        Step::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Model {
        let config = crate::engine::config::load_str(
            std::path::Path::new("/nowhere/services.toml"),
            "[services.db]\ncommand = \"db\"\n[services.api]\ncommand = \"api\"\ndepends_on = [\"db\"]\n\
             [services.web]\ncommand = \"web\"\ndepends_on = { api = { restart = true } }\n"
                .into(),
            &crate::engine::config::Environment::default(),
        )
        .unwrap();
        let mut m = Model::new(config);
        let status = |name: &str| NodeStatus {
            name: name.into(),
            kind: "service".into(),
            state: "ready".into(),
            required: true,
            pid: Some(1),
            uptime_ms: Some(5),
            restarts: 0,
            last: None,
            output_lost: None,
            host: None,
            degraded: None,
        };
        m.set_nodes(vec![status("db"), status("api"), status("web")]);
        m
    }

    #[test]
    fn stop_asks_first_and_names_what_it_takes_along() {
        let mut m = model();
        assert_eq!(m.on_key(Key::Char('x')), Step::Nothing);
        assert_eq!(
            m.confirm.as_ref().unwrap().1,
            "stop db, and first web, api? y/n"
        );
        assert!(matches!(
            m.on_key(Key::Char('y')),
            Step::Send(Request::Stop { nodes }) if nodes == ["db"]
        ));
        m.on_key(Key::Char('x'));
        assert_eq!(m.on_key(Key::Char('n')), Step::Nothing);
        assert_eq!(m.message.as_deref(), Some("cancelled"));
    }

    #[test]
    fn the_tree_shows_what_the_selected_node_needs() {
        let mut m = model();
        m.on_key(Key::Down);
        m.on_key(Key::Down);
        assert_eq!(m.selected_name(), Some("web"));
        assert_eq!(
            m.tree(),
            ["web", "└─ api (healthy, restart)", "   └─ db (healthy)"]
        );
    }

    #[test]
    fn search_is_typed_then_applied_and_escape_clears_it() {
        let mut m = model();
        m.on_key(Key::Char('/'));
        for c in "err".chars() {
            m.on_key(Key::Char(c));
        }
        assert_eq!(m.typing.as_deref(), Some("err"));
        m.on_key(Key::Enter);
        assert_eq!(m.search.as_deref(), Some("err"));
        m.on_key(Key::Escape);
        assert_eq!(m.search, None);
        assert_eq!(m.on_key(Key::Char('q')), Step::Quit);
    }
}
