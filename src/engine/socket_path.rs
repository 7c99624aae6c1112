//! Unix socket paths of any length. `sockaddr_un` holds 108 bytes, so a project a few
//! directories deep could not bind `.dagstart/control.sock` ("path must be shorter than
//! SUN_LEN"). A long path is reached through its directory instead: the directory is opened
//! (`O_PATH`) and the socket named as `/proc/self/fd/<fd>/<name>`, which the kernel resolves to
//! the same place. Short paths are used as they are.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// Longer than this, a path goes through its directory (the limit is 108 bytes with the NUL).
const DIRECT: usize = 100;

/// A socket path short enough to bind or connect, valid while this value lives.
#[derive(Debug)]
pub struct SocketPath {
    path: PathBuf,
    /// The opened directory a long path goes through.
    _dir: Option<File>,
}

impl SocketPath {
    pub fn new(path: &Path) -> io::Result<Self> {
        if path.as_os_str().len() <= DIRECT {
            return Ok(Self {
                path: path.to_owned(),
                _dir: None,
            });
        }
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a socket path", path.display()),
            ));
        };
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_PATH | nix::libc::O_DIRECTORY)
            .open(dir)?;
        let short = Path::new("/proc/self/fd")
            .join(dir.as_raw_fd().to_string())
            .join(name);
        Ok(Self {
            path: short,
            _dir: Some(dir),
        })
    }

    pub fn as_path(&self) -> &Path {
        &self.path
    }

    pub fn bind(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
        std::os::unix::net::UnixListener::bind(Self::new(path)?.as_path())
    }

    pub fn connect(path: &Path) -> io::Result<std::os::unix::net::UnixStream> {
        std::os::unix::net::UnixStream::connect(Self::new(path)?.as_path())
    }
}
