//! A self-contained Gantt chart of a recorded startup, as SVG (and HTML around it), for
//! `dagstart report --svg/--html`.

use std::fmt::Write as _;

use crate::views::history::RunRecord;
use crate::views::report::RecordedRun;

const ROW: f64 = 22.0;
const LABEL: f64 = 170.0;
const WIDTH: f64 = 900.0;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One row per node that started, in launch order, with the phases the dashboard shows: waiting
/// for its dependencies (light grey, from the start of the run), starting (light blue, from its
/// start slot to its spawn), probing until ready (blue); the critical path in red, exact times
/// on hover.
pub fn svg(record: &RunRecord) -> String {
    let run = RecordedRun::from_record(record);
    let mut rows: Vec<(&String, &crate::views::report::RecordedTiming)> = run
        .timings
        .iter()
        .filter(|(_, t)| t.spawned.is_some())
        .collect();
    rows.sort_by(|a, b| {
        a.1.launched
            .unwrap_or(0.0)
            .total_cmp(&b.1.launched.unwrap_or(0.0))
            .then(a.0.cmp(b.0))
    });
    let end = rows
        .iter()
        .filter_map(|(_, t)| t.ready.or(t.spawned))
        .chain(run.ready_ms)
        .fold(1.0_f64, f64::max);
    let scale = (WIDTH - LABEL - 20.0) / end;
    let height = ROW * (rows.len() as f64 + 2.0) + 10.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let step = tick_step(end);
    let mut t = 0.0;
    while t <= end + 0.5 {
        let x = LABEL + t * scale;
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="0" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            height - ROW
        );
        let _ = writeln!(
            out,
            r##"<text x="{x:.1}" y="{:.1}" fill="#666" text-anchor="middle">{}s</text>"##,
            height - 6.0,
            (t / 10.0).round() / 100.0
        );
        t += step;
    }
    for (i, (name, timing)) in rows.iter().enumerate() {
        let y = ROW * (i as f64 + 0.5);
        let critical = run.critical_path.iter().any(|n| n == *name);
        let colour = if critical { "#d62728" } else { "#1f77b4" };
        let _ = writeln!(
            out,
            r#"<text x="4" y="{:.1}">{}</text>"#,
            y + 12.0,
            escape(name)
        );
        let launched = timing.launched.unwrap_or(0.0);
        let spawned = timing.spawned.unwrap_or(launched);
        let ready = timing.ready;
        let _ = writeln!(
            out,
            r##"<rect class="wait" x="{LABEL:.1}" y="{:.1}" width="{:.1}" height="14" fill="#e4e4e4"><title>{}</title></rect>"##,
            y + 2.0,
            (launched * scale).max(0.0),
            escape(&format!(
                "{name}: waiting for its dependencies until {:.3}s",
                launched / 1000.0
            ))
        );
        let _ = writeln!(
            out,
            r##"<rect class="start" x="{:.1}" y="{:.1}" width="{:.1}" height="14" fill="#9ecae1"><title>{}</title></rect>"##,
            LABEL + launched * scale,
            y + 2.0,
            ((spawned - launched) * scale).max(1.0),
            escape(&format!(
                "{name}: starting from {:.3}s, spawned at {:.3}s",
                launched / 1000.0,
                spawned / 1000.0
            ))
        );
        let (finish, title) = match ready {
            Some(r) => (
                r,
                format!(
                    "{name}: spawned at {:.3}s, ready at {:.3}s",
                    spawned / 1000.0,
                    r / 1000.0
                ),
            ),
            None => (
                end,
                format!("{name}: spawned at {:.3}s, never ready", spawned / 1000.0),
            ),
        };
        let opacity = if ready.is_some() { "1" } else { "0.35" };
        let _ = writeln!(
            out,
            r#"<rect class="probe" x="{:.1}" y="{:.1}" width="{:.1}" height="14" fill="{colour}" fill-opacity="{opacity}"><title>{}</title></rect>"#,
            LABEL + spawned * scale,
            y + 2.0,
            ((finish - spawned) * scale).max(1.0),
            escape(&title)
        );
    }
    if let Some(ready) = run.ready_ms {
        let x = LABEL + ready * scale;
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="0" x2="{x:.1}" y2="{:.1}" stroke="#2ca02c" stroke-dasharray="4 3"/>"##,
            height - ROW
        );
    }
    out.push_str("</svg>\n");
    out
}

fn tick_step(end_ms: f64) -> f64 {
    [
        50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 10_000.0, 30_000.0, 60_000.0,
    ]
    .into_iter()
    .find(|s| end_ms / s <= 12.0)
    .unwrap_or(120_000.0)
}

/// The chart in a page of its own, with the text report under it.
pub fn html(id: &str, record: &RunRecord) -> String {
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>dagstart run {id}</title></head>\n<body style=\"font-family:sans-serif\">\n<h1>dagstart run {id}</h1>\n<p>Each row: light grey while waiting for its dependencies, light blue while starting (from its start slot to its spawn), blue while probed until ready; red is the critical path, the dashed green line is \"ready\". Hover for exact times.</p>\n{}<pre>{}</pre>\n</body></html>\n",
        svg(record),
        escape(&crate::views::report::render_recorded(id, record))
    )
}
