//! No input, however broken, makes the loader panic: arbitrary bytes and arbitrary TOML.

use std::path::Path;

use dagstart::engine::config::{Environment, load_str};
use proptest::prelude::*;

const KEYS: &[&str] = &[
    "command",
    "shell",
    "cwd",
    "env",
    "depends_on",
    "port",
    "health",
    "startup_timeout",
    "retries",
    "required",
    "stop_signal",
    "stop_timeout",
    "http",
    "tcp",
    "exec",
    "log",
    "interval",
    "timeout",
    "start_period",
    "max_workers",
    "parallel",
    "log_dir",
    "a",
    "b",
    "c",
    "comand",
];

/// Any TOML value, biased towards the shapes services.toml uses.
fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        "[a-c0-9 ${}:?/._-]{0,12}".prop_map(|s| format!("{s:?}")),
        Just("\"${X:?unset}\"".to_owned()),
        Just("\"1s\"".to_owned()),
        Just("\"SIGTERM\"".to_owned()),
        Just("1.5".to_owned()),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..4).prop_map(|kv| {
                let mut seen = std::collections::HashSet::new();
                let pairs: Vec<String> = kv
                    .into_iter()
                    .filter(|(k, _)| seen.insert(*k))
                    .map(|(k, v)| format!("{k} = {v}"))
                    .collect();
                format!("{{ {} }}", pairs.join(", "))
            }),
        ]
    })
}

/// A document of `[section.name]` tables with arbitrary keys and values.
fn document() -> impl Strategy<Value = String> {
    let table = (
        prop::sample::select(&["services", "components", "settings", "env", "other"][..]),
        prop::sample::select(&["a", "b", "c", "bad name"][..]),
        prop::collection::vec((prop::sample::select(KEYS), value()), 0..6),
    );
    prop::collection::vec(table, 0..6).prop_map(|tables| {
        let mut out = String::new();
        let mut headers = std::collections::HashSet::new();
        for (section, name, entries) in tables {
            let header = if section == "settings" || section == "env" {
                format!("[{section}]")
            } else {
                format!("[{section}.\"{name}\"]")
            };
            if !headers.insert(header.clone()) {
                continue;
            }
            out.push_str(&header);
            out.push('\n');
            let mut seen = std::collections::HashSet::new();
            for (k, v) in entries {
                if seen.insert(k) {
                    out.push_str(&format!("{k} = {v}\n"));
                }
            }
        }
        out
    })
}

fn load(text: String) {
    let env = Environment::from_pairs([("X", "x")]);
    match load_str(Path::new("services.toml"), text, &env) {
        Ok(config) => {
            let graph = dagstart::engine::graph::Graph::build(&config);
            let all = vec![true; graph.len()];
            let _ = dagstart::views::graph_render::render_text(&config, &graph, &all, None);
            let _ = dagstart::engine::config::render_toml(&config);
        }
        Err(error) => {
            let _ = dagstart::cli::error::render(
                &dagstart::Error::Config(error.clone()),
                &dagstart::cli::error::plain_handler(),
            );
            let _ = error.to_json();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        load(String::from_utf8_lossy(&bytes).into_owned());
    }

    #[test]
    fn arbitrary_toml_never_panics(doc in document()) {
        load(doc);
    }
}
