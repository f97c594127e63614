//! The run's figures as reports show them: a row per request (and per
//! scenario, and for all), with its outcomes and percentiles.

use super::*;

/// How many requests of a row ended with one outcome.
#[derive(Debug, Clone, Serialize)]
pub struct OutcomeCount {
    pub outcome: Outcome,
    /// Whether the outcome met the request's expectation.
    pub ok: bool,
    pub count: u64,
}

/// The first message of an error outcome.
#[derive(Debug, Clone, Serialize)]
pub struct OutcomeExample {
    pub outcome: Outcome,
    pub message: String,
}

/// The RED figures of one request, or of all.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    pub count: u64,
    pub rps: f64,
    pub errors: u64,
    pub error_ratio: f64,
    pub unknown: u64,
    pub retries: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub min_us: u64,
    pub mean_us: f64,
    /// Outcomes and their counts, most frequent first.
    pub outcomes: Vec<OutcomeCount>,
    /// One example message per transport error kind.
    pub examples: Vec<OutcomeExample>,
    /// gRPC messages sent and received.
    pub messages: MessageCounts,
    /// With `pace`: p50, p95, p99 and max of the latency corrected for
    /// coordinated omission, µs.
    pub corrected: Option<[u64; 4]>,
    #[serde(skip)]
    latency: Histogram<u64>,
}

impl Row {
    pub(super) fn of(name: &str, st: &RequestStats, secs: f64) -> Self {
        let h = st.response_latency();
        let q = |q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        let count = st.count();
        let errors = st.errors();
        let mut outcomes: Vec<OutcomeCount> = st
            .outcomes
            .iter()
            .filter(|o| !o.histogram.is_empty())
            .map(|o| OutcomeCount {
                outcome: o.outcome,
                ok: o.ok,
                count: o.histogram.len(),
            })
            .collect();
        outcomes.sort_by(|a, b| b.count.cmp(&a.count).then(a.outcome.cmp(&b.outcome)));
        Row {
            name: name.into(),
            count,
            rps: count as f64 / secs,
            errors,
            error_ratio: if count == 0 {
                0.0
            } else {
                errors as f64 / count as f64
            },
            unknown: st.unknown,
            retries: st.retries,
            p50_us: q(0.50),
            p90_us: q(0.90),
            p95_us: q(0.95),
            p99_us: q(0.99),
            max_us: if h.is_empty() { 0 } else { h.max() },
            min_us: if h.is_empty() { 0 } else { h.min() },
            mean_us: if h.is_empty() { 0.0 } else { h.mean() },
            examples: st
                .outcomes
                .iter()
                .filter_map(|o| {
                    o.example.clone().map(|message| OutcomeExample {
                        outcome: o.outcome,
                        message,
                    })
                })
                .collect(),
            outcomes,
            messages: st.messages,
            corrected: st.corrected.as_ref().filter(|c| !c.is_empty()).map(|c| {
                [
                    c.value_at_quantile(0.50),
                    c.value_at_quantile(0.95),
                    c.value_at_quantile(0.99),
                    c.max(),
                ]
            }),
            // With pacing, latency thresholds judge the corrected figures.
            latency: st.corrected.clone().filter(|c| !c.is_empty()).unwrap_or(h),
        }
    }

    pub(super) fn has_latency(&self) -> bool {
        !self.latency.is_empty()
    }

    /// The value of a threshold metric, in the threshold's unit.
    pub(super) fn metric(&self, metric: Metric, limit: Limit) -> Option<f64> {
        Some(match metric {
            Metric::Percentile(p) => {
                if !self.has_latency() {
                    return None;
                }
                self.latency.value_at_percentile(p) as f64
            }
            Metric::Mean => self.has_latency().then_some(self.latency.mean())?,
            Metric::Min => self.has_latency().then_some(self.latency.min() as f64)?,
            Metric::Max => self.has_latency().then_some(self.latency.max() as f64)?,
            Metric::Rps => self.rps,
            Metric::Count => self.count as f64,
            Metric::Errors => match limit {
                Limit::Ratio(_) => {
                    if self.count == 0 {
                        return None;
                    }
                    self.error_ratio
                }
                _ => self.errors as f64,
            },
        })
    }
}

/// Rows for every request, every scenario of `scenarios:`, plus `all`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub rows: Vec<Row>,
    /// One per scenario, adding up its requests; empty for a file without
    /// `scenarios:`.
    pub scenarios: Vec<Row>,
    pub all: Row,
}

impl Summary {
    /// The figures of each request, each scenario and the whole run,
    /// from its recorded statistics; `load_s` is how long requests were
    /// started, `spans` how long each scenario did (the rates of its
    /// requests are over that time).
    pub fn of_stats<'a>(
        requests: impl IntoIterator<Item = (&'a str, &'a RequestStats)>,
        load_s: f64,
        spans: &[Span],
    ) -> Self {
        let secs = load_s.max(1e-3);
        let requests: Vec<(&str, &RequestStats)> = requests.into_iter().collect();
        let mut rows = Vec::new();
        let mut all = RequestStats::default();
        for (name, st) in &requests {
            all.merge(st);
            rows.push(Row::of(name, st, parts::secs_of(name, spans, load_s)));
        }
        Summary {
            all: Row::of("all", &all, secs),
            scenarios: parts::scenario_rows(&requests, spans),
            rows,
        }
    }

    pub(super) fn row(&self, subject: &Subject) -> Option<&Row> {
        match subject {
            Subject::All => Some(&self.all),
            Subject::Request(name) => self.rows.iter().find(|r| &r.name == name),
            Subject::Scenario(name) => self.scenarios.iter().find(|r| &r.name == name),
        }
    }
}
