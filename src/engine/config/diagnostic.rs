//! Problems found in a services.toml, as miette diagnostics that point at its bytes.
//!
//! The loader collects every problem of a file in one pass; [`ConfigError`] carries them all,
//! together with the source text, so the edge can render each with its labels.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, Severity};
use serde::Serialize;

/// A byte range in services.toml.
pub type Span = Range<usize>;

/// One problem in a configuration: an error, or a warning that does not stop the load.
#[derive(Debug, Clone)]
pub struct Problem {
    /// Stable machine-readable code, e.g. `dagstart::config::unknown_key`.
    pub code: &'static str,
    pub message: String,
    pub labels: Vec<(Span, String)>,
    pub help: Option<String>,
    pub severity: Severity,
}

impl Problem {
    pub(crate) fn error(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            labels: Vec::new(),
            help: None,
            severity: Severity::Error,
        }
    }

    pub(crate) fn warning(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(code, message)
        }
    }

    pub(crate) fn label(mut self, span: Span, text: impl Into<String>) -> Self {
        self.labels.push((span, text.into()));
        self
    }

    pub(crate) fn help(mut self, text: impl Into<String>) -> Self {
        self.help = Some(text.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Problem {}

impl Diagnostic for Problem {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }

    fn severity(&self) -> Option<Severity> {
        Some(self.severity)
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.labels.is_empty() {
            return None;
        }
        Some(Box::new(self.labels.iter().map(|(span, text)| {
            LabeledSpan::new_with_span(Some(text.clone()), span.clone())
        })))
    }
}

/// Everything wrong with one configuration file. Also carries the warnings found with the errors.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} in {}", count_errors(.problems), .file.name())]
pub struct ConfigError {
    pub file: NamedSource<Arc<String>>,
    pub problems: Vec<Problem>,
}

fn count_errors(problems: &[Problem]) -> String {
    match problems.iter().filter(|p| p.is_error()).count() {
        1 => "1 error".to_owned(),
        n => format!("{n} errors"),
    }
}

impl ConfigError {
    /// Every diagnostic rendered with `handler`, then the summary line: the one text of a
    /// rejected file, wherever it is shown (the terminal, a reload's answer).
    pub fn render(&self, handler: &miette::GraphicalReportHandler) -> String {
        let mut out = String::new();
        for report in self.reports() {
            let _ = handler.render_report(&mut out, report.as_ref());
        }
        out.push_str(&format!("dagstart: {self}\n"));
        out
    }

    /// Each problem as a report that carries the file's text, ready to print with `{:?}`.
    pub fn reports(&self) -> impl Iterator<Item = miette::Report> + '_ {
        self.problems
            .iter()
            .map(|p| miette::Report::new(p.clone()).with_source_code(self.file.clone()))
    }

    /// The problems as plain data, for `--format json`.
    pub fn to_json(&self) -> Vec<JsonProblem> {
        let text = self.file.inner().as_str();
        self.problems
            .iter()
            .map(|p| JsonProblem::new(p, text))
            .collect()
    }
}

/// A problem as `dagstart check --format json` prints it.
#[derive(Debug, Serialize)]
pub struct JsonProblem {
    pub severity: &'static str,
    pub code: &'static str,
    pub message: String,
    pub help: Option<String>,
    pub labels: Vec<JsonLabel>,
}

/// A labelled place in the file; `line` and `column` count from 1.
#[derive(Debug, Serialize)]
pub struct JsonLabel {
    pub label: String,
    pub offset: usize,
    pub length: usize,
    pub line: usize,
    pub column: usize,
}

impl JsonProblem {
    fn new(problem: &Problem, text: &str) -> Self {
        Self {
            severity: severity_name(problem.severity),
            code: problem.code,
            message: problem.message.clone(),
            help: problem.help.clone(),
            labels: problem
                .labels
                .iter()
                .map(|(span, label)| {
                    let (line, column) = line_column(text, span.start);
                    JsonLabel {
                        label: label.clone(),
                        offset: span.start,
                        length: span.len(),
                        line,
                        column,
                    }
                })
                .collect(),
        }
    }
}

pub(crate) fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Advice => "advice",
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = floor_char_boundary(text, offset.min(text.len()));
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// The closest of `candidates` to `name`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// A renderer with no colours and a fixed width, for files, answers over the control socket,
/// tests and snapshots.
pub fn plain_handler() -> miette::GraphicalReportHandler {
    miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
        .with_width(100)
}
