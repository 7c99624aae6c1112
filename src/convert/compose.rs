//! docker compose files. Containers become processes: what only a container has (an image,
//! volumes, networks, published ports) is listed as not carried over.

use std::collections::BTreeSet;
use std::path::Path;

use yaml_serde::Value;

use super::Broken;
use super::draft::{Command, Draft, DraftDependency, DraftNode, Health, Probe};
use super::duration::go_duration;

/// Keys that belong to containers, with why they are not carried over.
const CONTAINER_ONLY: &[(&str, &str)] = &[
    (
        "image",
        "containers become processes: the command runs on this machine, not in the image",
    ),
    (
        "build",
        "containers become processes: there is no image to build",
    ),
    (
        "volumes",
        "containers become processes: they see this machine's files",
    ),
    (
        "networks",
        "containers become processes: they share this machine's network",
    ),
    (
        "ports",
        "containers become processes: a process listens on its own port, nothing is published",
    ),
    (
        "expose",
        "containers become processes: nothing is published",
    ),
];

/// Keys this importer understands.
const CARRIED: &[&str] = &[
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "working_dir",
    "depends_on",
    "healthcheck",
    "restart",
    "stop_signal",
    "stop_grace_period",
    "profiles",
];

pub(super) fn import(
    text: &str,
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Draft, Broken> {
    let doc = super::parse_yaml(text)?;
    let services = super::top_mapping(
        &doc,
        "services",
        "a compose file lists its services under `services:`",
    )?;
    let mut draft = Draft {
        format: "docker compose",
        ..Draft::default()
    };
    for key in doc.as_mapping().into_iter().flat_map(|m| m.keys()) {
        match key.as_str().unwrap_or_default() {
            "services" | "version" | "name" => {}
            x if x.starts_with("x-") => draft.lose(x, "an extension field, ignored"),
            other => draft.lose(
                other,
                "top-level networks, volumes, secrets and configs belong to containers",
            ),
        }
    }
    let one_shots = waited_to_complete(services);
    for (name, service) in services {
        let name = name.as_str().unwrap_or_default().to_owned();
        let mut node = DraftNode {
            name: name.clone(),
            component: one_shots.contains(name.as_str()),
            ..DraftNode::default()
        };
        let mut importer = ServiceImporter {
            draft: &mut draft,
            at: format!("services.{name}"),
            dir,
            env,
        };
        importer.service(&mut node, service);
        draft.nodes.push(node);
    }
    draft.settle_names();
    Ok(draft)
}

/// The services another waits for with `service_completed_successfully`: one-shot steps,
/// components in dagstart.
fn waited_to_complete(services: &yaml_serde::Mapping) -> BTreeSet<&str> {
    services
        .values()
        .filter_map(|s| s.get("depends_on").and_then(Value::as_mapping))
        .flat_map(|deps| deps.iter())
        .filter(|(_, spec)| {
            spec.get("condition").and_then(Value::as_str) == Some("service_completed_successfully")
        })
        .filter_map(|(name, _)| name.as_str())
        .collect()
}

struct ServiceImporter<'a> {
    draft: &'a mut Draft,
    at: String,
    dir: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl ServiceImporter<'_> {
    fn lose(&mut self, key: &str, why: impl Into<String>) {
        self.draft.lose(format!("{}.{key}", self.at), why);
    }

    fn service(&mut self, node: &mut DraftNode, service: &Value) {
        let Some(fields) = service.as_mapping() else {
            self.lose("", "not a mapping");
            return;
        };
        for key in fields.keys().filter_map(Value::as_str) {
            if let Some((_, why)) = CONTAINER_ONLY.iter().find(|(k, _)| *k == key) {
                self.lose(key, *why);
            } else if key.starts_with("x-") {
                self.lose(key, "an extension field, ignored");
            } else if !CARRIED.contains(&key) {
                self.lose(key, "a container setting with no equivalent for a process");
            }
        }
        node.command = self.command(service);
        self.environment(node, service.get("environment"));
        if let Some(files) = service.get("env_file") {
            self.env_files(node, files);
        }
        if let Some(dir) = service.get("working_dir").and_then(Value::as_str) {
            if self.dir.join(dir).is_dir() {
                node.cwd = Some(self.text(dir));
            } else {
                self.lose(
                    "working_dir",
                    format!("{dir} is a path in the container and does not exist here"),
                );
            }
        }
        if let Some(deps) = service.get("depends_on") {
            self.depends_on(node, deps);
        }
        if let Some(check) = service.get("healthcheck") {
            self.healthcheck(node, check);
        }
        if let Some(restart) = service.get("restart").and_then(Value::as_str) {
            self.restart(node, restart);
        }
        if let Some(signal) = service.get("stop_signal").and_then(Value::as_str) {
            node.stop_signal = Some(signal.to_owned());
        }
        if let Some(grace) = service.get("stop_grace_period") {
            match scalar(grace).as_deref().and_then(go_duration) {
                Some(d) => node.stop_timeout = Some(d),
                None => self.lose("stop_grace_period", "not a duration"),
            }
        }
        if let Some(profiles) = service.get("profiles") {
            node.profiles = profiles
                .as_sequence()
                .into_iter()
                .flatten()
                .filter_map(scalar)
                .collect();
        }
    }

    /// `entrypoint` then `command`, each a string (split like a shell) or a list.
    fn command(&mut self, service: &Value) -> Command {
        // Each of `entrypoint` and `command` that is given: whether it is a list, its words.
        let parts: Vec<(bool, Vec<String>)> = ["entrypoint", "command"]
            .iter()
            .filter_map(|key| service.get(key))
            .map(|value| match value {
                Value::Sequence(items) => (
                    true,
                    items
                        .iter()
                        .filter_map(scalar)
                        .map(|s| self.text(&s))
                        .collect(),
                ),
                other => (
                    false,
                    scalar(other)
                        .map(|s| vec![self.text(&s)])
                        .unwrap_or_default(),
                ),
            })
            .collect();
        if parts.is_empty() {
            let image = service
                .get("image")
                .and_then(Value::as_str)
                .unwrap_or("its image");
            self.lose(
                "command",
                format!(
                    "none: the container ran {image}'s own; the service fails until you write one"
                ),
            );
            return Command::Shell(format!(
                "echo 'no command: it ran {image} in a container; write one in services.toml' >&2; exit 1"
            ));
        }
        if parts.iter().all(|(list, _)| *list) {
            return Command::Argv(parts.into_iter().flat_map(|(_, words)| words).collect());
        }
        // A string is split like a shell does; list items are quoted into the same line.
        let words: Vec<String> = parts
            .into_iter()
            .flat_map(|(list, words)| {
                if list {
                    words.iter().map(|w| shell_quote(w)).collect()
                } else {
                    words
                }
            })
            .collect();
        Command::Line(words.join(" "))
    }

    fn environment(&mut self, node: &mut DraftNode, value: Option<&Value>) {
        match value {
            Some(Value::Mapping(map)) => {
                for (k, v) in map {
                    let (Some(k), Some(v)) = (k.as_str(), scalar(v)) else {
                        // `KEY:` with no value passes dagstart's own on, as it does anyway.
                        continue;
                    };
                    node.env.insert(k.to_owned(), self.text(&v));
                }
            }
            Some(Value::Sequence(items)) => {
                for item in items.iter().filter_map(Value::as_str) {
                    if let Some((k, v)) = item.split_once('=') {
                        node.env.insert(k.to_owned(), self.text(v));
                    }
                }
            }
            _ => {}
        }
    }

    /// `env_file`: a path, a list of paths, or of `{ path, required }`; the variables are
    /// copied into the node's `env` (dagstart reads one dotenv file, for expansion only).
    fn env_files(&mut self, node: &mut DraftNode, value: &Value) {
        let entries: Vec<(String, bool)> = match value {
            Value::Sequence(items) => items
                .iter()
                .filter_map(|item| match item {
                    Value::Mapping(_) => Some((
                        item.get("path").and_then(Value::as_str)?.to_owned(),
                        item.get("required")
                            .and_then(Value::as_bool)
                            .unwrap_or(true),
                    )),
                    other => other.as_str().map(|p| (p.to_owned(), true)),
                })
                .collect(),
            other => other
                .as_str()
                .map(|p| vec![(p.to_owned(), true)])
                .unwrap_or_default(),
        };
        for (path, required) in entries {
            match std::fs::read_to_string(self.dir.join(&path)) {
                Ok(text) => {
                    node.env.extend(dotenv(&text));
                    self.lose(
                        "env_file",
                        format!("{path}: its variables are copied into `env` (edit them there)"),
                    );
                }
                Err(e) if required => {
                    self.lose(
                        "env_file",
                        format!("{path} cannot be read ({e}); nothing copied"),
                    );
                }
                Err(_) => {}
            }
        }
    }

    fn depends_on(&mut self, node: &mut DraftNode, value: &Value) {
        match value {
            Value::Sequence(names) => {
                // The short form waits for the start only.
                for name in names.iter().filter_map(Value::as_str) {
                    node.depends_on.push(DraftDependency::new(name, "started"));
                }
            }
            Value::Mapping(map) => {
                for (name, spec) in map {
                    let Some(name) = name.as_str() else { continue };
                    let condition = match spec.get("condition").and_then(Value::as_str) {
                        None | Some("service_started") => "started",
                        Some("service_healthy") => "healthy",
                        Some("service_completed_successfully") => "completed",
                        Some(other) => {
                            self.lose(
                                &format!("depends_on.{name}.condition"),
                                format!(
                                    "`{other}` is not a compose condition; waiting for the start"
                                ),
                            );
                            "started"
                        }
                    };
                    node.depends_on.push(DraftDependency {
                        required: spec.get("required").and_then(Value::as_bool) != Some(false),
                        restart: spec.get("restart").and_then(Value::as_bool) == Some(true),
                        ..DraftDependency::new(name, condition)
                    });
                }
            }
            _ => self.lose("depends_on", "neither a list nor a mapping"),
        }
    }

    fn healthcheck(&mut self, node: &mut DraftNode, check: &Value) {
        if check.get("disable").and_then(Value::as_bool) == Some(true) {
            return;
        }
        let probe = match check.get("test") {
            Some(Value::Sequence(items)) => {
                let words: Vec<String> = items.iter().filter_map(scalar).collect();
                match words.split_first() {
                    Some((kind, rest)) if kind == "CMD" => Some(Probe::Exec(rest.to_vec())),
                    Some((kind, rest)) if kind == "CMD-SHELL" => {
                        Some(Probe::Exec(vec!["sh".into(), "-c".into(), rest.join(" ")]))
                    }
                    Some((kind, _)) if kind == "NONE" => None,
                    _ => {
                        self.lose("healthcheck.test", "neither CMD, CMD-SHELL nor NONE");
                        None
                    }
                }
            }
            Some(Value::String(line)) => {
                Some(Probe::Exec(vec!["sh".into(), "-c".into(), line.clone()]))
            }
            _ => None,
        };
        let Some(probe) = probe else { return };
        if node.component {
            self.lose(
                "healthcheck",
                "this service is waited for to complete: a one-shot step's readiness is its exit",
            );
            return;
        }
        let mut health = Health::of(probe);
        let duration = |key: &str| {
            check
                .get(key)
                .and_then(scalar)
                .as_deref()
                .and_then(go_duration)
        };
        health.interval = duration("interval");
        health.timeout = duration("timeout");
        for key in ["retries", "start_period", "start_interval"] {
            if check.get(key).is_some() {
                self.lose(
                    &format!("healthcheck.{key}"),
                    "dagstart probes from the start, fast at first, and a failed probe never ends a start: it waits up to `startup_timeout` (60s unless set)",
                );
            }
        }
        node.health = Some(health);
    }

    fn restart(&mut self, node: &mut DraftNode, policy: &str) {
        match policy {
            "no" => {}
            "always" | "unless-stopped" => node.restart = Some("always"),
            "on-failure" => node.restart = Some("on-failure"),
            other => match other.strip_prefix("on-failure:").map(str::parse::<u32>) {
                Some(Ok(max)) => {
                    node.restart = Some("on-failure");
                    node.max_restarts = Some(max);
                    self.lose(
                        "restart",
                        format!("on-failure:{max}: dagstart counts the {max} restarts within `restart_window`, not in all"),
                    );
                }
                _ => self.lose(
                    "restart",
                    format!("`{other}` is not a compose restart policy"),
                ),
            },
        }
        if node.component && node.restart.is_some() {
            node.restart = None;
            node.max_restarts = None;
            self.lose("restart", "a one-shot step is not restarted");
        }
    }

    /// `text` with compose's interpolation turned into dagstart's (see [`interpolate`]).
    fn text(&mut self, text: &str) -> String {
        let (out, notes) = interpolate(text, self.env);
        for note in notes {
            let at = self.at.clone();
            self.draft.lose(at, note);
        }
        out
    }
}

/// A scalar as text (compose allows numbers and booleans where it means strings).
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Single quotes around a word that a shell-like split would otherwise break.
pub(crate) fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// `KEY=value` lines of a dotenv file (comments, blank lines and `export ` skipped, one level
/// of quotes removed).
pub(crate) fn dotenv(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_owned(), v.to_owned()))
        })
        .collect()
}

/// Compose's interpolation in dagstart's: `${VAR}`, `${VAR:-default}`, `${VAR:?message}` and
/// `$$` are the same; `$VAR` becomes `${VAR}`; `${VAR-default}` and `${VAR?message}` (unset
/// only) become their `:` forms (which also treat empty as unset); `${VAR:+alt}` and
/// `${VAR+alt}`, which dagstart cannot say, are resolved now from `env`. Returns the text and
/// a note for each change of meaning.
pub(crate) fn interpolate(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> (String, Vec<String>) {
    let mut out = String::with_capacity(text.len());
    let mut notes = Vec::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push_str("$$");
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            let Some(close) = inner.find('}') else {
                out.push_str(&rest[dollar..]);
                return (out, notes);
            };
            let body = &inner[..close];
            rest = &inner[close + 1..];
            let name_end = body
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(body.len());
            let (name, op) = body.split_at(name_end);
            match op {
                "" => out.push_str(&format!("${{{name}}}")),
                _ if op.starts_with(":-") || op.starts_with(":?") => {
                    out.push_str(&format!("${{{body}}}"));
                }
                _ if op.starts_with('-') || op.starts_with('?') => {
                    out.push_str(&format!("${{{name}:{op}}}"));
                    notes.push(format!(
                        "`${{{body}}}` became `${{{name}:{op}}}`: an empty {name} now counts as unset"
                    ));
                }
                _ if op.starts_with(":+") || op.starts_with('+') => {
                    let alt = op.trim_start_matches(':')[1..].to_owned();
                    let value = env(name);
                    let set = match (op.starts_with(':'), &value) {
                        (true, Some(v)) => !v.is_empty(),
                        (false, Some(_)) => true,
                        (_, None) => false,
                    };
                    out.push_str(if set { &alt } else { "" });
                    notes.push(format!(
                        "`${{{body}}}` was resolved at import ({name} {}): dagstart has no `:+`",
                        if set { "set" } else { "unset" }
                    ));
                }
                _ => out.push_str(&format!("${{{body}}}")),
            }
        } else {
            let name_end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if name_end == 0 {
                out.push('$');
            } else {
                out.push_str(&format!("${{{}}}", &after[..name_end]));
            }
            rest = &after[name_end..];
        }
    }
    out.push_str(rest);
    (out, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn interpolation_becomes_dagstarts() {
        let (out, notes) = interpolate("a ${X} ${Y:-d} $Z $$ ${W-e}", &no_env);
        assert_eq!(out, "a ${X} ${Y:-d} ${Z} $$ ${W:-e}");
        assert_eq!(notes.len(), 1);
        let set = |name: &str| (name == "ON").then(|| "1".to_owned());
        let (out, notes) = interpolate("${ON:+yes}/${OFF:+no}", &set);
        assert_eq!(out, "yes/");
        assert_eq!(notes.len(), 2);
    }
}
