//! The imported stack before it is written: nodes as dagstart will run them, and what could
//! not be carried over.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::engine::config::{NodeKind, quote, quote_all};

/// An imported stack.
#[derive(Debug, Default)]
pub struct Draft {
    /// The format's name, for the header ("docker compose").
    pub format: &'static str,
    /// The file it came from, as given.
    pub source: String,
    /// `[env]`: variables every node gets.
    pub env: BTreeMap<String, String>,
    pub nodes: Vec<DraftNode>,
    /// Everything not carried over, in the order met.
    pub lost: Vec<Lost>,
}

/// Something of the source that services.toml does not say, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    /// Where it was in the source (`services.db.image`).
    pub what: String,
    pub why: String,
}

#[derive(Debug, Default)]
pub struct DraftNode {
    pub name: String,
    /// A one-shot step (`[components.NAME]`) rather than a service.
    pub component: bool,
    pub command: Command,
    pub cwd: Option<String>,
    pub env: BTreeMap<String, String>,
    /// Dependencies with their conditions and kinds.
    pub depends_on: Vec<DraftDependency>,
    pub health: Option<Health>,
    pub liveness: Option<(Health, u32)>,
    /// `"no"`, `"on-failure"`, `"always"`.
    pub restart: Option<&'static str>,
    pub max_restarts: Option<u32>,
    pub restart_backoff: Option<Duration>,
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<Duration>,
    pub startup_timeout: Option<Duration>,
    pub lazy: bool,
    pub profiles: Vec<String>,
}

/// One `depends_on` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftDependency {
    pub name: String,
    /// `started`, `healthy` or `completed`.
    pub condition: &'static str,
    /// `false`: go on without it (compose's `required: false`).
    pub required: bool,
    /// Restart the dependent with it (compose's `restart: true`).
    pub restart: bool,
}

impl DraftDependency {
    pub fn new(name: &str, condition: &'static str) -> Self {
        Self {
            name: name.to_owned(),
            condition,
            required: true,
            restart: false,
        }
    }

    /// `"healthy"`, or `{ condition = "healthy", required = false, restart = true }`.
    fn toml(&self) -> String {
        let mut parts = vec![format!("condition = {}", quote(self.condition))];
        if !self.required {
            parts.push("required = false".into());
        }
        if self.restart {
            parts.push("restart = true".into());
        }
        if parts.len() == 1 {
            quote(self.condition)
        } else {
            format!("{{ {} }}", parts.join(", "))
        }
    }
}

/// A node's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// An argv.
    Argv(Vec<String>),
    /// One string, split like a shell does (no shell runs).
    Line(String),
    /// One string run by `/bin/sh -c`.
    Shell(String),
}

impl Default for Command {
    fn default() -> Self {
        Command::Argv(Vec::new())
    }
}

/// A probe with its timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub probe: Probe,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Exec(Vec<String>),
    /// A URL or a path.
    Http(String),
    /// `host:port` or a port.
    Tcp(String),
    /// A regular expression for a line of output.
    Log(String),
}

impl Health {
    pub fn of(probe: Probe) -> Self {
        Self {
            probe,
            interval: None,
            timeout: None,
        }
    }

    fn inline(&self, extra: &[(&str, String)]) -> String {
        let mut parts = vec![match &self.probe {
            Probe::Exec(argv) => format!("exec = {}", quote_all(argv)),
            Probe::Http(target) => format!("http = {}", quote(target)),
            Probe::Tcp(target) => match target.parse::<u16>() {
                Ok(port) => format!("tcp = {port}"),
                Err(_) => format!("tcp = {}", quote(target)),
            },
            Probe::Log(pattern) => format!("log = {}", quote(pattern)),
        }];
        if let Some(interval) = self.interval {
            parts.push(format!("interval = {}", quote(&duration(interval))));
        }
        if let Some(timeout) = self.timeout {
            parts.push(format!("timeout = {}", quote(&duration(timeout))));
        }
        parts.extend(extra.iter().map(|(k, v)| format!("{k} = {v}")));
        format!("{{ {} }}", parts.join(", "))
    }
}

impl Draft {
    pub fn lose(&mut self, what: impl Into<String>, why: impl Into<String>) {
        self.lost.push(Lost {
            what: what.into(),
            why: why.into(),
        });
    }

    /// Node names dagstart accepts (letters, digits, `_`, `-`): others are renamed, and so
    /// is every dependency on them; each rename is listed.
    pub fn settle_names(&mut self) {
        let mut renamed = BTreeMap::new();
        let mut taken = std::collections::BTreeSet::new();
        for node in &mut self.nodes {
            let mut clean = crate::engine::config::clean_name(&node.name);
            if clean.is_empty() {
                clean = "unnamed".into();
            }
            // Two names may clean up to the same one (a Procfile may even repeat a name).
            let base = clean.clone();
            let mut n = 2;
            while !taken.insert(clean.clone()) {
                clean = format!("{base}_{n}");
                n += 1;
            }
            if clean != node.name {
                renamed.insert(node.name.clone(), clean.clone());
                node.name = clean;
            }
        }
        for (from, to) in &renamed {
            self.lost.push(Lost {
                what: from.clone(),
                why: format!("renamed `{to}`: node names are letters, digits, `_` and `-`"),
            });
        }
        for node in &mut self.nodes {
            for dep in &mut node.depends_on {
                if let Some(to) = renamed.get(dep.name.as_str()) {
                    dep.name.clone_from(to);
                }
            }
        }
    }

    /// Makes the nodes' relative working directories, which are relative to the imported
    /// file's directory `dir`, absolute: for a services.toml written elsewhere.
    pub fn anchor_paths(&mut self, dir: &std::path::Path) {
        for node in &mut self.nodes {
            if let Some(cwd) = node
                .cwd
                .as_mut()
                .filter(|c| std::path::Path::new(c).is_relative())
            {
                *cwd = dir.join(&*cwd).display().to_string();
            }
        }
    }

    /// The services.toml, what was not carried over listed in a comment at the top.
    pub fn to_toml(&self) -> String {
        let mut out = format!(
            "# Imported from {} ({}) by `dagstart import`.\n",
            self.source, self.format
        );
        if self.lost.is_empty() {
            out += "# Everything was carried over.\n";
        } else {
            out += "#\n# Not carried over:\n";
            for lost in &self.lost {
                for (i, line) in format!("{}: {}", lost.what, lost.why).lines().enumerate() {
                    let lead = if i == 0 { "#   - " } else { "#     " };
                    let _ = writeln!(out, "{lead}{line}");
                }
            }
        }
        if !self.env.is_empty() {
            out += "\n[env]\n";
            for (k, v) in &self.env {
                let _ = writeln!(out, "{} = {}", key(k), quote(v));
            }
        }
        for node in &self.nodes {
            out += "\n";
            out += &node.to_toml();
        }
        out
    }
}

impl DraftNode {
    fn to_toml(&self) -> String {
        let section = if self.component {
            NodeKind::Component
        } else {
            NodeKind::Service
        }
        .section();
        let mut out = format!("[{section}.{}]\n", self.name);
        let mut line = |k: &str, v: String| {
            let _ = writeln!(out, "{k} = {v}");
        };
        match &self.command {
            Command::Argv(argv) => line("command", quote_all(argv)),
            Command::Line(text) => line("command", quote(text)),
            Command::Shell(text) => {
                line("command", quote(text));
                line("shell", "true".into());
            }
        }
        if let Some(cwd) = &self.cwd {
            line("cwd", quote(cwd));
        }
        if !self.env.is_empty() {
            line("env", inline_table(&self.env));
        }
        if !self.depends_on.is_empty() {
            let entries: Vec<String> = self
                .depends_on
                .iter()
                .map(|d| format!("{} = {}", key(&d.name), d.toml()))
                .collect();
            line("depends_on", format!("{{ {} }}", entries.join(", ")));
        }
        if let Some(health) = &self.health {
            line("health", health.inline(&[]));
        }
        if let Some(timeout) = self.startup_timeout {
            line("startup_timeout", quote(&duration(timeout)));
        }
        if let Some(restart) = self.restart {
            line("restart", quote(restart));
        }
        if let Some(max) = self.max_restarts {
            line("max_restarts", max.to_string());
        }
        if let Some(backoff) = self.restart_backoff {
            line("restart_backoff", quote(&duration(backoff)));
        }
        if let Some((probe, failures)) = &self.liveness {
            line(
                "liveness",
                probe.inline(&[("failure_threshold", failures.to_string())]),
            );
        }
        if !self.profiles.is_empty() {
            line("profiles", quote_all(&self.profiles));
        }
        if let Some(signal) = &self.stop_signal {
            line("stop_signal", quote(signal));
        }
        if let Some(timeout) = self.stop_timeout {
            line("stop_timeout", quote(&duration(timeout)));
        }
        if self.lazy {
            line("lazy", "true".into());
        }
        out
    }
}

/// `{ k = "v", ... }`, in the order given.
fn inline_table<K: AsRef<str>, V: AsRef<str>>(pairs: impl IntoIterator<Item = (K, V)>) -> String {
    let pairs: Vec<String> = pairs
        .into_iter()
        .map(|(k, v)| format!("{} = {}", key(k.as_ref()), quote(v.as_ref())))
        .collect();
    format!("{{ {} }}", pairs.join(", "))
}

/// A key, bare where TOML allows it.
fn key(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        text.to_owned()
    } else {
        quote(text)
    }
}

/// A duration as services.toml writes them: whole seconds or milliseconds.
pub(crate) fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}
