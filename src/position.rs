//! Positions in scenario files, shared by the scenario model and the
//! templates compiled from it.

/// A position in a scenario file, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
    /// Which file: 0 for the scenario itself, `n` for its `n`th
    /// `include:`.
    pub source: usize,
}

impl Pos {
    pub(crate) fn of_span(span: &marked_yaml::Span) -> Option<Pos> {
        span.start().map(|m| Pos {
            line: m.line(),
            column: m.column(),
            source: m.source(),
        })
    }
}

/// A value from the scenario file and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Located<T> {
    pub value: T,
    pub pos: Option<Pos>,
}

impl From<&str> for Located<String> {
    /// A value with no known position.
    fn from(value: &str) -> Self {
        Located {
            value: value.to_owned(),
            pos: None,
        }
    }
}
