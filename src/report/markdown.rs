//! A Markdown summary for CI job pages (GitHub's `$GITHUB_STEP_SUMMARY`,
//! merge-request notes).

use std::fmt::Write as _;

use super::{RunReport, Summary, format_observed};
use crate::scenario::units::format_micros;
use crate::verify::Status;

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// Renders the report as Markdown.
pub fn render_markdown(r: &RunReport, summary: &Summary) -> String {
    let mut o = String::new();
    let failed = r.thresholds.iter().any(|t| !t.passed)
        || r.verification_failed()
        || r.verification_error.is_some()
        || r.failure.is_some()
        || r.aborted.is_some();
    let _ = writeln!(
        o,
        "## {} redproof · {}\n",
        if failed { "❌" } else { "✅" },
        cell(&r.scenario.name)
    );
    let _ = writeln!(
        o,
        "Load {:.1}s, drain {:.1}s{}.\n",
        r.timing.load_s,
        (r.timing.elapsed_s - r.timing.load_s).max(0.0),
        if r.interrupted { ", interrupted" } else { "" }
    );
    for s in &r.scenarios {
        let _ = writeln!(
            o,
            "- scenario `{}`: {}, from {:.1}s, load {:.1}s",
            cell(&s.name),
            super::parts::describe(&s.load),
            s.start_s,
            s.load_s
        );
    }
    if !r.scenarios.is_empty() {
        let _ = writeln!(o);
    }
    if let Some(e) = &r.failure {
        let _ = writeln!(o, "**Run failed:** {}\n", cell(e));
    }
    if let Some(why) = &r.aborted {
        let _ = writeln!(o, "**Run aborted:** {}\n", cell(why));
    }
    let _ = writeln!(
        o,
        "| request | count | rps | errors | p50 | p95 | p99 | server count | server p95 |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in summary.table_rows() {
        let server = r.verification.as_ref().and_then(|v| v.figures(&row.name));
        let lat = |us: u64| {
            if row.count == 0 {
                "-".to_owned()
            } else {
                format_micros(us)
            }
        };
        let _ = writeln!(
            o,
            "| {} | {} | {:.1} | {} ({:.2}%) | {} | {} | {} | {} | {} |",
            cell(&row.name),
            row.count,
            row.rps,
            row.errors,
            row.error_ratio * 100.0,
            lat(row.p50_us),
            lat(row.p95_us),
            lat(row.p99_us),
            server
                .and_then(|f| f.count)
                .map_or("-".into(), |c| format!("{c:.0}")),
            server
                .and_then(|f| f.quantile(0.95))
                .map_or("-".into(), |q| format_micros((q * 1e6) as u64)),
        );
    }
    if let Some(e) = &r.verification_error {
        let _ = writeln!(o, "\n**Verification not run:** {}", cell(e));
    }
    if let Some(v) = &r.verification {
        let _ = writeln!(o, "\n### Verification\n\nSource: {}.\n", cell(&v.source));
        let _ = writeln!(o, "| check | verdict | figures |");
        let _ = writeln!(o, "|---|---|---|");
        for x in &v.verdicts {
            let mark = match x.status {
                Status::Pass => "✅ pass",
                Status::Fail => "❌ fail",
                Status::NoData => "❌ no data",
                Status::Skipped => "⏭ skipped",
            };
            let _ = writeln!(o, "| `{}` | {mark} | {} |", x.name(), cell(&x.summary));
        }
        let failures: Vec<_> = v.verdicts.iter().filter(|x| x.status.failed()).collect();
        if !failures.is_empty() {
            let _ = writeln!(o, "\n#### Diagnoses\n");
            for x in failures {
                let _ = writeln!(
                    o,
                    "- **{}**: {}{}",
                    x.name(),
                    cell(x.diagnosis.as_deref().unwrap_or(&x.summary)),
                    if x.query.is_empty() {
                        String::new()
                    } else {
                        format!(" (`{}`)", x.query.replace('`', "'"))
                    }
                );
            }
        }
    }
    if !r.thresholds.is_empty() {
        let _ = writeln!(o, "\n### Thresholds\n");
        let _ = writeln!(o, "| threshold | observed | verdict |");
        let _ = writeln!(o, "|---|---:|---|");
        for t in &r.thresholds {
            let _ = writeln!(
                o,
                "| `{}` | {} | {} |",
                t.threshold.text.replace('`', "'"),
                format_observed(&t.threshold, t.observed),
                if t.passed { "✅ pass" } else { "❌ fail" }
            );
        }
    }
    o
}
