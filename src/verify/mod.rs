//! Verification: proves, per request, that the server's metrics agree
//! with what the client measured, or says exactly how they disagree.
//!
//! Times: T0 is the load start, T1 the end of the drain, S the settle
//! point, the newest scrape of the relevant targets that started after
//! T1 plus a grace. Counts come from raw samples: the last sample ≤ S
//! minus the last sample ≤ T0 (0 for a series born during the run), with
//! drops corrected as resets.
//!
//! - [`convention`]: metric names of the instrumentation libraries.
//! - [`counters`]: arithmetic on raw samples.
//! - [`checks`]: the checks of one `verify:` entry.
//! - [`timeline`]: the server's RED per scrape interval, for charts.
//! - [`assertions`]: the scenario's `alerts:` and `promql:` checks.

mod assertions;
mod checks;
pub mod convention;
pub mod counters;
mod hops;
pub mod preflight;
#[cfg(test)]
mod testing;
mod timeline;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::engine::EngineOutput;
use crate::measure::{RequestStats, new_histogram};
use crate::metrics::{MetricSource, SourceError, TargetStatus, now_ms};
use crate::outcome::{Answer, Outcome};
use crate::promql::Selector;
use crate::scenario::Scenario;
use crate::scenario::verification::{MetricsSpec, Verification};

use assertions::{check_alerts, check_promql};
use convention::Names;
pub use timeline::ServerPoint;

/// How far before T0 samples are read, to find each series' baseline.
const LOOKBACK_MS: i64 = 5 * 60 * 1000;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    /// Nothing to compare: never a pass.
    NoData,
    /// Not evaluated because another check already explains the problem.
    Skipped,
}

impl Status {
    /// `Pass` when `ok`, else `Fail`.
    pub fn pass_if(ok: bool) -> Self {
        if ok { Status::Pass } else { Status::Fail }
    }

    pub fn failed(self) -> bool {
        matches!(self, Status::Fail | Status::NoData)
    }

    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::NoData => "NO DATA",
            Status::Skipped => "skip",
        }
    }
}

/// One named, separately reported verdict.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verdict {
    /// The request it is about; `None` for alerts, PromQL assertions and
    /// the source itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// `source`, `settle`, `preflight`, `resets`, `freshness`, `count`,
    /// `errors`, `duration`, `mean`, `quantiles`, `alert` or `promql`.
    pub check: String,
    pub status: Status,
    /// The figures compared, in one line.
    pub summary: String,
    /// What the disagreement most likely means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<String>,
    /// The selector or PromQL read.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub query: String,
    /// Evaluation time, ms since the Unix epoch.
    pub eval_unix_ms: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Verdict {
    /// `request.check` or `check`.
    pub fn name(&self) -> String {
        match &self.request {
            Some(r) => format!("{r}.{}", self.check),
            None => self.check.clone(),
        }
    }
}

/// The server's RED figures of one request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerFigures {
    pub request: String,
    pub convention: String,
    /// What the server should have counted when its series hold more
    /// than this request's responses: the requests verified with it and
    /// the calls derived from others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_count: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<f64>,
    /// Server errors: 5xx, or gRPC codes that blame the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<f64>,
    /// By status key (`200`, `5xx`, `Unavailable`).
    #[serde(default)]
    pub by_status: BTreeMap<String, f64>,
    /// Seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_s: Option<f64>,
    /// Increases of the finite duration buckets over the run: `(le, count)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<(f64, f64)>,
    /// Increase of the `+Inf` bucket.
    #[serde(default)]
    pub bucket_total: f64,
    /// The server's rate, errors and p95 over the run, one point per
    /// scrape interval, drawn by the HTML report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<ServerPoint>,
}

impl ServerFigures {
    fn all_buckets(&self) -> Vec<(f64, f64)> {
        let mut b = self.buckets.clone();
        if self.bucket_total > 0.0 {
            b.push((f64::INFINITY, self.bucket_total));
        }
        b
    }

    /// A quantile (0..1) in seconds, interpolated in the server's buckets
    /// as `histogram_quantile` does.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        counters::interpolated_quantile(&self.all_buckets(), q)
    }

    /// The server bucket `(lower, upper]` holding a quantile.
    pub fn bracket(&self, q: f64) -> Option<(f64, f64)> {
        counters::bucket_of_quantile(&self.all_buckets(), q)
    }
}

/// Everything verification produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerificationReport {
    pub source: String,
    /// S, ms since the Unix epoch.
    pub settle_unix_ms: i64,
    /// From T1 to the last verdict.
    pub verdict_after_s: f64,
    pub verdicts: Vec<Verdict>,
    pub server: Vec<ServerFigures>,
}

impl VerificationReport {
    pub fn failed(&self) -> bool {
        self.verdicts.iter().any(|v| v.status.failed())
    }

    /// The server figures of a request.
    pub fn figures(&self, request: &str) -> Option<&ServerFigures> {
        self.server.iter().find(|f| f.request == request)
    }
}

/// The client's side of one request, as verification needs it.
#[derive(Debug, Clone)]
pub struct ClientRequest {
    pub name: String,
    /// Responses by status: the HTTP status (`"200"`) or, for gRPC, the
    /// code as Go spells it (`"DeadlineExceeded"`), the spelling the
    /// metric conventions are normalised to.
    pub by_status: BTreeMap<String, u64>,
    pub responses: u64,
    /// Requests the server may or may not have handled: cut off by the
    /// drain, or failed after the connection was made (timeouts, resets).
    pub unsure: u64,
    /// Latency of the responses, µs.
    pub latency: Histogram<u64>,
    /// Completed requests per one-second window: (window end ms, count).
    pub windows: Vec<(i64, u64)>,
    /// Calls other requests caused in the same series (`derived:`),
    /// already added to `responses`, `unsure` and `windows`, never to
    /// `by_status` or `latency`: the client saw the requests that caused
    /// them, not the calls.
    pub derived: Vec<Derived>,
}

/// The calls one request caused in an entry's series.
#[derive(Debug, Clone)]
pub struct Derived {
    pub from: String,
    /// Calls per request.
    pub per: u64,
    pub calls: u64,
    pub unsure: u64,
    /// Every response of the causing request was a success, so every call
    /// it caused is taken to have succeeded.
    pub clean: bool,
}

impl ClientRequest {
    /// A request the client never sent.
    pub fn empty(name: &str) -> Self {
        ClientRequest {
            name: name.to_owned(),
            by_status: BTreeMap::new(),
            responses: 0,
            unsure: 0,
            latency: new_histogram(),
            windows: Vec::new(),
            derived: Vec::new(),
        }
    }

    /// The calls derived from other requests.
    pub fn derived_calls(&self) -> u64 {
        self.derived.iter().map(|d| d.calls).sum()
    }
}

/// The client's side of the run.
#[derive(Debug, Clone)]
pub struct ClientRun {
    pub t0_ms: i64,
    pub t1_ms: i64,
    pub load_s: f64,
    pub requests: Vec<ClientRequest>,
}

impl ClientRun {
    /// The client side of a results file: its requests' recorded figures
    /// (`stats`, in the file's order), windows and timing.
    pub fn from_results(
        names: &[String],
        stats: &[RequestStats],
        windows: &[crate::measure::Window],
        t0_ms: i64,
        t1_ms: i64,
        load_s: f64,
    ) -> Self {
        let requests = names
            .iter()
            .zip(stats)
            .enumerate()
            .map(|(i, (name, st))| ClientRequest {
                name: name.clone(),
                windows: windows
                    .iter()
                    .map(|w| {
                        (
                            t0_ms + (w.t * 1000.0) as i64,
                            w.requests.get(i).map_or(0, |f| f.count),
                        )
                    })
                    .collect(),
                ..client_request(st)
            })
            .collect();
        Self {
            t0_ms,
            t1_ms,
            load_s,
            requests,
        }
    }

    pub fn new(s: &Scenario, out: &EngineOutput) -> Self {
        let t0_ms = out
            .t0
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let names: Vec<String> = s.requests.iter().map(|r| r.name.to_string()).collect();
        Self::from_results(
            &names,
            &out.totals.requests,
            &out.windows,
            t0_ms,
            t0_ms + out.elapsed.as_millis() as i64,
            out.load_time.as_secs_f64(),
        )
    }
}

fn client_request(st: &RequestStats) -> ClientRequest {
    let mut by_status = BTreeMap::new();
    // A request sent again after a stale connection may have been seen
    // by the server twice.
    let mut unsure = st.unknown + st.retries;
    let mut latency = new_histogram();
    for o in &st.outcomes {
        match o.outcome {
            // A response whose checks failed was still answered (and
            // counted by the server) with its status.
            Outcome::Status(_)
            | Outcome::Grpc(_)
            | Outcome::CheckFailed(Answer::Status(_) | Answer::Grpc(_)) => {
                let key = match o.outcome {
                    Outcome::Grpc(c) | Outcome::CheckFailed(Answer::Grpc(c)) => {
                        c.go_name().to_owned()
                    }
                    Outcome::Status(s) | Outcome::CheckFailed(Answer::Status(s)) => s.to_string(),
                    Outcome::Transport(_) => unreachable!("matched above"),
                };
                *by_status.entry(key).or_default() += o.histogram.len();
                latency
                    .add(&o.histogram)
                    .expect("auto-resizing histograms always merge");
            }
            Outcome::Transport(k) if !k.is_connect_failure() => unsure += o.histogram.len(),
            Outcome::Transport(_) => {}
        }
    }
    ClientRequest {
        name: String::new(),
        responses: by_status.values().sum(),
        by_status,
        unsure,
        latency,
        windows: Vec::new(),
        derived: Vec::new(),
    }
}

/// Waits for the settle point and runs every check.
pub async fn verify<M: MetricSource>(
    source: &M,
    v: &Verification,
    client: &ClientRun,
) -> Result<VerificationReport, SourceError> {
    let names: Vec<Names> = v.entries.iter().map(Names::of).collect();
    let settle = settle(source, &names, client, &v.metrics).await?;
    check(source, v, client, &names, settle).await
}

/// Verification after the fact (`redproof verify`): the settle point is
/// read from the samples, the first scrape of every series holding the
/// checked series after T1 plus the grace, instead of waited for; unless
/// the run ended so recently that the scrapes may still be to come.
pub async fn verify_after<M: MetricSource>(
    source: &M,
    v: &Verification,
    client: &ClientRun,
) -> Result<VerificationReport, SourceError> {
    let names: Vec<Names> = v.entries.iter().map(Names::of).collect();
    // A run that has just ended (a merge of shards that finished a moment
    // ago) may not have been scraped since: wait for it as a run does.
    let m = &v.metrics;
    let scraped_by = client.t1_ms
        + (m.grace + 2 * m.scrape_interval + std::time::Duration::from_secs(1)).as_millis() as i64;
    let settle = if now_ms() < scraped_by {
        settle(source, &names, client, m).await?
    } else {
        settled_in_the_past(source, &names, client, m).await?
    };
    check(source, v, client, &names, settle).await
}

async fn check<M: MetricSource>(
    source: &M,
    v: &Verification,
    client: &ClientRun,
    names: &[Names],
    settle: Settled,
) -> Result<VerificationReport, SourceError> {
    let s = settle.s_ms;
    let mut verdicts = Vec::new();
    if let Some(failed) = settle.verdict {
        verdicts.push(failed);
    }
    let mut server = Vec::new();
    // An entry only derived calls reach has no client side of its own.
    let none: Vec<ClientRequest> = v
        .entries
        .iter()
        .map(|e| ClientRequest::empty(&e.name))
        .collect();
    let jobs: Vec<checks::Job> = v
        .entries
        .iter()
        .zip(names)
        .zip(&none)
        .map(|((entry, n), none)| checks::Job {
            entry,
            names: n,
            client: entry.request.map_or(none, |i| &client.requests[i]),
        })
        .collect();
    let checked = checks::run_all(
        source,
        &jobs,
        &checks::Run {
            t0: client.t0_ms,
            t1: client.t1_ms,
            s,
            interval_ms: settle.interval.as_millis() as i64,
            targets: &settle.targets,
            clients: &client.requests,
        },
    )
    .await?;
    let mut checked = checked;
    let hop_verdicts = hops::check_hops(&v.entries, &mut checked, s);
    for c in checked {
        verdicts.extend(c.verdicts);
        server.push(c.figures);
    }
    verdicts.extend(hop_verdicts);
    verdicts.extend(check_alerts(source, v, client, s).await?);
    verdicts.extend(check_promql(source, v, s).await?);
    Ok(VerificationReport {
        source: source.describe(),
        settle_unix_ms: s,
        verdict_after_s: (now_ms() - client.t1_ms) as f64 / 1000.0,
        verdicts,
        server,
    })
}

/// The settle point of a run in the past: for every series of the checked
/// families, its first sample after T1 plus the grace; S is the latest of
/// them. A series with no such sample leaves S at T1 plus the grace and
/// two scrape intervals, and the checks (freshness) say what is missing.
async fn settled_in_the_past<M: MetricSource>(
    source: &M,
    names: &[Names],
    client: &ClientRun,
    spec: &MetricsSpec,
) -> Result<Settled, SourceError> {
    let after = client.t1_ms + spec.grace.as_millis() as i64;
    let targets = source.targets().await?;
    let interval = targets
        .iter()
        .filter_map(|t| t.interval)
        .max()
        .unwrap_or(spec.scrape_interval);
    let horizon = after + 2 * interval.as_millis() as i64 + 1000;
    let mut s_ms = after;
    for sel in names.iter().flat_map(Names::request_selectors) {
        let f = source.samples(sel, client.t0_ms, horizon).await?;
        for series in &f.series {
            match series.samples.iter().find(|(t, _)| *t >= after) {
                Some((t, _)) => s_ms = s_ms.max(*t),
                None => s_ms = s_ms.max(horizon),
            }
        }
    }
    Ok(Settled {
        s_ms: s_ms.min(now_ms()),
        targets,
        interval,
        verdict: None,
    })
}

struct Settled {
    s_ms: i64,
    targets: Vec<TargetStatus>,
    interval: Duration,
    verdict: Option<Verdict>,
}

/// Waits until every target holding the checked series has a scrape
/// that started after T1 plus the grace, then confirms it with sample
/// timestamps.
async fn settle<M: MetricSource>(
    source: &M,
    names: &[Names],
    client: &ClientRun,
    spec: &MetricsSpec,
) -> Result<Settled, SourceError> {
    let after = client.t1_ms + spec.grace.as_millis() as i64;
    let from = client.t0_ms - LOOKBACK_MS;
    // Which targets hold the series: read them as they are now.
    let mut holders: BTreeSet<(String, String)> = BTreeSet::new();
    for sel in names.iter().flat_map(Names::request_selectors) {
        let f = source.samples(sel, from, now_ms()).await?;
        for s in &f.series {
            holders.insert((
                s.labels.get("job").cloned().unwrap_or_default(),
                s.labels.get("instance").cloned().unwrap_or_default(),
            ));
        }
    }
    let relevant = |targets: &[TargetStatus]| -> Vec<TargetStatus> {
        let r: Vec<TargetStatus> = targets
            .iter()
            .filter(|t| {
                t.listed
                    || holders.iter().any(|(job, instance)| {
                        &t.instance == instance && (t.job.is_empty() || &t.job == job)
                    })
            })
            .cloned()
            .collect();
        // No series anywhere: wait for every target, so that the checks
        // see all there is and a target that is down is named.
        if r.is_empty() { targets.to_vec() } else { r }
    };
    let started = Instant::now();
    let mut targets = relevant(&source.targets().await?);
    let interval = targets
        .iter()
        .filter_map(|t| t.interval)
        .max()
        .unwrap_or(spec.scrape_interval);
    let timeout = spec
        .settle_timeout
        .unwrap_or(interval * 2 + Duration::from_secs(5));
    loop {
        let lagging: Vec<&TargetStatus> = targets
            .iter()
            .filter(|t| t.health != "up" || t.last_scrape_ms.is_none_or(|l| l < after))
            .collect();
        if lagging.is_empty() {
            break;
        }
        if started.elapsed() >= timeout {
            let parts: Vec<String> = lagging
                .iter()
                .map(|t| describe_lag(t, client.t1_ms))
                .collect();
            let s_ms = now_ms();
            return Ok(Settled {
                s_ms,
                verdict: Some(Verdict {
                    request: None,
                    check: "settle".into(),
                    status: Status::Fail,
                    summary: format!(
                        "{} of {} target{} had no scrape after the load ended within {:.1}s",
                        lagging.len(),
                        targets.len(),
                        if targets.len() == 1 { "" } else { "s" },
                        timeout.as_secs_f64()
                    ),
                    diagnosis: Some(parts.join("; ")),
                    query: String::new(),
                    eval_unix_ms: s_ms,
                    warnings: Vec::new(),
                }),
                targets,
                interval,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        targets = relevant(&source.targets().await?);
    }
    let s_ms = targets
        .iter()
        .filter_map(|t| t.last_scrape_ms)
        .max()
        .unwrap_or_else(now_ms);
    // Confirm with sample timestamps: the samples of the settling scrape
    // must be readable before the checks run.
    let confirm_until = Instant::now() + Duration::from_secs(2);
    for sel in names.iter().flat_map(Names::request_selectors) {
        loop {
            let f = source.samples(sel, from, s_ms).await?;
            let stale = f.series.iter().any(|s| {
                targets.iter().any(|t| t.holds(s))
                    && s.samples.last().is_none_or(|(t, _)| *t < after)
            });
            if !stale || Instant::now() >= confirm_until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(Settled {
        s_ms,
        targets,
        interval,
        verdict: None,
    })
}

fn describe_lag(t: &TargetStatus, t1: i64) -> String {
    let what = t.describe();
    match t.last_scrape_ms {
        None if t.last_error.is_empty() => format!("{what} was never scraped"),
        None => format!(
            "{what} was never scraped successfully ({}): {}",
            t.health, t.last_error
        ),
        Some(l) if t.health != "up" => format!(
            "{what} is {}: last scrape {} {}{}",
            t.health,
            relative(l, t1),
            "the load ended",
            if t.last_error.is_empty() {
                String::new()
            } else {
                format!(", error: {}", t.last_error)
            }
        ),
        Some(l) => format!("{what}: last scrape {} the load ended", relative(l, t1)),
    }
}

fn relative(t: i64, reference: i64) -> String {
    let d = (t - reference) as f64 / 1000.0;
    if d >= 0.0 {
        format!("{d:.1}s after")
    } else {
        format!("{:.1}s before", -d)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::measure::Recorder;
    use crate::outcome::{GrpcCode, TransportError};

    #[test]
    fn codes_the_client_made_up_are_not_compared_with_the_servers() {
        let mut r = Recorder::new(1);
        let ms = Duration::from_millis(1);
        r.record(0, Outcome::Grpc(GrpcCode::OK), true, ms);
        // A proxy's error page and a reply over `max_message`: the server
        // may have counted either call, under a code the client never saw.
        for kind in [TransportError::Protocol, TransportError::TooLarge] {
            r.record_error(0, kind, ms, || "made up".into());
        }
        let c = client_request(&r.requests[0]);
        assert_eq!(c.by_status.keys().collect::<Vec<_>>(), ["OK"]);
        assert_eq!((c.responses, c.unsure), (1, 2));
    }
}
