//! Located diagnostics: what is wrong, and in which file, at which line and column.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteDiagnostic, NamedSource};

/// The text of every file that took part in loading, so diagnostics can point into them.
#[derive(Debug, Default, Clone)]
pub struct SourceMap {
    files: Vec<(PathBuf, String)>,
    /// Per file, the spans of literal secrets: masked wherever source text is shown.
    hidden: Vec<Vec<Range<usize>>>,
}

impl SourceMap {
    pub(crate) fn add(&mut self, path: PathBuf, text: String) -> usize {
        self.files.push((path, text));
        self.hidden.push(Vec::new());
        self.files.len() - 1
    }

    /// Marks spans of `file` as secret: [`Diagnostics::render`] never shows them.
    pub(crate) fn hide(&mut self, file: usize, spans: Vec<Range<usize>>) {
        self.hidden[file].extend(spans);
    }

    /// Whether `span` of `file` touches a secret.
    pub(crate) fn is_hidden(&self, file: usize, span: &Range<usize>) -> bool {
        self.hidden[file]
            .iter()
            .any(|h| h.start < span.end.max(span.start + 1) && span.start < h.end)
    }

    /// The text of `file` as diagnostics may show it: secrets masked.
    fn shown_text(&self, file: usize) -> String {
        crate::redact::mask(self.text(file), &self.hidden[file])
    }

    pub(crate) fn text(&self, file: usize) -> &str {
        &self.files[file].1
    }

    pub fn path(&self, file: usize) -> &Path {
        &self.files[file].0
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, file: usize, offset: usize) -> (usize, usize) {
        let text = self.text(file);
        let offset = offset.min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }
}

/// A byte range in one of the loaded files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: usize,
    pub span: Range<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub message: String,
    pub location: Option<Location>,
    /// A short note shown under the pointed-at text.
    pub label: Option<String>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub(crate) fn error(message: impl Into<String>, location: Option<Location>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            location,
            label: None,
            help: None,
        }
    }

    pub(crate) fn warning(message: impl Into<String>, location: Option<Location>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(message, location)
        }
    }

    pub(crate) fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub(crate) fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }
}

/// Every diagnostic of one load, with the sources they point into.
#[derive(Debug, Default, Clone)]
pub struct Diagnostics {
    pub sources: SourceMap,
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub(crate) fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter().filter(|d| d.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Warning)
    }

    /// Orders diagnostics by file and position, so output reads top to bottom.
    pub(crate) fn sort(&mut self) {
        self.items.sort_by_key(|d| {
            (
                d.location.as_ref().map(|l| (l.file, l.span.start)),
                d.severity,
            )
        });
    }

    /// `PATH:LINE:COL` of a diagnostic, or just the path of the main file.
    pub fn locate(&self, d: &Diagnostic) -> String {
        match &d.location {
            Some(loc) => {
                let (line, col) = self.sources.line_col(loc.file, loc.span.start);
                format!("{}:{line}:{col}", self.sources.path(loc.file).display())
            }
            None if !self.sources.files.is_empty() => self.sources.path(0).display().to_string(),
            None => "(config)".to_string(),
        }
    }

    /// One line per diagnostic: `PATH:LINE:COL: error: message`.
    pub fn render_short(&self) -> String {
        let mut out = String::new();
        for d in &self.items {
            let severity = match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            out.push_str(&format!("{}: {severity}: {}\n", self.locate(d), d.message));
        }
        out
    }

    /// Every diagnostic with its source line pointed at, miette-style. Its first line
    /// is `PATH:LINE:COL: message`.
    pub fn render(&self, color: bool) -> String {
        let theme = if color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        let handler = GraphicalReportHandler::new_themed(theme).with_context_lines(1);
        let mut out = String::new();
        for d in &self.items {
            let mut m = MietteDiagnostic::new(format!("{}: {}", self.locate(d), d.message))
                .with_severity(match d.severity {
                    Severity::Error => miette::Severity::Error,
                    Severity::Warning => miette::Severity::Warning,
                });
            if let Some(help) = &d.help {
                m = m.with_help(help.clone());
            }
            let rendered = match &d.location {
                Some(loc) => {
                    let span_len = loc.span.len().max(1);
                    m = m.with_label(LabeledSpan::new(
                        d.label.clone(),
                        loc.span.start,
                        span_len.min(
                            self.sources
                                .text(loc.file)
                                .len()
                                .saturating_sub(loc.span.start),
                        ),
                    ));
                    let report = miette::Report::new(m).with_source_code(NamedSource::new(
                        self.sources.path(loc.file).display().to_string(),
                        self.sources.shown_text(loc.file),
                    ));
                    render_with(&handler, report.as_ref())
                }
                None => render_with(&handler, &m),
            };
            out.push_str(&rendered);
            out.push('\n');
        }
        out
    }
}

fn render_with(handler: &GraphicalReportHandler, d: &dyn miette::Diagnostic) -> String {
    let mut s = String::new();
    if handler.render_report(&mut s, d).is_err() {
        s = format!("{d}\n");
    }
    s
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render_short())
    }
}
