//! The verification part of a scenario: where metrics come from
//! (`metrics:`), how each request appears in them (`verify:`), which
//! alerts must fire or stay silent (`alerts:`), and PromQL assertions
//! (`promql:`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::calls::env_only;
use super::checker::{Checker, pos};
use super::raw::{
    MetricOrRequests, OrderedMap, RawMetrics, RawPromql, RawScenario, RawVerify, Text,
};
use super::threshold::Op;
use super::units;
use super::url::{BaseUrl, redact_url};
use crate::promql::{self, Matcher};

/// Everything needed to check the server's metrics after a run.
#[derive(Debug, Clone, Default)]
pub struct Verification {
    pub metrics: MetricsSpec,
    pub entries: Vec<VerifyEntry>,
    pub alerts: Vec<AlertExpectation>,
    pub promql: Vec<PromqlAssertion>,
}

impl Verification {
    /// True when the scenario asks for any server-side check.
    pub fn is_requested(&self) -> bool {
        !self.entries.is_empty() || !self.alerts.is_empty() || !self.promql.is_empty()
    }

    /// The number of `verify:` entries as written (one listing several
    /// requests counts once).
    pub fn entry_count(&self) -> usize {
        let mut names: Vec<&str> = self.entries.iter().map(|e| e.name.as_str()).collect();
        names.dedup();
        names.len()
    }
}

/// The metric source settings.
#[derive(Debug, Clone)]
pub struct MetricsSpec {
    /// Prometheus base URL; when absent the embedded scraper reads
    /// `scrape`.
    pub prometheus: Option<BaseUrl>,
    /// Environment variable holding a bearer token for Prometheus.
    pub token_env: Option<String>,
    /// `/metrics` URLs for the embedded scraper.
    pub scrape: Vec<String>,
    /// How often the embedded scraper scrapes.
    pub scrape_interval: Duration,
    /// Margin after the end of the drain before a scrape counts as
    /// settled (covers clock skew and responses sent before the counter
    /// is incremented).
    pub grace: Duration,
    /// How long to wait for settled scrapes; by default twice the
    /// targets' scrape interval plus 5 s.
    pub settle_timeout: Option<Duration>,
    /// The largest metrics page or Prometheus answer read, in bytes.
    pub max_response: usize,
}

/// The default cap on a metrics page or Prometheus answer: far above a
/// real one, far below what would exhaust a machine.
pub const DEFAULT_MAX_RESPONSE: usize = 64 << 20;

impl Default for MetricsSpec {
    fn default() -> Self {
        Self {
            prometheus: None,
            token_env: None,
            scrape: Vec::new(),
            scrape_interval: Duration::from_secs(1),
            grace: Duration::from_millis(100),
            settle_timeout: None,
            max_response: DEFAULT_MAX_RESPONSE,
        }
    }
}

/// A metric naming convention of an instrumentation library.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Convention {
    /// go-grpc-prometheus / py-grpc-prometheus.
    Grpc,
    /// django-prometheus.
    Django,
    /// prometheus-fastapi-instrumentator.
    Fastapi,
    /// gunicorn through statsd_exporter.
    Statsd,
    /// OpenTelemetry HTTP server semantic conventions.
    Otel,
    /// Names given in the scenario.
    Custom,
}

impl Convention {
    pub const ALL: &[(&str, Convention)] = &[
        ("grpc", Convention::Grpc),
        ("django", Convention::Django),
        ("fastapi", Convention::Fastapi),
        ("statsd", Convention::Statsd),
        ("otel", Convention::Otel),
        ("custom", Convention::Custom),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, c)| *c == self)
            .map(|(n, _)| *n)
            .unwrap_or("custom")
    }
}

/// Which end of a gRPC call exported the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Server,
    Client,
}

/// Extra disagreement allowed, as a count or a fraction of the client's
/// count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Slack {
    Count(u64),
    Ratio(f64),
}

impl Default for Slack {
    fn default() -> Self {
        Slack::Count(0)
    }
}

impl Slack {
    fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if let Some(p) = t.strip_suffix('%') {
            let v: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("expected a count or a percentage, got `{text}`"))?;
            if !(0.0..=100.0).contains(&v) {
                return Err(format!("a percentage is between 0% and 100%, got `{text}`"));
            }
            return Ok(Slack::Ratio(v / 100.0));
        }
        units::parse_count(t).map(Slack::Count).map_err(|_| {
            format!("expected a count (e.g. `5`) or a percentage (e.g. `1%`), got `{text}`")
        })
    }

    /// The allowance for a client count of `n`.
    pub fn of(self, n: u64) -> u64 {
        match self {
            Slack::Count(c) => c,
            Slack::Ratio(r) => (r * n as f64).floor() as u64,
        }
    }
}

/// Per-check tolerances; zero unless the scenario widens them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tolerance {
    pub count: Slack,
    pub errors: Slack,
    /// Fraction of requests by which the latency distributions may differ
    /// at a bucket bound (1% unless the scenario says otherwise).
    pub duration: f64,
}

/// How one request appears in the server's metrics.
#[derive(Debug, Clone)]
pub struct VerifyEntry {
    /// The entry's name in `verify:`.
    pub name: String,
    /// Index into the scenario's requests. An entry listing several
    /// (`requests: [a, b]`) becomes one `VerifyEntry` per request, each
    /// with the same matchers, so that they are checked together. `None`
    /// for an entry only derived calls reach (`requests: []`).
    pub request: Option<usize>,
    /// The requests an entry lists in `requests:`; empty when the entry
    /// is named after its one request.
    pub group: Vec<usize>,
    /// Other requests whose calls reach these series, and how many calls
    /// each causes (`derived: { proxy: 1 }`).
    pub derived: Vec<(usize, u64)>,
    /// A gRPC client-side entry's callee: the name of the entry of the
    /// server-side metrics of the same method (`callee:`).
    pub callee: Option<String>,
    pub convention: Convention,
    pub side: Side,
    pub matchers: Vec<Matcher>,
    /// Replaces the convention's request counter.
    pub requests_metric: Option<String>,
    /// Replaces the convention's status label.
    pub status_label: Option<String>,
    /// Replaces the convention's duration histogram (base name, without
    /// `_bucket`).
    pub duration_metric: Option<String>,
    /// Seconds per unit of the duration metric (`unit: ms`); by default
    /// taken from the metric's name, else seconds.
    pub unit: Option<f64>,
    pub tolerance: Tolerance,
    /// Time the client may legitimately spend outside the server's timer
    /// (network, client, proxy) before the gap counts as unmeasured.
    pub overhead: Duration,
}

/// An alert that must fire during the run, or must not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertExpectation {
    pub name: String,
    pub fires: bool,
}

/// A PromQL expression whose value at the end of the run must satisfy a
/// comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromqlAssertion {
    pub name: String,
    pub query: String,
    pub op: Op,
    pub value: f64,
}

const DEFAULT_OVERHEAD: Duration = Duration::from_millis(25);
/// Counts and errors are exact by default; latency distributions may
/// differ by 1% of requests, so a few client-side hiccups (a GC pause, a
/// descheduled thread) are not mistaken for a systematic gap.
const DEFAULT_DURATION_TOLERANCE: f64 = 0.01;

pub(super) fn check(c: &mut Checker, raw: &RawScenario, requests: &[&str]) -> Verification {
    let metrics = raw
        .metrics
        .as_ref()
        .map(|m| check_metrics(c, m))
        .unwrap_or_default();
    let mut entries: Vec<VerifyEntry> = Vec::new();
    let resolve = |c: &mut Checker, t: &Text, what: &str| -> Option<usize> {
        let found = requests.iter().position(|r| *r == t.as_str());
        let scenario = t.split_once('.').map(|(s, _)| s);
        let in_scenario = |s: &str| {
            requests
                .iter()
                .any(|r| r.split_once('.').is_some_and(|(p, _)| p == s))
        };
        if let (None, Some(s)) = (found, scenario)
            && !in_scenario(s)
        {
            let mut scenarios: Vec<&str> = requests
                .iter()
                .filter_map(|r| r.split_once('.').map(|(p, _)| p))
                .collect();
            scenarios.dedup();
            c.err(
                pos(t),
                format!(
                    "`{what}`: no scenario named `{s}` (in `{}`); expected one of: {}",
                    t.as_str(),
                    if scenarios.is_empty() {
                        "this file has no `scenarios:`".to_owned()
                    } else {
                        scenarios.join(", ")
                    }
                ),
            );
        } else if found.is_none() {
            c.err(
                pos(t),
                format!(
                    "`{what}`: no request named `{}`; expected one of: {}",
                    t.as_str(),
                    requests.join(", ")
                ),
            );
        }
        found
    };
    for (name, v) in &raw.verify.0 {
        // `requests: [a, b]` lists the requests the entry covers; else the
        // entry's name is the request.
        let listed = match v.requests.as_deref() {
            Some(MetricOrRequests::Requests(list)) => Some(list),
            _ => None,
        };
        let members: Vec<usize> = match listed {
            Some(list) => {
                if list.is_empty() && v.derived.0.is_empty() {
                    c.err(
                        pos(v.requests.as_ref().expect("listed")),
                        format!(
                            "`verify.{}.requests`: expected at least one request name, or `derived:` for an entry that only other requests' calls reach",
                            name.as_str()
                        ),
                    );
                }
                let mut out = Vec::new();
                for t in list {
                    if let Some(i) = resolve(c, t, &format!("verify.{}.requests", name.as_str())) {
                        if out.contains(&i) {
                            c.err(
                                pos(t),
                                format!(
                                    "`verify.{}.requests`: `{}` is listed twice",
                                    name.as_str(),
                                    t.as_str()
                                ),
                            );
                        } else {
                            out.push(i);
                        }
                    }
                }
                out
            }
            None => resolve(c, name, &format!("verify.{}", name.as_str()))
                .into_iter()
                .collect(),
        };
        for &m in &members {
            if let Some(other) = entries.iter().find(|e| e.request == Some(m)) {
                c.err(
                    pos(name),
                    if other.name == name.as_str() {
                        format!("`verify.{}` appears twice", name.as_str())
                    } else {
                        format!(
                            "request `{}` is verified by two entries, `verify.{}` and `verify.{}`; list it in one",
                            requests[m],
                            other.name,
                            name.as_str()
                        )
                    },
                );
            }
        }
        let mut derived = Vec::new();
        for (from, per) in &v.derived.0 {
            let what = format!("verify.{}.derived", name.as_str());
            let Some(i) = resolve(c, from, &what) else {
                continue;
            };
            if members.contains(&i) {
                c.err(
                    pos(from),
                    format!(
                        "`{what}`: `{}` is one of the entry's own requests; a request is either verified here or derived, not both",
                        from.as_str()
                    ),
                );
                continue;
            }
            if let Some(n) = c.parse(per, &format!("{what}.{}", from.as_str()), |s| {
                match units::parse_count(s) {
                    Ok(n) if n >= 1 => Ok(n),
                    _ => Err(format!(
                        "expected how many calls here each `{}` request causes, a whole number of at least 1, got `{s}`",
                        from.as_str()
                    )),
                }
            }) {
                derived.push((i, n));
            }
        }
        if let Some(e) = check_entry(c, name, v) {
            let group = if listed.is_some() {
                members.clone()
            } else {
                Vec::new()
            };
            let requests: Vec<Option<usize>> = if members.is_empty() && listed.is_some() {
                vec![None]
            } else {
                members.iter().copied().map(Some).collect()
            };
            for request in requests {
                entries.push(VerifyEntry {
                    request,
                    group: group.clone(),
                    derived: derived.clone(),
                    ..e.clone()
                });
            }
        }
    }
    for (name, v) in &raw.verify.0 {
        let Some(callee) = &v.callee else { continue };
        let field = format!("verify.{}.callee", name.as_str());
        let caller = entries.iter().find(|e| e.name == name.as_str());
        if caller.is_some_and(|e| e.convention != Convention::Grpc || e.side != Side::Client) {
            c.err(
                pos(callee),
                format!(
                    "`{field}`: only a gRPC client-side entry (`convention: grpc, side: client`) has a callee"
                ),
            );
            continue;
        }
        match entries.iter().find(|e| e.name == callee.as_str()) {
            Some(e) if e.convention == Convention::Grpc && e.side == Side::Server => {}
            Some(_) => c.err(
                pos(callee),
                format!(
                    "`{field}`: `verify.{}` must be the callee's gRPC server-side entry (`convention: grpc`, `side: server`)",
                    callee.as_str()
                ),
            ),
            None => {
                let mut names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
                names.dedup();
                c.err(
                    pos(callee),
                    format!(
                        "`{field}`: no verify entry named `{}`; expected one of: {}",
                        callee.as_str(),
                        names.join(", ")
                    ),
                );
            }
        }
    }
    let alerts = check_alerts(c, &raw.alerts);
    let promql = raw
        .promql
        .iter()
        .filter_map(|p| check_promql(c, p))
        .collect();
    Verification {
        metrics,
        entries,
        alerts,
        promql,
    }
}

fn check_metrics(c: &mut Checker, m: &RawMetrics) -> MetricsSpec {
    let mut spec = MetricsSpec {
        prometheus: m.prometheus.as_ref().and_then(|u| {
            if u.contains("{{") {
                let url = env_only(c, u, "metrics.prometheus")?;
                c.parse(u, "metrics.prometheus", |written| {
                    BaseUrl::parse_shown(&url, written)
                })
            } else {
                c.parse(u, "metrics.prometheus", BaseUrl::parse)
            }
        }),
        token_env: m.token_env.as_ref().map(|t| t.to_string()),
        scrape: m
            .scrape
            .iter()
            .filter_map(|u| {
                if u.contains("{{") {
                    // What the environment put in it is masked in every
                    // output, as any value read with `env()`.
                    let url = env_only(c, u, "metrics.scrape")?;
                    c.parse(u, "metrics.scrape", |_| check_scrape_url(&url))
                } else {
                    c.parse(u, "metrics.scrape", check_scrape_url)
                }
            })
            .collect(),
        ..MetricsSpec::default()
    };
    if let Some(t) = &m.token_env
        && (t.is_empty() || t.contains('='))
    {
        c.err(
            pos(t),
            "`metrics.token_env`: expected the name of an environment variable, e.g. `PROMETHEUS_TOKEN`",
        );
    }
    let positive = |d: Duration| {
        if d.is_zero() {
            Err("expected a duration above zero".to_owned())
        } else {
            Ok(d)
        }
    };
    if let Some(v) = &m.scrape_interval
        && let Some(d) = c.parse(v, "metrics.scrape_interval", |s| {
            units::parse_duration(s).and_then(positive)
        })
    {
        spec.scrape_interval = d;
    }
    if let Some(v) = &m.grace
        && let Some(d) = c.parse(v, "metrics.grace", units::parse_duration)
    {
        spec.grace = d;
    }
    if let Some(v) = &m.settle_timeout {
        spec.settle_timeout = c.parse(v, "metrics.settle_timeout", |s| {
            units::parse_duration(s).and_then(positive)
        });
    }
    if let Some(v) = &m.max_response
        && let Some(n) = c.parse(v, "metrics.max_response", units::parse_bytes)
    {
        spec.max_response = n;
    }
    spec
}

fn check_scrape_url(u: &str) -> Result<String, String> {
    let shown = redact_url(u);
    let parsed: http::Uri = u.parse().map_err(|e| {
        format!("expected a URL such as `http://127.0.0.1:8000/metrics`, got `{shown}` ({e})")
    })?;
    if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none() {
        return Err(format!(
            "expected an `http://` or `https://` URL such as `http://127.0.0.1:8000/metrics`, got `{shown}`"
        ));
    }
    Ok(u.to_owned())
}

fn check_entry(
    c: &mut Checker,
    name: &Text,
    v: &marked_yaml::Spanned<RawVerify>,
) -> Option<VerifyEntry> {
    let field = |f: &str| format!("verify.{}.{f}", name.as_str());
    let convention = match Convention::ALL
        .iter()
        .find(|(n, _)| *n == v.convention.as_str())
    {
        Some((_, conv)) => *conv,
        None => {
            let names: Vec<&str> = Convention::ALL.iter().map(|(n, _)| *n).collect();
            c.err(
                pos(&v.convention),
                format!(
                    "`{}`: unknown convention `{}`; expected one of: {}",
                    field("convention"),
                    v.convention.as_str(),
                    names.join(", ")
                ),
            );
            return None;
        }
    };
    let side = match v.side.as_ref().map(|s| s.as_str()) {
        None | Some("server") => Side::Server,
        Some("client") if convention == Convention::Grpc => Side::Client,
        Some(other) => {
            c.err(
                pos(v.side.as_ref().expect("matched Some")),
                format!(
                    "`{}`: expected `server`{}, got `{other}`",
                    field("side"),
                    if convention == Convention::Grpc {
                        " or `client`"
                    } else {
                        " (only the grpc convention has client-side metrics)"
                    }
                ),
            );
            Side::Server
        }
    };
    let mut matchers = Vec::new();
    for (label, value) in &v.matchers.0 {
        match Matcher::parse(label.as_str(), value.as_str()) {
            Ok(m) => matchers.push(m),
            Err(e) => c.err(pos(label), format!("`{}`: {e}", field("match"))),
        }
    }
    let metric = |c: &mut Checker, t: &Option<Text>, f: &str| -> Option<String> {
        let t = t.as_ref()?;
        if promql::is_metric_name(t.as_str()) {
            Some(t.to_string())
        } else {
            c.err(
                pos(t),
                format!(
                    "`{}`: `{}` is not a valid metric name",
                    field(f),
                    t.as_str()
                ),
            );
            None
        }
    };
    let requests_text = v.requests.as_ref().and_then(|r| match &**r {
        MetricOrRequests::Metric(m) => Some(Text::new(*r.span(), m.clone())),
        MetricOrRequests::Requests(_) => None,
    });
    if let (Some(_), Some(counter)) = (&requests_text, &v.counter) {
        c.err(
            pos(counter),
            format!(
                "`{}`: give the counter once, as `requests: METRIC` or `counter: METRIC`",
                field("counter")
            ),
        );
    }
    let requests_metric = match &v.counter {
        Some(_) => metric(c, &v.counter, "counter"),
        None => metric(c, &requests_text, "requests"),
    };
    let duration_metric = metric(c, &v.duration, "duration");
    let status_label = v.status_label.as_ref().and_then(|t| {
        if promql::is_label_name(t.as_str()) {
            Some(t.to_string())
        } else {
            c.err(
                pos(t),
                format!(
                    "`{}`: `{}` is not a valid label name",
                    field("status_label"),
                    t.as_str()
                ),
            );
            None
        }
    });
    if convention == Convention::Custom && requests_text.is_none() && v.counter.is_none() {
        c.err(
            pos(v),
            format!(
                "`verify.{}`: the custom convention needs `requests: METRIC` (a counter of requests; `counter: METRIC` when `requests:` lists requests), and optionally `status_label` and `duration`",
                name.as_str()
            ),
        );
    }
    let unit = v
        .unit
        .as_ref()
        .and_then(|u| c.parse(u, &field("unit"), parse_unit));
    let mut tolerance = Tolerance {
        duration: DEFAULT_DURATION_TOLERANCE,
        ..Tolerance::default()
    };
    if let Some(t) = &v.tolerance {
        if let Some(x) = &t.count
            && let Some(s) = c.parse(x, &field("tolerance.count"), Slack::parse)
        {
            tolerance.count = s;
        }
        if let Some(x) = &t.errors
            && let Some(s) = c.parse(x, &field("tolerance.errors"), Slack::parse)
        {
            tolerance.errors = s;
        }
        if let Some(x) = &t.duration
            && let Some(s) = c.parse(x, &field("tolerance.duration"), |s| {
                match Slack::parse(s)? {
                    Slack::Ratio(r) => Ok(r),
                    Slack::Count(_) => Err(format!(
                        "expected a percentage of requests, e.g. `2%`, got `{s}`"
                    )),
                }
            })
        {
            tolerance.duration = s;
        }
    }
    let overhead = v
        .overhead
        .as_ref()
        .and_then(|o| c.parse(o, &field("overhead"), units::parse_duration))
        .unwrap_or(DEFAULT_OVERHEAD);
    Some(VerifyEntry {
        name: name.to_string(),
        request: None,
        group: Vec::new(),
        derived: Vec::new(),
        callee: v.callee.as_ref().map(|t| t.to_string()),
        convention,
        side,
        matchers,
        requests_metric,
        status_label,
        duration_metric,
        unit,
        tolerance,
        overhead,
    })
}

/// A duration unit as `unit:` writes it: seconds per unit.
fn parse_unit(s: &str) -> Result<f64, String> {
    match s.trim() {
        "s" | "seconds" => Ok(1.0),
        "ms" | "milliseconds" => Ok(1e-3),
        "us" | "µs" | "microseconds" => Ok(1e-6),
        "ns" | "nanoseconds" => Ok(1e-9),
        other => Err(format!(
            "expected a duration unit: `s`, `ms`, `us` or `ns` (or `seconds`, `milliseconds`, `microseconds`, `nanoseconds`), got `{other}`"
        )),
    }
}

fn check_alerts(c: &mut Checker, raw: &OrderedMap<Text>) -> Vec<AlertExpectation> {
    let mut out = Vec::new();
    for (name, expect) in &raw.0 {
        let fires = match expect.as_str() {
            "fires" => true,
            "silent" => false,
            other => {
                c.err(
                    pos(expect),
                    format!(
                        "`alerts.{}`: expected `fires` or `silent`, got `{other}`",
                        name.as_str()
                    ),
                );
                continue;
            }
        };
        out.push(AlertExpectation {
            name: name.to_string(),
            fires,
        });
    }
    out
}

fn check_promql(c: &mut Checker, p: &marked_yaml::Spanned<RawPromql>) -> Option<PromqlAssertion> {
    let name = p.name.as_str();
    if let Err(e) = promql::check_syntax(p.query.as_str()) {
        let first = e.lines().next().unwrap_or_default().to_owned();
        c.err(
            pos(&p.query),
            format!("`promql` `{name}`: the query is not valid PromQL: {first}"),
        );
    }
    let (op, value) = match parse_expect(p.expect.as_str()) {
        Ok(x) => x,
        Err(e) => {
            c.err(pos(&p.expect), format!("`promql` `{name}`: `expect`: {e}"));
            return None;
        }
    };
    Some(PromqlAssertion {
        name: name.to_owned(),
        query: p.query.to_string(),
        op,
        value,
    })
}

/// `< 0.05`, `>= 1`, `== 0`-style comparisons (`==` is read as `<=` and
/// `>=` together).
fn parse_expect(s: &str) -> Result<(Op, f64), String> {
    let s = s.trim();
    let (op, rest) = [("<=", Op::Le), (">=", Op::Ge), ("<", Op::Lt), (">", Op::Gt)]
        .into_iter()
        .find_map(|(p, op)| s.strip_prefix(p).map(|r| (op, r)))
        .ok_or_else(|| format!("expected a comparison such as `< 0.05` or `>= 1`, got `{s}`"))?;
    let v: f64 = rest.trim().parse().map_err(|_| {
        format!(
            "expected a number after the operator, got `{}`",
            rest.trim()
        )
    })?;
    Ok((op, v))
}

mod spec;
pub use spec::{EntrySpec, VerificationSpec};

#[cfg(test)]
mod tests;
