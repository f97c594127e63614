//! The validation pass's shared tools: the diagnostics collector and the
//! small checks every part of the file uses.

use marked_yaml::Spanned;

use super::Diagnostic;
use super::raw::Text;
use crate::position::{Located, Pos};

/// Collects diagnostics while building the model.
pub(super) struct Checker {
    pub(super) diags: Vec<Diagnostic>,
    /// The directory of the scenario file: relative paths start there.
    pub(super) base: std::path::PathBuf,
}

impl Checker {
    pub(super) fn err(&mut self, pos: Option<Pos>, msg: impl Into<String>) {
        self.diags.push(Diagnostic::at(pos, msg));
    }

    /// Runs a parser on an optional value, recording its error.
    pub(super) fn parse_opt<T>(
        &mut self,
        v: &Option<Text>,
        field: &str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        v.as_ref().and_then(|v| self.parse(v, field, f))
    }

    /// Runs a parser on a located value, recording its error.
    pub(super) fn parse<T>(
        &mut self,
        v: &Text,
        field: &str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match f(v.as_str()) {
            Ok(t) => Some(t),
            Err(e) => {
                self.err(pos(v), format!("`{field}`: {e}"));
                None
            }
        }
    }
}

pub(super) fn pos<T>(s: &Spanned<T>) -> Option<Pos> {
    Pos::of_span(s.span())
}

pub(super) fn located(t: &Text) -> Located<String> {
    Located {
        value: t.to_string(),
        pos: pos(t),
    }
}
