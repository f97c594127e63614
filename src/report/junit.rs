//! JUnit XML: one test case per verification check and per threshold, so
//! CI systems show each as its own pass or failure.

use std::fmt::Write as _;

use super::{RunReport, format_observed};
use crate::verify::Status;

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

struct Case {
    class: String,
    name: String,
    /// `None` passes; `Some((kind, message, details))` fails.
    failure: Option<(String, String, String)>,
    skipped: Option<String>,
    /// What was observed, also for a pass: a gate that passed by a hair
    /// should be seen.
    observed: Option<String>,
}

/// Renders the report as JUnit XML.
pub fn render_junit(r: &RunReport) -> String {
    let mut cases = Vec::new();
    for t in &r.thresholds {
        cases.push(Case {
            class: "redproof.thresholds".into(),
            name: t.threshold.text.clone(),
            failure: (!t.passed).then(|| {
                (
                    "threshold".into(),
                    format!("observed {}", format_observed(&t.threshold, t.observed)),
                    String::new(),
                )
            }),
            skipped: None,
            observed: Some(format!(
                "observed {}",
                format_observed(&t.threshold, t.observed)
            )),
        });
    }
    if let Some(e) = &r.failure {
        cases.push(Case {
            class: "redproof.run".into(),
            name: "engine".into(),
            failure: Some(("internal".into(), e.clone(), String::new())),
            skipped: None,
            observed: None,
        });
    }
    if let Some(why) = &r.aborted {
        cases.push(Case {
            class: "redproof.run".into(),
            name: "on_start".into(),
            failure: Some(("aborted".into(), why.clone(), String::new())),
            skipped: None,
            observed: None,
        });
    }
    if let Some(e) = &r.verification_error {
        cases.push(Case {
            class: "redproof.verify".into(),
            name: "source".into(),
            failure: Some(("unavailable".into(), e.clone(), String::new())),
            skipped: None,
            observed: None,
        });
    }
    if let Some(v) = &r.verification {
        for x in &v.verdicts {
            let mut details = String::new();
            if let Some(d) = &x.diagnosis {
                let _ = writeln!(details, "{d}");
            }
            if !x.query.is_empty() {
                let _ = writeln!(
                    details,
                    "query: {} @ {}",
                    x.query,
                    super::text::rfc3339(x.eval_unix_ms)
                );
            }
            for w in &x.warnings {
                let _ = writeln!(details, "warning: {w}");
            }
            cases.push(Case {
                class: format!(
                    "redproof.verify{}",
                    x.request
                        .as_ref()
                        .map(|r| format!(".{r}"))
                        .unwrap_or_default()
                ),
                name: x.check.clone(),
                failure: x.status.failed().then(|| {
                    (
                        if x.status == Status::NoData {
                            "no_data".into()
                        } else {
                            "verification".into()
                        },
                        x.summary.clone(),
                        details,
                    )
                }),
                skipped: (x.status == Status::Skipped).then(|| x.summary.clone()),
                observed: Some(x.summary.clone()),
            });
        }
    }
    let failures = cases.iter().filter(|c| c.failure.is_some()).count();
    let skipped = cases.iter().filter(|c| c.skipped.is_some()).count();
    let mut o = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let suite = esc(&format!("redproof: {}", r.scenario.name));
    let _ = writeln!(
        o,
        "<testsuites name=\"redproof\" tests=\"{}\" failures=\"{failures}\" time=\"{:.3}\">",
        cases.len(),
        r.timing.elapsed_s
    );
    let _ = writeln!(
        o,
        "  <testsuite name=\"{suite}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" timestamp=\"{}\" time=\"{:.3}\">",
        cases.len(),
        super::text::rfc3339(r.timing.t0_unix_ms as i64),
        r.timing.elapsed_s
    );
    for c in &cases {
        let _ = write!(
            o,
            "    <testcase classname=\"{}\" name=\"{}\" time=\"0\"",
            esc(&c.class),
            esc(&c.name)
        );
        match (&c.failure, &c.skipped) {
            (Some((kind, message, details)), _) => {
                let _ = writeln!(
                    o,
                    ">\n      <failure type=\"{}\" message=\"{}\">{}</failure>\n    </testcase>",
                    esc(kind),
                    esc(message),
                    esc(details)
                );
            }
            (None, Some(why)) => {
                let _ = writeln!(
                    o,
                    ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                    esc(why)
                );
            }
            (None, None) => match &c.observed {
                Some(observed) => {
                    let _ = writeln!(
                        o,
                        ">\n      <system-out>{}</system-out>\n    </testcase>",
                        esc(observed)
                    );
                }
                None => {
                    let _ = writeln!(o, "/>");
                }
            },
        }
    }
    o.push_str("  </testsuite>\n</testsuites>\n");
    o
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_xml() {
        assert_eq!(
            super::esc("a < b & \"c\"\u{1}"),
            "a &lt; b &amp; &quot;c&quot;"
        );
    }
}
