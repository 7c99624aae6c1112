//! services.toml as systemd units (`dagstart export systemd`): one `<project>.target` that
//! pulls the stack in, a `<project>-<node>.service` per node, and a `.socket` per node with
//! `sockets`. What systemd cannot say is listed, as `import` does.
//!
//! Readiness that systemd cannot see by itself (http, tcp, exec, a log line) becomes an
//! `ExecStartPost=` running `dagstart probe NODE`, so that `After=` waits for what
//! `depends_on` waited for: systemd counts a unit started once its `ExecStartPost=` succeeded.

use std::fmt::Write as _;
use std::path::Path;

use super::draft::{Lost, duration};
use crate::engine::config::{
    Condition, Config, Dependency, Node, NodeKind, Output, Probe, RestartPolicy, SocketAddress,
};

/// One file the export writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFile {
    pub name: String,
    pub text: String,
}

/// What the units need to know besides the configuration.
#[derive(Debug, Clone)]
pub struct SystemdExport<'a> {
    /// The prefix of every unit: `<project>.target`, `<project>-<node>.service`.
    pub project: &'a str,
    /// The dagstart binary `ExecStartPost=` runs (`dagstart probe`).
    pub dagstart: &'a Path,
    /// The services.toml `dagstart probe` reads (absolute).
    pub services_toml: &'a Path,
}

/// The unit files of `config`, the target first, and what could not be carried.
pub fn to_systemd(config: &Config, export: &SystemdExport<'_>) -> (Vec<UnitFile>, Vec<Lost>) {
    let mut lost = Vec::new();
    let mut files = vec![target(config, export)];
    for node in &config.nodes {
        let mut lose = |key: &str, why: &str| {
            lost.push(Lost {
                what: format!("{}.{}.{key}", node.kind.section(), node.name),
                why: why.to_owned(),
            });
        };
        files.push(service(config, node, export, &mut lose));
        if !node.sockets.is_empty() {
            files.push(socket(node, export));
        }
    }
    (files, lost)
}

/// A unit name for a node: `<project>-<node>.service` (or `.socket`).
pub fn unit_name(project: &str, node: &str, suffix: &str) -> String {
    format!("{project}-{node}.{suffix}")
}

/// The project name from a directory name: the characters systemd takes in a unit name.
pub fn project_name(dir: &Path) -> String {
    let raw = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let clean = crate::engine::config::clean_name(&raw);
    if clean.is_empty() {
        "dagstart".to_owned()
    } else {
        clean
    }
}

fn header(what: &str) -> String {
    format!("# {what}, exported from services.toml by `dagstart export systemd`.\n")
}

/// `<project>.target`: starting it starts the stack (what a lazy node needs is started by its
/// dependents, a socket-activated one by its socket).
fn target(config: &Config, export: &SystemdExport<'_>) -> UnitFile {
    let mut out = header("The stack");
    out += "[Unit]\n";
    let _ = writeln!(out, "Description=dagstart stack {}", export.project);
    for node in &config.nodes {
        let mut units = Vec::new();
        if !node.sockets.is_empty() {
            units.push(unit_name(export.project, &node.name, "socket"));
        }
        if !node.lazy {
            units.push(unit_name(export.project, &node.name, "service"));
        }
        // A required node that fails fails the stack, as it fails dagstart's startup.
        let kind = if node.required { "Requires" } else { "Wants" };
        for unit in units {
            let _ = writeln!(out, "{kind}={unit}");
            let _ = writeln!(out, "After={unit}");
        }
    }
    out += "\n[Install]\nWantedBy=multi-user.target\n";
    UnitFile {
        name: format!("{}.target", export.project),
        text: out,
    }
}

fn service(
    config: &Config,
    node: &Node,
    export: &SystemdExport<'_>,
    lose: &mut dyn FnMut(&str, &str),
) -> UnitFile {
    let mut unit = header(&format!("`{}`", node.name));
    unit += "[Unit]\n";
    let _ = writeln!(
        unit,
        "Description={} {} of the dagstart stack {}",
        node.kind.as_str(),
        node.name,
        export.project
    );
    let _ = writeln!(unit, "PartOf={}.target", export.project);
    for dep in &node.depends_on {
        dependency_lines(&mut unit, config, dep, export.project, lose);
    }
    if node.kind == NodeKind::Service && node.restart.policy != RestartPolicy::No {
        let _ = writeln!(unit, "StartLimitBurst={}", node.restart.max_restarts);
        let _ = writeln!(
            unit,
            "StartLimitIntervalSec={}",
            duration(node.restart.window)
        );
    }
    unit += "\n[Service]\n";
    service_type(&mut unit, node, lose);
    let _ = writeln!(unit, "ExecStart={}", exec_line(&node.command.argv(), node));
    if let Some(post) = readiness_probe(node, export, lose) {
        let _ = writeln!(unit, "ExecStartPost={post}");
    }
    let _ = writeln!(
        unit,
        "WorkingDirectory={}",
        escape_specifiers(&node.cwd.display().to_string())
    );
    for (key, value) in crate::engine::process::node_env(&config.env, node) {
        let _ = writeln!(unit, "Environment={}", quote(&format!("{key}={value}")));
    }
    if let Some(run_as) = &node.run_as {
        let _ = writeln!(unit, "User={}", run_as.user);
        let _ = writeln!(unit, "Group={}", run_as.gid);
    }
    if node.kind == NodeKind::Service {
        let restart = match node.restart.policy {
            RestartPolicy::No => "no",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Always => "always",
        };
        let _ = writeln!(unit, "Restart={restart}");
        if node.restart.policy != RestartPolicy::No {
            let _ = writeln!(unit, "RestartSec={}", duration(node.restart.backoff));
            // RestartSteps=/RestartMaxDelaySec= (systemd 254) are not in every systemd yet.
            lose(
                "restart_backoff",
                "systemd waits RestartSec= before every restart (it doubles from systemd 254 with RestartSteps=)",
            );
        }
    }
    let _ = writeln!(unit, "KillSignal={}", node.stop_signal.as_str());
    let _ = writeln!(unit, "TimeoutStopSec={}", duration(node.stop_timeout));
    let _ = writeln!(unit, "TimeoutStartSec={}", duration(node.startup_timeout));
    if node.output == Output::Discard {
        unit += "StandardOutput=null\nStandardError=null\n";
    }
    let unsaid: [(bool, &str, &str); 6] = [
        (
            node.liveness.is_some(),
            "liveness",
            "systemd has no liveness probe (a notify service can use WatchdogSec=)",
        ),
        (
            !node.watch.is_empty(),
            "watch",
            "systemd does not watch files (a .path unit could)",
        ),
        (
            node.retries > 0,
            "retries",
            "systemd does not retry a failed start by itself; Restart= covers failures once up",
        ),
        (
            node.log_max_size.is_some() || node.log_keep.is_some(),
            "log_max_size",
            "the output goes to the journal, rotated by journald",
        ),
        (
            node.lazy && node.sockets.is_empty() && !has_dependents(config, node),
            "lazy",
            "nothing depends on it: nothing starts it (start it by hand)",
        ),
        (
            !node.profiles.is_empty(),
            "profiles",
            "systemd has no profiles: the unit is part of the target",
        ),
    ];
    for (present, key, why) in unsaid {
        if present {
            lose(key, why);
        }
    }
    UnitFile {
        name: unit_name(export.project, &node.name, "service"),
        text: unit,
    }
}

fn has_dependents(config: &Config, node: &Node) -> bool {
    config
        .nodes
        .iter()
        .any(|n| n.depends_on.iter().any(|d| d.name == node.name))
}

/// `Requires=`/`Wants=`, `After=` and `PartOf=` for one dependency.
fn dependency_lines(
    unit: &mut String,
    config: &Config,
    dep: &Dependency,
    project: &str,
    lose: &mut dyn FnMut(&str, &str),
) {
    let target = &config.nodes[dep.node];
    let what = format!("depends_on.{}", dep.name);
    let name = if dep.condition == Condition::Listening {
        // Its socket is what a `listening` dependent needs: bound before either starts.
        unit_name(project, &target.name, "socket")
    } else {
        unit_name(project, &target.name, "service")
    };
    let pull = if dep.required && !dep.milestone {
        "Requires"
    } else {
        "Wants"
    };
    let _ = writeln!(unit, "{pull}={name}");
    let _ = writeln!(unit, "After={name}");
    if dep.restart {
        let _ = writeln!(unit, "PartOf={name}");
    }
    if dep.milestone {
        lose(
            &what,
            "systemd has no start-only dependency: the milestone became Wants= and After=, so its failure no longer skips this node",
        );
    }
    let spawned_is_ready = matches!(target.health.probe, Probe::Spawned);
    if dep.condition == Condition::Started && !spawned_is_ready {
        lose(
            &what,
            "systemd orders after the whole start: `started` became `healthy`",
        );
    }
}

/// `Type=`: how systemd knows the node started.
fn service_type(unit: &mut String, node: &Node, lose: &mut dyn FnMut(&str, &str)) {
    match (&node.kind, &node.health.probe) {
        (NodeKind::Component, _) => *unit += "Type=oneshot\nRemainAfterExit=yes\n",
        (_, Probe::Notify) => {
            *unit += "Type=notify\nNotifyAccess=all\n";
            if let Some(watchdog) = node.watchdog {
                let _ = writeln!(unit, "WatchdogSec={}", duration(watchdog));
            }
        }
        (_, Probe::ReadyFd { fd }) => {
            *unit += "Type=exec\n";
            lose(
                "health",
                &format!(
                    "systemd has no readiness fd (s6-style fd {fd}): the unit is ready once it runs"
                ),
            );
        }
        _ => *unit += "Type=exec\n",
    }
}

/// `dagstart probe NODE` for readiness systemd cannot see by itself.
fn readiness_probe(
    node: &Node,
    export: &SystemdExport<'_>,
    lose: &mut dyn FnMut(&str, &str),
) -> Option<String> {
    match &node.health.probe {
        Probe::Http { .. } | Probe::Tcp { .. } | Probe::Exec { .. } | Probe::Log { .. }
            if node.kind == NodeKind::Service =>
        {
            if matches!(node.health.probe, Probe::Log { .. }) && node.output == Output::Discard {
                lose("health", "a log probe with discarded output never matches");
            }
            let argv = [
                export.dagstart.display().to_string(),
                "--file".to_owned(),
                export.services_toml.display().to_string(),
                "probe".to_owned(),
                node.name.clone(),
            ];
            Some(exec_line(&argv, node))
        }
        _ => None,
    }
}

/// `<project>-<node>.socket` for a node with `sockets`.
fn socket(node: &Node, export: &SystemdExport<'_>) -> UnitFile {
    let mut out = header(&format!("The sockets of `{}`", node.name));
    out += "[Unit]\n";
    let _ = writeln!(out, "Description=sockets of {}", node.name);
    let _ = writeln!(out, "PartOf={}.target", export.project);
    out += "\n[Socket]\n";
    for address in &node.sockets {
        let listen = match address {
            SocketAddress::Tcp(addr) => addr.to_string(),
            SocketAddress::Unix(path) => escape_specifiers(&path.display().to_string()),
        };
        let _ = writeln!(out, "ListenStream={listen}");
    }
    let _ = writeln!(
        out,
        "Service={}",
        unit_name(export.project, &node.name, "service")
    );
    UnitFile {
        name: unit_name(export.project, &node.name, "socket"),
        text: out,
    }
}

/// An `ExecStart=` command line: the program made absolute when it is a relative path (systemd
/// takes an absolute path or a bare name it looks up itself), each word quoted as systemd
/// splits them, `$` and `%` escaped (systemd would expand them).
fn exec_line(argv: &[String], node: &Node) -> String {
    let mut words: Vec<String> = argv.to_vec();
    if let Some(program) = words.first_mut() {
        if program.contains('/') && !program.starts_with('/') {
            *program = node.cwd.join(&*program).display().to_string();
        }
    }
    words
        .iter()
        .map(|w| quote(w).replace('$', "$$"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A word as systemd reads it: bare when it is plain, else in double quotes with `\` and `"`
/// escaped; `%` doubled everywhere (specifiers).
fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@".contains(c));
    let text = if plain {
        word.to_owned()
    } else {
        let mut out = String::with_capacity(word.len() + 2);
        out.push('"');
        for c in word.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    };
    escape_specifiers(&text)
}

fn escape_specifiers(text: &str) -> String {
    text.replace('%', "%%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_as_systemd_splits_them() {
        assert_eq!(quote("plain-word_1.0"), "plain-word_1.0");
        assert_eq!(quote("two words"), "\"two words\"");
        assert_eq!(quote("say \"hi\"\\"), "\"say \\\"hi\\\"\\\\\"");
        assert_eq!(quote("100%"), "\"100%%\"");
        assert_eq!(quote(""), "\"\"");
    }

    #[test]
    fn the_project_name_is_what_a_unit_name_takes() {
        assert_eq!(project_name(Path::new("/srv/my shop")), "my_shop");
        assert_eq!(project_name(Path::new("/")), "dagstart");
    }
}
