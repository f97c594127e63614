//! Reasoning across the requests of one target, after each entry has
//! been checked on its own. A fault of the page (it stopped updating) or
//! of the scrape (it reads one worker's registry of several) shows in
//! every request of the target, often differently: a request whose series
//! were never created has none, one with series has too few. Read one at
//! a time they get contradicting causes ("exceptions bypass the
//! middleware", "NO DATA"), and which request is blamed for what depends
//! on the order. Here the cause found on any request of the target is
//! given to all of them, and the checks whose premise it refutes are
//! skipped.

use std::collections::BTreeSet;

use super::{Checked, thousands};
use crate::verify::{Status, Verdict};

/// Groups of entries whose series live on a common target.
fn groups(results: &[Checked]) -> Vec<Vec<usize>> {
    let mut group: Vec<usize> = (0..results.len()).collect();
    fn root(g: &mut [usize], mut i: usize) -> usize {
        while g[i] != i {
            g[i] = g[g[i]];
            i = g[i];
        }
        i
    }
    for i in 0..results.len() {
        for j in i + 1..results.len() {
            let (a, b) = (&results[i].facts.targets, &results[j].facts.targets);
            if !a.is_disjoint(b) {
                let (ri, rj) = (root(&mut group, i), root(&mut group, j));
                group[rj] = ri;
            }
        }
    }
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut roots: Vec<usize> = Vec::new();
    for i in 0..results.len() {
        let r = root(&mut group, i);
        match roots.iter().position(|x| *x == r) {
            Some(k) => out[k].push(i),
            None => {
                roots.push(r);
                out.push(vec![i]);
            }
        }
    }
    out
}

fn find<'a>(r: &'a mut Checked, check: &str) -> Option<&'a mut Verdict> {
    r.verdicts.iter_mut().find(|v| v.check == check)
}

fn status_of(r: &Checked, check: &str) -> Option<Status> {
    r.verdicts
        .iter()
        .find(|v| v.check == check)
        .map(|v| v.status)
}

/// Replaces the verdict of `check` (or appends it).
fn put(r: &mut Checked, v: Verdict) {
    match r.verdicts.iter_mut().find(|x| x.check == v.check) {
        Some(x) => *x = v,
        None => r.verdicts.push(v),
    }
}

fn skip(r: &mut Checked, check: &str, why: &str) {
    if let Some(v) = find(r, check) {
        v.status = Status::Skipped;
        v.summary = why.to_owned();
        v.diagnosis = None;
        v.warnings.clear();
    }
}

fn targets_text(t: &BTreeSet<(String, String)>) -> String {
    t.iter()
        .map(|(job, instance)| {
            if job.is_empty() {
                format!("instance=\"{instance}\"")
            } else {
                format!("job=\"{job}\" instance=\"{instance}\"")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Gives every request of a target the cause found on any of them.
pub(in crate::verify) fn reconcile(results: &mut [Checked], t0: i64, interval_ms: i64) {
    for g in groups(results) {
        frozen(results, &g, t0, interval_ms);
        one_worker(results, &g);
        absent_together(results, &g);
    }
}

/// A page that stopped updating: every request of the target whose
/// client completed responses after the freeze gets the freshness
/// failure, whether its series were frozen, absent from the frozen copy,
/// or counted as zero from it.
fn frozen(results: &mut [Checked], group: &[usize], t0: i64, interval_ms: i64) {
    let Some((source, since)) = group
        .iter()
        .filter_map(|&i| results[i].facts.frozen_since.map(|s| (i, s)))
        .min_by_key(|(_, s)| *s)
    else {
        return;
    };
    let source_name = results[source].client.name.clone();
    let when = if since <= t0 {
        "before the load started".to_owned()
    } else {
        format!("T0+{:.1}s", (since - t0) as f64 / 1000.0)
    };
    for &i in group {
        let r = &mut results[i];
        if r.facts.frozen_since.is_some() {
            continue;
        }
        // The page is known to be frozen since `since`: this request is
        // affected when its client completed responses after that and its
        // own series (if any) did not move after it either.
        let later: u64 = r
            .client
            .windows
            .iter()
            .filter(|(end, _)| end - 1000 >= since)
            .map(|(_, n)| n)
            .sum();
        let still_moving = r
            .facts
            .settled_since
            .is_some_and(|t| t > since + interval_ms);
        let failed = r.verdicts.iter().any(|v| v.status.failed());
        if later == 0 || later <= r.slack || !failed || still_moving {
            continue;
        }
        // A resets failure is a cause of its own: leave it.
        if status_of(r, "resets").is_some_and(Status::failed) {
            continue;
        }
        let template = r.verdicts[0].clone();
        let absent = status_of(r, "preflight").is_some_and(|s| s != Status::Pass);
        if absent && let Some(p) = find(r, "preflight") {
            p.status = Status::Skipped;
            p.summary = format!(
                "{}, on a page that stopped updating {when} (see freshness)",
                p.summary
            );
            p.diagnosis = None;
        }
        put(
            r,
            Verdict {
                check: "freshness".into(),
                status: Status::Fail,
                summary: format!(
                    "the target's metrics stopped changing {when} (see {source_name}.freshness) though the client completed {} of these requests after that",
                    thousands(later as f64)
                ),
                diagnosis: Some(format!(
                    "{}{}",
                    super::integrity::FROZEN,
                    if absent {
                        ": this request's series are not in the frozen copy"
                    } else {
                        ""
                    }
                )),
                warnings: Vec::new(),
                ..template
            },
        );
        // Keep the usual order: preflight, resets, freshness, then the
        // checks that count.
        let order = |c: &str| match c {
            "preflight" => 0,
            "resets" => 1,
            "freshness" => 2,
            _ => 3,
        };
        r.verdicts.sort_by_key(|v| order(&v.check));
        r.verdicts
            .retain(|v| !matches!(v.check.as_str(), "mean" | "quantiles"));
        for check in ["count", "errors", "duration"] {
            let why = "the metrics are not fresh (see freshness)";
            if find(r, check).is_some() {
                skip(r, check, why);
            } else {
                let mut v = r.verdicts[0].clone();
                v.check = check.into();
                v.status = Status::Skipped;
                v.summary = why.into();
                v.diagnosis = None;
                v.query = String::new();
                v.warnings.clear();
                r.verdicts.push(v);
            }
        }
        r.figures.count = None;
        r.figures.errors = None;
        r.figures.by_status.clear();
        r.figures.mean_s = None;
        r.figures.buckets.clear();
        r.figures.bucket_total = 0.0;
        r.facts.server_count = None;
    }
}

/// Scrapes that always read one of N worker registries (one keep-alive
/// connection pinned to one worker): the server counts about 1/N of the
/// target's traffic. Per request the share varies with where the
/// client's connections landed, down to none at all, so the fraction is
/// read across the target's requests.
fn one_worker(results: &mut [Checked], group: &[usize]) {
    let counted: Vec<usize> = group
        .iter()
        .copied()
        .filter(|&i| results[i].facts.server_count.is_some() && !results[i].facts.absent)
        .collect();
    let server: f64 = counted
        .iter()
        .map(|&i| results[i].facts.server_count.unwrap_or(0.0))
        .sum();
    let client: f64 = counted
        .iter()
        .map(|&i| results[i].client.responses as f64)
        .sum();
    // Every request counted short, none over.
    let all_short = counted.iter().all(|&i| {
        let r = &results[i];
        r.facts.server_count.unwrap_or(0.0) <= r.client.responses as f64 + r.slack as f64
    });
    // Shortfalls that are exactly the uncounted 5xx have their own cause.
    let explained = counted.iter().all(|&i| {
        let r = &results[i];
        r.facts.missing_5xx || r.facts.server_count.unwrap_or(0.0) >= r.client.responses as f64
    });
    if server <= 0.0 || !all_short || explained {
        return;
    }
    let ratio = client / server;
    let workers = ratio.round();
    if workers < 2.0 || (ratio - workers).abs() >= 0.15 * workers {
        return;
    }
    let targets: BTreeSet<(String, String)> = group
        .iter()
        .flat_map(|&i| results[i].facts.targets.iter().cloned())
        .collect();
    let requests = group.len();
    let cause = format!(
        "across the {requests} request{} verified on {} the server counted {} of the client's {}, about 1/{workers:.0}: each scrape reads the registry of one of ~{workers:.0} worker processes (scrapes keep reaching the same worker: a kept-alive scrape connection, or the server handing new connections to the same process; no multiprocess mode); use the client library's multiprocess mode or aggregate before exporting",
        if requests == 1 { "" } else { "s" },
        targets_text(&targets),
        thousands(server),
        thousands(client)
    );
    let why = format!(
        "the server's registry holds ~1/{workers:.0} of the traffic (see count): per-status counts and durations cannot be compared"
    );
    for &i in group {
        let r = &mut results[i];
        let count_failed = status_of(r, "count") == Some(Status::Fail);
        let preflight_failed = status_of(r, "preflight").is_some_and(Status::failed);
        if r.facts.absent && preflight_failed {
            // No series: none of this request's traffic reached the
            // worker the scrapes read.
            let n = r.client.responses;
            if let Some(p) = find(r, "preflight") {
                p.status = Status::Fail;
                p.diagnosis = Some(format!(
                    "none of this request's {} responses were counted by the worker whose registry the scrapes read; {cause}",
                    thousands(n as f64)
                ));
            }
            for check in ["count", "errors", "duration"] {
                skip(r, check, "no series to read (see preflight)");
            }
            r.figures.count = None;
            r.figures.errors = None;
            r.figures.by_status.clear();
            continue;
        }
        if !count_failed {
            continue;
        }
        let (s, c) = (
            r.facts.server_count.unwrap_or(0.0),
            r.client.responses as f64,
        );
        if let Some(v) = find(r, "count") {
            v.diagnosis = Some(format!(
                "server counted {} of this request's {}; {cause}",
                thousands(s),
                thousands(c)
            ));
        }
        for check in ["errors", "mean", "duration", "quantiles"] {
            skip(r, check, &why);
        }
    }
}

/// Whether every response the client got was a 5xx.
fn all_5xx(r: &Checked) -> bool {
    r.client.responses > 0
        && r.client
            .by_status
            .iter()
            .all(|(k, n)| *n == 0 || super::is_http_5xx(k))
}

/// A request whose responses were all 5xx and that has no series reads as
/// exceptions bypassing the middleware, unless requests of the same
/// target that were not errors have no series either: then the absence
/// is not about exceptions. The scrapes read a registry that counted
/// none of this traffic (the one worker of several a pinned scrape
/// connection reaches), or the matchers miss.
fn absent_together(results: &mut [Checked], group: &[usize]) {
    let no_series = |r: &Checked| {
        r.facts.server_count.is_none_or(|_| r.facts.absent)
            && status_of(r, "preflight").is_some_and(|s| s == Status::NoData)
    };
    let others: Vec<String> = group
        .iter()
        .filter(|&&i| no_series(&results[i]) && !all_5xx(&results[i]))
        .map(|&i| results[i].client.name.clone())
        .collect();
    if others.is_empty() {
        return;
    }
    for &i in group {
        let r = &mut results[i];
        if !(no_series(r) && all_5xx(r) && r.facts.absent) {
            continue;
        }
        let found = find(r, "preflight")
            .and_then(|p| p.diagnosis.clone())
            .and_then(|d| {
                d.rfind(" (")
                    .map(|at| d[at + 2..].trim_end_matches(')').to_owned())
            })
            .unwrap_or_default();
        if let Some(p) = find(r, "preflight") {
            p.diagnosis = Some(format!(
                "no series, and none for {} on the same target either, whose responses were not errors: the absence is not about exceptions. The scrapes read a registry that counted none of this traffic (one of several worker processes, reached through one pinned scrape connection, without multiprocess mode), or the matchers miss{}",
                others.join(", "),
                if found.is_empty() {
                    String::new()
                } else {
                    format!(" ({found})")
                }
            ));
        }
        for check in ["count", "errors", "duration"] {
            skip(r, check, "no series to read (see preflight)");
        }
        r.figures.count = None;
        r.figures.errors = None;
        r.figures.by_status.clear();
    }
}
