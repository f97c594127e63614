//! Scenario files: reading YAML, validating it into a checked model, and
//! reporting every problem at once with its file, line and column.
//!
//! Reading happens in two stages. [`raw`] mirrors the file with serde and
//! keeps the position of each value; [`model`] checks those values and
//! builds a [`Scenario`] in which every field is already valid, so the rest
//! of redproof never re-checks input.

mod feeds;
pub mod grpc;
mod model;
pub mod raw;
pub mod threshold;
pub mod units;
pub mod verification;

use std::fmt;
use std::path::{Path, PathBuf};

pub use model::*;

pub use crate::source::{Located, Pos};
pub use crate::template::JsonNode;

/// One problem in a scenario file.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// Where the offending value starts, when known.
    pub pos: Option<Pos>,
    /// What is wrong, naming the field, the value and what was expected.
    pub message: String,
}

impl Diagnostic {
    pub fn at(pos: Option<Pos>, message: impl Into<String>) -> Self {
        Self {
            pos,
            message: message.into(),
        }
    }
}

/// Every problem found in one scenario file.
#[derive(Debug, thiserror::Error)]
pub struct ScenarioErrors {
    pub file: PathBuf,
    /// The file's text, to quote offending lines.
    pub source_text: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl ScenarioErrors {
    pub fn new(file: &Path, source_text: &str, diagnostics: Vec<Diagnostic>) -> Self {
        let mut diagnostics = diagnostics;
        diagnostics.sort_by_key(|d| d.pos.map(|p| (p.line, p.column)));
        Self {
            file: file.to_owned(),
            source_text: source_text.to_owned(),
            diagnostics,
        }
    }
}

impl fmt::Display for ScenarioErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match d.pos {
                Some(p) => {
                    writeln!(f, "{file}:{}:{}: {}", p.line, p.column, d.message)?;
                    if let Some(line) = self.source_text.lines().nth(p.line.saturating_sub(1)) {
                        let gutter = p.line.to_string().len();
                        writeln!(f, "{:gutter$} |", "")?;
                        writeln!(f, "{} | {}", p.line, line)?;
                        let caret_col: usize = line
                            .chars()
                            .take(p.column.saturating_sub(1))
                            .map(|c| if c == '\t' { 1 } else { c.len_utf16() })
                            .sum();
                        writeln!(f, "{:gutter$} | {:caret_col$}^", "", "")?;
                    }
                }
                None => writeln!(f, "{file}: {}", d.message)?,
            }
        }
        let n = self.diagnostics.len();
        write!(
            f,
            "{n} problem{} in `{file}`",
            if n == 1 { "" } else { "s" }
        )
    }
}

/// Reads and validates a scenario file.
pub fn load_file(path: &Path) -> Result<Scenario, ScenarioErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ScenarioErrors::new(
            path,
            "",
            vec![Diagnostic::at(
                None,
                format!("cannot read the scenario file: {e}"),
            )],
        )
    })?;
    parse(path, &text)
}

/// Validates scenario text; `path` is only used in messages and to resolve
/// relative file references.
pub fn parse(path: &Path, text: &str) -> Result<Scenario, ScenarioErrors> {
    model::build(path, text).map_err(|d| ScenarioErrors::new(path, text, d))
}
