//! Entries that cover several requests, calls derived from other
//! requests, and counts off by exactly another request's traffic.

use crate::scenario::verification::{Convention, VerifyEntry};
use crate::verify::Status::{Fail, Pass, Skipped};
use crate::verify::testing::{Client, MemorySource, check_run, counter, entry, observations};

const TX: &str = "http_requests_total";
const TX_LATENCY: &str = "http_request_duration_seconds";
const HANDLER: (&str, &str) = ("handler", "/accounts/{id}/transactions");

/// A fastapi route that counted `deposits` × 201 and `overdraws` × 409.
fn transactions(deposits: f64, overdraws: f64) -> MemorySource {
    let mut src = MemorySource::default();
    for (status, n) in [("201", deposits), ("409", overdraws)] {
        src.add(
            TX,
            &[HANDLER, ("method", "POST"), ("status", status)],
            counter(5.0, n),
        );
    }
    let n = (deposits + overdraws) as u64;
    src.histogram(
        TX_LATENCY,
        &[HANDLER, ("method", "POST")],
        &[0.1, 0.5, 1.0],
        &observations(n, 5.0, 15.0),
    );
    src
}

fn route() -> VerifyEntry {
    let mut e = entry(Convention::Custom, &[HANDLER, ("method", "POST")]);
    e.requests_metric = Some(TX.into());
    e.status_label = Some("status".into());
    e.duration_metric = Some(TX_LATENCY.into());
    e
}

/// `verify.transactions: { requests: [deposit, overdraw], … }` as the
/// scenario compiles it: one entry per request, the same matchers.
fn group(requests: &[usize]) -> Vec<VerifyEntry> {
    requests
        .iter()
        .map(|&r| VerifyEntry {
            name: "transactions".into(),
            request: Some(r),
            group: requests.to_vec(),
            ..route()
        })
        .collect()
}

fn deposit() -> crate::verify::ClientRequest {
    Client::new()
        .http_spread(201, 300, 20.0, 30.0)
        .named("deposit")
}

fn overdraw() -> crate::verify::ClientRequest {
    Client::new()
        .http_spread(409, 120, 20.0, 30.0)
        .named("overdraw")
}

#[test]
fn a_group_is_compared_with_the_union_of_its_requests() {
    let src = transactions(300.0, 120.0);
    let g = group(&[0, 1]);
    let out = check_run(
        &src,
        &[(g[0].clone(), deposit()), (g[1].clone(), overdraw())],
        &[],
    );
    for (c, name) in out.iter().zip(["deposit", "overdraw"]) {
        c.summary("count", Pass, &["server 420 = client 420"]);
        c.summary(
            "errors",
            Pass,
            &[
                "201: server 300 / client 300",
                "409: server 120 / client 120",
            ],
        );
        c.summary("duration", Pass, &[]);
        assert!(
            c.get("preflight")
                .warnings
                .iter()
                .any(|w| w.contains("`verify.transactions` covers deposit + overdraw")),
            "{name}: {:#?}",
            c.get("preflight")
        );
        assert_eq!(c.get("count").request.as_deref(), Some(name));
    }
}

#[test]
fn a_surplus_equal_to_another_requests_count_names_it_and_the_yaml() {
    // Only deposit is verified; overdraw posts to the same route.
    let src = transactions(300.0, 120.0);
    let mut e = route();
    e.name = "deposit".into();
    let out = check_run(&src, &[(e, deposit())], &[overdraw()]);
    let c = out[0].diagnosis(
        "count",
        Fail,
        &[
            "server counted 120 more than the client sent",
            "exactly `overdraw`'s 120 responses",
            "`requests: [deposit, overdraw]` in `verify.deposit`",
            "`derived: { overdraw: 1 }`",
        ],
    );
    assert!(!c.diagnosis.as_deref().unwrap().contains("narrow"));
    // One cause, one failure: the 409s in the series are the same finding.
    out[0].summary(
        "errors",
        Skipped,
        &["another request's traffic too (see count)"],
    );
    assert!(
        out[0].verdicts.iter().filter(|v| v.status.failed()).count() == 1,
        "{:#?}",
        out[0].verdicts
    );
}

#[test]
fn a_surplus_no_request_explains_keeps_the_generic_diagnosis() {
    let src = transactions(300.0, 77.0);
    let mut e = route();
    e.name = "deposit".into();
    let out = check_run(&src, &[(e, deposit())], &[overdraw()]);
    out[0].diagnosis("count", Fail, &["other traffic matches these series"]);
}

#[test]
fn a_declared_request_whose_traffic_never_arrives_is_named() {
    // The group lists overdraw, but its requests go to another route.
    let src = transactions(300.0, 0.0);
    let g = group(&[0, 1]);
    let out = check_run(
        &src,
        &[(g[0].clone(), deposit()), (g[1].clone(), overdraw())],
        &[],
    );
    out[1].diagnosis(
        "count",
        Fail,
        &[
            "120 fewer than expected",
            "exactly the 120 calls of `overdraw`",
            "`requests:`",
            "never reaches these series",
        ],
    );
}

/// revert-name's server metrics: `ok` calls that succeeded.
fn revert_server(ok: f64) -> MemorySource {
    let mut src = MemorySource::default();
    src.add(
        "grpc_server_handled_total",
        &[
            ("grpc_type", "unary"),
            ("grpc_service", "revert.RevertName"),
            ("grpc_method", "RevertName"),
            ("grpc_code", "OK"),
        ],
        counter(0.0, ok),
    );
    src.histogram(
        "grpc_server_handling_seconds",
        &[
            ("grpc_type", "unary"),
            ("grpc_service", "revert.RevertName"),
            ("grpc_method", "RevertName"),
        ],
        &[0.005, 0.01, 0.025, 0.05, 0.1],
        &observations(ok as u64, 0.5, 2.0),
    );
    src
}

fn revert_entry(derived: &[(usize, u64)]) -> VerifyEntry {
    VerifyEntry {
        name: "revert".into(),
        derived: derived.to_vec(),
        ..entry(Convention::Grpc, &[("grpc_method", "RevertName")])
    }
}

fn revert_calls() -> crate::verify::ClientRequest {
    Client::new().grpc("OK", 100, 1.0).named("revert")
}

fn proxy(ok: u64, bad_gateway: u64) -> crate::verify::ClientRequest {
    Client::new()
        .http_spread(200, ok, 10.0, 20.0)
        .http(502, bad_gateway, 10.0)
        .named("proxy")
}

#[test]
fn derived_calls_add_to_the_expected_count_and_to_ok() {
    // Each proxy request calls RevertName once.
    let src = revert_server(100.0 + 250.0);
    let out = check_run(
        &src,
        &[(revert_entry(&[(1, 1)]), revert_calls())],
        &[proxy(250, 0)],
    );
    let c = &out[0];
    c.summary(
        "count",
        Pass,
        &["server 350 = client 350 (100 direct + 250 from proxy)"],
    );
    c.summary("errors", Pass, &["OK: server 350 / client 350"]);
    for check in ["mean", "duration", "quantiles"] {
        c.summary(check, Skipped, &["did not time the 250 calls from proxy"]);
    }
    assert!(c.figures.mean_s.is_some(), "server figures still reported");
}

#[test]
fn derived_calls_per_request_multiply() {
    let src = revert_server(100.0 + 2.0 * 250.0);
    let out = check_run(
        &src,
        &[(revert_entry(&[(1, 2)]), revert_calls())],
        &[proxy(250, 0)],
    );
    out[0].summary("count", Pass, &["server 600 = client 600"]);
}

#[test]
fn derived_calls_of_a_failing_request_leave_errors_unjudged_and_say_why() {
    let src = revert_server(100.0 + 250.0);
    let out = check_run(
        &src,
        &[(revert_entry(&[(1, 1)]), revert_calls())],
        &[proxy(240, 10)],
    );
    out[0].summary("count", Pass, &["server 350 = client 350"]);
    out[0].summary("errors", Skipped, &["proxy got error responses"]);
}

#[test]
fn undeclared_derived_traffic_is_named_with_its_multiple() {
    let src = revert_server(100.0 + 2.0 * 250.0);
    let out = check_run(
        &src,
        &[(revert_entry(&[]), revert_calls())],
        &[proxy(250, 0)],
    );
    out[0].diagnosis(
        "count",
        Fail,
        &[
            "500 more than the client sent",
            "exactly 2 × `proxy`'s 250 responses",
            "`derived: { proxy: 2 }`",
        ],
    );
}

#[test]
fn grpc_errors_the_interceptor_never_counted_explain_the_count() {
    // revert-name counted only the calls that returned OK; one request
    // sends empty names, which end with InvalidArgument.
    let src = revert_server(100.0);
    let empty = Client::new()
        .grpc("INVALID_ARGUMENT", 40, 1.0)
        .named("revert_empty");
    let mut e = revert_entry(&[]);
    e.group = vec![0, 1];
    let out = check_run(
        &src,
        &[
            (e.clone(), revert_calls()),
            (
                VerifyEntry {
                    request: Some(1),
                    ..e
                },
                empty,
            ),
        ],
        &[],
    );
    for c in &out {
        let d = c.diagnosis(
            "count",
            Fail,
            &["the 40 missing are all calls that ended with an error code (40 × InvalidArgument)"],
        );
        assert!(
            !d.diagnosis.as_deref().unwrap().contains("never reaches"),
            "{d:#?}"
        );
        c.diagnosis(
            "errors",
            Fail,
            &["client saw 40 × InvalidArgument, server counted 0: calls that end with an error bypass the metrics interceptor"],
        );
    }
}

/// edge's client-side metrics for RevertName (job `edge-grpc`) and
/// revert-name's server-side ones (job `revert-name`).
fn hop_source(caller: &[(&str, f64)], callee: &[(&str, f64)]) -> MemorySource {
    let mut src = MemorySource::default();
    for (name, job, codes) in [
        ("grpc_client_handled_total", "edge-grpc", caller),
        ("grpc_server_handled_total", "revert-name", callee),
    ] {
        for (code, n) in codes {
            src.add(
                name,
                &[
                    ("job", job),
                    ("grpc_type", "unary"),
                    ("grpc_service", "revert.RevertName"),
                    ("grpc_method", "RevertName"),
                    ("grpc_code", code),
                ],
                counter(0.0, *n),
            );
        }
    }
    src
}

/// `edge_calls` (client side, derived from proxy, callee `revert`) and
/// `revert` (server side, direct revert calls plus proxy's).
fn hop_entries(proxy_index: usize) -> Vec<VerifyEntry> {
    let caller = VerifyEntry {
        name: "edge_calls".into(),
        request: None,
        side: crate::scenario::verification::Side::Client,
        derived: vec![(proxy_index, 1)],
        callee: Some("revert".into()),
        ..entry(
            Convention::Grpc,
            &[("job", "edge-grpc"), ("grpc_method", "RevertName")],
        )
    };
    let callee = VerifyEntry {
        name: "revert".into(),
        derived: vec![(proxy_index, 1)],
        ..entry(
            Convention::Grpc,
            &[("job", "revert-name"), ("grpc_method", "RevertName")],
        )
    };
    vec![caller, callee]
}

#[test]
fn a_hop_agrees_per_code_when_every_call_reaches_the_callee() {
    let src = hop_source(&[("OK", 250.0)], &[("OK", 350.0)]);
    let e = hop_entries(2);
    let hops = crate::verify::testing::hop_verdicts(
        &src,
        &[
            (
                e[0].clone(),
                crate::verify::ClientRequest::empty("edge_calls"),
            ),
            (e[1].clone(), revert_calls()),
        ],
        &[proxy(250, 0)],
    );
    assert!(hops.iter().all(|v| !v.status.failed()), "{hops:#?}");
    let hop = hops.iter().find(|v| v.check == "hop").unwrap();
    assert_eq!(hop.status, Pass, "{hops:#?}");
    assert!(
        hop.summary
            .contains("OK: caller 250 + direct 100 / callee 350"),
        "{hops:#?}"
    );
}

#[test]
fn a_hop_names_calls_the_caller_saw_fail_that_the_callee_never_counted() {
    // edge saw 10 calls end Unavailable; revert-name never counted them
    // (they never reached it). proxy answered 502 for those.
    let src = hop_source(&[("OK", 240.0), ("Unavailable", 10.0)], &[("OK", 340.0)]);
    let e = hop_entries(2);
    let hops = crate::verify::testing::hop_verdicts(
        &src,
        &[
            (
                e[0].clone(),
                crate::verify::ClientRequest::empty("edge_calls"),
            ),
            (e[1].clone(), revert_calls()),
        ],
        &[proxy(240, 10)],
    );
    let hop = hops.iter().find(|v| v.check == "hop").unwrap();
    assert_eq!(hop.status, Fail, "{hops:#?}");
    let d = hop.diagnosis.as_deref().unwrap();
    assert!(
        d.contains("the caller saw 10 × Unavailable the callee never counted"),
        "{d}"
    );
    // One cause, one failure: the callee's count points at the hop.
    let failing: Vec<String> = hops
        .iter()
        .filter(|v| v.status.failed())
        .map(|v| format!("{}.{}", v.request.as_deref().unwrap_or(""), v.check))
        .collect();
    assert_eq!(failing, ["edge_calls.hop"], "{hops:#?}");
    let count = hops
        .iter()
        .find(|v| v.request.as_deref() == Some("revert") && v.check == "count")
        .unwrap();
    assert!(count.summary.contains("see edge_calls.hop"), "{count:#?}");
}
