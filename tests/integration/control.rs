//! Steering a running dagstart from another terminal: status, start, stop, restart, logs,
//! down; a second run refused; a stale socket replaced.

use crate::harness::{
    Project, RUN_LIMIT, TICKER, alive, assert_follows_ticks, project, spawn_reading_lines,
    start_in_background, status_json, stderr_of, stdout_of, svc, wait_exit, wait_until,
};

fn stack() -> Project {
    project(|p| {
        format!(
            "[services.db]\ncommand = {}\nhealth = {{ notify = true }}\n\n\
             [services.api]\ncommand = {}\ndepends_on = [\"db\"]\nhealth = {{ log = \"ready\" }}\n\n\
             [services.web]\ncommand = {}\ndepends_on = [\"api\"]\nhealth = {{ log = \"ready\" }}\n\n\
             [services.other]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n",
            svc(p, "db", "--notify --status all-good --chatter 30"),
            svc(p, "api", ""),
            svc(p, "web", ""),
            svc(p, "other", ""),
        )
    })
}

fn node<'a>(status: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    status.iter().find(|n| n["name"] == name).unwrap()
}

fn pid(status: &[serde_json::Value], name: &str) -> Option<i32> {
    node(status, name)["pid"].as_i64().map(|p| p as i32)
}

#[test]
fn status_stop_start_restart_and_down() {
    let p = stack();
    let mut child = start_in_background(&p, &["run"]);

    let table = stdout_of(&p.dagstart(&["status"]).output().unwrap());
    assert!(table.starts_with("node "), "{table}");
    assert!(
        table.contains("all-good"),
        "STATUS= shows in the status view:\n{table}"
    );
    let before = status_json(&p);
    assert!(before.iter().all(|n| n["state"] == "ready"), "{before:?}");
    let (db, api, web, other) = (
        pid(&before, "db").unwrap(),
        pid(&before, "api").unwrap(),
        pid(&before, "web").unwrap(),
        pid(&before, "other").unwrap(),
    );

    // stop api: web (its dependent) stops too, db and other are untouched.
    let out = p.dagstart(&["stop", "api"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    wait_until(RUN_LIMIT, "api and web to stop", || {
        !alive(api) && !alive(web)
    });
    // The processes end before their runners report it: wait for the states as well.
    wait_until(RUN_LIMIT, "api and web to show stopped", || {
        let now = status_json(&p);
        node(&now, "api")["state"] == "stopped" && node(&now, "web")["state"] == "stopped"
    });
    let now = status_json(&p);
    assert_eq!(node(&now, "api")["state"], "stopped");
    assert_eq!(node(&now, "web")["state"], "stopped");
    assert_eq!(pid(&now, "db"), Some(db));

    // start web: it brings api back first.
    assert!(
        p.dagstart(&["start", "web"])
            .output()
            .unwrap()
            .status
            .success()
    );
    wait_until(RUN_LIMIT, "web to be ready again", || {
        node(&status_json(&p), "web")["state"] == "ready"
    });
    let now = status_json(&p);
    assert_eq!(node(&now, "api")["state"], "ready");
    assert_ne!(pid(&now, "api"), Some(api));

    // restart db: api and web stop first and come back after it; other keeps its pid.
    let api2 = pid(&now, "api").unwrap();
    assert!(
        p.dagstart(&["restart", "db"])
            .output()
            .unwrap()
            .status
            .success()
    );
    wait_until(RUN_LIMIT, "db, api and web to be back", || {
        let s = status_json(&p);
        ["db", "api", "web"]
            .iter()
            .all(|n| node(&s, n)["state"] == "ready")
            && pid(&s, "db") != Some(db)
    });
    let now = status_json(&p);
    assert_ne!(pid(&now, "api"), Some(api2));
    assert_eq!(pid(&now, "other"), Some(other));
    let log = p.own_log();
    let restart_at = log.find("db: stopping").unwrap();
    assert!(
        log[..restart_at].rfind("web: stopped").is_some()
            && log[..restart_at].rfind("api: stopped").is_some(),
        "{log}"
    );

    let unknown = p.dagstart(&["stop", "apii"]).output().unwrap();
    assert!(!unknown.status.success());
    assert!(
        stderr_of(&unknown).contains("did you mean `api`?"),
        "{}",
        stderr_of(&unknown)
    );

    assert!(p.dagstart(&["down"]).output().unwrap().status.success());
    assert_eq!(wait_exit(&mut child, RUN_LIMIT).code(), Some(0));
}

#[test]
fn commands_say_plainly_when_nothing_runs() {
    let p = stack();
    for command in [&["status"][..], &["stop", "api"], &["down"]] {
        let out = p.dagstart(command).output().unwrap();
        assert_eq!(out.status.code(), Some(5), "{command:?}");
        assert!(
            stderr_of(&out).contains("no dagstart is running for"),
            "{}",
            stderr_of(&out)
        );
    }
}

#[test]
fn a_second_run_is_refused_and_a_stale_socket_is_replaced() {
    let p = stack();
    // A socket file left by a killed run: bound once, nobody listening any more.
    std::fs::create_dir_all(p.path().join(".dagstart")).unwrap();
    drop(std::os::unix::net::UnixListener::bind(p.path().join(".dagstart/control.sock")).unwrap());
    let mut child = start_in_background(&p, &["run"]);
    let second = p.dagstart(&["run"]).timeout(RUN_LIMIT).output().unwrap();
    assert_eq!(second.status.code(), Some(6));
    assert!(
        stderr_of(&second).contains("dagstart is already running for"),
        "{}",
        stderr_of(&second)
    );
    let logs = p.dagstart(&["logs", "db", "--tail", "3"]).output().unwrap();
    let text = stdout_of(&logs);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.lines().all(|l| l.starts_with("db | ")), "{text}");
    assert!(p.dagstart(&["down"]).output().unwrap().status.success());
    assert_eq!(wait_exit(&mut child, RUN_LIMIT).code(), Some(0));
    assert!(
        !p.path().join(".dagstart/control.sock").exists(),
        "the socket is removed at the end"
    );
}

#[test]
fn reload_applies_additions_removals_and_changes_and_leaves_the_rest_alone() {
    let p = stack();
    let mut child = start_in_background(&p, &["run"]);
    let before = status_json(&p);
    let text = std::fs::read_to_string(p.path().join("services.toml")).unwrap();

    // No change: nothing restarts.
    let out = p.dagstart(&["reload"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stdout_of(&out).contains("unchanged: 4"),
        "{}",
        stdout_of(&out)
    );

    // Invalid: refused with diagnostics, the stack untouched.
    p.file(
        "services.toml",
        &format!("{text}\n[services.broken]\ncomand = \"x\"\n"),
    );
    let out = p.dagstart(&["reload"]).output().unwrap();
    // Exit 2 like `check`, the diagnostics as `check` shows them (not nested in another).
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    let stderr = stderr_of(&out);
    assert!(stderr.contains("unknown key `comand`"), "{stderr}");
    assert!(stderr.contains("services.toml:"), "{stderr}");
    assert!(!stderr.contains("control::refused"), "{stderr}");
    assert!(
        stderr.contains("reload refused; nothing was changed"),
        "{stderr}"
    );
    assert_eq!(pid(&status_json(&p), "db"), pid(&before, "db"));

    // Change api, remove other, add extra (which needs db).
    let start = text.find("[services.other]").unwrap();
    let without_other = &text[..start];
    let edited = without_other.replace(
        "\"api\", \"--record\"",
        "\"api\", \"--chatter\", \"1\", \"--record\"",
    ) + &format!(
        "\n[services.extra]\ncommand = {}\ndepends_on = [\"db\"]\nhealth = {{ log = \"ready\" }}\n",
        svc(&p, "extra", "")
    );
    p.file("services.toml", &edited);
    let out = p.dagstart(&["reload"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let said = stdout_of(&out);
    assert!(
        said.contains("added: extra")
            && said.contains("removed: other")
            && said.contains("changed: api"),
        "{said}"
    );
    wait_until(RUN_LIMIT, "the reload to settle", || {
        let s = status_json(&p);
        ["db", "api", "web", "extra"]
            .iter()
            .all(|n| node(&s, n)["state"] == "ready")
            && s.iter().all(|n| n["name"] != "other")
    });
    let after = status_json(&p);
    assert_eq!(
        pid(&after, "db"),
        pid(&before, "db"),
        "db is untouched and keeps its pid"
    );
    assert_ne!(
        pid(&after, "api"),
        pid(&before, "api"),
        "api changed and restarted"
    );
    assert_ne!(
        pid(&after, "web"),
        pid(&before, "web"),
        "web needs api and restarted with it"
    );
    assert!(
        !alive(pid(&before, "other").unwrap()),
        "other was removed and stopped"
    );

    assert!(p.dagstart(&["down"]).output().unwrap().status.success());
    assert_eq!(wait_exit(&mut child, RUN_LIMIT).code(), Some(0));
}

#[test]
fn run_watch_reloads_when_the_file_changes() {
    let p = stack();
    let mut child = start_in_background(&p, &["run", "--watch"]);
    let before = status_json(&p);
    let text = std::fs::read_to_string(p.path().join("services.toml")).unwrap();
    p.file(
        "services.toml",
        &text.replace(
            "\"web\", \"--record\"",
            "\"web\", \"--chatter\", \"2\", \"--record\"",
        ),
    );
    wait_until(RUN_LIMIT, "web to restart after the edit", || {
        let s = status_json(&p);
        pid(&s, "web").is_some()
            && pid(&s, "web") != pid(&before, "web")
            && node(&s, "web")["state"] == "ready"
    });
    assert_eq!(pid(&status_json(&p), "api"), pid(&before, "api"));
    assert!(p.dagstart(&["down"]).output().unwrap().status.success());
    assert_eq!(wait_exit(&mut child, RUN_LIMIT).code(), Some(0));
}

#[test]
fn a_change_to_a_watched_file_restarts_the_node() {
    let p = project(|p| {
        format!(
            "[services.api]\ncommand = {}\nhealth = {{ log = \"ready\" }}\nwatch = [\"src/*.py\"]\n\n\
             [services.other]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n",
            svc(p, "api", ""),
            svc(p, "other", ""),
        )
    });
    p.file("src/app.py", "print('v1')\n");
    let mut child = start_in_background(&p, &["run"]);
    let before = status_json(&p);
    p.file("src/unrelated.txt", "not watched\n");
    p.file("src/app.py", "print('v2')\n");
    wait_until(RUN_LIMIT, "api to restart", || {
        let s = status_json(&p);
        pid(&s, "api").is_some()
            && pid(&s, "api") != pid(&before, "api")
            && node(&s, "api")["state"] == "ready"
    });
    assert_eq!(pid(&status_json(&p), "other"), pid(&before, "other"));
    assert!(p.dagstart(&["down"]).output().unwrap().status.success());
    assert_eq!(wait_exit(&mut child, RUN_LIMIT).code(), Some(0));
}

/// A node's log file is created at its first line: a run in which it prints nothing leaves
/// none, and moves the last run's aside (so `logs` shows nothing stale as this run's).
#[test]
fn a_quiet_node_has_no_log_of_this_run_and_the_last_one_is_kept() {
    let p = crate::harness::Project::new("[components.q]\ncommand = \"echo old\"\nshell = true\n");
    crate::harness::assert_success(&crate::harness::run_with_command(&p, &["--", "true"]));
    std::fs::write(
        p.path().join("services.toml"),
        "[components.q]\ncommand = \"true\"\n",
    )
    .unwrap();
    crate::harness::assert_success(&crate::harness::run_with_command(&p, &["--", "true"]));
    let logs = p.path().join("logs");
    assert!(!logs.join("q.log").exists());
    let previous = std::fs::read_to_string(logs.join("q.log.1")).unwrap();
    assert!(previous.ends_with(" old\n"), "{previous}");
}

/// Real stacks: node log lines are stamped; `logs a b` merges them by time (not node by
/// node), `--timestamps` shows the stamps; the last run's log is kept as `<node>.log.1`.
#[test]
fn logs_are_stamped_merged_by_time_and_kept_from_the_last_run() {
    let p = crate::harness::Project::new(
        "[components.a]\ncommand = \"echo a1; sleep 0.2; echo a2\"\nshell = true\n\n\
         [components.b]\ncommand = \"sleep 0.1; echo b1; sleep 0.2; echo b2\"\nshell = true\n",
    );
    for _ in 0..2 {
        crate::harness::assert_success(&crate::harness::run_with_command(&p, &["--", "true"]));
    }
    let logs = p.path().join("logs");
    let current = std::fs::read_to_string(logs.join("a.log")).unwrap();
    let previous = std::fs::read_to_string(logs.join("a.log.1")).unwrap();
    for text in [&current, &previous] {
        let (stamp, line) = dagstart::views::logfiles::split_stamp(text.lines().next().unwrap());
        assert!(stamp.is_some_and(|s| s.ends_with('Z')), "{text}");
        assert_eq!(line, "a1");
    }
    assert!(
        logs.join("dagstart.log.1").exists(),
        "dagstart.log is kept too"
    );

    let out = p.dagstart(&["logs", "a", "b"]).output().unwrap();
    let text = stdout_of(&out);
    let order: Vec<&str> = text
        .lines()
        .map(|l| l.rsplit(" | ").next().unwrap())
        .collect();
    assert_eq!(order, ["a1", "b1", "a2", "b2"], "merged by time:\n{text}");

    let out = p.dagstart(&["logs", "-t", "a"]).output().unwrap();
    let text = stdout_of(&out);
    assert!(
        text.lines()
            .all(|l| l.starts_with("a | 20") && l.contains("Z a")),
        "{text}"
    );
}

#[test]
fn logs_follow_prints_new_lines_until_the_run_ends() {
    let p = Project::new(&format!("[services.ticker]\n{TICKER}"));
    let mut run = start_in_background(&p, &["run"]);
    let (mut follower, lines) = spawn_reading_lines(&p, &["logs", "-f", "ticker"]);
    assert_follows_ticks(&lines);
    let out = p.dagstart(&["down"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(wait_exit(&mut run, RUN_LIMIT).success());
    // The follower ends with the run.
    assert!(wait_exit(&mut follower, RUN_LIMIT).success());
}
