//! No input, however broken, makes the loader panic: arbitrary bytes and arbitrary TOML, and
//! the kept corpus of inputs that once did harm (tests/fixtures/hostile). A failing case that
//! proptest finds is saved beside this file (`loader_fuzz.proptest-regressions`, to commit)
//! and replayed first on every later run.

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
    "profiles",
    "condition",
    "restart",
    "milestone",
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
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("regressions"))), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        load(String::from_utf8_lossy(&bytes).into_owned());
    }

    #[test]
    fn arbitrary_toml_never_panics(doc in document()) {
        load(doc);
    }
}

/// Hostile shapes that found panics, stack overflows and quadratic time before (the hardening
/// issue): deep nesting, very long lines, huge names, long cycles, many errors, odd bytes.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        // Nesting deeper than the parser's limit, in arrays or inline tables.
        (1usize..300, any::<bool>()).prop_map(|(depth, arrays)| {
            let (open, close) = if arrays { ("[", "]") } else { ("{a=", "}") };
            let inner = if arrays { "" } else { "1" };
            format!(
                "[services.a]\ncommand = \"a\"\nenv = {}{inner}{}\n",
                open.repeat(depth),
                close.repeat(depth)
            )
        }),
        // A problem far right on a long line.
        (0usize..120_000).prop_map(|pad| format!(
            "[services.a]\ncommand = \"a\"\n{}startup_timeout = \"x\"\n",
            " ".repeat(pad)
        )),
        // Node names of any length, valid characters or not.
        (1usize..70_000, prop::sample::select(&["n", "é", " "][..]))
            .prop_map(|(len, c)| format!("[services.\"{}\"]\ncommand = \"a\"\n", c.repeat(len))),
        // A cycle through many nodes, with or without a way out.
        (2usize..3000).prop_map(|n| {
            (0..n)
                .map(|i| {
                    let dep = if i == 0 { n - 1 } else { i - 1 };
                    format!("[services.n{i}]\ncommand = \"a\"\ndepends_on = [\"n{dep}\"]\n")
                })
                .collect()
        }),
        // Many errors at once.
        (1usize..3000).prop_map(|n| {
            (0..n)
                .map(|i| format!("[services.n{i}]\ncommand = \"a\"\nstartup_timeout = \"{i}\"\ndepends_on = [\"m{i}\"]\n"))
                .collect()
        }),
        // Durations and sizes at the edges.
        prop::sample::select(&["1ns", "999999999999999years", "100years", "0s", "18446744073709551615s"][..])
            .prop_map(|d| format!("[settings]\nshutdown_timeout = \"{d}\"\nlog_max_size = \"{d}\"\n")),
        // Odd bytes in otherwise good files.
        (prop::collection::vec(any::<u8>(), 1..40), 0usize..40).prop_map(|(junk, at)| {
            let mut text = "[services.a]\ncommand = \"a\"\nport = 8080\n".to_owned().into_bytes();
            let at = at.min(text.len());
            text.splice(at..at, junk);
            String::from_utf8_lossy(&text).into_owned()
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("regressions"))), ..ProptestConfig::default() })]

    /// Bounded (64 cases, each a few milliseconds to a second) so it runs in every `cargo test`.
    #[test]
    fn hostile_input_never_panics(doc in hostile()) {
        load(doc);
    }
}

/// The kept corpus (tests/fixtures/hostile): every input that once panicked, hung, took
/// quadratic time or got an error without a location is checked again, through the binary.
#[test]
fn every_kept_hostile_input_is_located_quickly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{files:?}");
    for file in files {
        let name = file.file_name().unwrap().to_str().unwrap().to_owned();
        let out = assert_cmd::Command::new(env!("CARGO_BIN_EXE_dagstart"))
            .arg("-f")
            .arg(&file)
            .arg("check")
            .env("NO_COLOR", "1")
            .timeout(std::time::Duration::from_secs(20))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}:\n{stderr}");
        assert!(!stderr.contains("panicked"), "{name}:\n{stderr}");
        let located = stderr
            .match_indices(&format!("{name}:"))
            .any(|(at, m)| stderr[at + m.len()..].starts_with(|c: char| c.is_ascii_digit()));
        assert!(located, "{name}: no line and column in\n{stderr}");
    }
}
