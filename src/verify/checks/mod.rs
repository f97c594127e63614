//! The checks of one `verify:` entry, in order: preflight, resets,
//! freshness, count, errors, mean and units, duration distribution,
//! quantiles. A check whose premise another check has already refuted is
//! skipped with the reason, so one fault gives one failure to read.
//!
//! This module holds the runner that orders the checks and decides what
//! to skip, the [`Context`] every check reads through, and the number
//! formatting their texts share. The checks themselves live in:
//!
//! - [`integrity`]: whether the series can be trusted at all: why none
//!   matched, counter drops and restarts, stale or frozen samples.
//! - [`counts`]: the request count and the errors per status.
//! - [`durations`]: server mean and units, the latency distribution at
//!   each bucket bound, and quantiles from buckets or a summary.
//! - [`target`]: reasoning across the requests of one target, once every
//!   entry is checked, so that one cause (a frozen page, scrapes that
//!   read one worker's registry) reads as one failure in every request.

mod counts;
mod durations;
mod integrity;
mod relations;
mod target;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use super::convention::{self, Names, StatusSource, StatusStyle};
use super::counters::{self, Increase};
use super::timeline;
use super::{ClientRequest, LOOKBACK_MS, ServerFigures, Status, Verdict};
use crate::metrics::{Fetch, MetricSource, Series, SourceError, TargetStatus};
use crate::promql::Selector;
use crate::scenario::units::{self, format_micros};
use crate::scenario::verification::VerifyEntry;
pub(super) use target::reconcile;

use counts::{check_count, check_errors, server_by_status};
use durations::check_duration;
use integrity::{
    check_freshness, check_non_finite, check_resets, explain_no_series, family_on_targets,
    target_of,
};

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

    /// The same context reading other names.
    fn with_names<'b>(&'b self, names: &'b Names) -> Context<'b, M> {
        Context {
            source: self.source,
            entry: self.entry,
            names,
            client: self.client,
            t0: self.t0,
            t1: self.t1,
            s: self.s,
            interval_ms: self.interval_ms,
            targets: self.targets,
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

/// Whether a client status key is an HTTP 5xx.
fn is_http_5xx(key: &str) -> bool {
    key.len() == 3 && key.starts_with('5') && key.parse::<u16>().is_ok()
}

/// Whether the client's statuses are HTTP ones (not gRPC codes), so they
/// cannot be compared with a server that counts gRPC codes.
fn client_speaks_http(client: &BTreeMap<String, u64>) -> bool {
    client.keys().any(|k| k.parse::<u16>().is_ok())
}

pub(super) fn thousands(v: f64) -> String {
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

/// What the checks of one entry learnt that the reasoning across the
/// requests of a target needs ([`target::reconcile`]).
#[derive(Debug, Clone, Default)]
pub(super) struct Facts {
    /// `(job, instance)` of the entry's series, or of its family's on the
    /// entry's targets when none matched.
    pub targets: BTreeSet<(String, String)>,
    /// The server's increase, when the count check ran on series.
    pub server_count: Option<f64>,
    /// No series matched while the family is exported on the target.
    pub absent: bool,
    /// The count fell short by exactly the 5xx the server never counted.
    pub missing_5xx: bool,
    /// The values stopped changing at this time (ms) while the client
    /// kept completing requests: a frozen page (see freshness).
    pub frozen_since: Option<i64>,
    /// When the entry's series last changed (the latest of them).
    pub settled_since: Option<i64>,
}

/// The checks of one entry, before the reasoning across entries.
#[derive(Debug, Clone)]
pub(super) struct Checked {
    pub verdicts: Vec<Verdict>,
    pub figures: ServerFigures,
    pub facts: Facts,
    pub client: ClientRequest,
    /// Requests the server may have counted or not, plus the count
    /// tolerance.
    pub slack: u64,
}

/// One `verify:` entry to check, with its client side.
pub(super) struct Job<'a> {
    pub entry: &'a VerifyEntry,
    pub names: &'a Names,
    pub client: &'a ClientRequest,
}

/// What every entry is checked against.
pub(super) struct Run<'a> {
    pub t0: i64,
    pub t1: i64,
    pub s: i64,
    pub interval_ms: i64,
    pub targets: &'a [TargetStatus],
    /// Every request of the run, by index, for `derived:` and for
    /// diagnoses that name other requests.
    pub clients: &'a [ClientRequest],
}

/// Which series an entry reads: entries that read the same ones cannot
/// be told apart by the server.
fn series_key(n: &Names) -> String {
    format!(
        "{}|{:?}|{}",
        n.requests,
        n.status,
        n.duration
            .as_ref()
            .map(|(d, _)| d.to_string())
            .unwrap_or_default()
    )
}

/// Adds the calls `derived` requests caused to a client side.
fn with_derived(
    mut out: ClientRequest,
    derived: &[(usize, u64)],
    all: &[ClientRequest],
) -> ClientRequest {
    for &(i, per) in derived {
        let Some(from) = all.get(i) else { continue };
        let calls = per * from.responses;
        let unsure = per * from.unsure;
        if out.windows.is_empty() {
            out.windows = from.windows.iter().map(|(t, _)| (*t, 0)).collect();
        }
        out.responses += calls;
        out.unsure += unsure;
        for (w, (_, n)) in out.windows.iter_mut().zip(&from.windows) {
            w.1 += per * n;
        }
        out.derived.push(super::Derived {
            from: from.name.clone(),
            per,
            calls,
            unsure,
            clean: from
                .by_status
                .iter()
                .all(|(k, n)| *n == 0 || convention::is_success_key(k)),
        });
    }
    out
}

/// The client side of several requests counted in the same series.
fn pooled(clients: &[&ClientRequest]) -> ClientRequest {
    let mut out = clients[0].clone();
    out.name = clients
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(" + ");
    for c in &clients[1..] {
        for (k, n) in &c.by_status {
            *out.by_status.entry(k.clone()).or_default() += n;
        }
        out.responses += c.responses;
        out.unsure += c.unsure;
        out.latency
            .add(&c.latency)
            .expect("auto-resizing histograms always merge");
        for (w, (_, n)) in out.windows.iter_mut().zip(&c.windows) {
            w.1 += n;
        }
    }
    out
}

/// Checks every entry and reasons across them. Entries whose matchers
/// select the same series (statsd_exporter's label-free gunicorn
/// metrics, or two requests of one view) are checked once against the
/// sum of their clients, and each gets those verdicts.
pub(super) async fn run_all<M: MetricSource>(
    source: &M,
    jobs: &[Job<'_>],
    run_at: &Run<'_>,
) -> Result<Vec<Checked>, SourceError> {
    let mut pools: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, j) in jobs.iter().enumerate() {
        let key = series_key(j.names);
        match pools.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(i),
            None => pools.push((key, vec![i])),
        }
    }
    let mut out: Vec<Option<Checked>> = vec![None; jobs.len()];
    for (_, members) in &pools {
        let first = &jobs[members[0]];
        let clients: Vec<&ClientRequest> = members.iter().map(|&i| jobs[i].client).collect();
        let mut derived: Vec<(usize, u64)> = Vec::new();
        for &i in members {
            for d in &jobs[i].entry.derived {
                if !derived.iter().any(|x| x.0 == d.0) {
                    derived.push(*d);
                }
            }
        }
        let client = with_derived(pooled(&clients), &derived, run_at.clients);
        let cx = Context {
            source,
            entry: first.entry,
            names: first.names,
            client: &client,
            t0: run_at.t0,
            t1: run_at.t1,
            s: run_at.s,
            interval_ms: run_at.interval_ms,
            targets: run_at.targets,
        };
        let checked = run(&cx).await?;
        for &i in members {
            let mut c = checked.clone();
            let name = jobs[i].client.name.clone();
            for v in &mut c.verdicts {
                v.request = Some(name.clone());
            }
            let declared = !jobs[i].entry.group.is_empty();
            if let Some(p) = c.verdicts.iter_mut().find(|v| v.check == "preflight") {
                if members.len() > 1 && declared {
                    p.warnings.push(format!(
                        "`verify.{}` covers {}: verified together, against the sum of their client figures",
                        jobs[i].entry.name, client.name
                    ));
                } else if members.len() > 1 {
                    p.warnings.push(format!(
                        "{} are counted in the same series (the matchers cannot tell them apart) and are verified together, against the sum of their client figures",
                        client.name
                    ));
                }
                for d in &client.derived {
                    p.warnings.push(format!(
                        "{} derived call{} from {} ({} × {}) expected in these series",
                        thousands(d.calls as f64),
                        if d.calls == 1 { "" } else { "s" },
                        d.from,
                        d.per,
                        thousands((d.calls / d.per.max(1)) as f64),
                    ));
                }
            }
            c.figures.request = name;
            if members.len() > 1 || !client.derived.is_empty() {
                c.figures.client_count = Some(client.responses as f64);
            }
            out[i] = Some(c);
        }
    }
    let mut out: Vec<Checked> = out
        .into_iter()
        .map(|c| c.expect("every entry checked"))
        .collect();
    reconcile(&mut out, run_at.t0, run_at.interval_ms);
    for (_, members) in &pools {
        let mut known: Vec<String> = members
            .iter()
            .map(|&i| jobs[i].client.name.clone())
            .collect();
        for &i in members {
            for &(d, _) in &jobs[i].entry.derived {
                if let Some(c) = run_at.clients.get(d) {
                    known.push(c.name.clone());
                }
            }
        }
        for &i in members {
            relations::name_other_requests(&mut out[i], jobs[i].entry, &known, run_at.clients);
        }
    }
    Ok(out)
}

/// Runs the checks of one entry and returns the verdicts, the server
/// figures and the facts the reasoning across entries needs.
pub(super) async fn run<M: MetricSource>(cx: &Context<'_, M>) -> Result<Checked, SourceError> {
    let fetched = cx.fetch(&cx.names.requests).await?;
    // OpenTelemetry's other generation of names, when these find nothing.
    if let Some(fallback) = &cx.names.fallback
        && !fetched
            .series
            .iter()
            .any(|s| counters::increase(s, cx.t0, cx.s).is_some())
    {
        let other = cx.fetch(&fallback.requests).await?;
        if other
            .series
            .iter()
            .any(|s| counters::increase(s, cx.t0, cx.s).is_some())
        {
            let alt = cx.with_names(fallback);
            let (mut verdicts, figures, facts) = run_on(&alt, other).await?;
            if let Some(p) = verdicts.iter_mut().find(|v| v.check == "preflight") {
                p.warnings.insert(0, cx.names.fallback_note.clone());
            }
            return Ok(checked(cx, verdicts, figures, facts));
        }
    }
    let (verdicts, figures, facts) = run_on(cx, fetched).await?;
    Ok(checked(cx, verdicts, figures, facts))
}

fn checked<M: MetricSource>(
    cx: &Context<'_, M>,
    verdicts: Vec<Verdict>,
    figures: ServerFigures,
    facts: Facts,
) -> Checked {
    Checked {
        verdicts,
        figures,
        facts,
        client: cx.client.clone(),
        slack: cx.unsure() + cx.entry.tolerance.count.of(cx.client.responses),
    }
}

async fn run_on<M: MetricSource>(
    cx: &Context<'_, M>,
    fetched: Fetch,
) -> Result<(Vec<Verdict>, ServerFigures, Facts), SourceError> {
    let mut out = Vec::new();
    let mut facts = Facts::default();
    let mut figures = ServerFigures {
        request: cx.client.name.clone(),
        convention: cx.entry.convention.name().into(),
        ..Default::default()
    };
    let query = cx.names.requests.to_string();
    let series: Vec<(Series, Increase)> = fetched
        .series
        .iter()
        .filter_map(|s| counters::increase(s, cx.t0, cx.s).map(|i| (s.clone(), i)))
        .collect();
    facts.targets = series.iter().map(|(s, _)| target_of(s)).collect();
    facts.settled_since = series.iter().map(|(_, i)| i.settled_since_ms).max();

    // Preflight: the matchers find series holding numbers.
    let mut absent_but_exported = false;
    if let Some(mut v) = check_non_finite(cx, &fetched.series, &query) {
        v.warnings = fetched.warnings.clone();
        facts.targets.extend(fetched.series.iter().map(target_of));
        out.push(v);
        for check in ["count", "errors", "duration"] {
            out.push(cx.skipped(check, "the series hold no numbers (see preflight)"));
        }
        return Ok((out, figures, facts));
    }
    if series.is_empty() {
        let none = explain_no_series(cx, &cx.names.requests).await?;
        facts.targets = none.targets.clone();
        let mut v = cx.verdict("preflight", Status::NoData, none.summary, &query);
        v.diagnosis = Some(none.diagnosis);
        v.warnings = fetched.warnings.clone();
        out.push(v);
        // Counted as zero only when the client saw server errors: then the
        // metric is exported and the missing series is the finding
        // (exceptions that bypass the middleware). Otherwise the matcher
        // is the likelier culprit, and the preflight says so.
        let saw_5xx = cx.client.by_status.keys().any(|k| is_http_5xx(k));
        facts.absent = none.exported;
        if !none.exported || !saw_5xx {
            for check in ["count", "errors", "duration"] {
                out.push(cx.skipped(check, "no series to read (see preflight)"));
            }
            return Ok((out, figures, facts));
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
        let family = family_on_targets(cx, &series).await?;
        let resets = check_resets(cx, &series, &family, &query).await?;
        if resets.status.failed() {
            let why = "counters reset during the run (see resets)";
            premise = Some(why);
            out.push(resets);
            out.push(cx.skipped("freshness", why));
        } else {
            out.push(resets);
            let (fresh, frozen_since) = check_freshness(cx, &series, &family, &query);
            if fresh.status.failed() {
                premise = Some("the metrics are not fresh (see freshness)");
            }
            facts.frozen_since = frozen_since;
            out.push(fresh);
        }
    }
    if let Some(why) = premise {
        for check in ["count", "errors", "duration"] {
            out.push(cx.skipped(check, why));
        }
        return Ok((out, figures, facts));
    }

    let server_count: f64 = series.iter().map(|(_, i)| i.delta).sum();
    figures.count = Some(server_count);
    facts.server_count = Some(server_count);
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
    // Derived calls of requests that all succeeded succeeded too; gRPC
    // has one code for that. Other derived calls have no known status.
    let derived = cx.client.derived_calls();
    let derived_known =
        derived == 0 || (style == StatusStyle::Grpc && cx.client.derived.iter().all(|d| d.clean));
    let mut client_keys = client_keys;
    if derived > 0 && derived_known {
        *client_keys.entry("OK".into()).or_default() += derived;
    }
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
    let intervals = timeline::intervals(cx.t0, cx.t1, cx.interval_ms);
    let status_label = match &cx.names.status {
        Some(StatusSource::Label(l)) => Some(l.as_str()),
        _ => None,
    };
    let is_error = |s: &Series| {
        status_label
            .and_then(|l| s.labels.get(l))
            .is_some_and(|v| convention::is_server_error(&convention::status_key(v, style)))
    };
    figures.timeline = timeline::counted(
        series.iter().map(|(s, _)| s),
        status_label.map(|_| &is_error as &dyn Fn(&Series) -> bool),
        cx.t0,
        &intervals,
    );
    figures.by_status = server_keys
        .iter()
        .filter(|(_, v)| **v != 0.0)
        .map(|(k, v)| (k.clone(), *v))
        .collect();

    let (count, missing_5xx) = check_count(
        cx,
        server_count,
        &server_keys,
        &client_keys,
        &query,
        absent_but_exported,
    );
    facts.missing_5xx = missing_5xx;
    out.push(count);
    if derived_known {
        out.push(check_errors(
            cx,
            style,
            &server_keys,
            &client_keys,
            absent_but_exported,
        ));
    } else {
        out.push(cx.skipped("errors", &relations::unknown_derived_status(cx.client)));
    }
    if absent_but_exported {
        out.push(cx.skipped("duration", "no series to read (see preflight)"));
        return Ok((out, figures, facts));
    }
    let durations = check_duration(cx, &mut figures).await?;
    if derived > 0 {
        // The figures stay for the report; the client never timed the
        // derived calls, only the requests that caused them.
        let why = relations::untimed_derived(cx.client);
        out.extend(durations.into_iter().map(|v| {
            let check = v.check.clone();
            cx.skipped(&check, &why)
        }));
    } else {
        out.extend(durations);
    }
    Ok((out, figures, facts))
}
