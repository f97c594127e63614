//! The server's figures beside the client's, the verification checks and
//! the thresholds: failures first and in full, then what was skipped,
//! then the passes (one line for all of them when something failed; the
//! results file, JUnit and Markdown keep every pass's figures).

use std::fmt::Write as _;

use super::layout::{Tone, hanging, name_width, pad, table_row, wrap_into};
use super::{FIGURES_W, rfc3339};
use crate::outcome::Outcome;
use crate::report::{Row, RunReport, Summary, ThresholdResult, format_observed};
use crate::scenario::units::{format_micros, thousands};
use crate::verify::{Status, Verdict};

/// Names in the checks' lists are aligned up to this width.
const CHECK_NAME_W: usize = 24;

/// Where a check's wrapped text starts: after `  ` and the status label.
const CHECK_INDENT: usize = 10;

fn tone(s: Status) -> Tone {
    match s {
        Status::Pass => Tone::Pass,
        Status::Fail => Tone::Fail,
        Status::NoData => Tone::NoData,
        Status::Skipped => Tone::Skipped,
    }
}

/// The server's figures and every verification check.
pub(super) fn verification(o: &mut String, r: &RunReport, summary: &Summary) {
    if let Some(e) = &r.verification_error {
        o.push('\n');
        hanging(
            o,
            "verification not run: ",
            &format!("{}: ", Tone::Fail.paint("verification not run")),
            e,
            2,
        );
    }
    let Some(v) = &r.verification else {
        return;
    };
    o.push('\n');
    wrap_into(
        o,
        &format!(
            "server side · {} · verdict {:.1}s after the load ended",
            v.source, v.verdict_after_s
        ),
        "",
        "  ",
    );
    server_table(o, r, summary);

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
    let names: Vec<String> = v.verdicts.iter().map(Verdict::name).collect();
    let w = name_width(names.iter().map(String::as_str), 0, CHECK_NAME_W);
    let failed = v.verdicts.iter().any(|x| x.status.failed());
    for status in [Status::Fail, Status::NoData, Status::Skipped] {
        for (x, name) in v
            .verdicts
            .iter()
            .zip(&names)
            .filter(|(x, _)| x.status == status)
        {
            check(o, x, name, w);
        }
    }
    let passes = v
        .verdicts
        .iter()
        .zip(&names)
        .filter(|(x, _)| x.status == Status::Pass);
    if failed {
        let all: Vec<&str> = passes.map(|(_, n)| n.as_str()).collect();
        passed_in_one(o, "pass    ", &all, CHECK_INDENT);
    } else {
        for (x, name) in passes {
            check(o, x, name, w);
        }
    }
}

/// One check: its status, name and figures; a failed one with its
/// diagnosis, query and warnings.
fn check(o: &mut String, x: &Verdict, name: &str, w: usize) {
    let label = x.status.label();
    let lead = format!("  {} {}  ", pad(label, 7), pad(name, w));
    let styled = format!(
        "  {}{} {}  ",
        tone(x.status).paint(label),
        " ".repeat(7 - label.len()),
        pad(name, w)
    );
    hanging(o, &lead, &styled, &x.summary, CHECK_INDENT);
    let more = " ".repeat(CHECK_INDENT);
    if let Some(d) = &x.diagnosis {
        hanging(
            o,
            &format!("{more}→ "),
            &format!("{more}→ "),
            d,
            CHECK_INDENT + 2,
        );
    }
    if x.status.failed() && !x.query.is_empty() {
        let text = format!("query: {} @ {}", x.query, rfc3339(x.eval_unix_ms));
        hanging(o, &more, &more, &text, CHECK_INDENT + 2);
    }
    for warning in &x.warnings {
        let text = format!("warning: {warning}");
        hanging(o, &more, &more, &text, CHECK_INDENT + 2);
    }
}

/// Every pass on one wrapped line: `pass    a.count, a.errors, …`.
fn passed_in_one(o: &mut String, lead: &str, names: &[&str], indent: usize) {
    if names.is_empty() {
        return;
    }
    let label = lead.trim_end();
    let styled = format!("  {}{}", Tone::Pass.paint(label), &lead[label.len()..]);
    hanging(o, &format!("  {lead}"), &styled, &names.join(", "), indent);
}

/// Server and client counts, 5xx and the server's latency quantiles.
fn server_table(o: &mut String, r: &RunReport, summary: &Summary) {
    let Some(v) = &r.verification else { return };
    let name_w = name_width(
        v.server.iter().map(|f| f.request.as_str()),
        7,
        super::layout::WIDTH - FIGURES_W,
    );
    let _ = writeln!(
        o,
        "{}{:>10} {:>9} {:>7} {:>7} {:>8} {:>8} {:>8}",
        pad("request", name_w),
        "server",
        "client",
        "5xx srv",
        "5xx cli",
        "≈p50",
        "≈p95",
        "≈p99"
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
        let est = |x: Option<f64>| {
            x.map_or("-".to_owned(), |x| {
                format!("≈{}", format_micros((x * 1e6) as u64))
            })
        };
        let client = match (f.client_count, row) {
            (Some(n), _) => thousands(n.round() as u64),
            (None, Some(row)) => thousands(responses(row)),
            (None, None) => "-".to_owned(),
        };
        let figures = format!(
            "{:>10} {:>9} {:>7} {:>7} {:>8} {:>8} {:>8}",
            num(f.count),
            client,
            num(f.errors),
            thousands(client_5xx),
            est(f.quantile(0.5)),
            est(f.quantile(0.95)),
            est(f.quantile(0.99)),
        );
        table_row(o, "", &f.request, name_w, &figures);
    }
    let mut conventions: Vec<(&str, Vec<&str>)> = Vec::new();
    for f in &v.server {
        match conventions.iter_mut().find(|(c, _)| *c == f.convention) {
            Some((_, requests)) => requests.push(&f.request),
            None => conventions.push((&f.convention, vec![&f.request])),
        }
    }
    let conventions = match conventions.as_slice() {
        [] => String::new(),
        [(c, _)] => (*c).to_owned(),
        many => many
            .iter()
            .map(|(c, requests)| format!("{c} ({})", requests.join(", ")))
            .collect::<Vec<_>>()
            .join(" · "),
    };
    wrap_into(
        o,
        &format!("≈ estimated within the server's histogram buckets · convention: {conventions}"),
        "",
        "  ",
    );
}

/// The thresholds, failed ones first.
pub(super) fn thresholds(o: &mut String, r: &RunReport) {
    if r.thresholds.is_empty() {
        return;
    }
    let failed = r.thresholds.iter().filter(|t| !t.passed).count();
    let _ = writeln!(
        o,
        "\nthresholds: {} · {} pass · {} failed{}",
        r.thresholds.len(),
        r.thresholds.len() - failed,
        failed,
        if r.shard.is_some() {
            " (judged on the merged results)"
        } else {
            ""
        }
    );
    // One threshold with what was observed, under `label` in `tone`.
    let line = |o: &mut String, t: &ThresholdResult, label: &str, tone: Tone| {
        let text = format!(
            "{}  (observed {})",
            t.threshold,
            format_observed(&t.threshold, t.observed)
        );
        hanging(
            o,
            &format!("  {label} "),
            &format!("  {} ", tone.paint(label)),
            &text,
            7,
        );
    };
    for t in r.thresholds.iter().filter(|t| !t.passed) {
        line(o, t, "FAIL", Tone::Fail);
    }
    let passes = r.thresholds.iter().filter(|t| t.passed);
    if failed > 0 {
        let all: Vec<String> = passes.map(|t| t.threshold.to_string()).collect();
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        passed_in_one(o, "pass ", &all, 7);
    } else {
        for t in passes {
            line(o, t, "pass", Tone::Pass);
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
fn responses(row: &Row) -> u64 {
    row.outcomes
        .iter()
        .filter(|o| o.outcome.is_response())
        .map(|o| o.count)
        .sum()
}
