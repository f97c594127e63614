//! Exit codes, and errors that carry theirs.

use crate::report::{RunReport, RunVerdict};

pub use crate::report::Exit;

/// An error that knows its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub(crate) struct Failure {
    pub(super) code: Exit,
    pub(super) error: anyhow::Error,
}

pub(crate) fn fail(code: Exit, error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code,
        error: error.into(),
    }
}

/// The exit code of a finished run, as its verdict line states it.
pub(super) fn exit_code(report: &RunReport) -> Exit {
    RunVerdict::of(report).exit
}
