//! The environment check before anything is spawned: every working directory exists, every
//! declared port is free, a `user` switch is possible. All problems are reported together and
//! nothing is started when there is one. Commands that do not resolve are found too
//! ([`files`]), but only warned about: an earlier component may build them.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::engine::config::{Command, Config, Node, Probe};

/// Everything preflight found wrong.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("preflight failed, nothing was started:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
#[diagnostic(
    code(dagstart::preflight),
    help("fix these and run again; `dagstart config` shows the resolved commands and paths")
)]
pub struct PreflightError {
    pub problems: Vec<String>,
}

/// Checks the `selected` nodes of `config`, with `missing` what [`files`] found for them. A
/// command that does not resolve is not refused here (an earlier component may build it; the
/// caller warns, and a spawn that fails says where the node is declared).
pub fn check(
    config: &Config,
    selected: &[bool],
    missing: &[(usize, Missing)],
) -> Result<(), PreflightError> {
    let mut problems: Vec<String> = missing
        .iter()
        .filter(|(_, missing)| matches!(missing, Missing::Directory(_)))
        .map(|(n, missing)| format!("{}: {}", config.nodes[*n].name, missing.text()))
        .collect();
    let root = nix::unistd::geteuid().is_root();
    for (node, _) in config.nodes.iter().zip(selected).filter(|(_, on)| **on) {
        if let Some(run_as) = node
            .run_as
            .as_ref()
            .filter(|r| !root && r.uid != nix::unistd::geteuid().as_raw())
        {
            problems.push(format!(
                "{}: running as user `{}` needs dagstart to run as root",
                node.name, run_as.user
            ));
        }
        if let Some(port) = node.port {
            if port != 0 && port_taken(port) {
                let holder = port_holder(port)
                    .map(|(pid, name)| format!(" (by `{name}`, pid {pid})"))
                    .unwrap_or_default();
                problems.push(format!(
                    "{}: port {port} is already in use{holder}",
                    node.name
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(PreflightError { problems })
    }
}

/// What is missing on this machine for a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// Its working directory.
    Directory(String),
    /// A command (its own or its exec probe's); an earlier component may still build it.
    Command(String),
}

impl Missing {
    pub fn text(&self) -> &str {
        match self {
            Missing::Directory(text) | Missing::Command(text) => text,
        }
    }
}

/// The part of preflight that does not depend on the moment (commands, working directories),
/// for `dagstart check` too: each problem with the index of its node.
pub fn files(config: &Config, selected: &[bool]) -> Vec<(usize, Missing)> {
    let mut problems = Vec::new();
    let inherited_path = std::env::var("PATH").ok();
    let mut looked_up = Lookups::default();
    for (n, node) in config.nodes.iter().enumerate() {
        if selected.get(n).copied().unwrap_or(false) {
            let path_var = node
                .env
                .get("PATH")
                .or_else(|| config.env.get("PATH"))
                .or(inherited_path.as_ref())
                .map(String::as_str);
            for missing in node_files(node, path_var, &mut looked_up) {
                problems.push((n, missing));
            }
        }
    }
    problems
}

/// What the file system said, by question: a large stack repeats the same few commands and
/// directories, and each answer costs a `stat` per PATH entry (100,000 nodes: 1.4 s).
/// Keys are the paths' bytes, hashed with a fast hash (they come from the user's own file):
/// hashing a `Path` walks its components, and with SipHash that was 2-3 % of a `check` of
/// 100,000 nodes. Two spellings of one path are asked twice, never answered wrong.
#[derive(Default)]
struct Lookups<'c> {
    directories: FastMap<&'c OsStr, bool>,
    programs: FastMap<(&'c str, &'c OsStr, Option<&'c str>), Result<(), String>>,
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

impl<'c> Lookups<'c> {
    fn is_dir(&mut self, dir: &'c Path) -> bool {
        *self
            .directories
            .entry(dir.as_os_str())
            .or_insert_with(|| dir.is_dir())
    }

    fn resolve(
        &mut self,
        program: &'c str,
        cwd: &'c Path,
        path_var: Option<&'c str>,
    ) -> Result<(), String> {
        self.programs
            .entry((program, cwd.as_os_str(), path_var))
            .or_insert_with(|| resolve(program, cwd, path_var).map(drop))
            .clone()
    }
}

fn node_files<'c>(
    node: &'c Node,
    path_var: Option<&'c str>,
    looked_up: &mut Lookups<'c>,
) -> Vec<Missing> {
    let mut problems = Vec::new();
    if !looked_up.is_dir(&node.cwd) {
        problems.push(Missing::Directory(format!(
            "working directory {} does not exist",
            node.cwd.display()
        )));
        return problems;
    }
    let program = match &node.command {
        Command::Argv(argv) => argv.first().map_or("", String::as_str),
        Command::Shell(_) => "/bin/sh",
    };
    if let Err(reason) = looked_up.resolve(program, &node.cwd, path_var) {
        problems.push(Missing::Command(format!("command `{program}` {reason}")));
    }
    if let Probe::Exec { argv } = &node.health.probe {
        let program = argv.first().map_or("", String::as_str);
        if let Err(reason) = looked_up.resolve(program, &node.cwd, path_var) {
            problems.push(Missing::Command(format!(
                "health check command `{program}` {reason}"
            )));
        }
    }
    problems
}

/// Finds `program` the way exec does: a path with a slash is taken relative to `cwd`,
/// anything else is searched in PATH.
fn resolve(program: &str, cwd: &Path, path_var: Option<&str>) -> Result<PathBuf, String> {
    if program.contains('/') {
        let path = cwd.join(program);
        return executable(&path).map(|()| path);
    }
    for dir in path_var
        .unwrap_or_default()
        .split(':')
        .filter(|d| !d.is_empty())
    {
        let candidate = cwd.join(dir).join(program);
        if executable(&candidate).is_ok() {
            return Ok(candidate);
        }
    }
    Err("is not found in PATH".into())
}

fn executable(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Err(_) => Err(format!("does not exist ({})", path.display())),
        Ok(m) if !m.is_file() => Err(format!("is not a file ({})", path.display())),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => {
            Err(format!("is not executable ({})", path.display()))
        }
        Ok(_) => Ok(()),
    }
}

/// Whether another process listens on `port` on either loopback: health checks of `localhost`
/// try both, so a process on [::1] alone would pass them in the service's place.
fn port_taken(port: u16) -> bool {
    if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err() {
        return true;
    }
    match TcpListener::bind((std::net::Ipv6Addr::LOCALHOST, port)) {
        Ok(_) => false,
        // No IPv6 on this machine: nothing can listen there either.
        Err(e) => e.kind() == std::io::ErrorKind::AddrInUse,
    }
}

/// The process listening on `port`, where /proc tells: the socket's inode from
/// `/proc/net/tcp{,6}`, then the process holding that inode among its descriptors (only
/// processes we may look into: our own user's, or all as root).
fn port_holder(port: u16) -> Option<(u32, String)> {
    const LISTEN: &str = "0A";
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .find_map(|table| {
            let text = std::fs::read_to_string(table).ok()?;
            text.lines().skip(1).find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let local_port = fields.get(1)?.rsplit(':').next()?;
                (u16::from_str_radix(local_port, 16).ok()? == port && *fields.get(3)? == LISTEN)
                    .then(|| fields.get(9).map(|i| (*i).to_owned()))?
            })
        })?;
    let target = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str())
        });
        if holds {
            let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            return Some((pid, name.trim().to_owned()));
        }
    }
    None
}
