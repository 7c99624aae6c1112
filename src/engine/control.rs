//! Steering a running dagstart from another terminal: a unix socket in `.dagstart/` beside
//! services.toml, one JSON request and one JSON answer per connection.
//!
//! The socket is the run's lock too: a second `dagstart run` for the same project finds it
//! answering and is refused; a socket file left by a killed run answers nothing and is replaced.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
use tokio::sync::{mpsc, oneshot};

use crate::engine::lifecycle::{Control, NodeAction, NodeStatus};

/// What a client can ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    Status,
    Start { nodes: Vec<String> },
    Stop { nodes: Vec<String> },
    Restart { nodes: Vec<String> },
    Reload,
    Down,
}

/// Where a reload reads the configuration from: the file and environment of the run.
#[derive(Debug, Clone)]
pub struct ReloadSource {
    pub path: PathBuf,
    pub env: crate::engine::config::Environment,
}

/// Re-reads the run's services.toml and hands it to the scheduler. An invalid file is answered
/// with its diagnostics and the running stack is not touched.
pub async fn reload(source: &ReloadSource, control: &mpsc::UnboundedSender<Control>) -> Response {
    // Reading and validating a file blocks: not on the async threads.
    let (path, env) = (source.path.clone(), source.env.clone());
    let loaded =
        tokio::task::spawn_blocking(move || crate::engine::config::load(&path, &env)).await;
    let config = match loaded {
        Ok(Ok(config)) => config,
        Err(panic) => {
            return Response {
                ok: false,
                message: format!("reload refused: reading services.toml failed ({panic})"),
                nodes: Vec::new(),
                invalid_config: false,
            };
        }
        Ok(Err(error)) => {
            let message = match error {
                crate::engine::config::LoadError::Read { path, source } => {
                    format!("cannot read {}: {source}\n", path.display())
                }
                crate::engine::config::LoadError::Invalid(invalid) => {
                    invalid.render(&crate::engine::config::plain_handler())
                }
            };
            return Response {
                ok: false,
                message: format!("{message}reload refused; nothing was changed"),
                nodes: Vec::new(),
                invalid_config: true,
            };
        }
    };
    ask(control, |reply| Control::Reload {
        config: Box::new(config),
        reply,
    })
    .await
}

/// The answer to a request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    pub message: String,
    #[serde(default)]
    pub nodes: Vec<NodeStatus>,
    /// The request was refused because services.toml is invalid; `message` holds the
    /// rendered diagnostics.
    #[serde(default)]
    pub invalid_config: bool,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[non_exhaustive]
pub enum ControlError {
    #[error("no dagstart is running for {}", .project.display())]
    #[diagnostic(
        code(dagstart::control::not_running),
        help("start it with `dagstart run`")
    )]
    NotRunning { project: PathBuf },
    #[error("dagstart is already running for {}", .project.display())]
    #[diagnostic(
        code(dagstart::control::already_running),
        help(
            "stop it with `dagstart down`, or steer it with `dagstart status|start|stop|restart`"
        )
    )]
    AlreadyRunning { project: PathBuf },
    #[error("control socket {}: {source}", .path.display())]
    #[diagnostic(code(dagstart::control::io))]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The host this process speaks for in a cluster (`--host`), set once by the command line.
static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Makes this process's run state (lock, control socket, run records) that of host `host`:
/// several hosts of a cluster may share one project directory. Set once, before any use.
pub fn set_host(host: &str) {
    let _ = HOST.set(host.to_owned());
}

/// The host set with [`set_host`], if any.
pub fn host() -> Option<&'static str> {
    HOST.get().map(String::as_str)
}

/// Where a run keeps its lock, control socket and records: `.dagstart` beside services.toml,
/// or `.dagstart/hosts/<host>` for a named host of a cluster ([`set_host`]).
pub fn state_dir(project_dir: &Path) -> PathBuf {
    let dir = project_dir.join(".dagstart");
    match HOST.get() {
        Some(host) => dir.join("hosts").join(host),
        None => dir,
    }
}

/// `control.sock` in the [`state_dir`].
pub fn socket_path(project_dir: &Path) -> PathBuf {
    state_dir(project_dir).join("control.sock")
}

/// `run.lock` in the [`state_dir`]: held (a POSIX record lock) by the run for its whole life.
pub fn lock_path(project_dir: &Path) -> PathBuf {
    state_dir(project_dir).join("run.lock")
}

/// Takes the project's run lock and binds the control socket. One run per project rests on
/// the lock, not on the socket: a socket file that was removed, or a socket that stopped
/// answering, never lets a second supervisor start. The kernel drops the lock when the run
/// ends, however it ends. A socket file with nobody behind the lock is stale and replaced.
pub fn bind(
    project_dir: &Path,
) -> Result<(std::os::unix::net::UnixListener, SocketFile), ControlError> {
    let path = socket_path(project_dir);
    let io = |source| ControlError::Io {
        path: path.clone(),
        source,
    };
    let dir = path.parent().expect("the socket has a directory");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io)?;
    let lock = lock_run(project_dir)?;
    if path.exists() {
        std::fs::remove_file(&path).map_err(io)?;
    }
    let listener = crate::engine::socket_path::SocketPath::bind(&path).map_err(io)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    listener.set_nonblocking(true).map_err(io)?;
    Ok((listener, SocketFile { path, _lock: lock }))
}

/// Waits until the run of `project_dir` has ended (its lock is free), up to `limit`; false when
/// it is still running then.
pub fn wait_until_ended(project_dir: &Path, limit: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        match lock_run(project_dir) {
            Ok(_released_at_once) => return true,
            Err(ControlError::AlreadyRunning { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            // Still running at the deadline, or no lock to take (no project there): as far as
            // we can tell it is not running.
            Err(ControlError::AlreadyRunning { .. }) => return false,
            Err(_) => return true,
        }
    }
}

/// Takes the run lock, or says who holds it.
///
/// A POSIX record lock (`fcntl(F_SETLK)`), not `flock`: it belongs to the process, so a child
/// between fork and exec never holds it (with `flock`, a node being spawned when dagstart was
/// killed kept the lock, and the next run was refused, for as long as the kernel took to
/// end that child). The lock file is opened once per process, as such locks require.
fn lock_run(project_dir: &Path) -> Result<std::fs::File, ControlError> {
    let path = lock_path(project_dir);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|source| ControlError::Io {
            path: path.clone(),
            source,
        })?;
    let whole_file = nix::libc::flock {
        l_type: nix::libc::F_WRLCK as i16,
        l_whence: nix::libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    match nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETLK(&whole_file)) {
        Ok(_) => Ok(file),
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => {
            Err(ControlError::AlreadyRunning {
                project: project_dir.to_owned(),
            })
        }
        Err(other) => Err(ControlError::Io {
            path,
            source: other.into(),
        }),
    }
}

/// Removes the socket file when the run ends, and holds the run lock until then.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    _lock: std::fs::File,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Answers requests until the scheduler is gone.
pub async fn serve(
    listener: std::os::unix::net::UnixListener,
    control: mpsc::UnboundedSender<Control>,
    source: ReloadSource,
) {
    let Ok(listener) = tokio::net::UnixListener::from_std(listener) else {
        return;
    };
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of descriptors, a connection reset before it was accepted, ...: the socket
            // itself is fine. Pause a moment (the error may persist) and go on.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let control = control.clone();
        let source = source.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            if tokio::io::BufReader::new(read)
                .read_line(&mut line)
                .await
                .is_err()
            {
                return;
            }
            let response = match serde_json::from_str::<Request>(&line) {
                Ok(request) => handle(request, &control, &source).await,
                Err(e) => Response {
                    ok: false,
                    message: format!("bad request: {e}"),
                    nodes: Vec::new(),
                    invalid_config: false,
                },
            };
            let mut text = serde_json::to_string(&response).expect("responses serialize");
            text.push('\n');
            let _ = write.write_all(text.as_bytes()).await;
        });
    }
}

/// Answers one request, from the control socket or the dashboard's actions.
pub async fn handle(
    request: Request,
    control: &mpsc::UnboundedSender<Control>,
    source: &ReloadSource,
) -> Response {
    let gone = || Response {
        ok: false,
        message: SHUTTING_DOWN.into(),
        nodes: Vec::new(),
        invalid_config: false,
    };
    match request {
        Request::Status => {
            let (reply, answer) = oneshot::channel();
            if control.send(Control::Status(reply)).is_err() {
                return gone();
            }
            match answer.await {
                Ok(nodes) => Response {
                    ok: true,
                    message: String::new(),
                    nodes,
                    invalid_config: false,
                },
                Err(_) => gone(),
            }
        }
        Request::Down => {
            let _ = control.send(Control::StopRun("`dagstart down`".into()));
            Response {
                ok: true,
                message: "shutting down".into(),
                nodes: Vec::new(),
                invalid_config: false,
            }
        }
        Request::Start { nodes } => act(control, NodeAction::Start, nodes).await,
        Request::Stop { nodes } => act(control, NodeAction::Stop, nodes).await,
        Request::Restart { nodes } => act(control, NodeAction::Restart, nodes).await,
        Request::Reload => reload(source, control).await,
    }
}

async fn act(
    control: &mpsc::UnboundedSender<Control>,
    action: NodeAction,
    names: Vec<String>,
) -> Response {
    ask(control, |reply| Control::Nodes {
        action,
        names,
        reply,
    })
    .await
}

/// Sends `request` to the scheduler and turns its answer into a response.
async fn ask(
    control: &mpsc::UnboundedSender<Control>,
    request: impl FnOnce(oneshot::Sender<Result<String, String>>) -> Control,
) -> Response {
    let (reply, answer) = oneshot::channel();
    let answer = match control.send(request(reply)) {
        Ok(()) => answer.await.unwrap_or_else(|_| Err(SHUTTING_DOWN.into())),
        Err(_) => Err(SHUTTING_DOWN.into()),
    };
    match answer {
        Ok(message) => Response {
            ok: true,
            message,
            nodes: Vec::new(),
            invalid_config: false,
        },
        Err(message) => Response {
            ok: false,
            message,
            nodes: Vec::new(),
            invalid_config: false,
        },
    }
}

const SHUTTING_DOWN: &str = "dagstart is shutting down";

/// Sends one request to the dagstart running for `project_dir` (the client side).
pub fn request(project_dir: &Path, request: &Request) -> Result<Response, ControlError> {
    let path = socket_path(project_dir);
    let not_running = || ControlError::NotRunning {
        project: project_dir.to_owned(),
    };
    let mut stream =
        crate::engine::socket_path::SocketPath::connect(&path).map_err(|_| not_running())?;
    let io = |source| ControlError::Io {
        path: path.clone(),
        source,
    };
    let mut text = serde_json::to_string(request).expect("requests serialize");
    text.push('\n');
    stream.write_all(text.as_bytes()).map_err(io)?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).map_err(io)?;
    serde_json::from_str(&line)
        .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

/// True when a dagstart answers on the project's control socket.
pub fn is_running(project_dir: &Path) -> bool {
    crate::engine::socket_path::SocketPath::connect(&socket_path(project_dir)).is_ok()
}
