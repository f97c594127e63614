//! Count and errors: exact counts, shortfalls, surpluses, worker
//! fractions, and errors per status code, class and gRPC code.

use super::{REQUESTS, django, healthy, latency, requests};
use crate::scenario::verification::Convention;
use crate::verify::Status::{Fail, Pass, Skipped};
use crate::verify::testing::{Client, MemorySource, check, counter, entry, observations};

/// A django service that counted `counts` per status, and timed 100
/// requests at 38–58 ms.
fn counted(counts: &[(&str, f64)]) -> MemorySource {
    let mut src = MemorySource::default();
    for (status, n) in counts {
        requests(&mut src, status, *n);
    }
    latency(&mut src, &observations(100, 38.0, 58.0));
    src
}

#[test]
fn count_matches_exactly() {
    let (src, client) = healthy(100);
    let c = check(&src, &django(), &client.build());
    let v = c.summary("count", Pass, &[]);
    assert_eq!(v.summary, "server 100 = client 100");
    assert_eq!(v.query, format!("{REQUESTS}{{view=\"polls:success\"}}"));
    assert!(v.diagnosis.is_none());
}

#[test]
fn count_allows_the_requests_the_client_is_unsure_of() {
    let src = counted(&[("200", 102.0)]);
    let client = Client::new().http_spread(200, 100, 40.0, 60.0).unsure(3);
    let c = check(&src, &django(), &client.build());
    c.summary(
        "count",
        Pass,
        &["server 102 = client 100, up to 103 with 3 unsure"],
    );
    c.summary("errors", Pass, &["200: server 102 / client 100"]);
}

#[test]
fn count_shortfall_blames_requests_lost_before_instrumentation() {
    let src = counted(&[("200", 93.0)]);
    let client = Client::new().http_spread(200, 100, 40.0, 60.0);
    let c = check(&src, &django(), &client.build());
    c.summary("count", Fail, &["server 93 ≠ client 100"]);
    c.diagnosis(
        "count",
        Fail,
        &[
            "server counted 93, client 100: 7 requests lost before instrumentation",
            "or the matcher misses some series",
        ],
    );
    c.diagnosis(
        "errors",
        Fail,
        &[
            "client saw 100 × 200, server counted 93: responses written before the metrics middleware counts them",
        ],
    );
}

#[test]
fn series_shared_by_two_requests_shows_a_surplus() {
    // Another request of the scenario hits the same view: the series
    // holds both.
    let src = counted(&[("200", 150.0)]);
    let client = Client::new().http_spread(200, 100, 40.0, 60.0);
    let c = check(&src, &django(), &client.build());
    c.summary("count", Fail, &["server 150 ≠ client 100"]);
    c.diagnosis(
        "count",
        Fail,
        &[
            "server counted 50 more than the client sent",
            "other traffic matches these series (narrow `match`)",
        ],
    );
    c.diagnosis(
        "errors",
        Fail,
        &["server counted 150 × 200, client saw 100: other traffic in these series"],
    );
}

#[test]
fn uniform_one_in_n_fraction_blames_worker_registries() {
    // Every scrape reaches the same one of four workers: no saw-tooth,
    // a quarter of the count.
    let src = counted(&[("200", 100.0)]);
    let client = Client::new().http_spread(200, 400, 40.0, 60.0);
    let c = check(&src, &django(), &client.build());
    c.summary("resets", Pass, &[]);
    c.diagnosis(
        "count",
        Fail,
        &[
            "server counted 100 of this request's 400",
            "the server counted 100 of the client's 400, about 1/4",
            "one of ~4 worker processes",
            "multiprocess mode",
        ],
    );
    // One cause, one failure: the checks whose premise the count refuted
    // do not add causes of their own.
    for check in ["errors", "mean", "duration", "quantiles"] {
        let v = c.get(check);
        assert_eq!(v.status, Skipped, "{v:#?}");
        assert!(
            v.summary.contains("~1/4 of the traffic (see count)"),
            "{v:#?}"
        );
    }
}

#[test]
fn missing_5xx_are_blamed_on_exceptions_even_at_a_whole_fraction() {
    // Half the responses were 500s and none was counted: the server saw
    // exactly half, which must not read as two worker registries.
    let src = counted(&[("200", 50.0)]);
    let client = Client::new()
        .http_spread(200, 50, 40.0, 60.0)
        .http(500, 50, 5.0);
    let c = check(&src, &django(), &client.build());
    let v = c.diagnosis(
        "count",
        Fail,
        &["the 50 missing are all 5xx responses: exceptions bypass the metrics middleware"],
    );
    assert!(!v.diagnosis.as_ref().unwrap().contains("worker"), "{v:#?}");
}

#[test]
fn client_5xx_the_server_never_counted_bypass_the_middleware() {
    let src = counted(&[("200", 90.0)]);
    let client = Client::new()
        .http_spread(200, 90, 40.0, 60.0)
        .http(500, 10, 5.0);
    let c = check(&src, &django(), &client.build());
    c.diagnosis(
        "count",
        Fail,
        &[
            "server counted 90, client 100: the 10 missing are all 5xx responses",
            "(see errors)",
        ],
    );
    let v = c.diagnosis(
        "errors",
        Fail,
        &["client saw 10 × 500, server counted 0: exceptions bypass the metrics middleware"],
    );
    assert_eq!(
        v.summary,
        "200: server 90 / client 90 · 500: server 0 / client 10"
    );
    assert_eq!(c.figures.errors, Some(0.0));
}

#[test]
fn status_rewritten_after_counting_shows_per_status() {
    // The server counted every request as a 200, the client got ten 500s.
    let src = counted(&[("200", 100.0)]);
    let client = Client::new()
        .http_spread(200, 90, 40.0, 60.0)
        .http(500, 10, 5.0);
    let c = check(&src, &django(), &client.build());
    c.summary("count", Pass, &["server 100 = client 100"]);
    c.diagnosis(
        "errors",
        Fail,
        &[
            "server counted 100 × 200, client saw 90: other traffic in these series, or the status is rewritten after counting",
            "client saw 10 × 500, server counted 0: exceptions bypass the metrics middleware",
        ],
    );
}

#[test]
fn errors_compare_per_status_class() {
    // prometheus-fastapi-instrumentator groups statuses as `2xx`.
    let mut src = MemorySource::default();
    for (status, n) in [("2xx", 90.0), ("5xx", 10.0)] {
        src.add(
            "http_requests_total",
            &[("handler", "/polls"), ("method", "GET"), ("status", status)],
            counter(3.0, n),
        );
    }
    let e = entry(Convention::Fastapi, &[("handler", "/polls")]);
    let client = Client::new()
        .http(200, 85, 50.0)
        .http(201, 5, 50.0)
        .http(503, 10, 5.0);
    let c = check(&src, &e, &client.build());
    c.summary("count", Pass, &["server 100 = client 100"]);
    let v = c.summary("errors", Pass, &[]);
    assert_eq!(
        v.summary,
        "2xx: server 90 / client 90 · 5xx: server 10 / client 10"
    );
    assert_eq!(c.figures.errors, Some(10.0));
}

/// A gRPC server that counted `codes` for `RevertName`.
fn grpc_server(codes: &[(&str, f64)]) -> MemorySource {
    let mut src = MemorySource::default();
    for (code, n) in codes {
        src.add(
            "grpc_server_handled_total",
            &[
                ("grpc_type", "unary"),
                ("grpc_service", "revert.RevertName"),
                ("grpc_method", "RevertName"),
                ("grpc_code", code),
            ],
            counter(7.0, *n),
        );
    }
    src
}

fn grpc_entry() -> crate::scenario::verification::VerifyEntry {
    entry(Convention::Grpc, &[("grpc_method", "RevertName")])
}

#[test]
fn grpc_codes_match_across_go_and_python_spellings() {
    // py-grpc-prometheus writes `UNAVAILABLE`, go-grpc-prometheus
    // `Unavailable`; the client's codes are Go's spelling.
    for unavailable in ["UNAVAILABLE", "Unavailable"] {
        let src = grpc_server(&[("OK", 90.0), (unavailable, 10.0)]);
        let client = Client::new()
            .grpc("OK", 90, 2.0)
            .grpc("UNAVAILABLE", 10, 1.0);
        let c = check(&src, &grpc_entry(), &client.build());
        let v = c.summary("errors", Pass, &[]);
        assert_eq!(
            v.summary, "OK: server 90 / client 90 · Unavailable: server 10 / client 10",
            "{unavailable}"
        );
        assert_eq!(
            v.query,
            "grpc_server_handled_total{grpc_method=\"RevertName\"} by grpc_code"
        );
        assert_eq!(c.figures.errors, Some(10.0));
        assert_eq!(
            c.figures.by_status.keys().collect::<Vec<_>>(),
            ["OK", "Unavailable"]
        );
    }
}

#[test]
fn grpc_code_the_server_never_counted_fails_errors() {
    // An interceptor ahead of the metrics one refuses the calls.
    let src = grpc_server(&[("OK", 90.0)]);
    let client = Client::new()
        .grpc("OK", 90, 2.0)
        .grpc("PERMISSION_DENIED", 10, 1.0);
    let c = check(&src, &grpc_entry(), &client.build());
    c.diagnosis(
        "errors",
        Fail,
        &["client saw 10 × PermissionDenied, server counted 0: calls that end with an error bypass the metrics interceptor"],
    );
    c.diagnosis(
        "count",
        Fail,
        &["the 10 missing are all calls that ended with an error code (10 × PermissionDenied)"],
    );
}

#[test]
fn calls_abandoned_at_the_client_deadline_are_named_as_such() {
    // The client's deadline expired on 10 calls; the server finished them
    // later and counted them OK.
    let src = grpc_server(&[("OK", 100.0)]);
    let client = Client::new()
        .grpc("OK", 90, 2.0)
        .grpc("DEADLINE_EXCEEDED", 10, 50.0);
    let c = check(&src, &grpc_entry(), &client.build());
    let v = c.diagnosis(
        "errors",
        Fail,
        &[
            "client saw 10 × DeadlineExceeded, server counted 0: the client gave up before the server answered",
            "server counted 100 × OK, client saw 90: the calls the client abandoned finished on the server as OK",
        ],
    );
    let d = v.diagnosis.as_deref().unwrap_or_default();
    assert!(!d.contains("middleware") && !d.contains("rewritten"), "{d}");
}

#[test]
fn grpc_codes_and_http_statuses_are_not_compared() {
    // A REST gateway in front of a gRPC server: the client sees HTTP.
    let src = grpc_server(&[("OK", 100.0)]);
    let client = Client::new().http(200, 100, 2.0);
    let c = check(&src, &grpc_entry(), &client.build());
    c.summary("count", Pass, &["server 100 = client 100"]);
    c.skipped(
        &["errors"],
        "the server counts gRPC codes and the client made HTTP requests; codes are not comparable",
    );
    assert_eq!(c.figures.errors, None);
}

#[test]
fn metrics_without_status_or_duration_skip_those_checks() {
    let mut src = MemorySource::default();
    src.add(
        "app_requests_total",
        &[("route", "/polls")],
        counter(0.0, 100.0),
    );
    let mut e = entry(Convention::Custom, &[("route", "/polls")]);
    e.requests_metric = Some("app_requests_total".into());
    let client = Client::new().http(200, 100, 50.0);
    let c = check(&src, &e, &client.build());
    assert_eq!(
        c.order(),
        [
            ("preflight", Pass),
            ("resets", Pass),
            ("freshness", Pass),
            ("count", Pass),
            ("errors", Skipped),
            ("duration", Skipped),
        ]
    );
    c.skipped(&["errors"], "the metrics carry no status");
    c.skipped(&["duration"], "no duration metric for this convention");
}

/// The 17 gRPC codes in go-grpc-prometheus' spelling and
/// py-grpc-prometheus'.
const GO_CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];
const PY_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

#[test]
fn pre_initialised_zero_codes_are_neither_traffic_nor_missing() {
    // go-grpc-prometheus creates every code's series at 0 when the
    // service registers; only OK and InvalidArgument see traffic.
    for codes in [GO_CODES, PY_CODES] {
        let counts: Vec<(&str, f64)> = codes
            .iter()
            .map(|c| match *c {
                "OK" => (*c, 90.0),
                "InvalidArgument" | "INVALID_ARGUMENT" => (*c, 10.0),
                _ => (*c, 0.0),
            })
            .collect();
        let mut src = MemorySource::default();
        for (code, n) in &counts {
            src.add(
                "grpc_server_handled_total",
                &[
                    ("grpc_type", "unary"),
                    ("grpc_service", "revert.RevertName"),
                    ("grpc_method", "RevertName"),
                    ("grpc_code", code),
                ],
                counter(0.0, *n),
            );
        }
        let client = Client::new()
            .grpc("OK", 90, 2.0)
            .grpc("INVALID_ARGUMENT", 10, 1.0);
        let c = check(&src, &grpc_entry(), &client.build());
        c.summary("count", Pass, &["server 100 = client 100"]);
        c.summary("resets", Pass, &[]);
        c.summary("freshness", Pass, &[]);
        let v = c.summary("errors", Pass, &[]);
        assert_eq!(
            v.summary, "InvalidArgument: server 10 / client 10 · OK: server 90 / client 90",
            "{codes:?}"
        );
        assert_eq!(c.figures.errors, Some(0.0));
    }
}
