//! The terminal UI driven in tmux: keys in (send-keys), screen out (capture-pane).

use std::process::Command;
use std::time::Duration;

use crate::harness::{
    Project, RUN_LIMIT, project, start_in_background, svc, wait_exit, wait_until,
};

/// A tmux server of the test's own (its own socket), with one 80x24 window running `command`.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(p: &Project, command: &str, env: &[(&str, &str)]) -> Option<Self> {
        if Command::new("tmux").arg("-V").output().is_err() {
            eprintln!("skipped: tmux is not installed (.ci/run installs it)");
            return None;
        }
        let socket = format!("dagstart-test-{}", p.path().file_name()?.to_string_lossy());
        let exports: String = env
            .iter()
            .map(|(k, v)| format!("export {k}='{v}'; "))
            .collect();
        let script = format!(
            "cd '{}'; echo $$ > shell.pid; {exports}{command}; echo \"UI EXITED $?\"; sleep 600",
            p.path().display()
        );
        let status = Command::new("tmux")
            .args([
                "-L",
                &socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                "80",
                "-y",
                "24",
            ])
            .arg(script)
            .status()
            .ok()?;
        assert!(status.success());
        Some(Self { socket })
    }

    fn screen(&self) -> String {
        self.capture(false)
    }

    fn capture(&self, escapes: bool) -> String {
        let mut args = vec!["-L", &self.socket, "capture-pane", "-p"];
        if escapes {
            args.push("-e");
        }
        let out = Command::new("tmux").args(&args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        for key in keys {
            let ok = Command::new("tmux")
                .args(["-L", &self.socket, "send-keys", key])
                .status()
                .unwrap()
                .success();
            assert!(ok);
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    fn wait_for(&self, what: &str) -> String {
        let mut screen = String::new();
        wait_until(RUN_LIMIT, what, || {
            screen = self.screen();
            screen.contains(what)
        });
        screen
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

fn stack(p: &Project) -> String {
    format!(
        "[services.db]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n\n\
         [services.api]\ncommand = {}\ndepends_on = [\"db\"]\nhealth = {{ log = \"ready\" }}\n\n\
         [services.web]\ncommand = {}\ndepends_on = [\"api\"]\nhealth = {{ log = \"ready\" }}\n",
        svc(p, "db", "--chatter 3"),
        svc(p, "api", ""),
        svc(p, "web", ""),
    )
}

/// `dagstart ui` from another terminal: the table, the tree, a stop that names what it takes
/// along and waits for `y`, a search, and `q` that leaves the stack running and the terminal
/// as it was.
#[test]
fn the_ui_shows_the_stack_steers_it_and_leaves_it_running() {
    let p = project(stack);
    let mut run = start_in_background(&p, &["run"]);
    let dagstart = env!("CARGO_BIN_EXE_dagstart");
    let Some(tmux) = Tmux::start(&p, &format!("{dagstart} ui"), &[]) else {
        return;
    };
    let screen = tmux.wait_for("web");
    for text in [
        "NODE", "STATE", "db", "api", "ready", "logs: db", "needs", "q quit",
    ] {
        assert!(
            screen.contains(text),
            "{text:?} not on the screen:\n{screen}"
        );
    }
    assert!(
        screen.lines().all(|l| l.chars().count() <= 80),
        "fits 80 columns:\n{screen}"
    );
    // The selected node's log.
    tmux.wait_for("db: chatter line 2");
    // api: its tree, then a stop that says what goes first.
    tmux.keys(&["Down"]);
    tmux.wait_for("└─ db (healthy)");
    tmux.keys(&["x"]);
    tmux.wait_for("stop api, and first web? y/n");
    tmux.keys(&["y"]);
    wait_until(RUN_LIMIT, "api and web to be stopped", || {
        let nodes = crate::harness::status_json(&p);
        ["api", "web"].iter().all(|n| {
            nodes
                .iter()
                .any(|s| s["name"] == *n && s["state"] == "stopped")
        })
    });
    // Search the merged logs.
    tmux.keys(&["a", "/", "chatter line 1", "Enter"]);
    let screen = tmux.wait_for("/chatter line 1");
    assert!(screen.contains("db db: chatter line 1"), "{screen}");
    assert!(!screen.contains("chatter line 2"), "{screen}");
    tmux.keys(&["q"]);
    let screen = tmux.wait_for("UI EXITED 0");
    assert!(
        !screen.contains("NODE"),
        "the terminal is restored:\n{screen}"
    );
    assert!(
        p.dagstart(&["status"]).output().unwrap().status.success(),
        "still running"
    );
    assert!(p.dagstart(&["down"]).output().unwrap().status.success());
    assert_eq!(wait_exit(&mut run, RUN_LIMIT).code(), Some(0));
}

/// `run --ui`: quitting stops the stack; colours follow NO_COLOR; a resize redraws.
#[test]
fn run_ui_stops_the_stack_on_quit_and_respects_no_color() {
    let p = project(stack);
    let dagstart = env!("CARGO_BIN_EXE_dagstart");
    let Some(tmux) = Tmux::start(&p, &format!("{dagstart} run --ui"), &[]) else {
        return;
    };
    tmux.wait_for("ready");
    let coloured = tmux.capture(true);
    assert!(
        coloured.contains("\u{1b}[32mready") || coloured.contains("\u{1b}[38;5;2mready"),
        "ready is green:\n{coloured}"
    );
    Command::new("tmux")
        .args(["-L", &tmux.socket, "resize-window", "-x", "100", "-y", "30"])
        .status()
        .unwrap();
    wait_until(RUN_LIMIT, "a redraw at 100 columns", || {
        tmux.screen().lines().any(|l| l.chars().count() == 100)
    });
    tmux.keys(&["q"]);
    tmux.wait_for("UI EXITED 0");
    assert!(
        !dagstart::engine::control::is_running(p.path()),
        "the stack stopped"
    );

    let p = project(stack);
    let Some(tmux) = Tmux::start(&p, &format!("{dagstart} run --ui"), &[("NO_COLOR", "1")]) else {
        return;
    };
    tmux.wait_for("ready");
    let plain = tmux.capture(true);
    assert!(
        !plain.contains("\u{1b}[32m") && !plain.contains("\u{1b}[38;5;2m"),
        "NO_COLOR:\n{plain}"
    );
    tmux.keys(&["q"]);
    tmux.wait_for("UI EXITED 0");
}

/// SIGTERM to `dagstart ui` restores the terminal.
#[test]
fn sigterm_restores_the_terminal() {
    let p = project(stack);
    let mut run = start_in_background(&p, &["run"]);
    let dagstart = env!("CARGO_BIN_EXE_dagstart");
    let Some(tmux) = Tmux::start(&p, &format!("{dagstart} ui"), &[]) else {
        return;
    };
    tmux.wait_for("NODE");
    // The UI is the child of the window's shell, which wrote its pid.
    let shell = std::fs::read_to_string(p.path().join("shell.pid")).unwrap();
    let ui = Command::new("pgrep")
        .args(["-P", shell.trim()])
        .output()
        .unwrap();
    let pid: i32 = String::from_utf8_lossy(&ui.stdout)
        .split_whitespace()
        .next()
        .expect("the ui's pid")
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let screen = tmux.wait_for("UI EXITED");
    assert!(!screen.contains("NODE"), "{screen}");
    assert!(p.dagstart(&["down"]).output().unwrap().status.success());
    assert_eq!(wait_exit(&mut run, RUN_LIMIT).code(), Some(0));
}
