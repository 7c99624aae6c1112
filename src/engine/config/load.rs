//! Reading services.toml: parse with spans, walk every table, collect every problem.
//!
//! The walk never stops at the first mistake: each value that is wrong becomes a [`Problem`]
//! and the walk goes on with a default, so one run reports everything that is wrong.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use miette::NamedSource;
use nix::sys::signal::Signal;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

mod cluster;
mod parse;

use super::diagnostic::{ConfigError, Problem, Span, did_you_mean};
use super::expand::{ExpandError, expand};
use super::{
    Command, Condition, Config, Dependency, Health, MaxWorkers, Node, NodeKind, Output, Probe,
    RunAs, Settings, SocketAddress, timeout_env_var,
};
use crate::engine::parallel;

/// The variables a configuration is read with: the process environment, filled in by `.env`.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    vars: BTreeMap<String, String>,
}

impl Environment {
    pub fn from_process() -> Self {
        Self::from_pairs(std::env::vars())
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// Adds the variables of a dotenv file that the environment does not already set.
    fn fill_from_dotenv(&mut self, path: &Path) -> Result<(), String> {
        match check_readable(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.to_string()),
            Ok(()) => {}
        }
        let iter = match dotenvy::from_path_iter(path) {
            Ok(iter) => iter,
            Err(e) if e.not_found() => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        for item in iter {
            let (key, value) = item.map_err(|e| e.to_string())?;
            self.vars.entry(key).or_insert(value);
        }
        Ok(())
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

/// Reads and validates the configuration at `path`.
pub fn load(path: &Path, env: &Environment) -> Result<Config, LoadError> {
    let bytes = check_readable(path)
        .and_then(|()| std::fs::read(path))
        .map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
    let text = String::from_utf8(bytes).map_err(|e| not_utf8(path, &e))?;
    Ok(load_str(path, text, env)?)
}

/// A file that is not UTF-8, with the first bad byte located (in a lossy copy of the text).
fn not_utf8(path: &Path, error: &std::string::FromUtf8Error) -> ConfigError {
    let at = error.utf8_error().valid_up_to();
    let lossy = String::from_utf8_lossy(error.as_bytes()).into_owned();
    // In the lossy copy the bad byte is the replacement character at the same offset.
    let width = lossy[at..].chars().next().map_or(0, char::len_utf8);
    ConfigError {
        file: NamedSource::new(path.display().to_string(), Arc::new(lossy)),
        problems: vec![
            Problem::error(
                "dagstart::config::encoding",
                "services.toml must be UTF-8 text",
            )
            .label(at..at + width, "this byte is not UTF-8")
            .help("save the file as UTF-8"),
        ],
    }
}

/// Validates configuration `text` as if it had been read from `path` (which need not exist).
pub fn load_str(path: &Path, text: String, env: &Environment) -> Result<Config, ConfigError> {
    load_cut(path, text, env, parse::LARGE_FILES)
}

/// [`load_str`], with a large file cut into pieces as `cutting` says (the tests cut small ones).
fn load_cut(
    path: &Path,
    text: String,
    env: &Environment,
    cutting: parse::Cutting,
) -> Result<Config, ConfigError> {
    let base_dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    // Absolute, so that `dagstart config` and error messages name real places.
    let base_dir =
        std::path::absolute(&base_dir).map_or(base_dir, |abs| join_clean(&abs, Path::new("")));
    let source = NamedSource::new(path.display().to_string(), Arc::new(text));
    let text = source.inner().clone();
    let mut problems = Vec::new();
    let in_pieces = read_in_pieces(base_dir.clone(), env, &text, cutting, &mut problems);
    let config = in_pieces.or_else(|| {
        problems.clear();
        read_whole(base_dir, env, &text, &mut problems)
    });
    let Some(mut config) = config else {
        // Syntax errors, in the parser's order.
        return Err(ConfigError {
            file: source,
            problems,
        });
    };
    // File order reads best; problems without a place (environment) come first.
    problems.sort_by_key(|p| p.labels.first().map(|(span, _)| span.start));
    if problems.iter().any(Problem::is_error) {
        return Err(ConfigError {
            file: source,
            problems,
        });
    }
    config.path = path.to_owned();
    config.warnings = problems;
    config.source = source;
    Ok(config)
}

/// The configuration in `text`, read in pieces as `cutting` says; `None` where it is not
/// cut, or where the pieces might not read as the whole file (see `parse.rs`).
fn read_in_pieces(
    base_dir: PathBuf,
    env: &Environment,
    text: &str,
    cutting: parse::Cutting,
    problems: &mut Vec<Problem>,
) -> Option<Config> {
    let pieces = parse::pieces(text, cutting)?;
    let mut loader = Loader::for_document(base_dir, env, &pieces.head, problems);
    loader.in_pieces(pieces, text)
}

/// The configuration in `text`, parsed whole; `None` where it has syntax errors.
fn read_whole(
    base_dir: PathBuf,
    env: &Environment,
    text: &str,
    problems: &mut Vec<Problem>,
) -> Option<Config> {
    let (document, syntax_errors) = parse::whole(text);
    problems.extend(syntax_errors.iter().map(syntax_problem));
    if !problems.is_empty() {
        // A broken file yields a partial tree; checking it would only add noise.
        return None;
    }
    let mut loader = Loader::for_document(base_dir, env, document.get_ref(), problems);
    Some(loader.document(document.into_inner()))
}

fn syntax_problem(error: &toml::de::Error) -> Problem {
    let message = error.message().trim().to_owned();
    let problem = Problem::error("dagstart::config::syntax", "TOML syntax error");
    match error.span() {
        Some(span) => problem.label(span, message),
        None => Problem::error(
            "dagstart::config::syntax",
            format!("TOML syntax error: {message}"),
        ),
    }
}

type Value<'i> = Spanned<DeValue<'i>>;

/// A map keyed by node names from the file itself: no untrusted party chooses them, so a fast
/// hash is safe (SipHash was a tenth of loading 100,000 nodes).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// `table[key]`. A node's table holds a handful of keys and the loader asks it for two dozen,
/// most of them absent: comparing a few short strings is cheaper than hashing each question
/// (100,000 nodes: 2.4 million lookups).
fn field<'t, 'i>(table: &'t DeTable<'i>, key: &str) -> Option<&'t Value<'i>> {
    if table.len() > 16 {
        return table.get(key);
    }
    table
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(_, v)| v)
}

/// Every key services.toml accepts, per table: the one list the loader checks against, and
/// that the documentation and the schema are tested against.
pub const KNOWN_KEYS: &[(&str, &[&str])] = &[
    ("top level", TOP_KEYS),
    ("[settings]", SETTINGS_KEYS),
    ("[services.NAME]", SERVICE_KEYS),
    ("[components.NAME]", COMPONENT_KEYS),
    ("health", HEALTH_KEYS),
    ("liveness", LIVENESS_KEYS),
    ("depends_on entry", DEPENDENCY_KEYS),
    ("[cluster]", cluster::CLUSTER_KEYS),
    ("[hosts.NAME]", cluster::HOST_KEYS),
];

/// The long form of a `depends_on` entry: `db = { condition = "healthy", restart = true }`.
const DEPENDENCY_KEYS: &[&str] = &["condition", "required", "restart", "milestone"];

const TOP_KEYS: &[&str] = &[
    "settings",
    "env",
    "services",
    "components",
    "cluster",
    "hosts",
];
const SETTINGS_KEYS: &[&str] = &[
    "max_workers",
    "startup_timeout",
    "parallel",
    "parallel_health_checks",
    "log_dir",
    "shutdown_timeout",
    "env_file",
    "log_max_size",
    "log_keep",
    "pid_namespace",
];
const SERVICE_KEYS: &[&str] = &[
    "command",
    "shell",
    "cwd",
    "env",
    "depends_on",
    "port",
    "health",
    "startup_timeout",
    "retries",
    "required",
    "stop_signal",
    "stop_timeout",
    "watchdog",
    "sockets",
    "lazy",
    "restart",
    "restart_backoff",
    "restart_backoff_max",
    "max_restarts",
    "restart_window",
    "liveness",
    "restart_with_dependency",
    "watch",
    "user",
    "group",
    "log_max_size",
    "log_keep",
    "output",
    "profiles",
    "host",
];
const COMPONENT_KEYS: &[&str] = &[
    "command",
    "shell",
    "cwd",
    "env",
    "depends_on",
    "startup_timeout",
    "retries",
    "required",
    "stop_signal",
    "stop_timeout",
    "lazy",
    "restart_with_dependency",
    "watch",
    "user",
    "group",
    "log_max_size",
    "log_keep",
    "output",
    "profiles",
    "host",
];
const HEALTH_KEYS: &[&str] = &[
    "http",
    "tcp",
    "exec",
    "log",
    "notify",
    "ready_fd",
    "interval",
    "timeout",
    "retries",
    "start_period",
];
const PROBE_KEYS: &[&str] = &["http", "tcp", "exec", "log", "notify", "ready_fd"];
const LIVENESS_KEYS: &[&str] = &[
    "http",
    "tcp",
    "exec",
    "interval",
    "timeout",
    "failure_threshold",
];
const LIVENESS_PROBE_KEYS: &[&str] = &["http", "tcp", "exec"];

/// Nodes from which the loader works on two threads: below this a thread costs more than it
/// saves.
const TWO_THREADS_FROM: usize = 4096;

const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Spans of a node's keys that later checks need to point at.
struct NodeSpans {
    port: Option<Span>,
    host: Option<Span>,
    /// The explicit condition of each `depends_on` entry, if it had one.
    conditions: Vec<Option<(Condition, Span)>>,
}

struct Loader<'p> {
    base_dir: PathBuf,
    env: Environment,
    problems: &'p mut Vec<Problem>,
    from_env: BTreeMap<String, String>,
    /// Two nodes of one kind share a name: only a file read in pieces can have them (in one
    /// tree TOML forbids it), and it must then be read whole.
    same_kind_twice: bool,
}

/// The tables of a document besides the nodes'.
struct TopLevel {
    settings: Settings,
    env: BTreeMap<String, String>,
    cluster: Option<super::cluster::Cluster>,
    hosts: Vec<super::cluster::Host>,
}

/// The pieces of a file not yet read, taken by two threads from either end until they meet.
struct PieceQueue(Mutex<Range<usize>>);

#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Front,
    Back,
}

impl PieceQueue {
    fn new(pieces: usize) -> Self {
        Self(Mutex::new(0..pieces))
    }

    fn left(&self) -> std::sync::MutexGuard<'_, Range<usize>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self, end: End) -> Option<usize> {
        let mut left = self.left();
        match end {
            End::Front => left.next(),
            End::Back => left.next_back(),
        }
    }

    /// Leaves nothing to take: the file is read whole after all.
    fn empty(&self) {
        *self.left() = 0..0;
    }
}

/// Nodes of one kind read from some pieces of a file, in file order.
#[derive(Default)]
struct NodesRead {
    nodes: Vec<Node>,
    spans: Vec<NodeSpans>,
}

impl NodesRead {
    /// One for each of [`NodeKind::ALL`], each with room for `nodes` where the memory can be
    /// reserved (a file of nothing but header lines would ask for far more than its nodes
    /// need: then the vectors grow as they fill).
    fn by_kind_with_room(nodes: usize) -> [NodesRead; 2] {
        [(); 2].map(|()| {
            let mut read = NodesRead::default();
            if read.nodes.try_reserve(nodes).is_ok() {
                let _ = read.spans.try_reserve(nodes);
            }
            read
        })
    }

    /// Reads the nodes of `section`; `None` where one of them is not a table. Every node then
    /// has a table, so that a node two pieces share shows as two nodes of one name (whose
    /// tables the whole file's parse might have joined, or refused).
    fn nodes_of(
        &mut self,
        loader: &mut Loader<'_>,
        kind: NodeKind,
        section: &DeTable<'_>,
    ) -> Option<()> {
        let entries: Vec<_> = section.iter().collect();
        if entries
            .iter()
            .any(|(_, node)| node.get_ref().as_table().is_none())
        {
            return None;
        }
        loader.nodes_of(kind, &entries, &mut self.nodes, &mut self.spans);
        Some(())
    }

    /// The nodes read from pieces, given in file order, as [`Loader::document`] orders them:
    /// by kind, then in file order.
    fn in_file_order(pieces: impl Iterator<Item = [NodesRead; 2]>) -> (Vec<Node>, Vec<NodeSpans>) {
        let mut by_kind: [Vec<NodesRead>; 2] = Default::default();
        for piece in pieces {
            for (kind, read) in by_kind.iter_mut().zip(piece) {
                kind.push(read);
            }
        }
        let parts: Vec<NodesRead> = by_kind.into_iter().flatten().collect();
        let total = parts.iter().map(|part| part.nodes.len()).sum::<usize>();
        let mut parts = parts.into_iter();
        // The first part (the front thread's services: most nodes, usually, with room for all)
        // is moved, not copied.
        let mut all = parts.next().unwrap_or_default();
        all.nodes.reserve(total - all.nodes.len());
        all.spans.reserve(total - all.spans.len());
        for mut part in parts {
            all.nodes.append(&mut part.nodes);
            all.spans.append(&mut part.spans);
        }
        (all.nodes, all.spans)
    }
}

impl<'p> Loader<'p> {
    fn new(base_dir: PathBuf, problems: &'p mut Vec<Problem>) -> Self {
        Self {
            base_dir,
            env: Environment::default(),
            problems,
            from_env: BTreeMap::new(),
            same_kind_twice: false,
        }
    }

    /// A loader for `doc`, with the environment and what `doc`'s env file adds to it.
    fn for_document(
        base_dir: PathBuf,
        env: &Environment,
        doc: &DeTable<'_>,
        problems: &'p mut Vec<Problem>,
    ) -> Self {
        let mut loader = Self::new(base_dir, problems);
        let mut env = env.clone();
        loader.load_dotenv(doc, &mut env);
        loader.env = env;
        loader
    }

    fn push(&mut self, problem: Problem) {
        self.problems.push(problem);
    }

    fn load_dotenv(&mut self, doc: &DeTable<'_>, env: &mut Environment) {
        let named = doc
            .get("settings")
            .and_then(|s| s.get_ref().as_table())
            .and_then(|s| s.get("env_file"));
        let (path, span) = match named {
            Some(value) => match value.get_ref().as_str() {
                Some(p) => (self.base_dir.join(p), Some(value.span())),
                None => return, // reported as a type error by `settings`
            },
            None => (self.base_dir.join(".env"), None),
        };
        if named.is_some() && !path.exists() {
            let span = span.unwrap_or_default();
            self.push(
                Problem::error("dagstart::config::env_file", "env_file does not exist")
                    .label(span, format!("{} not found", path.display())),
            );
            return;
        }
        if let Err(message) = env.fill_from_dotenv(&path) {
            let problem = Problem::error(
                "dagstart::config::env_file",
                format!("cannot read {}: {message}", path.display()),
            );
            self.push(match span {
                Some(span) => problem.label(span, "named here"),
                None => problem,
            });
        }
    }

    fn document(&mut self, mut document: DeTable<'_>) -> Config {
        let top = self.top_level(&document);
        let mut nodes = Vec::new();
        let mut spans = Vec::new();
        for kind in NodeKind::ALL {
            let section = kind.section();
            let Some(table) = self.table_at(&document, section) else {
                continue;
            };
            self.nodes_in(kind, table, &mut nodes, &mut spans);
        }
        // The node tables are read: freeing them (100,000 nodes: 25 ms) overlaps the checks
        // across nodes.
        let node_tables: Vec<_> = NodeKind::ALL
            .iter()
            .filter_map(|kind| document.remove(kind.section()))
            .collect();
        let doc = &document;
        freed_beside(node_tables, nodes.len() >= TWO_THREADS_FROM, || {
            self.check_across_nodes(doc, &top.hosts, &mut nodes, &spans);
        });
        self.config(top, nodes)
    }

    /// Reads a large file piece by piece: the first piece's tables as [`Self::document`]
    /// does, then the nodes of the others, taken from the front by this thread and from the
    /// back by another until they meet (a fixed half each left one thread idle for a third
    /// of the time). Each piece's tree is dropped as soon as its nodes are read, so that its
    /// memory serves the next piece. `None` where the file must be read whole: a piece holds
    /// more than node tables, or two pieces hold the same node (see `parse.rs`).
    fn in_pieces(&mut self, pieces: parse::Pieces<'_>, text: &str) -> Option<Config> {
        let parse::Pieces { head, rest } = pieces;
        let top = self.top_level(&head);
        // Room for every node of the file: those the other thread reads are appended at the
        // end, and no node is moved while they are read (capacity not written to costs no
        // memory).
        let mut from_head = NodesRead::by_kind_with_room(parse::most_nodes(text));
        for (kind, read) in NodeKind::ALL.into_iter().zip(&mut from_head) {
            if let Some(table) = self.table_at(&head, kind.section()) {
                read.nodes_of(self, kind, table)?;
            }
        }
        let queue = PieceQueue::new(rest.len());
        let (front, back) = self.on_two_threads(
            (vec![from_head], End::Front),
            (Vec::new(), End::Back),
            |loader, (mut parts, end)| {
                let read = loader.pieces_from(&queue, end, &rest, text, &mut parts);
                if read.is_none() {
                    queue.empty();
                }
                read.map(|()| parts)
            },
        );
        let (mut nodes, spans) = NodesRead::in_file_order(front?.into_iter().chain(back?));
        self.check_across_nodes(&head, &top.hosts, &mut nodes, &spans);
        if self.same_kind_twice {
            return None;
        }
        Some(self.config(top, nodes))
    }

    /// Reads the pieces (at `ranges` in `text`) it takes from `end` of the queue, until it
    /// is empty: into the one part it is given from the front, into a part for each piece,
    /// left in file order, from the back. `None` where a piece must not be read on its own.
    fn pieces_from(
        &mut self,
        queue: &PieceQueue,
        end: End,
        ranges: &[Range<usize>],
        text: &str,
        parts: &mut Vec<[NodesRead; 2]>,
    ) -> Option<()> {
        while let Some(piece) = queue.take(end) {
            let range = ranges[piece].clone();
            let tables = parse::node_tables(text, range.clone())?;
            if end == End::Back {
                let room = parse::most_nodes(&text[range]);
                parts.push(NodesRead::by_kind_with_room(room));
            }
            let part = parts.last_mut()?;
            for ((kind, table), read) in NodeKind::ALL.into_iter().zip(&tables).zip(part) {
                read.nodes_of(self, kind, table)?;
            }
        }
        if end == End::Back {
            parts.reverse();
        }
        Some(())
    }

    /// The tables of a document besides the nodes'.
    fn top_level(&mut self, doc: &DeTable<'_>) -> TopLevel {
        self.check_keys(doc, TOP_KEYS, "");
        let settings = match self.table_at(doc, "settings") {
            Some(table) => self.settings(table),
            None => self.settings(&DeTable::new()),
        };
        let mut env = match self.table_at(doc, "env") {
            Some(table) => self.env_table(table, "env"),
            None => BTreeMap::new(),
        };
        let cluster = self.cluster(doc);
        let hosts = self.hosts(doc);
        self.host_addresses(&hosts, &mut env);
        TopLevel {
            settings,
            env,
            cluster,
            hosts,
        }
    }

    fn config(&mut self, top: TopLevel, nodes: Vec<Node>) -> Config {
        Config {
            path: PathBuf::new(),
            base_dir: self.base_dir.clone(),
            settings: top.settings,
            env: top.env,
            nodes,
            cluster: top.cluster,
            hosts: top.hosts,
            local_host: None,
            from_env: std::mem::take(&mut self.from_env),
            warnings: Vec::new(),
            source: NamedSource::new("", Arc::new(String::new())),
        }
    }

    /// Reads the nodes of one section onto `nodes` and `spans`, in file order. A node is 600
    /// bytes: each is moved once after it is built.
    fn nodes_in(
        &mut self,
        kind: NodeKind,
        section: &DeTable<'_>,
        nodes: &mut Vec<Node>,
        spans: &mut Vec<NodeSpans>,
    ) {
        let entries: Vec<_> = section.iter().collect();
        if entries.len() < TWO_THREADS_FROM {
            self.nodes_of(kind, &entries, nodes, spans);
            return;
        }
        let (first, second) = entries.split_at(entries.len() / 2);
        let (mut more_nodes, mut more_spans) = (Vec::new(), Vec::new());
        self.on_two_threads(
            (first, &mut *nodes, &mut *spans),
            (second, &mut more_nodes, &mut more_spans),
            |loader, (entries, nodes, spans)| loader.nodes_of(kind, entries, nodes, spans),
        );
        nodes.append(&mut more_nodes);
        spans.append(&mut more_spans);
    }

    /// Does `work` on two parts of the nodes at once, the second on another thread with a loader
    /// of its own. Its problems and environment reads follow the first's, as they would on one
    /// thread.
    fn on_two_threads<A: Send, R: Send>(
        &mut self,
        first: A,
        second: A,
        work: impl Fn(&mut Loader<'_>, A) -> R + Sync,
    ) -> (R, R) {
        let (base_dir, env) = (self.base_dir.clone(), self.env.clone());
        let work = &work;
        let (first, (second, from_env, problems)) = parallel::join(
            || work(self, first),
            move || {
                let mut problems = Vec::new();
                let mut loader = Loader::new(base_dir, &mut problems);
                loader.env = env;
                let done = work(&mut loader, second);
                let from_env = std::mem::take(&mut loader.from_env);
                (done, from_env, problems)
            },
        );
        self.from_env.extend(from_env);
        self.problems.extend(problems);
        (first, second)
    }

    fn nodes_of(
        &mut self,
        kind: NodeKind,
        entries: &[(&Spanned<Cow<'_, str>>, &Value<'_>)],
        nodes: &mut Vec<Node>,
        spans: &mut Vec<NodeSpans>,
    ) {
        let section = kind.section();
        nodes.reserve(entries.len());
        spans.reserve(entries.len());
        for &(name, value) in entries {
            // The key path is only written out for the error: formatting it for every node
            // cost more than reading most of them.
            let Some(node_table) = value.get_ref().as_table() else {
                self.type_error(value, &format!("{section}.{}", name.get_ref()), "a table");
                continue;
            };
            let (node, node_spans) = self.node(kind, name.get_ref(), name.span(), node_table);
            nodes.push(node);
            spans.push(node_spans);
        }
    }

    /// Resolves the dependencies and checks what involves more than one node: names, ports,
    /// placement, required on optional, cycles.
    fn check_across_nodes(
        &mut self,
        doc: &DeTable<'_>,
        hosts: &[super::cluster::Host],
        nodes: &mut [Node],
        spans: &[NodeSpans],
    ) {
        let declared: Vec<Vec<Dependency>> = nodes
            .iter_mut()
            .map(|n| std::mem::take(&mut n.depends_on))
            .collect();
        let index = self.check_names(nodes);
        let resolved = self.resolve_dependencies(nodes, spans, declared, &index);
        drop(index);
        for (node, deps) in nodes.iter_mut().zip(resolved) {
            node.depends_on = deps;
        }
        self.check_ports(nodes, spans);
        let host_spans: Vec<Option<Span>> = spans.iter().map(|s| s.host.clone()).collect();
        self.check_placement(doc, hosts, nodes, &host_spans);
        self.warn_required_on_optional(nodes);
        self.problems
            .extend(crate::engine::graph::cycle_problems(nodes));
    }

    // ----- tables and keys -------------------------------------------------------------------

    /// Reports the keys of `table` that are not in `known`; `path` names the table.
    fn check_keys(&mut self, table: &DeTable<'_>, known: &[&str], path: &str) {
        for key in table.keys() {
            let name = key.get_ref().as_ref();
            if known.contains(&name) {
                continue;
            }
            let what = if path.is_empty() {
                "the top-level".to_owned()
            } else {
                format!("the [{path}]")
            };
            let mut problem = Problem::error(
                "dagstart::config::unknown_key",
                format!("unknown key `{name}` in {what} table"),
            )
            .label(key.span(), "not a key dagstart knows");
            problem = match did_you_mean(name, known.iter().copied()) {
                Some(s) => problem.help(format!("did you mean `{s}`?")),
                None => problem.help(format!("known keys: {}", known.join(", "))),
            };
            self.push(problem);
        }
    }

    fn table_at<'t, 'i>(&mut self, parent: &'t DeTable<'i>, key: &str) -> Option<&'t DeTable<'i>> {
        parent.get(key).and_then(|v| self.expect_table(v, key))
    }

    fn expect_table<'t, 'i>(&mut self, value: &'t Value<'i>, key: &str) -> Option<&'t DeTable<'i>> {
        match value.get_ref().as_table() {
            Some(t) => Some(t),
            None => {
                self.type_error(value, key, "a table");
                None
            }
        }
    }

    fn type_error(&mut self, value: &Value<'_>, key: &str, expected: &str) {
        self.push(
            Problem::error(
                "dagstart::config::type",
                format!("`{key}` must be {expected}"),
            )
            .label(
                value.span(),
                format!("this is {}", article(value.get_ref().type_str())),
            ),
        );
    }

    // ----- scalar values ---------------------------------------------------------------------

    /// A string value with `${VAR}` expanded.
    fn string(&mut self, value: &Value<'_>, key_path: &str) -> Option<String> {
        let Some(raw) = value.get_ref().as_str() else {
            self.type_error(value, leaf(key_path), "a string");
            return None;
        };
        self.expand_at(raw, value.span(), key_path)
    }

    fn expand_at(&mut self, raw: &str, span: Span, key_path: &str) -> Option<String> {
        let env = &self.env;
        match expand(raw, &|name| env.get(name).map(str::to_owned)) {
            Ok((expanded, used)) => {
                if !used.is_empty() {
                    let vars: Vec<String> = used.iter().map(|v| format!("${{{v}}}")).collect();
                    self.from_env.insert(key_path.to_owned(), vars.join(" "));
                }
                Some(expanded)
            }
            Err(error) => {
                self.push(expand_problem(error, span));
                None
            }
        }
    }

    fn bool(&mut self, value: &Value<'_>, key: &str) -> Option<bool> {
        let b = value.get_ref().as_bool();
        if b.is_none() {
            self.type_error(value, key, "true or false");
        }
        b
    }

    fn integer(&mut self, value: &Value<'_>, key: &str, max: u64) -> Option<u64> {
        let parsed = value
            .get_ref()
            .as_integer()
            .and_then(|i| u64::from_str_radix(i.as_str(), i.radix()).ok());
        match parsed {
            Some(n) if n <= max => Some(n),
            Some(_) => {
                self.push(
                    Problem::error("dagstart::config::range", format!("`{key}` is too large"))
                        .label(value.span(), format!("at most {max}")),
                );
                None
            }
            None => {
                self.type_error(value, key, "a whole number, 0 or more");
                None
            }
        }
    }

    /// `user` (and `group`): names or numbers, resolved now, so an unknown one is a diagnostic
    /// at its key rather than a failure at spawn.
    fn run_as(&mut self, table: &DeTable<'_>, path: &str) -> Option<RunAs> {
        let user_value = field(table, "user");
        let group_value = field(table, "group");
        if user_value.is_none() {
            if let Some(v) = group_value {
                self.push(
                    Problem::error("dagstart::config::user", "`group` without `user`")
                        .label(v.span(), "the group of which user?")
                        .help("add `user = \"NAME\"` beside it"),
                );
            }
            return None;
        }
        let v = user_value?;
        let name = self.account_name(v, &format!("{path}.user"))?;
        let user = match name.parse::<u32>() {
            Ok(uid) => nix::unistd::User::from_uid(uid.into()),
            Err(_) => nix::unistd::User::from_name(&name),
        };
        let Ok(Some(user)) = user else {
            self.push(
                Problem::error(
                    "dagstart::config::user",
                    format!("no user `{name}` on this machine"),
                )
                .label(v.span(), "unknown user"),
            );
            return None;
        };
        let mut gid = user.gid.as_raw();
        if let Some(gv) = group_value {
            let group_name = self.account_name(gv, &format!("{path}.group"))?;
            let group = match group_name.parse::<u32>() {
                Ok(id) => nix::unistd::Group::from_gid(id.into()),
                Err(_) => nix::unistd::Group::from_name(&group_name),
            };
            match group {
                Ok(Some(group)) => gid = group.gid.as_raw(),
                _ => {
                    self.push(
                        Problem::error(
                            "dagstart::config::user",
                            format!("no group `{group_name}` on this machine"),
                        )
                        .label(gv.span(), "unknown group"),
                    );
                    return None;
                }
            }
        }
        let c_name = std::ffi::CString::new(user.name.clone()).ok()?;
        let mut groups: Vec<u32> = nix::unistd::getgrouplist(&c_name, user.gid)
            .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_default();
        if !groups.contains(&gid) {
            groups.push(gid);
        }
        Some(RunAs {
            user: user.name,
            uid: user.uid.as_raw(),
            gid,
            groups,
            home: user.dir,
        })
    }

    /// A user or group: a name, or a number (as a number or a string).
    fn account_name(&mut self, value: &Value<'_>, key_path: &str) -> Option<String> {
        if value.get_ref().is_integer() {
            return self
                .integer(value, leaf(key_path), u64::from(u32::MAX))
                .map(|n| n.to_string());
        }
        self.string(value, key_path)
    }

    /// A size with a unit: "500KB", "64MiB", "1GiB".
    fn size(&mut self, value: &Value<'_>, key_path: &str) -> Option<u64> {
        self.parsed(
            value,
            key_path,
            parse_size,
            ("dagstart::config::size", "size"),
            "sizes look like \"500KB\", \"64MiB\" or \"1GiB\"",
        )
    }

    /// A string value read with `parse`; when it does not parse, an error at the value: "`key`
    /// is not a valid {what}", with `code`, the parser's reason and `example` as help.
    fn parsed<T>(
        &mut self,
        value: &Value<'_>,
        key_path: &str,
        parse: impl Fn(&str) -> Result<T, String>,
        (code, what): (&'static str, &str),
        example: &str,
    ) -> Option<T> {
        let text = self.string(value, key_path)?;
        match parse(&text) {
            Ok(parsed) => Some(parsed),
            Err(reason) => {
                self.push(
                    Problem::error(code, format!("`{}` is not a valid {what}", leaf(key_path)))
                        .label(value.span(), reason)
                        .help(example),
                );
                None
            }
        }
    }

    /// A port number, or a string such as "${API_PORT:-8010}" that expands to one.
    fn port(&mut self, value: &Value<'_>, key_path: &str) -> Option<u16> {
        if !value.get_ref().is_str() {
            return self
                .integer(value, "port", u64::from(u16::MAX))
                .map(|p| p as u16);
        }
        let text = self.string(value, key_path)?;
        let port = text.trim().parse::<u16>().ok();
        if port.is_none() {
            self.push(
                Problem::error(
                    "dagstart::config::port",
                    format!("`{text}` is not a port number"),
                )
                .label(value.span(), "expected 0 to 65535"),
            );
        }
        port
    }

    fn duration(&mut self, value: &Value<'_>, key_path: &str) -> Option<Duration> {
        if value.get_ref().is_integer() || value.get_ref().is_float() {
            self.push(
                Problem::error(
                    "dagstart::config::duration",
                    format!("`{}` must be a duration string", leaf(key_path)),
                )
                .label(value.span(), "a bare number has no unit")
                .help("write it with a unit, e.g. \"500ms\", \"5s\" or \"1m30s\""),
            );
            return None;
        }
        self.parsed(
            value,
            key_path,
            parse_duration,
            ("dagstart::config::duration", "duration"),
            "durations look like \"250ms\", \"5s\", \"1m30s\" or \"2h\"",
        )
    }

    fn signal(&mut self, value: &Value<'_>, key_path: &str) -> Option<Signal> {
        let text = self.string(value, key_path)?;
        let parsed = parse_signal(&text);
        if parsed.is_none() {
            let names: Vec<&str> = Signal::iterator().map(Signal::as_str).collect();
            let upper = text.to_ascii_uppercase();
            let guess = did_you_mean(&upper, names.iter().copied())
                .or_else(|| did_you_mean(&format!("SIG{upper}"), names.iter().copied()));
            let problem = Problem::error(
                "dagstart::config::signal",
                format!("`{text}` is not a signal name"),
            )
            .label(value.span(), "unknown signal");
            self.push(match guess {
                Some(g) => problem.help(format!("did you mean \"{g}\"?")),
                None => problem.help("use a name like \"SIGTERM\", \"SIGINT\" or \"SIGQUIT\""),
            });
        }
        parsed
    }

    /// Applies the environment variable `var` over the file's value of `key_path`.
    fn env_override<T>(
        &mut self,
        var: &str,
        key_path: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let raw = self.env.get(var)?.to_owned();
        match parse(raw.trim()) {
            Ok(value) => {
                self.from_env.insert(key_path.to_owned(), var.to_owned());
                Some(value)
            }
            Err(reason) => {
                self.push(
                    Problem::error(
                        "dagstart::config::env_override",
                        format!("environment variable {var}={raw:?} is invalid: {reason}"),
                    )
                    .help(format!("{var} overrides `{key_path}`; fix or unset it")),
                );
                None
            }
        }
    }

    // ----- sections --------------------------------------------------------------------------

    fn settings(&mut self, table: &DeTable<'_>) -> Settings {
        self.check_keys(table, SETTINGS_KEYS, "settings");
        let mut s = Settings::default();
        if let Some(v) = field(table, "max_workers") {
            if let Some(w) = self.max_workers(v) {
                s.max_workers = w;
            }
        }
        if let Some(v) = field(table, "startup_timeout") {
            s.startup_timeout = self
                .duration(v, "settings.startup_timeout")
                .unwrap_or(s.startup_timeout);
        }
        if let Some(v) = field(table, "parallel") {
            s.parallel = self.bool(v, "parallel").unwrap_or(s.parallel);
        }
        if let Some(v) = field(table, "parallel_health_checks") {
            s.parallel_health_checks = self
                .bool(v, "parallel_health_checks")
                .unwrap_or(s.parallel_health_checks);
        }
        if let Some(v) = field(table, "log_dir") {
            if let Some(dir) = self.string(v, "settings.log_dir") {
                s.log_dir = PathBuf::from(dir);
            }
        }
        if let Some(v) = field(table, "shutdown_timeout") {
            s.shutdown_timeout = self
                .duration(v, "settings.shutdown_timeout")
                .unwrap_or(s.shutdown_timeout);
        }
        if let Some(v) = field(table, "env_file") {
            self.string(v, "settings.env_file");
        }
        if let Some(v) = field(table, "log_max_size") {
            s.log_max_size = self
                .size(v, "settings.log_max_size")
                .unwrap_or(s.log_max_size);
        }
        if let Some(v) = field(table, "log_keep") {
            s.log_keep = self
                .integer(v, "log_keep", 1000)
                .map_or(s.log_keep, |n| n as u32);
        }
        if let Some(v) = field(table, "pid_namespace") {
            s.pid_namespace = self.bool(v, "pid_namespace").unwrap_or(s.pid_namespace);
        }
        s.log_dir = join_clean(&self.base_dir, &s.log_dir);
        self.settings_from_env(&mut s);
        s
    }

    fn settings_from_env(&mut self, s: &mut Settings) {
        if let Some(w) = self.env_override(
            "STARTUP_MAX_WORKERS",
            "settings.max_workers",
            parse_max_workers,
        ) {
            s.max_workers = w;
        }
        if let Some(d) = self.env_override(
            "STARTUP_TIMEOUT",
            "settings.startup_timeout",
            parse_duration,
        ) {
            s.startup_timeout = d;
        }
        if let Some(b) = self.env_override("USE_PARALLEL_STARTUP", "settings.parallel", parse_bool)
        {
            s.parallel = b;
        }
        if let Some(b) = self.env_override(
            "PARALLEL_HEALTH_CHECKS",
            "settings.parallel_health_checks",
            parse_bool,
        ) {
            s.parallel_health_checks = b;
        }
    }

    fn max_workers(&mut self, value: &Value<'_>) -> Option<MaxWorkers> {
        if value.get_ref().is_str() {
            let text = self.string(value, "settings.max_workers")?;
            return match parse_max_workers(&text) {
                Ok(w) => Some(w),
                Err(reason) => {
                    self.push(
                        Problem::error("dagstart::config::max_workers", "invalid `max_workers`")
                            .label(value.span(), reason),
                    );
                    None
                }
            };
        }
        let n = self.integer(value, "max_workers", u64::from(u32::MAX))?;
        if n == 0 {
            self.push(
                Problem::error("dagstart::config::max_workers", "`max_workers` cannot be 0")
                    .label(value.span(), "nothing could ever start")
                    .help("leave it out for no limit, or write \"auto\""),
            );
            return None;
        }
        Some(MaxWorkers::Fixed(n as usize))
    }

    fn env_table(&mut self, table: &DeTable<'_>, path: &str) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for (key, value) in table.iter() {
            let name = key.get_ref().as_ref();
            let key_path = format!("{path}.{name}");
            let text = match value.get_ref() {
                DeValue::String(_) => self.string(value, &key_path),
                DeValue::Integer(i) => Some(i.as_str().to_owned()),
                DeValue::Float(f) => Some(f.as_str().to_owned()),
                DeValue::Boolean(b) => Some(b.to_string()),
                _ => {
                    self.type_error(value, name, "a string, number or boolean");
                    None
                }
            };
            if let Some(text) = text {
                env.insert(name.to_owned(), text);
            }
        }
        env
    }

    fn node(
        &mut self,
        kind: NodeKind,
        name: &str,
        name_span: Span,
        table: &DeTable<'_>,
    ) -> (Node, NodeSpans) {
        let section = kind.section();
        let path = format!("{section}.{name}");
        let known = match kind {
            NodeKind::Service => SERVICE_KEYS,
            NodeKind::Component => COMPONENT_KEYS,
        };
        self.check_keys(table, known, &path);
        let command = self.command(table, &path, &name_span);
        let cwd = field(table, "cwd")
            .and_then(|v| self.string(v, &format!("{path}.cwd")))
            .map_or_else(
                || self.base_dir.clone(),
                |dir| join_clean(&self.base_dir, Path::new(&dir)),
            );
        let env = match field(table, "env") {
            Some(v) => match self.expect_table(v, "env") {
                Some(t) => self.env_table(t, &format!("{path}.env")),
                None => BTreeMap::new(),
            },
            None => BTreeMap::new(),
        };
        let depends_on = field(table, "depends_on")
            .map(|v| self.depends_on(v, &path))
            .unwrap_or_default();
        let port = field(table, "port")
            .and_then(|v| Some((self.port(v, &format!("{path}.port"))?, v.span())));
        let health = match kind {
            NodeKind::Component => Health::with_probe(Probe::Exited),
            NodeKind::Service => {
                self.health(field(table, "health"), port.as_ref().map(|p| p.0), &path)
            }
        };
        let mut startup_timeout = field(table, "startup_timeout")
            .and_then(|v| self.duration(v, &format!("{path}.startup_timeout")))
            .unwrap_or(DEFAULT_NODE_TIMEOUT);
        let timeout_var = timeout_env_var(name);
        if self.env.get(&timeout_var).is_some() {
            let key_path = format!("{path}.startup_timeout");
            if let Some(d) = self.env_override(&timeout_var, &key_path, parse_duration) {
                startup_timeout = d;
            }
        }
        let retries = field(table, "retries")
            .and_then(|v| self.integer(v, "retries", 1000))
            .unwrap_or(0) as u32;
        let required = field(table, "required")
            .and_then(|v| self.bool(v, "required"))
            .unwrap_or(true);
        let stop_signal = field(table, "stop_signal")
            .and_then(|v| self.signal(v, &format!("{path}.stop_signal")))
            .unwrap_or(Signal::SIGTERM);
        let stop_timeout = field(table, "stop_timeout")
            .and_then(|v| self.duration(v, &format!("{path}.stop_timeout")))
            .unwrap_or(DEFAULT_STOP_TIMEOUT);
        let lazy = field(table, "lazy")
            .and_then(|v| self.bool(v, "lazy"))
            .unwrap_or(false);
        let sockets = field(table, "sockets")
            .map(|v| self.sockets(v, &format!("{path}.sockets")))
            .unwrap_or_default();
        let watchdog = field(table, "watchdog")
            .and_then(|v| Some((self.duration(v, &format!("{path}.watchdog"))?, v.span())));
        self.check_readiness_protocols(
            &health,
            field(table, "health"),
            watchdog.as_ref(),
            &sockets,
        );
        let restart = self.restart(table, &path);
        let liveness = field(table, "liveness")
            .and_then(|v| self.liveness(v, port.as_ref().map(|p| p.0), &path));
        let restart_with_dependency = field(table, "restart_with_dependency")
            .and_then(|v| self.bool(v, "restart_with_dependency"))
            .unwrap_or(false);
        let watch = field(table, "watch")
            .map(|v| self.watch(v, &format!("{path}.watch")))
            .unwrap_or_default();
        let run_as = self.run_as(table, &path);
        let log_max_size = field(table, "log_max_size")
            .and_then(|v| self.size(v, &format!("{path}.log_max_size")));
        let log_keep = field(table, "log_keep")
            .and_then(|v| self.integer(v, "log_keep", 1000))
            .map(|n| n as u32);
        let output = field(table, "output")
            .and_then(|v| self.output(v, &format!("{path}.output"), &health))
            .unwrap_or_default();
        let profiles = field(table, "profiles")
            .map(|v| self.profiles(v, &format!("{path}.profiles")))
            .unwrap_or_default();
        let host = self.node_host(table, &path);
        let (depends_on, conditions): (Vec<_>, Vec<_>) = depends_on
            .into_iter()
            .map(|entry| {
                // The node-level keys are the defaults of its entries.
                let restart = entry
                    .restart
                    .unwrap_or(restart_with_dependency && !entry.dep.milestone);
                let required = entry.required.unwrap_or(required);
                (
                    Dependency {
                        restart,
                        required,
                        ..entry.dep
                    },
                    entry.condition,
                )
            })
            .unzip();
        let node = Node {
            name: name.to_owned(),
            name_span,
            kind,
            command,
            cwd,
            env,
            depends_on,
            port: port.as_ref().map(|p| p.0),
            health,
            startup_timeout,
            retries,
            required,
            stop_signal,
            stop_timeout,
            watchdog: watchdog.map(|w| w.0),
            sockets,
            lazy,
            restart,
            liveness,
            restart_with_dependency,
            watch,
            run_as,
            log_max_size,
            log_keep,
            output,
            profiles,
            host: host.as_ref().map(|h| h.0.clone()),
        };
        let spans = NodeSpans {
            port: port.map(|p| p.1),
            host: host.map(|h| h.1),
            conditions,
        };
        (node, spans)
    }

    /// `output = "log" | "discard"`; a discarded output cannot be watched for a `log` probe.
    fn output(&mut self, value: &Value<'_>, key_path: &str, health: &Health) -> Option<Output> {
        let text = self.string(value, key_path)?;
        let Some(output) = Output::parse(&text) else {
            let problem = Problem::error(
                "dagstart::config::output",
                format!("`{text}` is not an output"),
            )
            .label(value.span(), "unknown output");
            self.push(match did_you_mean(&text, Output::NAMES.iter().copied()) {
                Some(s) => problem.help(format!("did you mean \"{s}\"?")),
                None => problem.help("use \"log\" (the default) or \"discard\""),
            });
            return None;
        };
        if output == Output::Discard && matches!(health.probe, Probe::Log { .. }) {
            self.push(
                Problem::error(
                    "dagstart::config::output",
                    "a `log` health check needs the output",
                )
                .label(value.span(), "this sends it to /dev/null")
                .help("keep `output = \"log\"`, or check readiness another way"),
            );
            return None;
        }
        Some(output)
    }

    /// `sockets = ["127.0.0.1:8010", "unix:run/app.sock", 8011]`.
    fn sockets(&mut self, value: &Value<'_>, key_path: &str) -> Vec<SocketAddress> {
        let DeValue::Array(items) = value.get_ref() else {
            self.type_error(value, "sockets", "an array of addresses");
            return Vec::new();
        };
        let mut sockets = Vec::with_capacity(items.len());
        for item in items.iter() {
            let text = if item.get_ref().is_integer() {
                self.integer(item, "sockets", u64::from(u16::MAX))
                    .map(|p| p.to_string())
            } else {
                self.string(item, key_path)
            };
            let Some(text) = text else { continue };
            match parse_socket(&text, &self.base_dir) {
                Some(address) => sockets.push(address),
                None => self.push(
                    Problem::error(
                        "dagstart::config::socket",
                        format!("`{text}` is not a socket address"),
                    )
                    .label(item.span(), "expected IP:PORT, a port, or unix:PATH")
                    .help("e.g. \"127.0.0.1:8010\", \"[::1]:8010\", 8010 or \"unix:run/app.sock\""),
                ),
            }
        }
        sockets
    }

    /// `watchdog` needs `notify`; a readiness fd must not land on a socket-activation fd.
    fn check_readiness_protocols(
        &mut self,
        health: &Health,
        health_value: Option<&Value<'_>>,
        watchdog: Option<&(Duration, Span)>,
        sockets: &[SocketAddress],
    ) {
        if let (Probe::Tcp { port, .. }, Some(value)) = (&health.probe, health_value) {
            let own = sockets
                .iter()
                .any(|s| matches!(s, SocketAddress::Tcp(a) if a.port() == *port));
            if own {
                self.push(
                    Problem::warning(
                        "dagstart::config::tcp_on_own_socket",
                        "this tcp probe always succeeds",
                    )
                    .label(
                        value.span(),
                        "the kernel accepts connections on a socket dagstart holds",
                    )
                    .help("probe readiness with http, notify or ready_fd instead"),
                );
            }
        }
        if let Some((_, span)) = watchdog {
            if health.probe != Probe::Notify {
                self.push(
                    Problem::error(
                        "dagstart::config::watchdog",
                        "`watchdog` needs notify readiness",
                    )
                    .label(span.clone(), "pings arrive as WATCHDOG=1 on NOTIFY_SOCKET")
                    .help("add `health = { notify = true }` to this service"),
                );
            }
        }
        if let (Probe::ReadyFd { fd }, Some(value)) = (&health.probe, health_value) {
            let first_free = 3 + sockets.len() as i32;
            if *fd < first_free {
                self.push(
                    Problem::error(
                        "dagstart::config::ready_fd",
                        format!("ready_fd {fd} is taken"),
                    )
                    .label(
                        value.span(),
                        format!("fds 0-2 are stdio and 3..{first_free} carry the sockets"),
                    )
                    .help(format!("use ready_fd = {first_free} or higher")),
                );
            }
        }
    }

    fn command(&mut self, table: &DeTable<'_>, path: &str, name_span: &Span) -> Command {
        let shell = field(table, "shell")
            .and_then(|v| self.bool(v, "shell"))
            .unwrap_or(false);
        let key_path = format!("{path}.command");
        let Some(value) = field(table, "command") else {
            self.push(
                Problem::error(
                    "dagstart::config::missing_command",
                    format!("`{path}` has no command"),
                )
                .label(name_span.clone(), "declared here")
                .help("add `command = [\"program\", \"arg\"]` or `command = \"program arg\"`"),
            );
            return Command::Argv(Vec::new());
        };
        let command = match value.get_ref() {
            DeValue::String(_) if shell => self.string(value, &key_path).map(Command::Shell),
            DeValue::String(_) => {
                let text = self.string(value, &key_path);
                text.and_then(|t| match shell_words::split(&t) {
                    Ok(argv) => Some(Command::Argv(argv)),
                    Err(e) => {
                        self.push(
                            Problem::error(
                                "dagstart::config::command",
                                "cannot split the command into words",
                            )
                            .label(value.span(), e.to_string())
                            .help("close the quote, or give the command as an array of strings"),
                        );
                        None
                    }
                })
            }
            DeValue::Array(items) if !shell => {
                self.string_array(items, &key_path).map(Command::Argv)
            }
            DeValue::Array(_) => {
                self.push(
                    Problem::error(
                        "dagstart::config::command",
                        "with `shell = true` the command must be one string",
                    )
                    .label(value.span(), "an array")
                    .help("write the shell script as a string, e.g. command = \"a && b\""),
                );
                None
            }
            _ => {
                self.type_error(value, "command", "a string or an array of strings");
                None
            }
        };
        let command = command.unwrap_or(Command::Argv(vec!["?".into()]));
        let empty = match &command {
            Command::Argv(argv) => argv.first().is_none_or(|p| p.trim().is_empty()),
            Command::Shell(script) => script.trim().is_empty(),
        };
        if empty {
            self.push(
                Problem::error("dagstart::config::command", "the command is empty")
                    .label(value.span(), "nothing to run"),
            );
        }
        command
    }

    fn string_array(&mut self, items: &[Value<'_>], key_path: &str) -> Option<Vec<String>> {
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in items {
            match self.string(item, key_path) {
                Some(s) => out.push(s),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// The dependency entries, each with its span, its explicit condition and its explicit
    /// `restart` and `required` (whose defaults are the node's `restart_with_dependency` and
    /// `required`).
    fn depends_on(&mut self, value: &Value<'_>, path: &str) -> Vec<Entry> {
        let mut out = Vec::new();
        match value.get_ref() {
            DeValue::Array(items) => {
                let key_path = format!("{path}.depends_on");
                out.reserve(items.len());
                for item in items.iter() {
                    if let Some(name) = self.string(item, &key_path) {
                        out.push(Entry::new(name, item.span()));
                    }
                }
            }
            DeValue::Table(table) => {
                for (key, value) in table.iter() {
                    let name = key.get_ref().to_string();
                    let mut entry = Entry::new(name, key.span().start..value.span().end);
                    let key_path = format!("{path}.depends_on.{}", entry.dep.name);
                    let ok = match value.get_ref() {
                        DeValue::Table(long) => self.long_dependency(long, &key_path, &mut entry),
                        _ => self.condition(value, &key_path, &mut entry),
                    };
                    if ok {
                        out.push(entry);
                    }
                }
            }
            _ => self.type_error(
                value,
                "depends_on",
                "an array of names or a table of name = \"condition\" or name = { condition = ..., required = ..., restart = ..., milestone = ... }",
            ),
        }
        out
    }

    /// `condition = "healthy"` (or the short form's value) into `entry`; false when invalid.
    fn condition(&mut self, value: &Value<'_>, key_path: &str, entry: &mut Entry) -> bool {
        let Some(text) = self.string(value, key_path) else {
            return false;
        };
        let Some(condition) = Condition::parse(&text) else {
            let problem = Problem::error(
                "dagstart::config::condition",
                format!("`{text}` is not a dependency condition"),
            )
            .label(value.span(), "unknown condition");
            self.push(match did_you_mean(&text, Condition::NAMES) {
                Some(s) => problem.help(format!("did you mean \"{s}\"?")),
                None => {
                    problem.help("use \"started\", \"healthy\", \"completed\" or \"listening\"")
                }
            });
            return false;
        };
        entry.condition = Some((condition, value.span()));
        true
    }

    /// `db = { condition = "healthy", required = false, restart = true, milestone = true }`.
    fn long_dependency(&mut self, table: &DeTable<'_>, key_path: &str, entry: &mut Entry) -> bool {
        self.check_keys(table, DEPENDENCY_KEYS, key_path);
        let mut ok = true;
        if let Some(value) = field(table, "condition") {
            ok &= self.condition(value, &format!("{key_path}.condition"), entry);
        }
        let flag = |loader: &mut Self, key: &str| {
            field(table, key).and_then(|v| Some((loader.bool(v, key)?, v.span())))
        };
        entry.required = flag(self, "required").map(|r| r.0);
        let restart = flag(self, "restart");
        let milestone = flag(self, "milestone");
        entry.dep.milestone = milestone.as_ref().is_some_and(|m| m.0);
        entry.restart = restart.as_ref().map(|r| r.0);
        if let (Some((true, restart_span)), Some((true, milestone_span))) = (restart, milestone) {
            self.push(
                Problem::error(
                    "dagstart::config::milestone_restart",
                    format!(
                        "a milestone cannot also restart its dependent (`{}`)",
                        entry.dep.name
                    ),
                )
                .label(milestone_span, "the link is dropped once the dependent is ready")
                .label(restart_span, "so there is nothing left to restart along")
                .help("keep `restart = true` for a lasting link, or `milestone = true` for a start-only one"),
            );
            ok = false;
        }
        ok
    }

    fn health(&mut self, value: Option<&Value<'_>>, port: Option<u16>, path: &str) -> Health {
        let default = match port {
            Some(port) => Probe::Tcp {
                host: "localhost".into(),
                port,
            },
            None => Probe::Spawned,
        };
        let Some(value) = value else {
            return Health::with_probe(default);
        };
        let Some(table) = self.expect_table(value, "health") else {
            return Health::with_probe(default);
        };
        let path = format!("{path}.health");
        self.check_keys(table, HEALTH_KEYS, &path);
        let probe = self.single_probe(table, value, PROBE_KEYS, port, &path);
        let mut health = Health::with_probe(probe.unwrap_or(default));
        if let Some(v) = field(table, "interval") {
            health.interval = self
                .duration(v, &format!("{path}.interval"))
                .unwrap_or(health.interval);
        }
        if let Some(v) = field(table, "timeout") {
            health.timeout = self
                .duration(v, &format!("{path}.timeout"))
                .unwrap_or(health.timeout);
        }
        // Waiting is not failing: failed probes never end a start, so these two (docker
        // compose's names) no longer mean anything before the node is ready. Accepted, with
        // what to use instead.
        if let Some(v) = field(table, "retries") {
            self.integer(v, "retries", 1_000_000);
            self.push(
                Problem::warning(
                    "dagstart::config::health_retries",
                    "`health.retries` is ignored: failed probes never end a start",
                )
                .label(v.span(), "ignored")
                .help(
                    "a starting service is probed until it is ready or its `startup_timeout` \
                     passes (set that to fail sooner); to restart a service that stops \
                     answering once ready, use `liveness` with `failure_threshold`",
                ),
            );
        }
        if let Some(v) = field(table, "start_period") {
            self.duration(v, &format!("{path}.start_period"));
            self.push(
                Problem::warning(
                    "dagstart::config::health_start_period",
                    "`health.start_period` is ignored: failed probes never end a start",
                )
                .label(v.span(), "ignored")
                .help(
                    "a slow starter is waited for up to its `startup_timeout`; raise that \
                     instead",
                ),
            );
        }
        health
    }

    /// The one probe of a `health` or `liveness` table, among the `allowed` probe keys.
    fn single_probe(
        &mut self,
        table: &DeTable<'_>,
        value: &Value<'_>,
        allowed: &[&str],
        port: Option<u16>,
        path: &str,
    ) -> Option<Probe> {
        let probes: Vec<_> = table
            .iter()
            .filter(|(k, _)| allowed.contains(&k.get_ref().as_ref()))
            .collect();
        match probes.as_slice() {
            [] => {
                self.push(
                    Problem::error("dagstart::config::health", "this check has no probe")
                        .label(value.span(), format!("none of: {}", allowed.join(", ")))
                        .help("add one, e.g. http = \"/health\" or tcp = 8010"),
                );
                None
            }
            [(key, probe_value)] => self.probe(key.get_ref(), probe_value, port, path),
            [_, second, ..] => {
                self.push(
                    Problem::error("dagstart::config::health", "a check takes one probe")
                        .label(second.0.span(), "a second probe")
                        .help(format!("keep one of {}", allowed.join(", "))),
                );
                None
            }
        }
    }

    /// `watch = ["src/**/*.py"]`: valid globs, made absolute against services.toml's directory.
    fn watch(&mut self, value: &Value<'_>, key_path: &str) -> Vec<String> {
        let DeValue::Array(items) = value.get_ref() else {
            self.type_error(value, "watch", "an array of glob patterns");
            return Vec::new();
        };
        let mut patterns = Vec::new();
        for item in items.iter() {
            let Some(text) = self.string(item, key_path) else {
                continue;
            };
            let absolute = join_clean(&self.base_dir, Path::new(&text))
                .display()
                .to_string();
            match glob::Pattern::new(&absolute) {
                Ok(_) => patterns.push(absolute),
                Err(e) => self.push(
                    Problem::error(
                        "dagstart::config::watch",
                        format!("`{text}` is not a glob pattern"),
                    )
                    .label(item.span(), e.msg)
                    .help("e.g. \"src/**/*.py\" or \"config/*.yaml\""),
                ),
            }
        }
        patterns
    }

    /// `profiles = ["debug", "tools"]`: names as node names are (they are typed on the
    /// command line and in `DAGSTART_PROFILES`).
    fn profiles(&mut self, value: &Value<'_>, key_path: &str) -> Vec<String> {
        let DeValue::Array(items) = value.get_ref() else {
            self.type_error(value, "profiles", "an array of profile names");
            return Vec::new();
        };
        let mut profiles: Vec<String> = Vec::with_capacity(items.len());
        for item in items.iter() {
            let Some(name) = self.string(item, key_path) else {
                continue;
            };
            if !super::is_name(&name) {
                self.push(
                    Problem::error(
                        "dagstart::config::profile",
                        format!("invalid profile name `{name}`"),
                    )
                    .label(item.span(), "only letters, digits, `_` and `-` are allowed")
                    .help("a profile is named on the command line: `dagstart run --profile NAME`"),
                );
            } else if !profiles.contains(&name) {
                profiles.push(name);
            }
        }
        profiles
    }

    fn restart(&mut self, table: &DeTable<'_>, path: &str) -> super::Restart {
        let mut restart = super::Restart::default();
        if let Some(v) = field(table, "restart") {
            if let Some(text) = self.string(v, &format!("{path}.restart")) {
                restart.policy = match text.as_str() {
                    "no" => super::RestartPolicy::No,
                    "on-failure" => super::RestartPolicy::OnFailure,
                    "always" => super::RestartPolicy::Always,
                    other => {
                        let problem = Problem::error(
                            "dagstart::config::restart",
                            format!("`{other}` is not a restart policy"),
                        )
                        .label(v.span(), "unknown policy");
                        self.push(match did_you_mean(other, ["no", "on-failure", "always"]) {
                            Some(s) => problem.help(format!("did you mean \"{s}\"?")),
                            None => problem.help("use \"no\", \"on-failure\" or \"always\""),
                        });
                        super::RestartPolicy::No
                    }
                };
            }
        }
        for (key, target) in [
            ("restart_backoff", &mut restart.backoff),
            ("restart_backoff_max", &mut restart.backoff_max),
            ("restart_window", &mut restart.window),
        ] {
            if let Some(v) = field(table, key) {
                if let Some(d) = self.duration(v, &format!("{path}.{key}")) {
                    *target = d;
                }
            }
        }
        if let Some(v) = field(table, "max_restarts") {
            restart.max_restarts = self
                .integer(v, "max_restarts", 1_000_000)
                .map_or(restart.max_restarts, |n| n as u32);
        }
        restart
    }

    fn liveness(
        &mut self,
        value: &Value<'_>,
        port: Option<u16>,
        path: &str,
    ) -> Option<super::Liveness> {
        let table = self.expect_table(value, "liveness")?;
        let path = format!("{path}.liveness");
        self.check_keys(table, LIVENESS_KEYS, &path);
        let probe = self.single_probe(table, value, LIVENESS_PROBE_KEYS, port, &path)?;
        let mut liveness = super::Liveness {
            probe,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            failure_threshold: 3,
        };
        if let Some(v) = field(table, "interval") {
            liveness.interval = self
                .duration(v, &format!("{path}.interval"))
                .unwrap_or(liveness.interval);
        }
        if let Some(v) = field(table, "timeout") {
            liveness.timeout = self
                .duration(v, &format!("{path}.timeout"))
                .unwrap_or(liveness.timeout);
        }
        if let Some(v) = field(table, "failure_threshold") {
            liveness.failure_threshold = self
                .integer(v, "failure_threshold", 1_000_000)
                .map_or(liveness.failure_threshold, |n| (n as u32).max(1));
        }
        Some(liveness)
    }

    fn probe(
        &mut self,
        key: &str,
        value: &Value<'_>,
        port: Option<u16>,
        path: &str,
    ) -> Option<Probe> {
        let key_path = format!("{path}.{key}");
        match key {
            "http" => {
                let target = self.string(value, &key_path)?;
                self.http_probe(&target, value.span(), port)
            }
            "tcp" => self.tcp_probe(value, &key_path),
            "exec" => match value.get_ref() {
                DeValue::Array(items) => {
                    let argv = self.string_array(items, &key_path)?;
                    if argv.is_empty() {
                        self.push(
                            Problem::error("dagstart::config::health", "the exec probe is empty")
                                .label(value.span(), "nothing to run"),
                        );
                        return None;
                    }
                    Some(Probe::Exec { argv })
                }
                DeValue::String(_) => {
                    let text = self.string(value, &key_path)?;
                    match shell_words::split(&text) {
                        Ok(argv) if !argv.is_empty() => Some(Probe::Exec { argv }),
                        _ => {
                            self.push(
                                Problem::error(
                                    "dagstart::config::health",
                                    "cannot split the exec probe into words",
                                )
                                .label(value.span(), "empty or unbalanced quotes"),
                            );
                            None
                        }
                    }
                }
                _ => {
                    self.type_error(value, "exec", "a string or an array of strings");
                    None
                }
            },
            "log" => {
                let text = self.string(value, &key_path)?;
                match regex::Regex::new(&text) {
                    Ok(pattern) => Some(Probe::Log { pattern }),
                    Err(e) => {
                        self.push(
                            Problem::error(
                                "dagstart::config::health",
                                "the log pattern is not a valid regex",
                            )
                            .label(value.span(), first_line(&e.to_string())),
                        );
                        None
                    }
                }
            }
            "notify" => match self.bool(value, "notify")? {
                true => Some(Probe::Notify),
                false => {
                    self.push(
                        Problem::error(
                            "dagstart::config::health",
                            "`notify = false` is not a probe",
                        )
                        .label(value.span(), "remove it, or use another probe"),
                    );
                    None
                }
            },
            _ => {
                let fd = self.integer(value, "ready_fd", 1024)? as i32;
                Some(Probe::ReadyFd { fd })
            }
        }
    }

    fn http_probe(&mut self, target: &str, span: Span, port: Option<u16>) -> Option<Probe> {
        if target.starts_with("http://") {
            if let (Some(port), Some(probed)) = (port, url_port(target)) {
                if probed != port {
                    self.push(
                        Problem::warning(
                            "dagstart::config::health_port",
                            format!("the health check probes port {probed}, the service declares {port}"),
                        )
                        .label(span, format!("port {probed}"))
                        .help(format!(
                            "if the service listens on {port}, write the path alone (http = \"/health\") and it is probed there"
                        )),
                    );
                }
            }
            return Some(Probe::Http {
                url: target.to_owned(),
            });
        }
        if target.starts_with("https://") {
            self.push(
                Problem::error(
                    "dagstart::config::health",
                    "https health checks are not supported",
                )
                .label(span, "https")
                .help("probe the plain-http port, or use a tcp probe"),
            );
            return None;
        }
        if !target.starts_with('/') {
            self.push(
                Problem::error(
                    "dagstart::config::health",
                    "`http` must be a path or an http:// URL",
                )
                .label(span, "neither a path nor a URL")
                .help("e.g. http = \"/health\" or http = \"http://127.0.0.1:8010/health\""),
            );
            return None;
        }
        match port {
            Some(port) => Some(Probe::Http {
                url: format!("http://localhost:{port}{target}"),
            }),
            None => {
                self.push(
                    Problem::error("dagstart::config::health", "`http` is a path but the service has no `port`")
                        .label(span, "which port?")
                        .help("add `port = 8010` to the service, or give a full URL like \"http://127.0.0.1:8010/health\""),
                );
                None
            }
        }
    }

    fn tcp_probe(&mut self, value: &Value<'_>, key_path: &str) -> Option<Probe> {
        if value.get_ref().is_integer() {
            let port = self.integer(value, "tcp", u64::from(u16::MAX))? as u16;
            return Some(Probe::Tcp {
                host: "localhost".into(),
                port,
            });
        }
        let text = self.string(value, key_path)?;
        if let Ok(port) = text.trim().parse::<u16>() {
            return Some(Probe::Tcp {
                host: "localhost".into(),
                port,
            });
        }
        let parsed = text.rsplit_once(':').and_then(|(host, port)| {
            Some((host.trim_matches(['[', ']']), port.parse::<u16>().ok()?))
        });
        match parsed {
            Some((host, port)) if !host.is_empty() => Some(Probe::Tcp {
                host: host.to_owned(),
                port,
            }),
            _ => {
                self.push(
                    Problem::error(
                        "dagstart::config::health",
                        "`tcp` must be a port or host:port",
                    )
                    .label(value.span(), "no port here")
                    .help("e.g. tcp = 8010 or tcp = \"127.0.0.1:8010\""),
                );
                None
            }
        }
    }

    // ----- checks across nodes ---------------------------------------------------------------

    /// Checks every node's name; returns where each name is declared (the last node, where
    /// two share one), which the dependencies are resolved with.
    fn check_names<'n>(&mut self, nodes: &'n [Node]) -> FastMap<&'n str, usize> {
        let mut index: FastMap<&str, usize> = FastMap::default();
        index.reserve(nodes.len());
        for (i, node) in nodes.iter().enumerate() {
            if !super::is_name(&node.name) {
                let suggestion: String = node
                    .name
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '-' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                self.push(
                    Problem::error(
                        "dagstart::config::name",
                        format!("invalid node name `{}`", node.name),
                    )
                    .label(
                        node.name_span.clone(),
                        "only letters, digits, `_` and `-` are allowed",
                    )
                    .help(format!("rename it, e.g. to `{suggestion}`")),
                );
            }
            if node.name == RESERVED_NAME {
                self.push(
                    Problem::error(
                        "dagstart::config::reserved_name",
                        "`dagstart` cannot name a node",
                    )
                    .label(
                        node.name_span.clone(),
                        "dagstart's own log is logs/dagstart.log",
                    )
                    .help("rename it, e.g. to `dagstart-app`"),
                );
            }
            if node.name.len() > MAX_NAME {
                self.push(
                    Problem::error(
                        "dagstart::config::name",
                        format!("a node name of {} characters", node.name.len()),
                    )
                    .label(
                        node.name_span.clone(),
                        format!("at most {MAX_NAME} characters (it names the node's log file)"),
                    ),
                );
            }
            if let Some(first) = index.insert(&node.name, i).map(|first| &nodes[first]) {
                self.same_kind_twice |= first.kind == node.kind;
                self.push(
                    Problem::error(
                        "dagstart::config::duplicate_name",
                        format!(
                            "`{}` is both a {} and a {}",
                            node.name,
                            first.kind.as_str(),
                            node.kind.as_str()
                        ),
                    )
                    .label(
                        first.name_span.clone(),
                        format!("declared as a {}", first.kind.as_str()),
                    )
                    .label(
                        node.name_span.clone(),
                        format!("and again as a {}", node.kind.as_str()),
                    )
                    .help("node names are shared by services and components; rename one"),
                );
            }
        }
        index
    }

    /// Points each node's declared dependencies at their nodes (found in `index`), checks them
    /// and settles their conditions; returns them in node order. Memory-bound (400,000 names
    /// looked up in 100,000): on two threads for a large file, with what a dependency needs of
    /// its target copied into one small table.
    fn resolve_dependencies(
        &mut self,
        nodes: &[Node],
        spans: &[NodeSpans],
        mut declared: Vec<Vec<Dependency>>,
        index: &FastMap<&str, usize>,
    ) -> Vec<Vec<Dependency>> {
        let targets: Vec<Target> = nodes.iter().map(Target::of).collect();
        let lookup = Lookup {
            index,
            targets: &targets,
        };
        if nodes.len() < TWO_THREADS_FROM {
            self.resolve_part(nodes, spans, &mut declared, &lookup);
            return declared;
        }
        let half = nodes.len() / 2;
        let (first, second) = declared.split_at_mut(half);
        self.on_two_threads(
            (&nodes[..half], &spans[..half], first),
            (&nodes[half..], &spans[half..], second),
            |loader, (nodes, spans, declared)| loader.resolve_part(nodes, spans, declared, &lookup),
        );
        declared
    }

    /// Resolves `declared`, the dependencies of `nodes`, in place: unknown and impossible ones
    /// are removed (and reported).
    fn resolve_part(
        &mut self,
        nodes: &[Node],
        spans: &[NodeSpans],
        declared: &mut [Vec<Dependency>],
        lookup: &Lookup<'_, '_>,
    ) {
        // Built at the first unknown name: grouping 100,000 names costs more than checking them.
        let mut suggestions: Option<Suggestions<'_>> = None;
        for ((node, node_spans), deps) in nodes.iter().zip(spans).zip(declared) {
            let mut explicit = node_spans.conditions.iter();
            deps.retain_mut(|dep| {
                let explicit = explicit.next().and_then(Option::as_ref);
                if dep.name == node.name {
                    self.push(self_dependency(node, dep));
                    return false;
                }
                let Some(&target) = lookup.index.get(dep.name.as_str()) else {
                    let suggestions = suggestions
                        .get_or_insert_with(|| Suggestions::new(lookup.index.keys().copied()));
                    self.push(unknown_dependency(node, dep, suggestions));
                    return false;
                };
                let Target { kind, has_sockets } = lookup.targets[target];
                match self.settle_condition(dep, kind, has_sockets, explicit) {
                    Some(condition) => {
                        dep.node = target;
                        dep.condition = condition;
                        true
                    }
                    None => false,
                }
            });
        }
    }

    /// The condition a dependency ends up with; `None` (and a problem) when it cannot hold.
    fn settle_condition(
        &mut self,
        dep: &Dependency,
        target_kind: NodeKind,
        target_has_sockets: bool,
        explicit: Option<&(Condition, Span)>,
    ) -> Option<Condition> {
        match (explicit, target_kind) {
            (Some((Condition::Listening, cond_span)), _) if !target_has_sockets => {
                self.push(
                    Problem::error(
                        "dagstart::config::condition",
                        format!("`{}` has no sockets to listen on", dep.name),
                    )
                    .label(cond_span.clone(), "`listening` needs socket activation")
                    .help(format!(
                        "add `sockets = [...]` to `{}`, or wait for \"healthy\"",
                        dep.name
                    )),
                );
                None
            }
            (Some((Condition::Completed, cond_span)), NodeKind::Service) => {
                self.push(
                    Problem::error(
                        "dagstart::config::condition",
                        format!("`{}` is a service; it never completes", dep.name),
                    )
                    .label(cond_span.clone(), "only components complete")
                    .help("use \"healthy\" (or \"started\") for a service"),
                );
                None
            }
            // A component's health is its successful exit.
            (Some((Condition::Healthy, _)) | None, NodeKind::Component) => {
                Some(Condition::Completed)
            }
            (Some((c, _)), _) => Some(*c),
            (None, NodeKind::Service) => Some(Condition::Healthy),
        }
    }

    fn check_ports(&mut self, nodes: &[Node], spans: &[NodeSpans]) {
        let mut owners: HashMap<u16, (&str, &Span)> = HashMap::new();
        for (node, node_spans) in nodes.iter().zip(spans) {
            let (Some(port), Some(span)) = (node.port, node_spans.port.as_ref()) else {
                continue;
            };
            if let Some((owner, owner_span)) = owners.get(&port) {
                self.push(
                    Problem::error(
                        "dagstart::config::port_clash",
                        format!("port {port} is declared twice"),
                    )
                    .label((*owner_span).clone(), format!("used by `{owner}`"))
                    .label(span.clone(), format!("and by `{}`", node.name))
                    .help("two services cannot listen on one port; give each its own"),
                );
            } else {
                owners.insert(port, (&node.name, span));
            }
        }
    }

    fn warn_required_on_optional(&mut self, nodes: &[Node]) {
        for node in nodes.iter().filter(|n| n.required) {
            for dep in node.depends_on.iter().filter(|d| d.required) {
                let opt = &nodes[dep.node];
                if !opt.required {
                    self.push(
                        Problem::warning(
                            "dagstart::config::required_on_optional",
                            format!(
                                "required `{}` depends on optional `{}`",
                                node.name, opt.name
                            ),
                        )
                        .label(
                            dep.span.clone(),
                            "if this fails, the required node is skipped and startup fails",
                        )
                        .help(format!(
                            "mark `{}` as `required = false` too, make `{}` required, or let \
                             `{}` go on without it: `{} = {{ required = false }}`",
                            node.name, opt.name, node.name, opt.name
                        )),
                    );
                }
            }
        }
    }
}

fn self_dependency(node: &Node, dep: &Dependency) -> Problem {
    Problem::error(
        "dagstart::config::self_dependency",
        format!("`{}` depends on itself", node.name),
    )
    .label(dep.span.clone(), "this entry")
    .help("remove it: a node cannot wait for itself")
}

fn unknown_dependency(node: &Node, dep: &Dependency, suggestions: &Suggestions<'_>) -> Problem {
    let problem = Problem::error(
        "dagstart::config::unknown_dependency",
        format!(
            "`{}` depends on `{}`, which is not declared",
            node.name, dep.name
        ),
    )
    .label(dep.span.clone(), "no service or component has this name");
    match suggestions.for_name(&dep.name) {
        Some(s) => problem.help(format!("did you mean `{s}`?")),
        None => problem.help("declare it under [services] or [components], or remove the entry"),
    }
}

/// The declared names, grouped by first character, for "did you mean": a typo rarely changes
/// the first character, and a file with thousands of unknown names must not compare each with
/// every declared name (at most [`Suggestions::MAX_COMPARED`] comparisons per name).
struct Suggestions<'a> {
    by_first: HashMap<char, Vec<&'a str>>,
}

impl<'a> Suggestions<'a> {
    const MAX_COMPARED: usize = 1000;

    fn new(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut by_first: HashMap<char, Vec<&'a str>> = HashMap::new();
        for name in names {
            if let Some(first) = name.chars().next() {
                by_first.entry(first).or_default().push(name);
            }
        }
        for names in by_first.values_mut() {
            names.sort_unstable();
        }
        Self { by_first }
    }

    fn for_name(&self, name: &str) -> Option<&'a str> {
        let first = name.chars().next()?;
        let candidates = self.by_first.get(&first)?;
        did_you_mean(name, candidates.iter().take(Self::MAX_COMPARED).copied())
    }
}

/// Runs `work` while `garbage` is freed, on another thread where it is `large`.
fn freed_beside<G: Send, R>(garbage: G, large: bool, work: impl FnOnce() -> R) -> R {
    if !large {
        drop(garbage);
        return work();
    }
    parallel::join(work, move || drop(garbage)).0
}

/// Where a dependency's name leads, for [`Loader::resolve_dependencies`].
struct Lookup<'a, 'n> {
    index: &'a FastMap<&'n str, usize>,
    targets: &'a [Target],
}

/// What resolving a dependency needs to know of the node it names.
#[derive(Clone, Copy)]
struct Target {
    kind: NodeKind,
    has_sockets: bool,
}

impl Target {
    fn of(node: &Node) -> Self {
        Self {
            kind: node.kind,
            has_sockets: !node.sockets.is_empty(),
        }
    }
}

/// A dependency entry before it is resolved: its index and final condition come later.
/// One `depends_on` entry as written, before it is resolved against the other nodes.
struct Entry {
    dep: Dependency,
    /// The condition, where one was written, and where.
    condition: Option<(Condition, Span)>,
    /// `restart`, where it was written; otherwise the node's `restart_with_dependency`.
    restart: Option<bool>,
    /// `required`, where it was written; otherwise the node's own `required`.
    required: Option<bool>,
}

impl Entry {
    fn new(name: String, span: Span) -> Self {
        Self {
            dep: Dependency {
                name,
                node: usize::MAX,
                span,
                condition: Condition::Healthy,
                required: true,
                restart: false,
                milestone: false,
            },
            condition: None,
            restart: None,
            required: None,
        }
    }
}

fn expand_problem(error: ExpandError, span: Span) -> Problem {
    match error {
        ExpandError::Required { var, message } => Problem::error(
            "dagstart::config::required_variable",
            format!("environment variable {var} is not set"),
        )
        .label(
            span,
            if message.is_empty() {
                format!("needs {var}")
            } else {
                message
            },
        )
        .help(format!(
            "set {var} in the environment or in .env beside services.toml"
        )),
        ExpandError::Unclosed => {
            Problem::error("dagstart::config::interpolation", "`${` is never closed")
                .label(span, "missing `}`")
                .help("write `$$` for a literal dollar sign")
        }
        ExpandError::BadName(name) => Problem::error(
            "dagstart::config::interpolation",
            format!("`${{{name}}}` is not a variable reference"),
        )
        .label(span, "variable names use letters, digits and `_`")
        .help("write `$$` for a literal dollar sign"),
    }
}

/// `base` joined with `rel`, without `.` components.
fn join_clean(base: &Path, rel: &Path) -> PathBuf {
    base.join(rel).components().collect()
}

fn leaf(key_path: &str) -> &str {
    key_path.rsplit('.').next().unwrap_or(key_path)
}

fn article(type_name: &str) -> String {
    match type_name.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {type_name}"),
        _ => format!("a {type_name}"),
    }
}

fn first_line(text: &str) -> String {
    text.lines().last().unwrap_or(text).trim().to_owned()
}

/// The name no node may have: dagstart's own log would be its log.
const RESERVED_NAME: &str = "dagstart";
/// The longest node name: `<name>.log` must be a valid file name everywhere.
pub(crate) const MAX_NAME: usize = 128;
/// The longest duration: longer ones are mistakes, and deadlines must not overflow the clock.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// The largest services.toml or env file read: a bigger one (or `/dev/zero`) is a mistake.
pub(crate) const MAX_FILE: u64 = 256 << 20;

pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim()).map_err(|e| e.to_string())?;
    if duration > MAX_DURATION {
        return Err("durations are at most 100 years".into());
    }
    Ok(duration)
}

/// The port of an `http://host[:port]/...` URL (80 when it names none).
fn url_port(url: &str) -> Option<u16> {
    let authority = url.strip_prefix("http://")?.split('/').next()?;
    let host_port = authority.rsplit('@').next()?;
    match host_port.rsplit_once(':') {
        // An IPv6 literal without a port ends with `]`.
        Some((_, port)) if !port.ends_with(']') => port.parse().ok(),
        _ => Some(80),
    }
}

/// "500KB", "64MiB", "1GiB" (KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024); at least 1 KiB.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| "expected a number and a unit".to_owned())?;
    let scale: u64 = match unit.trim() {
        "B" => 1,
        "KB" => 1000,
        "MB" => 1000 * 1000,
        "GB" => 1000 * 1000 * 1000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "" => return Err("a size needs a unit (B, KB, MB, GB, KiB, MiB, GiB)".into()),
        other => return Err(format!("unknown unit `{other}`")),
    };
    let size = number
        .checked_mul(scale)
        .ok_or_else(|| "too large".to_owned())?;
    if size < 1024 {
        return Err("at least 1KiB".into());
    }
    Ok(size)
}

/// A file to read as configuration: a regular file of at most [`MAX_FILE`] bytes (a FIFO or a
/// device would hang the read, or never end).
fn check_readable(path: &Path) -> std::io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    if meta.len() > MAX_FILE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("larger than {} MiB", MAX_FILE >> 20),
        ));
    }
    Ok(())
}

pub(crate) fn parse_bool(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

fn parse_max_workers(text: &str) -> Result<MaxWorkers, String> {
    match text {
        "auto" => Ok(MaxWorkers::Auto),
        "unlimited" | "none" => Ok(MaxWorkers::Unlimited),
        _ => match text.parse::<usize>() {
            Ok(0) => Err("0 would start nothing".into()),
            Ok(n) => Ok(MaxWorkers::Fixed(n)),
            Err(_) => Err("expected a number of workers or \"auto\"".into()),
        },
    }
}

/// `IP:PORT`, `[IPv6]:PORT`, `localhost:PORT`, a bare port (loopback), or `unix:PATH`
/// (relative to services.toml).
fn parse_socket(text: &str, base_dir: &Path) -> Option<SocketAddress> {
    let text = text.trim();
    if let Some(path) = text.strip_prefix("unix:") {
        return (!path.is_empty())
            .then(|| SocketAddress::Unix(join_clean(base_dir, Path::new(path))));
    }
    if let Ok(port) = text.parse::<u16>() {
        return Some(SocketAddress::Tcp(([127, 0, 0, 1], port).into()));
    }
    if let Some(port) = text.strip_prefix("localhost:") {
        return Some(SocketAddress::Tcp(
            ([127, 0, 0, 1], port.parse().ok()?).into(),
        ));
    }
    text.parse().ok().map(SocketAddress::Tcp)
}

fn parse_signal(text: &str) -> Option<Signal> {
    let upper = text.trim().to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse::tests::nodes;
    use super::*;

    /// Loads `text` whole and cut into pieces of about `piece_bytes`: both must give the same
    /// configuration, or the same problems, spans and order included. Returns whether the
    /// pieces were kept (rather than the file read whole after all).
    fn same_in_pieces(text: &str, piece_bytes: usize) -> bool {
        let path = Path::new("/nonexistent/services.toml");
        let env = Environment::default();
        let cutting = |from_bytes| parse::Cutting {
            from_bytes,
            piece_bytes,
        };
        let load = |from_bytes| {
            format!(
                "{:?}",
                load_cut(path, text.to_owned(), &env, cutting(from_bytes))
            )
        };
        assert_eq!(load(0), load(usize::MAX), "not the same for:\n{text}");
        let base_dir = PathBuf::from("/nonexistent");
        read_in_pieces(base_dir, &env, text, cutting(0), &mut Vec::new()).is_some()
    }

    /// How many of two ways to cut `text` are kept: a piece for every node, and two pieces.
    fn kept_cuts(text: &str) -> usize {
        [1, text.len() / 2]
            .into_iter()
            .filter(|&piece_bytes| same_in_pieces(text, piece_bytes))
            .count()
    }

    #[test]
    fn room_that_cannot_be_reserved_is_not_asked_for() {
        for read in NodesRead::by_kind_with_room(usize::MAX / 2) {
            assert_eq!(read.nodes.capacity(), 0);
        }
    }

    #[test]
    fn plain_nodes_are_read_in_pieces() {
        let text = format!(
            "[settings]\nstartup_timeout = \"5s\"\n\n{}{}{}",
            nodes("services", 0..20),
            nodes("components", 20..40),
            nodes("services", 40..60),
        );
        assert_eq!(kept_cuts(&text), 2);
        let text = format!("{}{}", nodes("services", 0..5), nodes("components", 5..60));
        assert_eq!(kept_cuts(&text), 2);
    }

    #[test]
    fn the_file_is_read_whole_where_the_pieces_could_disagree() {
        let cases = [
            // the same node in two pieces
            format!("{}{}", nodes("services", 0..30), nodes("services", 0..30)),
            // a cut inside a multi-line string
            format!(
                "{}[services.s]\ncommand = '''\n{}'''\n",
                nodes("services", 0..2),
                nodes("services", 10..60)
            ),
            // an explicit [services] header in a later piece
            format!(
                "{}[services]\nx = 1\n{}",
                nodes("services", 0..30),
                nodes("services", 30..40)
            ),
            // a table of its own in a later piece
            format!("{}[settings]\nx = 1\n", nodes("services", 0..60)),
            // an inline table cannot be extended
            format!(
                "services = {{ a = {{ command = \"x\" }} }}\n\n{}",
                nodes("services", 0..60)
            ),
            // a sub-table of a node of an earlier piece
            format!("{}[services.n1.env]\nA = \"1\"\n", nodes("services", 0..60)),
            // a syntax error in any piece
            format!("x = \n{}", nodes("services", 0..60)),
            format!("{}x = [\n", nodes("services", 0..60)),
        ];
        for text in &cases {
            assert_eq!(kept_cuts(text), 0, "pieces were kept for:\n{text}");
        }
    }

    #[test]
    fn dotted_keys_and_sub_tables_read_in_pieces_like_the_whole() {
        // The sub-table follows its node, in the same piece however the file is cut.
        let text = format!(
            "services.a.command = \"x\"\n\n{}[services.n59.env]\nA = \"1\"\n",
            nodes("services", 0..60)
        );
        assert_eq!(kept_cuts(&text), 2);
    }

    /// Files assembled from random pieces, most of them new nodes, some of them each construct
    /// above: pieces that are kept always read as the whole file. Prints the failing seed.
    #[test]
    fn random_files_read_in_pieces_as_the_whole() {
        let nodes = [
            "[services.NAME]\ncommand = \"x\"\n",
            "[services.NAME]\ncommand = \"y\"\ndepends_on = [\n\"n1\",\n]\n",
            "[components.NAME]\ncommand = 'z'\nbad_key = 1\n",
            "[components.NAME]\ncommand = 'z'\ndepends_on = [\"n2\"]\n",
            "[services.NAME]\ncommand = \"v\"\n[services.NAME.env]\nK = \"v\"\n",
            "[services.\"NAME.k\"]\ncommand = \"u\"\n",
            "services.NAME.command = \"w\"\n",
            "[services.NAME]\ncommand = \"t\"\ndepends_on = [\"n3\"]\nport = 80\n",
        ];
        let others = [
            "[services]\n",
            "[components]\n",
            "[settings]\nlog_level = \"info\"\n",
            "services = { f = {} }\n",
            "x = \"\"\"\n[services.g]\n\"\"\"\n",
            "# [services.h]\n",
            "\n",
            "[services.a.env]\nK = \"v\"\n",
            "[[services.n7]]\nx = 1\n",
            "bad = \n",
        ];
        let mut kept = 0;
        for seed in 0..300u64 {
            let mut rng = crate::synth::Rng::new(seed + 1);
            let mut next = |n: usize| rng.below(n);
            let mut text = String::new();
            for i in 0..next(40) {
                if next(8) == 0 {
                    text.push_str(others[next(others.len())]);
                } else {
                    // Now and then a name used before.
                    let name = format!("n{}", if next(10) == 0 { next(i + 1) } else { i });
                    text.push_str(&nodes[next(nodes.len())].replace("NAME", &name));
                }
            }
            match std::panic::catch_unwind(|| kept_cuts(&text)) {
                Ok(0) => {}
                Ok(_) => kept += 1,
                Err(_) => panic!("seed {seed} failed"),
            }
        }
        assert!(
            kept > 60,
            "only {kept} of 300 files were kept in pieces: the test proves little"
        );
    }
}
