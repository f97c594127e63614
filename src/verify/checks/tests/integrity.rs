//! Preflight, resets and freshness: missing families and labels, worker
//! registries, restarts, registry resets, stale and frozen samples.

use super::{CREATED, REQUESTS, VIEW, django, healthy, requests};
use crate::metrics::Sample;
use crate::scenario::verification::Convention;
use crate::verify::Status::{Fail, NoData, Pass, Skipped};
use crate::verify::testing::{
    Client, MemorySource, S, T0, T1, check, constant, counter, entry, progress, sampled, scrapes,
};

/// Labels of the view's 200 series.
const OK_200: &[(&str, &str)] = &[VIEW, ("method", "GET"), ("status", "200")];

/// A sample per scrape, from whichever of two worker registries answered
/// it: worker A takes the even scrapes, worker B the odd ones.
fn two_workers(a: impl Fn(i64) -> f64, b: impl Fn(i64) -> f64) -> Vec<Sample> {
    scrapes()
        .enumerate()
        .map(|(k, t)| (t, if k % 2 == 0 { a(t) } else { b(t) }))
        .collect()
}

/// Worker A counted 60 of the run's requests, worker B 40.
fn worker_counts() -> Vec<Sample> {
    two_workers(
        |t| 30.0 + (60.0 * progress(t)).floor(),
        |t| 10.0 + (40.0 * progress(t)).floor(),
    )
}

/// A counter that reaches 60 four seconds into the load, falls to 0 at
/// five seconds and climbs to 50.
fn reset_at_five_seconds() -> Vec<Sample> {
    sampled(|t| {
        if t < T0 + 5_000 {
            20.0 + 100.0 * progress(t)
        } else {
            100.0 * progress(t) - 50.0
        }
    })
}

/// A value that changes once, five seconds into the load.
fn changes_at_five_seconds(before: f64, after: f64) -> Vec<Sample> {
    sampled(|t| if t < T0 + 5_000 { before } else { after })
}

fn client() -> Client {
    Client::new().http(200, 100, 50.0)
}

#[test]
fn missing_family_is_no_data_naming_the_targets() {
    let c = check(&MemorySource::default(), &django(), &client().build());
    c.summary(
        "preflight",
        NoData,
        &[&format!(
            "no series for `{REQUESTS}{{view=\"polls:success\"}}`"
        )],
    );
    c.diagnosis(
        "preflight",
        NoData,
        &[
            &format!("no series of `{REQUESTS}` at all"),
            "the service is not scraped",
            "targets: job=\"polls\" instance=\"polls:8000\" (http://polls:8000/metrics)",
            "does not export the django convention's metrics",
        ],
    );
    assert_eq!(c.figures.count, None);

    let nothing = MemorySource {
        targets: Vec::new(),
        ..Default::default()
    };
    check(&nothing, &django(), &client().build()).diagnosis(
        "preflight",
        NoData,
        &["the service is not scraped (no targets)"],
    );
}

#[test]
fn unmatched_labels_list_the_values_that_exist() {
    let mut src = MemorySource::default();
    for view in ["polls:index", "polls:other", "polls:index"] {
        src.add(
            REQUESTS,
            &[("view", view), ("status", "200")],
            counter(0.0, 10.0),
        );
    }
    let e = entry(
        Convention::Django,
        &[("view", "polls:succes"), ("app", "polls")],
    );
    let c = check(&src, &e, &client().build());
    let v = c.diagnosis(
        "preflight",
        NoData,
        &[
            "found view: polls:index, polls:other",
            "no series has a `app` label",
        ],
    );
    assert!(!v.diagnosis.as_ref().unwrap().contains("bypass"), "{v:#?}");
    c.skipped(
        &["count", "errors", "duration"],
        "no series to read (see preflight)",
    );
}

#[test]
fn uncounted_exceptions_with_no_series_count_as_zero() {
    // The view's 5xx never reach the middleware, so the view has no
    // series; the family is exported for other views.
    let mut src = MemorySource::default();
    requests(&mut src, "200", 100.0);
    let e = entry(Convention::Django, &[("view", "polls:exception")]);
    let client = Client::new().http(500, 10, 5.0);
    let c = check(&src, &e, &client.build());
    assert_eq!(
        c.order(),
        [
            ("preflight", NoData),
            ("count", Fail),
            ("errors", Fail),
            ("duration", Skipped),
        ]
    );
    c.diagnosis(
        "preflight",
        NoData,
        &[
            "every response the client got was a 5xx and the server counted none of them",
            "exceptions bypass the metrics middleware",
            "found view: polls:success",
        ],
    );
    let count = c.diagnosis(
        "count",
        Fail,
        &["the 10 missing are all 5xx responses", "exceptions bypass"],
    );
    assert_eq!(count.summary, "server 0 ≠ client 10");
    assert!(count.warnings[0].contains("the server counted 0"));
    let errors = c.diagnosis(
        "errors",
        Fail,
        &["client saw 10 × 500, server counted 0: exceptions bypass the metrics middleware"],
    );
    assert!(errors.warnings[0].contains("taken as 0"));
    c.skipped(&["duration"], "no series to read (see preflight)");
    assert_eq!(c.figures.count, Some(0.0));
}

#[test]
fn worker_saw_tooth_with_flipping_created_blames_worker_registries() {
    let mut src = MemorySource::default();
    src.add(REQUESTS, OK_200, worker_counts());
    src.add(
        CREATED,
        OK_200,
        two_workers(|_| 1_699_999_000.0, |_| 1_699_999_100.5),
    );
    let c = check(&src, &django(), &client().build());
    c.summary(
        "resets",
        Fail,
        &["counters dropped", "in 11 scrape intervals"],
    );
    c.diagnosis(
        "resets",
        Fail,
        &[
            "`_created` time flips between values 11×",
            "different worker processes",
            "multiprocess mode",
        ],
    );
    assert!(
        !c.get("resets")
            .diagnosis
            .as_ref()
            .unwrap()
            .contains("restarted")
    );
}

#[test]
fn flipping_process_start_time_blames_worker_processes_not_restarts() {
    // Each worker process exports its own start time: scrapes that reach
    // different workers flip it, with `_created` flipping alongside, or
    // alone when the library exports no `_created`.
    for with_created in [true, false] {
        let mut src = MemorySource::default();
        src.add(REQUESTS, OK_200, worker_counts());
        src.add(
            "process_start_time_seconds",
            &[],
            two_workers(|_| 1_699_990_000.25, |_| 1_699_990_003.5),
        );
        if with_created {
            src.add(
                CREATED,
                OK_200,
                two_workers(|_| 1_699_999_000.0, |_| 1_699_999_100.5),
            );
        }
        let c = check(&src, &django(), &client().build());
        let v = c.diagnosis(
            "resets",
            Fail,
            &["different worker processes", "multiprocess mode"],
        );
        let d = v.diagnosis.as_ref().unwrap();
        assert!(!d.contains("restarted"), "{v:#?}");
        if !with_created {
            assert!(
                d.contains("process_start_time_seconds flips between values 11×"),
                "{v:#?}"
            );
        }
    }
}

#[test]
fn real_restart_is_named_by_process_start_time() {
    let mut src = MemorySource::default();
    src.add(REQUESTS, OK_200, reset_at_five_seconds());
    src.add(
        "process_start_time_seconds",
        &[],
        changes_at_five_seconds(1_699_990_000.25, 1_700_000_004.5),
    );
    // A new process has a new registry, created after it started.
    src.add(
        CREATED,
        OK_200,
        changes_at_five_seconds(1_699_990_001.0, 1_700_000_004.75),
    );
    let c = check(&src, &django(), &client().build());
    c.summary(
        "resets",
        Fail,
        &["counters dropped 1× in 11 scrape intervals"],
    );
    c.diagnosis(
        "resets",
        Fail,
        &[
            "the process restarted 1× during the run (process_start_time_seconds changed)",
            "lost to every query",
        ],
    );
}

#[test]
fn registry_reset_moves_created_forward() {
    let mut src = MemorySource::default();
    src.add(REQUESTS, OK_200, reset_at_five_seconds());
    src.add(
        "process_start_time_seconds",
        &[],
        constant(1_699_990_000.25),
    );
    src.add(
        CREATED,
        OK_200,
        changes_at_five_seconds(1_699_990_001.0, 1_700_000_004.75),
    );
    let c = check(&src, &django(), &client().build());
    c.diagnosis(
        "resets",
        Fail,
        &[
            "without a process restart",
            "their `_created` time moved forward 1×",
            "the registry is re-created or cleared while the process runs",
        ],
    );
}

#[test]
fn saw_tooth_without_created_most_likely_workers() {
    let mut src = MemorySource::default();
    src.add(REQUESTS, OK_200, worker_counts());
    let c = check(&src, &django(), &client().build());
    c.diagnosis(
        "resets",
        Fail,
        &[
            "counters drop and climb back without a restart",
            "scrapes most likely hit different worker processes",
        ],
    );
}

#[test]
fn reset_without_created_names_both_causes() {
    let mut src = MemorySource::default();
    src.add(REQUESTS, OK_200, reset_at_five_seconds());
    let c = check(&src, &django(), &client().build());
    c.diagnosis(
        "resets",
        Fail,
        &[
            "either the registry is re-created or cleared",
            "or scrapes hit different worker processes",
            "export `_created` or process_start_time_seconds to tell which",
        ],
    );
}

#[test]
fn created_that_never_moved_does_not_claim_a_re_created_registry() {
    // `_created` is exported but steady: it cannot tell a reset from
    // another registry, so the diagnosis falls back on the drops' shape.
    let mut src = MemorySource::default();
    src.add(REQUESTS, OK_200, reset_at_five_seconds());
    src.add(CREATED, OK_200, constant(1_699_990_001.0));
    let c = check(&src, &django(), &client().build());
    let v = c.diagnosis("resets", Fail, &["to tell which"]);
    assert!(
        !v.diagnosis.as_ref().unwrap().contains("moved forward 0×"),
        "{v:#?}"
    );
}

#[test]
fn series_vanishing_from_a_live_page_counts_as_a_reset() {
    let mut src = MemorySource::default();
    requests(&mut src, "200", 100.0);
    // Another view's series is gone from the page after three seconds.
    src.add(
        REQUESTS,
        &[
            ("view", "polls:index"),
            ("method", "GET"),
            ("status", "200"),
        ],
        counter(5.0, 10.0)
            .into_iter()
            .filter(|(t, _)| *t <= T0 + 3_000)
            .collect(),
    );
    let c = check(&src, &django(), &client().build());
    c.summary(
        "resets",
        Fail,
        &[
            "counters dropped 0×",
            &format!("across the 2 series of {REQUESTS} on the same target"),
            "1 series vanished from a page that is still scraped",
        ],
    );
    c.diagnosis("resets", Fail, &["without a process restart"]);
}

#[test]
fn stale_samples_fail_freshness() {
    let (mut src, client) = healthy(100);
    for s in &mut src.series {
        s.samples.retain(|(t, _)| *t <= T0 + 3_000);
    }
    src.targets[0].health = "down".into();
    src.targets[0].last_scrape_ms = Some(T0 + 3_000);
    let c = check(&src, &django(), &client.build());
    c.summary("resets", Pass, &["no counter drops"]);
    c.summary("freshness", Fail, &["is 8.00s old at the end of the run"]);
    c.diagnosis(
        "freshness",
        Fail,
        &["the target is down or no longer scraped", "stale"],
    );
}

#[test]
fn frozen_metrics_fail_freshness() {
    // Fresh samples, frozen values: the endpoint serves a copy taken
    // three seconds into the load.
    let mut src = MemorySource::default();
    src.add(
        REQUESTS,
        OK_200,
        sampled(|t| 20.0 + (100.0 * progress(t.min(T0 + 3_000))).floor()),
    );
    let c = check(&src, &django(), &client().build());
    c.summary(
        "freshness",
        Fail,
        &["counters unchanged since T0+3.0s though the client completed 60 requests after that"],
    );
    c.diagnosis(
        "freshness",
        Fail,
        &["the metrics endpoint stopped updating while the service kept serving"],
    );

    // Frozen before the load began.
    let mut src = MemorySource::default();
    src.add(REQUESTS, OK_200, constant(20.0));
    let c = check(&src, &django(), &client().build());
    c.summary(
        "freshness",
        Fail,
        &[
            "unchanged since before the load started",
            "completed 90 requests",
        ],
    );
}

#[test]
fn fresh_counters_pass_freshness() {
    let (src, client) = healthy(100);
    let c = check(&src, &django(), &client.build());
    assert_eq!(S - T1, 1_000);
    c.summary(
        "freshness",
        Pass,
        &["newest samples 1.00s after the load ended"],
    );
}

/// A sample per scrape from whichever of three worker registries
/// answered it: A until two seconds into the load, then B, then C from
/// six seconds on — each worker seen once, in the order they started.
fn three_workers_in_turn(a: f64, b: f64, c: f64) -> Vec<Sample> {
    sampled(|t| {
        if t < T0 + 2_000 {
            a
        } else if t < T0 + 6_000 {
            b
        } else {
            c
        }
    })
}

#[test]
fn start_times_of_workers_seen_in_turn_are_not_restarts() {
    // uWSGI or gunicorn without multiprocess mode: each worker exports
    // its own start time, all from before the previous scrape, so the
    // value moves without any process starting.
    let mut src = MemorySource::default();
    src.add(
        REQUESTS,
        OK_200,
        three_workers_in_turn(80.0, 40.0, 60.0)
            .into_iter()
            .map(|(t, v)| (t, v + (10.0 * progress(t)).floor()))
            .collect(),
    );
    src.add(
        "process_start_time_seconds",
        &[],
        three_workers_in_turn(1_699_999_900.11, 1_699_999_900.13, 1_699_999_900.17),
    );
    let c = check(&src, &django(), &client().build());
    let v = c.diagnosis(
        "resets",
        Fail,
        &[
            "process_start_time_seconds flips between values 2× (3 processes",
            "different worker processes",
            "multiprocess mode",
        ],
    );
    assert!(
        !v.diagnosis.as_ref().unwrap().contains("restarted"),
        "{v:#?}"
    );
}

#[test]
fn series_duplicated_on_the_page_is_not_a_registry_reset() {
    // Two collectors export the same counter: every page holds it twice.
    let mut src = MemorySource::default();
    let mut samples: Vec<Sample> = Vec::new();
    for (t, v) in counter(20.0, 100.0) {
        samples.push((t, v));
        samples.push((t, 3.0));
    }
    src.add(REQUESTS, OK_200, samples);
    src.add(CREATED, OK_200, constant(1_699_990_001.0));
    let c = check(&src, &django(), &client().build());
    c.summary(
        "resets",
        Fail,
        &["1 series appear more than once on the same page"],
    );
    let v = c.diagnosis(
        "resets",
        Fail,
        &[
            "is duplicated on the page",
            "duplicate sample for timestamp",
        ],
    );
    let d = v.diagnosis.as_ref().unwrap();
    assert!(
        !d.contains("re-created") || d.contains("not a registry reset"),
        "{v:#?}"
    );
    assert!(!d.contains("worker"), "{v:#?}");
}

#[test]
fn counter_valued_nan_or_inf_says_so() {
    for (value, word) in [(f64::NAN, "NaN"), (f64::INFINITY, "+Inf")] {
        let mut src = MemorySource::default();
        src.add(REQUESTS, OK_200, constant(value));
        let c = check(&src, &django(), &client().build());
        c.summary("preflight", Fail, &[&format!("1 of 1 series hold {word}")]);
        let v = c.diagnosis(
            "preflight",
            Fail,
            &[
                &format!("is {word} on the page"),
                "a counter must be a finite count",
            ],
        );
        assert!(!v.diagnosis.as_ref().unwrap().is_empty());
        c.skipped(
            &["count", "errors", "duration"],
            "the series hold no numbers (see preflight)",
        );
    }
}

#[test]
fn no_series_on_the_target_is_not_read_as_uncounted_exceptions() {
    // The metric exists on another job only: this job exports other
    // names. Honouring `job`, nothing says the exceptions bypass the
    // middleware.
    let mut src = MemorySource::default();
    src.add(
        REQUESTS,
        &[("job", "other"), VIEW, ("method", "GET"), ("status", "200")],
        counter(0.0, 10.0),
    );
    let e = entry(
        Convention::Django,
        &[("job", "polls"), ("view", "polls:exception")],
    );
    let c = check(&src, &e, &Client::new().http(500, 10, 5.0).build());
    let v = c.diagnosis(
        "preflight",
        NoData,
        &[
            "is exported, but not by {job=\"polls\"}",
            "found job: other",
            "exports other metric names",
        ],
    );
    assert!(!v.diagnosis.as_ref().unwrap().contains("bypass"), "{v:#?}");
    c.skipped(
        &["count", "errors", "duration"],
        "no series to read (see preflight)",
    );
}

#[test]
fn created_times_of_workers_seen_in_turn_are_not_re_created_registries() {
    // Without process_start_time_seconds (or with it filtered), three
    // workers' `_created`, each older than the scrape before it, move
    // forward as the scrapes reach them in turn: no registry was re-created.
    let mut src = MemorySource::default();
    src.add(
        REQUESTS,
        OK_200,
        three_workers_in_turn(80.0, 40.0, 60.0)
            .into_iter()
            .map(|(t, v)| (t, v + (10.0 * progress(t)).floor()))
            .collect(),
    );
    src.add(
        CREATED,
        OK_200,
        three_workers_in_turn(1_699_999_950.5, 1_699_999_951.25, 1_699_999_952.0),
    );
    let c = check(&src, &django(), &client().build());
    let v = c.diagnosis("resets", Fail, &["different worker processes"]);
    assert!(
        !v.diagnosis.as_ref().unwrap().contains("re-created"),
        "{v:#?}"
    );
}

#[test]
fn series_that_stop_while_the_page_keeps_changing_are_not_a_frozen_page() {
    // Scrapes read one worker's registry: it served this view until three
    // seconds into the load, then the client's connections moved to other
    // workers. Another view's series on the same page keeps changing.
    let mut src = MemorySource::default();
    src.add(
        REQUESTS,
        OK_200,
        sampled(|t| 20.0 + (100.0 * progress(t.min(T0 + 3_000))).floor()),
    );
    src.add(
        REQUESTS,
        &[
            ("view", "polls:index"),
            ("method", "GET"),
            ("status", "200"),
        ],
        counter(5.0, 50.0),
    );
    let c = check(&src, &django(), &client().build());
    let v = c.summary("freshness", Pass, &[]);
    assert!(
        v.warnings[0].contains("while other series of the page kept changing"),
        "{v:#?}"
    );
    c.summary("count", Fail, &["server 30 ≠ client 100"]);
}

#[test]
fn a_restart_whose_start_time_reads_early_is_still_a_restart() {
    // Linux reports the boot time in whole seconds: the new process's
    // start time may read up to a second before it really started, here
    // before the scrape that preceded the restart.
    let mut src = MemorySource::default();
    src.add(REQUESTS, OK_200, reset_at_five_seconds());
    src.add(
        "process_start_time_seconds",
        &[],
        changes_at_five_seconds(1_699_990_000.25, 1_700_000_003.3),
    );
    let c = check(&src, &django(), &client().build());
    c.diagnosis("resets", Fail, &["the process restarted 1× during the run"]);
}

#[test]
fn a_restart_hidden_between_scrapes_is_still_a_reset() {
    // The new process counted past the old one's last scraped value (14)
    // before its first scrape (20): no sample ever drops, but the
    // increase over the run misses what the old process counted.
    let mut src = MemorySource::default();
    src.add(
        REQUESTS,
        OK_200,
        sampled(|t| {
            if t < T0 + 5_000 {
                10.0 + 10.0 * progress(t)
            } else {
                100.0 * progress(t) - 30.0
            }
        }),
    );
    src.add(
        "process_start_time_seconds",
        &[],
        changes_at_five_seconds(1_699_990_000.25, 1_700_000_004.5),
    );
    let c = check(&src, &django(), &client().build());
    c.summary(
        "resets",
        Fail,
        &[
            "no counter drops",
            "but the process restarted 1× during the run",
        ],
    );
    c.diagnosis("resets", Fail, &["climbed past their last scraped values"]);
    c.skipped(
        &["freshness", "count", "errors", "duration"],
        "counters reset during the run (see resets)",
    );
}

#[test]
fn a_restart_before_anything_was_counted_loses_nothing() {
    // The old process had counted nothing when it restarted: the
    // increase over the run is whole.
    let mut src = MemorySource::default();
    src.add(
        REQUESTS,
        OK_200,
        sampled(|t| {
            if t < T0 + 5_000 {
                0.0
            } else {
                200.0 * progress(t) - 100.0
            }
        }),
    );
    src.add(
        "process_start_time_seconds",
        &[],
        changes_at_five_seconds(1_699_990_000.25, 1_700_000_004.5),
    );
    let c = check(&src, &django(), &client().build());
    c.summary("resets", Pass, &["no counter drops"]);
}

#[test]
fn another_jobs_process_on_the_same_instance_is_not_a_restart() {
    // A sidecar scraped as another job on the same host:port restarts;
    // the service's own process does not.
    let mut src = MemorySource::default();
    src.add(REQUESTS, OK_200, counter(20.0, 100.0));
    src.add(
        "process_start_time_seconds",
        &[],
        constant(1_699_990_000.25),
    );
    src.add(
        "process_start_time_seconds",
        &[("job", "sidecar")],
        changes_at_five_seconds(1_699_990_000.25, 1_700_000_004.5),
    );
    let c = check(&src, &django(), &client().build());
    c.summary("resets", Pass, &["no counter drops"]);
}

#[test]
fn a_process_replaced_just_before_the_run_is_named_as_such() {
    // Scrapes failed for three seconds before the load; meanwhile a new
    // process started, 2.5 s before T0, and had counted past the old
    // one's 20 by its first scrape.
    let gap = |t: i64| !(T0 - 3_000..=T0).contains(&t);
    let with_gap = |f: &dyn Fn(i64) -> f64| -> Vec<Sample> {
        scrapes().filter(|t| gap(*t)).map(|t| (t, f(t))).collect()
    };
    let mut src = MemorySource::default();
    src.add(
        REQUESTS,
        OK_200,
        with_gap(&|t| {
            if t < T0 {
                20.0
            } else {
                30.0 + 100.0 * progress(t)
            }
        }),
    );
    src.add(
        "process_start_time_seconds",
        &[],
        with_gap(&|t| {
            if t < T0 {
                1_699_990_000.25
            } else {
                (T0 - 2_500) as f64 / 1000.0
            }
        }),
    );
    let c = check(&src, &django(), &client().build());
    c.summary(
        "resets",
        Fail,
        &[
            "no counter drops",
            "the process was replaced just before the run",
        ],
    );
    c.diagnosis(
        "resets",
        Fail,
        &["the baseline at the run's start is the old process's count"],
    );
}
