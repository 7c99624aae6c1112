//! `dagstart config`: the resolved configuration, written back out as TOML or JSON.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Command, Config, MaxWorkers, Node, NodeKind, Probe};

fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// A TOML string.
pub(crate) fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// A TOML array of strings.
pub(crate) fn quote_all(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", quoted.join(", "))
}

fn max_workers(w: MaxWorkers) -> Value {
    match w {
        MaxWorkers::Unlimited => json!("unlimited"),
        MaxWorkers::Auto => json!("auto"),
        MaxWorkers::Fixed(n) => json!(n),
    }
}

/// Writes `key = value`, with a comment naming the variable the value came from.
fn line(out: &mut String, config: &Config, path: &str, key: &str, value: impl std::fmt::Display) {
    let full = if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    };
    match config.from_env.get(&full) {
        Some(var) => {
            let _ = writeln!(out, "{key} = {value}  # from {var}");
        }
        None => {
            let _ = writeln!(out, "{key} = {value}");
        }
    }
}

fn probe_toml(probe: &Probe) -> Option<String> {
    match probe {
        Probe::Spawned | Probe::Exited => None,
        Probe::Http { url } => Some(format!("http = {}", quote(url))),
        Probe::Tcp { host, port } => Some(format!("tcp = {}", quote(&format!("{host}:{port}")))),
        Probe::Exec { argv } => Some(format!("exec = {}", quote_all(argv))),
        Probe::Log { pattern } => Some(format!("log = {}", quote(pattern.as_str()))),
        Probe::Notify => Some("notify = true".to_owned()),
        Probe::ReadyFd { fd } => Some(format!("ready_fd = {fd}")),
    }
}

/// The configuration as TOML, every default filled in.
pub fn render_toml(config: &Config) -> String {
    let s = &config.settings;
    let mut out = String::from("[settings]\n");
    let workers = match max_workers(s.max_workers) {
        Value::String(w) => quote(&w),
        n => n.to_string(),
    };
    line(&mut out, config, "settings", "max_workers", workers);
    line(
        &mut out,
        config,
        "settings",
        "startup_timeout",
        quote(&duration(s.startup_timeout)),
    );
    line(&mut out, config, "settings", "parallel", s.parallel);
    line(
        &mut out,
        config,
        "settings",
        "parallel_health_checks",
        s.parallel_health_checks,
    );
    line(
        &mut out,
        config,
        "settings",
        "log_dir",
        quote(&s.log_dir.display().to_string()),
    );
    line(
        &mut out,
        config,
        "settings",
        "shutdown_timeout",
        quote(&duration(s.shutdown_timeout)),
    );
    line(
        &mut out,
        config,
        "settings",
        "log_max_size",
        quote(&size(s.log_max_size)),
    );
    line(&mut out, config, "settings", "log_keep", s.log_keep);
    line(
        &mut out,
        config,
        "settings",
        "pid_namespace",
        s.pid_namespace,
    );
    if !config.env.is_empty() {
        out.push_str("\n[env]\n");
        for (k, v) in &config.env {
            line(&mut out, config, "env", &quote(k), quote(v));
        }
    }
    cluster_toml(&mut out, config);
    for node in &config.nodes {
        node_toml(&mut out, config, node);
    }
    out
}

fn cluster_toml(out: &mut String, config: &Config) {
    if let Some(cluster) = &config.cluster {
        out.push_str("\n[cluster]\n");
        line(out, config, "cluster", "name", quote(&cluster.name));
        line(out, config, "cluster", "etcd", quote_all(&cluster.etcd));
        line(
            out,
            config,
            "cluster",
            "lease_ttl",
            quote(&duration(cluster.lease_ttl)),
        );
    }
    for host in &config.hosts {
        let path = format!("hosts.{}", host.name);
        let _ = writeln!(out, "\n[{path}]");
        if let Some(address) = &host.address {
            line(out, config, &path, "address", quote(address));
        }
    }
}

fn node_toml(out: &mut String, config: &Config, node: &Node) {
    let path = format!("{}.{}", node.kind.section(), node.name);
    let _ = writeln!(out, "\n[{path}]");
    match &node.command {
        Command::Argv(argv) => line(out, config, &path, "command", quote_all(argv)),
        Command::Shell(script) => {
            line(out, config, &path, "command", quote(script));
            line(out, config, &path, "shell", true);
        }
    }
    line(
        out,
        config,
        &path,
        "cwd",
        quote(&node.cwd.display().to_string()),
    );
    if !node.env.is_empty() {
        let pairs: Vec<String> = node
            .env
            .iter()
            .map(|(k, v)| format!("{} = {}", quote(k), quote(v)))
            .collect();
        line(
            out,
            config,
            &path,
            "env",
            format!("{{ {} }}", pairs.join(", ")),
        );
    }
    let deps: Vec<String> = node
        .depends_on
        .iter()
        .map(|d| format!("{} = {}", quote(&d.name), dependency_toml(node, d)))
        .collect();
    let deps = if deps.is_empty() {
        "{}".to_owned()
    } else {
        format!("{{ {} }}", deps.join(", "))
    };
    line(out, config, &path, "depends_on", deps);
    if let Some(port) = node.port {
        line(out, config, &path, "port", port);
    }
    if let Some(probe) = probe_toml(&node.health.probe) {
        let h = &node.health;
        let health = format!(
            "{{ {probe}, interval = {}, timeout = {} }}",
            quote(&duration(h.interval)),
            quote(&duration(h.timeout)),
        );
        line(out, config, &path, "health", health);
    }
    line(
        out,
        config,
        &path,
        "startup_timeout",
        quote(&duration(node.startup_timeout)),
    );
    line(out, config, &path, "retries", node.retries);
    line(out, config, &path, "required", node.required);
    line(
        out,
        config,
        &path,
        "stop_signal",
        quote(node.stop_signal.as_str()),
    );
    line(
        out,
        config,
        &path,
        "stop_timeout",
        quote(&duration(node.stop_timeout)),
    );
    if let Some(watchdog) = node.watchdog {
        line(out, config, &path, "watchdog", quote(&duration(watchdog)));
    }
    if !node.sockets.is_empty() {
        let sockets: Vec<String> = node.sockets.iter().map(ToString::to_string).collect();
        line(out, config, &path, "sockets", quote_all(&sockets));
    }
    if node.lazy {
        line(out, config, &path, "lazy", true);
    }
    if node.kind == NodeKind::Service {
        let r = &node.restart;
        line(out, config, &path, "restart", quote(r.policy.as_str()));
        line(
            out,
            config,
            &path,
            "restart_backoff",
            quote(&duration(r.backoff)),
        );
        line(
            out,
            config,
            &path,
            "restart_backoff_max",
            quote(&duration(r.backoff_max)),
        );
        line(out, config, &path, "max_restarts", r.max_restarts);
        line(
            out,
            config,
            &path,
            "restart_window",
            quote(&duration(r.window)),
        );
    }
    if let Some(l) = &node.liveness {
        if let Some(probe) = probe_toml(&l.probe) {
            let liveness = format!(
                "{{ {probe}, interval = {}, timeout = {}, failure_threshold = {} }}",
                quote(&duration(l.interval)),
                quote(&duration(l.timeout)),
                l.failure_threshold
            );
            line(out, config, &path, "liveness", liveness);
        }
    }
    if node.restart_with_dependency {
        line(out, config, &path, "restart_with_dependency", true);
    }
    if !node.profiles.is_empty() {
        line(out, config, &path, "profiles", quote_all(&node.profiles));
    }
    if let Some(host) = &node.host {
        line(out, config, &path, "host", quote(host));
    }
    if !node.watch.is_empty() {
        line(out, config, &path, "watch", quote_all(&node.watch));
    }
    if let Some(run_as) = &node.run_as {
        line(out, config, &path, "user", quote(&run_as.user));
        line(out, config, &path, "group", run_as.gid);
    }
    if let Some(max) = node.log_max_size {
        line(out, config, &path, "log_max_size", quote(&size(max)));
    }
    if let Some(keep) = node.log_keep {
        line(out, config, &path, "log_keep", keep);
    }
    if node.output != super::Output::Log {
        line(out, config, &path, "output", quote(node.output.as_str()));
    }
}

fn probe_json(probe: &Probe) -> Value {
    match probe {
        Probe::Spawned => json!({ "spawned": true }),
        Probe::Exited => json!({ "exited": true }),
        Probe::Http { url } => json!({ "http": url }),
        Probe::Tcp { host, port } => json!({ "tcp": format!("{host}:{port}") }),
        Probe::Exec { argv } => json!({ "exec": argv }),
        Probe::Log { pattern } => json!({ "log": pattern.as_str() }),
        Probe::Notify => json!({ "notify": true }),
        Probe::ReadyFd { fd } => json!({ "ready_fd": fd }),
    }
}

/// One node as JSON: every resolved value that decides how it runs.
fn node_json(node: &Node) -> Value {
    let h = &node.health;
    let mut health = probe_json(&h.probe);
    if let Value::Object(map) = &mut health {
        map.insert("interval".into(), json!(duration(h.interval)));
        map.insert("timeout".into(), json!(duration(h.timeout)));
    }
    let command = match &node.command {
        Command::Argv(argv) => json!(argv),
        Command::Shell(script) => json!(script),
    };
    let deps: serde_json::Map<String, Value> = node
        .depends_on
        .iter()
        .map(|d| {
            let entry = json!({
                "condition": d.condition.as_str(),
                "required": d.required,
                "restart": d.restart,
                "milestone": d.milestone,
            });
            (d.name.clone(), entry)
        })
        .collect();
    json!({
        "command": command,
        "shell": matches!(node.command, Command::Shell(_)),
        "cwd": node.cwd.display().to_string(),
        "env": node.env,
        "depends_on": deps,
        "port": node.port,
        "health": health,
        "startup_timeout": duration(node.startup_timeout),
        "retries": node.retries,
        "required": node.required,
        "stop_signal": node.stop_signal.as_str(),
        "stop_timeout": duration(node.stop_timeout),
        "watchdog": node.watchdog.map(duration),
        "sockets": node.sockets.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "lazy": node.lazy,
        "restart": node.restart.policy.as_str(),
        "restart_backoff": duration(node.restart.backoff),
        "restart_backoff_max": duration(node.restart.backoff_max),
        "max_restarts": node.restart.max_restarts,
        "restart_window": duration(node.restart.window),
        "liveness": node.liveness.as_ref().map(|l| {
            let mut v = probe_json(&l.probe);
            if let Value::Object(map) = &mut v {
                map.insert("interval".into(), json!(duration(l.interval)));
                map.insert("timeout".into(), json!(duration(l.timeout)));
                map.insert("failure_threshold".into(), json!(l.failure_threshold));
            }
            v
        }),
        "restart_with_dependency": node.restart_with_dependency,
        "watch": node.watch,
        "user": node.run_as.as_ref().map(|r| &r.user),
        "group": node.run_as.as_ref().map(|r| r.gid),
        "log_max_size": node.log_max_size.map(size),
        "log_keep": node.log_keep,
        "output": node.output,
        "profiles": node.profiles,
        "host": node.host,
    })
}

/// A node's definition in one string, with the environment every node gets: two runs of a node
/// with equal fingerprints run the same process the same way (what `reload` leaves alone).
/// `"healthy"`, or the long form where the entry differs from a plain one of this node:
/// `{ condition = "healthy", required = false }`.
fn dependency_toml(node: &Node, dep: &super::Dependency) -> String {
    let mut parts = Vec::new();
    // `required` defaults to the node's own.
    if dep.required != node.required {
        parts.push(format!("required = {}", dep.required));
    }
    if dep.milestone {
        parts.push("milestone = true".to_owned());
    }
    // `restart` defaults to the node's `restart_with_dependency` (never for a milestone).
    if dep.restart != (node.restart_with_dependency && !dep.milestone) {
        parts.push(format!("restart = {}", dep.restart));
    }
    let condition = quote(dep.condition.as_str());
    if parts.is_empty() {
        condition
    } else {
        format!("{{ condition = {condition}, {} }}", parts.join(", "))
    }
}

pub fn node_fingerprint(config: &Config, node: &Node) -> String {
    json!({ "node": node_json(node), "kind": node.kind, "env": config.env }).to_string()
}

/// The configuration as JSON; `from_env` maps key paths to the variables that set them.
pub fn render_json(config: &Config) -> String {
    let s = &config.settings;
    let mut services = serde_json::Map::new();
    let mut components = serde_json::Map::new();
    for node in &config.nodes {
        let value = node_json(node);
        let target = match node.kind {
            NodeKind::Service => &mut services,
            NodeKind::Component => &mut components,
        };
        target.insert(node.name.clone(), value);
    }
    let doc = json!({
        "settings": {
            "max_workers": max_workers(s.max_workers),
            "startup_timeout": duration(s.startup_timeout),
            "parallel": s.parallel,
            "parallel_health_checks": s.parallel_health_checks,
            "log_dir": s.log_dir.display().to_string(),
            "shutdown_timeout": duration(s.shutdown_timeout),
            "log_max_size": size(s.log_max_size),
            "log_keep": s.log_keep,
            "pid_namespace": s.pid_namespace,
        },
        "env": config.env,
        "services": services,
        "components": components,
        "cluster": config.cluster.as_ref().map(|c| json!({
            "name": c.name,
            "etcd": c.etcd,
            "lease_ttl": duration(c.lease_ttl),
        })),
        "hosts": config.hosts.iter().map(|h| (h.name.clone(), json!({ "address": h.address })))
            .collect::<serde_json::Map<String, Value>>(),
        "from_env": config.from_env,
    });
    serde_json::to_string_pretty(&doc).expect("config serializes")
}

/// A size the way services.toml writes it: "100MiB", or bytes when no unit divides it.
fn size(bytes: u64) -> String {
    for (unit, scale) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes % scale == 0 {
            return format!("{}{unit}", bytes / scale);
        }
    }
    format!("{bytes}B")
}
