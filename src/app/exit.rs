//! Exit codes, and errors that carry theirs.

use crate::report::RunReport;

/// Process exit codes (sysexits-style where one fits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Pass = 0,
    ThresholdFailed = 1,
    VerificationFailed = 2,
    Both = 3,
    Usage = 64,
    Unavailable = 69,
    Internal = 70,
    Interrupted = 130,
}

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

/// The exit code of a finished run: interrupted, unavailable, then what
/// failed.
pub(super) fn exit_code(report: &RunReport) -> Exit {
    let unavailable = report.unavailable();
    // A run the scenario aborted failed its own condition, as a
    // threshold does. A shard's thresholds are judged on the merged
    // results, not on its part.
    let thresholds =
        (report.thresholds_failed() && report.shard.is_none()) || report.aborted.is_some();
    let verification = report.verification_failed();
    if report.failure.is_some() {
        Exit::Internal
    } else if report.interrupted {
        Exit::Interrupted
    } else if unavailable {
        Exit::Unavailable
    } else if thresholds && verification {
        Exit::Both
    } else if verification {
        Exit::VerificationFailed
    } else if thresholds {
        Exit::ThresholdFailed
    } else {
        Exit::Pass
    }
}
