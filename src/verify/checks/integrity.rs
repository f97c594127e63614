//! The checks that decide whether the server's series can be trusted at
//! all, before anything is counted from them: the explanation when no
//! series matches (preflight), counter drops told apart as worker
//! registries, registry resets or process restarts (resets), and samples
//! that are stale or values that stopped changing (freshness).

use std::collections::BTreeSet;

use super::{Context, is_http_5xx, secs, thousands};
use crate::metrics::{MetricSource, Series, SourceError, TargetStatus};
use crate::promql::{Matcher, Selector};
use crate::verify::counters::{self, Increase};
use crate::verify::{Status, Verdict};

/// Why no series matched, and what the family holds instead.
pub(super) struct NoSeries {
    pub summary: String,
    pub diagnosis: String,
    /// The metric is exported on the entry's targets for other label
    /// values: a series matches every matcher but one (never `job` or
    /// `instance`), so this request's zero is a finding, not a typo.
    pub exported: bool,
    /// `(job, instance)` of the family's series on the entry's targets.
    pub targets: BTreeSet<(String, String)>,
}

/// Whether a matcher picks the target rather than the request.
fn scopes_target(m: &Matcher) -> bool {
    m.label == "job" || m.label == "instance"
}

/// Says why nothing matched: which label values do exist, honouring
/// every other matcher (`job` included).
pub(super) async fn explain_no_series<M: MetricSource>(
    cx: &Context<'_, M>,
    sel: &Selector,
) -> Result<NoSeries, SourceError> {
    let family = cx
        .fetch(&Selector::new(sel.metric.clone(), Vec::new()))
        .await?;
    let summary = format!("no series for `{sel}`");
    let alternative = cx
        .names
        .fallback
        .as_ref()
        .map(|f| format!(" (nor `{}`)", f.requests.metric))
        .unwrap_or_default();
    if family.series.is_empty() {
        return Ok(NoSeries {
            summary,
            diagnosis: format!(
                "no series of `{}`{alternative} at all: the service is not scraped ({}), or it does not export the {} convention's metrics",
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
            exported: false,
            targets: BTreeSet::new(),
        });
    }
    let on_target: Vec<&Series> = family
        .series
        .iter()
        .filter(|s| {
            sel.matchers
                .iter()
                .filter(|m| scopes_target(m))
                .all(|m| m.matches(&s.labels))
        })
        .collect();
    let values = |series: &[&Series], label: &str| -> Vec<String> {
        let set: BTreeSet<&str> = series
            .iter()
            .filter_map(|s| s.labels.get(label).map(String::as_str))
            .collect();
        set.into_iter().take(20).map(str::to_owned).collect()
    };
    if on_target.is_empty() {
        let scope: Vec<String> = sel
            .matchers
            .iter()
            .filter(|m| scopes_target(m))
            .map(ToString::to_string)
            .collect();
        let jobs = values(&family.series.iter().collect::<Vec<_>>(), "job");
        return Ok(NoSeries {
            summary,
            diagnosis: format!(
                "`{}` is exported, but not by {{{}}} (found job: {}): that target exports other metric names, or is not scraped",
                sel.metric,
                scope.join(","),
                if jobs.is_empty() {
                    "none".to_owned()
                } else {
                    jobs.join(", ")
                }
            ),
            exported: false,
            targets: BTreeSet::new(),
        });
    }
    let all_but = |s: &Series, skip: usize| {
        sel.matchers
            .iter()
            .enumerate()
            .all(|(j, m)| j == skip || m.matches(&s.labels))
    };
    let exported: Vec<&Series> = on_target
        .iter()
        .copied()
        .filter(|s| {
            sel.matchers
                .iter()
                .enumerate()
                .any(|(i, m)| !scopes_target(m) && all_but(s, i))
        })
        .collect();
    let mut found = Vec::new();
    for (i, m) in sel.matchers.iter().enumerate() {
        if scopes_target(m) {
            continue;
        }
        let near: Vec<&Series> = on_target
            .iter()
            .copied()
            .filter(|s| all_but(s, i))
            .collect();
        let list = values(if near.is_empty() { &on_target } else { &near }, &m.label);
        found.push(if list.is_empty() {
            format!("no series has a `{}` label", m.label)
        } else {
            format!("found {}: {}", m.label, list.join(", "))
        });
    }
    if found.is_empty() {
        found.push(format!(
            "{} series of `{}` on the target, none with a usable value",
            on_target.len(),
            sel.metric
        ));
    }
    let errors: u64 = cx
        .client
        .by_status
        .iter()
        .filter(|(k, _)| is_http_5xx(k))
        .map(|(_, n)| n)
        .sum();
    let mut diagnosis = found.join("; ");
    if !exported.is_empty() && errors > 0 && errors == cx.client.responses {
        diagnosis = format!(
            "every response the client got was a 5xx and the server counted none of them: exceptions bypass the metrics middleware, or the matcher is wrong ({diagnosis})"
        );
    }
    Ok(NoSeries {
        summary,
        diagnosis,
        exported: !exported.is_empty(),
        targets: exported.iter().map(|s| target_of(s)).collect(),
    })
}

/// `(job, instance)` of a series.
pub(super) fn target_of(s: &Series) -> (String, String) {
    (
        s.labels.get("job").cloned().unwrap_or_default(),
        s.labels.get("instance").cloned().unwrap_or_default(),
    )
}

/// Preflight for series that exist but hold no number: NaN or ±Inf on
/// the page.
pub(super) fn check_non_finite<M: MetricSource>(
    cx: &Context<'_, M>,
    matched: &[Series],
    query: &str,
) -> Option<Verdict> {
    let bad: Vec<(&Series, usize)> = matched
        .iter()
        .map(|s| (s, counters::non_finite(s, cx.s)))
        .filter(|(_, n)| *n > 0)
        .collect();
    let (first, _) = *bad.first()?;
    let shown = |v: f64| {
        if v.is_nan() {
            "NaN".to_owned()
        } else if v > 0.0 {
            "+Inf".to_owned()
        } else {
            "-Inf".to_owned()
        }
    };
    let kinds: BTreeSet<String> = bad
        .iter()
        .flat_map(|(s, _)| s.samples.iter().filter(|(_, v)| !v.is_finite()))
        .map(|(_, v)| shown(*v))
        .collect();
    let kinds: Vec<String> = kinds.into_iter().collect();
    let samples: usize = bad.iter().map(|(_, n)| n).sum();
    let mut v = cx.verdict(
        "preflight",
        Status::Fail,
        format!(
            "{} of {} series hold {} ({samples} sample{})",
            bad.len(),
            matched.len(),
            kinds.join(" and "),
            if samples == 1 { "" } else { "s" }
        ),
        query,
    );
    v.diagnosis = Some(format!(
        "`{}` is {} on the page: a counter must be a finite count, so the exporter wrote something else (a float overflow, a division by zero, or a gauge exported as a counter) and no increase can be read from it",
        first.describe(),
        kinds.join(" or ")
    ));
    Some(v)
}

/// Looks for drops in every series of the counter on the same targets:
/// a page answered by several worker registries, or reset, shows it in
/// all its series, including ones that saw little traffic. A series that
/// vanishes from a page that is still scraped counts as a reset too.
/// Every series of the request counter's family on the instances of
/// `series` (the same pages), with their increases; `series` itself
/// when the family finds nothing more.
pub(super) async fn family_on_targets<M: MetricSource>(
    cx: &Context<'_, M>,
    series: &[(Series, Increase)],
) -> Result<Vec<(Series, Increase)>, SourceError> {
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
    Ok(if family.is_empty() {
        series.to_vec()
    } else {
        family
    })
}

pub(super) async fn check_resets<M: MetricSource>(
    cx: &Context<'_, M>,
    series: &[(Series, Increase)],
    family: &[(Series, Increase)],
    query: &str,
) -> Result<Verdict, SourceError> {
    let instances: BTreeSet<&String> = series
        .iter()
        .filter_map(|(s, _)| s.labels.get("instance"))
        .collect();
    let family_sel = Selector::new(cx.names.requests.metric.clone(), Vec::new());
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
    let duplicated: Vec<&(Series, Increase)> =
        family.iter().filter(|(_, i)| i.duplicates > 0).collect();
    if let Some((first, inc)) = duplicated.first() {
        let mut v = cx.verdict(
            "resets",
            Status::Fail,
            format!(
                "{} series appear more than once on the same page with different values",
                duplicated.len()
            ),
            query,
        );
        v.diagnosis = Some(format!(
            "`{}` is duplicated on the page ({} scrape{} held it twice with different values): two collectors or registries export the same series; Prometheus keeps the first copy and drops the rest (\"duplicate sample for timestamp\"), so which count is read depends on the order on the page. This is not a registry reset: unregister the duplicate collector",
            first.describe(),
            inc.duplicates,
            if inc.duplicates == 1 { "" } else { "s" }
        ));
        return Ok(v);
    }
    let starts = start_times(cx, series).await?;
    if drops + vanished == 0 {
        // A restarted process whose counters climbed past their last
        // scraped values before the next scrape shows no drop, yet the
        // increase over the run starts again from its new zero: what the
        // old process had counted is lost, if it had counted anything.
        let counted_before = |target: &(String, String), at: i64| {
            series.iter().any(|(s, _)| {
                target_of(s) == *target
                    && s.samples
                        .iter()
                        .take_while(|(t, _)| *t < at)
                        .last()
                        .is_some_and(|&(_, v)| v > 0.0)
            })
        };
        let lost: Vec<&UnseenRestart> = starts
            .unseen
            .iter()
            .filter(|u| counted_before(&u.target, u.first_scrape_ms))
            .collect();
        // A process that started before the run but was first scraped
        // after its start: the run's baseline is the old process's count.
        if !lost.is_empty() && lost.iter().all(|u| u.before_run) {
            let mut v = cx.verdict(
                "resets",
                Status::Fail,
                format!("no counter drops in {scrapes} scrape intervals{in_family}, but the process was replaced just before the run"),
                query,
            );
            v.diagnosis = Some(
                "a new process started just before the run (process_start_time_seconds changed at the first scrape after the start) and its counters climbed past the old process's last scraped values, so no drop shows: the baseline at the run's start is the old process's count, and the increase over the run misses it; start the load once the service has been scraped since it started".to_owned(),
            );
            return Ok(v);
        }
        let r = lost.len();
        if r > 0 {
            let mut v = cx.verdict(
                "resets",
                Status::Fail,
                format!("no counter drops in {scrapes} scrape intervals{in_family}, but the process restarted {r}× during the run"),
                query,
            );
            v.diagnosis = Some(format!(
                "the process restarted {r}× during the run (process_start_time_seconds changed) and its counters climbed past their last scraped values before the next scrape, so no drop shows: every request it counted before the restart is lost to the increase over the run"
            ));
            return Ok(v);
        }
        return Ok(cx.verdict(
            "resets",
            Status::Pass,
            format!("no counter drops in {scrapes} scrape intervals{in_family}"),
            query,
        ));
    }
    let sawtooth_drops: usize = family.iter().map(|(_, i)| i.sawtooth_drops).sum();
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
                        // A registry created before the previous scrape
                        // was already there: another worker's, even when
                        // its time is later than the one before.
                        let existed = w[1].1 * 1000.0 < w[0].0 as f64;
                        w[1].0 > cx.t0
                            && if back {
                                w[1].1 < w[0].1 || (w[1].1 > w[0].1 && existed)
                            } else {
                                w[1].1 > w[0].1 && !existed
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
        (StartTimes { flips, values, .. }, _) if flips > 0 => format!(
            "counters drop and climb back while process_start_time_seconds flips between values {flips}× ({values} processes, each already running at the scrape before): scrapes hit different worker processes, each with its own registry (gunicorn/uwsgi workers); use the client library's multiprocess mode or aggregate before exporting"
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct StartTimes {
    /// Changes to a start time later than every one seen before and
    /// later than the previous scrape: a process that started since.
    restarts: usize,
    /// Changes to a process that was already running at the previous
    /// scrape (a start time seen before, older than one seen before, or
    /// older than that scrape): several processes answer the same page
    /// in turn, each with its own start time. A restart only moves the
    /// start time forward, past the last scrape.
    flips: usize,
    /// Distinct start times seen.
    values: usize,
    /// The restarts on targets whose start time never flipped.
    unseen: Vec<UnseenRestart>,
}

/// A restart `start_times` found, on a target whose start time never
/// flipped between processes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UnseenRestart {
    target: (String, String),
    /// The first scrape of the new process.
    first_scrape_ms: i64,
    /// The new process started before the run (and was first scraped
    /// after its start).
    before_run: bool,
}

async fn start_times<M: MetricSource>(
    cx: &Context<'_, M>,
    series: &[(Series, Increase)],
) -> Result<StartTimes, SourceError> {
    let f = cx
        .fetch(&Selector::new("process_start_time_seconds", Vec::new()))
        .await?;
    // The same job and instance: another job's process (a sidecar) on
    // the same host is not this service's.
    let targets: BTreeSet<(String, String)> = series.iter().map(|(s, _)| target_of(s)).collect();
    let mut out = StartTimes::default();
    // Every restart, and the targets whose start time ever flipped.
    let mut restarts: Vec<UnseenRestart> = Vec::new();
    let mut flipped: BTreeSet<(String, String)> = BTreeSet::new();
    for p in f
        .series
        .iter()
        .filter(|p| p.labels.contains_key("instance") && targets.contains(&target_of(p)))
    {
        let mut seen: Vec<f64> = Vec::new();
        for (i, w) in p.samples.windows(2).enumerate() {
            let ((prev_t, prev), (t, now)) = (w[0], w[1]);
            if i == 0 {
                seen.push(prev);
            }
            let new_value = !seen.contains(&now);
            if new_value {
                seen.push(now);
            }
            if t <= cx.t0 || now == prev {
                continue;
            }
            let newest_before = p.samples[..=i]
                .iter()
                .map(|(_, v)| *v)
                .fold(f64::MIN, f64::max);
            // Linux gives the boot time in whole seconds, so a start time
            // may read up to a second early.
            let started_after_last_scrape = now * 1000.0 > (prev_t - 1000) as f64;
            if new_value && now > newest_before && started_after_last_scrape {
                out.restarts += 1;
                restarts.push(UnseenRestart {
                    target: target_of(p),
                    first_scrape_ms: t,
                    // A start time may read a second early (above).
                    before_run: now * 1000.0 + 1000.0 < cx.t0 as f64,
                });
            } else {
                out.flips += 1;
                flipped.insert(target_of(p));
            }
        }
        out.values += seen.len();
    }
    out.unseen = restarts
        .into_iter()
        .filter(|r| !flipped.contains(&r.target))
        .collect();
    Ok(out)
}

/// The freshness diagnosis of a page whose values stopped changing.
pub(super) const FROZEN: &str = "the metrics endpoint stopped updating while the service kept serving: a cached or frozen exporter (samples are fresh, their values are not)";

pub(super) fn check_freshness<M: MetricSource>(
    cx: &Context<'_, M>,
    series: &[(Series, Increase)],
    family: &[(Series, Increase)],
    query: &str,
) -> (Verdict, Option<i64>) {
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
        return (v, None);
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
    // The page kept changing elsewhere: not a frozen endpoint. These
    // series stopped because their traffic no longer reaches what the
    // scrapes read (another worker's registry); the count says how much.
    let page_since = family
        .iter()
        .map(|(_, i)| i.settled_since_ms)
        .max()
        .unwrap_or(since);
    let page_frozen = page_since <= since + cx.interval_ms;
    let stopped =
        later > cx.unsure() + cx.entry.tolerance.count.of(cx.client.responses) && later > 0;
    if stopped && !page_frozen {
        let mut v = cx.verdict(
            "freshness",
            Status::Pass,
            format!(
                "newest samples {} after the load ended",
                secs((oldest.1.newest_ms - cx.t1) as f64 / 1000.0)
            ),
            query,
        );
        v.warnings.push(format!(
            "these counters stopped changing at T0+{:.1}s though the client completed {} requests after that, while other series of the page kept changing (see count)",
            (since - cx.t0) as f64 / 1000.0,
            thousands(later as f64)
        ));
        return (v, None);
    }
    if stopped {
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
        v.diagnosis = Some(FROZEN.into());
        return (v, Some(since));
    }
    let v = cx.verdict(
        "freshness",
        Status::Pass,
        format!(
            "newest samples {} after the load ended",
            secs((oldest.1.newest_ms - cx.t1) as f64 / 1000.0)
        ),
        query,
    );
    (v, None)
}
