//! redproof against hostile or broken peers: what it does when things go
//! wrong, asserted on its exit code and on every output.

mod support;

use std::net::SocketAddr;

use support::{Run, fake_api};

const BUILDINFO: &str = r#"{"status":"success","data":{"version":"2.42.0"}}"#;
const NO_TARGETS: &str = r#"{"status":"success","data":{"activeTargets":[],"droppedTargets":[]}}"#;

/// A scenario against the test server, verified against `prometheus`.
fn verified_run(prometheus: SocketAddr) -> Run {
    let server = support::start();
    let scenario = format!(
        r#"
name: bad-prometheus
targets:
  web: {{ url: "{}" }}
load: {{ users: 2, iterations: 20 }}
requests:
  - {{ name: ok, http: {{ target: web, path: /ok }} }}
metrics:
  prometheus: "http://{prometheus}"
verify:
  ok: {{ convention: django, match: {{ view: ok }} }}
"#,
        server.url()
    );
    support::run_with_every_output(&scenario, &["--quiet"])
}

fn redproof() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_redproof"));
    c.env("NO_COLOR", "1");
    c
}

/// A Prometheus whose answers pass the first look but cannot be used must
/// fail the gate (exit 2) in every output, never pass it.
fn assert_fails_everywhere(r: &Run, why: &str) {
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("verification not run"), "{}", r.stdout);
    assert!(
        r.stderr.contains("error: verification not run"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains(why), "{}", r.stderr);
    let results = r.results();
    assert!(results["verification_error"].is_string(), "{results}");
    assert!(
        results.get("verification_unavailable").is_none(),
        "{results}"
    );
    let junit = std::fs::read_to_string(r.dir.path().join("junit.xml")).unwrap();
    assert!(
        junit.contains("<failure") || junit.contains("<error"),
        "{junit}"
    );
    let md = std::fs::read_to_string(r.dir.path().join("summary.md")).unwrap();
    assert!(
        md.contains("❌") && md.contains("Verification not run"),
        "{md}"
    );
    let out = redproof()
        .arg("report")
        .arg(r.dir.path().join("results.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "re-rendered report");
}

#[test]
fn prometheus_query_errors_fail_the_gate() {
    let prometheus = fake_api(|path| {
        if path.starts_with("/api/v1/status/buildinfo") {
            (200, BUILDINFO.into())
        } else if path.starts_with("/api/v1/targets") {
            (200, NO_TARGETS.into())
        } else {
            (
                422,
                r#"{"status":"error","errorType":"execution","error":"query processing would load too many samples"}"#.into(),
            )
        }
    });
    assert_fails_everywhere(&verified_run(prometheus), "too many samples");
}

#[test]
fn prometheus_answers_of_the_wrong_shape_fail_the_gate() {
    let prometheus = fake_api(|path| {
        if path.starts_with("/api/v1/status/buildinfo") {
            (200, BUILDINFO.into())
        } else if path.starts_with("/api/v1/targets") {
            (200, NO_TARGETS.into())
        } else {
            (
                200,
                r#"{"status":"success","data":{"resultType":"matrix","result":"nope"}}"#.into(),
            )
        }
    });
    assert_fails_everywhere(&verified_run(prometheus), "not the API's result shape");
}

/// A `/metrics` page that never ends: the scrape stops at
/// `metrics.max_response`, the page counts as down with that reason, and
/// the run ends with its results instead of exhausting memory.
#[test]
fn an_endless_metrics_page_is_cut_at_the_limit() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let page = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut b = [0u8; 4096];
                let _ = conn.read(&mut b);
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n");
                let line = b"endless_total{a=\"b\"} 1\n".repeat(1000);
                while conn.write_all(&line).is_ok() {}
            });
        }
    });
    let server = support::start();
    let scenario = format!(
        r#"
name: endless-page
targets:
  web: {{ url: "{}" }}
load: {{ users: 1, iterations: 10 }}
requests:
  - {{ name: ok, http: {{ target: web, path: /ok }} }}
metrics:
  scrape: ["http://{page}/metrics"]
  max_response: 1M
  settle_timeout: 3s
verify:
  ok: {{ convention: django, match: {{ view: ok }} }}
"#,
        server.url()
    );
    let r = support::run_scenario(&scenario, &[], &["--quiet"]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("byte limit"), "{}", r.stdout);
    assert!(r.results()["verification"].is_object());
}
