//! The latency checks: the server's mean against the client's (and the
//! unit mistakes a large ratio reveals), the server's and the client's
//! distributions compared at every bucket bound, the bucket holding each
//! server quantile against the client's quantile, and a summary's own
//! quantiles.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use super::{Context, pct, secs, thousands};
use crate::metrics::{Fetch, MetricSource, SourceError};
use crate::promql::Selector;
use crate::scenario::units::format_micros;
use crate::verify::LOOKBACK_MS;
use crate::verify::convention::{DurationKind, unit_name};
use crate::verify::counters;
use crate::verify::timeline;
use crate::verify::{ServerFigures, Status, Verdict};

/// The fraction of client latencies at or below `us`; `upper` chooses
/// the side of HDR's rounding (0.1 %) that favours the server.
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

/// Requests the distribution comparison allows beyond its tolerance.
const STRAY_REQUESTS: f64 = 2.0;

/// The client's latency at quantile `q`, in seconds (0 with no data).
fn client_quantile(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1e6
    }
}

pub(super) async fn check_duration<M: MetricSource>(
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
    let unit = cx.names.duration_unit;
    let (count, n_count) = sum_of(&cx.fetch(&count_sel).await?);
    let (sum, _) = sum_of(&cx.fetch(&sum_sel).await?);
    let sum = sum * unit;
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
    if h.is_empty() {
        // Compared with nothing, any mean looks like a unit mistake.
        let mut v = cx.verdict(
            "mean",
            Status::NoData,
            format!("server mean {}, no client responses", secs(server_mean)),
            &format!("{sum_sel} / {count_sel}"),
        );
        v.diagnosis = Some(
            "the client got no responses (every request failed or was cut off): there is no client latency to compare the server's with".into(),
        );
        out.push(v);
        return Ok(out);
    }

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
    let responses = h.len() as f64;
    if responses >= 10.0 && count >= 1.5 * (responses + cx.unsure() as f64) {
        v.warnings.push(format!(
            "the duration metric observed {} durations for {} responses (×{:.1}): the library times some requests more than once (django-prometheus 2.5 records a view that raises in both process_exception and process_response); the distribution is compared as exported",
            thousands(count),
            thousands(responses),
            count / responses
        ));
    }
    let declared = unit_name(unit);
    if !mean_ok {
        v.diagnosis = Some(if units_wrong && fits(server_mean / 1e3) {
            format!(
                "server mean {server_mean:.4} vs client {client_mean:.4} s (×{ratio:.0}); divided by 1,000 it fits: {} exported as {declared}",
                unit_name(unit * 1e-3)
            )
        } else if units_wrong && fits(server_mean / 1e6) {
            format!(
                "server mean {server_mean:.4} vs client {client_mean:.6} s (×{ratio:.0}); divided by 1,000,000 it fits: {} exported as {declared}",
                unit_name(unit * 1e-6)
            )
        } else if units_wrong {
            format!(
                "server mean {server_mean:.4} vs client {client_mean:.4} s (×{ratio:.0}): the server's durations are not in {declared}"
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
        let intervals = timeline::intervals(cx.t0, cx.t1, cx.interval_ms);
        if figures.timeline.len() == intervals.len() {
            timeline::add_p95(&mut figures.timeline, &f.series, unit, &intervals);
        }
        counters::bucket_increases(&f.series, cx.t0, cx.s)
            .into_iter()
            .map(|(le, n)| (le * unit, n))
            .collect()
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
            out.push(check_summary_means(cx, base, server_mean, client_mean));
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
    if total <= 0.0 {
        // Nothing to compare: passing here would vouch for a histogram
        // that recorded none of this traffic.
        let mut v = cx.verdict(
            "duration",
            Status::NoData,
            "the bucket series did not grow".into(),
            &query,
        );
        v.diagnosis = Some(format!(
            "`{}_bucket` did not grow during the run, though the client got {} responses: the histogram recorded none of this traffic",
            base.metric,
            thousands(h.len() as f64)
        ));
        return v;
    }
    let n = h.len().max(1) as f64;
    // Beyond the tolerance, room for a stray request or two: a client on
    // a busy machine delays one now and then by a scheduler tick, which
    // in a small sample is more than 1% (1 request of 65 is 1.5%).
    let tol = cx.entry.tolerance.duration + (cx.unsure() as f64 + STRAY_REQUESTS) / n;
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
            "at le={} s server {}, client {}: ~{} of each request is spent outside the server's timer (queueing before the handler, a middleware that starts timing late, or a response written in pieces on a socket without TCP_NODELAY)",
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
    if buckets.is_empty() {
        return cx.skipped("quantiles", "no bucket series (see duration)");
    }
    if buckets.last().is_some_and(|b| b.1 <= 0.0) {
        return cx.skipped("quantiles", "the bucket series did not grow (see duration)");
    }
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

/// A summary has no buckets: the time spent outside the server's timer
/// shows in the means, which cover exactly the run (increases of `_sum`
/// and `_count`), unlike its quantiles.
fn check_summary_means<M: MetricSource>(
    cx: &Context<'_, M>,
    base: &Selector,
    server_mean: f64,
    client_mean: f64,
) -> Verdict {
    let overhead = cx.entry.overhead.as_secs_f64();
    let tol = cx.entry.tolerance.duration;
    let gap = client_mean - server_mean;
    let ok = server_mean + overhead >= client_mean * (1.0 - tol) - 0.0005;
    let mut v = cx.verdict(
        "duration",
        Status::pass_if(ok),
        format!(
            "client mean {} − server mean {} = {} (client overhead allowed: {})",
            secs(client_mean),
            secs(server_mean),
            secs(gap.max(0.0)),
            secs(overhead)
        ),
        &format!(
            "{0}_sum{1} / {0}_count{1}",
            base.metric,
            base.to_string().trim_start_matches(&base.metric)
        ),
    );
    if !ok {
        v.diagnosis = Some(format!(
            "server mean {} vs client mean {}: ~{} of each request is spent outside the server's timer, more than the {} the client may add (queueing before a worker picks the request up, e.g. a listen backlog with every worker busy, or a middleware that starts timing late)",
            secs(server_mean),
            secs(client_mean),
            secs(gap),
            secs(overhead)
        ));
    }
    v
}

/// How long client_golang's summaries (statsd_exporter's timers) keep
/// observations for their quantiles by default: `DefMaxAge`.
const SUMMARY_WINDOW_MS: i64 = 10 * 60 * 1000;

/// The rank error of a summary quantile: statsd_exporter's default
/// objectives (0.5±0.05, 0.9±0.01, 0.99±0.001); others get 0.01.
fn rank_error(q: f64) -> f64 {
    [(0.5, 0.05), (0.9, 0.01), (0.99, 0.001)]
        .iter()
        .find(|(x, _)| (x - q).abs() < 1e-9)
        .map_or(0.01, |(_, e)| *e)
}

/// Compares a summary's quantiles with the client's within what they can
/// mean: a value whose rank in the summary's window is within the
/// objective's error of q, where the window may also hold observations
/// from before the run. A server quantile above the slowest client value
/// such a rank allows reports slower requests than the client saw.
async fn check_summary_quantiles<M: MetricSource>(
    cx: &Context<'_, M>,
    base: &Selector,
) -> Result<Verdict, SourceError> {
    let unit = cx.names.duration_unit;
    let f = cx.fetch(base).await?;
    let h = &cx.client.latency;
    let mut by_q: BTreeMap<String, f64> = BTreeMap::new();
    let mut empty_window = false;
    for s in &f.series {
        let Some(q) = s.labels.get("quantile") else {
            continue;
        };
        match s.samples.iter().rev().find(|(t, _)| *t <= cx.s) {
            Some((_, x)) if x.is_finite() => {
                let e = by_q.entry(q.clone()).or_insert(f64::MIN);
                *e = e.max(*x * unit);
            }
            // client_golang writes NaN when the window holds nothing.
            Some(_) => empty_window = true,
            None => {}
        }
    }
    // Observations in the window from before the run: the `_count` at T0
    // minus its value when the window began (all of it when no sample is
    // that old).
    let count_sel = base.with_metric(format!("{}_count", base.metric));
    let window_start = cx.s - SUMMARY_WINDOW_MS;
    let counts = cx
        .source
        .samples(&count_sel, window_start.min(cx.t0 - LOOKBACK_MS) - 1, cx.s)
        .await?;
    let (mut before, mut during) = (0.0, 0.0);
    for s in &counts.series {
        let at = |t: i64| {
            s.samples
                .iter()
                .rev()
                .find(|(st, v)| *st <= t && v.is_finite())
                .map(|(_, v)| *v)
        };
        let at_t0 = at(cx.t0).unwrap_or(0.0);
        let at_start = at(window_start).unwrap_or(0.0).min(at_t0);
        before += at_t0 - at_start;
        if let Some(i) = counters::increase(s, cx.t0, cx.s) {
            during += i.delta;
        }
    }
    let window = before + during;
    let mut parts = Vec::new();
    let mut problems = Vec::new();
    let mut unbounded = Vec::new();
    for (q, server) in &by_q {
        let Ok(qv) = q.parse::<f64>() else { continue };
        let cq = client_quantile(h, qv);
        parts.push(format!(
            "q{q}: server {} / client {}",
            secs(*server),
            secs(cq)
        ));
        if during <= 0.0 {
            continue;
        }
        // The highest rank among the run's observations the server's
        // value may have.
        let top = (qv + rank_error(qv)) * window / during;
        if top >= 1.0 {
            unbounded.push(format!("q{q}"));
            continue;
        }
        let slowest = client_quantile(h, top);
        if *server > slowest * 1.002 + 0.0005 {
            problems.push(format!(
                "q{q} server {} above client {} (the client's value at rank {:.3}, the highest q{q}±{} allows{})",
                secs(*server),
                secs(slowest),
                top,
                rank_error(qv),
                if before > 0.0 {
                    format!(
                        " with {} observations from before the run in the window",
                        thousands(before)
                    )
                } else {
                    String::new()
                }
            ));
        }
    }
    let status = if by_q.is_empty() {
        Status::NoData
    } else if !problems.is_empty() {
        Status::Fail
    } else if unbounded.len() == by_q.len() {
        Status::Skipped
    } else {
        Status::Pass
    };
    let mut v = cx.verdict(
        "quantiles",
        status,
        if parts.is_empty() {
            format!(
                "no quantile series for `{base}`{}",
                if empty_window {
                    " (NaN: the summary's window holds no observations)"
                } else {
                    ""
                }
            )
        } else {
            parts.join(" · ")
        },
        &base.to_string(),
    );
    v.warnings.push(format!(
        "summary quantiles cover the exporter's own 10-minute window ({} observations, {} from before the run) with rank error (q0.5±0.05, q0.9±0.01, q0.99±0.001), and cannot be aggregated across instances",
        thousands(window),
        thousands(before)
    ));
    if !unbounded.is_empty() {
        v.warnings.push(format!(
            "{} not compared: the window holds so many observations from before the run that any value is possible",
            unbounded.join(", ")
        ));
    }
    if !problems.is_empty() {
        v.diagnosis = Some(format!(
            "{}: the server reports slower requests than the client saw (other traffic in the series, or a timer that includes work after the response)",
            problems.join("; ")
        ));
    }
    Ok(v)
}
