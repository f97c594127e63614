//! Hop consistency: a caller's client-side gRPC metrics against the
//! callee's server-side metrics for the same method, per code. Every
//! call the caller made reaches the callee's interceptor, so the callee
//! counts, per code, the caller's calls plus those redproof sent it
//! directly; a code short on the callee names calls lost between them
//! (or errors the callee does not count), a surplus names other callers.

use std::collections::{BTreeMap, BTreeSet};

use super::checks::{Checked, thousands};
use super::{Status, Verdict};
use crate::scenario::verification::VerifyEntry;

/// Client codes of calls the caller stopped waiting for; the callee
/// counts them under the code its handler returned.
const ABANDONED: [&str; 2] = ["DeadlineExceeded", "Canceled"];

fn first(entries: &[VerifyEntry], name: &str) -> Option<usize> {
    entries.iter().position(|e| e.name == name)
}

/// One `hop` verdict per client-side entry with a `callee:`.
/// A callee whose count falls short by exactly the calls the hop lost
/// gets the hop as its cause: its count is skipped with a pointer to it.
pub(super) fn check_hops(entries: &[VerifyEntry], checked: &mut [Checked], s: i64) -> Vec<Verdict> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let Some(callee_name) = &e.callee else {
            continue;
        };
        if first(entries, &e.name) != Some(i) {
            continue;
        }
        let Some(j) = first(entries, callee_name) else {
            continue;
        };
        let (caller, callee) = (&checked[i], &checked[j]);
        let mut v = Verdict {
            request: Some(e.name.clone()),
            check: "hop".into(),
            status: Status::Skipped,
            summary: String::new(),
            diagnosis: None,
            query: format!(
                "{} vs {}",
                caller
                    .verdicts
                    .iter()
                    .find(|v| v.check == "count")
                    .map_or("", |v| v.query.as_str()),
                callee
                    .verdicts
                    .iter()
                    .find(|v| v.check == "count")
                    .map_or("", |v| v.query.as_str()),
            ),
            eval_unix_ms: s,
            warnings: Vec::new(),
        };
        let callee_req = callee.figures.request.clone();
        if caller.figures.count.is_none() || callee.figures.count.is_none() {
            v.summary = format!(
                "the counts of {} are not usable (see their checks)",
                if caller.figures.count.is_none() {
                    &caller.figures.request
                } else {
                    &callee_req
                }
            );
            out.push(v);
            continue;
        }
        let direct: &BTreeMap<String, u64> = &callee.client.by_status;
        let keys: BTreeSet<&String> = caller
            .figures
            .by_status
            .keys()
            .chain(callee.figures.by_status.keys())
            .chain(direct.keys())
            .collect();
        let slack = callee.slack as f64;
        let mut parts = Vec::new();
        let mut problems = Vec::new();
        let mut lost = 0.0;
        for k in keys {
            let from_caller = caller.figures.by_status.get(k).copied().unwrap_or(0.0);
            let direct_k = direct.get(k).copied().unwrap_or(0) as f64;
            let counted = callee.figures.by_status.get(k).copied().unwrap_or(0.0);
            let expected = from_caller + direct_k;
            parts.push(if direct_k > 0.0 {
                format!(
                    "{k}: caller {} + direct {} / callee {}",
                    thousands(from_caller),
                    thousands(direct_k),
                    thousands(counted)
                )
            } else {
                format!(
                    "{k}: caller {} / callee {}",
                    thousands(from_caller),
                    thousands(counted)
                )
            });
            if (counted - expected).abs() <= slack + 1e-9 {
                continue;
            }
            // The callee missing its direct calls is its own finding
            // (count, errors), not the hop's.
            if from_caller == 0.0 && counted < expected {
                continue;
            }
            if counted < expected {
                lost += expected - counted;
            }
            let n = thousands((counted - expected).abs());
            problems.push(if counted < expected && ABANDONED.contains(&k.as_str()) {
                format!(
                    "the caller gave up on {n} calls ({k}, its deadline or a cancellation) that the callee finished under the code its handler returned"
                )
            } else if counted < expected && k == "OK" {
                format!(
                    "the caller counted {n} × OK the callee never counted: something else answered them (a proxy, a cache, an instance that is not scraped)"
                )
            } else if counted < expected {
                format!(
                    "the caller saw {n} × {k} the callee never counted: the calls failed between them (connection refused or reset, a proxy, the caller's own deadline), or the callee's interceptor does not count them"
                )
            } else {
                format!(
                    "the callee counted {n} × {k} more than the caller's calls and redproof's direct ones: other callers reach it (another service, retries), or the caller's client metrics miss calls"
                )
            });
        }
        v.status = Status::pass_if(problems.is_empty());
        v.summary = format!("{} → {}: {}", e.name, callee_name, parts.join(" · "));
        if !problems.is_empty() {
            v.diagnosis = Some(problems.join("; "));
        }
        // The callee's count short by exactly the calls lost on the hop:
        // one cause, reported once, on the hop.
        if lost > 0.0 {
            for (k, c) in entries.iter().zip(checked.iter_mut()) {
                if &k.name != callee_name {
                    continue;
                }
                let gap = c.client.responses as f64 - c.figures.count.unwrap_or(0.0);
                if let Some(count) = c
                    .verdicts
                    .iter_mut()
                    .find(|x| x.check == "count" && x.status == Status::Fail)
                    && (gap - lost).abs() <= c.slack as f64 + 0.5
                {
                    count.status = Status::Skipped;
                    count.summary = format!(
                        "{}: the {} missing are calls lost between {} and the callee (see {}.hop)",
                        count.summary,
                        thousands(lost),
                        e.name,
                        e.name
                    );
                    count.diagnosis = None;
                }
            }
        }
        out.push(v);
    }
    out
}
