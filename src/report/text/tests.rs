use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use unicode_width::UnicodeWidthStr;

use super::layout::WIDTH;
use super::render_text;
use crate::engine::EngineOutput;
use crate::measure::{Recorder, Window};
use crate::outcome::Outcome;
use crate::report::{Exit, RunReport, RunVerdict, ShardInfo, Summary};
use crate::verify::{ServerFigures, Status, Verdict, VerificationReport};

const LONG: &str = "checkout_with_a_rather_long_request_name";

fn scenario(thresholds: &str) -> crate::scenario::Scenario {
    let text = format!(
        "name: shop\ntargets: {{ web: {{ url: \"http://127.0.0.1:1\" }} }}\nload:\n  stages: [{{ for: 10s, users: 10 }}, {{ for: 10s, users: 20 }}, {{ for: 10s, users: 5 }}]\n  spawn_rate: 5/s\nrequests:\n  - {{ name: home, http: {{ target: web, path: / }} }}\n  - {{ name: {LONG}, http: {{ target: web, path: /c }} }}\nthresholds:\n{thresholds}"
    );
    crate::scenario::parse(Path::new("s.yaml"), &text).unwrap()
}

/// A 30 s run: `home` answers 200 in 10 ms, the long-named request 500
/// in 2 ms a third of the time.
fn report(thresholds: &str) -> (RunReport, Summary) {
    let mut totals = Recorder::new(2);
    for i in 0..3000 {
        totals.record(0, Outcome::Status(200), true, Duration::from_millis(10));
        let (status, ok) = if i % 3 == 0 {
            (500, false)
        } else {
            (200, true)
        };
        totals.record(1, Outcome::Status(status), ok, Duration::from_millis(2));
    }
    let windows = vec![Window::of(30.0, &totals, false)];
    let out = EngineOutput::completed(
        totals,
        windows,
        UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        Duration::from_secs(30),
        1,
    );
    RunReport::new(&scenario(thresholds), "s.yaml", &out)
}

fn verdict(request: &str, check: &str, status: Status, long: bool) -> Verdict {
    let words = if long {
        "the server counted 2,000 requests where the client sent 3,000 and received a response for every one of them, over the whole run"
    } else {
        "server 3,000, client 3,000"
    };
    Verdict {
        request: Some(request.into()),
        check: check.into(),
        status,
        summary: words.into(),
        diagnosis: long.then(|| "counters that go back to zero between scrapes: several worker processes each export their own registry, and each scrape reads one of them".into()),
        query: format!("sum(increase(http_requests_total{{handler=\"/{request}\",method=\"GET\",status=~\"5..\"}}[30s]))"),
        eval_unix_ms: 1_800_000_031_000,
        warnings: Vec::new(),
    }
}

/// Verification where `failing` of the long-named request's checks fail
/// and the rest pass.
fn verified(r: &mut RunReport, summary: &Summary, statuses: &[Status]) {
    let mut verdicts = vec![
        verdict("home", "count", Status::Pass, false),
        verdict("home", "errors", Status::Pass, false),
    ];
    for (i, s) in statuses.iter().enumerate() {
        verdicts.push(verdict(LONG, &format!("check{i}"), *s, *s != Status::Pass));
    }
    let server = ["home", LONG].map(|name| ServerFigures {
        request: name.into(),
        convention: "prometheus_http".into(),
        count: Some(3000.0),
        errors: Some(0.0),
        buckets: vec![(0.005, 1000.0), (0.01, 2900.0), (0.025, 3000.0)],
        bucket_total: 3000.0,
        ..Default::default()
    });
    let v = VerificationReport {
        source: "Prometheus at http://127.0.0.1:9090".into(),
        settle_unix_ms: 1_800_000_031_000,
        verdict_after_s: 1.2,
        verdicts,
        server: server.to_vec(),
    };
    r.attach_verification(Ok(v), summary);
}

fn plain(text: &str) -> String {
    anstream::adapter::strip_str(text).to_string()
}

/// Every line fits 80 columns, except one holding a single token too
/// long for any line (a query or URL), which may overflow alone.
fn assert_fits(text: &str) {
    for line in text.lines() {
        assert!(
            line.width() <= WIDTH || !line.trim().contains(' '),
            "{} columns: {line}\n{text}",
            line.width()
        );
    }
}

#[test]
fn a_failing_run_fits_80_columns_and_puts_failures_first() {
    let (mut r, summary) = report("  - home.p95 < 1s\n  - all.errors < 1%\n  - home.count > 10\n");
    verified(
        &mut r,
        &summary,
        &[Status::Pass, Status::Fail, Status::NoData, Status::Skipped],
    );
    let text = plain(&render_text(&r, &summary));
    assert_fits(&text);

    let header: Vec<&str> = text.lines().take(2).collect();
    assert_eq!(
        header[0], "redproof · shop · load 30.0s, drain 0.1s",
        "{text}"
    );
    assert!(
        header[1].contains("closed model, users 10 → 20 → 5 over 30s (10s each), spawn 5/s"),
        "{text}"
    );
    // A name too long for its column gets a line of its own.
    let lines: Vec<&str> = text.lines().collect();
    let long = lines.iter().position(|l| *l == LONG).expect("own line");
    assert!(lines[long + 1].trim_start().starts_with("3,000"), "{text}");
    // Server quantiles are marked as estimates.
    assert!(text.contains("≈p95") && text.contains("≈9.87ms"), "{text}");

    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("no `{needle}` in\n{text}"))
    };
    assert!(at("FAIL    checkout") < at("NO DATA checkout"));
    assert!(at("NO DATA checkout") < at("skip    checkout"));
    assert!(at("skip    checkout") < at("pass    home.count, home.errors,"));
    assert!(at("FAIL all.errors < 1%") < at("pass home.p95 < 1s, home.count > 10"));
    // A failed check keeps its diagnosis and query; passes are one line.
    assert!(text.contains("→ counters that go back to zero"), "{text}");
    assert!(text.contains("query:"), "{text}");
    assert!(!text.contains("server 3,000, client 3,000"), "{text}");

    // Too long for one line, the verdict leaves out which kinds failed.
    assert_eq!(
        lines.last().unwrap(),
        &"FAIL · 2 of 9 checks failed · 1 no data · 1 skipped · exit 3"
    );
}

#[test]
fn a_passing_run_lists_every_check_and_ends_on_pass() {
    let (mut r, summary) = report("  - home.p95 < 1s\n");
    verified(&mut r, &summary, &[Status::Pass]);
    let text = plain(&render_text(&r, &summary));
    assert_fits(&text);
    assert!(text.contains("pass    home.count"), "{text}");
    assert!(text.contains("server 3,000, client 3,000"), "{text}");
    assert!(
        text.contains("  pass home.p95 < 1s  (observed 10.0ms)"),
        "{text}"
    );
    assert_eq!(text.lines().last().unwrap(), "PASS · 4 checks · exit 0");
}

#[test]
fn verdicts_are_coloured_and_the_colours_strip_cleanly() {
    let (mut r, summary) = report("  - all.errors < 1%\n  - home.p95 < 1s\n");
    verified(
        &mut r,
        &summary,
        &[Status::Fail, Status::NoData, Status::Skipped],
    );
    let text = render_text(&r, &summary);
    for (word, colour) in [
        ("FAIL", "\u{1b}[1m\u{1b}[31m"),
        ("pass", "\u{1b}[32m"),
        ("NO DATA", "\u{1b}[33m"),
        ("skip", "\u{1b}[2m"),
    ] {
        assert!(
            text.contains(&format!("{colour}{word}\u{1b}[0m")),
            "{word}: {text:?}"
        );
    }
    let plain = plain(&text);
    assert!(!plain.contains('\u{1b}'));
    assert!(plain.lines().last().unwrap().starts_with("FAIL · "));
}

/// Turns a plain run into one that ended some way.
type Setup = dyn Fn(&mut RunReport, &Summary);

/// The verdict line states the exit code the command exits with, for
/// every way a run can end.
#[test]
fn the_verdict_line_and_the_exit_code_agree() {
    let cases: Vec<(&str, Box<Setup>, Exit, &str)> = vec![
        (
            "pass",
            Box::new(|_, _| {}),
            Exit::Pass,
            "PASS · 1 check · exit 0",
        ),
        (
            "thresholds failed",
            Box::new(|_, _| {}),
            Exit::ThresholdFailed,
            "FAIL · 1 of 1 checks failed (1 threshold) · exit 1",
        ),
        (
            "verification failed",
            Box::new(|r, s| verified(r, s, &[Status::Fail])),
            Exit::VerificationFailed,
            "FAIL · 1 of 4 checks failed (1 verification) · exit 2",
        ),
        (
            "both",
            Box::new(|r, s| verified(r, s, &[Status::Fail])),
            Exit::Both,
            "FAIL · 2 of 4 checks failed (1 threshold, 1 verification) · exit 3",
        ),
        (
            "no data",
            Box::new(|r, s| verified(r, s, &[Status::NoData, Status::Skipped])),
            Exit::VerificationFailed,
            "FAIL · 3 of 5 checks passed · 1 no data · 1 skipped · exit 2",
        ),
        (
            "verification not run",
            Box::new(|r, s| r.attach_verification(Err("connection refused".into()), s)),
            Exit::VerificationFailed,
            "FAIL · verification not run · 1 check · exit 2",
        ),
        (
            "unavailable",
            Box::new(|r, s| {
                r.attach_verification(Err("connection refused".into()), s);
                r.verification_unavailable = true;
            }),
            Exit::Unavailable,
            "FAIL · metric source unreachable · verification not run · 1 check · exit 69",
        ),
        (
            "interrupted",
            Box::new(|r, _| r.interrupted = true),
            Exit::Interrupted,
            "INTERRUPTED · 1 check · exit 130",
        ),
        (
            "run failed",
            Box::new(|r, _| r.failure = Some("a worker thread panicked".into())),
            Exit::Internal,
            "FAIL · the run failed · 1 check · exit 70",
        ),
        (
            "aborted",
            Box::new(|r, _| r.aborted = Some("on_start failed".into())),
            Exit::ThresholdFailed,
            "FAIL · the scenario aborted the run · 1 check · exit 1",
        ),
        (
            "shard",
            Box::new(|r, _| {
                r.shard = Some(ShardInfo {
                    index: 0,
                    count: 2,
                    scenario_hash: "ab".repeat(32),
                });
            }),
            Exit::Pass,
            "PASS · shard 0/2: judged by `redproof merge` · exit 0",
        ),
    ];
    for (name, setup, exit, line) in cases {
        let failing = matches!(name, "thresholds failed" | "both" | "shard");
        let (mut r, summary) = report(if failing {
            "  - all.errors < 1%\n"
        } else {
            "  - home.p95 < 1s\n"
        });
        setup(&mut r, &summary);
        let verdict = RunVerdict::of(&r);
        assert_eq!(verdict.exit, exit, "{name}");
        let text = plain(&render_text(&r, &summary));
        assert_eq!(text.lines().last().unwrap(), line, "{name}:\n{text}");
        assert!(line.ends_with(&format!("exit {}", exit as u8)), "{name}");
        assert_eq!(verdict.line(&r), line, "{name}");
    }
}
