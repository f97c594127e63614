//! The RED report for a terminal: it fits 80 columns, lists failures
//! before passes, colours verdicts, and ends on the run's verdict line.
//!
//! - this module: the header and the client's figures;
//! - [`checks`]: the server's figures, verification checks, thresholds;
//! - [`layout`]: widths, wrapping and colours.

mod checks;
mod layout;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;

use super::{RunReport, RunVerdict, Summary};
use crate::measure::MessageCounts;
use crate::outcome::Outcome;
use crate::scenario::units::{format_micros, thousands};
use layout::{Tone, hanging, name_width, pad, table_row, wrap_into};

/// Columns of the RED table after the request's name.
const FIGURES_W: usize = 63;

/// Renders the report; `summary` comes from [`RunReport::summary`]. The
/// text carries ANSI colours: print it through `anstream`, which strips
/// them where they do not belong.
pub fn render_text(r: &RunReport, summary: &Summary) -> String {
    let mut o = String::new();
    header(&mut o, r);
    red_table(&mut o, summary);
    outcomes(&mut o, summary);
    notes(&mut o, r, summary);
    checks::verification(&mut o, r, summary);
    checks::thresholds(&mut o, r);
    verdict_line(&mut o, r);
    o
}

fn header(o: &mut String, r: &RunReport) {
    let run = format!(
        "redproof · {} · load {:.1}s, drain {:.1}s{}",
        r.scenario.name,
        r.timing.load_s,
        (r.timing.elapsed_s - r.timing.load_s).max(0.0),
        if r.interrupted { " · INTERRUPTED" } else { "" }
    );
    let load = super::cells::load_description(r);
    // The load profile follows the name, or goes on a line of its own
    // when both do not fit on one.
    let (name, rest) = run.split_at(run.find(" · load").unwrap_or(run.len()));
    let one_line = format!("{name} · {load}{rest}");
    if layout::width(&one_line) <= layout::WIDTH {
        o.push_str(&one_line);
        o.push('\n');
    } else {
        o.push_str(&run);
        o.push('\n');
        wrap_into(o, &load, "  ", "    ");
    }
    if let Some(e) = &r.failure {
        let styled = format!("{}: ", Tone::Fail.paint("RUN FAILED"));
        hanging(o, "RUN FAILED: ", &styled, e, 2);
    }
    if let Some(why) = &r.aborted {
        let styled = format!("{}: ", Tone::Fail.paint("RUN ABORTED"));
        hanging(o, "RUN ABORTED: ", &styled, why, 2);
    }
    if r.users_stopped > 0 {
        let _ = writeln!(
            o,
            "{} user{} stopped after failing `on_start` (on_start_failures)",
            thousands(r.users_stopped),
            if r.users_stopped == 1 { "" } else { "s" }
        );
    }
    o.push('\n');
    if !r.scenarios.is_empty() {
        let w = name_width(r.scenarios.iter().map(|s| s.name.as_str()), 0, 24);
        o.push_str("scenarios\n");
        for s in &r.scenarios {
            let lead = format!("  {}  ", pad(&s.name, w));
            let text = format!(
                "{} · from {:.1}s · load {:.1}s",
                super::profile::describe(&s.load),
                s.start_s,
                s.load_s
            );
            hanging(o, &lead, &lead, &text, 4);
        }
        o.push('\n');
    }
}

/// Client figures per request: count, rate, error ratio and latency.
fn red_table(o: &mut String, summary: &Summary) {
    let rows = summary.table_rows();
    let name_w = name_width(
        rows.iter().map(|r| r.name.as_str()),
        7,
        layout::WIDTH - FIGURES_W,
    );
    let _ = writeln!(
        o,
        "{}{:>10} {:>8} {:>7} {:>8} {:>8} {:>8} {:>8}",
        pad("request", name_w),
        "count",
        "rps",
        "err%",
        "p50",
        "p95",
        "p99",
        "max"
    );
    for row in &rows {
        let lat = |us: u64| {
            if row.has_latency() {
                format_micros(us)
            } else {
                "-".into()
            }
        };
        let figures = format!(
            "{:>10} {:>8.1} {:>6.2}% {:>8} {:>8} {:>8} {:>8}",
            thousands(row.count),
            row.rps,
            row.error_ratio * 100.0,
            lat(row.p50_us),
            lat(row.p95_us),
            lat(row.p99_us),
            lat(row.max_us),
        );
        table_row(o, "", &row.name, name_w, &figures);
    }
    if summary.rows.iter().any(|r| r.corrected.is_some()) {
        o.push_str(
            "\npacing-corrected latency (coordinated omission; latency thresholds use these)\n",
        );
        let _ = writeln!(
            o,
            "{}{:>10} {:>8} {:>8} {:>8}",
            pad("request", name_w),
            "p50",
            "p95",
            "p99",
            "max"
        );
        for row in &rows {
            if let Some([p50, p95, p99, max]) = row.corrected {
                let figures = format!(
                    "{:>10} {:>8} {:>8} {:>8}",
                    format_micros(p50),
                    format_micros(p95),
                    format_micros(p99),
                    format_micros(max)
                );
                table_row(o, "", &row.name, name_w, &figures);
            }
        }
    }
}

/// Each request's outcomes and their counts; the errors among them
/// marked.
fn outcomes(o: &mut String, summary: &Summary) {
    o.push_str("\noutcomes (✗ = not expected)\n");
    let name_w = name_width(summary.rows.iter().map(|r| r.name.as_str()), 0, 24);
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
        let mut text = if parts.is_empty() {
            "nothing completed".to_owned()
        } else {
            parts.join(" · ")
        };
        if row.messages != MessageCounts::default() {
            let _ = write!(
                text,
                "  (messages: {} sent, {} received)",
                thousands(row.messages.sent),
                thousands(row.messages.received)
            );
        }
        let lead = format!("  {} ", pad(&row.name, name_w));
        hanging(o, &lead, &lead, &text, 4);
    }
}

/// Transport errors, outcomes unknown, retries and the open model's
/// schedule.
fn notes(o: &mut String, r: &RunReport, summary: &Summary) {
    let mut transport = Vec::new();
    for row in &summary.rows {
        for e in &row.examples {
            if matches!(e.outcome, Outcome::Transport(_) | Outcome::CheckFailed(_)) {
                transport.push((
                    format!("  {} ", row.name),
                    format!("{}: {}", e.outcome, e.message),
                ));
            }
        }
    }
    if !transport.is_empty() {
        o.push_str("\ntransport errors and failed checks (first message of each kind)\n");
        for (lead, text) in transport {
            hanging(o, &lead, &lead, &text, 4);
        }
    }
    if summary.all.unknown > 0 {
        let parts: Vec<String> = summary
            .rows
            .iter()
            .filter(|r| r.unknown > 0)
            .map(|r| format!("{} × {}", r.name, thousands(r.unknown)))
            .collect();
        o.push('\n');
        wrap_into(
            o,
            &format!(
                "outcome unknown (still in flight when the drain ended): {}",
                parts.join(" · ")
            ),
            "",
            "  ",
        );
    }
    if summary.all.retries > 0 {
        let parts: Vec<String> = summary
            .rows
            .iter()
            .filter(|r| r.retries > 0)
            .map(|r| format!("{} × {}", r.name, thousands(r.retries)))
            .collect();
        o.push('\n');
        wrap_into(
            o,
            &format!(
                "sent again on a new connection (a kept-alive connection closed with no answer): {}",
                parts.join(" · ")
            ),
            "",
            "  ",
        );
    }
    if let Some(s) = &r.schedule {
        o.push('\n');
        wrap_into(
            o,
            &format!(
                "schedule: starts behind their due time by p50 {} · p99 {} · max {}; {} late start{} (over 5ms), {} dropped",
                format_micros(s.lag_p50_us),
                format_micros(s.lag_p99_us),
                format_micros(s.max_lag_us),
                thousands(s.late_starts),
                if s.late_starts == 1 { "" } else { "s" },
                thousands(s.dropped)
            ),
            "",
            "  ",
        );
    }
}

/// The last line: PASS or FAIL, the checks' counts and the exit code.
fn verdict_line(o: &mut String, r: &RunReport) {
    let v = RunVerdict::of(r);
    let word = v.word();
    let tone = if v.passed() { Tone::Pass } else { Tone::Fail };
    let lead = format!("{word} · ");
    // Which kinds of check failed is said again in their sections: it
    // goes first when the line would not fit.
    let mut details = v.details(r, true);
    if layout::width(&lead) + layout::width(&details.join(" · ")) > layout::WIDTH {
        details = v.details(r, false);
    }
    o.push('\n');
    layout::joined(o, &lead, &format!("{} · ", tone.paint(word)), &details);
}

/// A Unix time in ms as RFC 3339 UTC.
pub(super) fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}
