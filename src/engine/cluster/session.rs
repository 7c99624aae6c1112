//! Joining a run: the host's lease and key, the run's key (created by the coordinator, waited
//! for by an agent), and the tasks that keep all of it current while the run lasts.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::etcd::{Etcd, EtcdError};
use super::keys::{HostInfo, Keys, LogShare, Phase, RunInfo};
use super::{ClusterLink, publisher, watcher};
use crate::engine::config::Config;
use crate::engine::event::{EventKind, EventSink};

/// Why a host could not join a run.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ClusterError {
    #[error("cannot reach etcd: {0}")]
    #[diagnostic(
        code(dagstart::cluster::unreachable),
        help("start etcd, or point `[cluster] etcd` (or DAGSTART_ETCD) at its client URLs")
    )]
    Unreachable(EtcdError),
    #[error("host `{host}` is already in the run of cluster `{cluster}` (pid {pid} on {machine})")]
    #[diagnostic(
        code(dagstart::cluster::host_taken),
        help("one process runs a host at a time: stop the other one, or name another --host")
    )]
    HostTaken {
        cluster: String,
        host: String,
        pid: u32,
        machine: String,
    },
    #[error(
        "a run of cluster `{cluster}` is already going on, coordinated by host `{coordinator}`"
    )]
    #[diagnostic(
        code(dagstart::cluster::run_exists),
        help(
            "join it with `dagstart agent --host NAME`, or stop it with `dagstart --host {coordinator} down`"
        )
    )]
    RunExists {
        cluster: String,
        coordinator: String,
    },
    #[error(
        "this services.toml is not the one of the run (digest {ours} here, {theirs} in the run coordinated by `{coordinator}`)"
    )]
    #[diagnostic(
        code(dagstart::cluster::other_config),
        help("every host of a run uses the same services.toml: copy the coordinator's file here")
    )]
    OtherConfig {
        ours: String,
        theirs: String,
        coordinator: String,
    },
    #[error("the run changed while this host joined it")]
    #[diagnostic(code(dagstart::cluster::run_changed), help("start the agent again"))]
    RunChanged,
    #[error("host `{host}` is not declared in services.toml")]
    #[diagnostic(code(dagstart::cluster::unknown_host), help("{help}"))]
    UnknownHost { host: String, help: String },
}

/// How this process takes part in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `dagstart run`: creates the run (or rejoins it after it died), runs the nodes without
    /// `host`, and its Ctrl-C stops the whole run.
    Coordinator,
    /// `dagstart agent`: waits for the run and runs the nodes of its host.
    Agent,
}

/// A host in a run: the link its scheduler uses, and what [`Joined::leave`] ends.
#[derive(Debug)]
pub struct Joined {
    pub link: Arc<ClusterLink>,
    tasks: JoinSet<()>,
    lease: watch::Receiver<i64>,
    etcd: Arc<Etcd>,
    keys: Keys,
    run_id: String,
}

/// Joins (or, as coordinator, creates) the run of `config`'s cluster as host `host`. `config`
/// was placed ([`super::localize`]) for coordinator `placed_for` (an agent found it with
/// [`find_run`]).
pub async fn join(
    config: &Config,
    host: &str,
    role: Role,
    placed_for: &str,
    run_id: &str,
    logs: Option<LogShare>,
    events: &EventSink,
) -> Result<Joined, ClusterError> {
    let cluster = config.cluster.as_ref().expect("a [cluster] section");
    check_host(config, host, role)?;
    let (etcd, keys) = super::connect(config);
    let etcd = Arc::new(etcd);
    let lease = etcd
        .grant(cluster.lease_ttl)
        .await
        .map_err(ClusterError::Unreachable)?;
    let me = HostInfo {
        pid: std::process::id(),
        machine: machine_name(),
        logs,
    };
    if let Err(e) = claim_host(&etcd, &keys, host, &me, lease).await {
        let _ = etcd.revoke(lease).await;
        return Err(e);
    }
    let digest = super::digest(config.source.inner());
    let run = match role {
        Role::Coordinator => create_run(&etcd, &keys, host, run_id, &digest).await,
        Role::Agent => wait_for_run(&etcd, &keys, &digest, &|_| {})
            .await
            .and_then(|run| {
                // The nodes were placed for this coordinator; a new run since is another run.
                if run.coordinator == placed_for {
                    Ok(run)
                } else {
                    Err(ClusterError::RunChanged)
                }
            }),
    };
    let run = match run {
        Ok(run) => run,
        Err(e) => {
            let _ = etcd.revoke(lease).await;
            return Err(e);
        }
    };
    let claimed = Claimed {
        etcd,
        keys,
        lease,
        me,
    };
    Ok(start(config, host, role, run, claimed, events))
}

fn check_host(config: &Config, host: &str, role: Role) -> Result<(), ClusterError> {
    let declared = config.hosts.iter().any(|h| h.name == host);
    if declared || role == Role::Coordinator {
        return Ok(());
    }
    let names: Vec<&str> = config.hosts.iter().map(|h| h.name.as_str()).collect();
    let help = match crate::engine::config::did_you_mean(host, names.iter().copied()) {
        Some(name) => format!("did you mean `{name}`?"),
        None if names.is_empty() => "declare it: [hosts.NAME]".to_owned(),
        None => format!("declared hosts: {}", names.join(", ")),
    };
    Err(ClusterError::UnknownHost {
        host: host.to_owned(),
        help,
    })
}

/// Stands as host `host` under `lease`: its key, only if no other process holds it (at
/// joining, and again after the lease lapsed: another process may have taken the host since),
/// and its candidacy to lead.
async fn claim_host(
    etcd: &Etcd,
    keys: &Keys,
    host: &str,
    me: &HostInfo,
    lease: i64,
) -> Result<(), ClusterError> {
    let value = serde_json::to_vec(me).unwrap_or_default();
    match etcd.create(&keys.host(host), &value, Some(lease)).await {
        Ok(Ok(())) => {}
        Ok(Err(held)) => {
            let other: Option<HostInfo> = serde_json::from_slice(&held.value).ok();
            let other = other.unwrap_or(HostInfo {
                pid: 0,
                machine: "?".into(),
                logs: None,
            });
            return Err(ClusterError::HostTaken {
                cluster: keys.cluster().to_owned(),
                host: host.to_owned(),
                pid: other.pid,
                machine: other.machine,
            });
        }
        Err(e) => return Err(ClusterError::Unreachable(e)),
    }
    // A candidacy is at the back of the line: the oldest one leads.
    etcd.put(&keys.candidate(host), b"", Some(lease))
        .await
        .map_err(ClusterError::Unreachable)
}

/// The coordinator writes the run's key. A run that is still going on (a host of it holds its
/// key) is refused, unless this is its coordinator's host coming back after it died: then
/// it rejoins that run, and the run goes on.
async fn create_run(
    etcd: &Etcd,
    keys: &Keys,
    host: &str,
    run_id: &str,
    digest: &str,
) -> Result<RunInfo, ClusterError> {
    let existing = etcd
        .get(&keys.run())
        .await
        .map_err(ClusterError::Unreachable)?
        .and_then(|kv| serde_json::from_slice::<RunInfo>(&kv.value).ok())
        .filter(|run| run.phase == Phase::Running);
    if let Some(info) = existing {
        let (hosts, _) = etcd
            .range_prefix(&keys.host(""))
            .await
            .map_err(ClusterError::Unreachable)?;
        // This host's own key is there: it was claimed a moment ago.
        let others = hosts.iter().any(|kv| kv.key != keys.host(host));
        if others && info.coordinator != host {
            return Err(ClusterError::RunExists {
                cluster: keys.cluster().to_owned(),
                coordinator: info.coordinator,
            });
        }
        if others && info.digest != digest {
            return Err(ClusterError::OtherConfig {
                ours: digest.to_owned(),
                theirs: info.digest,
                coordinator: info.coordinator,
            });
        }
        if others {
            return Ok(info);
        }
    }
    // A stop request of an earlier run must not stop this one.
    etcd.delete(&keys.stop())
        .await
        .map_err(ClusterError::Unreachable)?;
    let run = RunInfo {
        id: run_id.to_owned(),
        coordinator: host.to_owned(),
        digest: digest.to_owned(),
        phase: Phase::Running,
    };
    let value = serde_json::to_vec(&run).unwrap_or_default();
    etcd.put(&keys.run(), &value, None)
        .await
        .map_err(ClusterError::Unreachable)?;
    Ok(run)
}

/// The run an agent of `config`'s cluster would join, once there is one: the coordinator's
/// name places the nodes without a `host` ([`super::localize`]). `waiting` is told once when
/// there is none yet.
pub async fn find_run(config: &Config, waiting: &dyn Fn(&str)) -> Result<RunInfo, ClusterError> {
    let (etcd, keys) = super::connect(config);
    let digest = super::digest(config.source.inner());
    wait_for_run(&etcd, &keys, &digest, waiting).await
}

/// An agent waits for a running run (listing, then watching from the next revision), and
/// refuses one started from another services.toml.
async fn wait_for_run(
    etcd: &Etcd,
    keys: &Keys,
    digest: &str,
    waiting: &dyn Fn(&str),
) -> Result<RunInfo, ClusterError> {
    let mut told = false;
    loop {
        let (kvs, revision) = etcd
            .range_prefix(&keys.run())
            .await
            .map_err(ClusterError::Unreachable)?;
        let running = kvs
            .iter()
            .filter(|kv| kv.key == keys.run())
            .find_map(|kv| serde_json::from_slice::<RunInfo>(&kv.value).ok())
            .filter(|run| run.phase == Phase::Running);
        if let Some(run) = running {
            if run.digest != digest {
                return Err(ClusterError::OtherConfig {
                    ours: digest.to_owned(),
                    theirs: run.digest,
                    coordinator: run.coordinator,
                });
            }
            return Ok(run);
        }
        if !told {
            waiting("waiting for the run to start (`dagstart run` on its coordinator)");
            told = true;
        }
        let Ok(mut watch) = etcd.watch_prefix(&keys.run(), revision + 1).await else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        // Any change (or the end of the stream) is a reason to look again.
        let _ = watch.next().await;
    }
}

/// Pause before trying etcd again after it did not answer.
pub(super) const RETRY: Duration = Duration::from_millis(250);

/// What a host holds in etcd once it joined.
struct Claimed {
    etcd: Arc<Etcd>,
    keys: Keys,
    lease: i64,
    me: HostInfo,
}

fn start(
    config: &Config,
    host: &str,
    role: Role,
    run: RunInfo,
    claimed: Claimed,
    events: &EventSink,
) -> Joined {
    let Claimed {
        etcd,
        keys,
        lease,
        me,
    } = claimed;
    let cluster = config.cluster.as_ref().expect("a [cluster]");
    let (lease_tx, lease_rx) = watch::channel(lease);
    let (phase_tx, _) = watch::channel(Phase::Running);
    let (publish_tx, publish_rx) = mpsc::unbounded_channel::<publisher::Write>();
    let mut feeds_tx = Vec::with_capacity(config.nodes.len());
    let mut feeds = Vec::with_capacity(config.nodes.len());
    for _ in &config.nodes {
        let (tx, rx) = watch::channel(None);
        feeds_tx.push(tx);
        feeds.push(rx);
    }
    let names: Vec<String> = config.nodes.iter().map(|n| n.name.clone()).collect();
    let mut tasks = JoinSet::new();
    tasks.spawn(keep_alive(
        etcd.clone(),
        keys.clone(),
        host.to_owned(),
        me,
        cluster.lease_ttl,
        lease_tx,
        events.clone(),
    ));
    tasks.spawn(publisher::run(
        etcd.clone(),
        keys.clone(),
        host.to_owned(),
        lease_rx.clone(),
        publish_rx,
    ));
    let (leader_tx, leader_rx) = watch::channel(None);
    let (hosts_tx, hosts_rx) = watch::channel(std::collections::BTreeSet::new());
    let (stopping_tx, stopping_rx) = watch::channel(std::collections::BTreeSet::new());
    let (stop_tx, stop_rx) = watch::channel(None);
    let feeds_to = watcher::Feeds {
        local: host.to_owned(),
        run_id: run.id.clone(),
        names,
        nodes: feeds_tx,
        phase: phase_tx.clone(),
        leader: leader_tx,
        stop: stop_tx,
        candidates: std::sync::Mutex::default(),
        hosts: hosts_tx,
        stopping: stopping_tx,
    };
    tasks.spawn(watcher::run(etcd.clone(), keys.clone(), feeds_to));
    tasks.spawn(super::leader::run(
        etcd.clone(),
        keys.clone(),
        host.to_owned(),
        run.clone(),
        leader_rx,
        stop_rx,
    ));
    let run_id = run.id.clone();
    let link = Arc::new(ClusterLink {
        host: host.to_owned(),
        coordinator: role == Role::Coordinator,
        run,
        feeds,
        phase: phase_tx,
        publish: publish_tx,
        barrier: super::StopBarrier {
            hosts: hosts_rx,
            stopping: stopping_rx,
        },
    });
    Joined {
        link,
        tasks,
        lease: lease_rx,
        etcd,
        keys,
        run_id,
    }
}

impl Joined {
    /// Leaves the run: the coordinator removes the run's key; the lease goes with every key
    /// of this host.
    pub async fn leave(mut self) {
        self.tasks.abort_all();
        if self.link.coordinator {
            if let Ok(Some(kv)) = self.etcd.get(&self.keys.run()).await {
                let ours = serde_json::from_slice::<RunInfo>(&kv.value)
                    .is_ok_and(|run| run.id == self.run_id);
                if ours {
                    let _ = self.etcd.delete(&self.keys.run()).await;
                }
            }
        }
        let lease = *self.lease.borrow();
        let _ = self.etcd.revoke(lease).await;
    }
}

/// Keeps the host's lease alive at a third of its TTL. A lease that lapsed (the host was cut
/// off longer than the TTL, and its keys are gone) is replaced: the host claims its key again
/// and the publisher writes every node again under the new lease.
async fn keep_alive(
    etcd: Arc<Etcd>,
    keys: Keys,
    host: String,
    me: HostInfo,
    ttl: Duration,
    lease: watch::Sender<i64>,
    events: EventSink,
) {
    let note = |text: String| events.send(None, EventKind::note(text));
    let mut out = false;
    loop {
        tokio::time::sleep(ttl / 3).await;
        let current = *lease.borrow();
        let renewed = match etcd.keep_alive(current).await {
            Ok(true) => Ok(()),
            Ok(false) => renew(&etcd, &keys, &host, &me, ttl, &lease).await,
            Err(e) => Err(ClusterError::Unreachable(e)),
        };
        match renewed {
            Ok(()) if out => {
                out = false;
                note("etcd answers again: this host is back in the run".to_owned());
            }
            Ok(()) => {}
            Err(ClusterError::Unreachable(e)) if !out => {
                out = true;
                note(format!(
                    "the cluster is unreachable ({e}); this host's nodes keep running, and it rejoins by itself"
                ));
            }
            Err(e) if !out => {
                out = true;
                note(format!(
                    "{e}; this host's nodes keep running, and it tries to rejoin"
                ));
            }
            Err(_) => {}
        }
    }
}

/// A new lease after the old one lapsed, and the host claimed again under it.
async fn renew(
    etcd: &Etcd,
    keys: &Keys,
    host: &str,
    me: &HostInfo,
    ttl: Duration,
    lease: &watch::Sender<i64>,
) -> Result<(), ClusterError> {
    let new = etcd.grant(ttl).await.map_err(ClusterError::Unreachable)?;
    if let Err(e) = claim_host(etcd, keys, host, me, new).await {
        let _ = etcd.revoke(new).await;
        return Err(e);
    }
    lease.send_replace(new);
    Ok(())
}

/// This machine's name, for messages about who holds a host.
pub fn machine_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|n| n.into_string().ok())
        .unwrap_or_else(|| "?".to_owned())
}
