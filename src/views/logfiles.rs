//! The log thread: the one durable subscriber of the events.
//!
//! Every node line goes, whole and stamped with when it arrived (`line_stamp`), to
//! `<log_dir>/<node>.log` (the last run's file is kept as `<node>.log.1`); dagstart's own
//! events go, timestamped, to `<log_dir>/dagstart.log`; every event but output lines is
//! appended to the run record (`.dagstart/runs/<id>.jsonl`) as it happens; the dashboard is fed
//! too. Then each event is offered to the terminal thread ([`crate::views::terminal`]), which may fall
//! behind without holding this thread up. This thread waits only for the disk.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::engine::config::{Config, NodeKind};
use crate::engine::event::{Event, EventKind, EventStream};
use crate::engine::record::EventRecord;
use crate::views::report;
use crate::views::terminal::{Terminal, TerminalFeed, ToTerminal};

/// How long the terminal gets, at the end of a run, to take what it has not shown yet.
const TERMINAL_GRACE: Duration = Duration::from_secs(2);

/// A run's output, ready to start: the log thread's sinks and the terminal.
pub struct Output {
    sinks: Sinks,
    terminal: Terminal,
}

/// Everything the log thread writes to.
struct Sinks {
    config: Arc<Config>,
    node_logs: NodeLogs,
    own_log: BufWriter<File>,
    /// The web dashboard, fed every event.
    dashboard: Option<Arc<crate::views::dashboard::Dashboard>>,
    /// The run record, appended as events happen.
    recorder: Option<crate::views::history::Recorder>,
    /// `--output json`: the terminal wants every event as a record, output lines too.
    json: bool,
    /// Tells the engine that a node's output is being lost; false once it no longer listens.
    lost: Option<OutputLostHook>,
    /// The wall-clock time of the run's start: event times are relative to it.
    started: SystemTime,
}

/// How the log thread tells the engine that a node's output could not be kept: the engine
/// then says so in its events (and `status`), like everything else it knows.
pub type OutputLostHook = Box<dyn Fn(usize, String) -> bool + Send>;

/// The two threads of a run's output; [`OutputThreads::join`] waits until they are done.
pub struct OutputThreads {
    log: std::thread::JoinHandle<()>,
    terminal_done: std::sync::mpsc::Receiver<()>,
}

impl OutputThreads {
    /// Waits for the log files (always) and for the terminal (as long as it keeps reading:
    /// a terminal that never reads again must not keep dagstart from exiting).
    pub fn join(self) {
        let _ = self.log.join();
        let _ = self.terminal_done.recv_timeout(TERMINAL_GRACE);
    }
}

impl Output {
    /// Creates the log directory, truncates the log files of the `selected` nodes and starts
    /// the run record.
    pub fn open(config: Arc<Config>, selected: &[bool], json: bool) -> io::Result<Self> {
        let dir = &config.settings.log_dir;
        super::private::create_dir(dir)?;
        let node_logs = NodeLogs::create(&config, selected)?;
        let own_path = dir.join("dagstart.log");
        shift_numbered(&own_path, config.settings.log_keep);
        let mut own_log = create(&own_path)?;
        let recorder = crate::views::history::Recorder::create(&config, SystemTime::now())
            .inspect_err(|e| {
                let _ = writeln!(own_log, "cannot record the run in the history: {e}");
            })
            .ok();
        Ok(Self {
            terminal: Terminal::new(config.clone(), selected, json),
            sinks: Sinks {
                config,
                node_logs,
                own_log,
                dashboard: None,
                recorder,
                json,
                lost: None,
                started: SystemTime::now(),
            },
        })
    }

    /// Nothing on the terminal (`run --ui`: the terminal UI has it); the log files, the record
    /// and the dashboard get everything as before.
    pub fn without_terminal(mut self) -> Self {
        self.terminal.silence();
        self
    }

    /// Consumes events on threads of their own; join the result to know all output is written.
    pub fn spawn(self, mut events: EventStream) -> io::Result<OutputThreads> {
        let (feed, terminal_done) = self.terminal.spawn()?;
        let mut log = LogThread {
            sinks: self.sinks,
            feed,
            last_at: Duration::ZERO,
            stamp: (u128::MAX, String::new()),
        };
        let handle = std::thread::Builder::new()
            .name("dagstart-log".into())
            .spawn(move || {
                // The run ends with ShutdownComplete; senders that outlive it (the notify
                // socket, readers of processes that escaped their group) must not keep us.
                let mut done = false;
                while !done {
                    let Some(event) = events.blocking_recv() else {
                        break;
                    };
                    done = log.write_last(event);
                    // Batch whatever else is queued, then flush once.
                    while !done {
                        let Some(event) = events.try_recv() else {
                            break;
                        };
                        done = log.write_last(event);
                    }
                    log.flush();
                }
                log.finish();
            })?;
        Ok(OutputThreads {
            log: handle,
            terminal_done,
        })
    }

    /// Tells `hook` when a node's log cannot be written.
    pub fn on_output_lost(mut self, hook: OutputLostHook) -> Self {
        self.sinks.lost = Some(hook);
        self
    }

    /// Feeds every event to `dashboard` too.
    pub fn with_dashboard(mut self, dashboard: Arc<crate::views::dashboard::Dashboard>) -> Self {
        self.sinks.dashboard = Some(dashboard);
        self
    }
}

struct LogThread {
    sinks: Sinks,
    feed: TerminalFeed,
    /// Run time of the latest event, for what the log thread says itself.
    last_at: Duration,
    /// The stamp of the latest output line and its millisecond: a flood of lines shares a
    /// few stamps, so each is formatted once, not once per line.
    stamp: (u128, String),
}

impl LogThread {
    /// Writes `event` everywhere; true when it is the run's last one.
    fn write_last(&mut self, event: Event) -> bool {
        self.last_at = event.at;
        self.write(&event);
        let is_output = matches!(event.kind, EventKind::Output { .. });
        // Output lines are the bulk of the events: only the dashboard (and the terminal with
        // `--output json`) need them as records.
        let record = if !is_output || self.sinks.dashboard.is_some() || self.sinks.json {
            EventRecord::of(&self.sinks.config, &event)
        } else {
            None
        };
        if let (Some(dashboard), Some(record)) = (&self.sinks.dashboard, &record) {
            dashboard.observe(record);
        }
        if let (false, Some(recorder), Some(record)) =
            (is_output, &mut self.sinks.recorder, &record)
        {
            recorder.event(record);
        }
        let last = matches!(event.kind, EventKind::ShutdownComplete { .. });
        self.feed.offer(ToTerminal::Event(event, record));
        last
    }

    /// A node's log cannot be written: told to the engine, which publishes it as an event
    /// that comes back here; told directly once the engine no longer listens (at the end).
    fn output_lost(&mut self, n: usize, at: Duration, text: String) {
        if let Some(hook) = &self.sinks.lost {
            if hook(n, text.clone()) {
                return;
            }
        }
        self.tell(n, at, text);
    }

    /// A problem with the log files themselves: in dagstart.log and on the terminal, once.
    fn tell(&mut self, n: usize, at: Duration, text: String) {
        let stamp = humantime::format_rfc3339_millis(SystemTime::now());
        let _ = writeln!(
            self.sinks.own_log,
            "{stamp} +{:.3}s {text}",
            at.as_secs_f64()
        );
        let event = Event {
            at,
            node: Some(n),
            state: None,
            kind: EventKind::note(text),
        };
        let record = EventRecord::of(&self.sinks.config, &event);
        self.feed.offer(ToTerminal::Event(event, record));
    }

    fn flush(&mut self) {
        let _ = self.sinks.own_log.flush();
        for (n, text) in self.sinks.node_logs.flush() {
            self.output_lost(n, self.last_at, text);
        }
        if let Some(recorder) = &mut self.sinks.recorder {
            recorder.flush();
        }
        self.feed.flush_backlog();
    }

    fn finish(mut self) {
        if self.feed.total_dropped > 0 {
            let _ = writeln!(
                self.sinks.own_log,
                "the terminal did not keep up: {} output lines were not shown there (all are in the node logs)",
                self.feed.total_dropped
            );
        }
        self.flush();
        self.feed.finish(std::time::Instant::now() + TERMINAL_GRACE);
    }

    /// After a reload: the new names, and log files for the nodes that were added.
    fn apply_reload(&mut self, config: &Arc<Config>) {
        self.sinks.node_logs.add(config);
        if let Some(recorder) = &mut self.sinks.recorder {
            recorder.nodes(config);
        }
        self.sinks.config = config.clone();
    }

    fn write(&mut self, event: &Event) {
        if let EventKind::Reloaded(config) = &event.kind {
            return self.apply_reload(config);
        }
        if let (Some(n), EventKind::Output { line, .. }) = (event.node, &event.kind) {
            let millis = event.at.as_millis();
            if self.stamp.0 != millis {
                self.stamp = (millis, line_stamp(self.sinks.started + event.at));
            }
            if let Some(problem) = self.sinks.node_logs.write(n, &self.stamp.1, line) {
                self.output_lost(n, event.at, problem);
            }
            return;
        }
        let Some(text) = describe(&self.sinks.config, event) else {
            return;
        };
        let stamp = humantime::format_rfc3339_millis(SystemTime::now());
        for line in text.lines() {
            let _ = writeln!(
                self.sinks.own_log,
                "{stamp} +{:.3}s {line}",
                event.at.as_secs_f64()
            );
        }
    }
}

/// The text of an event for people: the terminal and dagstart.log.
pub fn describe(config: &Config, event: &Event) -> Option<String> {
    let name = event
        .node
        .map(|n| config.nodes[n].name.as_str())
        .unwrap_or_default();
    let is_component = event
        .node
        .is_some_and(|n| config.nodes[n].kind == NodeKind::Component);
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
        EventKind::Ready { took, .. } if is_component => {
            format!("{name}: completed after {}", secs(*took))
        }
        EventKind::Ready {
            took, probes: 0, ..
        } => format!("{name}: ready after {}", secs(*took)),
        EventKind::Ready {
            took,
            probes,
            probe_time,
        } => format!(
            "{name}: ready after {} ({probes} {}, {} ms in them)",
            secs(*took),
            if *probes == 1 { "probe" } else { "probes" },
            probe_time.as_millis()
        ),
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
        EventKind::Probe { result } => format!("{name}: not ready yet: {result}"),
        EventKind::StartupComplete(summary) => report::render(config, summary),
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
        EventKind::Note { text } => text.clone(),
        EventKind::OutputLost { reason } => format!("{name}: output lost: {reason}"),
        EventKind::Reloaded(_) | EventKind::Dropped { .. } => return None,
    };
    Some(text)
}

/// The `<node>.log` files. Each is created (truncated) when the run starts and rotated when
/// it reaches `settings.log_max_size` (`<node>.log.1` is the newest of `settings.log_keep` old
/// ones). At most `OPEN_LOGS` stay open at once: the one opened longest ago is closed to make
/// room and opened again for appending when its node prints again, so a stack of thousands of
/// services does not spend a descriptor per node on its log. A write that fails (a full disk)
/// is reported once per node, and the run goes on.
struct NodeLogs {
    logs: Vec<Option<NodeLog>>,
    open: std::collections::HashMap<usize, BufWriter<File>>,
    /// Open files, oldest first.
    order: std::collections::VecDeque<usize>,
}

struct NodeLog {
    path: std::path::PathBuf,
    /// The node's rotation: its own settings, or `[settings]`'s.
    max_size: u64,
    keep: u32,
    /// Bytes in the current file.
    written: u64,
    /// A write failed and was reported.
    failed: bool,
    /// The file of this run (or of this rotation) exists: it is created at the node's first
    /// line, so that a stack of thousands of quiet nodes does not create thousands of files
    /// before anything starts (5,000 nodes: a second on ext4).
    created: bool,
}

const OPEN_LOGS: usize = 256;

impl NodeLogs {
    fn create(config: &Config, selected: &[bool]) -> io::Result<Self> {
        let mut logs = Self {
            logs: Vec::new(),
            open: std::collections::HashMap::new(),
            order: std::collections::VecDeque::new(),
        };
        for (node, &on) in config.nodes.iter().zip(selected) {
            logs.push(config, node, on)?;
        }
        Ok(logs)
    }

    fn push(
        &mut self,
        config: &Config,
        node: &crate::engine::config::Node,
        on: bool,
    ) -> io::Result<()> {
        let path = on.then(|| config.settings.log_dir.join(format!("{}.log", node.name)));
        let keep = node.log_keep.unwrap_or(config.settings.log_keep);
        if let Some(path) = &path {
            // The last run's log is kept as `<node>.log.1` (a new run starts a new file, at
            // its first line).
            shift_numbered(path, keep);
        }
        self.logs.push(path.map(|path| NodeLog {
            path,
            max_size: node.log_max_size.unwrap_or(config.settings.log_max_size),
            keep,
            written: 0,
            failed: false,
            created: false,
        }));
        Ok(())
    }

    /// After a reload: log files for the nodes that were added.
    fn add(&mut self, config: &Config) {
        for node in config.nodes.iter().skip(self.logs.len()) {
            if self.push(config, node, true).is_err() {
                self.logs.push(None);
            }
        }
    }

    /// Appends `line`, stamped with `stamp`, to node `n`'s log; the text of a failure not
    /// reported before.
    fn write(&mut self, n: usize, stamp: &str, line: &str) -> Option<String> {
        let len = (stamp.len() + 1 + line.len()) as u64 + 1;
        let log = self.logs.get(n)?.as_ref()?;
        if log.written > 0 && log.written + len > log.max_size {
            if let Err(e) = self.rotate(n) {
                return self.failed(n, &e);
            }
        }
        let result = self
            .handle(n)
            .and_then(|file| writeln!(file, "{stamp} {line}"));
        match result {
            Ok(()) => {
                if let Some(Some(log)) = self.logs.get_mut(n) {
                    log.written += len;
                }
                None
            }
            Err(e) => self.failed(n, &e),
        }
    }

    /// The open file of node `n`, opening it (and closing the oldest) as needed.
    fn handle(&mut self, n: usize) -> io::Result<&mut BufWriter<File>> {
        if !self.open.contains_key(&n) {
            let log = self.logs[n].as_mut().expect("a node with a log");
            let file = if log.created {
                File::options().append(true).open(&log.path)?
            } else {
                let file = super::private::create_file(&log.path)?;
                log.created = true;
                file
            };
            if self.order.len() == OPEN_LOGS {
                if let Some(mut oldest) = self.order.pop_front().and_then(|o| self.open.remove(&o))
                {
                    let _ = oldest.flush();
                }
            }
            self.open.insert(n, BufWriter::new(file));
            self.order.push_back(n);
        }
        Ok(self.open.get_mut(&n).expect("just opened"))
    }

    /// `<node>.log` becomes `<node>.log.1`, `.1` becomes `.2`, ... up to `keep`.
    fn rotate(&mut self, n: usize) -> io::Result<()> {
        if let Some(mut file) = self.open.remove(&n) {
            file.flush()?;
            self.order.retain(|&o| o != n);
        }
        let log = self.logs[n].as_mut().expect("a node with a log");
        shift_numbered(&log.path, log.keep);
        log.created = false;
        log.written = 0;
        Ok(())
    }

    fn failed(&mut self, n: usize, error: &io::Error) -> Option<String> {
        let log = self.logs.get_mut(n)?.as_mut()?;
        if std::mem::replace(&mut log.failed, true) {
            return None;
        }
        Some(format!(
            "cannot write {}: {error}; its lines still reach the terminal",
            log.path.display()
        ))
    }

    /// Flushes every open log; the failures not reported before.
    fn flush(&mut self) -> Vec<(usize, String)> {
        let mut errors = Vec::new();
        for (&n, log) in &mut self.open {
            if let Err(e) = log.flush() {
                errors.push((n, e));
            }
        }
        errors
            .into_iter()
            .filter_map(|(n, e)| self.failed(n, &e).map(|text| (n, text)))
            .collect()
    }
}

/// `<path>` becomes `<path>.1`, `.1` becomes `.2`, ... up to `keep` (the oldest is dropped);
/// with `keep = 0` nothing is kept. Used when a log reaches its size and when a new run starts.
fn shift_numbered(path: &Path, keep: u32) {
    let numbered = |k: u32| {
        let mut name = path.to_path_buf().into_os_string();
        name.push(format!(".{k}"));
        std::path::PathBuf::from(name)
    };
    // Nothing to keep (a new project, a node that printed nothing last time): one stat
    // instead of `keep` renames.
    if std::fs::symlink_metadata(path).is_err() {
        return;
    }
    if keep == 0 {
        let _ = std::fs::remove_file(path);
        return;
    }
    for k in (1..keep).rev() {
        let _ = std::fs::rename(numbered(k), numbered(k + 1));
    }
    let _ = std::fs::rename(path, numbered(1));
}

/// The stamp of every line of a node log: when dagstart received it, RFC 3339 in UTC to the
/// millisecond (24 bytes, so `dagstart logs` can merge files by time and strip it).
pub fn line_stamp(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// A node log line split into its stamp and the line as the node printed it; lines of logs
/// written before stamps were added have none.
pub fn split_stamp(line: &str) -> (Option<&str>, &str) {
    const STAMP: usize = "2026-01-01T00:00:00.000Z".len();
    match (line.get(..STAMP), line.get(STAMP..STAMP + 1)) {
        (Some(stamp), Some(" "))
            if stamp.ends_with('Z') && stamp.as_bytes().get(10) == Some(&b'T') =>
        {
            (Some(stamp), &line[STAMP + 1..])
        }
        _ => (None, line),
    }
}

fn secs(d: Duration) -> String {
    report::seconds(d)
}

fn create(path: &Path) -> io::Result<BufWriter<File>> {
    super::private::create_file(path).map(BufWriter::new)
}

/// The whole lines written to the log file at `path` after byte `offset`, and where the last
/// of them ends (a partial line waits for its end). A file shorter than `offset` was begun
/// again by a new run: it is read from its start.
pub fn lines_since(path: &Path, offset: u64) -> (Vec<String>, u64) {
    use std::io::Seek as _;
    let Ok(mut file) = std::fs::File::open(path) else {
        return (Vec::new(), offset);
    };
    let len = file.metadata().map_or(0, |m| m.len());
    let mut end = if len < offset { 0 } else { offset };
    if file.seek(std::io::SeekFrom::Start(end)).is_err() {
        return (Vec::new(), offset);
    }
    let mut lines = Vec::new();
    for line in whole_lines(file) {
        end += line.len() as u64;
        lines.push(text_of(&line));
    }
    (lines, end)
}

/// The last `n` lines of the log file at `path` (none if it cannot be read), and where the
/// file ended: `dagstart logs` follows from there.
pub fn last_lines(path: &Path, n: usize) -> (Vec<String>, u64) {
    let Ok(file) = std::fs::File::open(path) else {
        return (Vec::new(), 0);
    };
    let mut lines = std::collections::VecDeque::with_capacity(n + 1);
    let mut end = 0;
    for line in whole_lines(file) {
        end += line.len() as u64;
        if lines.len() == n {
            lines.pop_front();
        }
        if n > 0 {
            lines.push_back(text_of(&line));
        }
    }
    (lines.into(), end)
}

/// Each whole line of `file` from where it stands, with its line ending; a partial last line
/// waits for its end (it is not read).
fn whole_lines(file: File) -> impl Iterator<Item = Vec<u8>> {
    let mut reader = io::BufReader::new(file);
    std::iter::from_fn(move || {
        let mut buf = Vec::new();
        match io::BufRead::read_until(&mut reader, b'\n', &mut buf) {
            Ok(_) if buf.ends_with(b"\n") => Some(buf),
            _ => None,
        }
    })
}

/// A log line as text, without its line ending.
fn text_of(line: &[u8]) -> String {
    String::from_utf8_lossy(line)
        .trim_end_matches(['\n', '\r'])
        .to_owned()
}
