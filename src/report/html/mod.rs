//! The HTML report: one self-contained page (inline CSS and SVG, no
//! script, nothing fetched when it is viewed) that someone who never used
//! redproof can read: the verdict and what the exit code means, failures
//! first with their diagnoses, then per request the client's RED over
//! time with the server's view of the same intervals drawn over it, and
//! the latency distributions verification compared.

mod charts;

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::cells::{RowCells, load_description};
use super::{RunReport, RunVerdict, Summary, format_observed};
use crate::scenario::units::{format_micros, thousands};
use crate::verify::{ServerFigures, Status, Verdict};
use charts::{Band, Chart, Line};

/// The overhead verification allows when an entry does not say.
const DEFAULT_OVERHEAD_MS: u64 = 25;

/// Windows shorter than this (the last, cut by the end of the load) are
/// left out of rates: a few requests in a sliver of a second would draw
/// as a spike.
const MIN_WINDOW_S: f64 = 0.5;

/// Points of the client's CDF.
const CDF_POINTS: u32 = 160;

/// Escapes text for HTML element content and attribute values.
pub(super) fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1000px;padding:0 16px 40px;color:#222}\
h1{font-size:1.5em;margin:.2em 0}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:1.6em}\
.banner{padding:14px 18px;border-radius:6px;margin-top:16px;color:#fff}.pass{background:#2e7d32}.fail{background:#c62828}\
.banner p{margin:.3em 0}table{border-collapse:collapse;margin:8px 0;font-size:.92em}\
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.failure{border-left:4px solid #c62828;background:#fdecea;padding:6px 12px;margin:8px 0}\
.failure .why{margin:.3em 0}code{font-size:.9em;word-break:break-all}.ok{color:#2e7d32}.bad{color:#c62828;font-weight:bold}\
.charts{display:flex;flex-wrap:wrap;gap:8px}.charts svg{border:1px solid #eee}.note{color:#666;font-size:.9em}";

/// Renders the page.
pub fn render_html(r: &RunReport, summary: &Summary) -> String {
    let mut o = String::new();
    let title = format!("redproof · {}", r.scenario.name);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n",
        esc(&title)
    );
    banner(&mut o, r);
    failures(&mut o, r);
    red_table(&mut o, r, summary);
    load(&mut o, r);
    let stats = r.request_stats().unwrap_or_default();
    for (i, row) in summary.rows.iter().enumerate() {
        let latency = stats.get(i).map(|s| s.response_latency());
        request(&mut o, r, i, row, latency.as_ref());
    }
    thresholds(&mut o, r);
    verdicts(&mut o, r);
    let _ = write!(
        o,
        "<p class=\"note\">redproof {} · results format {}</p>\n</body></html>\n",
        esc(&r.redproof_version),
        esc(&r.format)
    );
    o
}

fn banner(o: &mut String, r: &RunReport) {
    let verdict = RunVerdict::of(r);
    let load = load_description(r);
    let _ = writeln!(
        o,
        "<header class=\"banner {}\"><h1>{} · {}</h1><p>exit code {}: {}</p><p>{}</p><p>{} · load {:.1}s, drain {:.1}s · started {}{}</p></header>",
        if verdict.passed() { "pass" } else { "fail" },
        if verdict.passed() { "PASS" } else { "FAIL" },
        esc(&r.scenario.name),
        verdict.exit as u8,
        verdict.exit.meaning(),
        esc(&verdict.line(r)),
        esc(&load),
        r.timing.load_s,
        (r.timing.elapsed_s - r.timing.load_s).max(0.0),
        super::text::rfc3339(r.timing.t0_unix_ms as i64),
        if r.interrupted { " · interrupted" } else { "" }
    );
}

fn failure(o: &mut String, what: &str, why: &str, details: &[String]) {
    let _ = write!(
        o,
        "<div class=\"failure\"><strong>{}</strong><p class=\"why\">{}</p>",
        esc(what),
        esc(why)
    );
    for d in details {
        let _ = write!(o, "<div class=\"note\">{}</div>", esc(d));
    }
    o.push_str("</div>\n");
}

fn failures(o: &mut String, r: &RunReport) {
    let failed_verdicts: Vec<&Verdict> = r
        .verification
        .iter()
        .flat_map(|v| &v.verdicts)
        .filter(|v| v.status.failed())
        .collect();
    let failed_thresholds: Vec<_> = r.thresholds.iter().filter(|t| !t.passed).collect();
    let any = !failed_verdicts.is_empty()
        || !failed_thresholds.is_empty()
        || r.failure.is_some()
        || r.aborted.is_some()
        || r.verification_error.is_some();
    if !any {
        return;
    }
    o.push_str("<section id=\"failures\"><h2>What failed</h2>\n");
    if let Some(e) = &r.failure {
        failure(o, "the run failed", e, &[]);
    }
    if let Some(why) = &r.aborted {
        failure(o, "the run was aborted", why, &[]);
    }
    if let Some(e) = &r.verification_error {
        failure(o, "verification not run", e, &[]);
    }
    for v in failed_verdicts {
        let mut details = vec![v.summary.clone()];
        if !v.query.is_empty() {
            details.push(format!(
                "query: {} @ {}",
                v.query,
                super::text::rfc3339(v.eval_unix_ms)
            ));
        }
        details.extend(v.warnings.iter().map(|w| format!("warning: {w}")));
        let label = if v.status == Status::NoData {
            "no data"
        } else {
            "failed"
        };
        failure(
            o,
            &format!("{} {label}", v.name()),
            v.diagnosis.as_deref().unwrap_or(&v.summary),
            &details,
        );
    }
    for t in failed_thresholds {
        failure(
            o,
            &format!("threshold {}", t.threshold.text),
            &format!("observed {}", format_observed(&t.threshold, t.observed)),
            &[],
        );
    }
    o.push_str("</section>\n");
}

fn red_table(o: &mut String, r: &RunReport, summary: &Summary) {
    o.push_str("<section id=\"requests\"><h2>Requests: client and server</h2>\n<table><tr><th>request</th><th>count</th><th>rps</th><th>errors</th><th>p50</th><th>p95</th><th>p99</th><th>server count</th><th>server p95 (bucket estimate)</th></tr>\n");
    for row in summary.rows.iter().chain(std::iter::once(&summary.all)) {
        let c = RowCells::of(r, row);
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{:.1}</td><td class=\"n\">{} ({:.2}%)</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&row.name),
            thousands(row.count),
            row.rps,
            thousands(row.errors),
            row.error_ratio * 100.0,
            c.p50,
            c.p95,
            c.p99,
            c.server_count,
            c.server_p95,
        );
    }
    o.push_str("</table>\n<p class=\"note\">Server percentiles are estimates interpolated within the server's histogram buckets; the verification compares whole buckets.</p></section>\n");
}

/// The planned load (users or arrival rate) and the completed requests
/// per second over the run.
fn load(o: &mut String, r: &RunReport) {
    let mut windows = Vec::new();
    let mut prev = 0.0;
    for w in &r.windows {
        let dt = w.t - prev;
        if dt >= MIN_WINDOW_S {
            windows.push((w.t, w.all.count as f64 / dt));
        }
        prev = w.t;
    }
    let mut lines = vec![Line {
        label: "completed requests/s".into(),
        color: charts::CLIENT,
        points: windows,
        markers: false,
    }];
    let end = r.timing.load_s;
    let planned = planned(&r.load, end);
    if !planned.is_empty() {
        lines.push(Line {
            label: match r.load.model.as_str() {
                "open" => "planned arrival rate /s".into(),
                _ => "users".into(),
            },
            color: charts::LOAD,
            points: planned,
            markers: false,
        });
    }
    o.push_str("<section id=\"load\"><h2>Load</h2><div class=\"charts\">");
    o.push_str(&charts::render(&Chart {
        title: "load over time",
        x_desc: "seconds since the load started",
        y_desc: "per second / users",
        lines,
        band: None,
        y_max: None,
    }));
    o.push_str("</div></section>\n");
}

/// The load the scenario asked for over `0..end` seconds: users or the
/// arrival rate, by stage (a closed stage's users shown as reached at its
/// start).
fn planned(load: &super::LoadInfo, end: f64) -> Vec<(f64, f64)> {
    if load.stages.is_empty() {
        let level = load.users.map(|u| u as f64).or(load.rate);
        return level.map_or_else(Vec::new, |l| vec![(0.0, l), (end, l)]);
    }
    let mut points = Vec::new();
    let mut t = 0.0;
    for s in &load.stages {
        let (from, to) = match (s.users, s.rate_from, s.rate_to) {
            (Some(u), _, _) => (u as f64, u as f64),
            (None, Some(a), Some(b)) => (a, b),
            _ => continue,
        };
        points.push((t, from));
        t += s.for_s;
        points.push((t, to));
    }
    points
}

fn request(
    o: &mut String,
    r: &RunReport,
    i: usize,
    row: &super::Row,
    latency: Option<&Histogram<u64>>,
) {
    let server = r.verification.as_ref().and_then(|v| v.figures(&row.name));
    let _ = write!(
        o,
        "<section class=\"request\"><h2>{}</h2>\n<p>",
        esc(&row.name)
    );
    let outcomes: Vec<String> = row
        .outcomes
        .iter()
        .map(|x| {
            format!(
                "<span class=\"{}\">{} × {}</span>",
                if x.ok { "ok" } else { "bad" },
                esc(&x.outcome.to_string()),
                thousands(x.count)
            )
        })
        .collect();
    let _ = write!(
        o,
        "outcomes: {}</p>\n<div class=\"charts\">",
        if outcomes.is_empty() {
            "nothing completed".into()
        } else {
            outcomes.join(" · ")
        }
    );
    let client = client_series(r, i);
    let timeline = server.map(|f| f.timeline.as_slice()).unwrap_or_default();
    let server_line = |label: &str, f: &dyn Fn(&crate::verify::ServerPoint) -> Option<f64>| {
        let points: Vec<(f64, f64)> = timeline.iter().filter_map(|p| Some((p.t, f(p)?))).collect();
        (!points.is_empty()).then(|| Line {
            label: label.into(),
            color: charts::SERVER,
            points,
            markers: true,
        })
    };
    let time_chart = |title: &str, y: &str, mut lines: Vec<Line>, server: Option<Line>| {
        lines.extend(server);
        charts::render(&Chart {
            title,
            x_desc: "seconds since the load started",
            y_desc: y,
            lines,
            band: None,
            y_max: None,
        })
    };
    let client_line = |label: &str, color, points| Line {
        label: label.into(),
        color,
        points,
        markers: false,
    };
    o.push_str(&time_chart(
        "rate",
        "requests/s",
        vec![client_line("client", charts::CLIENT, client.rate)],
        server_line("server", &|p| Some(p.rps)),
    ));
    o.push_str(&time_chart(
        "errors",
        "errors/s",
        vec![client_line("client errors", charts::CLIENT, client.errors)],
        server_line("server 5xx", &|p| p.errors_per_s),
    ));
    o.push_str(&time_chart(
        "latency",
        "ms",
        vec![
            client_line("client p50", charts::CLIENT_LIGHT, client.p50),
            client_line("client p95", charts::CLIENT, client.p95),
            client_line("client p99", charts::CLIENT_DARK, client.p99),
        ],
        server_line("server p95 (bucket estimate)", &|p| {
            p.p95_s.map(|s| s * 1e3)
        }),
    ));
    if let (Some(h), Some(f)) = (latency, server) {
        o.push_str(&cdf(h, f, overhead_ms(r, i)));
    }
    o.push_str("</div>");
    if server.is_some() {
        o.push_str("<p class=\"note\">Server figures (orange, a marker per scrape interval) come from the same raw samples verification read. In the distribution chart the green band is where the server's bucket fractions must lie: between the client's distribution and the same shifted by the overhead allowed outside the server's timer.</p>");
    }
    o.push_str("</section>\n");
}

/// The client's figures per one-second window of request `i`.
struct ClientSeries {
    rate: Vec<(f64, f64)>,
    errors: Vec<(f64, f64)>,
    p50: Vec<(f64, f64)>,
    p95: Vec<(f64, f64)>,
    p99: Vec<(f64, f64)>,
}

fn client_series(r: &RunReport, i: usize) -> ClientSeries {
    let mut c = ClientSeries {
        rate: Vec::new(),
        errors: Vec::new(),
        p50: Vec::new(),
        p95: Vec::new(),
        p99: Vec::new(),
    };
    let mut prev = 0.0;
    for w in &r.windows {
        let dt = w.t - prev;
        prev = w.t;
        let Some(f) = w.requests.get(i).filter(|_| dt >= MIN_WINDOW_S) else {
            continue;
        };
        c.rate.push((w.t, f.count as f64 / dt));
        c.errors.push((w.t, f.errors as f64 / dt));
        if f.count > f.errors || f.p50_us > 0 {
            c.p50.push((w.t, f.p50_us as f64 / 1e3));
            c.p95.push((w.t, f.p95_us as f64 / 1e3));
            c.p99.push((w.t, f.p99_us as f64 / 1e3));
        }
    }
    c
}

/// The overhead the verify entry of request `i` allows, ms.
fn overhead_ms(r: &RunReport, i: usize) -> u64 {
    r.verify_spec
        .iter()
        .flat_map(|s| &s.entries)
        .find(|e| e.request == Some(i) || e.group.contains(&i))
        .map_or(DEFAULT_OVERHEAD_MS, |e| e.overhead_ms)
}

/// The client's latency CDF against the server's bucket fractions, with
/// the band verification accepts.
fn cdf(h: &Histogram<u64>, f: &ServerFigures, overhead_ms: u64) -> String {
    if h.is_empty() || f.bucket_total <= 0.0 {
        return String::new();
    }
    let overhead_us = overhead_ms as f64 * 1e3;
    // Up to the slowest client response, and the first bucket bound that
    // holds every server observation, whichever is larger.
    let server_full = f
        .buckets
        .iter()
        .find(|(_, n)| *n >= f.bucket_total)
        .map_or(0.0, |(le, _)| le * 1e6);
    let x_max = (h.max() as f64).max(server_full).max(1.0) * 1.1;
    let fraction = |us: f64| h.count_between(0, us.max(0.0) as u64) as f64 / h.len() as f64;
    let xs: Vec<f64> = (0..=CDF_POINTS)
        .map(|k| x_max * k as f64 / CDF_POINTS as f64)
        .collect();
    let ms = |us: f64| us / 1e3;
    let client: Vec<(f64, f64)> = xs.iter().map(|&x| (ms(x), fraction(x))).collect();
    let upper: Vec<(f64, f64)> = xs
        .iter()
        .map(|&x| (ms(x), fraction(x + overhead_us)))
        .collect();
    let server: Vec<(f64, f64)> = std::iter::once((0.0, 0.0))
        .chain(
            f.buckets
                .iter()
                .filter(|(le, _)| le * 1e6 <= x_max)
                .map(|(le, n)| (le * 1e3, n / f.bucket_total)),
        )
        .collect();
    charts::render(&Chart {
        title: "latency distribution",
        x_desc: "ms",
        y_desc: "fraction of requests ≤ x",
        lines: vec![
            Line {
                label: "client".into(),
                color: charts::CLIENT,
                points: client.clone(),
                markers: false,
            },
            Line {
                label: "server buckets".into(),
                color: charts::SERVER,
                points: server,
                markers: true,
            },
        ],
        band: Some(Band {
            label: format!("allowed (overhead {})", format_micros(overhead_us as u64)),
            lower: client,
            upper,
        }),
        y_max: Some(1.05),
    })
}

fn thresholds(o: &mut String, r: &RunReport) {
    if r.thresholds.is_empty() {
        return;
    }
    o.push_str("<section id=\"thresholds\"><h2>Thresholds</h2><table><tr><th>threshold</th><th>observed</th><th>verdict</th></tr>\n");
    let mut rows: Vec<_> = r.thresholds.iter().collect();
    rows.sort_by_key(|t| t.passed);
    for t in rows {
        let _ = writeln!(
            o,
            "<tr><td><code>{}</code></td><td class=\"n\">{}</td><td class=\"{}\">{}</td></tr>",
            esc(&t.threshold.text),
            esc(&format_observed(&t.threshold, t.observed)),
            if t.passed { "ok" } else { "bad" },
            if t.passed { "pass" } else { "FAIL" }
        );
    }
    o.push_str("</table></section>\n");
}

fn verdict_rows(o: &mut String, verdicts: &[&Verdict]) {
    o.push_str("<table><tr><th>check</th><th>verdict</th><th>figures</th></tr>\n");
    for v in verdicts {
        let _ = writeln!(
            o,
            "<tr><td><code>{}</code></td><td class=\"{}\">{}</td><td>{}</td></tr>",
            esc(&v.name()),
            if v.status.failed() { "bad" } else { "ok" },
            v.status.label(),
            esc(&v.summary)
        );
    }
    o.push_str("</table>\n");
}

fn verdicts(o: &mut String, r: &RunReport) {
    let Some(v) = &r.verification else {
        return;
    };
    let _ = writeln!(
        o,
        "<section id=\"verification\"><h2>Verification</h2><p>Source: {}.</p>",
        esc(&v.source)
    );
    let (failed, rest): (Vec<&Verdict>, Vec<&Verdict>) =
        v.verdicts.iter().partition(|x| x.status.failed());
    if !failed.is_empty() {
        verdict_rows(o, &failed);
    }
    if !rest.is_empty() {
        let _ = write!(
            o,
            "<details><summary>{} passed or skipped</summary>",
            rest.len()
        );
        verdict_rows(o, &rest);
        o.push_str("</details>");
    }
    o.push_str("</section>\n");
}
