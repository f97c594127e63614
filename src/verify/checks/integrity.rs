//! The checks that decide whether the server's series can be trusted at
//! all, before anything is counted from them: the explanation when no
//! series matches (preflight), counter drops told apart as worker
//! registries, registry resets or process restarts (resets), and samples
//! that are stale or values that stopped changing (freshness).

use std::collections::BTreeSet;

use super::{Context, is_http_5xx, secs, thousands};
use crate::metrics::{MetricSource, Series, SourceError, TargetStatus};
use crate::promql::Selector;
use crate::verify::counters::{self, Increase};
use crate::verify::{Status, Verdict};

/// Says why nothing matched: which label values do exist. Returns the
/// (summary, diagnosis) and whether the metric is exported at all.
pub(super) async fn explain_no_series<M: MetricSource>(
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
pub(super) async fn check_resets<M: MetricSource>(
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
    let starts = start_times(cx, series).await?;
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
    // A `_created` that never moved cannot tell a reset from another
    // registry.
    let sawtooth = if created.is_empty() || back + forward == 0 {
        None
    } else {
        Some(back > 0)
    };
    v.diagnosis = Some(match (starts, sawtooth) {
        (StartTimes { flips, .. }, _) if flips > 0 => format!(
            "counters drop and climb back while process_start_time_seconds flips between values {flips}×: scrapes hit different worker processes, each with its own registry (gunicorn/uwsgi workers); use the client library's multiprocess mode or aggregate before exporting"
        ),
        (StartTimes { restarts: r, .. }, _) if r > 0 => format!(
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

/// What `process_start_time_seconds` did on the instances of `series`
/// during the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct StartTimes {
    /// Changes to a start time not seen before: a new process.
    restarts: usize,
    /// Changes back to a start time already seen: several processes
    /// answer the same page in turn, each with its own start time.
    flips: usize,
}

async fn start_times<M: MetricSource>(
    cx: &Context<'_, M>,
    series: &[(Series, Increase)],
) -> Result<StartTimes, SourceError> {
    let f = cx
        .fetch(&Selector::new("process_start_time_seconds", Vec::new()))
        .await?;
    let instances: BTreeSet<&String> = series
        .iter()
        .filter_map(|(s, _)| s.labels.get("instance"))
        .collect();
    let mut out = StartTimes::default();
    for p in f.series.iter().filter(|p| {
        p.labels
            .get("instance")
            .is_some_and(|i| instances.contains(i))
    }) {
        for (i, w) in p.samples.windows(2).enumerate() {
            if w[1].0 <= cx.t0 || w[1].1 == w[0].1 {
                continue;
            }
            if p.samples[..=i].iter().any(|(_, v)| *v == w[1].1) {
                out.flips += 1;
            } else {
                out.restarts += 1;
            }
        }
    }
    Ok(out)
}

pub(super) fn check_freshness<M: MetricSource>(
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
