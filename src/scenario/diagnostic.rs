//! Problems found in a scenario file, each with its position, and their
//! rendering with the offending line quoted under a caret.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::position::Pos;

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
