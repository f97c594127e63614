//! A Markdown summary for CI job pages (GitHub's `$GITHUB_STEP_SUMMARY`,
//! merge-request notes).

use std::fmt::Write as _;

use super::cells::RowCells;
use super::{RunReport, Summary, format_observed};
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
            super::profile::describe(&s.load),
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
    let failed_verdicts: Vec<_> = r
        .verification
        .iter()
        .flat_map(|v| &v.verdicts)
        .filter(|x| x.status.failed())
        .collect();
    let failed_thresholds: Vec<_> = r.thresholds.iter().filter(|t| !t.passed).collect();
    if let Some(e) = &r.verification_error {
        let _ = writeln!(o, "**Verification not run:** {}\n", cell(e));
    }
    if !failed_verdicts.is_empty() || !failed_thresholds.is_empty() {
        let _ = writeln!(o, "### Failures\n");
        for x in &failed_verdicts {
            let _ = writeln!(
                o,
                "- **{}** ({}): {}{}",
                x.name(),
                if x.status == Status::NoData {
                    "no data"
                } else {
                    "fail"
                },
                cell(x.diagnosis.as_deref().unwrap_or(&x.summary)),
                if x.query.is_empty() {
                    String::new()
                } else {
                    format!(" (`{}`)", x.query.replace('`', "'"))
                }
            );
        }
        for t in &failed_thresholds {
            let _ = writeln!(
                o,
                "- **threshold `{}`**: observed {}",
                t.threshold.text.replace('`', "'"),
                format_observed(&t.threshold, t.observed)
            );
        }
        let _ = writeln!(o);
    }
    let _ = writeln!(
        o,
        "| request | count | rps | errors | statuses | p50 | p95 | p99 | server count | server p95 |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|");
    for row in summary.table_rows() {
        let c = RowCells::of(r, row);
        let statuses: Vec<String> = row
            .outcomes
            .iter()
            .map(|x| {
                format!(
                    "{}{} × {}",
                    x.outcome,
                    if x.ok { "" } else { " ❌" },
                    x.count
                )
            })
            .collect();
        let _ = writeln!(
            o,
            "| {} | {} | {:.1} | {} ({:.2}%) | {} | {} | {} | {} | {} | {} |",
            cell(&row.name),
            row.count,
            row.rps,
            row.errors,
            row.error_ratio * 100.0,
            cell(&statuses.join(", ")),
            c.p50,
            c.p95,
            c.p99,
            c.server_count,
            c.server_p95,
        );
    }
    let _ = writeln!(
        o,
        "\nServer p95 is interpolated within the server's histogram buckets."
    );
    if let Some(v) = &r.verification {
        let _ = writeln!(o, "\n### Verification\n\nSource: {}.\n", cell(&v.source));
        let (failed, rest): (Vec<_>, Vec<_>) = v.verdicts.iter().partition(|x| x.status.failed());
        if !failed.is_empty() {
            verdict_table(&mut o, &failed);
        }
        if !rest.is_empty() {
            let _ = writeln!(
                o,
                "<details><summary>{} checks passed or skipped</summary>\n",
                rest.len()
            );
            verdict_table(&mut o, &rest);
            let _ = writeln!(o, "\n</details>");
        }
    }
    if !r.thresholds.is_empty() {
        let _ = writeln!(o, "\n### Thresholds\n");
        let passed: Vec<_> = r.thresholds.iter().filter(|t| t.passed).collect();
        if !failed_thresholds.is_empty() {
            threshold_table(&mut o, &failed_thresholds);
        }
        if !passed.is_empty() {
            let _ = writeln!(
                o,
                "<details><summary>{} thresholds passed</summary>\n",
                passed.len()
            );
            threshold_table(&mut o, &passed);
            let _ = writeln!(o, "\n</details>");
        }
    }
    o
}

fn verdict_table(o: &mut String, verdicts: &[&crate::verify::Verdict]) {
    let _ = writeln!(o, "| check | verdict | figures |");
    let _ = writeln!(o, "|---|---|---|");
    for x in verdicts {
        let mark = match x.status {
            Status::Pass => "✅ pass",
            Status::Fail => "❌ fail",
            Status::NoData => "❌ no data",
            Status::Skipped => "⏭ skipped",
        };
        let _ = writeln!(o, "| `{}` | {mark} | {} |", x.name(), cell(&x.summary));
    }
}

fn threshold_table(o: &mut String, thresholds: &[&super::ThresholdResult]) {
    let _ = writeln!(o, "| threshold | observed | verdict |");
    let _ = writeln!(o, "|---|---:|---|");
    for t in thresholds {
        let _ = writeln!(
            o,
            "| `{}` | {} | {} |",
            t.threshold.text.replace('`', "'"),
            format_observed(&t.threshold, t.observed),
            if t.passed { "✅ pass" } else { "❌ fail" }
        );
    }
}
