//! Test fixtures for verification: [`MemorySource`], a metric source that
//! serves series built in the test, a fixed timeline (T0, T1, S and a
//! scrape every second), builders for counters, histograms and the
//! client's side recorded with the real recorder, and [`check`], which
//! runs the checks of one entry and returns their verdicts for assertions.

use std::time::Duration;

use super::checks::{self, Context};
use super::convention::Names;
use super::{ClientRequest, ServerFigures, Status, Verdict, client_request};
use crate::measure::Recorder;
use crate::metrics::{Fetch, MetricSource, Sample, Series, SourceError, TargetStatus};
use crate::outcome::{GrpcCode, Outcome};
use crate::promql::{Labels, MatchOp, Matcher, Selector};
use crate::scenario::verification::{Convention, Side, Tolerance, VerifyEntry};

/// Load start.
pub const T0: i64 = 1_700_000_000_000;
/// How long the load ran (and the client's one-second windows cover).
pub const LOAD_MS: i64 = 10_000;
/// End of the drain.
pub const T1: i64 = T0 + LOAD_MS;
/// The settle point: the first scrape after T1.
pub const S: i64 = T1 + 1_000;
/// The scrape interval.
pub const INTERVAL_MS: i64 = 1_000;
/// The first scrape the lookback sees.
pub const FIRST_SCRAPE: i64 = T0 - 5_000;

pub const JOB: &str = "polls";
pub const INSTANCE: &str = "polls:8000";

/// Scrape times from [`FIRST_SCRAPE`] to [`S`].
pub fn scrapes() -> impl Iterator<Item = i64> {
    (0..)
        .map(|k| FIRST_SCRAPE + k * INTERVAL_MS)
        .take_while(|t| *t <= S)
}

/// How far the load is at `t`: 0 before T0, 1 from T1 on.
pub fn progress(t: i64) -> f64 {
    ((t - T0) as f64 / LOAD_MS as f64).clamp(0.0, 1.0)
}

/// A sample at every scrape, its value a function of the scrape time.
pub fn sampled(value: impl Fn(i64) -> f64) -> Vec<Sample> {
    scrapes().map(|t| (t, value(t))).collect()
}

/// A counter at `before` until T0 that gains `added` evenly over the load.
pub fn counter(before: f64, added: f64) -> Vec<Sample> {
    sampled(|t| before + (added * progress(t)).floor())
}

/// A gauge that holds `value` at every scrape.
pub fn constant(value: f64) -> Vec<Sample> {
    sampled(|_| value)
}

/// Series served from memory, as Prometheus would answer for them.
#[derive(Debug, Clone)]
pub struct MemorySource {
    pub series: Vec<Series>,
    pub targets: Vec<TargetStatus>,
}

impl Default for MemorySource {
    /// One target, up, last scraped at S.
    fn default() -> Self {
        Self {
            series: Vec::new(),
            targets: vec![TargetStatus {
                job: JOB.into(),
                instance: INSTANCE.into(),
                scrape_url: format!("http://{INSTANCE}/metrics"),
                health: "up".into(),
                last_scrape_ms: Some(S),
                last_error: String::new(),
                interval: Some(Duration::from_millis(INTERVAL_MS as u64)),
                listed: false,
            }],
        }
    }
}

impl MemorySource {
    /// Adds a series of the target's job and instance; `labels` may
    /// override either.
    pub fn add(&mut self, name: &str, labels: &[(&str, &str)], samples: Vec<Sample>) -> &mut Self {
        let mut all: Labels = [("job", JOB), ("instance", INSTANCE)]
            .iter()
            .chain(labels)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        all.retain(|_, v| !v.is_empty());
        self.series.push(Series {
            name: name.into(),
            labels: all,
            samples,
        });
        self
    }

    /// Adds a duration histogram `base` whose `_bucket`, `_count` and
    /// `_sum` series gain `observations` (seconds) evenly over the load.
    pub fn histogram(
        &mut self,
        base: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
        observations: &[f64],
    ) -> &mut Self {
        let les = bounds.iter().copied().chain([f64::INFINITY]);
        for le in les {
            let n = observations.iter().filter(|o| **o <= le).count() as f64;
            let le_text = if le.is_infinite() {
                "+Inf".to_owned()
            } else {
                le.to_string()
            };
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le_text));
            self.add(&format!("{base}_bucket"), &with_le, counter(0.0, n));
        }
        let count = observations.len() as f64;
        let sum: f64 = observations.iter().sum();
        self.add(&format!("{base}_count"), labels, counter(0.0, count));
        self.add(
            &format!("{base}_sum"),
            labels,
            sampled(|t| sum * progress(t)),
        )
    }
}

impl MetricSource for MemorySource {
    fn describe(&self) -> String {
        "in-memory series".into()
    }

    fn supports_promql(&self) -> bool {
        false
    }

    async fn check(&self) -> Result<String, SourceError> {
        Ok("memory".into())
    }

    async fn samples(
        &self,
        selector: &Selector,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Fetch, SourceError> {
        let series = self
            .series
            .iter()
            .filter(|s| selector.matches(&s.name, &s.labels))
            .filter_map(|s| {
                let samples: Vec<Sample> = s
                    .samples
                    .iter()
                    .copied()
                    .filter(|(t, _)| *t > from_ms && *t <= to_ms)
                    .collect();
                (!samples.is_empty()).then(|| Series {
                    samples,
                    ..s.clone()
                })
            })
            .collect();
        Ok(Fetch {
            query: selector.to_string(),
            eval_ms: to_ms,
            series,
            warnings: Vec::new(),
        })
    }

    async fn targets(&self) -> Result<Vec<TargetStatus>, SourceError> {
        Ok(self.targets.clone())
    }

    async fn instant(&self, _expr: &str, _at_ms: i64) -> Result<Fetch, SourceError> {
        Err(SourceError::Unsupported("no PromQL in memory".into()))
    }
}

/// The client's side of one request, recorded as the engine records it.
pub struct Client {
    recorder: Recorder,
}

impl Client {
    pub fn new() -> Self {
        Self {
            recorder: Recorder::new(1),
        }
    }

    /// `n` HTTP responses with `status`, taking `ms` each.
    pub fn http(self, status: u16, n: u64, ms: f64) -> Self {
        self.http_spread(status, n, ms, ms)
    }

    /// `n` HTTP responses with `status`, their latencies spread evenly
    /// from `lo_ms` to `hi_ms`.
    pub fn http_spread(mut self, status: u16, n: u64, lo_ms: f64, hi_ms: f64) -> Self {
        for i in 0..n {
            let ms = spread(i, n, lo_ms, hi_ms);
            self.recorder.record(
                0,
                Outcome::Status(status),
                status < 400,
                Duration::from_secs_f64(ms / 1e3),
            );
        }
        self
    }

    /// `n` gRPC calls ending with `code` (any spelling), `ms` each.
    pub fn grpc(mut self, code: &str, n: u64, ms: f64) -> Self {
        let code = GrpcCode::parse(code).expect("a gRPC code");
        for _ in 0..n {
            self.recorder.record(
                0,
                Outcome::Grpc(code),
                code == GrpcCode::OK,
                Duration::from_secs_f64(ms / 1e3),
            );
        }
        self
    }

    /// `n` requests cut off by the drain.
    pub fn unsure(mut self, n: u64) -> Self {
        for _ in 0..n {
            self.recorder.record_unknown(0);
        }
        self
    }

    /// The request as verification sees it, its responses completed
    /// evenly over the load's one-second windows.
    pub fn build(&self) -> ClientRequest {
        self.named("success")
    }

    /// [`Client::build`] under another request name.
    pub fn named(&self, name: &str) -> ClientRequest {
        let mut r = client_request(&self.recorder.requests[0]);
        r.name = name.into();
        let windows = (LOAD_MS / 1000) as u64;
        r.windows = (0..windows)
            .map(|w| {
                let n = r.responses / windows + u64::from(w < r.responses % windows);
                (T0 + (w as i64 + 1) * 1000, n)
            })
            .collect();
        r
    }
}

/// The `i`th of `n` values spread evenly from `lo` to `hi`.
pub fn spread(i: u64, n: u64, lo: f64, hi: f64) -> f64 {
    if n <= 1 {
        lo
    } else {
        lo + (hi - lo) * i as f64 / (n - 1) as f64
    }
}

/// `n` observations spread evenly from `lo_ms` to `hi_ms`, in seconds.
pub fn observations(n: u64, lo_ms: f64, hi_ms: f64) -> Vec<f64> {
    (0..n).map(|i| spread(i, n, lo_ms, hi_ms) / 1e3).collect()
}

/// A server-side entry of `convention` with equality matchers and the
/// scenario defaults (exact counts, 1% duration tolerance, 25 ms
/// overhead).
pub fn entry(convention: Convention, matchers: &[(&str, &str)]) -> VerifyEntry {
    VerifyEntry {
        name: "success".into(),
        request: Some(0),
        group: Vec::new(),
        derived: Vec::new(),
        callee: None,
        convention,
        side: Side::Server,
        matchers: matchers
            .iter()
            .map(|(l, v)| Matcher::new(l, MatchOp::Eq, v).expect("a valid matcher"))
            .collect(),
        requests_metric: None,
        status_label: None,
        duration_metric: None,
        unit: None,
        tolerance: Tolerance {
            duration: 0.01,
            ..Default::default()
        },
        overhead: Duration::from_millis(25),
    }
}

/// The verdicts and server figures of one entry.
#[derive(Debug)]
pub struct Checked {
    pub verdicts: Vec<Verdict>,
    pub figures: ServerFigures,
}

/// Runs the checks of `entry` against `source` on the fixed timeline.
pub fn check(source: &MemorySource, entry: &VerifyEntry, client: &ClientRequest) -> Checked {
    let names = Names::of(entry);
    let cx = Context {
        source,
        entry,
        names: &names,
        client,
        t0: T0,
        t1: T1,
        s: S,
        interval_ms: INTERVAL_MS,
        targets: &source.targets,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    let mut c = vec![
        rt.block_on(checks::run(&cx))
            .expect("the in-memory source always answers"),
    ];
    checks::reconcile(&mut c, T0, INTERVAL_MS);
    let c = c.remove(0);
    Checked {
        verdicts: c.verdicts,
        figures: c.figures,
    }
}

/// Runs the checks of several entries against `source` and reasons
/// across them, as a run does; one [`Checked`] per entry, in order.
pub fn check_all(source: &MemorySource, entries: &[(VerifyEntry, ClientRequest)]) -> Vec<Checked> {
    check_run(source, entries, &[])
}

/// Every verdict of `entries`, the `hop` ones last (see [`check_run`]).
pub fn hop_verdicts(
    source: &MemorySource,
    entries: &[(VerifyEntry, ClientRequest)],
    others: &[ClientRequest],
) -> Vec<Verdict> {
    let clients: Vec<ClientRequest> = entries
        .iter()
        .map(|(_, c)| c.clone())
        .chain(others.iter().cloned())
        .collect();
    let names: Vec<Names> = entries.iter().map(|(e, _)| Names::of(e)).collect();
    let jobs: Vec<checks::Job> = entries
        .iter()
        .zip(&names)
        .map(|((entry, client), names)| checks::Job {
            entry,
            names,
            client,
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    let mut all = rt
        .block_on(checks::run_all(
            source,
            &jobs,
            &checks::Run {
                t0: T0,
                t1: T1,
                s: S,
                interval_ms: INTERVAL_MS,
                targets: &source.targets,
                clients: &clients,
            },
        ))
        .expect("the in-memory source always answers");
    let list: Vec<VerifyEntry> = entries.iter().map(|(e, _)| e.clone()).collect();
    let mut hops = super::hops::check_hops(&list, &mut all, S);
    // The entries' own verdicts after the hops, then the hops.
    let mut out: Vec<Verdict> = all.into_iter().flat_map(|c| c.verdicts).collect();
    out.append(&mut hops);
    out
}

/// [`check_all`] in a run that also sent `others`, requests without an
/// entry. The run's requests are the entries' clients in order, then
/// `others`: `derived` indexes count in that order.
pub fn check_run(
    source: &MemorySource,
    entries: &[(VerifyEntry, ClientRequest)],
    others: &[ClientRequest],
) -> Vec<Checked> {
    let clients: Vec<ClientRequest> = entries
        .iter()
        .map(|(_, c)| c.clone())
        .chain(others.iter().cloned())
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    let names: Vec<Names> = entries.iter().map(|(e, _)| Names::of(e)).collect();
    let jobs: Vec<checks::Job> = entries
        .iter()
        .zip(&names)
        .map(|((entry, client), names)| checks::Job {
            entry,
            names,
            client,
        })
        .collect();
    let all = rt
        .block_on(checks::run_all(
            source,
            &jobs,
            &checks::Run {
                t0: T0,
                t1: T1,
                s: S,
                interval_ms: INTERVAL_MS,
                targets: &source.targets,
                clients: &clients,
            },
        ))
        .expect("the in-memory source always answers");
    all.into_iter()
        .map(|c| Checked {
            verdicts: c.verdicts,
            figures: c.figures,
        })
        .collect()
}

impl Checked {
    /// The verdict of `check`; panics with every verdict when absent.
    pub fn get(&self, check: &str) -> &Verdict {
        self.verdicts
            .iter()
            .find(|v| v.check == check)
            .unwrap_or_else(|| panic!("no `{check}` verdict in {:#?}", self.verdicts))
    }

    /// Checks in the order they were reported, with their status.
    pub fn order(&self) -> Vec<(&str, Status)> {
        self.verdicts
            .iter()
            .map(|v| (v.check.as_str(), v.status))
            .collect()
    }

    /// Asserts the status of `check` and that its summary holds every
    /// one of `words`.
    pub fn summary(&self, check: &str, status: Status, words: &[&str]) -> &Verdict {
        let v = self.status(check, status);
        for w in words {
            assert!(
                v.summary.contains(w),
                "`{check}` summary lacks {w:?}: {:#?}",
                v
            );
        }
        v
    }

    /// Asserts the status of `check` and that its diagnosis holds every
    /// one of `words`.
    pub fn diagnosis(&self, check: &str, status: Status, words: &[&str]) -> &Verdict {
        let v = self.status(check, status);
        let d = v
            .diagnosis
            .as_deref()
            .unwrap_or_else(|| panic!("`{check}` has no diagnosis: {v:#?}"));
        for w in words {
            assert!(d.contains(w), "`{check}` diagnosis lacks {w:?}: {v:#?}");
        }
        v
    }

    /// Asserts that each of `checks` was skipped for `why`.
    pub fn skipped(&self, checks: &[&str], why: &str) {
        for c in checks {
            let v = self.status(c, Status::Skipped);
            assert_eq!(v.summary, why, "`{c}`: {v:#?}");
        }
    }

    fn status(&self, check: &str, status: Status) -> &Verdict {
        let v = self.get(check);
        assert_eq!(v.status, status, "`{check}`: {:#?}", self.verdicts);
        v
    }
}
