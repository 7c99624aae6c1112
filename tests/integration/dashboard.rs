//! The web dashboard in a real browser (headless Chromium), and /metrics over real HTTP.

use std::io::{BufRead as _, Read as _, Write as _};
use std::process::{Command, Stdio};

use crate::harness::{RUN_LIMIT, project, svc, wait_exit, wait_until};

const CHROMIUM: &str = "/usr/bin/chromium";

/// `dagstart ARGS...` with a dashboard on a free port: the process and the address it printed.
fn with_dashboard(p: &crate::harness::Project, args: &[&str]) -> (std::process::Child, String) {
    let mut child = p
        .dagstart_std(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    stderr.read_line(&mut line).unwrap();
    // Keep the pipe open: a closed stderr would make dagstart's later messages fail.
    child.stderr = Some(stderr.into_inner());
    let address = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect(&line)
        .to_owned();
    (child, address)
}

/// `dagstart run` with a dashboard on a free loopback port and the token `t0k`, once its
/// startup has completed; the child and the dashboard's address.
fn started_with_token(p: &crate::harness::Project) -> (std::process::Child, String) {
    let started = with_dashboard(
        p,
        &[
            "run",
            "--dashboard",
            "127.0.0.1:0",
            "--dashboard-token",
            "t0k",
        ],
    );
    p.wait_for_startup();
    started
}

/// True (and said) where the browser tests cannot run.
fn chromium_missing() -> bool {
    let missing = !std::path::Path::new(CHROMIUM).exists();
    if missing {
        eprintln!("skipped: {CHROMIUM} is not installed (.ci/run installs it)");
    }
    missing
}

/// `dagstart down`, and the run's clean exit.
fn down(p: &crate::harness::Project, child: &mut std::process::Child) {
    assert!(p.dagstart(&["down"]).output().unwrap().status.success());
    assert_eq!(wait_exit(child, RUN_LIMIT).code(), Some(0));
}

/// The page's DOM once it has applied the run so far (`?once`: the event stream ends).
fn page(address: &str) -> String {
    page_at(address, "?once")
}

/// The page's DOM, opened with `query`.
fn page_at(address: &str, query: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
        ])
        .args([
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", &format!("http://{address}/{query}")])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn state_of(dom: &str, node: &str) -> Option<String> {
    let marker = format!("id=\"node-{node}\" data-state=\"");
    let start = dom.find(&marker)? + marker.len();
    Some(dom[start..].split('"').next()?.to_owned())
}

pub(crate) fn http_get(address: &str, path: &str) -> String {
    http(address, "GET", path, &[], "")
}

/// One HTTP/1.1 request to the dashboard at `address` (its own address as Host unless
/// `headers` names another); the whole answer, status line first.
fn http(address: &str, method: &str, path: &str, headers: &[&str], body: &str) -> String {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|h| h.to_ascii_lowercase().starts_with("host:"))
    {
        request += &format!("Host: {address}\r\n");
    }
    for header in headers {
        request += &format!("{header}\r\n");
    }
    request += &format!("Content-Length: {}\r\n\r\n{body}", body.len());
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn the_dashboard_shows_node_states_changing_and_metrics() {
    if chromium_missing() {
        return;
    }
    let p = project(|p| {
        format!(
            "[services.fast]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n[services.slow]\ncommand = {}\ndepends_on = [\"fast\"]\nhealth = {{ exec = [\"test\", \"-f\", \"go\"] }}\n",
            svc(p, "fast", ""),
            svc(p, "slow", ""),
        )
    });
    let (mut child, address) = with_dashboard(&p, &["run", "--dashboard", "127.0.0.1:0"]);

    wait_until(RUN_LIMIT, "slow to be spawned", || {
        p.own_log().contains("slow: spawned")
    });
    let before = page(&address);
    assert_eq!(
        state_of(&before, "fast").as_deref(),
        Some("ready"),
        "{before}"
    );
    assert_eq!(
        state_of(&before, "slow").as_deref(),
        Some("starting"),
        "{before}"
    );

    // `slow` is ready once the test says so: however long the browser took to start.
    p.file("go", "");
    p.wait_for_startup();
    let after = page(&address);
    assert_eq!(
        state_of(&after, "slow").as_deref(),
        Some("ready"),
        "the page follows the run:\n{after}"
    );
    assert!(after.contains("critical path: fast → slow"), "{after}");
    // The DAG is drawn with its edges (one per dependency), the critical path marked.
    assert_eq!(after.matches("class=\"edge").count(), 1, "{after}");
    assert!(
        after.contains(
            "class=\"edge critical\" marker-end=\"url(#arrow)\" data-from=\"fast\" data-to=\"slow\""
        ),
        "{after}"
    );
    assert!(
        after.contains("class=\"node critical\" id=\"node-slow\""),
        "{after}"
    );
    // The Gantt chart has a time axis and each node's phases.
    assert!(after.contains("class=\"tick\""), "{after}");
    assert!(after.contains("class=\"bar probe\""), "{after}");
    assert!(after.contains("slow: probing from"), "{after}");
    // The startup history, this run's bar included.
    assert!(after.contains("class=\"run current\""), "{after}");
    let history = http_get(&address, "/history");
    assert!(history.contains("\"ready_ms\":"), "{history}");

    let metrics = http_get(&address, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("dagstart_node_state{node=\"slow\",state=\"ready\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("dagstart_startup_seconds "), "{metrics}");

    down(&p, &mut child);
}

#[test]
fn a_finished_run_is_served_on_the_same_page() {
    let p = project(|p| {
        format!(
            "[components.once]\ncommand = {}\n",
            svc(p, "once", "--oneshot")
        )
    });
    crate::harness::assert_success(&crate::harness::run_with_command(&p, &["--", "true"]));
    let (mut child, address) = with_dashboard(&p, &["report", "--dashboard", "127.0.0.1:0"]);
    let events = http_get(&address, "/events?once");
    assert!(
        events.contains("\"event\":\"startup_complete\""),
        "{events}"
    );
    assert!(http_get(&address, "/").contains("<title>dagstart</title>"));
    crate::harness::interrupt(&child);
    let _ = wait_exit(&mut child, RUN_LIMIT);
}

/// Security: a request that names another host is refused (DNS rebinding); with a token every
/// request needs it (bearer, `?token=` which sets the cookie, or the cookie); actions need the
/// token and the page's own Origin, and take effect.
#[test]
fn the_dashboard_refuses_foreign_hosts_and_requests_without_the_token_and_acts_with_it() {
    let p = project(|p| {
        format!(
            "[services.api]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n",
            svc(p, "api", "")
        )
    });
    let (mut child, address) = with_dashboard(
        &p,
        &[
            "run",
            "--dashboard",
            "127.0.0.1:0",
            "--dashboard-token",
            "s3cret",
        ],
    );
    p.wait_for_startup();
    let foreign = http(&address, "GET", "/", &["Host: rebind.example:80"], "");
    assert!(foreign.starts_with("HTTP/1.1 403"), "{foreign}");
    for path in ["/", "/events?once", "/metrics", "/graph"] {
        let refused = http_get(&address, path);
        assert!(refused.starts_with("HTTP/1.1 401"), "{path}: {refused}");
        let wrong = http(&address, "GET", path, &["Authorization: Bearer s3cre"], "");
        assert!(wrong.starts_with("HTTP/1.1 401"), "{path}: {wrong}");
    }
    let metrics = http(
        &address,
        "GET",
        "/metrics",
        &["Authorization: Bearer s3cret"],
        "",
    );
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    let page = http_get(&address, "/?token=s3cret");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.to_ascii_lowercase()
            .contains("set-cookie: dagstart_token=s3cret; httponly; samesite=strict"),
        "{page}"
    );
    let events = http(
        &address,
        "GET",
        "/events?once",
        &["Cookie: dagstart_token=s3cret"],
        "",
    );
    assert!(events.contains("\"event\":\"ready\""), "{events}");
    let localhost = address.replace("127.0.0.1", "localhost");
    let by_name = http(
        &address,
        "GET",
        "/graph",
        &[
            &format!("Host: {localhost}"),
            "Cookie: dagstart_token=s3cret",
        ],
        "",
    );
    assert!(by_name.contains("\"actions\":true"), "{by_name}");

    let stop = r#"{"action":"stop","node":"api"}"#;
    let auth = "Authorization: Bearer s3cret";
    let cross = http(
        &address,
        "POST",
        "/action",
        &[auth, "Origin: http://evil.example"],
        stop,
    );
    assert!(cross.starts_with("HTTP/1.1 403"), "{cross}");
    let no_token = http(
        &address,
        "POST",
        "/action",
        &[&format!("Origin: http://{address}")],
        stop,
    );
    assert!(no_token.starts_with("HTTP/1.1 401"), "{no_token}");
    let acted = http(
        &address,
        "POST",
        "/action",
        &[auth, &format!("Origin: http://{address}")],
        stop,
    );
    assert!(acted.starts_with("HTTP/1.1 200"), "{acted}");
    assert!(acted.contains("stopping: api"), "{acted}");
    wait_until(RUN_LIMIT, "api to be stopped", || {
        crate::harness::status_json(&p)
            .iter()
            .any(|n| n["name"] == "api" && n["state"] == "stopped")
    });
    down(&p, &mut child);
}

/// Security: without a token nobody may act, and a non-loopback address is refused unless
/// asked for, before anything starts.
#[test]
fn without_a_token_there_are_no_actions_and_the_network_needs_one() {
    let p = project(|p| {
        format!(
            "[services.api]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n",
            svc(p, "api", "")
        )
    });
    let out = p
        .dagstart(&["run", "--dashboard", "0.0.0.0:0", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        crate::harness::stderr_of(&out)
    );
    let err = crate::harness::stderr_of(&out);
    assert!(
        err.contains("would be open to the network without a token"),
        "{err}"
    );
    assert!(!p.own_log().contains("api"), "nothing started");

    let (mut child, address) = with_dashboard(&p, &["run", "--dashboard", "127.0.0.1:0"]);
    p.wait_for_startup();
    assert!(http_get(&address, "/graph").contains("\"actions\":false"));
    let acted = http(
        &address,
        "POST",
        "/action",
        &[&format!("Origin: http://{address}")],
        r#"{"action":"stop","node":"api"}"#,
    );
    assert!(acted.starts_with("HTTP/1.1 404"), "{acted}");
    down(&p, &mut child);
}

/// Security, in the browser: a line with markup is shown as text, and a page opened with the
/// token offers the actions.
#[test]
fn output_with_markup_is_text_on_the_page() {
    if chromium_missing() {
        return;
    }
    let p = crate::harness::Project::new(
        "[services.shady]\ncommand = \"echo '<script>document.title=1</script><b id=bold>x</b>'; echo ready; exec sleep 600\"\nshell = true\nhealth = { log = \"^ready\" }\n",
    );
    let (mut child, address) = started_with_token(&p);
    let dom = page_at(&address, "?once&token=t0k");
    assert!(dom.contains("<title>dagstart</title>"), "{dom}");
    assert!(
        dom.contains("&lt;script&gt;document.title=1&lt;/script&gt;&lt;b id=bold&gt;x&lt;/b&gt;"),
        "{dom}"
    );
    assert!(!dom.contains("id=\"bold\""), "{dom}");
    assert!(dom.contains("data-action=\"stop\""), "{dom}");
    down(&p, &mut child);
}

/// The DAG at 50 nodes: every dependency is drawn as an edge, optional ones dashed, and no
/// two nodes share a place.
#[test]
fn fifty_nodes_are_drawn_with_every_edge() {
    if chromium_missing() {
        return;
    }
    // A random DAG of services that stay up; every fifth dependency optional.
    let text = dagstart::synth::random_dag(50, 3, 11).replace("\"true\"", "\"sleep 600\"");
    let mut edges = 0;
    let mut optional = 0;
    let text: String = text
        .lines()
        .map(|line| match line.strip_prefix("depends_on = [") {
            Some(list) => {
                let names: Vec<&str> = list
                    .trim_end_matches(']')
                    .split(", ")
                    .filter(|n| !n.is_empty())
                    .collect();
                let entries: Vec<String> = names
                    .iter()
                    .map(|n| {
                        edges += 1;
                        if edges % 5 == 0 {
                            optional += 1;
                            format!("{} = {{ required = false }}", n.trim_matches('"'))
                        } else {
                            format!("{} = \"started\"", n.trim_matches('"'))
                        }
                    })
                    .collect();
                format!("depends_on = {{ {} }}", entries.join(", "))
            }
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        edges > 40 && optional > 5,
        "{edges} edges, {optional} optional"
    );
    let p = crate::harness::Project::new(&text);
    let (mut child, address) = with_dashboard(&p, &["run", "--dashboard", "127.0.0.1:0"]);
    p.wait_for_startup();
    let dom = page(&address);
    assert_eq!(dom.matches("class=\"edge").count(), edges, "{dom}");
    assert_eq!(dom.matches("class=\"edge optional").count(), optional);
    // Each node box is placed at "left: Xpx; top: Ypx" (Gantt bars use percentages).
    let places: Vec<&str> = dom
        .split("style=\"left: ")
        .skip(1)
        .filter_map(|rest| rest.split("; width").next())
        .filter(|place| place.contains("px; top:"))
        .collect();
    let distinct: std::collections::HashSet<&&str> = places.iter().collect();
    assert_eq!(places.len(), 50, "{places:?}");
    assert_eq!(distinct.len(), 50, "two nodes in one place: {places:?}");
    down(&p, &mut child);
}

/// Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: messages
/// on fds 3 and 4, each ended by a NUL), through two named pipes.
struct Browser {
    child: std::process::Child,
    to: std::fs::File,
    from: std::io::BufReader<std::fs::File>,
    next_id: u64,
    session: Option<String>,
    _dir: tempfile::TempDir,
}

impl Browser {
    fn open(url: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (to_path, from_path) = (dir.path().join("to"), dir.path().join("from"));
        for fifo in [&to_path, &from_path] {
            nix::unistd::mkfifo(fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        }
        let profile = dir.path().join("profile");
        let child = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "exec {CHROMIUM} --headless --no-sandbox --disable-gpu --no-first-run \
                 --user-data-dir='{}' --remote-debugging-pipe about:blank 3<'{}' 4>'{}'",
                profile.display(),
                to_path.display(),
                from_path.display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Opening a named pipe waits for the other end: chromium's side opens as it starts.
        let to = std::fs::OpenOptions::new()
            .write(true)
            .open(&to_path)
            .unwrap();
        let from = std::io::BufReader::new(std::fs::File::open(&from_path).unwrap());
        let mut browser = Self {
            child,
            to,
            from,
            next_id: 1,
            session: None,
            _dir: dir,
        };
        let target = browser.call("Target.createTarget", serde_json::json!({ "url": url }));
        let attached = browser.call(
            "Target.attachToTarget",
            serde_json::json!({ "targetId": target["targetId"], "flatten": true }),
        );
        browser.session = attached["sessionId"].as_str().map(str::to_owned);
        browser
    }

    /// Sends one command and waits for its answer (events in between are skipped).
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = serde_json::json!({ "id": id, "method": method, "params": params });
        if let Some(session) = &self.session {
            message["sessionId"] = serde_json::json!(session);
        }
        let mut bytes = message.to_string().into_bytes();
        bytes.push(0);
        self.to.write_all(&bytes).unwrap();
        loop {
            let mut raw = Vec::new();
            self.from.read_until(0, &mut raw).unwrap();
            assert!(!raw.is_empty(), "chromium closed the pipe");
            raw.pop();
            let answer: serde_json::Value = serde_json::from_slice(&raw).unwrap();
            if answer["id"] == id {
                return answer["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    fn eval(&mut self, expression: &str) -> serde_json::Value {
        let result = self.call(
            "Runtime.evaluate",
            serde_json::json!({ "expression": expression, "returnByValue": true }),
        );
        result["result"]["value"].clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// In the browser: the page's stop button stops the node, and the page shows it.
#[test]
fn a_stop_clicked_on_the_page_stops_the_node_and_the_page_shows_it() {
    if chromium_missing() {
        return;
    }
    let p = project(|p| {
        format!(
            "[services.db]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n\
             [services.api]\ncommand = {}\ndepends_on = [\"db\"]\nhealth = {{ log = \"ready\" }}\n",
            svc(p, "db", ""),
            svc(p, "api", "")
        )
    });
    let (mut child, address) = started_with_token(&p);
    let mut browser = Browser::open(&format!("http://{address}/?token=t0k"));
    let state = |browser: &mut Browser| {
        browser.eval("document.getElementById('node-api')?.dataset.state ?? ''")
    };
    wait_until(RUN_LIMIT, "the page to show api ready", || {
        state(&mut browser) == "ready"
    });
    let clicked =
        browser.eval("document.querySelector('#node-api button[data-action=stop]').click(); true");
    assert_eq!(clicked, true);
    wait_until(RUN_LIMIT, "the page to show api stopped", || {
        state(&mut browser) == "stopped"
    });
    // The action's answer and the event stream travel separately: either may come first.
    wait_until(
        RUN_LIMIT,
        "the page to show the answer `stopping: api`",
        || browser.eval("document.getElementById('answer').textContent") == "stopping: api",
    );
    let nodes = crate::harness::status_json(&p);
    assert!(
        nodes
            .iter()
            .any(|n| n["name"] == "api" && n["state"] == "stopped"),
        "{nodes:?}"
    );
    assert!(
        nodes
            .iter()
            .any(|n| n["name"] == "db" && n["state"] == "ready"),
        "{nodes:?}"
    );
    drop(browser);
    down(&p, &mut child);
}
