//! Everything a run produces, in one serialisable [`RunReport`], and the
//! renderings of it: the RED table on the terminal, the summary JSON, and
//! the results file that `redproof report` re-renders.

mod cells;
mod html;
mod junit;
mod markdown;
mod merge;
mod parts;
mod profile;
mod progress;
mod summary;
mod text;
mod verdict;

use std::time::{Duration, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

pub use html::render_html;
pub use junit::render_junit;
pub use markdown::render_markdown;
pub use merge::merge;
pub use parts::{ScenarioResult, Span};
pub use progress::ProgressDisplay;
pub use summary::{OutcomeCount, OutcomeExample, Row, Summary};
pub use text::render_text;
pub use verdict::{CheckCounts, Exit, RunVerdict};

use crate::engine::{EngineOutput, ScheduleStats};
use crate::measure::{
    MessageCounts, OutcomeStats, RequestStats, Window, decode_histogram as decode,
    encode_histogram as encode,
};
use crate::outcome::Outcome;
use crate::printable::escaped;
use crate::scenario::threshold::{Limit, Metric, Subject, Threshold};
use crate::scenario::verification::VerificationSpec;
use crate::scenario::{Call, Scenario};
use crate::verify::VerificationReport;

/// Identifies the results file format: 2 added the server's figures
/// over time (`verification.server[].timeline`).
pub const FORMAT: &str = "redproof-results/2";

/// Results formats this redproof still reads: format 1 lacks only what
/// format 2 added.
const READABLE: [&str; 2] = ["redproof-results/1", FORMAT];

/// Identifies the format of `redproof report --format json`: 2 names
/// the fields of outcomes (`{"outcome", "ok", "count"}`) where the
/// unversioned first one wrote positional arrays.
pub const SUMMARY_FORMAT: &str = "redproof-summary/2";

/// A whole run: inputs, timings, per-request histograms, windows, verdicts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub format: String,
    pub redproof_version: String,
    pub scenario: ScenarioInfo,
    pub load: LoadInfo,
    /// The file's `scenarios:`, each with its own load and timing; empty
    /// for a file with one top-level load.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scenarios: Vec<ScenarioResult>,
    pub timing: Timing,
    pub interrupted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleStats>,
    pub requests: Vec<RequestResult>,
    pub windows: Vec<Window>,
    pub thresholds: Vec<ThresholdResult>,
    /// Server-side verdicts, when the scenario asks for verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationReport>,
    /// Why verification could not run: the metric source was unreachable,
    /// or answered with an error or an answer redproof cannot read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_error: Option<String>,
    /// An internal error stopped the run (exit 70); what it recorded until
    /// then is in this report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The scenario's own condition stopped the run as failed (exit 1):
    /// `on_start_failures` with `then: abort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted: Option<String>,
    /// Users that stopped after failing `on_start` (`then: stop_user`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub users_stopped: u64,
    /// The metric source could not be reached at all (exit 69), as opposed
    /// to answering badly (exit 2).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verification_unavailable: bool,
    /// The scenario's metric source and `verify:`, `alerts:` and `promql:`
    /// sections, for `redproof verify` after the fact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_spec: Option<VerificationSpec>,
    /// Written by `run --shard`: which part of the scenario this is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardInfo>,
    /// Written by `redproof merge`: how many shards were added up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged: Option<MergedInfo>,
}

/// A shard's place in its scenario, for `redproof merge` to check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// From 0.
    pub index: u32,
    pub count: u32,
    /// SHA-256 of the scenario's files and load overrides: shards of
    /// different scenarios are not merged.
    pub scenario_hash: String,
}

/// What a merged results file was made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergedInfo {
    pub shards: u32,
    pub scenario_hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioInfo {
    pub name: String,
    pub file: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadInfo {
    /// `closed` or `open`; `mixed` for a run whose scenarios use both.
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Closed model: users started (and stopped) per second; all at once
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spawn_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u64>,
    pub drain_s: f64,
    /// A ramped load's stages, for the HTML report's load chart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageInfo>,
}

/// One stage of a ramped load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageInfo {
    pub for_s: f64,
    /// Closed model: the users the stage moves to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<u64>,
    /// Open model: the arrival rate at the stage's start, per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_from: Option<f64>,
    /// Open model: the arrival rate at the stage's end, per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_to: Option<f64>,
}

/// T0 is the load start, T1 the end of the drain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timing {
    pub t0_unix_ms: u64,
    pub stop_unix_ms: u64,
    pub t1_unix_ms: u64,
    /// T0 to when starting stopped.
    pub load_s: f64,
    /// T0 to T1.
    pub elapsed_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestResult {
    pub name: String,
    pub kind: String,
    pub target: String,
    pub method: String,
    pub weight: u32,
    pub unknown: u64,
    /// Requests sent a second time after a kept-alive connection closed
    /// with no answer.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u64,
    pub outcomes: Vec<OutcomeResult>,
    /// gRPC: `unary`, `server_streaming`, `client_streaming` or
    /// `bidi_streaming`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_type: Option<String>,
    /// gRPC: messages sent and received by completed calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<MessageCounts>,
    /// With `pace`: response latency corrected for coordinated omission
    /// (HdrHistogram V2, µs, base64). Thresholds use it when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrected_histogram: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutcomeResult {
    pub outcome: Outcome,
    pub ok: bool,
    pub count: u64,
    /// HdrHistogram V2 serialisation (µs), base64.
    pub histogram: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThresholdResult {
    pub threshold: Threshold,
    /// The observed value in the threshold's unit (µs, ratio, count, /s);
    /// `None` when there was nothing to measure.
    pub observed: Option<f64>,
    pub passed: bool,
}

/// Verdicts quote what the metric source said (label values, metrics
/// page lines, Prometheus' errors and warnings, targets' last errors):
/// they are escaped once, as they enter the report.
fn escape_verification(mut v: VerificationReport) -> VerificationReport {
    v.source = escaped(v.source);
    for x in &mut v.verdicts {
        x.summary = escaped(std::mem::take(&mut x.summary));
        x.diagnosis = x.diagnosis.take().map(escaped);
        x.query = escaped(std::mem::take(&mut x.query));
        for w in &mut x.warnings {
            *w = escaped(std::mem::take(w));
        }
    }
    for f in &mut v.server {
        f.by_status = std::mem::take(&mut f.by_status)
            .into_iter()
            .map(|(k, n)| (escaped(k), n))
            .collect();
    }
    v
}

/// The recorded outcomes of a request, as the results file holds them.
fn outcome_results(st: &RequestStats) -> Vec<OutcomeResult> {
    let mut o: Vec<OutcomeResult> = st
        .outcomes
        .iter()
        .filter(|o| !o.histogram.is_empty())
        .map(|o| OutcomeResult {
            outcome: o.outcome,
            ok: o.ok,
            count: o.histogram.len(),
            histogram: encode(&o.histogram),
            example: o.example.clone(),
        })
        .collect();
    o.sort_by_key(|o| o.outcome);
    o
}

fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

impl RunReport {
    /// Builds the report of a finished run and evaluates its thresholds on
    /// the recorders' figures, which are returned as the summary to render.
    pub fn new(s: &Scenario, file: &str, out: &EngineOutput) -> (Self, Summary) {
        let scenarios = parts::scenario_results(s, out);
        let spans: Vec<Span> = scenarios
            .iter()
            .map(|p| (p.name.clone(), p.load_s))
            .collect();
        let summary = Summary::of_stats(
            s.requests
                .iter()
                .map(|r| r.name.as_str())
                .zip(&out.totals.requests),
            out.load_time.as_secs_f64(),
            &spans,
        );
        let t0 = unix_ms(out.t0);
        let requests = s
            .requests
            .iter()
            .zip(&out.totals.requests)
            .map(|(r, st)| RequestResult {
                name: r.name.to_string(),
                kind: match r.call {
                    Call::Http(_) => "http".into(),
                    Call::Grpc(_) => "grpc".into(),
                },
                target: s.targets[r.call.target()].name.clone(),
                method: r.call.method_label(),
                grpc_type: match &r.call {
                    Call::Grpc(g) => g.kind().map(|k| k.as_str().to_owned()),
                    Call::Http(_) => None,
                },
                messages: matches!(r.call, Call::Grpc(_)).then_some(st.messages),
                corrected_histogram: st.corrected.as_ref().map(encode),
                weight: r.weight.get(),
                unknown: st.unknown,
                retries: st.retries,
                outcomes: outcome_results(st),
            })
            .collect();
        let mut report = RunReport {
            format: FORMAT.into(),
            redproof_version: env!("CARGO_PKG_VERSION").into(),
            scenario: ScenarioInfo {
                name: s.name.clone(),
                file: file.into(),
            },
            load: LoadInfo::of_run(s),
            scenarios,
            timing: Timing {
                t0_unix_ms: t0,
                stop_unix_ms: t0 + out.load_time.as_millis() as u64,
                t1_unix_ms: t0 + out.elapsed.as_millis() as u64,
                load_s: out.load_time.as_secs_f64(),
                elapsed_s: out.elapsed.as_secs_f64(),
            },
            interrupted: out.interrupted,
            schedule: out.schedule.clone(),
            requests,
            windows: out.windows.clone(),
            thresholds: s
                .thresholds
                .iter()
                .map(|t| ThresholdResult {
                    threshold: t.clone(),
                    observed: None,
                    passed: false,
                })
                .collect(),
            verification: None,
            verification_error: None,
            verification_unavailable: false,
            failure: out.failure.clone(),
            aborted: out.aborted.clone(),
            users_stopped: out.users_stopped,
            verify_spec: s
                .verification
                .is_requested()
                .then(|| s.verification.to_spec()),
            shard: None,
            merged: None,
        };
        report.evaluate_thresholds(&summary);
        (report, summary)
    }

    /// Adds the verification outcome and re-evaluates the thresholds on
    /// server figures; `summary` is the one [`RunReport::new`] returned.
    pub fn attach_verification(
        &mut self,
        v: Result<VerificationReport, String>,
        summary: &Summary,
    ) {
        match v {
            Ok(v) => self.verification = Some(escape_verification(v)),
            Err(e) => self.verification_error = Some(escaped(e)),
        }
        self.evaluate_thresholds(summary);
    }

    fn evaluate_thresholds(&mut self, summary: &Summary) {
        let thresholds: Vec<Threshold> = self
            .thresholds
            .iter()
            .map(|t| t.threshold.clone())
            .collect();
        self.thresholds = evaluate(
            &thresholds,
            summary,
            self.verification.as_ref(),
            self.timing.load_s,
        );
    }

    /// True when a verification check failed or had no data, or when
    /// verification was asked for and could not run (an interrupted run
    /// excepted): a gate must not pass on a check that never happened.
    pub fn verification_failed(&self) -> bool {
        self.verification.as_ref().is_some_and(|v| v.failed())
            || (self.verification_error.is_some() && !self.interrupted)
    }

    /// True when a target never answered, or the metric source could not
    /// be reached: exit 69.
    pub fn unavailable(&self) -> bool {
        (self.verification_unavailable && !self.interrupted)
            || !self.unavailable_targets().is_empty()
    }

    /// Reads a results file.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let mut r: RunReport =
            serde_json::from_str(text).map_err(|e| format!("not a redproof results file: {e}"))?;
        if !READABLE.contains(&r.format.as_str()) {
            return Err(format!(
                "unsupported results format `{}`; this redproof reads {}",
                r.format,
                READABLE.map(|f| format!("`{f}`")).join(" and ")
            ));
        }
        // Written again (`redproof verify --out`), it is a file of this
        // format, which holds everything the older one did.
        r.format = FORMAT.into();
        // A results file may come from anywhere (another shard, an older
        // redproof): its server text is escaped again before rendering.
        for o in r.requests.iter_mut().flat_map(|q| &mut q.outcomes) {
            o.example = o.example.take().map(escaped);
        }
        r.verification = r.verification.map(escape_verification);
        r.verification_error = r.verification_error.map(escaped);
        Ok(r)
    }

    /// Per-request figures of a results file, decoded from its histograms.
    pub fn summary(&self) -> Result<Summary, String> {
        let stats = self.request_stats()?;
        Ok(Summary::of_stats(
            self.requests.iter().map(|r| r.name.as_str()).zip(&stats),
            self.timing.load_s,
            &self.spans(),
        ))
    }

    /// The recorded figures of each request, decoded from the histograms.
    pub fn request_stats(&self) -> Result<Vec<RequestStats>, String> {
        let mut stats = Vec::new();
        for r in &self.requests {
            let mut st = RequestStats {
                unknown: r.unknown,
                retries: r.retries,
                messages: r.messages.unwrap_or_default(),
                corrected: r
                    .corrected_histogram
                    .as_deref()
                    .map(decode)
                    .transpose()
                    .map_err(|e| format!("request `{}`: {e}", r.name))?,
                ..Default::default()
            };
            for o in &r.outcomes {
                st.outcomes.push(OutcomeStats {
                    outcome: o.outcome,
                    ok: o.ok,
                    histogram: decode(&o.histogram)
                        .map_err(|e| format!("request `{}`: {e}", r.name))?,
                    example: o.example.clone(),
                });
            }
            stats.push(st);
        }
        Ok(stats)
    }

    /// Each scenario's name and load time.
    pub fn spans(&self) -> Vec<Span> {
        self.scenarios
            .iter()
            .map(|p| (p.name.clone(), p.load_s))
            .collect()
    }

    /// True when any threshold failed.
    pub fn thresholds_failed(&self) -> bool {
        self.thresholds.iter().any(|t| !t.passed)
    }

    /// Targets that never answered: every request sent to them failed to
    /// connect. Returns (target, example error).
    pub fn unavailable_targets(&self) -> Vec<(String, String)> {
        let mut targets: Vec<&str> = self.requests.iter().map(|r| r.target.as_str()).collect();
        targets.sort_unstable();
        targets.dedup();
        targets
            .into_iter()
            .filter_map(|t| {
                let outcomes: Vec<&OutcomeResult> = self
                    .requests
                    .iter()
                    .filter(|r| r.target == t)
                    .flat_map(|r| &r.outcomes)
                    .collect();
                let all_failed = !outcomes.is_empty()
                    && outcomes.iter().all(
                        |o| matches!(o.outcome, Outcome::Transport(k) if k.is_connect_failure()),
                    );
                all_failed.then(|| {
                    (
                        t.to_owned(),
                        outcomes
                            .iter()
                            .find_map(|o| o.example.clone())
                            .unwrap_or_default(),
                    )
                })
            })
            .collect()
    }
}

/// Checks thresholds against the summary and, for `NAME.server.METRIC`,
/// the server figures. A threshold with nothing to measure fails: no data
/// is never a pass.
pub fn evaluate(
    thresholds: &[Threshold],
    summary: &Summary,
    verification: Option<&VerificationReport>,
    load_s: f64,
) -> Vec<ThresholdResult> {
    thresholds
        .iter()
        .map(|t| {
            let observed = if t.server {
                match &t.subject {
                    Subject::Request(name) => verification
                        .and_then(|v| v.figures(name))
                        .and_then(|f| server_metric(f, t.metric, t.limit, load_s)),
                    Subject::All | Subject::Scenario(_) => None,
                }
            } else {
                summary
                    .row(&t.subject)
                    .and_then(|r| r.metric(t.metric, t.limit))
            };
            ThresholdResult {
                threshold: t.clone(),
                observed,
                passed: observed.is_some_and(|v| t.op.holds(v, t.limit.value())),
            }
        })
        .collect()
}

/// A server figure in a threshold's unit.
fn server_metric(
    f: &crate::verify::ServerFigures,
    metric: Metric,
    limit: Limit,
    load_s: f64,
) -> Option<f64> {
    Some(match metric {
        Metric::Percentile(p) => f.quantile(p / 100.0)? * 1e6,
        Metric::Mean => f.mean_s? * 1e6,
        Metric::Count => f.count?,
        Metric::Rps => f.count? / load_s.max(1e-3),
        Metric::Errors => match limit {
            Limit::Ratio(_) => {
                let c = f.count?;
                if c <= 0.0 {
                    return None;
                }
                f.errors? / c
            }
            _ => f.errors?,
        },
        Metric::Min | Metric::Max => return None,
    })
}

/// The first `abort_on_fail` threshold that fails on the figures so far,
/// past its delay, said as the reason the run stops. Called once a second
/// with the live totals.
pub fn abort_reason(s: &Scenario, p: &crate::engine::Progress) -> Option<String> {
    if s.abort_on_fail.is_empty() {
        return None;
    }
    let due: Vec<_> = s
        .abort_on_fail
        .iter()
        .filter(|r| p.elapsed >= r.delay)
        .collect();
    if due.is_empty() {
        return None;
    }
    let load_s = p.elapsed.as_secs_f64();
    let spans: Vec<Span> = s
        .parts
        .iter()
        .filter_map(|part| {
            let name = part.name.clone()?;
            Some((name, (p.elapsed.saturating_sub(part.start)).as_secs_f64()))
        })
        .collect();
    let summary = Summary::of_stats(
        s.requests
            .iter()
            .map(|r| r.name.as_str())
            .zip(&p.totals.requests),
        load_s,
        &spans,
    );
    let thresholds: Vec<Threshold> = due
        .iter()
        .map(|r| s.thresholds[r.threshold].clone())
        .collect();
    evaluate(&thresholds, &summary, None, load_s)
        .into_iter()
        // No data yet is not a failure worth stopping for.
        .find(|t| t.observed.is_some() && !t.passed)
        .map(|t| {
            format!(
                "threshold `{}` failed after {:.0}s (observed {}) and has `abort_on_fail`",
                t.threshold.text,
                load_s,
                format_observed(&t.threshold, t.observed)
            )
        })
}

/// Formats an observed threshold value in its unit.
pub fn format_observed(t: &Threshold, v: Option<f64>) -> String {
    let Some(v) = v else {
        return "no data".into();
    };
    match t.limit {
        Limit::Micros(_) => crate::scenario::units::format_micros(v.round() as u64),
        Limit::Ratio(_) => format!("{:.2}%", v * 100.0),
        Limit::Number(_) if t.metric == Metric::Rps => format!("{v:.1}/s"),
        Limit::Number(_) => format!("{v}"),
    }
}

/// A duration as seconds with millisecond precision, for headers.
pub fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
