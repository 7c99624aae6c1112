//! services.toml as a process-compose file (`dagstart export process-compose`): the closest
//! format. What it cannot say is listed, as `import` does.

use yaml_serde::{Mapping, Value};

use super::draft::Lost;
use crate::engine::config::{Command, Condition, Config, Node, NodeKind, Probe, RestartPolicy};

/// The process-compose file of `config`, and what it could not carry.
pub fn to_process_compose(config: &Config) -> (String, Vec<Lost>) {
    let mut lost = Vec::new();
    let mut doc = Mapping::new();
    doc.insert("version".into(), "0.5".into());
    if !config.env.is_empty() {
        doc.insert("environment".into(), env_list(&config.env));
    }
    let mut processes = Mapping::new();
    for node in &config.nodes {
        processes.insert(
            node.name.as_str().into(),
            Value::Mapping(process(config, node, &mut lost)),
        );
    }
    doc.insert("processes".into(), Value::Mapping(processes));
    let mut text =
        String::from("# Exported from services.toml by `dagstart export process-compose`.\n");
    if lost.is_empty() {
        text += "# Everything was carried over.\n";
    } else {
        text += "#\n# Not carried over:\n";
        for l in &lost {
            text += &format!("#   - {}: {}\n", l.what, l.why);
        }
    }
    text += &yaml_serde::to_string(&Value::Mapping(doc)).expect("a mapping of strings serializes");
    (text, lost)
}

fn env_list(env: &std::collections::BTreeMap<String, String>) -> Value {
    Value::Sequence(env.iter().map(|(k, v)| format!("{k}={v}").into()).collect())
}

fn process(config: &Config, node: &Node, lost: &mut Vec<Lost>) -> Mapping {
    let mut lose = |key: &str, why: &str| {
        lost.push(Lost {
            what: format!("{}.{}.{key}", node.kind.section(), node.name),
            why: why.into(),
        });
    };
    let mut p = Mapping::new();
    p.insert("command".into(), command_line(&node.command).into());
    p.insert("working_dir".into(), node.cwd.display().to_string().into());
    if !node.env.is_empty() {
        p.insert("environment".into(), env_list(&node.env));
    }
    if !node.depends_on.is_empty() {
        let mut deps = Mapping::new();
        for dep in &node.depends_on {
            let condition = match dep.condition {
                Condition::Started => "process_started",
                // A dependency ready by a line of output is waited for by that line.
                Condition::Healthy
                    if matches!(config.nodes[dep.node].health.probe, Probe::Log { .. }) =>
                {
                    "process_log_ready"
                }
                Condition::Healthy => "process_healthy",
                Condition::Completed => "process_completed_successfully",
                Condition::Listening => {
                    lose(
                        "depends_on",
                        "`listening` (socket activation) became process_started",
                    );
                    "process_started"
                }
            };
            let mut spec = Mapping::new();
            spec.insert("condition".into(), condition.into());
            deps.insert(dep.name.as_str().into(), Value::Mapping(spec));
        }
        p.insert("depends_on".into(), Value::Mapping(deps));
    }
    if node.kind == NodeKind::Service {
        match &node.health.probe {
            Probe::Log { pattern } => {
                p.insert("ready_log_line".into(), unescape(pattern.as_str()).into());
            }
            probe => {
                if let Some(mut probe) = probe_spec(probe, &mut lose, "health") {
                    probe.insert("period_seconds".into(), seconds(node.health.interval));
                    probe.insert("timeout_seconds".into(), seconds(node.health.timeout));
                    p.insert("readiness_probe".into(), Value::Mapping(probe));
                }
            }
        }
    }
    if let Some(liveness) = &node.liveness {
        if let Some(mut probe) = probe_spec(&liveness.probe, &mut lose, "liveness") {
            probe.insert("period_seconds".into(), seconds(liveness.interval));
            probe.insert("timeout_seconds".into(), seconds(liveness.timeout));
            probe.insert(
                "failure_threshold".into(),
                liveness.failure_threshold.into(),
            );
            p.insert("liveness_probe".into(), Value::Mapping(probe));
        }
    }
    if node.restart.policy != RestartPolicy::No {
        let mut availability = Mapping::new();
        let policy = match node.restart.policy {
            RestartPolicy::Always => "always",
            _ => "on_failure",
        };
        availability.insert("restart".into(), policy.into());
        availability.insert("backoff_seconds".into(), seconds(node.restart.backoff));
        availability.insert("max_restarts".into(), node.restart.max_restarts.into());
        p.insert("availability".into(), Value::Mapping(availability));
    }
    let mut shutdown = Mapping::new();
    shutdown.insert("signal".into(), (node.stop_signal as i32).into());
    shutdown.insert("timeout_seconds".into(), seconds(node.stop_timeout));
    p.insert("shutdown".into(), Value::Mapping(shutdown));
    if node.lazy {
        p.insert("disabled".into(), true.into());
        lose(
            "lazy",
            "became `disabled: true`: started only when a dependent asks for it",
        );
    }
    for (present, key, why) in [
        (
            !node.sockets.is_empty(),
            "sockets",
            "process-compose has no socket activation",
        ),
        (
            node.watchdog.is_some(),
            "watchdog",
            "process-compose has no watchdog",
        ),
        (
            node.run_as.is_some(),
            "user",
            "process-compose runs everything as itself",
        ),
        (
            !node.watch.is_empty(),
            "watch",
            "process-compose does not watch files",
        ),
        (
            !node.required,
            "required",
            "process-compose has no optional processes",
        ),
        (
            node.depends_on.iter().any(|d| d.restart),
            "depends_on.restart",
            "process-compose does not restart dependents",
        ),
        (
            node.depends_on.iter().any(|d| !d.required),
            "depends_on.required",
            "process-compose has no optional dependencies: they became required",
        ),
        (
            node.depends_on.iter().any(|d| d.milestone),
            "depends_on.milestone",
            "process-compose keeps every dependency: the milestones became lasting links",
        ),
        (
            !node.profiles.is_empty(),
            "profiles",
            "process-compose has no profiles: the node always runs",
        ),
        (
            node.retries > 0,
            "retries",
            "process-compose does not retry a failed start",
        ),
    ] {
        if present {
            lose(key, why);
        }
    }
    p
}

/// A probe's `exec` or `http_get`; `None` (and listed) for what process-compose cannot probe.
fn probe_spec(probe: &Probe, lose: &mut impl FnMut(&str, &str), key: &str) -> Option<Mapping> {
    let mut spec = Mapping::new();
    match probe {
        Probe::Exec { argv } => {
            let mut exec = Mapping::new();
            exec.insert(
                "command".into(),
                command_line(&Command::Argv(argv.clone())).into(),
            );
            spec.insert("exec".into(), Value::Mapping(exec));
        }
        Probe::Http { url } => {
            let rest = url.strip_prefix("http://").unwrap_or(url);
            let (authority, path) = rest
                .split_once('/')
                .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
            let (host, port) = authority.rsplit_once(':').unwrap_or((authority, "80"));
            let mut http = Mapping::new();
            http.insert("host".into(), host.into());
            http.insert("scheme".into(), "http".into());
            http.insert("path".into(), path.into());
            http.insert(
                "port".into(),
                port.parse::<u16>()
                    .map_or_else(|_| Value::from(port), Value::from),
            );
            spec.insert("http_get".into(), Value::Mapping(http));
        }
        Probe::Tcp { host, port } => {
            let mut exec = Mapping::new();
            exec.insert(
                "command".into(),
                format!("bash -c 'exec 3<>/dev/tcp/{host}/{port}'").into(),
            );
            spec.insert("exec".into(), Value::Mapping(exec));
        }
        Probe::Spawned | Probe::Exited => return None,
        Probe::Notify | Probe::ReadyFd { .. } | Probe::Log { .. } => {
            lose(key, "process-compose has no notify or descriptor readiness");
            return None;
        }
    }
    Some(spec)
}

/// A command as one shell line: an argv quoted word by word; `sh -c SCRIPT` as the script.
fn command_line(command: &Command) -> String {
    match command {
        Command::Shell(script) => script.clone(),
        Command::Argv(argv) => match argv.as_slice() {
            [sh, c, script] if (sh == "sh" || sh == "/bin/sh") && c == "-c" => script.clone(),
            words => words
                .iter()
                .map(|w| super::compose::shell_quote(w))
                .collect::<Vec<_>>()
                .join(" "),
        },
    }
}

/// A regex that `import` escaped from a literal line, back to the line.
fn unescape(pattern: &str) -> String {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn seconds(d: std::time::Duration) -> Value {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        (s as u64).into()
    } else {
        s.into()
    }
}
