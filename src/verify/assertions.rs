//! The scenario's own assertions on the server side: `alerts:` that must
//! (or must not) fire during the run, and `promql:` expressions checked
//! against limits.

use super::*;

pub(super) async fn check_alerts<M: MetricSource>(
    source: &M,
    v: &Verification,
    client: &ClientRun,
    s: i64,
) -> Result<Vec<Verdict>, SourceError> {
    let mut out = Vec::new();
    for a in &v.alerts {
        let sel = Selector::new(
            "ALERTS",
            vec![
                crate::promql::Matcher::new("alertname", crate::promql::MatchOp::Eq, &a.name)
                    .expect("alertname is a valid label"),
            ],
        );
        let verdict = |status, summary: String, diagnosis: Option<String>, query: String| Verdict {
            request: None,
            check: "alert".into(),
            status,
            summary,
            diagnosis,
            query,
            eval_unix_ms: s,
            warnings: Vec::new(),
        };
        if !source.supports_promql() {
            out.push(verdict(
                Status::NoData,
                format!("alert {} cannot be checked", a.name),
                Some(
                    "alerts live in Prometheus: give `metrics.prometheus` or --prometheus URL"
                        .into(),
                ),
                sel.to_string(),
            ));
            continue;
        }
        let f = source.samples(&sel, client.t0_ms, s).await?;
        let state = |st: &str| {
            f.series
                .iter()
                .any(|x| x.labels.get("alertstate").is_some_and(|v| v == st))
        };
        let (fired, pending) = (state("firing"), state("pending"));
        let q = f.query.clone();
        out.push(match (a.fires, fired) {
            (true, true) => verdict(Status::Pass, format!("alert {} fired during the run", a.name), None, q),
            (false, false) => verdict(
                Status::Pass,
                format!("alert {} stayed silent during the run", a.name),
                None,
                q,
            ),
            (true, false) => verdict(
                Status::Fail,
                format!("alert {} never fired", a.name),
                Some(if pending {
                    "it was pending: its `for:` is longer than the load lasted; run longer or shorten `for:`".into()
                } else {
                    "the rule's expression never held: check the rule is loaded (Prometheus' rule_files), its expression, and that the rule evaluation interval is short enough".into()
                }),
                q,
            ),
            (false, true) => verdict(
                Status::Fail,
                format!("alert {} fired during the run", a.name),
                Some("the alert was expected to stay silent under this load".into()),
                q,
            ),
        });
    }
    Ok(out)
}

pub(super) async fn check_promql<M: MetricSource>(
    source: &M,
    v: &Verification,
    s: i64,
) -> Result<Vec<Verdict>, SourceError> {
    let mut out = Vec::new();
    for p in &v.promql {
        let op = p.op.as_str();
        let mut verdict = Verdict {
            request: None,
            check: format!("promql {}", p.name),
            status: Status::NoData,
            summary: String::new(),
            diagnosis: None,
            query: p.query.clone(),
            eval_unix_ms: s,
            warnings: Vec::new(),
        };
        match source.instant(&p.query, s).await {
            Err(SourceError::Unsupported(m)) => {
                verdict.summary = "not evaluated".into();
                verdict.diagnosis = Some(m);
            }
            Err(SourceError::Query(m)) => {
                verdict.status = Status::Fail;
                verdict.summary = "the query failed".into();
                verdict.diagnosis = Some(m);
            }
            Err(e) => return Err(e),
            Ok(f) => {
                verdict.warnings = f.warnings;
                match f.series.as_slice() {
                    [] => verdict.summary = "the query returned nothing".into(),
                    [one] => match one.samples.last() {
                        Some((_, x)) if x.is_finite() => {
                            verdict.status = Status::pass_if(p.op.holds(*x, p.value));
                            verdict.summary = format!("{x} {op} {}", p.value);
                        }
                        _ => verdict.summary = "the query returned no number".into(),
                    },
                    many => {
                        verdict.status = Status::Fail;
                        verdict.summary =
                            format!("the query returned {} series; expected one", many.len());
                        verdict.diagnosis = Some(format!(
                            "aggregate it, e.g. `sum({})`; series: {}",
                            p.query,
                            many.iter()
                                .take(3)
                                .map(|s| s.describe())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                }
            }
        }
        out.push(verdict);
    }
    Ok(out)
}
