//! Preflight: before any traffic, what can be known about the metric
//! source and the `verify:` entries. The source answers; it scrapes
//! targets and their scrape interval is known; each entry's `job` and
//! `instance` matchers select a scraped target (else no series can ever
//! match); each entry's metric family is exported by a target, and has
//! every label the entry matches on (a family's labels are fixed). Series of
//! a labelled family are born with the first request they count, so the
//! family (any series of the metric, whatever its labels) is looked for,
//! never the entry's series; and a family no target exports yet is
//! reported as a warning, because many libraries (client_golang, the
//! Rust client) export a labelled family only once it has a child.

use std::collections::BTreeSet;
use std::time::Duration;

use super::convention::Names;
use super::{LOOKBACK_MS, Status, Verdict};
use crate::metrics::{MetricSource, SourceError, TargetStatus};
use crate::promql::Selector;
use crate::scenario::verification::Verification;

/// What preflight found.
#[derive(Debug, Default)]
pub struct Preflight {
    /// Entries that can never match, and a source with nothing to read:
    /// the run stops before the load (exit 2).
    pub failures: Vec<Verdict>,
    /// Worth knowing before the load; the checks after it decide.
    pub warnings: Vec<String>,
    /// The targets' scrape interval.
    pub interval: Option<Duration>,
    /// Scraped targets.
    pub targets: usize,
}

fn failure(entry: &str, summary: String, diagnosis: String, query: String, now: i64) -> Verdict {
    Verdict {
        request: Some(entry.to_owned()),
        check: "preflight".into(),
        status: Status::Fail,
        summary,
        diagnosis: Some(diagnosis),
        query,
        eval_unix_ms: now,
        warnings: Vec::new(),
    }
}

fn list(targets: &[TargetStatus], label: &str) -> String {
    let values: BTreeSet<&str> = targets
        .iter()
        .map(|t| {
            if label == "job" {
                t.job.as_str()
            } else {
                t.instance.as_str()
            }
        })
        .collect();
    values.into_iter().collect::<Vec<_>>().join(", ")
}

/// Runs preflight against a source that answers (check that first), as
/// of `now` (ms since the Unix epoch).
pub async fn preflight<M: MetricSource>(
    source: &M,
    v: &Verification,
    now: i64,
) -> Result<Preflight, SourceError> {
    let mut out = Preflight::default();
    let targets = source.targets().await?;
    out.targets = targets.len();
    out.interval = targets.iter().filter_map(|t| t.interval).max();
    if v.entries.is_empty() {
        return Ok(out);
    }
    if targets.is_empty() {
        out.failures.push(Verdict {
            request: None,
            check: "preflight".into(),
            status: Status::Fail,
            summary: format!("{} scrapes no targets", source.describe()),
            diagnosis: Some(
                "no series can ever match: add the services' metrics endpoints to its scrape configuration (see ci/prometheus.yml)".into(),
            ),
            query: "/api/v1/targets".into(),
            eval_unix_ms: now,
            warnings: Vec::new(),
        });
        return Ok(out);
    }
    if out.interval.is_none() {
        out.warnings.push(format!(
            "{} does not say its targets' scrape interval; the settle wait assumes {}s",
            source.describe(),
            v.metrics.scrape_interval.as_secs_f64()
        ));
    }
    let mut seen: Vec<&str> = Vec::new();
    for e in &v.entries {
        // One verdict per entry as written, however many requests it covers.
        if seen.contains(&e.name.as_str()) {
            continue;
        }
        seen.push(&e.name);
        let names = Names::of(e);
        // Matchers on `job` and `instance` pick targets: none selected,
        // no series will ever match.
        let scoping: Vec<_> = e
            .matchers
            .iter()
            .filter(|m| m.label == "job" || m.label == "instance")
            .collect();
        let selected: Vec<&TargetStatus> = targets
            .iter()
            .filter(|t| {
                scoping.iter().all(|m| {
                    m.matches_value(if m.label == "job" {
                        &t.job
                    } else {
                        &t.instance
                    })
                })
            })
            .collect();
        if selected.is_empty() {
            let bad = scoping
                .iter()
                .map(|m| m.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let labels: BTreeSet<&str> = scoping.iter().map(|m| m.label.as_str()).collect();
            let found = labels
                .iter()
                .map(|l| format!("found {l}: {}", list(&targets, l)))
                .collect::<Vec<_>>()
                .join("; ");
            out.failures.push(failure(
                &e.name,
                format!("no scraped target has {bad}"),
                format!(
                    "`verify.{}` can never match: {found}. Fix the matcher, or add the target to the scrape configuration",
                    e.name
                ),
                names.requests.to_string(),
                now,
            ));
            continue;
        }
        // The family: any series of the metric (or of the other
        // generation of names) on the selected targets.
        let mut metrics = vec![names.requests.metric.clone()];
        if let Some(f) = &names.fallback {
            metrics.push(f.requests.metric.clone());
        }
        let mut exported = false;
        // The label names of the family's series on the selected targets:
        // a family's labels are fixed, so a matcher on a label none of
        // them has can never match a series born later either.
        let mut labels: BTreeSet<String> = BTreeSet::new();
        let mut family = String::new();
        for m in &metrics {
            let f = source
                .samples(
                    &Selector::new(m.clone(), Vec::new()),
                    now - LOOKBACK_MS,
                    now,
                )
                .await?;
            let held: Vec<_> = f
                .series
                .iter()
                .filter(|s| selected.iter().any(|t| t.holds(s)))
                .collect();
            if !held.is_empty() {
                exported = true;
                family = m.clone();
                labels = held.iter().flat_map(|s| s.labels.keys().cloned()).collect();
                break;
            }
        }
        if exported && names.fallback.is_none() {
            let missing: Vec<String> = e
                .matchers
                .iter()
                .filter(|m| !labels.contains(&m.label) && !m.matches_value(""))
                .map(|m| m.to_string())
                .collect();
            if !missing.is_empty() {
                let shown: Vec<&str> = labels
                    .iter()
                    .map(String::as_str)
                    .filter(|l| !matches!(*l, "job" | "instance" | "le"))
                    .collect();
                out.failures.push(failure(
                    &e.name,
                    format!(
                        "no series of `{family}` has the label of {}",
                        missing.join(", ")
                    ),
                    format!(
                        "`verify.{}` can never match: the labels of `{family}` are {}. Match on those, or check the convention",
                        e.name,
                        shown.join(", ")
                    ),
                    names.requests.to_string(),
                    now,
                ));
                continue;
            }
        }
        if !exported {
            out.warnings.push(format!(
                "`verify.{}`: no series of `{}` on {} yet (a labelled family appears with its first request); if none appear, the checks after the load say why",
                e.name,
                metrics.join("` or `"),
                if selected.len() == targets.len() {
                    "any scraped target".to_owned()
                } else {
                    selected
                        .iter()
                        .map(|t| t.describe())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::verification::{Convention, VerifyEntry};
    use crate::verify::testing::{MemorySource, T0, counter, entry};

    fn named(name: &str, e: VerifyEntry) -> VerifyEntry {
        VerifyEntry {
            name: name.into(),
            ..e
        }
    }

    fn run(src: &MemorySource, entries: Vec<VerifyEntry>) -> Preflight {
        let v = Verification {
            entries,
            ..Default::default()
        };
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(preflight(src, &v, T0))
            .unwrap()
    }

    /// polls' django family, with one series from an earlier run.
    fn polls() -> MemorySource {
        let mut src = MemorySource::default();
        src.add(
            "django_http_responses_total_by_status_view_method_total",
            &[("view", "other"), ("method", "GET"), ("status", "200")],
            counter(3.0, 0.0),
        );
        src
    }

    #[test]
    fn an_entry_whose_family_is_exported_passes_whatever_its_series() {
        // No series of this view yet: they are born with its first request.
        let p = run(
            &polls(),
            vec![named(
                "success",
                entry(Convention::Django, &[("view", "polls:2xx_success")]),
            )],
        );
        assert!(p.failures.is_empty(), "{p:#?}");
        assert!(p.warnings.is_empty(), "{p:#?}");
        assert_eq!(p.targets, 1);
        assert_eq!(p.interval, Some(Duration::from_secs(1)));
    }

    #[test]
    fn a_job_no_target_has_can_never_match() {
        let p = run(
            &polls(),
            vec![named(
                "success",
                entry(Convention::Django, &[("job", "pols"), ("view", "x")]),
            )],
        );
        assert_eq!(p.failures.len(), 1, "{p:#?}");
        let f = &p.failures[0];
        assert_eq!(f.name(), "success.preflight");
        assert_eq!(f.summary, "no scraped target has job=\"pols\"");
        assert!(
            f.diagnosis
                .as_deref()
                .unwrap()
                .contains("`verify.success` can never match: found job: polls"),
            "{f:#?}"
        );
    }

    #[test]
    fn a_label_the_family_does_not_have_can_never_match() {
        // A fastapi-style matcher on django's family.
        let p = run(
            &polls(),
            vec![named(
                "success",
                entry(Convention::Django, &[("handler", "/polls/")]),
            )],
        );
        assert_eq!(p.failures.len(), 1, "{p:#?}");
        let f = &p.failures[0];
        assert!(
            f.summary.contains("has the label of handler=\"/polls/\""),
            "{f:#?}"
        );
        assert!(
            f.diagnosis.as_deref().unwrap().contains(
                "the labels of `django_http_responses_total_by_status_view_method_total` are method, status, view"
            ),
            "{f:#?}"
        );
        // A value the family's label may take later is no failure.
        let p = run(
            &polls(),
            vec![named(
                "success",
                entry(Convention::Django, &[("view", "x")]),
            )],
        );
        assert!(p.failures.is_empty(), "{p:#?}");
    }

    #[test]
    fn a_family_not_exported_yet_is_a_note() {
        let p = run(
            &polls(),
            vec![named(
                "accounts",
                entry(Convention::Fastapi, &[("handler", "/accounts")]),
            )],
        );
        assert!(p.failures.is_empty(), "{p:#?}");
        assert_eq!(p.warnings.len(), 1, "{p:#?}");
        assert!(
            p.warnings[0].contains("`verify.accounts`: no series of `http_requests_total`"),
            "{p:#?}"
        );
    }

    #[test]
    fn a_source_with_no_targets_stops_every_entry() {
        let mut src = polls();
        src.targets.clear();
        let p = run(&src, vec![entry(Convention::Django, &[("view", "x")])]);
        assert_eq!(p.failures.len(), 1, "{p:#?}");
        assert!(p.failures[0].summary.contains("scrapes no targets"));
    }
}
