//! The count and errors checks: the server's increase over the run
//! against the responses the client got, in total and per status (HTTP
//! code, status class, or gRPC code in either library's spelling), with
//! the diagnoses for lost, uncounted and surplus requests.

use std::collections::{BTreeMap, BTreeSet};

use super::{Context, client_speaks_http, thousands};
use crate::metrics::{MetricSource, Series, SourceError};
use crate::verify::convention::{StatusSource, StatusStyle};

/// gRPC codes a client records when it stops waiting, whatever the server
/// does with the call afterwards (Go spellings, as the checks compare them).
const ABANDONED: [&str; 2] = ["DeadlineExceeded", "Canceled"];
use crate::verify::counters::{self, Increase};
use crate::verify::{Status, Verdict};

/// Server increases by raw status value.
pub(super) async fn server_by_status<M: MetricSource>(
    cx: &Context<'_, M>,
    series: &[(Series, Increase)],
) -> Result<BTreeMap<String, f64>, SourceError> {
    let mut out = BTreeMap::new();
    match &cx.names.status {
        None => {}
        Some(StatusSource::Label(l)) => {
            for (s, i) in series {
                let v = s.labels.get(l).cloned().unwrap_or_default();
                *out.entry(v).or_default() += i.delta;
            }
        }
        Some(StatusSource::MetricSuffix(prefix)) => {
            let sel = cx.names.status_metrics().expect("suffix style");
            for s in cx.fetch(&sel).await?.series {
                if let Some(i) = counters::increase(&s, cx.t0, cx.s) {
                    let code = s.name.strip_prefix(prefix.as_str()).unwrap_or(&s.name);
                    *out.entry(code.to_owned()).or_default() += i.delta;
                }
            }
        }
    }
    Ok(out)
}

/// The count check; also says whether the shortfall is exactly the 5xx
/// the server never counted.
pub(super) fn check_count<M: MetricSource>(
    cx: &Context<'_, M>,
    server: f64,
    server_keys: &BTreeMap<String, f64>,
    client_keys: &BTreeMap<String, u64>,
    query: &str,
    absent: bool,
) -> (Verdict, bool) {
    let client = cx.client.responses as f64;
    let slack = cx.entry.tolerance.count.of(cx.client.responses) as f64;
    let upper = client + cx.unsure() as f64 + slack;
    let lower = client - slack;
    let pass = server >= lower - 1e-9 && server <= upper + 1e-9;
    let range = if upper > client {
        format!(
            ", up to {} with {} unsure",
            thousands(upper),
            thousands(cx.unsure() as f64 + slack)
        )
    } else {
        String::new()
    };
    let derived = cx.client.derived_calls();
    let parts = if derived > 0 {
        format!(
            " ({} direct + {})",
            thousands(client - derived as f64),
            cx.client
                .derived
                .iter()
                .map(|d| format!("{} from {}", thousands(d.calls as f64), d.from))
                .collect::<Vec<_>>()
                .join(" + ")
        )
    } else {
        String::new()
    };
    let mut v = cx.verdict(
        "count",
        Status::pass_if(pass),
        format!(
            "server {} {} client {}{parts}{range}",
            thousands(server),
            if pass { "=" } else { "≠" },
            thousands(client)
        ),
        query,
    );
    if absent {
        v.warnings.push(
            "no series matched but the metric is exported with other labels, so the server counted 0"
                .into(),
        );
    }
    if pass {
        return (v, false);
    }
    let ratio = if server > 0.0 { client / server } else { 0.0 };
    let workers = ratio.round();
    let missing = client - server;
    // Statuses the server never counts when errors bypass its
    // instrumentation: HTTP 5xx (exceptions), or any gRPC code but OK
    // (an interceptor that records only calls that return normally).
    let grpc = client_keys
        .keys()
        .any(|k| k.parse::<u16>().is_err() && crate::verify::convention::grpc_code(k).is_some());
    let is_error = |k: &str| {
        if grpc {
            crate::verify::convention::grpc_code(k).is_some_and(|c| c != "OK")
        } else {
            k.starts_with('5')
        }
    };
    let uncounted: Vec<(&String, f64)> = client_keys
        .iter()
        .filter(|(k, _)| is_error(k))
        .map(|(k, n)| {
            (
                k,
                (*n as f64 - server_keys.get(k).copied().unwrap_or(0.0)).max(0.0),
            )
        })
        .filter(|(_, m)| *m > 0.0)
        .collect();
    let missing_5xx: f64 = uncounted.iter().map(|(_, m)| m).sum();
    // The missing errors accounting for the shortfall exactly are a
    // better explanation than a ratio that happens to be near a whole
    // number.
    let all_5xx = missing_5xx > 0.0 && (missing_5xx - missing).abs() < 0.5;
    v.diagnosis = Some(if server < lower && all_5xx && grpc {
        format!(
            "server counted {}, client {}: the {} missing are all calls that ended with an error code ({}): calls that end with an error bypass the metrics interceptor (refused by an interceptor ahead of it, or not recorded when the handler fails; see errors)",
            thousands(server),
            thousands(client),
            thousands(missing),
            uncounted
                .iter()
                .map(|(k, m)| format!("{} × {k}", thousands(*m)))
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else if server < lower && all_5xx {
        format!(
            "server counted {}, client {}: the {} missing are all 5xx responses: exceptions bypass the metrics middleware (see errors)",
            thousands(server),
            thousands(client),
            thousands(missing)
        )
    } else if server < lower && workers >= 2.0 && (ratio - workers).abs() < 0.15 * workers {
        format!(
            "server counted {}, about 1/{workers:.0} of the client's {}: each scrape sees one of ~{workers:.0} worker processes' registries (multiprocess mode missing)",
            thousands(server),
            thousands(client)
        )
    } else if server < lower {
        format!(
            "server counted {}, client {}: {} requests lost before instrumentation (answered by a proxy or an earlier middleware), or the matcher misses some series",
            thousands(server),
            thousands(client),
            thousands(missing)
        )
    } else {
        format!(
            "server counted {} more than the client sent: other traffic matches these series (narrow `match`), or requests are counted twice",
            thousands(server - client)
        )
    });
    (v, server < lower && all_5xx)
}

pub(super) fn check_errors<M: MetricSource>(
    cx: &Context<'_, M>,
    style: StatusStyle,
    server: &BTreeMap<String, f64>,
    client: &BTreeMap<String, u64>,
    absent: bool,
) -> Verdict {
    let query = match (&cx.names.status, cx.names.status_metrics()) {
        (_, Some(sel)) => sel.to_string(),
        (Some(StatusSource::Label(l)), None) => format!("{} by {l}", cx.names.requests),
        _ => String::new(),
    };
    if cx.names.status.is_none() {
        return cx.skipped("errors", "the metrics carry no status");
    }
    if style == StatusStyle::Grpc && client_speaks_http(client) {
        return cx.skipped(
            "errors",
            "the server counts gRPC codes and the client made HTTP requests; codes are not comparable",
        );
    }
    // Codes at zero on both sides are not traffic: go-grpc-prometheus
    // creates every code's series at 0 before any call.
    let keys: BTreeSet<&String> = server
        .iter()
        .filter(|(_, v)| **v != 0.0)
        .map(|(k, _)| k)
        .chain(client.keys())
        .collect();
    let unsure = cx.unsure() as f64;
    let slack = cx.entry.tolerance.errors.of(cx.client.responses) as f64;
    // Calls the client gave up on (its deadline, or a cancellation) that
    // the server did not count as such: it finished them, later, under
    // the code its handler returned.
    let abandoned: f64 = if style == StatusStyle::Grpc {
        ABANDONED
            .iter()
            .map(|k| {
                let c = client.get(*k).copied().unwrap_or(0) as f64;
                (c - server.get(*k).copied().unwrap_or(0.0)).max(0.0)
            })
            .sum()
    } else {
        0.0
    };
    let mut parts = Vec::new();
    let mut problems = Vec::new();
    for k in keys {
        let s = server.get(k).copied().unwrap_or(0.0);
        let c = client.get(k).copied().unwrap_or(0) as f64;
        parts.push(format!(
            "{k}: server {} / client {}",
            thousands(s),
            thousands(c)
        ));
        if s < c - slack - 1e-9 {
            problems.push(if ABANDONED.contains(&k.as_str()) {
                format!(
                    "client saw {} × {k}, server counted {}: the client gave up before the server answered (its deadline or a cancellation); the server counts such calls under the code its handler returned",
                    thousands(c),
                    thousands(s)
                )
            } else if k.starts_with('5') {
                format!(
                    "client saw {} × {k}, server counted {}: exceptions bypass the metrics middleware",
                    thousands(c),
                    thousands(s)
                )
            } else if style == StatusStyle::Grpc && k != "OK" {
                format!(
                    "client saw {} × {k}, server counted {}: calls that end with an error bypass the metrics interceptor (refused by an interceptor ahead of it, or not recorded when the handler fails)",
                    thousands(c),
                    thousands(s)
                )
            } else {
                format!(
                    "client saw {} × {k}, server counted {}: responses written before the metrics middleware counts them",
                    thousands(c),
                    thousands(s)
                )
            });
        } else if s > c + unsure + slack + 1e-9 {
            if s <= c + unsure + slack + abandoned + 1e-9 {
                problems.push(format!(
                    "server counted {} × {k}, client saw {}: the calls the client abandoned finished on the server as {k}",
                    thousands(s),
                    thousands(c)
                ));
                continue;
            }
            problems.push(format!(
                "server counted {} × {k}, client saw {}: other traffic in these series, or the status is rewritten after counting",
                thousands(s),
                thousands(c)
            ));
        }
    }
    let mut v = cx.verdict(
        "errors",
        Status::pass_if(problems.is_empty()),
        if parts.is_empty() {
            "no responses on either side".into()
        } else {
            parts.join(" · ")
        },
        &query,
    );
    if absent {
        v.warnings
            .push("no series matched; the server's counts are taken as 0".into());
    }
    if !problems.is_empty() {
        v.diagnosis = Some(problems.join("; "));
    }
    v
}
