//! Metric sources: where the server's side of the story is read from.
//!
//! One trait, [`MetricSource`], with two implementations: [`Prometheus`]
//! (its HTTP API) and [`Scraper`] (an embedded scraper of `/metrics`
//! pages, used when no Prometheus is given). Both hand out *raw samples*
//! of series over a time range; every check is computed from those, never
//! from `rate()` or `increase()`, so extrapolation cannot hide a lost or
//! invented request.

mod prometheus;
mod scraper;
pub mod text;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use prometheus::Prometheus;
pub use scraper::{DownPage, Scraper};

use crate::promql::{Labels, Selector};

/// One sample: milliseconds since the Unix epoch, value.
pub type Sample = (i64, f64);

/// A series with its raw samples, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub labels: Labels,
    pub samples: Vec<Sample>,
}

impl Series {
    /// `name{a="b",…}` for messages.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        format!("{}{{{}}}", self.name, parts.join(","))
    }
}

/// The answer to one read, with what is needed to reproduce it.
#[derive(Debug, Clone, Default)]
pub struct Fetch {
    /// The PromQL (or selector) as sent.
    pub query: String,
    /// Evaluation time, ms since the Unix epoch.
    pub eval_ms: i64,
    pub series: Vec<Series>,
    /// Warnings the source returned with the data.
    pub warnings: Vec<String>,
}

/// A scrape target as the source sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetStatus {
    pub job: String,
    pub instance: String,
    pub scrape_url: String,
    /// `up`, `down` or `unknown` (not scraped yet).
    pub health: String,
    /// Start of the last scrape, ms since the Unix epoch.
    pub last_scrape_ms: Option<i64>,
    pub last_error: String,
    #[serde(skip)]
    pub interval: Option<Duration>,
    /// Named in the scenario (the embedded scraper's pages): always waited
    /// for, even when it holds none of the checked series.
    #[serde(skip)]
    pub listed: bool,
}

impl TargetStatus {
    pub fn describe(&self) -> String {
        if self.job.is_empty() {
            self.scrape_url.clone()
        } else {
            format!(
                "job=\"{}\" instance=\"{}\" ({})",
                self.job, self.instance, self.scrape_url
            )
        }
    }

    /// True when `series` was scraped from this target.
    pub fn holds(&self, series: &Series) -> bool {
        let same = |k: &str, v: &str| series.labels.get(k).is_some_and(|x| x == v);
        same("instance", &self.instance) && (self.job.is_empty() || same("job", &self.job))
    }
}

/// Why a read failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    /// The source cannot be reached at all.
    #[error("{0}")]
    Unavailable(String),
    /// The source answered with an error (bad query, server error).
    #[error("{0}")]
    Query(String),
    /// The source cannot answer this kind of question.
    #[error("{0}")]
    Unsupported(String),
}

/// Where server-side metrics are read from.
#[allow(async_fn_in_trait)]
pub trait MetricSource {
    /// A short description for reports: kind, address, version.
    fn describe(&self) -> String;

    /// True when [`MetricSource::instant`] can evaluate PromQL.
    fn supports_promql(&self) -> bool;

    /// Checks the source answers; returns its version or kind.
    async fn check(&self) -> Result<String, SourceError>;

    /// Raw samples of every series matching `selector` in `(from_ms, to_ms]`.
    async fn samples(
        &self,
        selector: &Selector,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Fetch, SourceError>;

    /// The scrape targets and their last scrape.
    async fn targets(&self) -> Result<Vec<TargetStatus>, SourceError>;

    /// Evaluates a PromQL expression at `at_ms`; only Prometheus can.
    async fn instant(&self, expr: &str, at_ms: i64) -> Result<Fetch, SourceError>;
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
