//! The checks of one `verify:` entry, in order: preflight, resets,
//! freshness, count, errors, mean and units, duration distribution,
//! quantiles. A check whose premise another check has already refuted is
//! skipped with the reason, so one fault gives one failure to read.

use std::collections::{BTreeMap, BTreeSet};

use hdrhistogram::Histogram;

use super::convention::{self, DurationKind, Names, StatusSource, StatusStyle};
use super::counters::{self, Increase};
use super::{ClientRequest, LOOKBACK_MS, ServerFigures, Status, Verdict};
use crate::metrics::{Fetch, MetricSource, Series, SourceError, TargetStatus};
use crate::promql::Selector;
use crate::scenario::units::{self, format_micros};
use crate::scenario::verification::VerifyEntry;

/// What the checks of one entry read.
pub(super) struct Context<'a, M> {
    pub source: &'a M,
    pub entry: &'a VerifyEntry,
    pub names: &'a Names,
    pub client: &'a ClientRequest,
    pub t0: i64,
    pub t1: i64,
    pub s: i64,
    pub interval_ms: i64,
    pub targets: &'a [TargetStatus],
}

impl<M: MetricSource> Context<'_, M> {
    async fn fetch(&self, sel: &Selector) -> Result<Fetch, SourceError> {
        self.source
            .samples(sel, self.t0 - LOOKBACK_MS, self.s)
            .await
    }

    fn verdict(&self, check: &str, status: Status, summary: String, query: &str) -> Verdict {
        Verdict {
            request: Some(self.client.name.clone()),
            check: check.into(),
            status,
            summary,
            diagnosis: None,
            query: query.to_owned(),
            eval_unix_ms: self.s,
            warnings: Vec::new(),
        }
    }

    fn skipped(&self, check: &str, why: &str) -> Verdict {
        self.verdict(check, Status::Skipped, why.to_owned(), "")
    }

    /// Requests the server may have counted or not.
    fn unsure(&self) -> u64 {
        self.client.unsure
    }
}

/// A server or client count (an increase, so a whole number ≥ 0).
/// Whether a client status key is an HTTP 5xx.
fn is_http_5xx(key: &str) -> bool {
    key.len() == 3 && key.starts_with('5') && key.parse::<u16>().is_ok()
}

/// Whether the client's statuses are HTTP ones (not gRPC codes), so they
/// cannot be compared with a server that counts gRPC codes.
fn client_speaks_http(client: &BTreeMap<String, u64>) -> bool {
    client.keys().any(|k| k.parse::<u16>().is_ok())
}

fn thousands(v: f64) -> String {
    units::thousands(v.round().max(0.0) as u64)
}

fn secs(v: f64) -> String {
    if v.is_infinite() {
        "+Inf".into()
    } else {
        format_micros((v * 1e6).round().max(0.0) as u64)
    }
}

fn pct(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

/// Runs the checks of one entry and returns the verdicts and the server
/// figures.
pub(super) async fn run<M: MetricSource>(
    cx: &Context<'_, M>,
) -> Result<(Vec<Verdict>, ServerFigures), SourceError> {
    let mut out = Vec::new();
    let mut figures = ServerFigures {
        request: cx.client.name.clone(),
        convention: cx.entry.convention.name().into(),
        ..Default::default()
    };
    let query = cx.names.requests.to_string();
    let fetched = cx.fetch(&cx.names.requests).await?;
    let series: Vec<(Series, Increase)> = fetched
        .series
        .iter()
        .filter_map(|s| counters::increase(s, cx.t0, cx.s).map(|i| (s.clone(), i)))
        .collect();

    // Preflight: the matchers find series.
    let mut absent_but_exported = false;
    if series.is_empty() {
        let (message, exported) = explain_no_series(cx, &cx.names.requests).await?;
        let mut v = cx.verdict("preflight", Status::NoData, message.0, &query);
        v.diagnosis = Some(message.1);
        v.warnings = fetched.warnings.clone();
        out.push(v);
        // Counted as zero only when the client saw server errors: then the
        // metric is exported and the missing series is the finding
        // (exceptions that bypass the middleware). Otherwise the matcher
        // is the likelier culprit, and the preflight says so.
        let saw_5xx = cx.client.by_status.keys().any(|k| is_http_5xx(k));
        if !exported || !saw_5xx {
            for check in ["count", "errors", "duration"] {
                out.push(cx.skipped(check, "no series to read (see preflight)"));
            }
            return Ok((out, figures));
        }
        absent_but_exported = true;
    } else {
        let mut v = cx.verdict(
            "preflight",
            Status::Pass,
            format!("{} series of {}", series.len(), cx.names.requests.metric),
            &query,
        );
        v.warnings = fetched.warnings.clone();
        out.push(v);
    }

    // Resets and freshness come first: when either fails, counts over
    // the run mean nothing.
    let mut premise: Option<&str> = None;
    if !absent_but_exported {
        let resets = check_resets(cx, &series, &query).await?;
        if resets.status.failed() {
            premise = Some("counters dropped during the run (see resets)");
            out.push(resets);
            out.push(cx.skipped("freshness", "counters dropped during the run (see resets)"));
        } else {
            out.push(resets);
            let fresh = check_freshness(cx, &series, &query);
            if fresh.status.failed() {
                premise = Some("the metrics are not fresh (see freshness)");
            }
            out.push(fresh);
        }
    }
    if let Some(why) = premise {
        for check in ["count", "errors", "duration"] {
            out.push(cx.skipped(check, why));
        }
        return Ok((out, figures));
    }

    let server_count: f64 = series.iter().map(|(_, i)| i.delta).sum();
    figures.count = Some(server_count);

    // Errors per status.
    let by_status = server_by_status(cx, &series).await?;
    let style = convention::style_of(by_status.keys().map(String::as_str));
    let server_keys: BTreeMap<String, f64> =
        by_status.iter().fold(BTreeMap::new(), |mut m, (k, v)| {
            *m.entry(convention::status_key(k, style)).or_default() += v;
            m
        });
    let client_keys: BTreeMap<String, u64> =
        cx.client
            .by_status
            .iter()
            .fold(BTreeMap::new(), |mut m, (code, n)| {
                let key = convention::status_key(
                    code,
                    if style == StatusStyle::Class {
                        StatusStyle::Class
                    } else {
                        StatusStyle::Code
                    },
                );
                *m.entry(key).or_default() += n;
                m
            });
    if cx.names.status.is_some()
        && (style != StatusStyle::Grpc || !client_speaks_http(&client_keys))
    {
        figures.errors = Some(
            server_keys
                .iter()
                .filter(|(k, _)| convention::is_server_error(k))
                .map(|(_, v)| v)
                .sum(),
        );
    }
    figures.by_status = server_keys.clone();

    out.push(check_count(
        cx,
        server_count,
        &server_keys,
        &client_keys,
        &query,
        absent_but_exported,
    ));
    out.push(check_errors(
        cx,
        style,
        &server_keys,
        &client_keys,
        absent_but_exported,
    ));
    if absent_but_exported {
        out.push(cx.skipped("duration", "no series to read (see preflight)"));
        return Ok((out, figures));
    }
    out.extend(check_duration(cx, &mut figures).await?);
    Ok((out, figures))
}

/// Says why nothing matched: which label values do exist. Returns the
/// (summary, diagnosis) and whether the metric is exported at all.
async fn explain_no_series<M: MetricSource>(
    cx: &Context<'_, M>,
    sel: &Selector,
) -> Result<((String, String), bool), SourceError> {
    let family = cx
        .fetch(&Selector::new(sel.metric.clone(), Vec::new()))
        .await?;
    let summary = format!("no series for `{sel}`");
    if family.series.is_empty() {
        return Ok((
            (
                summary,
                format!(
                    "no series of `{}` at all: the service is not scraped ({}), or it does not export the {} convention's metrics",
                    sel.metric,
                    if cx.targets.is_empty() {
                        "no targets".to_owned()
                    } else {
                        format!(
                            "targets: {}",
                            cx.targets
                                .iter()
                                .map(TargetStatus::describe)
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    },
                    cx.entry.convention.name()
                ),
            ),
            false,
        ));
    }
    let mut found = Vec::new();
    for m in &sel.matchers {
        let values: BTreeSet<&str> = family
            .series
            .iter()
            .filter_map(|s| s.labels.get(&m.label).map(String::as_str))
            .collect();
        let list: Vec<&str> = values.into_iter().take(20).collect();
        found.push(if list.is_empty() {
            format!("no series has a `{}` label", m.label)
        } else {
            format!("found {}: {}", m.label, list.join(", "))
        });
    }
    let errors: u64 = cx
        .client
        .by_status
        .iter()
        .filter(|(k, _)| is_http_5xx(k))
        .map(|(_, n)| n)
        .sum();
    let mut diagnosis = found.join("; ");
    if errors > 0 && errors == cx.client.responses {
        diagnosis = format!(
            "every response the client got was a 5xx and the server counted none of them: exceptions bypass the metrics middleware, or the matcher is wrong ({diagnosis})"
        );
    }
    Ok(((summary, diagnosis), true))
}

/// Looks for drops in every series of the counter on the same targets:
/// a page answered by several worker registries, or reset, shows it in
/// all its series, including ones that saw little traffic. A series that
/// vanishes from a page that is still scraped counts as a reset too.
async fn check_resets<M: MetricSource>(
    cx: &Context<'_, M>,
    series: &[(Series, Increase)],
    query: &str,
) -> Result<Verdict, SourceError> {
    let instances: BTreeSet<&String> = series
        .iter()
        .filter_map(|(s, _)| s.labels.get("instance"))
        .collect();
    let family_sel = Selector::new(cx.names.requests.metric.clone(), Vec::new());
    let family: Vec<(Series, Increase)> = cx
        .fetch(&family_sel)
        .await?
        .series
        .into_iter()
        .filter(|s| {
            s.labels
                .get("instance")
                .is_none_or(|i| instances.contains(i))
        })
        .filter_map(|s| counters::increase(&s, cx.t0, cx.s).map(|i| (s, i)))
        .collect();
    let family = if family.is_empty() {
        series.to_vec()
    } else {
        family
    };
    // The target still answers scrapes after the load (per the source's
    // target list, or other series of the same page).
    let still_scraped = |s: &Series| {
        cx.targets
            .iter()
            .any(|t| t.holds(s) && t.health == "up" && t.last_scrape_ms.is_some_and(|l| l >= cx.t1))
            || family.iter().any(|(o, i)| {
                o.labels.get("instance") == s.labels.get("instance") && i.newest_ms >= cx.t1
            })
    };
    let vanished = family
        .iter()
        .filter(|(s, i)| i.newest_ms < cx.t1 && still_scraped(s))
        .count();
    let drops: usize = family.iter().map(|(_, i)| i.drops).sum();
    let scrapes: usize = series
        .iter()
        .map(|(_, i)| i.samples.saturating_sub(1))
        .max()
        .unwrap_or(0);
    let in_family = if family.len() > series.len() {
        format!(
            " across the {} series of {} on the same target",
            family.len(),
            family_sel.metric
        )
    } else {
        String::new()
    };
    if drops + vanished == 0 {
        return Ok(cx.verdict(
            "resets",
            Status::Pass,
            format!("no counter drops in {scrapes} scrape intervals{in_family}"),
            query,
        ));
    }
    let sawtooth_drops: usize = family.iter().map(|(_, i)| i.sawtooth_drops).sum();
    let restarts = process_restarts(cx, series).await?;
    let mut summary = format!("counters dropped {drops}× in {scrapes} scrape intervals{in_family}");
    if vanished > 0 {
        summary.push_str(&format!(
            "; {vanished} series vanished from a page that is still scraped"
        ));
    }
    let mut v = cx.verdict("resets", Status::Fail, summary, query);
    // Python's client exports `<name>_created` per counter: it flips
    // between values when scrapes reach different worker registries, and
    // only moves forward when one registry is re-created.
    let created = match cx.names.requests.metric.strip_suffix("_total") {
        Some(base) => cx
            .fetch(&Selector::new(format!("{base}_created"), Vec::new()))
            .await?
            .series
            .into_iter()
            .filter(|s| {
                s.labels
                    .get("instance")
                    .is_none_or(|i| instances.contains(i))
            })
            .collect(),
        None => Vec::new(),
    };
    let moves = |back: bool| -> usize {
        created
            .iter()
            .map(|c| {
                c.samples
                    .windows(2)
                    .filter(|w| {
                        w[1].0 > cx.t0
                            && if back {
                                w[1].1 < w[0].1
                            } else {
                                w[1].1 > w[0].1
                            }
                    })
                    .count()
            })
            .sum()
    };
    let (back, forward) = (moves(true), moves(false));
    let sawtooth = if created.is_empty() {
        None
    } else {
        Some(back > 0)
    };
    v.diagnosis = Some(match (restarts, sawtooth) {
        (r, _) if r > 0 => format!(
            "the process restarted {r}× during the run (process_start_time_seconds changed): requests handled between its last scrape and the restart are lost to every query"
        ),
        (_, Some(true)) => format!(
            "counters drop and climb back without a restart, and their `_created` time flips between values {back}×: scrapes hit different worker processes, each with its own registry (gunicorn/uwsgi workers); use the client library's multiprocess mode or aggregate before exporting"
        ),
        (_, Some(false)) => format!(
            "counters fall back to zero (or vanish) without a process restart and their `_created` time moved forward {forward}×: the registry is re-created or cleared while the process runs; counts between the last scrape and each reset are lost"
        ),
        (_, None) if sawtooth_drops * 2 > drops + vanished => "counters drop and climb back without a restart: scrapes most likely hit different worker processes, each with its own registry (gunicorn/uwsgi workers); use the client library's multiprocess mode or aggregate before exporting".to_owned(),
        (_, None) => "counters fall back without a process restart: either the registry is re-created or cleared while the process runs, or scrapes hit different worker processes with their own registries (export `_created` or process_start_time_seconds to tell which)".to_owned(),
    });
    Ok(v)
}

/// How many times `process_start_time_seconds` changed on the instances
/// of `series` during the run.
async fn process_restarts<M: MetricSource>(
    cx: &Context<'_, M>,
    series: &[(Series, Increase)],
) -> Result<usize, SourceError> {
    let f = cx
        .fetch(&Selector::new("process_start_time_seconds", Vec::new()))
        .await?;
    let instances: BTreeSet<&String> = series
        .iter()
        .filter_map(|(s, _)| s.labels.get("instance"))
        .collect();
    Ok(f.series
        .iter()
        .filter(|p| {
            p.labels
                .get("instance")
                .is_some_and(|i| instances.contains(i))
        })
        .map(|p| {
            p.samples
                .windows(2)
                .filter(|w| w[1].0 > cx.t0 && w[1].1 != w[0].1)
                .count()
        })
        .sum())
}

fn check_freshness<M: MetricSource>(
    cx: &Context<'_, M>,
    series: &[(Series, Increase)],
    query: &str,
) -> Verdict {
    let oldest = series
        .iter()
        .min_by_key(|(_, i)| i.newest_ms)
        .expect("called with series");
    if oldest.1.newest_ms < cx.t1 {
        let mut v = cx.verdict(
            "freshness",
            Status::Fail,
            format!(
                "newest sample of {} is {} old at the end of the run",
                oldest.0.describe(),
                secs((cx.s - oldest.1.newest_ms) as f64 / 1000.0)
            ),
            query,
        );
        v.diagnosis = Some(
            "the target is down or no longer scraped: Prometheus' lookback returns the last value it has, which is stale".into(),
        );
        return v;
    }
    // A counter that stopped changing while the client kept completing
    // requests: the endpoint serves a frozen copy.
    let since = series
        .iter()
        .map(|(_, i)| i.settled_since_ms)
        .max()
        .unwrap_or(cx.t0);
    let later: u64 = cx
        .client
        .windows
        .iter()
        .filter(|(end, _)| end - 1000 >= since + cx.interval_ms)
        .map(|(_, n)| n)
        .sum();
    if later > cx.unsure() + cx.entry.tolerance.count.of(cx.client.responses) && later > 0 {
        let mut v = cx.verdict(
            "freshness",
            Status::Fail,
            format!(
                "counters unchanged since {} though the client completed {} requests after that",
                if since <= cx.t0 {
                    "before the load started".to_owned()
                } else {
                    format!("T0+{:.1}s", (since - cx.t0) as f64 / 1000.0)
                },
                thousands(later as f64)
            ),
            query,
        );
        v.diagnosis = Some(
            "the metrics endpoint stopped updating while the service kept serving: a cached or frozen exporter (samples are fresh, their values are not)".into(),
        );
        return v;
    }
    cx.verdict(
        "freshness",
        Status::Pass,
        format!(
            "newest samples {} after the load ended",
            secs((oldest.1.newest_ms - cx.t1) as f64 / 1000.0)
        ),
        query,
    )
}

/// Server increases by raw status value.
async fn server_by_status<M: MetricSource>(
    cx: &Context<'_, M>,
    series: &[(Series, Increase)],
) -> Result<BTreeMap<String, f64>, SourceError> {
    let mut out = BTreeMap::new();
    match &cx.names.status {
        None => {}
        Some(StatusSource::Label(l)) => {
            for (s, i) in series {
                let v = s.labels.get(l).cloned().unwrap_or_default();
                *out.entry(v).or_default() += i.delta;
            }
        }
        Some(StatusSource::MetricSuffix(prefix)) => {
            let sel = cx.names.status_metrics().expect("suffix style");
            for s in cx.fetch(&sel).await?.series {
                if let Some(i) = counters::increase(&s, cx.t0, cx.s) {
                    let code = s.name.strip_prefix(prefix.as_str()).unwrap_or(&s.name);
                    *out.entry(code.to_owned()).or_default() += i.delta;
                }
            }
        }
    }
    Ok(out)
}

fn check_count<M: MetricSource>(
    cx: &Context<'_, M>,
    server: f64,
    server_keys: &BTreeMap<String, f64>,
    client_keys: &BTreeMap<String, u64>,
    query: &str,
    absent: bool,
) -> Verdict {
    let client = cx.client.responses as f64;
    let slack = cx.entry.tolerance.count.of(cx.client.responses) as f64;
    let upper = client + cx.unsure() as f64 + slack;
    let lower = client - slack;
    let pass = server >= lower - 1e-9 && server <= upper + 1e-9;
    let range = if upper > client {
        format!(
            ", up to {} with {} unsure",
            thousands(upper),
            thousands(cx.unsure() as f64 + slack)
        )
    } else {
        String::new()
    };
    let mut v = cx.verdict(
        "count",
        Status::pass_if(pass),
        format!(
            "server {} {} client {}{range}",
            thousands(server),
            if pass { "=" } else { "≠" },
            thousands(client)
        ),
        query,
    );
    if absent {
        v.warnings.push(
            "no series matched but the metric is exported with other labels, so the server counted 0"
                .into(),
        );
    }
    if pass {
        return v;
    }
    let ratio = if server > 0.0 { client / server } else { 0.0 };
    let workers = ratio.round();
    v.diagnosis = Some(
        if server < lower && workers >= 2.0 && (ratio - workers).abs() < 0.15 * workers {
            format!(
                "server counted {}, about 1/{workers:.0} of the client's {}: each scrape sees one of ~{workers:.0} worker processes' registries (multiprocess mode missing)",
                thousands(server),
                thousands(client)
            )
        } else if server < lower {
            let missing = client - server;
            let missing_5xx: f64 = client_keys
                .iter()
                .filter(|(k, _)| k.starts_with('5'))
                .map(|(k, n)| (*n as f64 - server_keys.get(k).copied().unwrap_or(0.0)).max(0.0))
                .sum();
            if missing_5xx > 0.0 && (missing_5xx - missing).abs() < 0.5 {
                format!(
                    "server counted {}, client {}: the {} missing are all 5xx responses: exceptions bypass the metrics middleware (see errors)",
                    thousands(server),
                    thousands(client),
                    thousands(missing)
                )
            } else {
                format!(
                    "server counted {}, client {}: {} requests lost before instrumentation (answered by a proxy or an earlier middleware), or the matcher misses some series",
                    thousands(server),
                    thousands(client),
                    thousands(missing)
                )
            }
        } else {
            format!(
                "server counted {} more than the client sent: other traffic matches these series (narrow `match`), or requests are counted twice",
                thousands(server - client)
            )
        },
    );
    v
}

fn check_errors<M: MetricSource>(
    cx: &Context<'_, M>,
    style: StatusStyle,
    server: &BTreeMap<String, f64>,
    client: &BTreeMap<String, u64>,
    absent: bool,
) -> Verdict {
    let query = match (&cx.names.status, cx.names.status_metrics()) {
        (_, Some(sel)) => sel.to_string(),
        (Some(StatusSource::Label(l)), None) => format!("{} by {l}", cx.names.requests),
        _ => String::new(),
    };
    if cx.names.status.is_none() {
        return cx.skipped("errors", "the metrics carry no status");
    }
    if style == StatusStyle::Grpc && client_speaks_http(client) {
        return cx.skipped(
            "errors",
            "the server counts gRPC codes and the client made HTTP requests; codes are not comparable",
        );
    }
    let keys: BTreeSet<&String> = server.keys().chain(client.keys()).collect();
    let unsure = cx.unsure() as f64;
    let slack = cx.entry.tolerance.errors.of(cx.client.responses) as f64;
    let mut parts = Vec::new();
    let mut problems = Vec::new();
    for k in keys {
        let s = server.get(k).copied().unwrap_or(0.0);
        let c = client.get(k).copied().unwrap_or(0) as f64;
        parts.push(format!(
            "{k}: server {} / client {}",
            thousands(s),
            thousands(c)
        ));
        if s < c - slack - 1e-9 {
            problems.push(if k.starts_with('5') {
                format!(
                    "client saw {} × {k}, server counted {}: exceptions bypass the metrics middleware",
                    thousands(c),
                    thousands(s)
                )
            } else {
                format!(
                    "client saw {} × {k}, server counted {}: responses written before the metrics middleware counts them",
                    thousands(c),
                    thousands(s)
                )
            });
        } else if s > c + unsure + slack + 1e-9 {
            problems.push(format!(
                "server counted {} × {k}, client saw {}: other traffic in these series, or the status is rewritten after counting",
                thousands(s),
                thousands(c)
            ));
        }
    }
    let mut v = cx.verdict(
        "errors",
        Status::pass_if(problems.is_empty()),
        if parts.is_empty() {
            "no responses on either side".into()
        } else {
            parts.join(" · ")
        },
        &query,
    );
    if absent {
        v.warnings
            .push("no series matched; the server's counts are taken as 0".into());
    }
    if !problems.is_empty() {
        v.diagnosis = Some(problems.join("; "));
    }
    v
}

/// The fraction of client latencies at or below `us`; `conservative`
/// chooses the side of HDR's rounding (0.1 %) that favours the server.
fn client_fraction(h: &Histogram<u64>, us: f64, upper: bool) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    let bound = if upper { us * 1.002 } else { us * 0.998 };
    if bound < 0.0 {
        return 0.0;
    }
    let bound = bound.min(u64::MAX as f64 / 2.0) as u64;
    h.count_between(0, bound) as f64 / h.len() as f64
}

/// The client's latency at quantile `q`, in seconds (0 with no data).
fn client_quantile(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1e6
    }
}

async fn check_duration<M: MetricSource>(
    cx: &Context<'_, M>,
    figures: &mut ServerFigures,
) -> Result<Vec<Verdict>, SourceError> {
    let Some((base, kind)) = &cx.names.duration else {
        return Ok(vec![
            cx.skipped("duration", "no duration metric for this convention"),
        ]);
    };
    let mut out = Vec::new();
    let count_sel = base.with_metric(format!("{}_count", base.metric));
    let sum_sel = base.with_metric(format!("{}_sum", base.metric));
    let sum_of = |f: &Fetch| -> (f64, usize) {
        f.series
            .iter()
            .filter_map(|s| counters::increase(s, cx.t0, cx.s))
            .fold((0.0, 0), |(a, n), i| (a + i.delta, n + 1))
    };
    let (count, n_count) = sum_of(&cx.fetch(&count_sel).await?);
    let (sum, _) = sum_of(&cx.fetch(&sum_sel).await?);
    let h = &cx.client.latency;
    let client_mean = if h.is_empty() { 0.0 } else { h.mean() / 1e6 };
    if n_count == 0 || count <= 0.0 {
        let mut v = cx.verdict(
            "mean",
            Status::NoData,
            format!("no durations in `{count_sel}`"),
            &count_sel.to_string(),
        );
        v.diagnosis = Some(format!(
            "the client got {} responses but the server observed no durations: the timer is not on this path, or the matcher misses the duration metric",
            thousands(cx.client.responses as f64)
        ));
        out.push(v);
        return Ok(out);
    }
    let server_mean = sum / count;
    figures.mean_s = Some(server_mean);

    // Mean and units.
    let tol = cx.entry.tolerance.duration;
    let ratio = if client_mean > 0.0 {
        server_mean / client_mean
    } else {
        f64::INFINITY
    };
    let fits = |server: f64| server <= client_mean * (1.001 + tol) + 0.0005;
    let mean_ok = fits(server_mean);
    // Ten times slower than the client can only be a unit mistake.
    let units_wrong = !mean_ok && ratio > 10.0;
    let mut v = cx.verdict(
        "mean",
        Status::pass_if(mean_ok),
        format!(
            "server mean {} vs client mean {}",
            secs(server_mean),
            secs(client_mean)
        ),
        &format!("{sum_sel} / {count_sel}"),
    );
    if !mean_ok {
        v.diagnosis = Some(if units_wrong && fits(server_mean / 1e3) {
            format!(
                "server mean {server_mean:.4} vs client {client_mean:.4} s (×{ratio:.0}); divided by 1,000 it fits: milliseconds exported as seconds"
            )
        } else if units_wrong && fits(server_mean / 1e6) {
            format!(
                "server mean {server_mean:.4} vs client {client_mean:.6} s (×{ratio:.0}); divided by 1,000,000 it fits: microseconds exported as seconds"
            )
        } else if units_wrong {
            format!(
                "server mean {server_mean:.4} vs client {client_mean:.4} s (×{ratio:.0}): the server's durations are not in seconds"
            )
        } else {
            "the server's mean is above the client's: its timer includes work after the response was sent, or slower traffic from elsewhere matches these series".into()
        });
    }
    out.push(v);

    let buckets = if *kind == DurationKind::Histogram {
        let f = cx
            .fetch(&base.with_metric(format!("{}_bucket", base.metric)))
            .await?;
        counters::bucket_increases(&f.series, cx.t0, cx.s)
    } else {
        Vec::new()
    };
    figures.buckets = buckets
        .iter()
        .copied()
        .filter(|(le, _)| le.is_finite())
        .collect();
    figures.bucket_total = buckets.last().map_or(0.0, |b| b.1);
    if units_wrong {
        out.push(cx.skipped("duration", "durations are in the wrong unit (see mean)"));
        out.push(cx.skipped("quantiles", "durations are in the wrong unit (see mean)"));
        return Ok(out);
    }
    match kind {
        DurationKind::Histogram => {
            out.push(check_distribution(cx, &buckets, base, figures.mean_s));
            out.push(check_quantiles(cx, &buckets, base));
        }
        DurationKind::Summary => {
            out.push(cx.skipped("duration", "a summary has no buckets to compare"));
            out.push(check_summary_quantiles(cx, base).await?);
        }
    }
    Ok(out)
}

/// Compares the server's and the client's latency distributions at each
/// server bucket bound.
fn check_distribution<M: MetricSource>(
    cx: &Context<'_, M>,
    buckets: &[(f64, f64)],
    base: &Selector,
    server_mean: Option<f64>,
) -> Verdict {
    let query = format!(
        "{}_bucket{}",
        base.metric,
        base.to_string().trim_start_matches(&base.metric)
    );
    let h = &cx.client.latency;
    let Some(&(_, total)) = buckets.last() else {
        let mut v = cx.verdict(
            "duration",
            Status::NoData,
            "no bucket series".into(),
            &query,
        );
        v.diagnosis = Some(format!(
            "`{}_bucket` has no series for these matchers",
            base.metric
        ));
        return v;
    };
    let n = h.len().max(1) as f64;
    let tol = cx.entry.tolerance.duration + cx.unsure() as f64 / n;
    let overhead_us = cx.entry.overhead.as_secs_f64() * 1e6;
    let mut slower: Option<(f64, f64, f64)> = None;
    let mut unmeasured: Option<(f64, f64, f64)> = None;
    for &(le, count) in buckets {
        if le.is_infinite() || total <= 0.0 {
            continue;
        }
        let sf = count / total;
        let le_us = le * 1e6;
        let low = client_fraction(h, le_us, false);
        let high = client_fraction(h, le_us + overhead_us, true);
        if sf + tol < low && slower.is_none_or(|(_, s, c)| c - s < low - sf) {
            slower = Some((le, sf, low));
        }
        if sf > high + tol && unmeasured.is_none_or(|(_, s, c)| s - c < sf - high) {
            unmeasured = Some((le, sf, high));
        }
    }
    let bounds = buckets.iter().filter(|(le, _)| le.is_finite()).count();
    if slower.is_none() && unmeasured.is_none() {
        return cx.verdict(
            "duration",
            Status::Pass,
            format!(
                "distributions agree at {bounds} bucket bound{} (client overhead allowed: {})",
                if bounds == 1 { "" } else { "s" },
                format_micros(overhead_us as u64)
            ),
            &query,
        );
    }
    let mut v = cx.verdict("duration", Status::Fail, String::new(), &query);
    if let Some((le, sf, cf)) = unmeasured {
        // The time outside the timer: the difference of the means, or
        // else how far the client's distribution must shift to reach the
        // server's fraction at this bound.
        let gap_us = match server_mean {
            Some(m) if !h.is_empty() => (h.mean() - m * 1e6).max(0.0),
            _ => {
                let (mut lo, mut hi) = (0.0_f64, 3.6e9_f64);
                for _ in 0..60 {
                    let mid = (lo + hi) / 2.0;
                    if client_fraction(h, le * 1e6 + mid, true) + tol >= sf {
                        hi = mid;
                    } else {
                        lo = mid;
                    }
                }
                hi
            }
        };
        v.summary = format!("at le={} server {}, client {}", secs(le), pct(sf), pct(cf));
        v.diagnosis = Some(format!(
            "at le={} s server {}, client {}: ~{} of each request is spent outside the server's timer (queueing before the handler, or a middleware that starts timing late)",
            le,
            pct(sf),
            pct(cf),
            format_micros(gap_us as u64)
        ));
    } else if let Some((le, sf, cf)) = slower {
        v.summary = format!("at le={} server {}, client {}", secs(le), pct(sf), pct(cf));
        v.diagnosis = Some(format!(
            "at le={le} s the server reports {} of requests, the client {}: the server says requests were slower than the client saw them (slower traffic from elsewhere in these series, or a unit mistake)",
            pct(sf),
            pct(cf)
        ));
    }
    v
}

fn check_quantiles<M: MetricSource>(
    cx: &Context<'_, M>,
    buckets: &[(f64, f64)],
    base: &Selector,
) -> Verdict {
    let query = format!(
        "{}_bucket{}",
        base.metric,
        base.to_string().trim_start_matches(&base.metric)
    );
    let h = &cx.client.latency;
    let mut parts = Vec::new();
    let mut warnings = Vec::new();
    let mut problems = Vec::new();
    for (label, q) in [("p50", 0.5), ("p95", 0.95), ("p99", 0.99)] {
        let Some((lo, hi)) = counters::bucket_of_quantile(buckets, q) else {
            continue;
        };
        let cq = client_quantile(h, q);
        parts.push(format!(
            "{label} client {} in server ({}, {}]",
            secs(cq),
            secs(lo),
            secs(hi)
        ));
        if hi.is_infinite() {
            warnings.push(format!(
                "server {label} only known as > {} (top finite bucket); add larger buckets",
                secs(lo)
            ));
        }
        if cq < lo * 0.998 {
            problems.push(format!(
                "the server puts its {label} above {}, the client measured {}: the server reports slower requests than the client saw",
                secs(lo),
                secs(cq)
            ));
        }
    }
    let mut v = cx.verdict(
        "quantiles",
        Status::pass_if(problems.is_empty()),
        parts.join(" · "),
        &query,
    );
    v.warnings = warnings;
    if !problems.is_empty() {
        v.diagnosis = Some(problems.join("; "));
    }
    v
}

async fn check_summary_quantiles<M: MetricSource>(
    cx: &Context<'_, M>,
    base: &Selector,
) -> Result<Verdict, SourceError> {
    let f = cx.fetch(base).await?;
    let h = &cx.client.latency;
    let mut parts = Vec::new();
    let mut problems = Vec::new();
    let mut by_q: BTreeMap<String, f64> = BTreeMap::new();
    for s in &f.series {
        if let (Some(q), Some((_, x))) = (s.labels.get("quantile"), s.samples.last())
            && x.is_finite()
        {
            let e = by_q.entry(q.clone()).or_insert(f64::MIN);
            *e = e.max(*x);
        }
    }
    for (q, server) in &by_q {
        let Ok(qv) = q.parse::<f64>() else { continue };
        let cq = client_quantile(h, qv);
        parts.push(format!(
            "q{q}: server {} / client {}",
            secs(*server),
            secs(cq)
        ));
        if *server > cq * 1.002 + 0.0005 {
            problems.push(format!(
                "q{q} server {} above client {}",
                secs(*server),
                secs(cq)
            ));
        }
    }
    let mut v = cx.verdict(
        "quantiles",
        if by_q.is_empty() {
            Status::NoData
        } else {
            Status::pass_if(problems.is_empty())
        },
        if parts.is_empty() {
            format!("no quantile series for `{base}`")
        } else {
            parts.join(" · ")
        },
        &base.to_string(),
    );
    v.warnings.push(
        "summary quantiles cover the exporter's own window, not exactly this run, and cannot be aggregated across instances".into(),
    );
    if !problems.is_empty() {
        v.diagnosis = Some(format!(
            "{}: the server reports slower requests than the client saw (other traffic, or time before the run)",
            problems.join("; ")
        ));
    }
    Ok(v)
}
