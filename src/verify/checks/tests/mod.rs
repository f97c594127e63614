//! Unit tests of the checks against series served from memory: a healthy
//! service, and for every fault the check that must catch it, with the
//! words its diagnosis must hold. Here: the order of the checks and what
//! a refuted premise skips; the checks themselves in the submodules.

mod counts;
mod durations;
mod integrity;
mod relations;
mod target;

use crate::scenario::verification::{Convention, VerifyEntry};
use crate::verify::Status::{Fail, NoData, Pass, Skipped};
use crate::verify::testing::{
    Client, MemorySource, T0, check, counter, entry, observations, progress, sampled,
};

/// django-prometheus' request counter, its `_created` and its latency
/// histogram.
const REQUESTS: &str = "django_http_responses_total_by_status_view_method_total";
const CREATED: &str = "django_http_responses_total_by_status_view_method_created";
const LATENCY: &str = "django_http_requests_latency_seconds_by_view_method";
const VIEW: (&str, &str) = ("view", "polls:success");
const BOUNDS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// The entry every django test checks.
fn django() -> VerifyEntry {
    entry(Convention::Django, &[VIEW])
}

/// The request counter of one status of the view, at 20 before the load.
fn requests(src: &mut MemorySource, status: &str, added: f64) {
    src.add(
        REQUESTS,
        &[VIEW, ("method", "GET"), ("status", status)],
        counter(20.0, added),
    );
}

/// The view's latency histogram.
fn latency(src: &mut MemorySource, observations: &[f64]) {
    src.histogram(LATENCY, &[VIEW, ("method", "GET")], BOUNDS, observations);
}

/// A django service that counted `n` × 200 and timed them at 38–58 ms,
/// and a client that got `n` × 200 in 40–60 ms.
fn healthy(n: u64) -> (MemorySource, Client) {
    let mut src = MemorySource::default();
    requests(&mut src, "200", n as f64);
    latency(&mut src, &observations(n, 38.0, 58.0));
    (src, Client::new().http_spread(200, n, 40.0, 60.0))
}

#[test]
fn healthy_service_passes_every_check_in_order() {
    let (src, client) = healthy(100);
    let c = check(&src, &django(), &client.build());
    assert_eq!(
        c.order(),
        [
            ("preflight", Pass),
            ("resets", Pass),
            ("freshness", Pass),
            ("count", Pass),
            ("errors", Pass),
            ("mean", Pass),
            ("duration", Pass),
            ("quantiles", Pass),
        ]
    );
    c.summary("preflight", Pass, &["1 series of", REQUESTS]);
    c.summary("resets", Pass, &["no counter drops"]);
    c.summary("count", Pass, &["server 100 = client 100"]);
    c.summary("errors", Pass, &["200: server 100 / client 100"]);
    c.summary(
        "duration",
        Pass,
        &["distributions agree at 8 bucket bounds"],
    );
    c.summary("quantiles", Pass, &["p50 client", "p99 client"]);
    assert!(c.verdicts.iter().all(|v| v.diagnosis.is_none()));
    assert_eq!(c.figures.count, Some(100.0));
    assert_eq!(c.figures.errors, Some(0.0));
    assert!(c.figures.mean_s.is_some_and(|m| (m - 0.048).abs() < 1e-6));
    assert_eq!(c.figures.bucket_total, 100.0);
}

/// The checks that read the counter over the run, skipped when its
/// samples cannot be trusted.
const COUNTING: [&str; 3] = ["count", "errors", "duration"];

#[test]
fn failed_resets_skip_freshness_and_the_checks_that_count() {
    // A restart halfway through the load.
    let mut src = MemorySource::default();
    src.add(
        REQUESTS,
        &[VIEW, ("method", "GET"), ("status", "200")],
        sampled(|t| {
            if t < T0 + 5_000 {
                20.0 + 100.0 * progress(t)
            } else {
                100.0 * progress(t) - 50.0
            }
        }),
    );
    let client = Client::new().http(200, 100, 50.0);
    let c = check(&src, &django(), &client.build());
    assert_eq!(
        c.order(),
        [
            ("preflight", Pass),
            ("resets", Fail),
            ("freshness", Skipped),
            ("count", Skipped),
            ("errors", Skipped),
            ("duration", Skipped),
        ]
    );
    c.skipped(
        &["freshness", "count", "errors", "duration"],
        "counters reset during the run (see resets)",
    );
    assert_eq!(c.figures.count, None);
}

#[test]
fn stale_metrics_skip_the_checks_that_count() {
    let (mut src, client) = healthy(100);
    // The target went down three seconds into the load.
    for s in &mut src.series {
        s.samples.retain(|(t, _)| *t <= T0 + 3_000);
    }
    src.targets[0].health = "down".into();
    src.targets[0].last_scrape_ms = Some(T0 + 3_000);
    let c = check(&src, &django(), &client.build());
    assert_eq!(
        c.order(),
        [
            ("preflight", Pass),
            ("resets", Pass),
            ("freshness", Fail),
            ("count", Skipped),
            ("errors", Skipped),
            ("duration", Skipped),
        ]
    );
    c.skipped(&COUNTING, "the metrics are not fresh (see freshness)");
}

#[test]
fn wrong_units_skip_distribution_and_quantiles() {
    let mut src = MemorySource::default();
    requests(&mut src, "200", 100.0);
    // Milliseconds exported as seconds.
    latency(&mut src, &[50.0; 100]);
    let client = Client::new().http(200, 100, 50.0);
    let c = check(&src, &django(), &client.build());
    assert_eq!(
        c.order(),
        [
            ("preflight", Pass),
            ("resets", Pass),
            ("freshness", Pass),
            ("count", Pass),
            ("errors", Pass),
            ("mean", Fail),
            ("duration", Skipped),
            ("quantiles", Skipped),
        ]
    );
    c.skipped(
        &["duration", "quantiles"],
        "durations are in the wrong unit (see mean)",
    );
}

#[test]
fn missing_series_skip_everything_after_preflight() {
    let client = Client::new().http(200, 100, 50.0);
    let c = check(&MemorySource::default(), &django(), &client.build());
    assert_eq!(
        c.order(),
        [
            ("preflight", NoData),
            ("count", Skipped),
            ("errors", Skipped),
            ("duration", Skipped),
        ]
    );
    c.skipped(&COUNTING, "no series to read (see preflight)");
}

#[test]
fn a_verify_entry_names_a_request_of_one_of_the_scenarios() {
    let text = r#"
name: mixed
targets:
  web: { url: "http://127.0.0.1:8000" }
scenarios:
  browse:
    load: { users: 2, duration: 10s }
    requests:
      - { name: list, http: { target: web, path: /browse } }
  api:
    start: 5s
    load: { rate: 10/s, duration: 10s }
    requests:
      - { name: list, http: { target: web, path: /polls/2xx_success/ } }
metrics: { prometheus: "http://127.0.0.1:9090" }
verify:
  api.list: { convention: django, match: { view: "polls:success" } }
thresholds:
  - api.list.server.p95 < 1s
"#;
    let s = crate::scenario::parse(std::path::Path::new("mixed.yaml"), text).unwrap();
    let e = &s.verification.entries[0];
    assert_eq!(e.name, "api.list");
    assert_eq!(e.request, s.request_index("api.list"));
    assert_ne!(e.request, s.request_index("browse.list"));
    let (src, client) = healthy(100);
    let c = check(&src, e, &client.named("api.list"));
    c.summary("count", Pass, &["server 100 = client 100"]);

    // A request's bare name, or a scenario that does not exist, is refused
    // where it is written.
    for (name, says) in [
        ("list", "no request named `list`"),
        ("apx.list", "no scenario named `apx`"),
    ] {
        let bad = text
            .replace("  api.list: {", &format!("  {name}: {{"))
            .replace("  - api.list.server.p95 < 1s\n", "");
        let err = crate::scenario::parse(std::path::Path::new("mixed.yaml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(says) && err.contains("mixed.yaml:17:3"),
            "{err}"
        );
    }
}
