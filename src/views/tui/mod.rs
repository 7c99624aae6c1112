//! `dagstart ui` and `dagstart run --ui`: a full-screen terminal UI over a running dagstart.
//!
//! It attaches through the project's control socket, as `status`, `start`, `stop` and the
//! rest do, so it works from another terminal and in-process alike: every half second it asks
//! for `status`, reads what the log files gained and measures the nodes' process groups
//! (`usage`). Keys become control requests (`model`); drawing is `render`'s. The terminal is
//! restored however the UI ends: `q` or Ctrl-C, the run ending, SIGTERM or SIGHUP, or a panic
//! (ratatui's hook).

mod keys;
mod model;
mod render;
pub mod usage;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::engine::config::Config;
use crate::engine::control::{Request, request};

pub use model::{Key, Model, Step};

/// How often the nodes, logs and usage are read again.
const REFRESH: Duration = Duration::from_millis(500);

/// Set by SIGTERM or SIGHUP: the UI ends and restores the terminal.
static SIGNALLED: AtomicBool = AtomicBool::new(false);

/// Watches for SIGTERM and SIGHUP on a thread of its own (the UI's loop is not async).
fn watch_signals() -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("dagstart-ui-signals".into())
        .spawn(move || {
            runtime.block_on(async {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut term), Ok(mut hup)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::hangup()),
                ) else {
                    return;
                };
                tokio::select! {
                    _ = term.recv() => {}
                    _ = hup.recv() => {}
                }
                SIGNALLED.store(true, Ordering::SeqCst);
            });
        })?;
    Ok(())
}

/// How the UI was started.
#[derive(Debug, Clone)]
pub struct UiOptions {
    /// The project whose dagstart to attach to (the directory of services.toml).
    pub project_dir: PathBuf,
    /// `run --ui`: quitting stops the stack (`down`); `dagstart ui` leaves it running.
    pub stop_on_quit: bool,
    /// Set when the run this UI belongs to has ended (`run --ui`).
    pub ended: Option<Arc<AtomicBool>>,
}

/// Runs the UI until the user quits, the run ends, or a signal comes.
pub fn run(config: Config, options: &UiOptions) -> std::io::Result<()> {
    watch_signals()?;
    let colour = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let title = format!(" dagstart: {} ", options.project_dir.display());
    let mut model = Model::new(config);
    let mut meter = usage::UsageMeter::default();
    let mut terminal = ratatui::try_init()?;
    let result = (|| -> std::io::Result<()> {
        let mut next_refresh = Instant::now();
        loop {
            if SIGNALLED.load(Ordering::SeqCst) || ended(options) {
                return Ok(());
            }
            if Instant::now() >= next_refresh {
                if !refresh(&mut model, &mut meter, options) {
                    return Ok(());
                }
                next_refresh = Instant::now() + REFRESH;
            }
            terminal.draw(|frame| render::draw(frame, &model, colour, &title))?;
            let pressed = match keys::read(100) {
                keys::Input::Keys(pressed) => pressed,
                keys::Input::Interrupt => return quit(options),
                // Nobody to show anything to: attached, the stack runs on; `run --ui` stops.
                keys::Input::HungUp => return quit(options),
            };
            for key in pressed {
                match model.on_key(key) {
                    Step::Nothing => {}
                    Step::Quit => return quit(options),
                    Step::Send(asked) => {
                        model.message = Some(answer(options, &asked));
                        next_refresh = Instant::now();
                    }
                }
            }
        }
    })();
    // A terminal that hung up cannot be restored: nothing to do then.
    let _ = ratatui::try_restore();
    result
}

fn ended(options: &UiOptions) -> bool {
    options
        .ended
        .as_ref()
        .is_some_and(|e| e.load(Ordering::SeqCst))
}

/// `q`: with `run --ui` the stack stops; attached, it runs on.
fn quit(options: &UiOptions) -> std::io::Result<()> {
    if options.stop_on_quit {
        let _ = request(&options.project_dir, &Request::Down);
    }
    Ok(())
}

/// Asks the run for `status`, reads the logs and the usage; false once no dagstart answers.
fn refresh(model: &mut Model, meter: &mut usage::UsageMeter, options: &UiOptions) -> bool {
    match request(&options.project_dir, &Request::Status) {
        Ok(response) => model.set_nodes(response.nodes),
        // `run --ui` before the control socket answers: wait for it.
        Err(_) if options.stop_on_quit && !ended(options) => {}
        Err(_) => return false,
    }
    model.read_logs();
    let groups: Vec<u32> = model.nodes.iter().filter_map(|n| n.pid).collect();
    let usage = meter.read(&groups);
    model.usage = model
        .nodes
        .iter()
        .filter_map(|n| Some((n.name.clone(), *usage.get(&n.pid?)?)))
        .collect();
    true
}

/// Sends an action and says how it went, in a line.
fn answer(options: &UiOptions, asked: &Request) -> String {
    match request(&options.project_dir, asked) {
        Ok(response) => response
            .message
            .lines()
            .last()
            .unwrap_or(if response.ok { "done" } else { "refused" })
            .to_owned(),
        Err(e) => e.to_string(),
    }
}
