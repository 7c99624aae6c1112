//! Drawing the terminal UI: the node table, the log view, the dependency tree and the help
//! line, in any size down to 80x24. Colours only where `NO_COLOR` is unset.

use ratatui::Frame;
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState};

use crate::views::tui::model::Model;
use crate::views::tui::usage::bytes;

/// The keys, as the help line says them.
const HELP: &str =
    "↑↓ select  s/x/r start/stop/restart  R reload  a all  / search  f follow  q quit";

pub(super) fn draw(frame: &mut Frame<'_>, model: &Model, colour: bool, title: &str) {
    let area = frame.area();
    let table_height =
        (model.nodes.len() as u16 + 3).clamp(4, area.height.saturating_sub(6).max(4) / 2 + 2);
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(table_height),
            Constraint::Min(3),
            Constraint::Length(1),
        ])
        .split(area);
    table(frame, rows[0], model, colour, title);
    let bottom = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(68), Constraint::Percentage(32)])
        .split(rows[1]);
    logs(frame, bottom[0], model);
    tree(frame, bottom[1], model);
    help(frame, rows[2], model, colour);
}

fn state_style(state: &str, colour: bool) -> Style {
    if !colour {
        return Style::default();
    }
    let colour = match state {
        "ready" | "completed" => Color::Green,
        "starting" | "restarting" | "stopping" | "waiting" => Color::Yellow,
        "failed" | "exited" => Color::Red,
        _ => Color::DarkGray,
    };
    Style::default().fg(colour)
}

fn uptime(ms: Option<u64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 60_000 => format!("{}s", ms / 1000),
        Some(ms) if ms < 3_600_000 => format!("{}m", ms / 60_000),
        Some(ms) => format!("{}h", ms / 3_600_000),
    }
}

fn table(frame: &mut Frame<'_>, area: Rect, model: &Model, colour: bool, title: &str) {
    // A cluster run has a host column; one host does not need it.
    let hosts = model.nodes.iter().any(|n| n.host.is_some());
    let mut titles = vec!["NODE", "STATE", "PID", "UP", "RST", "CPU", "MEM", "LAST"];
    if hosts {
        titles.insert(1, "HOST");
    }
    let header = Row::new(titles).style(Style::default().add_modifier(Modifier::BOLD));
    let rows = model.nodes.iter().map(|n| {
        let usage = model.usage.get(&n.name).copied().unwrap_or_default();
        let pid = n.pid.map_or_else(|| "-".to_owned(), |p| p.to_string());
        let cpu = if n.pid.is_some() {
            format!("{:.0}%", usage.cpu)
        } else {
            "-".into()
        };
        let mut cells = vec![
            Cell::from(n.name.clone()),
            Cell::from(n.state.clone()).style(state_style(&n.state, colour)),
            Cell::from(pid),
            Cell::from(uptime(n.uptime_ms)),
            Cell::from(n.restarts.to_string()),
            Cell::from(cpu),
            Cell::from(bytes(usage.rss)),
            Cell::from(match &n.degraded {
                Some(why) => format!("degraded: {why}"),
                None => n.last.clone().unwrap_or_default(),
            }),
        ];
        if hosts {
            cells.insert(1, Cell::from(n.host.clone().unwrap_or_default()));
        }
        Row::new(cells)
    });
    let mut widths = vec![
        Constraint::Length(14),
        Constraint::Length(11),
        Constraint::Length(7),
        Constraint::Length(4),
        Constraint::Length(3),
        Constraint::Length(5),
        Constraint::Length(6),
        Constraint::Min(10),
    ];
    if hosts {
        widths.insert(1, Constraint::Length(8));
    }
    let highlight = if colour {
        Style::default().add_modifier(Modifier::REVERSED)
    } else {
        Style::default().add_modifier(Modifier::REVERSED | Modifier::BOLD)
    };
    let table = Table::new(rows, widths)
        .header(header)
        .block(
            Block::default()
                .borders(Borders::ALL)
                .title(title.to_owned()),
        )
        .row_highlight_style(highlight)
        .highlight_symbol("> ");
    let mut state = TableState::default().with_selected(Some(model.selected));
    frame.render_stateful_widget(table, area, &mut state);
}

fn logs(frame: &mut Frame<'_>, area: Rect, model: &Model) {
    let lines = model.visible_lines();
    let inner_height = area.height.saturating_sub(2) as usize;
    let scroll = if model.follow { 0 } else { model.scroll };
    let end = lines.len().saturating_sub(scroll);
    let start = end.saturating_sub(inner_height);
    let shown: Vec<Line<'_>> = lines[start..end]
        .iter()
        .map(|l| {
            if model.all_logs {
                Line::from(vec![
                    Span::styled(
                        format!("{} ", l.node),
                        Style::default().add_modifier(Modifier::BOLD),
                    ),
                    Span::raw(l.text.clone()),
                ])
            } else {
                Line::from(l.text.clone())
            }
        })
        .collect();
    let whose = if model.all_logs {
        "all nodes".to_owned()
    } else {
        model.selected_name().unwrap_or("-").to_owned()
    };
    let mut title = format!("logs: {whose}");
    if let Some(search) = &model.search {
        title += &format!(" /{search}");
    }
    title += if model.follow {
        " (follow)"
    } else {
        " (paused)"
    };
    frame.render_widget(
        Paragraph::new(shown).block(Block::default().borders(Borders::ALL).title(title)),
        area,
    );
}

fn tree(frame: &mut Frame<'_>, area: Rect, model: &Model) {
    let lines: Vec<Line<'_>> = model.tree().into_iter().map(Line::from).collect();
    frame.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title("needs")),
        area,
    );
}

fn help(frame: &mut Frame<'_>, area: Rect, model: &Model, colour: bool) {
    let (text, style) = if let Some(typing) = &model.typing {
        (
            format!("search: {typing}█  (Enter apply, Esc cancel)"),
            Style::default(),
        )
    } else if let Some((_, question)) = &model.confirm {
        let style = if colour {
            Style::default().fg(Color::Black).bg(Color::Yellow)
        } else {
            Style::default().add_modifier(Modifier::REVERSED)
        };
        (question.clone(), style)
    } else if let Some(message) = &model.message {
        (format!("{message}  |  {HELP}"), Style::default())
    } else {
        (HELP.to_owned(), Style::default())
    };
    frame.render_widget(Paragraph::new(text).style(style), area);
}
