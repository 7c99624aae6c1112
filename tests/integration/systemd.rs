//! `dagstart export systemd` and `dagstart probe`, through the real binary; the units are
//! checked by `systemd-analyze verify` (Debian's systemd package).

use std::path::Path;

use crate::harness::{Project, free_port, stderr_of, stdout_of, svc};

/// A stack that uses every mapping: a tcp-probed service restarted always, a component, an
/// http-probed service with an optional and a restart edge, a notify service with a watchdog,
/// a socket-activated lazy service, a log-probed one with a milestone and a `listening` edge.
fn stack(p: &Project) -> String {
    format!(
        "[env]\nSTACK = \"a $HOME 100%\"\n\n\
         [services.db]\ncommand = \"sleep 1000\"\nport = 5544\nrestart = \"always\"\nmax_restarts = 4\nrestart_window = \"30s\"\nuser = \"daemon\"\n\n\
         [components.migrate]\ncommand = [\"true\", \"two words\"]\ndepends_on = [\"db\"]\n\n\
         [services.api]\ncommand = {api}\ndepends_on = {{ migrate = \"completed\", db = {{ restart = true }}, cache = {{ required = false }} }}\n\
         health = {{ http = \"http://127.0.0.1:8010/health\" }}\nstop_signal = \"SIGINT\"\nstop_timeout = \"3s\"\n\n\
         [services.cache]\ncommand = \"sleep 1000\"\nrequired = false\nhealth = {{ notify = true }}\nwatchdog = \"5s\"\noutput = \"discard\"\n\n\
         [services.web]\ncommand = \"sleep 1000\"\nsockets = [\"127.0.0.1:8080\"]\nlazy = true\n\n\
         [services.front]\ncommand = \"sleep 1000\"\ndepends_on = {{ web = \"listening\", api = {{ milestone = true }} }}\nhealth = {{ log = \"ready\" }}\nprofiles = [\"edge\"]\n",
        api = svc(p, "api", ""),
    )
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn export_systemd_writes_a_target_and_units_that_systemd_accepts() {
    let p = crate::harness::project(stack);
    let out = p
        .dagstart(&["export", "systemd", "-o", "units"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let dir = p.path().join("units");
    let project = dagstart::convert::project_name(p.path());
    let unit = |node: &str, suffix: &str| format!("{project}-{node}.{suffix}");

    let target = read(&dir, &format!("{project}.target"));
    for line in [
        format!("Requires={}", unit("db", "service")),
        format!("Wants={}", unit("cache", "service")),
        format!("Requires={}", unit("web", "socket")),
        "WantedBy=multi-user.target".to_owned(),
    ] {
        assert!(
            target.contains(&line),
            "{line:?} not in the target:\n{target}"
        );
    }
    assert!(
        !target.contains(&unit("web", "service")),
        "lazy: started by its socket"
    );

    let api = read(&dir, &unit("api", "service"));
    let dagstart = env!("CARGO_BIN_EXE_dagstart");
    for line in [
        format!("Requires={}", unit("migrate", "service")),
        format!("After={}", unit("migrate", "service")),
        format!("PartOf={}", unit("db", "service")),
        format!("Wants={}", unit("cache", "service")),
        format!("PartOf={project}.target"),
        "Type=exec".to_owned(),
        format!(
            "ExecStartPost={dagstart} --file {} probe api",
            p.path().join("services.toml").display()
        ),
        format!("WorkingDirectory={}", p.path().display()),
        "Environment=\"STACK=a $HOME 100%%\"".to_owned(),
        "KillSignal=SIGINT".to_owned(),
        "TimeoutStopSec=3s".to_owned(),
        "TimeoutStartSec=60s".to_owned(),
        "Restart=no".to_owned(),
    ] {
        assert!(api.contains(&line), "{line:?} not in api:\n{api}");
    }
    let db = read(&dir, &unit("db", "service"));
    for line in [
        "Restart=always",
        "RestartSec=500ms",
        "StartLimitBurst=4",
        "StartLimitIntervalSec=30s",
        "probe db",
        "User=daemon",
        "Group=1",
    ] {
        assert!(db.contains(line), "{line:?} not in db:\n{db}");
    }
    let migrate = read(&dir, &unit("migrate", "service"));
    assert!(
        migrate.contains("Type=oneshot\nRemainAfterExit=yes\n"),
        "{migrate}"
    );
    assert!(
        migrate.contains("ExecStart=true \"two words\""),
        "{migrate}"
    );
    let cache = read(&dir, &unit("cache", "service"));
    for line in ["Type=notify", "WatchdogSec=5s", "StandardOutput=null"] {
        assert!(cache.contains(line), "{line:?} not in cache:\n{cache}");
    }
    let socket = read(&dir, &unit("web", "socket"));
    assert!(socket.contains("ListenStream=127.0.0.1:8080"), "{socket}");
    let front = read(&dir, &unit("front", "service"));
    for line in [
        format!("Requires={}", unit("web", "socket")),
        format!("Wants={}", unit("api", "service")),
        "probe front".to_owned(),
    ] {
        assert!(front.contains(&line), "{line:?} not in front:\n{front}");
    }

    let listed = stderr_of(&out);
    for item in [
        "services.front.depends_on.api: systemd has no start-only dependency",
        "services.front.profiles",
        "services.db.restart_backoff",
    ] {
        assert!(listed.contains(item), "{item:?} not listed:\n{listed}");
    }

    if !Path::new("/usr/bin/systemd-analyze").exists() {
        eprintln!("skipped: systemd-analyze is not installed (Debian's systemd package)");
        return;
    }
    let files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(&files)
        .output()
        .unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify:\n{}{}",
        stdout_of(&verify),
        stderr_of(&verify)
    );
}

/// `probe` waits for the node's own check: a tcp port that opens late passes, one that never
/// opens fails after `--timeout` with what it waited for; a node with nothing to probe is
/// refused.
#[test]
fn probe_waits_for_the_health_check_and_says_what_it_waited_for() {
    let port = free_port();
    let p = Project::new(&format!(
        "[services.db]\ncommand = \"x\"\nport = {port}\n\n[services.plain]\ncommand = \"x\"\n"
    ));
    let listener = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let _ = l.accept();
    });
    let out = p.dagstart(&["probe", "db"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("db: ready (tcp localhost:"),
        "{}",
        stderr_of(&out)
    );
    listener.join().unwrap();

    let out = p
        .dagstart(&["probe", "db", "--timeout", "300ms"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains(&format!(
            "`db` was not ready within 300ms (waited for tcp localhost:{port})"
        )),
        "{err}"
    );

    let out = p.dagstart(&["probe", "plain"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("nothing to probe"),
        "{}",
        stderr_of(&out)
    );
    let out = p.dagstart(&["probe", "dbb"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("did you mean `db`?"),
        "{}",
        stderr_of(&out)
    );
}

/// A `log` check follows the unit's journal through journalctl (here a stand-in that prints
/// what a unit printed, and the arguments it was given).
#[test]
fn probe_follows_the_journal_for_a_log_check() {
    let p = Project::new(
        "[services.worker]\ncommand = \"x\"\nhealth = { log = \"worker (is )?up\" }\n",
    );
    let bin = p.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fake = bin.join("journalctl");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"$@\" > {}\necho starting\nsleep 0.2\necho 'worker is up'\nexec sleep 60\n",
            p.path().join("args").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let p = p.env("PATH", &path);
    let out = p
        .dagstart(&[
            "probe",
            "worker",
            "--unit",
            "shop-worker.service",
            "--timeout",
            "20s",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let args = std::fs::read_to_string(p.path().join("args")).unwrap();
    assert!(
        args.contains("--follow") && args.contains("--unit=shop-worker.service"),
        "{args}"
    );

    // Under systemd, the invocation's own lines.
    let p = p.env("INVOCATION_ID", "0123abcd");
    let out = p.dagstart(&["probe", "worker"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let args = std::fs::read_to_string(p.path().join("args")).unwrap();
    assert!(args.contains("_SYSTEMD_INVOCATION_ID=0123abcd"), "{args}");
}
