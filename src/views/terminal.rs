//! The terminal: node lines prefixed with their name, dagstart's own events, the live view,
//! or one JSON object per event with `--output json`.
//!
//! It runs on a thread of its own fed through a bounded queue by the log thread
//! ([`crate::views::logfiles`]), so a terminal that stops reading (`dagstart run | less`, paused; Ctrl-S)
//! slows nothing and grows nothing: when the queue is full, output lines are dropped and
//! counted, lifecycle events wait in a bounded backlog, and the terminal is told how much it
//! missed as soon as it reads again. The log files always get everything.

use std::collections::VecDeque;
use std::io::{self, BufWriter, IsTerminal as _, Write};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use crate::engine::config::Config;
use crate::engine::event::{Event, EventKind};
use crate::engine::record::EventRecord;

/// Messages queued for the terminal at most.
const QUEUE: usize = 1024;
/// Lifecycle events kept waiting while the queue is full; past this the oldest are dropped.
const BACKLOG: usize = 65_536;

const COLOURS: [u8; 6] = [36, 33, 32, 35, 34, 31];
pub(crate) const OWN_NAME: &str = "dagstart";

/// What the log thread hands the terminal.
// Nearly every message is an event; boxing it to shrink the rare `Dropped` would allocate once
// more for every output line.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum ToTerminal {
    /// An event, with its record when that was made already.
    Event(Event, Option<EventRecord>),
    /// The terminal could not keep up: this much was not shown.
    Dropped { lines: u64, events: u64 },
}

/// The log thread's end: never blocks.
#[derive(Debug)]
pub struct TerminalFeed {
    tx: SyncSender<ToTerminal>,
    backlog: VecDeque<ToTerminal>,
    dropped_lines: u64,
    dropped_events: u64,
    /// Lines not shown in the whole run, for dagstart.log.
    pub total_dropped: u64,
}

impl TerminalFeed {
    /// Offers one message; drops it (output lines) or keeps it back (lifecycle events) when
    /// the terminal is behind.
    pub fn offer(&mut self, msg: ToTerminal) {
        self.flush_backlog();
        let msg = if self.backlog.is_empty() {
            match self.try_send(msg) {
                Ok(()) => return,
                Err(msg) => *msg,
            }
        } else {
            msg
        };
        match &msg {
            ToTerminal::Event(
                Event {
                    kind: EventKind::Output { .. },
                    ..
                },
                _,
            ) => {
                self.dropped_lines += 1;
                self.total_dropped += 1;
            }
            _ => {
                if self.backlog.len() == BACKLOG {
                    self.backlog.pop_front();
                    self.dropped_events += 1;
                }
                self.backlog.push_back(msg);
            }
        }
    }

    /// Sends what waits, in order, as far as the queue has room.
    pub fn flush_backlog(&mut self) {
        while let Some(msg) = self.backlog.pop_front() {
            if let Err(msg) = self.try_send(msg) {
                self.backlog.push_front(*msg);
                return;
            }
        }
    }

    /// Sends `msg`, after telling what was dropped before it; gives it back when full.
    fn try_send(&mut self, msg: ToTerminal) -> Result<(), Box<ToTerminal>> {
        if self.dropped_lines + self.dropped_events > 0 {
            let notice = ToTerminal::Dropped {
                lines: self.dropped_lines,
                events: self.dropped_events,
            };
            match self.tx.try_send(notice) {
                Ok(()) => (self.dropped_lines, self.dropped_events) = (0, 0),
                Err(TrySendError::Full(_)) => return Err(Box::new(msg)),
                Err(TrySendError::Disconnected(_)) => return Ok(()),
            }
        }
        match self.tx.try_send(msg) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => Ok(()),
            Err(TrySendError::Full(msg)) => Err(Box::new(msg)),
        }
    }

    /// At the end of the run: gives the terminal until `deadline` to take the backlog.
    pub fn finish(mut self, deadline: std::time::Instant) {
        while !self.backlog.is_empty() && std::time::Instant::now() < deadline {
            self.flush_backlog();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

/// The terminal thread's state.
pub struct Terminal {
    config: Arc<Config>,
    colour: bool,
    width: usize,
    out: BufWriter<io::Stdout>,
    /// `--output json`: one JSON object per event instead of text.
    json: bool,
    /// The live view, on a terminal, until startup ends.
    live: Option<crate::views::live::LiveView>,
    /// Run time of the last event shown, for the `dropped` notice.
    last_at: std::time::Duration,
    /// Show nothing (the terminal UI owns the terminal).
    silent: bool,
}

impl Terminal {
    pub fn new(config: Arc<Config>, selected: &[bool], json: bool) -> Self {
        let width = config
            .nodes
            .iter()
            .zip(selected)
            .filter(|(_, on)| **on)
            .map(|(n, _)| n.name.len())
            .chain([OWN_NAME.len()])
            .max()
            .unwrap_or(OWN_NAME.len());
        let colour =
            io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        let live = (!json && io::stdout().is_terminal())
            .then(|| crate::views::live::LiveView::new(&config, selected));
        Self {
            config,
            colour,
            width,
            out: BufWriter::new(io::stdout()),
            json,
            live,
            last_at: std::time::Duration::ZERO,
            silent: false,
        }
    }

    /// Shows nothing from now on: another view owns the terminal.
    pub fn silence(&mut self) {
        self.silent = true;
        self.live = None;
    }

    /// Starts the terminal thread; the returned receiver says when it has written everything.
    pub fn spawn(mut self) -> io::Result<(TerminalFeed, Receiver<()>)> {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("dagstart-terminal".into())
            .spawn(move || {
                while let Ok(msg) = rx.recv() {
                    self.show_message(msg);
                    while let Ok(msg) = rx.try_recv() {
                        self.show_message(msg);
                    }
                    let _ = self.out.flush();
                }
                if let Some(live) = self.live.take() {
                    live.close();
                }
                let _ = self.out.flush();
                let _ = done_tx.send(());
            })?;
        let feed = TerminalFeed {
            tx,
            backlog: VecDeque::new(),
            dropped_lines: 0,
            dropped_events: 0,
            total_dropped: 0,
        };
        Ok((feed, done_rx))
    }

    fn show_message(&mut self, msg: ToTerminal) {
        if self.silent {
            return;
        }
        match msg {
            ToTerminal::Event(event, json) => self.show_event(&event, json),
            ToTerminal::Dropped { lines, events } => {
                if self.json {
                    let record =
                        EventRecord::run_wide(self.last_at, EventKind::Dropped { lines, events });
                    let _ = writeln!(self.out, "{}", record.to_json());
                } else {
                    let prefix = self.prefix(OWN_NAME, usize::MAX);
                    let what = if events > 0 {
                        format!("{lines} lines and {events} events")
                    } else {
                        format!("{lines} lines")
                    };
                    let text = format!(
                        "{prefix} |          {what} not shown: the terminal did not keep up (every line is in the log files)"
                    );
                    self.show(&text);
                }
            }
        }
    }

    fn show_event(&mut self, event: &Event, record: Option<EventRecord>) {
        self.last_at = event.at;
        if let EventKind::Reloaded(config) = &event.kind {
            self.width = config
                .nodes
                .iter()
                .map(|n| n.name.len())
                .fold(self.width, usize::max);
            self.config = config.clone();
            return;
        }
        if self.json {
            if let Some(record) = record.or_else(|| EventRecord::of(&self.config, event)) {
                let _ = writeln!(self.out, "{}", record.to_json());
            }
        }
        if let Some(live) = &mut self.live {
            if !live.update(event) {
                if let Some(live) = self.live.take() {
                    live.close();
                }
            }
        }
        if self.json {
            return;
        }
        if let (Some(n), EventKind::Output { line, .. }) = (event.node, &event.kind) {
            let prefix = self.prefix(&self.config.nodes[n].name, n);
            return self.show(&format!("{prefix} | {line}"));
        }
        // Launches are only worth a line in the log file; the terminal shows the spawn.
        if matches!(event.kind, EventKind::Launched) {
            return;
        }
        let Some(text) = crate::views::logfiles::describe(&self.config, event) else {
            return;
        };
        let prefix = self.prefix(OWN_NAME, usize::MAX);
        let at = format!("+{:.3}s", event.at.as_secs_f64());
        for (i, line) in text.lines().enumerate() {
            let stamp = if i == 0 { at.as_str() } else { "" };
            self.show(&format!("{prefix} | {stamp:>8} {line}"));
        }
    }

    /// A line for the terminal: above the live view while there is one.
    fn show(&mut self, line: &str) {
        match &self.live {
            Some(live) => live.println(line),
            None => {
                let _ = writeln!(self.out, "{line}");
            }
        }
    }

    fn prefix(&self, name: &str, index: usize) -> String {
        let padded = format!("{name:>width$}", width = self.width);
        if !self.colour {
            return padded;
        }
        let code = if index == usize::MAX {
            1
        } else {
            COLOURS[index % COLOURS.len()]
        };
        format!("\x1b[{code}m{padded}\x1b[0m")
    }
}
