//! Where startup time goes: the run history, `dagstart report`, `graph --timings`.

use crate::harness::{assert_success, project, run_with_command, stderr_of, stdout_of, svc};

#[test]
fn report_shows_blame_critical_chain_speedup_and_hints() {
    let p = project(|p| {
        format!(
            "[components.models]\ncommand = {}\n\n[services.api]\ncommand = {}\ndepends_on = [\"models\"]\nhealth = {{ log = \"ready\" }}\n\n\
             [services.side]\ncommand = {}\nhealth = {{ log = \"ready\" }}\n",
            svc(p, "models", "--oneshot --delay 300ms"),
            svc(p, "api", "--delay 100ms"),
            svc(p, "side", "--delay 200ms"),
        )
    });
    let none = p.dagstart(&["report"]).output().unwrap();
    assert!(!none.status.success());
    assert!(
        stderr_of(&none).contains("no runs recorded yet"),
        "{}",
        stderr_of(&none)
    );

    assert_success(&run_with_command(&p, &["--", "true"]));
    let out = p.dagstart(&["report"]).output().unwrap();
    assert_success(&out);
    let text = stdout_of(&out);
    let blame = text.find("blame").unwrap();
    let (models, side, api) = (
        text[blame..].find("models").unwrap(),
        text[blame..].find("side").unwrap(),
        text[blame..].find("api").unwrap(),
    );
    assert!(models < side && side < api, "slowest first:\n{text}");
    assert!(text.contains("critical chain"), "{text}");
    assert!(
        text.contains("api @0.3") && text.contains("(waited 0.3"),
        "{text}"
    );
    // Like with like: sums of start times, one node at a time against the critical chain.
    assert!(text.contains("x from parallelism"), "{text}");
    assert!(text.contains("final verification"), "{text}");
    // Hints only where acting would shorten the startup: here, models weighs most.
    assert!(
        text.contains("`models` took 0.3") && text.contains("saved in full"),
        "{text}"
    );
    assert!(!text.contains("`started`"), "{text}");

    let svg = p.path().join("startup.svg");
    let html = p.path().join("startup.html");
    let out = p
        .dagstart(&[
            "report",
            "--svg",
            svg.to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_success(&out);
    let svg = std::fs::read_to_string(svg).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "{svg}"
    );
    assert_eq!(
        svg.matches("fill=\"#d62728\"").count(),
        2,
        "models and api are the critical path:\n{svg}"
    );
    assert!(svg.contains(">side</text>"), "{svg}");
    // The phases the dashboard shows, each with its exact times on hover.
    for phase in ["class=\"wait\"", "class=\"start\"", "class=\"probe\""] {
        assert!(svg.contains(phase), "{phase} not in:\n{svg}");
    }
    assert!(
        svg.contains("api: waiting for its dependencies until "),
        "{svg}"
    );
    let html = std::fs::read_to_string(html).unwrap();
    assert!(
        html.contains("<svg") && html.contains("critical chain"),
        "{html}"
    );

    let graph = p.dagstart(&["graph", "--timings"]).output().unwrap();
    assert_success(&graph);
    let graph = stdout_of(&graph);
    let line = |name: &str| {
        graph
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("{name} in {graph}"))
    };
    // The time column lines up whatever the kind, with a star on the critical path.
    assert!(line("api").contains("s *"), "{graph}");
    assert!(!line("side").contains('*'), "{graph}");
    let time_end = |l: &str| {
        let token = l
            .split_whitespace()
            .find(|t| t.ends_with('s') && t.contains('.') && t[..1].parse::<u8>().is_ok())
            .unwrap_or_else(|| panic!("no time in {l}"));
        l.find(token).unwrap() + token.len()
    };
    let ends: Vec<usize> = ["api", "side", "models"]
        .iter()
        .map(|n| time_end(line(n)))
        .collect();
    assert!(
        ends.windows(2).all(|w| w[0] == w[1]),
        "misaligned times: {ends:?}\n{graph}"
    );
    let dot = stdout_of(
        &p.dagstart(&["graph", "--timings", "--format", "dot"])
            .output()
            .unwrap(),
    );
    assert!(
        dot.contains("\"models\" -> \"api\" [label=\"completed\", color=red, penwidth=2];"),
        "{dot}"
    );
}

#[test]
fn the_history_keeps_the_last_runs_and_older_ones_can_be_named() {
    let p = project(|p| {
        format!(
            "[components.quick]\ncommand = {}\n",
            svc(p, "quick", "--oneshot")
        )
    });
    for _ in 0..3 {
        assert_success(&run_with_command(&p, &["--", "true"]));
    }
    let runs: Vec<_> = std::fs::read_dir(p.path().join(".dagstart/runs"))
        .unwrap()
        .collect();
    assert_eq!(runs.len(), 3);
    for which in ["-1", "-3", "1", "last"] {
        let out = p.dagstart(&["report", which]).output().unwrap();
        assert_success(&out);
    }
    let out = p.dagstart(&["report", "-4"]).output().unwrap();
    assert!(!out.status.success());
    let out = p
        .dagstart(&["report", "--compare", "1", "-1"])
        .output()
        .unwrap();
    assert_success(&out);
    let text = stdout_of(&out);
    assert!(
        text.lines().nth(1).is_some_and(|l| l.starts_with("ready")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("quick") && (l.contains('+') || l.contains('-'))),
        "{text}"
    );
}
