//! process-compose files: processes run by a shell, with conditions, probes, restart and
//! shutdown settings.

use std::collections::BTreeSet;

use yaml_serde::Value;

use super::Broken;
use super::draft::{Command, Draft, DraftDependency, DraftNode, Health, Probe};
use super::duration::seconds_f64;

/// Process keys this importer understands.
const CARRIED: &[&str] = &[
    "command",
    "working_dir",
    "environment",
    "depends_on",
    "readiness_probe",
    "liveness_probe",
    "ready_log_line",
    "availability",
    "shutdown",
    "disabled",
    "is_daemon",
    "description",
];

pub(super) fn import(text: &str) -> Result<Draft, Broken> {
    let doc = super::parse_yaml(text)?;
    let processes = super::top_mapping(
        &doc,
        "processes",
        "a process-compose file lists its processes under `processes:`",
    )?;
    let mut draft = Draft {
        format: "process-compose",
        ..Draft::default()
    };
    for key in doc.as_mapping().into_iter().flat_map(|m| m.keys()) {
        match key.as_str().unwrap_or_default() {
            "processes" | "version" => {}
            "environment" => draft.env.extend(env_list(doc.get("environment"))),
            other => draft.lose(other, "a process-compose setting with no equivalent"),
        }
    }
    let (one_shots, log_ready) = waited_for(processes);
    for (name, process) in processes {
        let name = name.as_str().unwrap_or_default().to_owned();
        let mut node = DraftNode {
            name: name.clone(),
            component: one_shots.contains(name.as_str()),
            ..DraftNode::default()
        };
        Process {
            draft: &mut draft,
            at: format!("processes.{name}"),
        }
        .import(&mut node, process, log_ready.contains(name.as_str()));
        draft.nodes.push(node);
    }
    draft.settle_names();
    Ok(draft)
}

/// Processes waited for to complete (components in dagstart), and those waited for by their
/// ready log line.
fn waited_for(processes: &yaml_serde::Mapping) -> (BTreeSet<&str>, BTreeSet<&str>) {
    let mut one_shots = BTreeSet::new();
    let mut log_ready = BTreeSet::new();
    for (name, condition) in processes
        .values()
        .filter_map(|p| p.get("depends_on").and_then(Value::as_mapping))
        .flat_map(|deps| deps.iter())
        .filter_map(|(name, spec)| Some((name.as_str()?, spec.get("condition")?.as_str()?)))
    {
        match condition {
            "process_completed" | "process_completed_successfully" => {
                one_shots.insert(name);
            }
            "process_log_ready" => {
                log_ready.insert(name);
            }
            _ => {}
        }
    }
    (one_shots, log_ready)
}

fn env_list(value: Option<&Value>) -> Vec<(String, String)> {
    value
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|item| {
            let (k, v) = item.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect()
}

struct Process<'a> {
    draft: &'a mut Draft,
    at: String,
}

impl Process<'_> {
    fn lose(&mut self, key: &str, why: impl Into<String>) {
        self.draft.lose(format!("{}.{key}", self.at), why);
    }

    fn import(&mut self, node: &mut DraftNode, process: &Value, log_ready: bool) {
        for key in process
            .as_mapping()
            .into_iter()
            .flat_map(|m| m.keys())
            .filter_map(Value::as_str)
        {
            if !CARRIED.contains(&key) {
                self.lose(key, "a process-compose setting with no equivalent");
            }
        }
        // process-compose runs every command with `bash -c` (its `shell` setting).
        node.command = Command::Shell(
            process
                .get("command")
                .and_then(Value::as_str)
                .unwrap_or("true")
                .to_owned(),
        );
        if let Some(dir) = process.get("working_dir").and_then(Value::as_str) {
            node.cwd = Some(dir.to_owned());
        }
        node.env.extend(env_list(process.get("environment")));
        if let Some(deps) = process.get("depends_on").and_then(Value::as_mapping) {
            self.depends_on(node, deps);
        }
        if let Some(probe) = process.get("readiness_probe") {
            if node.component {
                self.lose(
                    "readiness_probe",
                    "this process is waited for to complete: a one-shot step's readiness is its exit",
                );
            } else {
                node.health = self.probe("readiness_probe", probe, false).map(|(h, _)| h);
            }
        }
        if let Some(line) = process.get("ready_log_line").and_then(Value::as_str) {
            if node.health.is_some() {
                self.lose("ready_log_line", "the readiness probe is used instead");
            } else {
                node.health = Some(Health::of(Probe::Log(regex::escape(line))));
            }
        } else if log_ready {
            self.lose(
                "ready_log_line",
                "none, though a dependent waits for it: it counts as ready once started",
            );
        }
        if let Some(probe) = process.get("liveness_probe") {
            node.liveness = self.probe("liveness_probe", probe, true);
        }
        if let Some(availability) = process.get("availability") {
            self.availability(node, availability);
        }
        if let Some(shutdown) = process.get("shutdown") {
            self.shutdown(node, shutdown);
        }
        if process.get("disabled").and_then(Value::as_bool) == Some(true) {
            node.lazy = true;
            self.lose(
                "disabled",
                "carried as `lazy = true`: it starts only when a node that needs it starts",
            );
        }
        if process.get("is_daemon").and_then(Value::as_bool) == Some(true) {
            self.lose(
                "is_daemon",
                "dagstart supervises processes that stay in the foreground: run the daemon's foreground mode",
            );
        }
    }

    fn depends_on(&mut self, node: &mut DraftNode, deps: &yaml_serde::Mapping) {
        for (name, spec) in deps {
            let Some(name) = name.as_str() else { continue };
            let condition = match spec.get("condition").and_then(Value::as_str) {
                None | Some("process_started") => "started",
                Some("process_healthy") | Some("process_log_ready") => "healthy",
                Some("process_completed_successfully") => "completed",
                Some("process_completed") => {
                    self.lose(
                        &format!("depends_on.{name}"),
                        "process_completed: dagstart waits for a successful exit (0), not any",
                    );
                    "completed"
                }
                Some(other) => {
                    self.lose(
                        &format!("depends_on.{name}"),
                        format!("`{other}` is not a condition; waiting for the start"),
                    );
                    "started"
                }
            };
            node.depends_on.push(DraftDependency::new(name, condition));
        }
    }

    /// A readiness or liveness probe; with its failure threshold for liveness.
    fn probe(&mut self, key: &str, probe: &Value, liveness: bool) -> Option<(Health, u32)> {
        let kind = if let Some(exec) = probe.get("exec") {
            let command = exec
                .get("command")
                .and_then(Value::as_str)
                .unwrap_or("true");
            Probe::Exec(vec!["sh".into(), "-c".into(), command.to_owned()])
        } else if let Some(http) = probe.get("http_get") {
            let host = http
                .get("host")
                .and_then(Value::as_str)
                .unwrap_or("127.0.0.1");
            let scheme = http.get("scheme").and_then(Value::as_str).unwrap_or("http");
            let port = http
                .get("port")
                .and_then(number_text)
                .unwrap_or_else(|| "80".into());
            let path = http.get("path").and_then(Value::as_str).unwrap_or("/");
            if scheme == "https" {
                self.lose(
                    &format!("{key}.http_get"),
                    "https is not probed: carried as a tcp probe of the port",
                );
                Probe::Tcp(format!("{host}:{port}"))
            } else {
                Probe::Http(format!("http://{host}:{port}{path}"))
            }
        } else {
            self.lose(key, "neither exec nor http_get");
            return None;
        };
        let seconds = |k: &str| probe.get(k).and_then(Value::as_f64).and_then(seconds_f64);
        let mut health = Health::of(kind);
        health.interval = seconds("period_seconds");
        health.timeout = seconds("timeout_seconds");
        for k in ["initial_delay_seconds", "success_threshold"] {
            if probe.get(k).is_some() {
                self.lose(
                    &format!("{key}.{k}"),
                    "dagstart probes from the start; one success is enough",
                );
            }
        }
        let failures = probe
            .get("failure_threshold")
            .and_then(Value::as_u64)
            .map(|n| n as u32);
        if !liveness && failures.is_some() {
            self.lose(
                &format!("{key}.failure_threshold"),
                "a failed probe never ends a start: dagstart waits up to `startup_timeout`",
            );
        }
        Some((health, failures.unwrap_or(3)))
    }

    fn availability(&mut self, node: &mut DraftNode, availability: &Value) {
        match availability.get("restart").and_then(Value::as_str) {
            None | Some("no") => {}
            Some("always") => node.restart = Some("always"),
            Some("on_failure") => node.restart = Some("on-failure"),
            Some("exit_on_failure") => self.lose(
                "availability.restart",
                "exit_on_failure: a required node that fails for good stops what needs it (exit code 7), not the whole run",
            ),
            Some(other) => self.lose("availability.restart", format!("`{other}` is not a policy")),
        }
        if let Some(backoff) = availability
            .get("backoff_seconds")
            .and_then(Value::as_f64)
            .and_then(seconds_f64)
        {
            node.restart_backoff = Some(backoff);
        }
        if let Some(max) = availability.get("max_restarts").and_then(Value::as_u64) {
            node.max_restarts = Some(max as u32);
        }
        if node.component && node.restart.is_some() {
            node.restart = None;
            node.restart_backoff = None;
            node.max_restarts = None;
            self.lose("availability", "a one-shot step is not restarted");
        }
    }

    fn shutdown(&mut self, node: &mut DraftNode, shutdown: &Value) {
        if let Some(number) = shutdown.get("signal").and_then(Value::as_i64) {
            match nix::sys::signal::Signal::try_from(number as i32) {
                Ok(signal) => node.stop_signal = Some(signal.as_str().to_owned()),
                Err(_) => self.lose("shutdown.signal", format!("{number} is not a signal")),
            }
        }
        if let Some(timeout) = shutdown
            .get("timeout_seconds")
            .and_then(Value::as_f64)
            .and_then(seconds_f64)
        {
            node.stop_timeout = Some(timeout);
        }
        if shutdown.get("command").is_some() {
            self.lose(
                "shutdown.command",
                "dagstart stops a node with its stop_signal, then SIGKILL after stop_timeout",
            );
        }
    }
}

fn number_text(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}
