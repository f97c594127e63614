//! End-to-end verification: the demo services run in this process on
//! ephemeral loopback ports, a real Prometheus (Debian's package) scrapes
//! them once a second, and `redproof run` must prove healthy services
//! clean and catch each injected fault with the right diagnosis.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;
use support::services::{Services, prometheus};
use support::{Run, refusing, responses};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The polls mix against `polls`, with a metrics block and extra YAML.
fn polls_scenario(polls: SocketAddr, metrics: &str, duration: &str, extra: &str) -> String {
    format!(
        r#"name: polls-e2e
targets:
  polls: {{ url: "http://{polls}", timeout: 5s }}
load: {{ users: 6, wait: 5ms..20ms, duration: {duration}, drain: 5s }}
requests:
  - name: success
    weight: 2
    http: {{ target: polls, path: /polls/2xx_success/ }}
  - name: not_found
    weight: 1
    http: {{ target: polls, path: /polls/4xx_not_found/ }}
    expect: {{ status: 404 }}
  - name: exception
    weight: 1
    http: {{ target: polls, path: /polls/5xx_exception/ }}
    expect: {{ status: 500 }}
metrics: {metrics}
verify:
  success: {{ convention: django, match: {{ view: "polls:2xx_success" }} }}
  not_found: {{ convention: django, match: {{ view: "polls:4xx_not_found" }} }}
  exception: {{ convention: django, match: {{ view: "polls:5xx_exception" }} }}
{extra}"#
    )
}

impl Run {
    fn verdicts(&self) -> Vec<(String, String, String)> {
        self.results.as_ref().unwrap()["verification"]["verdicts"]
            .as_array()
            .unwrap_or(&Vec::new())
            .iter()
            .map(|v| {
                let name = match v["request"].as_str() {
                    Some(r) => format!("{r}.{}", v["check"].as_str().unwrap()),
                    None => v["check"].as_str().unwrap().to_owned(),
                };
                (
                    name,
                    v["status"].as_str().unwrap().to_owned(),
                    format!(
                        "{} {}",
                        v["summary"].as_str().unwrap_or_default(),
                        v["diagnosis"].as_str().unwrap_or_default()
                    ),
                )
            })
            .collect()
    }

    fn failing(&self) -> Vec<(String, String, String)> {
        self.verdicts()
            .into_iter()
            .filter(|(_, s, _)| s == "fail" || s == "no_data")
            .collect()
    }

    fn verdict(&self, name: &str) -> (String, String) {
        self.verdicts()
            .into_iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, s, d)| (s, d))
            .unwrap_or_else(|| panic!("no verdict {name}; report:\n{}", self.stdout))
    }

    fn server_count(&self, request: &str) -> f64 {
        let v = self.results.as_ref().unwrap();
        v["verification"]["server"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["request"] == request)
            .and_then(|f| f["count"].as_f64())
            .unwrap_or(-1.0)
    }

    fn client_responses(&self, request: &str) -> f64 {
        responses(self.results(), request) as f64
    }

    /// Calls of a gRPC request that ended with a code.
    fn client_calls(&self, request: &str) -> f64 {
        support::outcomes(self.results(), request)
            .iter()
            .filter(|o| o.0.get("grpc").is_some())
            .map(|o| o.2)
            .sum::<u64>() as f64
    }
}

/// `redproof run` on one engine thread, quiet, with `args`.
fn redproof(scenario: &str, args: &[&str]) -> Run {
    support::run_scenario(
        scenario,
        &[],
        &[&["--quiet", "--threads", "1"], args].concat(),
    )
}

fn assert_clean(run: &Run) {
    assert_eq!(
        run.failing(),
        Vec::<(String, String, String)>::new(),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.verdicts()
            .iter()
            .all(|(_, s, _)| s == "pass" || s == "skipped"),
        "{}",
        run.stdout
    );
}

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
        serde_json::from_str(include_str!("../schema/results.schema.json")).unwrap();
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

/// The bank service on an ephemeral port, stopped on drop.
struct Bank {
    addr: SocketAddr,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Bank {
    fn start() -> Self {
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(l.local_addr().unwrap()).unwrap();
                let _ = redproof_services::bank::serve(l, Default::default(), token).await;
            });
        });
        Bank {
            addr: rx.recv().unwrap(),
            shutdown,
            thread: Some(thread),
        }
    }
}

impl Drop for Bank {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Deposits and overdraws POST the same route with different bodies.
fn bank_scenario(bank: SocketAddr, prometheus: &str, verify: &str) -> String {
    format!(
        r#"name: bank-shared-route
targets:
  bank: {{ url: "http://{bank}", timeout: 5s }}
load: {{ users: 4, wait: 5ms..20ms, duration: 3s, drain: 5s }}
on_start:
  - name: open_account
    http: {{ target: bank, method: POST, path: /accounts, json: {{ owner: ann }} }}
    expect: {{ status: 201 }}
    capture: {{ account_id: {{ json: "$.id" }} }}
requests:
  - name: deposit
    weight: 2
    http: {{ target: bank, method: POST, path: "/accounts/{{{{ account_id }}}}/transactions", json: {{ kind: credit, amount: 100 }} }}
    expect: {{ status: 201 }}
  - name: overdraw
    http: {{ target: bank, method: POST, path: "/accounts/{{{{ account_id }}}}/transactions", json: {{ kind: debit, amount: 1000000000 }} }}
    expect: {{ status: 422 }}
metrics: {{ prometheus: "{prometheus}" }}
verify:
{verify}"#
    )
}

/// Two requests on one route: verified as a group they agree with the
/// server exactly; verified alone, the surplus is named as the other
/// request's traffic with the YAML that declares it.
#[test]
fn requests_sharing_a_route_verify_as_a_group_with_prometheus() {
    let bank = Bank::start();
    let prom = prometheus(&[("bank", format!("http://{}/metrics", bank.addr))]);
    let route = r#"match: { handler: "/accounts/{account_id}/transactions", method: POST }"#;
    let grouped = bank_scenario(
        bank.addr,
        &prom.url(),
        &format!(
            "  transactions: {{ convention: fastapi, requests: [deposit, overdraw], {route} }}\n"
        ),
    );
    let run = redproof(&grouped, &[]);
    assert_clean(&run);
    let both = run.client_responses("deposit") + run.client_responses("overdraw");
    assert!(run.client_responses("overdraw") > 0.0, "{}", run.stdout);
    for r in ["deposit", "overdraw"] {
        assert_eq!(run.server_count(r), both, "{}", run.stdout);
    }
    let (_, errors) = run.verdict("overdraw.errors");
    assert!(errors.contains("4xx: server"), "{errors}");

    let alone = bank_scenario(
        bank.addr,
        &prom.url(),
        &format!("  deposit: {{ convention: fastapi, {route} }}\n"),
    );
    let run = redproof(&alone, &[]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    let (status, text) = run.verdict("deposit.count");
    assert_eq!(status, "fail");
    let overdraws = run.client_responses("overdraw");
    assert!(
        text.contains(&format!(
            "exactly `overdraw`'s {} responses",
            with_commas(overdraws as u64)
        )) && text.contains("`requests: [deposit, overdraw]`"),
        "{text}"
    );
    assert!(!text.contains("narrow"), "{text}");
    let failing: Vec<String> = run.failing().into_iter().map(|f| f.0).collect();
    assert_eq!(failing, ["deposit.count"], "{}", run.stdout);
}

/// `1234567` as `1,234,567`, as reports write counts.
fn with_commas(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `scenarios/edge.yaml` against edge, revert-name (with `revert_faults`)
/// and time, scraped by a Prometheus with `ci/prometheus.yml`'s job names.
fn edge_chain(revert_faults: &[&str]) -> Run {
    let s = Services::start_with(&[], true, revert_faults);
    let [revert_grpc, revert_metrics, time_grpc, time_metrics] = s.chain;
    let prom = prometheus(&[
        (
            "edge-web",
            format!("http://{}/prometheus/metrics", s.edge_web),
        ),
        (
            "edge-grpc",
            format!("http://{}/metrics", s.edge_grpc_metrics),
        ),
        ("revert-name", format!("http://{revert_metrics}/metrics")),
        ("time", format!("http://{time_metrics}/metrics")),
    ]);
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/edge.yaml");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_redproof"))
        .env("NO_COLOR", "1")
        .arg("run")
        .arg(&file)
        .args(["--quiet", "--threads", "1", "--duration", "4s"])
        .args(["--prometheus", &prom.url()])
        .args(["--target", &format!("edge=http://{}", s.edge_web)])
        .args(["--target", &format!("revert=http://{revert_grpc}")])
        .args(["--target", &format!("time=http://{time_grpc}")])
        .arg("--out")
        .arg(dir.path().join("results.json"))
        .output()
        .unwrap();
    support::finish(out, dir)
}

/// The whole chain of `scenarios/edge.yaml`: edge's django metrics,
/// edge's gRPC client metrics (only derived calls), and the servers'
/// (direct plus derived calls) agree exactly when healthy.
#[test]
fn the_edge_chain_verifies_hop_by_hop_with_prometheus() {
    let run = edge_chain(&[]);
    assert_clean(&run);
    // Groups, derived calls and callees are in the results file, as the
    // schema describes them.
    let schema: Value =
        serde_json::from_str(include_str!("../schema/results.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(run.results())
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // The server table shows what the server should have counted.
    assert!(
        run.stdout.lines().any(|l| l.starts_with("revert_empty ")
            && l.matches(&with_commas(run.server_count("revert_empty") as u64))
                .count()
                == 2),
        "{}",
        run.stdout
    );
    let proxy = run.client_responses("proxy");
    assert!(proxy > 0.0, "{}", run.stdout);
    assert_eq!(run.server_count("proxy"), proxy, "{}", run.stdout);
    assert_eq!(run.server_count("edge_to_revert_name"), proxy);
    assert_eq!(run.server_count("edge_to_time"), proxy);
    let direct = run.client_calls("revert_name") + run.client_calls("revert_empty");
    assert!(run.client_calls("revert_empty") > 0.0, "{}", run.stdout);
    assert_eq!(run.server_count("revert_name"), direct + proxy);
    assert_eq!(
        run.server_count("what_time_is"),
        run.client_calls("what_time_is") + proxy
    );
    let (_, errors) = run.verdict("revert_empty.errors");
    assert!(errors.contains("InvalidArgument: server"), "{errors}");
    let (status, why) = run.verdict("revert_name.duration");
    assert_eq!(status, "skipped");
    assert!(why.contains("did not time"), "{why}");
    // Hop by hop, per code: edge's client metrics against the servers'.
    for (hop, direct) in [
        ("edge_to_revert_name.hop", "direct"),
        ("edge_to_time.hop", "direct"),
    ] {
        let (status, text) = run.verdict(hop);
        assert_eq!(status, "pass", "{text}");
        assert!(
            text.contains("OK: caller") && text.contains(direct),
            "{text}"
        );
    }
}

/// revert-name's interceptor not counting failed calls is caught on
/// revert-name's entry, named as such, and nowhere else.
#[test]
fn the_edge_chain_catches_uncounted_errors_on_revert_name() {
    let run = edge_chain(&["uncounted-errors"]);
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    let empty = run.client_calls("revert_empty") as u64;
    assert!(empty > 0, "{}", run.stdout);
    for r in ["revert_name", "revert_empty"] {
        let (status, text) = run.verdict(&format!("{r}.errors"));
        assert_eq!(status, "fail", "{text}");
        assert!(
            text.contains(&format!(
                "client saw {} × InvalidArgument, server counted 0: calls that end with an error bypass the metrics interceptor",
                with_commas(empty)
            )),
            "{text}"
        );
        let (_, count) = run.verdict(&format!("{r}.count"));
        assert!(
            count.contains("all calls that ended with an error code"),
            "{count}"
        );
    }
    for (name, _, text) in run.failing() {
        assert!(
            name.starts_with("revert_name.") || name.starts_with("revert_empty."),
            "unexpected failure {name}: {text}\n{}",
            run.stdout
        );
        assert!(
            name.ends_with(".count") || name.ends_with(".errors"),
            "{name}: {text}"
        );
    }
}

/// `redproof verify RESULTS.json` with `args`.
fn verify_after(results: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_redproof"))
        .env("NO_COLOR", "1")
        .env_remove("REDPROOF_PROMETHEUS")
        .arg("verify")
        .arg(results)
        .args(args)
        .output()
        .unwrap()
}

/// A run's results file re-verified after the fact against the same
/// Prometheus: the same verdicts as right after the load (clean on a
/// healthy service, the uncounted 5xx on a faulty one), written to every
/// output, and a results file that follows the schema.
#[test]
fn verify_rechecks_a_results_file_after_the_fact() {
    let healthy = Services::start(&[], false);
    let faulty = Services::start(&["uncounted-errors"], false);
    let prom = prometheus(&[
        ("healthy", healthy.polls_metrics()),
        ("faulty", faulty.polls_metrics()),
    ]);
    let schema: Value =
        serde_json::from_str(include_str!("../schema/results.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for (s, clean) in [(&healthy, true), (&faulty, false)] {
        let metrics = format!("{{ prometheus: \"{}\" }}", prom.url());
        let scenario = polls_scenario(s.polls, &metrics, "2s", "").replace(
            "convention: django, match: {",
            &format!("convention: django, match: {{ instance: \"{}\", ", s.polls),
        );
        let run = redproof(&scenario, &[]);
        assert_eq!(run.code, if clean { 0 } else { 2 }, "{}", run.stdout);
        let results = run.dir.path().join("results.json");
        let errors: Vec<String> = validator
            .iter_errors(run.results())
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:#?}");
        let out = run.dir.path().join("again.json");
        let junit = run.dir.path().join("junit.xml");
        let md = run.dir.path().join("summary.md");
        let again = verify_after(
            &results,
            &[
                "--out",
                out.to_str().unwrap(),
                "--junit",
                junit.to_str().unwrap(),
                "--markdown",
                md.to_str().unwrap(),
            ],
        );
        let stdout = String::from_utf8_lossy(&again.stdout);
        let stderr = String::from_utf8_lossy(&again.stderr);
        assert_eq!(
            again.status.code(),
            Some(if clean { 0 } else { 2 }),
            "{stdout}\n{stderr}"
        );
        let rechecked = Run {
            code: again.status.code().unwrap(),
            stdout: stdout.clone().into_owned(),
            stderr: stderr.into_owned(),
            results: Some(serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()),
            dir: tempfile::tempdir().unwrap(),
        };
        let errors: Vec<String> = validator
            .iter_errors(rechecked.results())
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:#?}");
        for r in ["success", "not_found", "exception"] {
            assert_eq!(rechecked.server_count(r), run.server_count(r), "{stdout}");
        }
        if clean {
            assert_clean(&rechecked);
            assert_eq!(
                rechecked.server_count("success"),
                rechecked.client_responses("success")
            );
        } else {
            let (status, text) = rechecked.verdict("exception.errors");
            assert_eq!(status, "fail");
            assert!(text.contains("bypass"), "{text}");
            let junit = std::fs::read_to_string(&junit).unwrap();
            assert!(
                junit.contains(r#"classname="redproof.verify.exception" name="errors""#),
                "{junit}"
            );
            let md = std::fs::read_to_string(&md).unwrap();
            assert!(md.contains("`exception.errors`"), "{md}");
        }
    }
    // Prometheus gone: 69, and the client report is still printed.
    let run = redproof(
        &polls_scenario(
            healthy.polls,
            &format!("{{ prometheus: \"{}\" }}", prom.url()),
            "1s",
            "",
        ),
        &[],
    );
    drop(prom);
    let down = verify_after(&run.dir.path().join("results.json"), &[]);
    assert_eq!(down.status.code(), Some(69));
    assert!(String::from_utf8_lossy(&down.stdout).contains("success"));
}

/// A results file whose scenario verified nothing cannot be verified,
/// nor one verified with the embedded scraper without `--prometheus`.
#[test]
fn verify_needs_a_results_file_with_a_verify_section() {
    let s = Services::start(&[], false);
    let scenario = format!(
        "name: plain\ntargets: {{ polls: {{ url: \"http://{}\" }} }}\nload: {{ users: 1, iterations: 3 }}\nrequests:\n  - {{ name: success, http: {{ target: polls, path: /polls/2xx_success/ }} }}\n",
        s.polls
    );
    let run = redproof(&scenario, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let out = verify_after(&run.dir.path().join("results.json"), &[]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds no verify section"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A run verified with the embedded scraper has no past to read.
    let metrics = format!("{{ scrape: [\"{}\"] }}", s.polls_metrics());
    let run = redproof(&polls_scenario(s.polls, &metrics, "1s", ""), &[]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    let out = verify_after(&run.dir.path().join("results.json"), &[]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("give --prometheus URL"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
