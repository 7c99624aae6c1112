//! What the lifecycle core asks the async shell to do. The core never does I/O itself.

use crate::engine::event::EventKind;

/// One thing to carry out, in the order given.
#[derive(Debug)]
pub enum Effect {
    /// Start a runner for `node`; its reports carry `instance`.
    Launch { node: usize, instance: u64 },
    /// Tell the runner of `instance` to stop gracefully (stop signal, grace, SIGKILL).
    Stop { node: usize, instance: u64 },
    /// SIGKILL the process group of every live instance now (second Ctrl-C, shutdown timeout).
    KillAll,
    /// Probe these required services once more and answer with `Input::Verified`.
    Verify(Vec<usize>),
    /// Publish an event; `state` is the node's state once the input was handled.
    Publish {
        node: Option<usize>,
        state: Option<&'static str>,
        kind: EventKind,
    },
    /// Startup is over, one way or the other (for the `--` command).
    Startup(super::Startup),
    /// The answer to `Input::Nodes` or `Input::Reload`.
    Answer(Result<String, String>),
}
