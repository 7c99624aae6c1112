//! Every configuration mistake has a diagnostic that points at the bytes; one test each.

use std::path::Path;

use dagstart::cli::error::{Error, plain_handler, render};
use dagstart::engine::config::{Environment, load_str};

/// Loads `text` and returns the codes of its problems and their rendering.
fn diagnose_with(text: &str, env: &[(&str, &str)]) -> (Vec<&'static str>, String) {
    let env = Environment::from_pairs(env.iter().copied());
    let error = load_str(Path::new("services.toml"), text.to_owned(), &env)
        .expect_err("the configuration should be rejected");
    let codes = error.problems.iter().map(|p| p.code).collect();
    (codes, render(&Error::Config(error), &plain_handler()))
}

fn diagnose(text: &str) -> (Vec<&'static str>, String) {
    diagnose_with(text, &[])
}

#[test]
fn toml_syntax_error() {
    let (codes, text) = diagnose("[services.api\ncommand = \"x\"\n");
    assert_eq!(codes, ["dagstart::config::syntax"]);
    insta::assert_snapshot!(text);
}

#[test]
fn unknown_key_suggests_the_known_one() {
    let (codes, text) = diagnose("[services.api]\ncomand = \"./api\"\ncommand = \"./api\"\n");
    assert_eq!(codes, ["dagstart::config::unknown_key"]);
    assert!(text.contains("did you mean `command`?"), "{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn unknown_top_level_table() {
    let (codes, text) = diagnose("[service.api]\ncommand = \"./api\"\n");
    assert_eq!(codes, ["dagstart::config::unknown_key"]);
    assert!(text.contains("did you mean `services`?"), "{text}");
}

#[test]
fn unknown_dependency_suggests_the_declared_one() {
    let (codes, text) = diagnose(
        "[services.backend]\ncommand = \"b\"\n\n[services.web]\ncommand = \"w\"\ndepends_on = [\"bakend\"]\n",
    );
    assert_eq!(codes, ["dagstart::config::unknown_dependency"]);
    assert!(text.contains("did you mean `backend`?"), "{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn cycle_names_the_whole_path_and_labels_each_edge() {
    let (codes, text) = diagnose(
        "[services.a]\ncommand = \"a\"\ndepends_on = [\"b\"]\n\n[services.b]\ncommand = \"b\"\ndepends_on = [\"c\"]\n\n[services.c]\ncommand = \"c\"\ndepends_on = { a = \"healthy\" }\n",
    );
    assert_eq!(codes, ["dagstart::config::cycle"]);
    assert!(
        text.contains("dependency cycle: a -> b -> c -> a"),
        "{text}"
    );
    assert_eq!(text.matches("waits for").count(), 3, "{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn two_separate_cycles_are_both_reported() {
    let (codes, _) = diagnose(
        "[services.a]\ncommand = \"a\"\ndepends_on = [\"b\"]\n[services.b]\ncommand = \"b\"\ndepends_on = [\"a\"]\n\
         [services.c]\ncommand = \"c\"\ndepends_on = [\"d\"]\n[services.d]\ncommand = \"d\"\ndepends_on = [\"c\"]\n",
    );
    assert_eq!(
        codes,
        ["dagstart::config::cycle", "dagstart::config::cycle"]
    );
}

#[test]
fn name_shared_by_a_service_and_a_component() {
    let (codes, text) =
        diagnose("[services.db]\ncommand = \"d\"\n\n[components.db]\ncommand = \"m\"\n");
    assert_eq!(codes, ["dagstart::config::duplicate_name"]);
    insta::assert_snapshot!(text);
}

#[test]
fn self_dependency() {
    let (codes, text) = diagnose("[services.api]\ncommand = \"a\"\ndepends_on = [\"api\"]\n");
    assert_eq!(codes, ["dagstart::config::self_dependency"]);
    insta::assert_snapshot!(text);
}

#[test]
fn bad_duration() {
    let (codes, text) =
        diagnose("[services.api]\ncommand = \"a\"\nstartup_timeout = \"5 sekunden\"\n");
    assert_eq!(codes, ["dagstart::config::duration"]);
    insta::assert_snapshot!(text);
}

#[test]
fn duration_without_unit() {
    let (codes, text) = diagnose("[settings]\nshutdown_timeout = 10\n");
    assert_eq!(codes, ["dagstart::config::duration"]);
    assert!(text.contains("\"5s\""), "{text}");
}

#[test]
fn bad_signal_name() {
    let (codes, text) = diagnose("[services.api]\ncommand = \"a\"\nstop_signal = \"SIGTREM\"\n");
    assert_eq!(codes, ["dagstart::config::signal"]);
    assert!(text.contains("did you mean \"SIGTERM\"?"), "{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn signal_names_without_sig_prefix_are_accepted() {
    let env = Environment::default();
    let config = load_str(
        Path::new("services.toml"),
        "[services.api]\ncommand = \"a\"\nstop_signal = \"int\"\n".into(),
        &env,
    )
    .expect("valid");
    assert_eq!(
        config.nodes[0].stop_signal,
        nix::sys::signal::Signal::SIGINT
    );
}

#[test]
fn node_name_outside_the_allowed_characters() {
    let (codes, text) = diagnose("[services.\"my api\"]\ncommand = \"a\"\n");
    assert_eq!(codes, ["dagstart::config::name"]);
    assert!(text.contains("my_api"), "{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn two_nodes_declaring_the_same_port() {
    let (codes, text) = diagnose(
        "[services.a]\ncommand = \"a\"\nport = 8010\n\n[services.b]\ncommand = \"b\"\nport = 8010\n",
    );
    assert_eq!(codes, ["dagstart::config::port_clash"]);
    insta::assert_snapshot!(text);
}

#[test]
fn completed_on_a_service() {
    let (codes, text) = diagnose(
        "[services.db]\ncommand = \"d\"\n\n[services.api]\ncommand = \"a\"\ndepends_on = { db = \"completed\" }\n",
    );
    assert_eq!(codes, ["dagstart::config::condition"]);
    insta::assert_snapshot!(text);
}

#[test]
fn unknown_condition_suggests_one() {
    let (codes, text) = diagnose(
        "[services.db]\ncommand = \"d\"\n\n[services.api]\ncommand = \"a\"\ndepends_on = { db = \"healty\" }\n",
    );
    assert_eq!(codes, ["dagstart::config::condition"]);
    assert!(text.contains("did you mean \"healthy\"?"), "{text}");
}

#[test]
fn http_health_path_without_port() {
    let (codes, text) =
        diagnose("[services.api]\ncommand = \"a\"\nhealth = { http = \"/health\" }\n");
    assert_eq!(codes, ["dagstart::config::health"]);
    insta::assert_snapshot!(text);
}

#[test]
fn unset_required_variable() {
    let (codes, text) = diagnose(
        "[services.api]\ncommand = \"./api --db ${DB_URL:?set DB_URL to the database}\"\n",
    );
    assert_eq!(codes, ["dagstart::config::required_variable"]);
    assert!(text.contains("set DB_URL to the database"), "{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn required_variable_that_is_set_is_expanded() {
    let env = Environment::from_pairs([("DB_URL", "postgres://x")]);
    let config = load_str(
        Path::new("services.toml"),
        "[services.api]\ncommand = \"./api --db ${DB_URL:?needed}\"\n".into(),
        &env,
    )
    .expect("valid");
    assert_eq!(
        config.nodes[0].command,
        dagstart::engine::config::Command::Argv(vec![
            "./api".into(),
            "--db".into(),
            "postgres://x".into()
        ])
    );
}

#[test]
fn required_node_on_optional_node_is_only_a_warning() {
    let env = Environment::default();
    let config = load_str(
        Path::new("services.toml"),
        "[components.models]\ncommand = \"m\"\nrequired = false\n\n[services.api]\ncommand = \"a\"\ndepends_on = [\"models\"]\n".into(),
        &env,
    )
    .expect("a warning does not reject the file");
    let codes: Vec<_> = config.warnings.iter().map(|w| w.code).collect();
    assert_eq!(codes, ["dagstart::config::required_on_optional"]);
}

#[test]
fn wrong_types_are_named() {
    let (codes, text) =
        diagnose("[services.api]\ncommand = 42\nrequired = \"yes\"\nretries = -1\n");
    assert_eq!(
        codes,
        [
            "dagstart::config::type",
            "dagstart::config::type",
            "dagstart::config::type"
        ]
    );
    insta::assert_snapshot!(text);
}

#[test]
fn bad_environment_override_names_the_variable() {
    let (codes, text) = diagnose_with(
        "[services.api]\ncommand = \"a\"\n",
        &[("STARTUP_TIMEOUT", "soon"), ("API_TIMEOUT", "-3")],
    );
    assert_eq!(
        codes,
        [
            "dagstart::config::env_override",
            "dagstart::config::env_override"
        ]
    );
    assert!(
        text.contains("STARTUP_TIMEOUT") && text.contains("API_TIMEOUT"),
        "{text}"
    );
}

#[test]
fn all_mistakes_are_reported_together() {
    let (codes, text) = diagnose(
        "[settings]\nstartup_timeout = \"forever\"\n\n[services.api]\ncomand = \"a\"\ncommand = \"a\"\ndepends_on = [\"dbb\"]\nstop_signal = \"TERMINATE\"\n\n[services.db]\ncommand = \"d\"\n",
    );
    assert_eq!(codes.len(), 4, "{text}");
    assert!(text.contains("4 errors in services.toml"), "{text}");
}

/// Hardening: a node named `dagstart` would write into dagstart's own log.
#[test]
fn the_name_dagstart_is_reserved() {
    let (codes, text) = diagnose("[services.dagstart]\ncommand = \"a\"\n");
    assert_eq!(codes, ["dagstart::config::reserved_name"]);
    assert!(text.contains("logs/dagstart.log"), "{text}");
}

/// Hardening: a name longer than a file name allows is rejected at load, not at `run`.
#[test]
fn a_node_name_too_long_for_its_log_file() {
    let name = "n".repeat(252);
    let (codes, text) = diagnose(&format!("[services.{name}]\ncommand = \"a\"\n"));
    assert_eq!(codes, ["dagstart::config::name"]);
    assert!(text.contains("at most 128 characters"), "{text}");
}

/// Hardening: a duration of 292 billion years used to pass `check` and panic at run time.
#[test]
fn durations_have_an_upper_bound() {
    let (codes, text) =
        diagnose("[services.api]\ncommand = \"a\"\nstartup_timeout = \"292000000000years\"\n");
    assert_eq!(codes, ["dagstart::config::duration"]);
    assert!(text.contains("at most 100 years"), "{text}");
}

/// Hardening: an env file that never ends (a device, a FIFO) used to hang `check`.
#[test]
fn an_env_file_that_is_not_a_regular_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("services.toml"),
        "[settings]\nenv_file = \"/dev/zero\"\n[services.api]\ncommand = \"a\"\n",
    )
    .unwrap();
    let out = assert_cmd::Command::cargo_bin("dagstart")
        .unwrap()
        .current_dir(dir.path())
        .arg("check")
        .timeout(std::time::Duration::from_secs(20))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a regular file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Hardening: a problem past column 65,535 used to panic the renderer; it is located in text.
#[test]
fn an_error_far_right_on_a_line_is_located_not_a_panic() {
    let text = format!(
        "[services.api]\ncommand = \"a\"\n{}startup_timeout = \"soon\"\n",
        " ".repeat(70_000)
    );
    let (codes, rendered) = diagnose(&text);
    assert_eq!(codes, ["dagstart::config::duration"]);
    assert!(
        rendered.contains("at services.toml:3:70019"),
        "{}",
        &rendered[..rendered.len().min(500)]
    );
}

/// Hardening: a cycle through tens of thousands of nodes used to overflow the stack.
#[test]
fn a_cycle_through_thirty_thousand_nodes_is_reported() {
    const N: usize = 30_000;
    let mut text = String::new();
    for i in 0..N {
        let dep = if i == 0 { N - 1 } else { i - 1 };
        text += &format!("[services.n{i}]\ncommand = \"a\"\ndepends_on = [\"n{dep}\"]\n");
    }
    let (codes, rendered) = diagnose(&text);
    assert_eq!(codes, ["dagstart::config::cycle"]);
    assert!(
        rendered.contains("(29960 more)"),
        "{}",
        &rendered[..rendered.len().min(800)]
    );
}

#[test]
fn a_log_size_needs_a_unit() {
    let (codes, text) = diagnose("[settings]\nlog_max_size = \"100\"\n");
    assert_eq!(codes, ["dagstart::config::size"]);
    assert!(text.contains("needs a unit"), "{text}");
}

/// Hardening: a file that is not UTF-8 used to be refused without a location.
#[test]
fn a_file_that_is_not_utf8_is_located() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("services.toml"),
        b"[services.a]\ncommand = \"\xff\"\n",
    )
    .unwrap();
    let out = assert_cmd::Command::cargo_bin("dagstart")
        .unwrap()
        .current_dir(dir.path())
        .arg("check")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("dagstart::config::encoding"), "{stderr}");
    assert!(stderr.contains("services.toml:2:12"), "{stderr}");
}

/// Real stacks: a health URL on another port than the service's is worth a word at load time
/// (it used to fail at run time with the wrong advice).
#[test]
fn a_health_url_on_another_port_is_a_warning() {
    let env = Environment::default();
    let config = load_str(
        Path::new("services.toml"),
        "[services.api]\ncommand = \"a\"\nport = 8010\nhealth = { http = \"http://127.0.0.1:8011/health\" }\n"
            .into(),
        &env,
    )
    .expect("only a warning");
    let codes: Vec<&str> = config.warnings.iter().map(|w| w.code).collect();
    assert_eq!(codes, ["dagstart::config::health_port"]);
    for same in ["http://127.0.0.1:8010/health", "http://localhost:8010/"] {
        let config = load_str(
            Path::new("services.toml"),
            format!(
                "[services.api]\ncommand = \"a\"\nport = 8010\nhealth = {{ http = \"{same}\" }}\n"
            ),
            &env,
        )
        .unwrap();
        assert!(config.warnings.is_empty(), "{same}");
    }
}

/// Real stacks: waiting is not failing, so `health.retries` and `health.start_period`
/// (docker compose's names) no longer end a start; they are accepted with what to use instead.
#[test]
fn health_retries_and_start_period_are_accepted_and_said_to_be_ignored() {
    let config = load_str(
        Path::new("services.toml"),
        "[services.api]\ncommand = \"a\"\nport = 8010\nhealth = { http = \"/health\", retries = 3, start_period = \"5s\" }\n"
            .into(),
        &Environment::default(),
    )
    .expect("only warnings");
    let codes: Vec<&str> = config.warnings.iter().map(|w| w.code).collect();
    assert_eq!(
        codes,
        [
            "dagstart::config::health_retries",
            "dagstart::config::health_start_period"
        ]
    );
    let text = format!("{:?}", config.warnings);
    assert!(
        text.contains("startup_timeout") && text.contains("liveness"),
        "{text}"
    );
}

#[test]
fn unknown_output_suggests_the_known_one() {
    let (codes, text) = diagnose("[services.api]\ncommand = \"a\"\noutput = \"discrad\"\n");
    assert_eq!(codes, ["dagstart::config::output"]);
    assert!(text.contains("did you mean \"discard\"?"), "{text}");
}

#[test]
fn a_discarded_output_cannot_feed_a_log_probe() {
    let (codes, text) = diagnose(
        "[services.api]\ncommand = \"a\"\nhealth = { log = \"ready\" }\noutput = \"discard\"\n",
    );
    assert_eq!(codes, ["dagstart::config::output"]);
    assert!(text.contains("this sends it to /dev/null"), "{text}");
}

/// A file large enough to be parsed and read on two threads (over a megabyte, thousands of
/// nodes): every problem of either half is found, in file order, and the environment read for
/// a node of the second half is kept.
#[test]
fn a_large_file_read_on_two_threads_reports_every_problem_in_file_order() {
    const NODES: usize = 12_000;
    let broken = [10, 5_000, 7_000, 11_990];
    // Node i waits for the one before it; the broken ones also for a missing node and
    // themselves, the valid file's for node 1 instead.
    let file = |valid: bool| {
        use std::fmt::Write as _;
        let mut text = String::from("[settings]\nstartup_timeout = \"30s\"\n\n");
        let padding = "x".repeat(60);
        for i in 0..NODES {
            let _ = write!(
                text,
                "[services.n{i}]\ncommand = \"sleep {padding}\"\ndepends_on = ["
            );
            if i > 0 {
                let _ = write!(text, "\"n{}\", ", i - 1);
            }
            match (broken.contains(&i), valid) {
                (true, false) => {
                    let _ = write!(text, "\"missing{i}\", \"n{i}\", ");
                }
                (true, true) => text.push_str("\"n1\", "),
                (false, _) => {}
            }
            text.push_str("]\n\n");
        }
        text
    };
    let text = file(false);
    assert!(
        text.len() > 1 << 20,
        "the file must be large enough to be split"
    );
    let env = Environment::from_pairs([("N11000_TIMEOUT", "7s")]);
    let error = load_str(Path::new("services.toml"), text, &env)
        .expect_err("the configuration should be rejected");
    let found: Vec<String> = error
        .problems
        .iter()
        .map(|p| format!("{} {}", p.code, p.message))
        .collect();
    let expected: Vec<String> = broken
        .iter()
        .flat_map(|i| {
            [
                format!(
                    "dagstart::config::unknown_dependency `n{i}` depends on `missing{i}`, which is not declared"
                ),
                format!("dagstart::config::self_dependency `n{i}` depends on itself"),
            ]
        })
        .collect();
    assert_eq!(found, expected);

    let config = load_str(Path::new("services.toml"), file(true), &env).expect("valid");
    assert_eq!(config.nodes.len(), NODES);
    let overridden = config.from_env.get("services.n11000.startup_timeout");
    assert_eq!(overridden.map(String::as_str), Some("N11000_TIMEOUT"));
    assert_eq!(
        config.nodes[11_000].startup_timeout,
        std::time::Duration::from_secs(7)
    );
    let n5000 = &config.nodes[5_000];
    let names: Vec<_> = n5000.depends_on.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["n4999", "n1"]);
    assert_eq!(n5000.depends_on[1].node, 1);
}
