//! The RED report as a terminal table.

use std::fmt::Write as _;

use super::{RunReport, Summary, format_observed};
use crate::measure::Outcome;
use crate::scenario::units::format_micros;

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Renders the report; `summary` comes from [`RunReport::summary`].
pub fn render_text(r: &RunReport, summary: &Summary) -> String {
    let mut o = String::new();
    let load = match (r.load.users, r.load.rate) {
        (Some(u), _) => format!("closed model, {u} users"),
        (_, Some(rate)) => format!("open model, {rate}/s"),
        _ => r.load.model.clone(),
    };
    let _ = writeln!(
        o,
        "redproof · {} · {} · load {:.1}s, drain {:.1}s{}",
        r.scenario.name,
        load,
        r.timing.load_s,
        (r.timing.elapsed_s - r.timing.load_s).max(0.0),
        if r.interrupted { " · INTERRUPTED" } else { "" }
    );
    let _ = writeln!(o);
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
    for row in summary.rows.iter().chain(std::iter::once(&summary.all)) {
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
    let _ = writeln!(o);
    let _ = writeln!(o, "outcomes (✗ = not expected)");
    for row in &summary.rows {
        let parts: Vec<String> = row
            .outcomes
            .iter()
            .map(|(out, ok, n)| format!("{out}{} × {}", if *ok { "" } else { " ✗" }, thousands(*n)))
            .collect();
        let _ = writeln!(
            o,
            "  {:<name_w$} {}",
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
            row.examples.iter().filter_map(move |(out, ex)| match out {
                Outcome::Transport(_) => Some(format!("  {:<name_w$} {out}: {ex}", row.name)),
                _ => None,
            })
        })
        .collect();
    if !transport.is_empty() {
        let _ = writeln!(o, "\ntransport errors (first message of each kind)");
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
    if let Some(s) = &r.schedule {
        let _ = writeln!(
            o,
            "\nschedule: {} late start{} (max {} behind), {} dropped",
            thousands(s.late_starts),
            if s.late_starts == 1 { "" } else { "s" },
            format_micros(s.max_lag_us),
            thousands(s.dropped)
        );
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_separators() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(1000), "1,000");
        assert_eq!(super::thousands(1234567), "1,234,567");
    }
}
