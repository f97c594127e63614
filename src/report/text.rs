//! The RED report as a terminal table.

use std::fmt::Write as _;

use super::{RunReport, Summary, format_observed};
use crate::measure::MessageCounts;
use crate::outcome::Outcome;
use crate::scenario::units::{format_micros, thousands};
use crate::verify::Status;

/// Renders the report; `summary` comes from [`RunReport::summary`].
pub fn render_text(r: &RunReport, summary: &Summary) -> String {
    let mut o = String::new();
    let load = super::cells::load_description(r);
    let _ = writeln!(
        o,
        "redproof · {} · {} · load {:.1}s, drain {:.1}s{}",
        r.scenario.name,
        load,
        r.timing.load_s,
        (r.timing.elapsed_s - r.timing.load_s).max(0.0),
        if r.interrupted { " · INTERRUPTED" } else { "" }
    );
    if let Some(e) = &r.failure {
        let _ = writeln!(o, "RUN FAILED: {e}");
    }
    if let Some(why) = &r.aborted {
        let _ = writeln!(o, "RUN ABORTED: {why}");
    }
    if r.users_stopped > 0 {
        let _ = writeln!(
            o,
            "{} user{} stopped after failing `on_start` (on_start_failures)",
            thousands(r.users_stopped),
            if r.users_stopped == 1 { "" } else { "s" }
        );
    }
    let _ = writeln!(o);
    if !r.scenarios.is_empty() {
        let w = r
            .scenarios
            .iter()
            .map(|s| s.name.chars().count())
            .max()
            .unwrap_or(0);
        let _ = writeln!(o, "scenarios");
        for s in &r.scenarios {
            let _ = writeln!(
                o,
                "  {:<w$}  {} · from {:.1}s · load {:.1}s",
                s.name,
                super::parts::describe(&s.load),
                s.start_s,
                s.load_s
            );
        }
        let _ = writeln!(o);
    }
    let name_w = summary
        .rows
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(3)
        .max(7);
    let _ = writeln!(
        o,
        "{:<name_w$} {:>10} {:>9} {:>8} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "request", "count", "rps", "errors", "err%", "p50", "p90", "p95", "p99", "max"
    );
    for row in summary.table_rows() {
        let lat = |us: u64| {
            if row.has_latency() {
                format_micros(us)
            } else {
                "-".into()
            }
        };
        let _ = writeln!(
            o,
            "{:<name_w$} {:>10} {:>9.1} {:>8} {:>6.2}% {:>8} {:>8} {:>8} {:>8} {:>8}",
            row.name,
            thousands(row.count),
            row.rps,
            thousands(row.errors),
            row.error_ratio * 100.0,
            lat(row.p50_us),
            lat(row.p90_us),
            lat(row.p95_us),
            lat(row.p99_us),
            lat(row.max_us),
        );
    }
    if summary.rows.iter().any(|r| r.corrected.is_some()) {
        let _ = writeln!(
            o,
            "\npacing-corrected latency (coordinated omission; latency thresholds use these)"
        );
        let _ = writeln!(
            o,
            "{:<name_w$} {:>8} {:>8} {:>8} {:>8}",
            "request", "p50", "p95", "p99", "max"
        );
        for row in summary.table_rows() {
            if let Some([p50, p95, p99, max]) = row.corrected {
                let _ = writeln!(
                    o,
                    "{:<name_w$} {:>8} {:>8} {:>8} {:>8}",
                    row.name,
                    format_micros(p50),
                    format_micros(p95),
                    format_micros(p99),
                    format_micros(max)
                );
            }
        }
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "outcomes (✗ = not expected)");
    for row in &summary.rows {
        let parts: Vec<String> = row
            .outcomes
            .iter()
            .map(|o| {
                format!(
                    "{}{} × {}",
                    o.outcome,
                    if o.ok { "" } else { " ✗" },
                    thousands(o.count)
                )
            })
            .collect();
        let messages = if row.messages == MessageCounts::default() {
            String::new()
        } else {
            format!(
                "  (messages: {} sent, {} received)",
                thousands(row.messages.sent),
                thousands(row.messages.received)
            )
        };
        let _ = writeln!(
            o,
            "  {:<name_w$} {}{messages}",
            row.name,
            if parts.is_empty() {
                "nothing completed".into()
            } else {
                parts.join(" · ")
            }
        );
    }
    let transport: Vec<String> = summary
        .rows
        .iter()
        .flat_map(|row| {
            row.examples.iter().filter_map(move |e| match e.outcome {
                Outcome::Transport(_) | Outcome::CheckFailed(_) => Some(format!(
                    "  {:<name_w$} {}: {}",
                    row.name, e.outcome, e.message
                )),
                _ => None,
            })
        })
        .collect();
    if !transport.is_empty() {
        let _ = writeln!(
            o,
            "\ntransport errors and failed checks (first message of each kind)"
        );
        for t in transport {
            let _ = writeln!(o, "{t}");
        }
    }
    if summary.all.unknown > 0 {
        let parts: Vec<String> = summary
            .rows
            .iter()
            .filter(|r| r.unknown > 0)
            .map(|r| format!("{} × {}", r.name, thousands(r.unknown)))
            .collect();
        let _ = writeln!(
            o,
            "\noutcome unknown (still in flight when the drain ended): {}",
            parts.join(" · ")
        );
    }
    if summary.all.retries > 0 {
        let parts: Vec<String> = summary
            .rows
            .iter()
            .filter(|r| r.retries > 0)
            .map(|r| format!("{} × {}", r.name, thousands(r.retries)))
            .collect();
        let _ = writeln!(
            o,
            "\nsent again on a new connection (a kept-alive connection closed with no answer): {}",
            parts.join(" · ")
        );
    }
    if let Some(s) = &r.schedule {
        let _ = writeln!(
            o,
            "\nschedule: starts behind their due time by p50 {} · p99 {} · max {}; {} late start{} (over 5ms), {} dropped",
            format_micros(s.lag_p50_us),
            format_micros(s.lag_p99_us),
            format_micros(s.max_lag_us),
            thousands(s.late_starts),
            if s.late_starts == 1 { "" } else { "s" },
            thousands(s.dropped)
        );
    }
    render_verification(&mut o, r, summary);
    if !r.thresholds.is_empty() {
        let _ = writeln!(o, "\nthresholds");
        for t in &r.thresholds {
            let _ = writeln!(
                o,
                "  {} {}  (observed {})",
                if t.passed { "pass" } else { "FAIL" },
                t.threshold,
                format_observed(&t.threshold, t.observed)
            );
        }
    }
    o
}

/// The server columns beside the client's, and every verdict.
fn render_verification(o: &mut String, r: &RunReport, summary: &Summary) {
    if let Some(e) = &r.verification_error {
        let _ = writeln!(o, "\nverification not run: {e}");
    }
    let Some(v) = &r.verification else {
        return;
    };
    let _ = writeln!(
        o,
        "\nserver side · {} · verdict {:.1}s after the load ended",
        v.source, v.verdict_after_s
    );
    let name_w = v
        .server
        .iter()
        .map(|f| f.request.chars().count())
        .max()
        .unwrap_or(7)
        .max(7);
    let _ = writeln!(
        o,
        "{:<name_w$} {:<10} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "request",
        "convention",
        "server",
        "client",
        "5xx srv",
        "5xx cli",
        "p50",
        "p95",
        "p99",
        "mean"
    );
    for f in &v.server {
        let row = summary.rows.iter().find(|row| row.name == f.request);
        let client_5xx: u64 = row.map_or(0, |row| {
            row.outcomes
                .iter()
                .filter(|o| is_server_error(o.outcome))
                .map(|o| o.count)
                .sum()
        });
        let num = |x: Option<f64>| x.map_or("-".to_owned(), |x| thousands(x.round() as u64));
        let dur = |x: Option<f64>| x.map_or("-".to_owned(), |x| format_micros((x * 1e6) as u64));
        let _ = writeln!(
            o,
            "{:<name_w$} {:<10} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            f.request,
            f.convention,
            num(f.count),
            match (f.client_count, row) {
                (Some(n), _) => thousands(n.round() as u64),
                (None, Some(row)) => thousands(responses(row)),
                (None, None) => "-".to_owned(),
            },
            num(f.errors),
            thousands(client_5xx),
            dur(f.quantile(0.5)),
            dur(f.quantile(0.95)),
            dur(f.quantile(0.99)),
            dur(f.mean_s),
        );
    }
    let count = |s: Status| v.verdicts.iter().filter(|x| x.status == s).count();
    let _ = writeln!(
        o,
        "\nverification: {} check{} · {} pass · {} failed · {} no data · {} skipped",
        v.verdicts.len(),
        if v.verdicts.len() == 1 { "" } else { "s" },
        count(Status::Pass),
        count(Status::Fail),
        count(Status::NoData),
        count(Status::Skipped)
    );
    let w = v
        .verdicts
        .iter()
        .map(|x| x.name().chars().count())
        .max()
        .unwrap_or(10);
    for x in &v.verdicts {
        let _ = writeln!(
            o,
            "  {:<7} {:<w$}  {}",
            x.status.label(),
            x.name(),
            x.summary
        );
        if let Some(d) = &x.diagnosis {
            let _ = writeln!(o, "  {:<7} {:<w$}  → {d}", "", "");
        }
        if x.status.failed() && !x.query.is_empty() {
            let _ = writeln!(
                o,
                "  {:<7} {:<w$}  query: {} @ {}",
                "",
                "",
                x.query,
                rfc3339(x.eval_unix_ms)
            );
        }
        for warning in &x.warnings {
            let _ = writeln!(o, "  {:<7} {:<w$}  warning: {warning}", "", "");
        }
    }
}

/// A 5xx, or a gRPC code that means the server failed (as the gRPC
/// metric conventions count errors).
fn is_server_error(out: Outcome) -> bool {
    use crate::verify::convention;
    match out {
        Outcome::Status(c) => c >= 500,
        Outcome::Grpc(c) => convention::is_server_error(c.go_name()),
        Outcome::Transport(_) | Outcome::CheckFailed(_) => false,
    }
}

/// Requests of a row that got a response (an HTTP status or a gRPC code).
fn responses(row: &super::Row) -> u64 {
    row.outcomes
        .iter()
        .filter(|o| o.outcome.is_response())
        .map(|o| o.count)
        .sum()
}

/// A Unix time in ms as RFC 3339 UTC.
pub(super) fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}
