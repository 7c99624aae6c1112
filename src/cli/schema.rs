//! `dagstart schema`: a JSON Schema of services.toml, for editors (taplo / Even Better TOML)
//! to complete and validate with. A test keeps it in step with the keys the loader accepts.

use serde_json::{Value, json};

fn duration(description: &str) -> Value {
    json!({ "type": "string", "pattern": "^\\s*([0-9]+\\s*[a-zµ]+\\s*)+$", "description": description })
}

fn string_or_argv(description: &str) -> Value {
    json!({ "description": description, "oneOf": [
        { "type": "string" },
        { "type": "array", "items": { "type": "string" }, "minItems": 1 }
    ]})
}

fn probes() -> serde_json::Map<String, Value> {
    let mut map = serde_json::Map::new();
    map.insert("http".into(), json!({ "type": "string", "description": "a path (with `port`) or an http:// URL; any 2xx answer" }));
    map.insert(
        "tcp".into(),
        json!({ "description": "a port, or host:port; a connect succeeds", "oneOf": [
            { "type": "integer", "minimum": 0, "maximum": 65535 }, { "type": "string" }
        ]}),
    );
    map.insert("exec".into(), string_or_argv("a command that exits 0"));
    map
}

fn health() -> Value {
    let mut properties = probes();
    properties.insert(
        "log".into(),
        json!({ "type": "string", "description": "a regex matching a line of stdout or stderr" }),
    );
    properties.insert(
        "notify".into(),
        json!({ "const": true, "description": "READY=1 on NOTIFY_SOCKET" }),
    );
    properties.insert(
        "ready_fd".into(),
        json!({ "type": "integer", "minimum": 3, "description": "a write to this fd" }),
    );
    properties.insert(
        "interval".into(),
        duration("upper bound of the pause between attempts (default 1s)"),
    );
    properties.insert(
        "timeout".into(),
        duration("time limit of one attempt (default 2s)"),
    );
    properties.insert("retries".into(), json!({ "type": "integer", "minimum": 0, "deprecated": true, "description": "ignored (a warning): failed probes never end a start; use startup_timeout, or liveness once ready" }));
    properties.insert(
        "start_period".into(),
        json!({ "type": "string", "deprecated": true, "description": "ignored (a warning): a slow starter is waited for up to startup_timeout" }),
    );
    json!({ "type": "object", "additionalProperties": false, "properties": properties })
}

fn liveness() -> Value {
    let mut properties = probes();
    properties.insert(
        "interval".into(),
        duration("time between checks (default 5s)"),
    );
    properties.insert(
        "timeout".into(),
        duration("time limit of one check (default 2s)"),
    );
    properties.insert("failure_threshold".into(), json!({ "type": "integer", "minimum": 1, "description": "misses in a row that restart it (default 3)" }));
    json!({ "type": "object", "additionalProperties": false, "properties": properties })
}

fn common_node_properties() -> serde_json::Map<String, Value> {
    let env = json!({ "type": "object", "additionalProperties": { "type": ["string", "number", "boolean"] } });
    let conditions = ["started", "healthy", "completed", "listening"];
    let properties = json!({
        "command": string_or_argv("argv array, or one string split like a shell (no shell runs)"),
        "shell": { "type": "boolean", "description": "run the command string through /bin/sh -c" },
        "cwd": { "type": "string", "description": "working directory, relative to services.toml" },
        "env": env,
        "depends_on": { "oneOf": [
            { "type": "array", "items": { "type": "string" } },
            { "type": "object", "additionalProperties": { "oneOf": [
                { "enum": conditions },
                { "type": "object", "additionalProperties": false, "properties": {
                    "condition": { "enum": conditions },
                    "required": { "type": "boolean", "description": "false: go on without it when it fails or is not part of the run (default true)" },
                    "restart": { "type": "boolean", "description": "restart this node when it restarts (default: restart_with_dependency)" },
                    "milestone": { "type": "boolean", "description": "needed once to start, then the link is dropped" }
                }}
            ]}}
        ]},
        "startup_timeout": duration("from spawn to ready (default 60s; <NAME>_TIMEOUT overrides)"),
        "retries": { "type": "integer", "minimum": 0, "description": "extra start attempts" },
        "required": { "type": "boolean", "description": "false: its failure never blocks startup" },
        "stop_signal": { "type": "string", "description": "e.g. SIGTERM, SIGINT" },
        "stop_timeout": duration("grace before SIGKILL (default 10s)"),
        "lazy": { "type": "boolean", "description": "start only when needed" },
        "restart_with_dependency": { "type": "boolean", "description": "restart when a dependency restarts" },
        "watch": { "type": "array", "items": { "type": "string" }, "description": "globs whose changes restart the node" },
        "user": { "type": ["string", "integer"], "description": "run as this user (name or uid; dagstart must run as root)" },
        "group": { "type": ["string", "integer"], "description": "with user: run with this group instead of the user's own" },
        "log_max_size": { "type": "string", "description": "rotate this node's log at this size (default: settings.log_max_size)" },
        "log_keep": { "type": "integer", "minimum": 0, "description": "rotated logs kept for this node (default: settings.log_keep)" },
        "output": { "enum": ["log", "discard"], "description": "log (default): stdout and stderr are logged; discard: to /dev/null" },
        "profiles": { "type": "array", "items": { "type": "string", "pattern": "^[A-Za-z0-9_-]+$" }, "description": "run only with one of these profiles active (run --profile, DAGSTART_PROFILES)" },
        "host": { "type": "string", "description": "with [cluster]: the [hosts] entry it runs on (default: the host of `dagstart run`)" },
    });
    match properties {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

fn service() -> Value {
    let mut properties = common_node_properties();
    let extra = json!({
        "port": { "oneOf": [{ "type": "integer", "minimum": 0, "maximum": 65535 }, { "type": "string" }] },
        "health": health(),
        "watchdog": duration("longest gap between WATCHDOG=1 pings (with notify)"),
        "sockets": { "type": "array", "items": { "type": ["string", "integer"] }, "description": "socket activation" },
        "restart": { "enum": ["no", "on-failure", "always"] },
        "restart_backoff": duration("pause before the first restart (default 500ms)"),
        "restart_backoff_max": duration("cap of the restart pause (default 30s)"),
        "max_restarts": { "type": "integer", "minimum": 0 },
        "restart_window": duration("window of max_restarts (default 60s)"),
        "liveness": liveness(),
    });
    if let Value::Object(extra) = extra {
        properties.extend(extra);
    }
    json!({ "type": "object", "additionalProperties": false, "required": ["command"], "properties": properties })
}

fn component() -> Value {
    json!({ "type": "object", "additionalProperties": false, "required": ["command"], "properties": common_node_properties() })
}

/// The whole schema.
pub fn schema() -> Value {
    let name = "^[A-Za-z0-9_-]+$";
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "dagstart services.toml",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "settings": { "type": "object", "additionalProperties": false, "properties": {
                "max_workers": { "oneOf": [{ "type": "integer", "minimum": 1 }, { "enum": ["auto", "unlimited"] }] },
                "startup_timeout": duration("budget for the whole startup (default 5m)"),
                "parallel": { "type": "boolean" },
                "parallel_health_checks": { "type": "boolean" },
                "log_dir": { "type": "string" },
                "shutdown_timeout": duration("budget for the whole shutdown (default 30s)"),
                "env_file": { "type": "string" },
                "log_max_size": { "type": "string", "description": "rotate a node's log at this size, e.g. \"100MiB\" (default)" },
                "log_keep": { "type": "integer", "minimum": 0, "description": "rotated logs kept per node (default 5)" },
                "pid_namespace": { "type": "boolean", "description": "run the nodes in a PID namespace of their own where the system allows it (default true)" }
            }},
            "env": { "type": "object", "additionalProperties": { "type": ["string", "number", "boolean"] } },
            "services": { "type": "object", "propertyNames": { "pattern": name }, "additionalProperties": service() },
            "components": { "type": "object", "propertyNames": { "pattern": name }, "additionalProperties": component() },
            "cluster": { "type": "object", "additionalProperties": false, "properties": {
                "name": { "type": "string", "pattern": name, "description": "the run's key in etcd (default: the project directory's name)" },
                "etcd": { "type": "array", "minItems": 1, "items": { "type": "string", "pattern": "^http://" }, "description": "etcd client URLs (DAGSTART_ETCD overrides, comma-separated)" },
                "lease_ttl": duration("how fast a lost host is noticed: whole seconds, at least 2s (default 3s)")
            }},
            "hosts": { "type": "object", "propertyNames": { "pattern": name }, "additionalProperties": {
                "type": "object", "additionalProperties": false, "properties": {
                    "address": { "type": "string", "description": "given to every node as DAGSTART_HOST_<NAME>_ADDR" }
                }
            }}
        }
    })
}
