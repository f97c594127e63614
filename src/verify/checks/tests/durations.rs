//! Mean and units, the distribution at each bucket bound, quantile
//! brackets and a summary's quantiles.

use super::{LATENCY, VIEW, django, healthy, latency, requests};
use crate::scenario::verification::Convention;
use crate::verify::Status::{Fail, NoData, Pass, Skipped};
use crate::verify::testing::{
    Checked, Client, MemorySource, check, counter, entry, observations, progress, sampled,
};

/// A django service that counted 100 × 200 and timed them at
/// `server_ms`, checked against a client that got them in `client_ms`.
fn timed(server_ms: f64, client_ms: f64) -> Checked {
    let mut src = MemorySource::default();
    requests(&mut src, "200", 100.0);
    latency(&mut src, &[server_ms / 1e3; 100]);
    let client = Client::new().http(200, 100, client_ms);
    check(&src, &django(), &client.build())
}

#[test]
fn mean_within_the_client_passes() {
    let (src, client) = healthy(100);
    let c = check(&src, &django(), &client.build());
    let v = c.summary("mean", Pass, &["server mean 48.0ms vs client mean"]);
    assert_eq!(
        v.query,
        format!(
            "{LATENCY}_sum{{view=\"polls:success\"}} / {LATENCY}_count{{view=\"polls:success\"}}"
        )
    );
}

#[test]
fn milliseconds_exported_as_seconds() {
    // The server observed 50 where it meant 50 ms.
    let c = timed(50_000.0, 50.0);
    c.summary("mean", Fail, &["server mean 50.00s vs client mean"]);
    c.diagnosis(
        "mean",
        Fail,
        &["divided by 1,000 it fits: milliseconds exported as seconds"],
    );
    c.skipped(
        &["duration", "quantiles"],
        "durations are in the wrong unit (see mean)",
    );
    assert_eq!(c.figures.mean_s, Some(50.0));
}

#[test]
fn microseconds_exported_as_seconds() {
    let c = timed(50_000_000.0, 50.0);
    c.diagnosis(
        "mean",
        Fail,
        &["divided by 1,000,000 it fits: microseconds exported as seconds"],
    );
    c.skipped(
        &["duration", "quantiles"],
        "durations are in the wrong unit (see mean)",
    );
}

#[test]
fn durations_in_no_known_unit() {
    // Too large even for microseconds.
    let c = timed(100_000_000_000.0, 50.0);
    c.diagnosis("mean", Fail, &["the server's durations are not in seconds"]);
    c.skipped(
        &["duration", "quantiles"],
        "durations are in the wrong unit (see mean)",
    );
}

#[test]
fn server_mean_above_the_client_blames_work_after_the_response() {
    let c = timed(300.0, 40.0);
    c.diagnosis(
        "mean",
        Fail,
        &["its timer includes work after the response was sent, or slower traffic from elsewhere"],
    );
    // Not a unit mistake: the distribution is still compared.
    assert_ne!(c.get("duration").status, Skipped);
}

#[test]
fn slower_server_distribution_fails() {
    let c = timed(300.0, 40.0);
    c.summary(
        "duration",
        Fail,
        &["at le=50.0ms server 0.0%, client 100.0%"],
    );
    c.diagnosis(
        "duration",
        Fail,
        &[
            "at le=0.05 s the server reports 0.0% of requests, the client 100.0%",
            "the server says requests were slower than the client saw them",
        ],
    );
}

#[test]
fn time_outside_the_timer_fails_the_distribution() {
    // 150 ms pass before the server's timer starts.
    let c = timed(50.0, 200.0);
    c.summary("mean", Pass, &[]);
    c.summary(
        "duration",
        Fail,
        &["at le=50.0ms server 100.0%, client 0.0%"],
    );
    let v = c.diagnosis(
        "duration",
        Fail,
        &[
            "at le=0.05 s server 100.0%, client 0.0%",
            "of each request is spent outside the server's timer",
            "queueing before the handler",
        ],
    );
    let d = v.diagnosis.as_ref().unwrap();
    let gap: f64 = d
        .split_once(": ~")
        .and_then(|(_, rest)| rest.split_once("ms"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no gap in {d}"));
    assert!((gap - 150.0).abs() < 1.0, "{d}");
    c.summary("quantiles", Pass, &[]);
}

#[test]
fn a_stray_slow_request_in_a_small_sample_is_no_alarm() {
    // 65 requests: one delayed 100 ms on the client's side is 1.5%, more
    // than the 1% tolerance, and not time outside the server's timer.
    let n = 65;
    let mut src = MemorySource::default();
    requests(&mut src, "200", n as f64);
    latency(&mut src, &observations(n, 38.0, 58.0));
    let client = Client::new()
        .http_spread(200, n - 1, 40.0, 60.0)
        .http(200, 1, 150.0);
    let c = check(&src, &django(), &client.build());
    c.summary("duration", Pass, &["distributions agree"]);
    // Three are not stray any more.
    let mut src = MemorySource::default();
    requests(&mut src, "200", n as f64);
    latency(&mut src, &observations(n, 38.0, 58.0));
    let client = Client::new()
        .http_spread(200, n - 3, 40.0, 60.0)
        .http(200, 3, 150.0);
    let c = check(&src, &django(), &client.build());
    c.summary("duration", Fail, &[]);
}

#[test]
fn durations_recorded_twice_are_named() {
    // django-prometheus times a view that raises twice.
    let mut src = MemorySource::default();
    requests(&mut src, "500", 100.0);
    let twice: Vec<f64> = observations(100, 38.0, 58.0)
        .into_iter()
        .flat_map(|o| [o, o])
        .collect();
    latency(&mut src, &twice);
    let client = Client::new().http_spread(500, 100, 40.0, 60.0);
    let c = check(&src, &django(), &client.build());
    let v = c.summary("mean", Pass, &[]);
    assert!(
        v.warnings
            .iter()
            .any(|w| w.contains("200 durations for 100 responses (×2.0)")),
        "{v:#?}"
    );
    c.summary("duration", Pass, &[]);
    // Once per request: no warning.
    let (src, client) = healthy(100);
    let c = check(&src, &django(), &client.build());
    assert!(c.summary("mean", Pass, &[]).warnings.is_empty());
}

#[test]
fn client_overhead_within_the_allowance_passes() {
    // 20 ms outside the timer, under the default 25 ms overhead.
    let c = timed(50.0, 70.0);
    c.summary(
        "duration",
        Pass,
        &["distributions agree at 8 bucket bounds (client overhead allowed: 25.0ms)"],
    );
}

#[test]
fn quantiles_fall_in_the_server_buckets() {
    let (src, client) = healthy(100);
    let c = check(&src, &django(), &client.build());
    let v = c.summary(
        "quantiles",
        Pass,
        &[
            "p50 client 49.",
            "in server (25.0ms, 50.0ms]",
            "p95 client 59.",
            "in server (50.0ms, 100.0ms]",
        ],
    );
    assert!(v.warnings.is_empty(), "{v:#?}");
}

#[test]
fn quantile_bracket_above_the_client_fails() {
    let c = timed(300.0, 40.0);
    c.summary(
        "quantiles",
        Fail,
        &["p50 client 40.0ms in server (250.0ms, 500.0ms]"],
    );
    c.diagnosis(
        "quantiles",
        Fail,
        &[
            "the server puts its p50 above 250.0ms, the client measured 40.0ms",
            "the server reports slower requests than the client saw",
        ],
    );
}

#[test]
fn quantile_in_the_open_top_bucket_warns() {
    let c = timed(2_900.0, 3_000.0);
    let v = c.summary("quantiles", Pass, &["in server (2.50s, +Inf]"]);
    assert!(
        v.warnings.iter().any(
            |w| w == "server p50 only known as > 2.50s (top finite bucket); add larger buckets"
        ),
        "{v:#?}"
    );
}

#[test]
fn no_durations_is_no_data() {
    let mut src = MemorySource::default();
    requests(&mut src, "200", 100.0);
    let client = Client::new().http(200, 100, 50.0);
    let c = check(&src, &django(), &client.build());
    c.summary(
        "mean",
        NoData,
        &[&format!(
            "no durations in `{LATENCY}_count{{view=\"polls:success\"}}`"
        )],
    );
    c.diagnosis(
        "mean",
        NoData,
        &["the client got 100 responses but the server observed no durations: the timer is not on this path"],
    );
    assert_eq!(c.verdicts.last().unwrap().check, "mean");
}

#[test]
fn no_bucket_series_is_no_data_and_skips_quantiles() {
    let mut src = MemorySource::default();
    requests(&mut src, "200", 100.0);
    let labels = [VIEW, ("method", "GET")];
    src.add(&format!("{LATENCY}_count"), &labels, counter(0.0, 100.0));
    src.add(
        &format!("{LATENCY}_sum"),
        &labels,
        sampled(|t| 4.8 * progress(t)),
    );
    let client = Client::new().http(200, 100, 50.0);
    let c = check(&src, &django(), &client.build());
    c.summary("mean", Pass, &[]);
    c.summary("duration", NoData, &["no bucket series"]);
    c.diagnosis(
        "duration",
        NoData,
        &[&format!(
            "`{LATENCY}_bucket` has no series for these matchers"
        )],
    );
    c.skipped(&["quantiles"], "no bucket series (see duration)");
}

#[test]
fn buckets_that_did_not_grow_are_no_data_not_agreement() {
    // `_count` and `_sum` moved but every `_bucket` stayed where it was:
    // nothing can be compared, which must not read as agreement.
    let mut src = MemorySource::default();
    requests(&mut src, "200", 100.0);
    let labels = [VIEW, ("method", "GET")];
    src.add(&format!("{LATENCY}_count"), &labels, counter(0.0, 100.0));
    src.add(
        &format!("{LATENCY}_sum"),
        &labels,
        sampled(|t| 4.8 * progress(t)),
    );
    for le in ["0.1", "0.5", "+Inf"] {
        src.add(
            &format!("{LATENCY}_bucket"),
            &[VIEW, ("method", "GET"), ("le", le)],
            counter(7.0, 0.0),
        );
    }
    let client = Client::new().http(200, 100, 50.0);
    let c = check(&src, &django(), &client.build());
    c.summary("duration", NoData, &["the bucket series did not grow"]);
    c.diagnosis(
        "duration",
        NoData,
        &["did not grow during the run", "100 responses"],
    );
    c.skipped(
        &["quantiles"],
        "the bucket series did not grow (see duration)",
    );
}

#[test]
fn no_client_responses_leave_latency_without_data() {
    // Every request timed out on the client; the server finished them
    // all, slowly. There is no client latency to compare with, which is
    // no reason to suspect the server's units.
    let mut src = MemorySource::default();
    requests(&mut src, "200", 100.0);
    latency(&mut src, &[35.0; 100]);
    let client = Client::new().unsure(100);
    let c = check(&src, &django(), &client.build());
    c.summary(
        "count",
        Pass,
        &["server 100 = client 0, up to 100 with 100 unsure"],
    );
    let v = c.diagnosis("mean", NoData, &["the client got no responses"]);
    assert!(
        !v.diagnosis.as_ref().unwrap().contains("exported as"),
        "{v:#?}"
    );
    assert_eq!(c.verdicts.last().unwrap().check, "mean");
}

/// A gunicorn service reporting through statsd_exporter: a counter, one
/// counter per status, and a latency summary with `quantiles`.
fn statsd(quantiles: &[(&str, f64)]) -> MemorySource {
    statsd_with(quantiles, 0.0, 4.8)
}

/// [`statsd`] with `before` requests timed before the run, and the
/// run's durations summing to `sum` seconds.
fn statsd_with(quantiles: &[(&str, f64)], before: f64, sum: f64) -> MemorySource {
    let mut src = MemorySource::default();
    src.add("gunicorn_requests", &[], counter(before, 100.0));
    src.add("gunicorn_request_status_200", &[], counter(before, 100.0));
    for (q, v) in quantiles {
        src.add(
            "gunicorn_request_duration",
            &[("quantile", q)],
            sampled(|_| *v),
        );
    }
    src.add(
        "gunicorn_request_duration_count",
        &[],
        counter(before, 100.0),
    );
    src.add(
        "gunicorn_request_duration_sum",
        &[],
        sampled(|t| before * 0.05 + sum * progress(t)),
    );
    src
}

fn statsd_check(src: &MemorySource) -> Checked {
    let client = Client::new().http_spread(200, 100, 40.0, 60.0);
    check(
        src,
        &entry(Convention::Statsd, &[("job", "polls")]),
        &client.build(),
    )
}

#[test]
fn summary_quantiles_within_the_client_pass() {
    let c = statsd_check(&statsd(&[("0.5", 0.048), ("0.9", 0.055), ("0.99", 0.058)]));
    let errors = c.summary("errors", Pass, &["200: server 100 / client 100"]);
    assert_eq!(
        errors.query,
        "{job=\"polls\",__name__=~\"gunicorn_request_status_[0-9]+\"}"
    );
    c.summary(
        "duration",
        Pass,
        &["client mean 50.0ms − server mean 48.0ms = 2.00ms (client overhead allowed: 25.0ms)"],
    );
    let v = c.summary(
        "quantiles",
        Pass,
        &[
            "q0.5: server 48.0ms / client",
            "q0.99: server 58.0ms / client",
        ],
    );
    assert!(v.warnings[0].contains("summary quantiles cover the exporter's own 10-minute window"));
}

#[test]
fn summary_quantile_above_the_client_fails() {
    let c = statsd_check(&statsd(&[("0.5", 0.048), ("0.99", 0.4)]));
    c.diagnosis(
        "quantiles",
        Fail,
        &[
            "q0.99 server 400.0ms above client 60.0ms",
            "the server reports slower requests than the client saw",
        ],
    );
}

#[test]
fn summary_without_quantile_series_is_no_data() {
    let c = statsd_check(&statsd(&[]));
    c.summary(
        "quantiles",
        NoData,
        &["no quantile series for `gunicorn_request_duration{job=\"polls\"}`"],
    );
}

#[test]
fn summary_median_within_its_rank_error_passes() {
    // A 2:1:1 mix of ~20 ms successes and ~2 ms 404s and 500s: the
    // median falls in the gap between them. client_golang's q0.5 is any
    // value of rank 0.45..0.55, here 13.9 ms where the client's exact
    // median is 2 ms.
    let mut src = statsd_with(
        &[("0.5", 0.0139), ("0.9", 0.021), ("0.99", 0.0225)],
        0.0,
        1.05,
    );
    src.add("gunicorn_request_status_404", &[], counter(0.0, 0.0));
    let client = Client::new()
        .http_spread(200, 50, 18.0, 22.0)
        .http_spread(200, 50, 1.5, 2.5);
    let c = check(
        &src,
        &entry(Convention::Statsd, &[("job", "polls")]),
        &client.build(),
    );
    c.summary("quantiles", Pass, &["q0.5: server 13.9ms / client"]);
}

#[test]
fn summary_window_with_traffic_from_before_the_run_widens_the_band() {
    // 20 slow requests before the run are still in the 10-minute
    // window: the server's q0.9 may be one of them; its q0.5 is still
    // bounded by the run's.
    let c = statsd_check(&statsd_with(&[("0.5", 0.05), ("0.9", 0.4)], 20.0, 4.8));
    let v = c.summary("quantiles", Pass, &["q0.9: server 400.0ms"]);
    assert!(v.warnings[0].contains("20 from before the run"), "{v:#?}");
    assert!(v.warnings[1].contains("q0.9 not compared"), "{v:#?}");
}

#[test]
fn queueing_before_a_summary_timer_fails_the_means() {
    // 16 users on 3 sync workers: requests wait in the listen backlog,
    // which gunicorn's timer does not see. Server mean 10 ms, client 115.
    let mut src = statsd_with(&[("0.5", 0.01), ("0.9", 0.012), ("0.99", 0.015)], 0.0, 1.0);
    src.add("gunicorn_workers", &[], sampled(|_| 3.0));
    let client = Client::new().http_spread(200, 100, 30.0, 200.0);
    let c = check(
        &src,
        &entry(Convention::Statsd, &[("job", "polls")]),
        &client.build(),
    );
    c.summary("mean", Pass, &[]);
    c.diagnosis(
        "duration",
        Fail,
        &[
            "server mean 10.0ms vs client mean 115.0ms",
            "~105.0ms of each request is spent outside the server's timer",
            "queueing",
        ],
    );
    c.summary("quantiles", Pass, &[]);
}

/// An OpenTelemetry-instrumented app without the semconv opt-in: the old
/// histogram in milliseconds, labelled `http_target`, `http_method`,
/// `http_status_code`.
fn otel_old(job: &str) -> MemorySource {
    let mut src = MemorySource::default();
    src.histogram(
        "http_server_duration_milliseconds",
        &[
            ("job", job),
            ("http_target", "/polls/{id}"),
            ("http_method", "GET"),
            ("http_status_code", "200"),
        ],
        &[
            0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 1000.0,
        ],
        &observations(100, 38.0, 58.0)
            .iter()
            .map(|s| s * 1e3)
            .collect::<Vec<_>>(),
    );
    src
}

#[test]
fn otel_old_names_are_read_in_milliseconds_and_named() {
    let src = otel_old("polls");
    let e = entry(
        Convention::Otel,
        &[("job", "polls"), ("http_route", "/polls/{id}")],
    );
    let client = Client::new().http_spread(200, 100, 40.0, 60.0);
    let c = check(&src, &e, &client.build());
    let p = c.summary(
        "preflight",
        Pass,
        &["1 series of http_server_duration_milliseconds_count"],
    );
    assert!(
        p.warnings[0].contains("only OpenTelemetry's old HTTP names are exported")
            && p.warnings[0].contains("OTEL_SEMCONV_STABILITY_OPT_IN=http"),
        "{p:#?}"
    );
    c.summary("count", Pass, &["server 100 = client 100"]);
    c.summary("errors", Pass, &["200: server 100 / client 100"]);
    c.summary("mean", Pass, &["server mean 48.0ms"]);
    c.summary("duration", Pass, &[]);
    c.summary("quantiles", Pass, &[]);
}

#[test]
fn otel_stable_names_only_with_old_matchers_say_so() {
    let mut src = MemorySource::default();
    src.histogram(
        "http_server_request_duration_seconds",
        &[
            ("http_route", "/polls/{id}"),
            ("http_request_method", "GET"),
            ("http_response_status_code", "200"),
        ],
        &[0.005, 0.01, 0.025, 0.05, 0.075, 0.1],
        &observations(100, 38.0, 58.0),
    );
    let e = entry(Convention::Otel, &[("http_target", "/polls/{id}")]);
    let c = check(
        &src,
        &e,
        &Client::new().http_spread(200, 100, 40.0, 60.0).build(),
    );
    let p = c.summary(
        "preflight",
        Pass,
        &["http_server_request_duration_seconds_count"],
    );
    assert!(
        p.warnings[0].contains("only OpenTelemetry's stable HTTP names"),
        "{p:#?}"
    );
    c.summary("count", Pass, &[]);
    c.summary("mean", Pass, &[]);
}

#[test]
fn otel_names_on_another_job_only_are_not_uncounted_exceptions() {
    // The stable names exist, but on another job; this job exports the
    // old ones only, for other routes.
    let mut src = otel_old("app");
    src.add(
        "http_server_request_duration_seconds_count",
        &[("job", "other"), ("http_route", "/polls/{id}")],
        counter(0.0, 5.0),
    );
    let e = entry(
        Convention::Otel,
        &[("job", "app"), ("http_route", "/crash")],
    );
    let c = check(&src, &e, &Client::new().http(500, 10, 5.0).build());
    let v = c.get("preflight");
    assert!(
        !v.diagnosis.as_deref().unwrap_or("").contains("bypass"),
        "{v:#?}"
    );
    assert_ne!(v.status, Pass);
}

#[test]
fn a_milliseconds_histogram_is_not_milliseconds_exported_as_seconds() {
    let mut src = MemorySource::default();
    src.add(
        "app_requests_total",
        &[("route", "/polls")],
        counter(0.0, 100.0),
    );
    src.histogram(
        "app_request_duration_milliseconds",
        &[("route", "/polls")],
        &[10.0, 25.0, 50.0, 100.0, 250.0],
        &[48.0; 100],
    );
    let mut e = entry(Convention::Custom, &[("route", "/polls")]);
    e.requests_metric = Some("app_requests_total".into());
    e.duration_metric = Some("app_request_duration_milliseconds".into());
    let client = Client::new().http(200, 100, 50.0);
    let c = check(&src, &e, &client.build());
    c.summary("mean", Pass, &["server mean 48.0ms"]);
    c.summary("duration", Pass, &[]);

    // The same histogram under a name without a unit, declared `unit: ms`.
    let mut src = MemorySource::default();
    src.add(
        "app_requests_total",
        &[("route", "/polls")],
        counter(0.0, 100.0),
    );
    src.histogram(
        "app_latency",
        &[("route", "/polls")],
        &[10.0, 25.0, 50.0, 100.0, 250.0],
        &[48.0; 100],
    );
    e.duration_metric = Some("app_latency".into());
    e.unit = Some(1e-3);
    let c = check(&src, &e, &client.build());
    c.summary("mean", Pass, &["server mean 48.0ms"]);
    // Without it the values are read as seconds, and the mistake named.
    e.unit = None;
    let c = check(&src, &e, &client.build());
    c.diagnosis("mean", Fail, &["milliseconds exported as seconds"]);
}
