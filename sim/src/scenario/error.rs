//! Scenario errors: each names the file, line and column and says what was
//! expected; rendered with source spans by miette.

use miette::{Diagnostic, NamedSource, SourceSpan};
use serde_saphyr::Location;
use std::fmt;
use std::path::{Path, PathBuf};

/// A place in a scenario file.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Loc {
    pub line: u64,
    pub column: u64,
    /// Byte offset and length, when known.
    pub offset: usize,
    pub len: usize,
}

impl Loc {
    pub fn from_location(l: &Location) -> Loc {
        let span = l.span();
        Loc {
            line: l.line(),
            column: l.column(),
            offset: span.byte_offset().unwrap_or(span.offset()) as usize,
            len: span.byte_len().unwrap_or(span.len()).max(1) as usize,
        }
    }
}

/// One problem found in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The included file it is in; `None`: the scenario file itself.
    pub file: Option<PathBuf>,
    pub loc: Loc,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.loc.line, self.loc.column, self.message)
    }
}

/// A problem as a miette diagnostic with its label.
#[derive(Debug, Diagnostic, thiserror::Error)]
#[error("{message}")]
pub struct Labelled {
    message: String,
    #[label("{label}")]
    span: SourceSpan,
    label: String,
}

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// YAML that does not parse, or does not fit the schema.
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: PathBuf,
        line: u64,
        column: u64,
        message: String,
        source_text: String,
        offset: usize,
        len: usize,
    },
    /// The file parsed but breaks rules of the format.
    #[error("{}", render_invalid(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
        source_text: String,
        /// The text of each included file a problem is in.
        included: Vec<(PathBuf, String)>,
    },
}

fn render_invalid(path: &Path, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}:{}", p.file.as_deref().unwrap_or(path).display(), p))
        .collect::<Vec<_>>()
        .join("\n")
}

impl ScenarioError {
    /// Every problem rendered with its source snippet, for terminals.
    pub fn render(&self) -> String {
        match self {
            ScenarioError::Io { .. } => self.to_string(),
            ScenarioError::Syntax {
                path,
                line,
                column,
                message,
                source_text,
                offset,
                len,
            } => snippet(
                path,
                source_text,
                &format!("{}:{line}:{column}: {message}", path.display()),
                *offset,
                *len,
                "here",
            ),
            ScenarioError::Invalid {
                path,
                problems,
                source_text,
                included,
            } => {
                let mut out = String::new();
                for p in problems {
                    let (file, text) = match &p.file {
                        None => (path.as_path(), source_text.as_str()),
                        Some(f) => (
                            f.as_path(),
                            included
                                .iter()
                                .find(|(g, _)| g == f)
                                .map_or("", |(_, t)| t.as_str()),
                        ),
                    };
                    out.push_str(&snippet(
                        file,
                        text,
                        &format!("{}:{}", file.display(), p),
                        p.loc.offset,
                        p.loc.len,
                        &p.message,
                    ));
                }
                out.push_str(&format!(
                    "{}: {} problem{} in the scenario\n",
                    path.display(),
                    problems.len(),
                    if problems.len() == 1 { "" } else { "s" }
                ));
                out
            }
        }
    }
}

fn snippet(
    path: &Path,
    source: &str,
    message: &str,
    offset: usize,
    len: usize,
    label: &str,
) -> String {
    let offset = offset.min(source.len());
    let len = len.min(source.len() - offset);
    let d = Labelled {
        message: message.to_string(),
        span: (offset, len).into(),
        label: label.to_string(),
    };
    let report = miette::Report::new(d).with_source_code(NamedSource::new(
        path.display().to_string(),
        source.to_string(),
    ));
    // Unwrapped and without colour: a CI log keeps each message on one
    // line, where grep finds it.
    let handler =
        miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
            .with_wrap_lines(false);
    let mut out = String::new();
    if handler.render_report(&mut out, report.as_ref()).is_err() {
        out = message.to_string();
    }
    out + "\n"
}

/// Something worth saying that does not stop loading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// The included file it is about; `None`: the scenario file itself.
    pub file: Option<PathBuf>,
    pub loc: Option<Loc>,
    pub message: String,
}

impl Warning {
    /// `FILE:LINE:COL: warning: ...`, `scenario` naming the scenario file.
    pub fn render(&self, scenario: &Path) -> String {
        format!(
            "{}:{self}",
            self.file.as_deref().unwrap_or(scenario).display()
        )
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.loc {
            Some(l) => write!(f, "{}:{}: warning: {}", l.line, l.column, self.message),
            None => write!(f, " warning: {}", self.message),
        }
    }
}
