//! The polls service, healthy and with each injected fault, and what
//! preflight says before the load.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::refusing;
use crate::support::services::{Services, prometheus};
use crate::{assert_clean, polls_scenario, redproof};

/// A request through edge's REST endpoint, which calls revert-name and
/// time over gRPC.
const PROXY_REQUEST: &str = r#"  - name: proxy
    weight: 1
    http: { target: edge, path: "/proxy/{{ pick(names) }}/" }
"#;

/// Healthy polls, REST through edge into gRPC, 5 runs in a row with
/// Prometheus: every check passes and counts are exact.
#[test]
fn healthy_services_verify_clean_with_prometheus() {
    let s = Services::start(&[], true);
    let prom = prometheus(&[
        ("polls", s.polls_metrics()),
        (
            "edge-grpc",
            format!("http://{}/metrics", s.edge_grpc_metrics),
        ),
    ]);
    let scenario = polls_scenario(
        s.polls,
        &format!("{{ prometheus: \"{}\" }}", prom.url()),
        "3s",
        "",
    )
    .replace(
        "requests:\n",
        &format!("data:\n  names: [alice, bob]\nrequests:\n{PROXY_REQUEST}"),
    )
    .replace(
        "targets:\n",
        &format!(
            "targets:\n  edge: {{ url: \"http://{}\", timeout: 5s }}\n",
            s.edge_web
        ),
    ) + "  proxy: { convention: grpc, side: client, match: { grpc_method: RevertName } }\n";
    for i in 0..5 {
        let run = redproof(&scenario, &[]);
        assert_clean(&run);
        for r in ["success", "not_found", "exception", "proxy"] {
            assert_eq!(
                run.server_count(r),
                run.client_responses(r),
                "run {i}, {r}: {}",
                run.stdout
            );
            assert!(run.client_responses(r) > 0.0);
        }
        let after = run.results.as_ref().unwrap()["verification"]["verdict_after_s"]
            .as_f64()
            .unwrap();
        eprintln!("run {i}: verdict {after:.2}s after the load ended");
    }
}

/// The same with the embedded scraper, plus gunicorn's statsd metrics and
/// OpenTelemetry's.
#[test]
fn healthy_services_verify_clean_with_the_embedded_scraper() {
    let s = Services::start(&[], false);
    let metrics = format!("{{ scrape: [\"{}\"] }}", s.polls_metrics());
    let scenario = polls_scenario(s.polls, &metrics, "3s", "");
    let schema: Value =
        serde_json::from_str(include_str!("../../schema/results.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for _ in 0..5 {
        let run = redproof(&scenario, &[]);
        assert_clean(&run);
        let results = run.results.as_ref().unwrap();
        let errors: Vec<String> = validator
            .iter_errors(results)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:#?}");
        for r in ["success", "not_found", "exception"] {
            assert_eq!(
                run.server_count(r),
                run.client_responses(r),
                "{}",
                run.stdout
            );
        }
    }
    // statsd counts every request to the service: one request only.
    let statsd = format!(
        r#"name: statsd
targets: {{ polls: {{ url: "http://{}" }} }}
load: {{ users: 4, duration: 2s }}
requests:
  - {{ name: success, http: {{ target: polls, path: /polls/2xx_success/ }} }}
metrics: {metrics}
verify:
  success: {{ convention: statsd }}
"#,
        s.polls
    );
    let run = redproof(&statsd, &[]);
    assert_clean(&run);
    assert_eq!(run.server_count("success"), run.client_responses("success"));
    // OpenTelemetry's histogram, per route, with the status as a label.
    let mut otel = polls_scenario(s.polls, &metrics, "2s", "");
    for view in ["2xx_success", "4xx_not_found", "5xx_exception"] {
        let django = format!(r#"convention: django, match: {{ view: "polls:{view}" }}"#);
        assert!(otel.contains(&django));
        otel = otel.replace(
            &django,
            &format!(r#"convention: otel, match: {{ http_route: "/polls/{view}/" }}"#),
        );
    }
    let run = redproof(&otel, &[]);
    assert_clean(&run);
    for r in ["success", "not_found", "exception"] {
        assert_eq!(
            run.server_count(r),
            run.client_responses(r),
            "{}",
            run.stdout
        );
        assert!(run.client_responses(r) > 0.0);
    }
    assert!(
        run.stdout.contains("http_server_request_duration_seconds"),
        "{}",
        run.stdout
    );
}

/// Each fault is caught by the check meant for it, with its diagnosis,
/// and the checks it does not concern stay quiet.
#[test]
fn each_fault_is_caught_with_its_diagnosis() {
    // (fault, check that must fail, words its diagnosis must contain)
    let cases: &[(&str, &str, &str)] = &[
        ("workers=4", "resets", "different worker processes"),
        ("uncounted-errors", "exception.errors", "bypass"),
        (
            "unmeasured-delay=150ms",
            "duration",
            "outside the server's timer",
        ),
        ("ms-as-seconds", "mean", "milliseconds exported as seconds"),
        ("reset-every=2s", "resets", "re-created or cleared"),
        ("frozen-metrics=1500ms", "freshness", "stopped updating"),
    ];
    let services: Vec<Services> = cases
        .iter()
        .map(|(f, _, _)| Services::start(&[f], false))
        .collect();
    let targets: Vec<(&str, String)> = services
        .iter()
        .enumerate()
        .map(|(i, s)| (["a", "b", "c", "d", "e", "f"][i], s.polls_metrics()))
        .collect();
    let prom = prometheus(&targets);
    for ((fault, check, words), s) in cases.iter().zip(&services) {
        let metrics = format!("{{ prometheus: \"{}\" }}", prom.url());
        // Matchers pin the instance: one Prometheus scrapes every faulty
        // service.
        let scenario = polls_scenario(s.polls, &metrics, "5s", "").replace(
            "convention: django, match: {",
            &format!("convention: django, match: {{ instance: \"{}\", ", s.polls),
        );
        let run = redproof(&scenario, &[]);
        let failing = run.failing();
        assert!(
            failing
                .iter()
                .any(|(n, _, d)| n.ends_with(check) && d.contains(words)),
            "{fault}: expected a failing `{check}` saying `{words}`; got {failing:#?}\n{}",
            run.stdout
        );
        // No false alarms: only the checks this fault concerns fail.
        let allowed: &[&str] = match *fault {
            "uncounted-errors" => &["exception.preflight", "exception.count", "exception.errors"],
            "workers=4" => &["resets", "count", "errors"],
            _ => &[check],
        };
        for (n, _, d) in &failing {
            assert!(
                allowed.iter().any(|a| n.ends_with(a)),
                "{fault}: unexpected failure {n}: {d}\n{}",
                run.stdout
            );
        }
        assert_eq!(run.code, 2, "{fault}: {}", run.stdout);
    }
}

/// The polls mix from `scenarios/polls-alert.yaml`: error classes agree
/// and the demo alert rule fires.
#[test]
fn error_classes_agree_and_the_alert_fires() {
    let s = Services::start(&[], false);
    let prom = prometheus(&[("polls", s.polls_metrics())]);
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/polls-alert.yaml");
    let scenario = std::fs::read_to_string(file).unwrap();
    let run = redproof(
        &scenario,
        &[
            "--target",
            &format!("polls=http://{}", s.polls),
            "--prometheus",
            &prom.url(),
            "--duration",
            "6s",
        ],
    );
    assert_clean(&run);
    let (status, summary) = run.verdict("exception.errors");
    assert_eq!(status, "pass");
    assert!(summary.contains("500: server"), "{summary}");
    assert_eq!(run.verdict("alert").0, "pass");
    assert!(run.verdict("alert").1.contains("fired"));
    assert_eq!(run.verdict("promql polls 5xx ratio").0, "pass");
}

/// Prometheus down: preflight stops the run before any traffic with exit
/// 69. With `--no-preflight` the load still runs, the client report is
/// printed and written, and the exit code is 69.
#[test]
fn unreachable_prometheus_exits_69_with_the_client_report() {
    let s = Services::start(&[], false);
    let down = refusing();
    let metrics = format!("{{ prometheus: \"http://{}\" }}", down.addr);
    let scenario = polls_scenario(s.polls, &metrics, "1s", "");
    let run = redproof(&scenario, &[]);
    assert_eq!(run.code, 69, "{}\n{}", run.stdout, run.stderr);
    assert!(run.results.is_none(), "no load, no results: {}", run.stdout);
    assert!(run.stderr.contains("unreachable"), "{}", run.stderr);
    assert!(run.stderr.contains("nothing was sent"), "{}", run.stderr);

    let run = redproof(&scenario, &["--no-preflight"]);
    assert_eq!(run.code, 69, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("success"), "{}", run.stdout);
    assert!(
        run.stdout.contains("verification not run"),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("unreachable"), "{}", run.stderr);
    let results = run.results.as_ref().expect("results written");
    assert!(
        results["requests"][0]["outcomes"][0]["count"]
            .as_u64()
            .unwrap()
            > 0
    );
}

/// An entry whose `job` matcher selects no scraped target can never
/// match: the run stops before the load with exit 2, naming the jobs
/// that exist. A family not exported yet is only a note.
#[test]
fn preflight_stops_an_entry_that_can_never_match_before_the_load() {
    let s = Services::start(&[], false);
    let prom = prometheus(&[("polls", s.polls_metrics())]);
    let metrics = format!("{{ prometheus: \"{}\" }}", prom.url());
    let scenario = polls_scenario(s.polls, &metrics, "1s", "").replace(
        "view: \"polls:4xx_not_found\"",
        "view: \"polls:4xx_not_found\", job: pols",
    );
    let run = redproof(&scenario, &[]);
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert!(run.results.is_none(), "nothing sent: {}", run.stdout);
    assert!(
        run.stderr
            .contains("FAIL not_found.preflight  no scraped target has job=\"pols\"")
            && run.stderr.contains("can never match: found job: polls"),
        "{}",
        run.stderr
    );
    // The same run with --no-preflight sends its load and finds no series.
    let run = redproof(&scenario, &["--no-preflight"]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert_eq!(run.verdict("not_found.preflight").0, "no_data");
    assert!(run.client_responses("not_found") > 0.0);
    // A family of the wrong convention is not exported by any target.
    let wrong = polls_scenario(s.polls, &metrics, "1s", "").replace(
        "exception: { convention: django,",
        "exception: { convention: fastapi,",
    );
    assert!(wrong.contains("convention: fastapi"));
    let run = redproof(&wrong, &["--duration", "1s"]);
    assert!(
        run.stderr
            .contains("preflight: note: `verify.exception`: no series of `http_requests_total`"),
        "{}",
        run.stderr
    );
}

/// A page that never answers gets its own message; a matcher that finds
/// nothing is "no data", listing what exists.
#[test]
fn never_scraped_targets_and_empty_matchers_are_named() {
    let s = Services::start(&[], false);
    let dir = tempfile::tempdir().unwrap();
    let down = refusing();
    let dead = format!("http://{}/metrics", down.addr);
    let metrics = format!(
        "{{ scrape: [\"{}\", \"{dead}\"], settle_timeout: 3s }}",
        s.polls_metrics()
    );
    let scenario =
        polls_scenario(s.polls, &metrics, "1s", "").replace("polls:4xx_not_found", "polls:nope");
    // Preflight: the dead page stops the run before any traffic.
    let run = redproof(&scenario, &[]);
    assert_eq!(run.code, 69, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains(&format!("error: preflight: metrics page {dead} is down"))
            && run.stderr.contains("nothing was sent"),
        "{}",
        run.stderr
    );
    assert!(run.results.is_none());
    // Without preflight, the checks after the load name both faults.
    let run = redproof(&scenario, &["--no-preflight"]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    let (status, text) = run.verdict("settle");
    assert_eq!(status, "fail");
    assert!(
        text.contains(&dead) && text.contains("never scraped successfully"),
        "{text}"
    );
    let (status, text) = run.verdict("not_found.preflight");
    assert_eq!(status, "no_data");
    assert!(
        text.contains("found view: polls:2xx_success, polls:4xx_not_found, polls:5xx_exception"),
        "{text}"
    );
    // The rest of the run is still verified.
    assert_eq!(run.verdict("success.count").0, "pass");
    // JUnit and Markdown carry the same verdicts.
    let junit = dir.path().join("junit.xml");
    let md = dir.path().join("summary.md");
    let run = redproof(
        &scenario,
        &[
            "--junit",
            junit.to_str().unwrap(),
            "--markdown",
            md.to_str().unwrap(),
            "--no-preflight",
        ],
    );
    assert_eq!(run.code, 2);
    let junit = std::fs::read_to_string(junit).unwrap();
    assert!(
        junit.contains(r#"classname="redproof.verify.not_found" name="preflight""#),
        "{junit}"
    );
    assert!(junit.contains("<failure type=\"no_data\""), "{junit}");
    let md = std::fs::read_to_string(md).unwrap();
    assert!(
        md.contains("| `not_found.preflight` | ❌ no data |"),
        "{md}"
    );
}

/// `redproof demo`: clean when healthy, and a caught fault with
/// `--fault workers=4`.
#[test]
fn demo_verifies_clean_and_catches_a_fault() {
    let demo = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_redproof"))
            .args(["demo", "--quiet", "--duration", "4s"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let ok = demo(&[]);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    let stderr = String::from_utf8_lossy(&ok.stderr);
    assert_eq!(ok.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("0 failed · 0 no data"),
        "{stdout}\n{stderr}"
    );
    let bad = demo(&["--fault", "workers=4"]);
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert!(matches!(bad.status.code(), Some(2 | 3)), "{stdout}");
    // The report wraps at 80 columns: read it as one line.
    let words = stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(words.contains("different worker processes"), "{stdout}");
}
