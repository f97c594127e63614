//! The verification part of a scenario as a results file stores it.

use serde::{Deserialize, Serialize};

use super::*;

/// The verification part of a scenario as a results file stores it, so
/// that `redproof verify RESULTS.json` can check a run after the fact:
/// everything [`Verification`] holds, with URLs shown without their
/// credentials (give `--prometheus` again when the URL had some), request
/// indexes into the results file's requests, and durations in ms.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerificationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scrape: Vec<String>,
    pub scrape_interval_ms: u64,
    pub grace_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_timeout_ms: Option<u64>,
    pub max_response: usize,
    pub entries: Vec<EntrySpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<AlertExpectation>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub promql: Vec<PromqlAssertion>,
}

/// One [`VerifyEntry`] in a results file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntrySpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<usize>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group: Vec<usize>,
    /// `(request, calls per request)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub derived: Vec<(usize, u64)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callee: Option<String>,
    pub convention: Convention,
    pub side: Side,
    /// Label → value as a scenario writes it (`=~re`, `!=v`, or a value).
    #[serde(default)]
    pub matchers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_metric: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_metric: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<f64>,
    /// As a scenario writes them: `5` or `1%`.
    pub tolerance_count: String,
    pub tolerance_errors: String,
    pub tolerance_duration: f64,
    pub overhead_ms: u64,
}

fn slack_text(s: Slack) -> String {
    match s {
        Slack::Count(n) => n.to_string(),
        Slack::Ratio(r) => format!("{}%", r * 100.0),
    }
}

impl Verification {
    /// The form a results file stores.
    pub fn to_spec(&self) -> VerificationSpec {
        let m = &self.metrics;
        VerificationSpec {
            prometheus: m.prometheus.as_ref().map(|u| u.redacted().to_owned()),
            token_env: m.token_env.clone(),
            scrape: m.scrape.iter().map(|u| redact_url(u)).collect(),
            scrape_interval_ms: m.scrape_interval.as_millis() as u64,
            grace_ms: m.grace.as_millis() as u64,
            settle_timeout_ms: m.settle_timeout.map(|d| d.as_millis() as u64),
            max_response: m.max_response,
            entries: self
                .entries
                .iter()
                .map(|e| EntrySpec {
                    name: e.name.clone(),
                    request: e.request,
                    group: e.group.clone(),
                    derived: e.derived.clone(),
                    callee: e.callee.clone(),
                    convention: e.convention,
                    side: e.side,
                    matchers: e
                        .matchers
                        .iter()
                        .map(|x| {
                            let prefix = match x.op {
                                promql::MatchOp::Eq => "",
                                promql::MatchOp::Ne => "!=",
                                promql::MatchOp::Re => "=~",
                                promql::MatchOp::NotRe => "!~",
                            };
                            (x.label.clone(), format!("{prefix}{}", x.value))
                        })
                        .collect(),
                    requests_metric: e.requests_metric.clone(),
                    status_label: e.status_label.clone(),
                    duration_metric: e.duration_metric.clone(),
                    unit: e.unit,
                    tolerance_count: slack_text(e.tolerance.count),
                    tolerance_errors: slack_text(e.tolerance.errors),
                    tolerance_duration: e.tolerance.duration,
                    overhead_ms: e.overhead.as_millis() as u64,
                })
                .collect(),
            alerts: self.alerts.clone(),
            promql: self.promql.clone(),
        }
    }

    /// Reads the stored form back; `requests` is how many requests the
    /// results file holds. A URL stored without its credentials is
    /// refused: it must be given again (`--prometheus`).
    pub fn from_spec(s: &VerificationSpec, requests: usize) -> Result<Self, String> {
        let masked = |u: &str| u.contains(":***@");
        let prometheus = match &s.prometheus {
            Some(u) if masked(u) => {
                return Err(format!(
                    "the results file shows the Prometheus URL without its credentials (`{u}`): give it with --prometheus URL"
                ));
            }
            Some(u) => Some(BaseUrl::parse(u)?),
            None => None,
        };
        if let Some(u) = s.scrape.iter().find(|u| masked(u)) {
            return Err(format!(
                "the results file shows a scrape URL without its credentials (`{u}`); verify after the fact with --prometheus URL"
            ));
        }
        let index = |i: usize| {
            if i < requests {
                Ok(i)
            } else {
                Err(format!(
                    "a verify entry names request #{i}, but the results file has {requests} requests"
                ))
            }
        };
        let mut entries = Vec::new();
        for e in &s.entries {
            let matchers = e
                .matchers
                .iter()
                .map(|(l, v)| Matcher::parse(l, v))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|x| format!("verify entry `{}`: {x}", e.name))?;
            let derived = e
                .derived
                .iter()
                .map(|&(i, n)| index(i).map(|i| (i, n)))
                .collect::<Result<Vec<_>, _>>()?;
            entries.push(VerifyEntry {
                name: e.name.clone(),
                request: e.request.map(index).transpose()?,
                group: e
                    .group
                    .iter()
                    .map(|&i| index(i))
                    .collect::<Result<_, _>>()?,
                derived,
                callee: e.callee.clone(),
                convention: e.convention,
                side: e.side,
                matchers,
                requests_metric: e.requests_metric.clone(),
                status_label: e.status_label.clone(),
                duration_metric: e.duration_metric.clone(),
                unit: e.unit,
                tolerance: Tolerance {
                    count: Slack::parse(&e.tolerance_count)?,
                    errors: Slack::parse(&e.tolerance_errors)?,
                    duration: e.tolerance_duration,
                },
                overhead: Duration::from_millis(e.overhead_ms),
            });
        }
        Ok(Verification {
            metrics: MetricsSpec {
                prometheus,
                token_env: s.token_env.clone(),
                scrape: s.scrape.clone(),
                scrape_interval: Duration::from_millis(s.scrape_interval_ms.max(1)),
                grace: Duration::from_millis(s.grace_ms),
                settle_timeout: s.settle_timeout_ms.map(Duration::from_millis),
                max_response: s.max_response,
            },
            entries,
            alerts: s.alerts.clone(),
            promql: s.promql.clone(),
        })
    }
}
