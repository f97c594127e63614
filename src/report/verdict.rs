//! The run's verdict: its exit code and the counts of checks behind it,
//! decided in one place so that the terminal's last line, the HTML
//! banner and the process exit code always agree.

use super::RunReport;
use crate::scenario::units::thousands;
use crate::verify::Status;

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

impl Exit {
    /// What the code means, in words.
    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Pass => "every threshold and verification check passed",
            Exit::ThresholdFailed => "a threshold failed, or the scenario aborted the run",
            Exit::VerificationFailed => {
                "a verification check failed or had no data: the server's metrics disagree with what the client measured"
            }
            Exit::Both => "a threshold failed and a verification check failed",
            Exit::Usage => "the command line or the scenario is not valid",
            Exit::Unavailable => "a target or the metric source could not be reached",
            Exit::Internal => "an internal error stopped the run",
            Exit::Interrupted => "the run was interrupted",
        }
    }
}

/// How many checks of each kind ended how.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckCounts {
    pub thresholds_passed: usize,
    pub thresholds_failed: usize,
    pub verification_passed: usize,
    pub verification_failed: usize,
    pub no_data: usize,
    pub skipped: usize,
}

impl CheckCounts {
    pub fn of(r: &RunReport) -> Self {
        let mut c = CheckCounts::default();
        // A shard's thresholds are judged on the merged results.
        for t in r.thresholds.iter().filter(|_| r.shard.is_none()) {
            if t.passed {
                c.thresholds_passed += 1;
            } else {
                c.thresholds_failed += 1;
            }
        }
        for v in r.verification.iter().flat_map(|v| &v.verdicts) {
            match v.status {
                Status::Pass => c.verification_passed += 1,
                Status::Fail => c.verification_failed += 1,
                Status::NoData => c.no_data += 1,
                Status::Skipped => c.skipped += 1,
            }
        }
        c
    }

    pub fn total(&self) -> usize {
        self.thresholds_passed
            + self.thresholds_failed
            + self.verification_passed
            + self.verification_failed
            + self.no_data
            + self.skipped
    }

    pub fn failed(&self) -> usize {
        self.thresholds_failed + self.verification_failed
    }
}

/// A finished run's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunVerdict {
    pub exit: Exit,
    pub checks: CheckCounts,
}

impl RunVerdict {
    /// Interrupted, failed or unavailable first, then what failed.
    pub fn of(r: &RunReport) -> Self {
        // A run the scenario aborted failed its own condition, as a
        // threshold does. A shard's thresholds are judged on the merged
        // results, not on its part.
        let thresholds = (r.thresholds_failed() && r.shard.is_none()) || r.aborted.is_some();
        let verification = r.verification_failed();
        let exit = if r.failure.is_some() {
            Exit::Internal
        } else if r.interrupted {
            Exit::Interrupted
        } else if r.unavailable() {
            Exit::Unavailable
        } else if thresholds && verification {
            Exit::Both
        } else if verification {
            Exit::VerificationFailed
        } else if thresholds {
            Exit::ThresholdFailed
        } else {
            Exit::Pass
        };
        RunVerdict {
            exit,
            checks: CheckCounts::of(r),
        }
    }

    pub fn passed(&self) -> bool {
        self.exit == Exit::Pass
    }

    /// The word the verdict starts with.
    pub fn word(&self) -> &'static str {
        match self.exit {
            Exit::Pass => "PASS",
            Exit::Interrupted => "INTERRUPTED",
            _ => "FAIL",
        }
    }

    /// The verdict after its word: what went wrong, the checks' counts
    /// (with `breakdown`, which kinds failed), and the exit code.
    pub fn details(&self, r: &RunReport, breakdown: bool) -> Vec<String> {
        let c = &self.checks;
        let mut parts = Vec::new();
        if r.failure.is_some() {
            parts.push("the run failed".to_owned());
        } else if r.aborted.is_some() {
            parts.push("the scenario aborted the run".to_owned());
        } else if self.exit == Exit::Unavailable {
            parts.push(
                if r.verification_unavailable {
                    "metric source unreachable"
                } else {
                    "target unreachable"
                }
                .to_owned(),
            );
        }
        if r.verification_error.is_some() {
            parts.push("verification not run".to_owned());
        }
        let total = thousands(c.total() as u64);
        if c.failed() > 0 {
            let mut kinds = Vec::new();
            if c.thresholds_failed > 0 {
                kinds.push(format!(
                    "{} threshold{}",
                    c.thresholds_failed,
                    plural(c.thresholds_failed)
                ));
            }
            if c.verification_failed > 0 {
                kinds.push(format!("{} verification", c.verification_failed));
            }
            let kinds = if breakdown {
                format!(" ({})", kinds.join(", "))
            } else {
                String::new()
            };
            parts.push(format!(
                "{} of {total} checks failed{kinds}",
                thousands(c.failed() as u64),
            ));
        } else if c.no_data > 0 {
            let passed = c.thresholds_passed + c.verification_passed;
            parts.push(format!(
                "{} of {total} checks passed",
                thousands(passed as u64)
            ));
        } else if c.total() > 0 {
            parts.push(format!("{total} check{}", plural(c.total())));
        }
        if c.no_data > 0 {
            parts.push(format!("{} no data", c.no_data));
        }
        if c.skipped > 0 {
            parts.push(format!("{} skipped", c.skipped));
        }
        if let Some(sh) = &r.shard {
            parts.push(format!(
                "shard {}/{}: judged by `redproof merge`",
                sh.index, sh.count
            ));
        }
        parts.push(format!("exit {}", self.exit as u8));
        parts
    }

    /// The whole verdict in one line: `FAIL · 2 of 31 checks failed (1
    /// threshold, 1 verification) · exit 3`.
    pub fn line(&self, r: &RunReport) -> String {
        format!("{} · {}", self.word(), self.details(r, true).join(" · "))
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
