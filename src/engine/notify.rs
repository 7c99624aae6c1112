//! systemd's readiness protocol: one datagram socket per run, passed to `notify` services as
//! NOTIFY_SOCKET. Each datagram is routed to the node whose process group sent it, told by the
//! sender's pid (SO_PASSCRED); datagrams from anyone else are reported and dropped.
//!
//! The socket lives in the run's private runtime directory (0700), which a node running as
//! another `user` cannot enter; such nodes get a twin in the abstract namespace instead
//! (`@dagstart-...`, systemd's notation), reachable without file permissions. Its name is as
//! unguessable as the runtime directory's, and the sender check is the same.

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::os::fd::AsRawFd as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixAddr, recvmsg, setsockopt, sockopt};
use nix::unistd::{Pid, getpgid};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use crate::engine::event::{EventKind, EventSink};
use crate::engine::process::ProcessGroup;

/// One `KEY=VALUE` line of a notify datagram that dagstart acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyMessage {
    Ready,
    Status(String),
    MainPid(u32),
    Stopping,
    ExtendTimeout(Duration),
    Watchdog,
}

/// The messages of one datagram; unknown or malformed lines are skipped, as systemd does.
pub fn parse(datagram: &str) -> Vec<NotifyMessage> {
    datagram
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once('=')?;
            match key {
                "READY" if value == "1" => Some(NotifyMessage::Ready),
                "STATUS" => Some(NotifyMessage::Status(value.to_owned())),
                "MAINPID" => value.parse().ok().map(NotifyMessage::MainPid),
                "STOPPING" if value == "1" => Some(NotifyMessage::Stopping),
                "EXTEND_TIMEOUT_USEC" => value
                    .parse()
                    .ok()
                    .map(|us| NotifyMessage::ExtendTimeout(Duration::from_micros(us))),
                "WATCHDOG" if value == "1" => Some(NotifyMessage::Watchdog),
                _ => None,
            }
        })
        .collect()
}

/// How long a datagram from a process group nobody has subscribed yet is kept: the service can
/// send READY=1 before its runner has learnt its pid and subscribed.
const UNCLAIMED_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct Table {
    subscribers: HashMap<i32, mpsc::UnboundedSender<NotifyMessage>>,
    /// Datagrams waiting for their group to subscribe: group -> (received, sender pid, text).
    unclaimed: HashMap<i32, Vec<(std::time::Instant, i32, String)>>,
}

type Routes = Arc<Mutex<Table>>;

/// The run's notify socket and the table of process groups listening on it.
#[derive(Debug, Clone)]
pub struct NotifyHub {
    path: PathBuf,
    /// The name of the abstract twin, for nodes running as another user.
    abstract_name: String,
    routes: Routes,
}

/// A node's subscription; dropping it stops the routing to that process group.
#[derive(Debug)]
pub struct Subscription {
    pub messages: mpsc::UnboundedReceiver<NotifyMessage>,
    group: i32,
    routes: Routes,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut table = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        table.subscribers.remove(&self.group);
    }
}

impl NotifyHub {
    /// Binds the socket in `dir` (a private runtime directory) and starts receiving.
    pub fn bind(dir: &Path, events: EventSink) -> std::io::Result<Self> {
        use std::os::linux::net::SocketAddrExt as _;
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let routes: Routes = Arc::default();
        listen(UnixDatagram::bind(&path)?, &routes, &events)?;
        // The runtime directory's random name makes the abstract name unguessable too.
        let abstract_name = format!(
            "dagstart-notify-{}",
            dir.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        );
        let address = std::os::unix::net::SocketAddr::from_abstract_name(&abstract_name)?;
        listen(UnixDatagram::bind_addr(&address)?, &routes, &events)?;
        Ok(Self {
            path,
            abstract_name,
            routes,
        })
    }

    /// The NOTIFY_SOCKET of a node: the socket file, or for a node running as another user
    /// (which cannot enter the private runtime directory) the abstract twin, `@name`.
    pub fn address_for(&self, other_user: bool) -> String {
        if other_user {
            format!("@{}", self.abstract_name)
        } else {
            self.path.display().to_string()
        }
    }

    /// Routes datagrams sent by processes of `group` to the returned subscription, starting
    /// with any that arrived before it subscribed.
    pub fn subscribe(&self, group: &ProcessGroup) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut table = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        for (_, _, text) in table.unclaimed.remove(&group.id()).unwrap_or_default() {
            for message in parse(&text) {
                let _ = tx.send(message);
            }
        }
        table.subscribers.insert(group.id(), tx);
        Subscription {
            messages: rx,
            group: group.id(),
            routes: self.routes.clone(),
        }
    }
}

/// Receives on `socket` (with the senders' credentials) into `routes`.
fn listen(socket: UnixDatagram, routes: &Routes, events: &EventSink) -> std::io::Result<()> {
    socket.set_nonblocking(true)?;
    setsockopt(&socket, sockopt::PassCred, &true).map_err(std::io::Error::from)?;
    // SAFETY: the AsyncFd owns the socket, so the fd stays open for as long as it is
    // registered.
    #[allow(unsafe_code)]
    let socket = unsafe { AsyncFd::register(socket)? };
    tokio::spawn(receive(socket, routes.clone(), events.clone()));
    Ok(())
}

async fn receive(socket: AsyncFd<UnixDatagram>, routes: Routes, events: EventSink) {
    let mut buf = vec![0u8; 4096];
    let mut expiry = tokio::time::interval(UNCLAIMED_GRACE / 2);
    loop {
        let mut ready = tokio::select! {
            ready = socket.readable() => match ready {
                Ok(ready) => ready,
                Err(_) => return,
            },
            _ = expiry.tick() => {
                expire_unclaimed(&routes, &events);
                continue;
            }
        };
        loop {
            match receive_one(socket.get_ref(), &mut buf) {
                Ok(Some((pid, text))) => route(&routes, &events, pid, text),
                Ok(None) => {}
                Err(nix::errno::Errno::EAGAIN) => {
                    ready.clear_ready();
                    break;
                }
                Err(_) => {}
            }
        }
    }
}

/// One datagram and its sender's pid; `None` for a datagram without credentials.
fn receive_one(socket: &UnixDatagram, buf: &mut [u8]) -> nix::Result<Option<(i32, String)>> {
    let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<UnixAddr>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT,
    )?;
    let pid = msg.cmsgs()?.find_map(|c| match c {
        ControlMessageOwned::ScmCredentials(cred) => Some(cred.pid()),
        _ => None,
    });
    let len = msg.bytes;
    let text = String::from_utf8_lossy(&iov[0][..len]).into_owned();
    Ok(pid.map(|pid| (pid, text)))
}

fn route(routes: &Routes, events: &EventSink, pid: i32, text: String) {
    let Ok(group) = getpgid(Some(Pid::from_raw(pid))).map(Pid::as_raw) else {
        return ignored(events, pid, &text);
    };
    let mut table = routes.lock().unwrap_or_else(PoisonError::into_inner);
    match table.subscribers.get(&group) {
        Some(sender) => {
            for message in parse(&text) {
                let _ = sender.send(message);
            }
        }
        None => {
            table
                .unclaimed
                .entry(group)
                .or_default()
                .push((std::time::Instant::now(), pid, text))
        }
    }
}

/// Datagrams whose group never subscribed within the grace period came from a stranger.
fn expire_unclaimed(routes: &Routes, events: &EventSink) {
    let mut expired = Vec::new();
    {
        let mut table = routes.lock().unwrap_or_else(PoisonError::into_inner);
        table.unclaimed.retain(|_, datagrams| {
            datagrams.retain(|(at, pid, text)| {
                let keep = at.elapsed() < UNCLAIMED_GRACE;
                if !keep {
                    expired.push((*pid, text.clone()));
                }
                keep
            });
            !datagrams.is_empty()
        });
    }
    for (pid, text) in expired {
        ignored(events, pid, &text);
    }
}

fn ignored(events: &EventSink, pid: i32, text: &str) {
    events.send(
        None,
        EventKind::note(format!(
            "ignored a notify message from pid {pid}: it is not a process of any node ({:?})",
            text.trim()
        )),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_keys_dagstart_acts_on() {
        let messages = parse(
            "READY=1\nSTATUS=loading 3/4\nMAINPID=42\nEXTEND_TIMEOUT_USEC=5000000\nWATCHDOG=1\nSTOPPING=1\nX=y\nREADY=0\nnonsense",
        );
        assert_eq!(
            messages,
            [
                NotifyMessage::Ready,
                NotifyMessage::Status("loading 3/4".into()),
                NotifyMessage::MainPid(42),
                NotifyMessage::ExtendTimeout(Duration::from_secs(5)),
                NotifyMessage::Watchdog,
                NotifyMessage::Stopping,
            ]
        );
    }
}
