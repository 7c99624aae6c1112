//! Socket activation: dagstart binds and listens on each service's `sockets` before anything
//! starts, keeps them for the whole run (so connections wait in the kernel backlog while a
//! service starts or restarts), and hands them to the service as fds 3, 4, ...

use std::os::fd::{AsFd as _, OwnedFd};
use std::path::PathBuf;

use tokio::io::unix::AsyncFd;

use crate::engine::config::{Config, SocketAddress};
use crate::engine::preflight::PreflightError;

/// The listening sockets of the run, per node (empty for nodes without `sockets`).
#[derive(Debug, Default)]
pub struct BoundSockets {
    per_node: Vec<Vec<OwnedFd>>,
    unix_paths: Vec<PathBuf>,
}

impl BoundSockets {
    /// Binds the sockets of the `selected` nodes; every failure is reported, nothing is kept.
    pub fn bind(config: &Config, selected: &[bool]) -> Result<Self, PreflightError> {
        let mut bound = Self::default();
        let mut problems = Vec::new();
        for (node, &on) in config.nodes.iter().zip(selected) {
            let mut fds = Vec::new();
            for address in node.sockets.iter().filter(|_| on) {
                match bound.listen(address) {
                    Ok(fd) => fds.push(fd),
                    Err(e) => {
                        problems.push(format!("{}: cannot listen on {address}: {e}", node.name))
                    }
                }
            }
            bound.per_node.push(fds);
        }
        if problems.is_empty() {
            Ok(bound)
        } else {
            Err(PreflightError { problems })
        }
    }

    fn listen(&mut self, address: &SocketAddress) -> std::io::Result<OwnedFd> {
        match address {
            SocketAddress::Tcp(addr) => Ok(std::net::TcpListener::bind(addr)?.into()),
            SocketAddress::Unix(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                // A socket file left by a killed run would make bind fail; it serves nobody.
                if std::fs::symlink_metadata(path)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                {
                    std::fs::remove_file(path)?;
                }
                let listener = crate::engine::socket_path::SocketPath::bind(path)?;
                self.unix_paths.push(path.clone());
                Ok(listener.into())
            }
        }
    }

    pub fn of(&self, node: usize) -> &[OwnedFd] {
        self.per_node.get(node).map_or(&[], Vec::as_slice)
    }

    /// Resolves once a connection is waiting on any of `node`'s sockets (without accepting it).
    pub fn first_connection(
        &self,
        node: usize,
    ) -> std::io::Result<impl Future<Output = ()> + use<>> {
        // Watch copies: same open sockets, but dropping the watch never closes the service's fds.
        let watched = self
            .of(node)
            .iter()
            .map(|fd| watch(fd.as_fd().try_clone_to_owned()?))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(async move {
            let waits = watched.iter().map(|fd| Box::pin(fd.readable()));
            let _ = futures_select_all(waits).await;
        })
    }
}

#[allow(unsafe_code)]
fn watch(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the descriptor, so it stays open for as long as it is registered.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(std::io::Error::from)
}

/// The first of several futures to finish.
async fn futures_select_all<F: Future + Unpin>(futures: impl IntoIterator<Item = F>) {
    let mut set: Vec<F> = futures.into_iter().collect();
    if set.is_empty() {
        return std::future::pending().await;
    }
    std::future::poll_fn(|cx| {
        for f in &mut set {
            if std::pin::Pin::new(f).poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await;
}

impl Drop for BoundSockets {
    fn drop(&mut self) {
        for path in &self.unix_paths {
            let _ = std::fs::remove_file(path);
        }
    }
}
