//! The engine: everything that brings a stack up and keeps it up, and nothing about how it is
//! shown or asked for. It knows nothing of clap, terminals or web pages; the views subscribe to
//! its events ([`event`], [`record`]) and the command line drives it.
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | services.toml: parsing, validation, diagnostics, the resolved model |
//! | [`graph`] | the dependency graph: cycles, levels, heights, edges by kind |
//! | [`selection`] | which nodes a run takes part in: named ones and what they require, profiles |
//! | [`lifecycle`] | the one typed node lifecycle: a pure core, its async shell, the runners |
//! | [`process`] | a node's process group: spawn, output lines, graceful stop |
//! | [`fine_timer`] | sleeps to the microsecond (probe pauses), where the runtime's timer counts ms |
//! | [`health`] | probe attempts and the adaptive wait for readiness |
//! | [`notify`] | systemd's notify protocol: the run's NOTIFY_SOCKET and its routing |
//! | [`sockets`] | socket activation: listening sockets bound before anything starts |
//! | [`socket_path`] | unix socket paths of any length (through `/proc/self/fd`) |
//! | [`pidfd`] | process file descriptors: signalling a group that cannot mean another |
//! | [`child`] | a node's process waited on through that same pidfd, reaped even if dropped |
//! | [`spawner`] | spawning from a thread with a small descriptor table of its own |
//! | [`cgroup`] | a cgroup per node where cgroup v2 is writable: stops reach escapees |
//! | [`containment`] | no orphans, by the kernel: the run's PID namespace and its init |
//! | [`guardian`] | no orphans: subreaper, run marker sweep, and the guardian process |
//! | [`preflight`] | the environment check before anything is spawned |
//! | [`pressure`] | CPU pressure for `max_workers = "auto"` |
//! | [`watch`] | polling services.toml (`run --watch`) and each node's `watch` globs |
//! | [`cluster`] | one run over several hosts through etcd: leases, published states, mirrors |
//! | [`control`] | the control socket: requests from another terminal, answered by the core |
//! | [`event`] | the event stream the core publishes, output lines under a byte budget |
//! | [`record`] | `EventRecord`: the one serde form of an event, for every view |
//! | [`timing`] | a run's timeline: critical path, sequential estimate |
//! | [`parallel`] | two pieces of work at once (loading a large file) |

pub mod cgroup;
pub mod child;
pub mod cluster;
pub mod config;
pub mod containment;
pub mod control;
pub mod event;
pub mod fine_timer;
pub mod graph;
pub mod guardian;
pub mod health;
pub mod lifecycle;
pub mod notify;
pub mod parallel;
pub mod pidfd;
pub mod preflight;
pub mod pressure;
pub mod process;
pub mod record;
pub mod selection;
pub mod socket_path;
pub mod sockets;
pub mod spawner;
pub mod timing;
pub mod watch;
