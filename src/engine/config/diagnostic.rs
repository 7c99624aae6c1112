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
    /// An error with one label, for problems found outside the loader (preflight).
    pub fn located_error(
        code: &'static str,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> Self {
        Self::error(code, message).label(span, label)
    }

    /// A warning with one label, for problems found outside the loader (preflight).
    pub fn located_warning(
        code: &'static str,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> Self {
        Self::warning(code, message).label(span, label)
    }

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
        let lines = LineIndex::new(&self.file);
        self.problems.iter().map(move |p| report(p, &lines))
    }

    /// The problems as plain data, for `--format json`.
    pub fn to_json(&self) -> Vec<JsonProblem> {
        let lines = LineIndex::new(&self.file);
        self.problems
            .iter()
            .map(|p| JsonProblem::new(p, &lines))
            .collect()
    }
}

/// Columns past this are not drawn under their source line: the renderer cannot pad that far
/// (it panicked past 65,535) and nobody reads such a line on a terminal anyway.
const MAX_DRAWN_COLUMN: usize = 4096;

/// `problem` as a report on `file`. A label too far right to draw becomes text naming its
/// line and column, so every problem stays located.
pub fn report(problem: &Problem, lines: &LineIndex) -> miette::Report {
    let too_wide = |span: &Span| {
        lines.line_column(span.start).1 > MAX_DRAWN_COLUMN
            || lines.line_column(span.end).1 > MAX_DRAWN_COLUMN
    };
    if !problem.labels.iter().any(|(span, _)| too_wide(span)) {
        return miette::Report::new(problem.clone()).with_source_code(lines.clone());
    }
    let mut located = problem.clone();
    let mut places = Vec::new();
    located.labels.retain(|(span, label)| {
        if too_wide(span) {
            let (line, column) = lines.line_column(span.start);
            places.push(format!("{}:{line}:{column}: {label}", lines.name));
            false
        } else {
            true
        }
    });
    located.message = format!("{}\n  at {}", located.message, places.join("\n  at "));
    miette::Report::new(located).with_source_code(lines.clone())
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
    fn new(problem: &Problem, lines: &LineIndex) -> Self {
        Self {
            severity: severity_name(problem.severity),
            code: problem.code,
            message: problem.message.clone(),
            help: problem.help.clone(),
            labels: problem
                .labels
                .iter()
                .map(|(span, label)| {
                    let (line, column) = lines.line_column(span.start);
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

/// A file's text with where each of its lines starts, so that many offsets become (line,
/// column), and many problems render, without scanning the text again for each: a file with
/// 10,000 problems stays linear. It is also the source code the reports draw from: miette's
/// own reader scans from the top of the text for every span.
#[derive(Debug, Clone)]
pub struct LineIndex {
    name: String,
    text: Arc<String>,
    starts: Arc<Vec<usize>>,
}

impl LineIndex {
    pub fn new(file: &NamedSource<Arc<String>>) -> Self {
        let text = file.inner().clone();
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self {
            name: file.name().to_owned(),
            text,
            starts: Arc::new(starts),
        }
    }

    /// The 0-based line of byte `offset`.
    fn line_of(&self, offset: usize) -> usize {
        self.starts.partition_point(|&start| start <= offset) - 1
    }

    /// The 1-based line and column (in characters) of byte `offset`.
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = floor_char_boundary(&self.text, offset.min(self.text.len()));
        let line = self.line_of(offset);
        let start = self.starts[line];
        (line + 1, self.text[start..offset].chars().count() + 1)
    }
}

impl miette::SourceCode for LineIndex {
    /// Reads the lines around `span` only, then puts the result back in the file's place.
    fn read_span<'a>(
        &'a self,
        span: &miette::SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, miette::MietteError> {
        let end = span.offset() + span.len();
        if end > self.text.len() {
            return Err(miette::MietteError::OutOfBounds);
        }
        let first = self
            .line_of(span.offset())
            .saturating_sub(context_lines_before + 1);
        let last = self.line_of(end) + context_lines_after + 2;
        let from = self.starts[first];
        let to = self.starts.get(last).copied().unwrap_or(self.text.len());
        let window = &self.text[from..to];
        let inner = miette::SourceSpan::new((span.offset() - from).into(), span.len());
        let read = window.read_span(&inner, context_lines_before, context_lines_after)?;
        Ok(Box::new(miette::MietteSpanContents::new_named(
            self.name.clone(),
            read.data(),
            miette::SourceSpan::new((read.span().offset() + from).into(), read.span().len()),
            read.line() + first,
            read.column(),
            read.line_count() + first,
        )))
    }
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
