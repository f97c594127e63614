//! Reasoning across the requests of one target: a frozen page and
//! scrapes pinned to one worker's registry read as one cause in every
//! request, whatever the order of the requests.

use super::{LATENCY, REQUESTS};
use crate::metrics::Sample;
use crate::scenario::verification::{Convention, VerifyEntry};
use crate::verify::Status::{Fail, Pass, Skipped};
use crate::verify::testing::{
    Checked, Client, MemorySource, T0, check_all, counter, entry, observations, progress, sampled,
};
use crate::verify::{ClientRequest, Status};

fn view(v: &str) -> VerifyEntry {
    entry(Convention::Django, &[("view", v)])
}

fn series(src: &mut MemorySource, view: &str, status: &str, samples: Vec<Sample>) {
    src.add(
        REQUESTS,
        &[("view", view), ("method", "GET"), ("status", status)],
        samples,
    );
}

/// The polls views as a scenario checks them: success (200s, 40–60 ms),
/// not_found (404s) and exception (500s).
fn polls_clients() -> Vec<(VerifyEntry, ClientRequest)> {
    vec![
        (
            view("polls:2xx_success"),
            Client::new()
                .http_spread(200, 200, 40.0, 60.0)
                .named("success"),
        ),
        (
            view("polls:4xx_not_found"),
            Client::new().http(404, 100, 2.0).named("not_found"),
        ),
        (
            view("polls:5xx_exception"),
            Client::new().http(500, 100, 2.0).named("exception"),
        ),
    ]
}

fn no_failure_says(c: &Checked, words: &[&str]) {
    for v in &c.verdicts {
        let text = format!("{} {}", v.summary, v.diagnosis.as_deref().unwrap_or(""));
        for w in words {
            assert!(!text.contains(w), "{w:?} in {v:#?}");
        }
        assert!(v.status != Status::NoData, "{v:#?}");
    }
}

#[test]
fn scrapes_pinned_to_one_worker_read_as_one_cause_in_every_request() {
    // gunicorn with 4 uvicorn workers, naive registries: every scrape
    // reads the same worker, which served about a quarter of success and
    // not_found, and none of the exceptions.
    let mut src = MemorySource::default();
    series(&mut src, "polls:2xx_success", "200", counter(10.0, 50.0));
    series(&mut src, "polls:4xx_not_found", "404", counter(3.0, 26.0));
    src.histogram(
        LATENCY,
        &[("view", "polls:2xx_success"), ("method", "GET")],
        &[0.01, 0.05, 0.1],
        &observations(50, 38.0, 58.0),
    );
    let all = check_all(&src, &polls_clients());
    let (success, not_found, exception) = (&all[0], &all[1], &all[2]);
    for c in [success, not_found] {
        c.diagnosis("count", Fail, &["about 1/4", "one of ~4 worker processes"]);
        let v = c.get("errors");
        assert_eq!(v.status, Skipped, "{v:#?}");
    }
    success.summary("duration", Skipped, &["(see count)"]);
    // The exceptions landed on other workers: the same cause, not
    // "exceptions bypass the middleware".
    exception.diagnosis(
        "preflight",
        Fail,
        &[
            "none of this request's 100 responses were counted by the worker",
            "about 1/4",
        ],
    );
    exception.skipped(
        &["count", "errors", "duration"],
        "no series to read (see preflight)",
    );
    for c in &all {
        no_failure_says(c, &["bypass", "before the metrics middleware"]);
    }
}

/// The frozen-metrics fault: the page is a copy taken three seconds into
/// the load, holding not_found's series only.
fn frozen_page() -> MemorySource {
    let mut src = MemorySource::default();
    series(
        &mut src,
        "polls:4xx_not_found",
        "404",
        sampled(|t| 3.0 + (100.0 * progress(t.min(T0 + 3_000))).floor()),
    );
    src
}

#[test]
fn a_frozen_page_is_one_cause_in_every_request_whatever_the_order() {
    let src = frozen_page();
    let entries = polls_clients();
    for order in [[0, 1, 2], [2, 0, 1], [1, 2, 0]] {
        let ordered: Vec<(VerifyEntry, ClientRequest)> =
            order.iter().map(|&i| entries[i].clone()).collect();
        for c in check_all(&src, &ordered) {
            c.diagnosis(
                "freshness",
                Fail,
                &["the metrics endpoint stopped updating while the service kept serving"],
            );
            c.skipped(
                &["count", "errors", "duration"],
                "the metrics are not fresh (see freshness)",
            );
            no_failure_says(&c, &["bypass", "middleware"]);
            let failed: Vec<&str> = c
                .verdicts
                .iter()
                .filter(|v| v.status.failed())
                .map(|v| v.check.as_str())
                .collect();
            assert_eq!(failed, ["freshness"], "{:#?}", c.verdicts);
        }
    }
    let all = check_all(&src, &entries);
    all[1].summary("preflight", Pass, &[]);
    all[2].summary(
        "preflight",
        Skipped,
        &["on a page that stopped updating T0+3.0s (see freshness)"],
    );
    all[0].summary("freshness", Fail, &["(see not_found.freshness)"]);
}

#[test]
fn requests_counted_in_the_same_series_are_verified_together() {
    // statsd_exporter's gunicorn metrics carry no view: success,
    // not_found and exception all land in `gunicorn_requests`.
    let mut src = MemorySource::default();
    src.add("gunicorn_requests", &[], counter(0.0, 400.0));
    for (code, n) in [("200", 200.0), ("404", 100.0), ("500", 100.0)] {
        src.add(
            &format!("gunicorn_request_status_{code}"),
            &[],
            counter(0.0, n),
        );
    }
    src.add("gunicorn_request_duration_count", &[], counter(0.0, 400.0));
    src.add(
        "gunicorn_request_duration_sum",
        &[],
        sampled(|t| 10.4 * progress(t)),
    );
    for (q, v) in [("0.5", 0.004), ("0.9", 0.055), ("0.99", 0.059)] {
        src.add(
            "gunicorn_request_duration",
            &[("quantile", q)],
            sampled(|_| v),
        );
    }
    let statsd = entry(Convention::Statsd, &[]);
    let entries: Vec<(VerifyEntry, ClientRequest)> = polls_clients()
        .into_iter()
        .map(|(_, c)| (statsd.clone(), c))
        .collect();
    let all = check_all(&src, &entries);
    for (c, name) in all.iter().zip(["success", "not_found", "exception"]) {
        let p = c.summary("preflight", Pass, &[]);
        assert_eq!(p.request.as_deref(), Some(name));
        assert!(
            p.warnings
                .iter()
                .any(|w| w
                    .contains("success + not_found + exception are counted in the same series")),
            "{p:#?}"
        );
        c.summary("count", Pass, &["server 400 = client 400"]);
        c.summary(
            "errors",
            Pass,
            &["200: server 200 / client 200 · 404: server 100 / client 100 · 500: server 100 / client 100"],
        );
        c.summary("duration", Pass, &[]);
        c.summary("quantiles", Pass, &[]);
        assert_eq!(c.figures.request, name);
    }
}

#[test]
fn a_page_frozen_late_in_the_run_is_one_cause_even_where_too_few_requests_followed() {
    // Frozen 7.5 s into a 10 s load: success, busiest, shows it on its
    // own; not_found and exception, with requests the drain cut off,
    // completed too few after the freeze to prove it alone. Their counts
    // fall short because of it, not for a cause of their own.
    let mut src = MemorySource::default();
    for (view, status, n) in [
        ("polls:2xx_success", "200", 400.0),
        ("polls:4xx_not_found", "404", 100.0),
        ("polls:5xx_exception", "500", 100.0),
    ] {
        series(
            &mut src,
            view,
            status,
            sampled(move |t| 3.0 + (n * progress(t.min(T0 + 7_500))).floor()),
        );
    }
    let entries = vec![
        (
            view("polls:2xx_success"),
            Client::new()
                .http_spread(200, 400, 40.0, 60.0)
                .named("success"),
        ),
        (
            view("polls:4xx_not_found"),
            Client::new()
                .http(404, 100, 2.0)
                .unsure(15)
                .named("not_found"),
        ),
        (
            view("polls:5xx_exception"),
            Client::new()
                .http(500, 100, 2.0)
                .unsure(15)
                .named("exception"),
        ),
    ];
    for c in check_all(&src, &entries) {
        c.diagnosis("freshness", Fail, &["stopped updating"]);
        c.skipped(
            &["count", "errors", "duration"],
            "the metrics are not fresh (see freshness)",
        );
        no_failure_says(&c, &["lost before instrumentation", "worker", "bypass"]);
    }
}

#[test]
fn no_series_for_errors_and_non_errors_alike_is_not_about_exceptions() {
    // The scrapes read a worker that served none of the run's traffic:
    // its page holds only the metrics endpoint's own series.
    let mut src = MemorySource::default();
    series(&mut src, "metrics", "200", counter(10.0, 10.0));
    let all = check_all(&src, &polls_clients());
    let exception = &all[2];
    let v = exception.diagnosis(
        "preflight",
        crate::verify::Status::NoData,
        &[
            "none for success, not_found on the same target either",
            "the absence is not about exceptions",
            "found view: metrics",
        ],
    );
    assert!(
        !v.diagnosis.as_deref().unwrap().contains("bypass"),
        "{v:#?}"
    );
    exception.skipped(
        &["count", "errors", "duration"],
        "no series to read (see preflight)",
    );
    for c in &all {
        no_failure_says_but_no_data(c, &["bypass"]);
    }
}

fn no_failure_says_but_no_data(c: &Checked, words: &[&str]) {
    for v in &c.verdicts {
        let text = format!("{} {}", v.summary, v.diagnosis.as_deref().unwrap_or(""));
        for w in words {
            assert!(!text.contains(w), "{w:?} in {v:#?}");
        }
    }
}
