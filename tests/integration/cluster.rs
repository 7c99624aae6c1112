//! One run over several hosts, against a real etcd (Debian's `etcd-server`, installed by
//! `.ci/run`): a three-member cluster on loopback ports, the coordinator and each agent a
//! process of its own sharing one project directory (each host keeps its state in
//! `.dagstart/hosts/NAME` and its logs in `logs/NAME`).

use std::process::{Child, Command, Stdio};

use crate::harness::{
    Project, RUN_LIMIT, Running, TICKER, assert_follows_ticks, free_port, spawn_reading_lines,
    stderr_of, wait_exit, wait_until,
};

/// A three-member etcd cluster on loopback; killed (and its data removed) when dropped.
struct EtcdCluster {
    members: Vec<Option<Child>>,
    /// Each member's arguments, to start it again on its data.
    commands: Vec<Vec<String>>,
    clients: Vec<String>,
    _data: tempfile::TempDir,
}

impl EtcdCluster {
    /// `None` (the test says it is skipped) where etcd is not installed.
    fn start() -> Option<Self> {
        Self::start_on("127.0.0.1")
    }

    /// The same, listening on `address` (a bridge address that network namespaces reach).
    fn start_on(address: &str) -> Option<Self> {
        if Command::new("etcd").arg("--version").output().is_err() {
            eprintln!("skipped: etcd is not installed (Debian's etcd-server)");
            return None;
        }
        let data = tempfile::tempdir().unwrap();
        let clients: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let peers: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let initial: Vec<String> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| format!("m{i}=http://{address}:{p}"))
            .collect();
        let token = format!("t{}", std::process::id());
        let commands: Vec<Vec<String>> = (0..3)
            .map(|i| {
                let data_dir = data.path().join(format!("m{i}"));
                [
                    "--name".to_owned(),
                    format!("m{i}"),
                    "--data-dir".to_owned(),
                    data_dir.display().to_string(),
                    "--listen-client-urls".to_owned(),
                    format!("http://{address}:{}", clients[i]),
                    "--advertise-client-urls".to_owned(),
                    format!("http://{address}:{}", clients[i]),
                    "--listen-peer-urls".to_owned(),
                    format!("http://{address}:{}", peers[i]),
                    "--initial-advertise-peer-urls".to_owned(),
                    format!("http://{address}:{}", peers[i]),
                    "--initial-cluster".to_owned(),
                    initial.join(","),
                    "--initial-cluster-token".to_owned(),
                    token.clone(),
                    "--initial-cluster-state".to_owned(),
                    "new".to_owned(),
                    "--heartbeat-interval".to_owned(),
                    "50".to_owned(),
                    "--election-timeout".to_owned(),
                    "500".to_owned(),
                ]
                .to_vec()
            })
            .collect();
        let members = commands.iter().map(|args| Some(spawn_etcd(args))).collect();
        let cluster = Self {
            members,
            commands,
            clients: clients
                .iter()
                .map(|p| format!("http://{address}:{p}"))
                .collect(),
            _data: data,
        };
        for client in &cluster.clients {
            wait_until(RUN_LIMIT, "etcd to be healthy", || healthy(client));
        }
        Some(cluster)
    }

    /// A project whose services.toml is `[cluster]` (every member an endpoint), then `rest`.
    fn project(&self, rest: &str) -> Project {
        let endpoints: Vec<String> = self.clients.iter().map(|c| format!("{c:?}")).collect();
        Project::new(&format!(
            "[cluster]\nname = \"t\"\netcd = [{}]\nlease_ttl = \"2s\"\n\n{rest}",
            endpoints.join(", ")
        ))
    }

    /// The member that leads now.
    fn leader(&self) -> usize {
        let mut leader = None;
        wait_until(RUN_LIMIT, "etcd to have a leader", || {
            leader = self.clients.iter().position(|c| {
                let out = Command::new("etcdctl")
                    .env("ETCDCTL_API", "3")
                    .args(["--endpoints", c, "endpoint", "status", "-w", "json"])
                    .output();
                out.is_ok_and(|o| {
                    let v: serde_json::Value =
                        serde_json::from_slice(&o.stdout).unwrap_or_default();
                    let status = &v[0]["Status"];
                    !status.is_null() && status["leader"] == status["header"]["member_id"]
                })
            });
            leader.is_some()
        });
        leader.unwrap()
    }

    /// Starts a killed member again, on its data.
    fn restart(&mut self, member: usize) {
        self.members[member] = Some(spawn_etcd(&self.commands[member]));
    }

    fn kill(&mut self, member: usize) {
        if let Some(mut child) = self.members[member].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in 0..self.members.len() {
            self.kill(member);
        }
    }
}

fn spawn_etcd(args: &[String]) -> Child {
    Command::new("etcd")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd starts")
}

fn healthy(client: &str) -> bool {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", client, "endpoint", "health"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A service that writes `start-NAME` into `order` before it says it is ready, and
/// `stop-NAME` on SIGTERM.
fn recording(name: &str) -> String {
    format!(
        "command = \"trap 'echo stop-{name} >> order; exit 0' TERM; echo start-{name} >> order; echo addr=$DAGSTART_HOST_H2_ADDR; echo up; while :; do sleep 0.05; done\"\nshell = true\nhealth = {{ log = \"up\" }}\n"
    )
}

/// db and web on the coordinator, app on host h2 between them.
fn three_tier(etcd: &EtcdCluster) -> Project {
    etcd.project(&format!(
        "[hosts.h2]\naddress = \"127.0.0.2\"\n\n[services.db]\n{}\n[services.app]\nhost = \"h2\"\ndepends_on = [\"db\"]\n{}\n[services.web]\ndepends_on = {{ app = {{ restart = true }} }}\n{}",
        recording("db"),
        recording("app"),
        recording("web"),
    ))
}

fn order(p: &Project) -> Vec<String> {
    std::fs::read_to_string(p.path().join("order"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn background(p: &Project, args: &[&str]) -> Running {
    let log = std::fs::File::create(p.path().join(format!("{}.out", args.join("_")))).unwrap();
    p.dagstart_std(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
        .into()
}

fn host_log(p: &Project, host: &str) -> String {
    std::fs::read_to_string(p.path().join("logs").join(host).join("dagstart.log"))
        .unwrap_or_default()
}

fn wait_for_order(p: &Project, what: &str, expected: &[&str]) {
    wait_for(p, what, || order(p) == expected);
}

/// Polls until `condition` holds, up to [`RUN_LIMIT`]; on timeout, panics with what the hosts
/// said.
fn wait_for(p: &Project, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + RUN_LIMIT;
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            story(p)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `child` (started by [`background`] with `args` joined by `_`) exits 0, or the test fails
/// with what it said.
fn assert_ends_well(p: &Project, child: &mut Running, args: &str) {
    let status = wait_exit(child, RUN_LIMIT);
    let said = std::fs::read_to_string(p.path().join(format!("{args}.out"))).unwrap_or_default();
    assert!(status.success(), "{args}: {status}\n{said}\n{}", story(p));
}

/// h2's agent, then the coordinator `main`, once the three nodes have started.
fn three_up(p: &Project) -> (Running, Running) {
    let agent = background(p, &["agent", "--host", "h2"]);
    let run = background(p, &["run", "--host", "main"]);
    wait_for_order(
        p,
        "the three to start",
        &["start-db", "start-app", "start-web"],
    );
    (agent, run)
}

/// The three stopped in reverse order, and both hosts ended well.
fn stopped_in_reverse_order(p: &Project, run: &mut Running, agent: &mut Running) {
    wait_for(p, "everything to stop in reverse order", || {
        order(p).ends_with(&["stop-web".into(), "stop-app".into(), "stop-db".into()])
    });
    assert_ends_well(p, run, "run_--host_main");
    assert_ends_well(p, agent, "agent_--host_h2");
}

/// `dagstart ARGS...` in `p` exits with `code` and says `text`.
fn refused(p: &Project, args: &[&str], code: i32, text: &str) {
    let out = p.dagstart(args).timeout(RUN_LIMIT).output().unwrap();
    let said = stderr_of(&out);
    assert_eq!(out.status.code(), Some(code), "{said}");
    assert!(said.contains(text), "{said}");
}

/// `dagstart --host HOST down` in `p`: the whole run stops.
fn down(p: &Project, host: &str) {
    let out = p
        .dagstart(&["--host", host, "down"])
        .timeout(RUN_LIMIT)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
}

/// What the hosts said, for a failed assertion.
fn story(p: &Project) -> String {
    format!(
        "order: {:?}\n--- main:\n{}\n--- h2:\n{}",
        order(p),
        host_log(p, "main"),
        host_log(p, "h2")
    )
}

#[test]
fn nodes_start_across_hosts_in_dependency_order_and_stop_in_reverse() {
    let Some(etcd) = EtcdCluster::start() else {
        return;
    };
    let p = three_tier(&etcd);
    // The agent comes first and waits for the run.
    let mut agent = background(&p, &["agent", "--host", "h2"]);
    let dashboard = format!("127.0.0.1:{}", free_port());
    let mut run = background(&p, &["run", "--host", "main", "--dashboard", &dashboard]);
    wait_for_order(
        &p,
        "the three to start",
        &["start-db", "start-app", "start-web"],
    );
    // The dashboard places each node on its host.
    let graph = crate::dashboard::http_get(&dashboard, "/graph");
    assert!(graph.contains(r#""host":"h2""#), "{graph}");
    // Each host's status shows every node, with the host it runs on.
    wait_for(&p, "h2 to see web ready", || {
        host_log(&p, "h2").contains("web: ready")
    });
    let out = p
        .dagstart(&["--host", "h2", "status"])
        .timeout(RUN_LIMIT)
        .output()
        .unwrap();
    let table = crate::harness::stdout_of(&out);
    assert!(table.lines().next().unwrap().contains("host"), "{table}");
    let app = table.lines().find(|l| l.starts_with("app")).unwrap();
    assert!(app.contains(" h2 ") && app.contains("ready"), "{table}");
    let db = table.lines().find(|l| l.starts_with("db")).unwrap();
    assert!(db.contains(" main "), "{table}");
    // Each host's logs, by its name.
    let out = p
        .dagstart(&["--host", "h2", "logs", "app"])
        .timeout(RUN_LIMIT)
        .output()
        .unwrap();
    let logs = crate::harness::stdout_of(&out);
    assert!(logs.contains("addr=127.0.0.2"), "{logs}{}", stderr_of(&out));
    // From another host, fetched from h2 (its address, the token published in etcd).
    let out = p
        .dagstart(&["--host", "main", "logs", "app", "db"])
        .timeout(RUN_LIMIT)
        .output()
        .unwrap();
    let logs = crate::harness::stdout_of(&out);
    assert!(logs.contains("addr=127.0.0.2"), "{logs}{}", stderr_of(&out));
    assert!(logs.contains("db") && logs.contains("up"), "{logs}");
    // Without the token, nothing.
    let info = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &etcd.clients[0],
            "get",
            "--print-value-only",
            "/dagstart/t/hosts/h2",
        ])
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let address = info["logs"]["url"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://");
    let answer = crate::dashboard::http_get(address, "/logs/app");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // A node of another host is steered there.
    refused(
        &p,
        &["--host", "main", "stop", "app"],
        1,
        "runs on host `h2`",
    );
    down(&p, "main");
    let ordered = [
        "start-db",
        "start-app",
        "start-web",
        "stop-web",
        "stop-app",
        "stop-db",
    ];
    wait_for_order(&p, "the stop in reverse order", &ordered);
    assert_ends_well(
        &p,
        &mut run,
        &format!("run_--host_main_--dashboard_{dashboard}"),
    );
    // The agent ends with the run.
    assert_ends_well(&p, &mut agent, "agent_--host_h2");
    // Each host kept its own state and logs.
    assert!(p.path().join(".dagstart/hosts/h2/runs").is_dir());
    assert!(host_log(&p, "h2").contains("app: ready"));
    // Every node gets every host's address.
    let app_log = std::fs::read_to_string(p.path().join("logs/h2/app.log")).unwrap();
    assert!(app_log.contains("addr=127.0.0.2"), "{app_log}");
    // The coordinator's report places each node on its host.
    let out = p
        .dagstart(&["--host", "main", "report"])
        .timeout(RUN_LIMIT)
        .output()
        .unwrap();
    let report = crate::harness::stdout_of(&out);
    assert!(
        report.contains("app on h2") && report.contains("db on main"),
        "{report}{}",
        stderr_of(&out)
    );
}

#[test]
fn logs_follow_a_node_of_another_host() {
    let Some(etcd) = EtcdCluster::start() else {
        return;
    };
    let p = etcd.project(&format!(
        "[hosts.h2]\n\n[services.ticker]\nhost = \"h2\"\n{TICKER}"
    ));
    let mut agent = background(&p, &["agent", "--host", "h2"]);
    let mut run = background(&p, &["run", "--host", "main"]);
    wait_for(&p, "main to see the ticker ready", || {
        host_log(&p, "main").contains("ticker: ready")
    });
    let (mut follower, lines) =
        spawn_reading_lines(&p, &["--host", "main", "logs", "-f", "ticker"]);
    assert_follows_ticks(&lines);
    down(&p, "main");
    assert_ends_well(&p, &mut run, "run_--host_main");
    assert_ends_well(&p, &mut agent, "agent_--host_h2");
    assert!(wait_exit(&mut follower, RUN_LIMIT).success());
}

#[test]
fn a_killed_agent_is_noticed_its_dependents_wait_and_it_rejoins() {
    let Some(etcd) = EtcdCluster::start() else {
        return;
    };
    let p = three_tier(&etcd);
    let (mut agent, _run) = three_up(&p);
    let app_pid = spawned(&host_log(&p, "h2"), "app");
    agent.kill().unwrap();
    agent.wait().unwrap();
    // Its node died with it (no orphan), its lease lapses, and web (restart edge) stops.
    wait_for(&p, "the app's process to be gone", || {
        !crate::harness::alive(app_pid)
    });
    wait_for(&p, "web to stop for the lost app", || {
        order(&p).last().map(String::as_str) == Some("stop-web")
    });
    // (The log thread may write the line a moment after web got its signal.)
    wait_for(&p, "main to say h2 was lost", || {
        host_log(&p, "main").contains("host `h2` left the run or was lost")
    });
    // The agent comes back: app starts again, and web after it.
    let _agent = background(&p, &["agent", "--host", "h2"]);
    wait_for(&p, "app and web to start again", || {
        order(&p).ends_with(&["start-app".to_owned(), "start-web".to_owned()])
    });
    down(&p, "main");
}

#[test]
fn when_the_coordinator_dies_another_host_leads_and_it_rejoins() {
    let Some(etcd) = EtcdCluster::start() else {
        return;
    };
    let p = three_tier(&etcd);
    let (mut agent, mut run) = three_up(&p);
    run.kill().unwrap();
    run.wait().unwrap();
    // Its nodes died with it; h2 keeps app running (its edge to db does not restart it).
    wait_for(&p, "h2 to see db lost", || {
        host_log(&p, "h2").contains("db: exited (host `main` left the run or was lost)")
    });
    assert!(matches!(agent.try_wait(), Ok(None)), "the agent goes on");
    assert!(!order(&p).contains(&"stop-app".to_owned()), "{}", story(&p));
    // The coordinator comes back and rejoins the same run: its nodes start again.
    let mut run = background(&p, &["run", "--host", "main"]);
    wait_for(&p, "db and web to start again", || {
        let order = order(&p);
        order.iter().filter(|l| *l == "start-db").count() == 2
            && order.iter().filter(|l| *l == "start-web").count() == 2
    });
    // `down` on the agent's host stops the whole run, in order, whoever leads.
    down(&p, "h2");
    stopped_in_reverse_order(&p, &mut run, &mut agent);
}

#[test]
fn the_run_goes_on_when_the_etcd_leader_dies() {
    let Some(mut etcd) = EtcdCluster::start() else {
        return;
    };
    let p = three_tier(&etcd);
    let (_agent, _run) = three_up(&p);
    let leader = etcd.leader();
    etcd.kill(leader);
    // A restart on h2 still reaches web on the coordinator, through the two members left.
    let out = p
        .dagstart(&["--host", "h2", "restart", "app"])
        .timeout(RUN_LIMIT)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    wait_for(&p, "web to follow app's restart", || {
        let order = order(&p);
        let count = |line: &str| order.iter().filter(|l| *l == line).count();
        count("stop-web") == 1 && count("start-web") == 2 && count("start-app") == 2
    });
    down(&p, "main");
    wait_for(&p, "everything to stop", || {
        order(&p).ends_with(&["stop-web".into(), "stop-app".into(), "stop-db".into()])
    });
}

#[test]
fn without_quorum_every_host_keeps_what_runs_and_goes_on_once_it_is_back() {
    let Some(mut etcd) = EtcdCluster::start() else {
        return;
    };
    let p = three_tier(&etcd);
    let (mut agent, mut run) = three_up(&p);
    // Both hosts know every node is up before etcd loses its quorum.
    wait_for(&p, "h2's startup to complete", || {
        host_log(&p, "h2").contains("startup complete")
    });
    etcd.kill(0);
    etcd.kill(1);
    // No quorum for longer than the lease: nothing is stopped anywhere, and it is said.
    wait_for(&p, "both hosts to say the cluster is unreachable", || {
        host_log(&p, "h2").contains("the cluster is unreachable")
            && host_log(&p, "main").contains("the cluster is unreachable")
    });
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(order(&p).len(), 3, "nothing stopped: {}", story(&p));
    assert!(matches!(agent.try_wait(), Ok(None)) && matches!(run.try_wait(), Ok(None)));
    etcd.restart(0);
    etcd.restart(1);
    wait_for(&p, "both hosts to be back", || {
        host_log(&p, "h2").contains("back in the run")
            && host_log(&p, "main").contains("back in the run")
    });
    down(&p, "main");
    stopped_in_reverse_order(&p, &mut run, &mut agent);
}

#[test]
fn a_host_taken_twice_another_file_and_an_unknown_host_are_refused() {
    let Some(etcd) = EtcdCluster::start() else {
        return;
    };
    let p = three_tier(&etcd);
    let (_agent, _run) = three_up(&p);

    // The same host again, from another project directory with the same file.
    let twin = Project::new(&std::fs::read_to_string(p.path().join("services.toml")).unwrap());
    refused(
        &twin,
        &["agent", "--host", "h2"],
        6,
        "host `h2` is already in the run",
    );

    // Another services.toml for the same cluster.
    let other = etcd.project("[hosts.h3]\n\n[services.x]\nhost = \"h3\"\ncommand = \"sleep 9\"\n");
    refused(
        &other,
        &["agent", "--host", "h3"],
        2,
        "is not the one of the run",
    );

    // A host the file does not declare.
    refused(&twin, &["agent", "--host", "h22"], 2, "did you mean `h2`?");

    // A second coordinator while this one runs.
    refused(&twin, &["run", "--host", "other"], 6, "already going on");
    down(&p, "main");
}

#[test]
fn unreachable_etcd_is_a_clear_error_naming_the_endpoints() {
    let port = free_port();
    let p = Project::new(&format!(
        "[cluster]\netcd = [\"http://127.0.0.1:{port}\"]\n\n[services.a]\ncommand = \"sleep 9\"\n"
    ));
    let out = p.dagstart(&["run"]).timeout(RUN_LIMIT).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(err.contains("cannot reach etcd"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    // Nothing was started.
    assert!(!p.path().join("logs/a.log").exists());
    // DAGSTART_ETCD (comma-separated) replaces the file's endpoints: those are the ones tried.
    let (first, second) = (free_port(), free_port());
    let out = p
        .dagstart(&["run"])
        .env(
            "DAGSTART_ETCD",
            format!("http://127.0.0.1:{first},http://127.0.0.1:{second}"),
        )
        .timeout(RUN_LIMIT)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(
        err.contains(&format!("127.0.0.1:{first}")) && err.contains(&format!("127.0.0.1:{second}")),
        "{err}"
    );
    assert!(!err.contains(&format!("127.0.0.1:{port}")), "{err}");
}

#[test]
fn cluster_mistakes_in_services_toml_are_located() {
    let p = Project::new(
        "[cluster]\nlease_ttl = \"500ms\"\n\n[hosts.db1]\n\n[services.a]\ncommand = \"x\"\nhost = \"db2\"\n",
    );
    let out = p.dagstart(&["check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(err.contains("`[cluster]` needs etcd endpoints"), "{err}");
    assert!(err.contains("lease_ttl"), "{err}");
    assert!(
        err.contains("which is not declared") && err.contains("did you mean `db1`?"),
        "{err}"
    );
    let p = Project::new("[services.a]\ncommand = \"x\"\nhost = \"db1\"\n");
    let out = p.dagstart(&["check"]).output().unwrap();
    assert!(
        stderr_of(&out).contains("there is no `[cluster]`"),
        "{}",
        stderr_of(&out)
    );
    let out = p.dagstart(&["agent", "--host", "db1"]).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
}

/// The host pid of `node` from a host's dagstart.log.
fn spawned(log: &str, node: &str) -> i32 {
    let prefix = format!("{node}: spawned (pid ");
    log.lines()
        .rev()
        .find_map(|l| l.split_once(&prefix).map(|(_, rest)| rest))
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no spawn of {node} in:\n{log}"))
}

/// A "host" of its own: a network namespace joined to a test bridge by a veth pair, so that
/// cutting the pair's outer end is a real partition. Removed when dropped.
struct Netns {
    name: String,
    outer: String,
    bridge: String,
    /// The bridge's own address (where etcd listens).
    pub gateway: String,
}

impl Netns {
    /// `None` (the test says it is skipped) without root or `ip`.
    fn create() -> Option<Self> {
        static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        if !nix::unistd::Uid::effective().is_root()
            || Command::new("ip").arg("-V").output().is_err()
        {
            eprintln!("skipped: a partition needs root and `ip` (network namespaces)");
            return None;
        }
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let tag = format!("{}{n}", std::process::id() % 10_000);
        let subnet = format!("10.{}.{}", 200 + n % 50, std::process::id() % 250);
        let net = Self {
            name: format!("dsns{tag}"),
            outer: format!("dsva{tag}"),
            bridge: format!("dsbr{tag}"),
            gateway: format!("{subnet}.1"),
        };
        let inner = format!("dsvb{tag}");
        let ns = net.name.clone();
        let steps: Vec<Vec<String>> = vec![
            vec!["link", "add", &net.bridge, "type", "bridge"],
            vec!["addr", "add", &format!("{subnet}.1/24"), "dev", &net.bridge],
            vec!["link", "set", &net.bridge, "up"],
            vec!["netns", "add", &ns],
            vec![
                "link", "add", &net.outer, "type", "veth", "peer", "name", &inner,
            ],
            vec!["link", "set", &inner, "netns", &ns],
            vec!["link", "set", &net.outer, "master", &net.bridge, "up"],
            vec![
                "netns",
                "exec",
                &ns,
                "ip",
                "addr",
                "add",
                &format!("{subnet}.2/24"),
                "dev",
                &inner,
            ],
            vec!["netns", "exec", &ns, "ip", "link", "set", &inner, "up"],
            vec!["netns", "exec", &ns, "ip", "link", "set", "lo", "up"],
        ]
        .into_iter()
        .map(|step| step.into_iter().map(str::to_owned).collect())
        .collect();
        for step in steps {
            let out = Command::new("ip").args(&step).output().unwrap();
            assert!(out.status.success(), "ip {step:?}: {}", stderr_of(&out));
        }
        Some(net)
    }

    /// Cuts (or mends) the namespace's only link.
    fn link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        let out = Command::new("ip")
            .args(["link", "set", &self.outer, state])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
    }

    /// `dagstart ARGS...` inside the namespace, in `p`'s directory, stderr to a file.
    fn dagstart(&self, p: &Project, args: &[&str]) -> Running {
        let log = std::fs::File::create(p.path().join("netns.out")).unwrap();
        Command::new("ip")
            .args(["netns", "exec", &self.name, env!("CARGO_BIN_EXE_dagstart")])
            .args(args)
            .current_dir(p.path())
            .env_remove("DAGSTART_FILE")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
            .into()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for args in [
            vec!["link", "del", self.outer.as_str()],
            vec!["link", "del", self.bridge.as_str()],
            vec!["netns", "del", self.name.as_str()],
        ] {
            let _ = Command::new("ip").args(&args).output();
        }
    }
}

#[test]
fn a_partitioned_host_keeps_its_nodes_and_rejoins_when_healed() {
    let Some(net) = Netns::create() else {
        return;
    };
    let Some(etcd) = EtcdCluster::start_on(&net.gateway) else {
        return;
    };
    let p = three_tier(&etcd);
    // h2 is the namespace: its only way to etcd is the veth pair.
    let mut agent = net.dagstart(&p, &["agent", "--host", "h2"]);
    let _run = background(&p, &["run", "--host", "main"]);
    wait_for_order(
        &p,
        "the three to start",
        &["start-db", "start-app", "start-web"],
    );
    let app_pid = spawned(&host_log(&p, "h2"), "app");
    net.link(false);
    // The coordinator sees h2's lease lapse: web (restart edge) stops and waits.
    wait_for(&p, "web to stop for the unreachable app", || {
        order(&p).last().map(String::as_str) == Some("stop-web")
    });
    // The cut-off agent keeps app running and says the cluster is unreachable.
    wait_for(&p, "h2 to say the cluster is unreachable", || {
        host_log(&p, "h2").contains("the cluster is unreachable")
    });
    assert!(crate::harness::alive(app_pid), "{}", story(&p));
    assert!(matches!(agent.try_wait(), Ok(None)));
    net.link(true);
    // Healed: h2 rejoins by itself, publishes app again, and web starts again.
    wait_for(&p, "web to start again after the heal", || {
        order(&p).iter().filter(|l| *l == "start-web").count() == 2
    });
    wait_for(&p, "h2 to say it is back", || {
        host_log(&p, "h2").contains("back in the run")
    });
    assert!(
        !order(&p).contains(&"stop-app".to_owned()),
        "app was never stopped: {}",
        story(&p)
    );
    down(&p, "main");
    assert_ends_well(&p, &mut agent, "agent_--host_h2");
}

/// The client against a real etcd, for what the watcher relies on: a watch from a listed
/// revision delivers every change after it, in order; one from a revision compacted away is
/// told so (the watcher then lists again) instead of silently missing changes.
#[test]
fn a_watch_from_a_compacted_revision_is_told_so_by_a_real_etcd() {
    use dagstart::engine::cluster::etcd::{Etcd, WatchEvent, WatchMessage};
    let Some(etcd) = EtcdCluster::start() else {
        return;
    };
    let client = Etcd::new(etcd.clients.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let next = |watch: &mut dagstart::engine::cluster::etcd::Watch| {
        runtime
            .block_on(async { tokio::time::timeout(RUN_LIMIT, watch.next()).await })
            .expect("a watch message in time")
            .expect("a readable watch")
            .expect("an open watch")
    };
    let listed = runtime.block_on(async {
        client.put("/w/a", b"1", None).await.unwrap();
        let (_, listed) = client.range_prefix("/w/").await.unwrap();
        client.put("/w/a", b"2", None).await.unwrap();
        client.put("/w/b", b"3", None).await.unwrap();
        client.delete("/w/a").await.unwrap();
        listed
    });
    let mut watch = runtime
        .block_on(client.watch_prefix("/w/", listed + 1))
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match next(&mut watch) {
            WatchMessage::Events(events) => seen.extend(events.into_iter().map(|e| match e {
                WatchEvent::Put(kv) => {
                    format!("put {}={}", kv.key, String::from_utf8_lossy(&kv.value))
                }
                WatchEvent::Delete { key, .. } => format!("delete {key}"),
            })),
            WatchMessage::Compacted => panic!("nothing was compacted yet"),
        }
    }
    assert_eq!(seen, ["put /w/a=2", "put /w/b=3", "delete /w/a"]);
    drop(watch);
    // Compact up to now: the listed revision is gone.
    let (_, now) = runtime.block_on(client.range_prefix("/w/")).unwrap();
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &etcd.clients[0], "compact", &now.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let mut watch = runtime
        .block_on(client.watch_prefix("/w/", listed + 1))
        .unwrap();
    assert!(matches!(next(&mut watch), WatchMessage::Compacted));
}

/// Laziness across hosts: each host's core decides it over the whole graph, so a lazy node
/// starts when a dependent on any host is about to start, and one that nothing asks for never
/// starts and holds up no host's startup.
#[test]
fn a_lazy_node_starts_for_a_dependent_on_another_host_and_not_otherwise() {
    let Some(etcd) = EtcdCluster::start() else {
        return;
    };
    let p = etcd.project(&format!(
        "[hosts.h2]\n\n[services.db]\nhost = \"h2\"\nlazy = true\n{}\n[services.idle]\nhost = \"h2\"\nlazy = true\n{}\n[services.app]\ndepends_on = [\"db\"]\n{}",
        recording("db"),
        recording("idle"),
        recording("app"),
    ));
    let _agent = background(&p, &["agent", "--host", "h2"]);
    let _run = background(&p, &["run", "--host", "main"]);
    wait_for_order(&p, "db, then app", &["start-db", "start-app"]);
    wait_for(&p, "both hosts' startup to complete", || {
        host_log(&p, "main").contains("startup complete")
            && host_log(&p, "h2").contains("startup complete")
    });
    assert!(
        !order(&p).contains(&"start-idle".to_owned()),
        "{}",
        story(&p)
    );
    down(&p, "main");
    wait_for_order(
        &p,
        "the stop in reverse order",
        &["start-db", "start-app", "stop-app", "stop-db"],
    );
}

/// Ctrl-C of the `run` process stops the whole run, in reverse order across hosts.
#[test]
fn ctrl_c_of_the_run_stops_every_host_in_reverse_order() {
    let Some(etcd) = EtcdCluster::start() else {
        return;
    };
    let p = three_tier(&etcd);
    let (mut agent, mut run) = three_up(&p);
    crate::harness::interrupt(&run);
    stopped_in_reverse_order(&p, &mut run, &mut agent);
}

/// Ctrl-C of an agent leaves the run alone: it stops its own node, leaves nothing behind and
/// exits 0; the other hosts see its node gone, as if the host were lost (the dependent over a
/// restart edge stops and waits), and the run goes on.
#[test]
fn ctrl_c_of_an_agent_leaves_the_run_cleanly() {
    let Some(etcd) = EtcdCluster::start() else {
        return;
    };
    let p = three_tier(&etcd);
    let (mut agent, mut run) = three_up(&p);
    wait_for(&p, "h2's startup to complete", || {
        host_log(&p, "h2").contains("startup complete")
    });
    let app_pid = spawned(&host_log(&p, "h2"), "app");
    crate::harness::interrupt(&agent);
    assert_ends_well(&p, &mut agent, "agent_--host_h2");
    assert!(!crate::harness::alive(app_pid), "{}", story(&p));
    wait_for(&p, "web to stop for the app that left", || {
        order(&p).contains(&"stop-web".to_owned())
    });
    assert!(
        run.try_wait().unwrap().is_none(),
        "the run goes on\n{}",
        story(&p)
    );
    down(&p, "main");
    assert_ends_well(&p, &mut run, "run_--host_main");
    assert_eq!(
        order(&p).last().map(String::as_str),
        Some("stop-db"),
        "{}",
        story(&p)
    );
}
