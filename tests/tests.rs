//! End-to-end tests: the `redproof` binary against real servers on
//! loopback. Every load here is bounded by a duration or an iteration count.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Run, count, request, total, write_scenario};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_redproof"));
    c.env("NO_COLOR", "1");
    c
}

fn run(scenario: &str, extra: &[&str]) -> Run {
    support::run_scenario(scenario, &[], extra)
}

#[test]
fn weighted_mix_counts_match_the_server_exactly() {
    let server = support::start();
    let scenario = format!(
        r#"
name: mix
targets:
  web: {{ url: "{}" }}
load: {{ users: 8, iterations: 20000 }}
requests:
  - {{ name: ok, weight: 2, http: {{ target: web, path: /ok }} }}
  - {{ name: missing, weight: 1, http: {{ target: web, path: /status/404 }} }}
  - name: broken
    weight: 1
    http: {{ target: web, method: POST, path: /status/500, json: {{ id: "{{{{ seq() }}}}" }} }}
    expect: {{ status: 500 }}
"#,
        server.url()
    );
    let r = run(&scenario, &["--quiet"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let res = r.results.unwrap();
    let ok = count(&res, "ok", json!({"status": 200}));
    let missing = count(&res, "missing", json!({"status": 404}));
    let broken = count(&res, "broken", json!({"status": 500}));
    assert_eq!(ok + missing + broken, 20_000);
    assert_eq!(server.counts.get("/ok"), ok);
    assert_eq!(server.counts.get("/status/404"), missing);
    assert_eq!(server.counts.get("/status/500"), broken);
    // Picks are random: allow five standard deviations of a binomial share,
    // so a correct mix fails this check about once in a million runs.
    for (n, share) in [(ok, 0.5), (missing, 0.25), (broken, 0.25)] {
        let got = n as f64 / 20_000.0;
        let tolerance = 5.0 * (share * (1.0 - share) / 20_000.0_f64).sqrt();
        assert!(
            (got - share).abs() < tolerance,
            "share {got} vs {share} ± {tolerance:.4}"
        );
    }
    // 404 is not expected, 500 is: only `missing` counts as errors.
    assert_eq!(request(&res, "missing")["outcomes"][0]["ok"], false);
    assert!(r.stdout.contains("404 ✗"), "{}", r.stdout);
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("all ") && l.contains("20,000")),
        "{}",
        r.stdout
    );
}

#[test]
fn iterations_end_the_run_before_every_user_has_spawned() {
    // 50 users at 5/s would take 10 s to spawn; 100 requests run out long
    // before, and users still waiting to spawn must not hold the run open.
    let server = support::start();
    let scenario = format!(
        r#"
name: short
targets:
  web: {{ url: "{}" }}
load: {{ users: 50, spawn_rate: 5/s, iterations: 100 }}
requests:
  - {{ name: ok, http: {{ target: web, path: /ok }} }}
"#,
        server.url()
    );
    let r = run(&scenario, &["--quiet"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let res = r.results.unwrap();
    assert_eq!(total(&res, "ok"), 100);
    assert_eq!(server.counts.get("/ok"), 100);
    let load_s = res["timing"]["load_s"].as_f64().unwrap();
    assert!(
        load_s < 9.8,
        "the run waited for the last spawn: {load_s} s"
    );
}

#[test]
fn open_model_keeps_the_schedule() {
    let server = support::start();
    let scenario = format!(
        r#"
name: open
targets:
  web: {{ url: "{}" }}
load: {{ rate: 200/s, duration: 2s }}
requests:
  - {{ name: ok, http: {{ target: web, path: /ok }} }}
"#,
        server.url()
    );
    let r = run(&scenario, &["--quiet"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let res = r.results.unwrap();
    let n = total(&res, "ok");
    let dropped = res["schedule"]["dropped"].as_u64().unwrap();
    // 2 s at 200/s: slots 0 to 399 are due, at k / 200 s; none at or after
    // the end. A slot whose worker wakes after the run has stopped is not
    // started but counted as dropped, so started and dropped account for
    // the 400 exactly. Only the last slots can land that late: a stalled
    // thread has to miss 5 ms of schedule for each one. Ten (the last
    // 50 ms) is half of what a schedule running 5 % slow would lose.
    assert!(n <= 400, "{n} requests started: more than were due");
    assert_eq!(n + dropped, 400, "started {n} + dropped {dropped}");
    assert!(dropped <= 10, "{dropped} slots dropped");
    assert_eq!(server.counts.get("/ok"), n);
    // Every start's lag is recorded, however small.
    let lag = |k: &str| res["schedule"][k].as_u64().unwrap();
    assert!(lag("lag_p50_us") >= 1, "{}", res["schedule"]);
    assert!(
        lag("lag_p50_us") <= lag("lag_p99_us") && lag("lag_p99_us") <= lag("max_lag_us"),
        "{}",
        res["schedule"]
    );
}

#[test]
fn open_model_measures_from_the_due_time() {
    // One slot in flight and a 100 ms server: requests queue behind each
    // other, and latency from the due time must show the queueing.
    let server = support::start();
    let scenario = format!(
        r#"
name: stall
targets:
  web: {{ url: "{}" }}
load: {{ rate: 50/s, max_in_flight: 1, duration: 1s, drain: 5s }}
requests:
  - {{ name: slow, http: {{ target: web, path: /slow/100 }} }}
"#,
        server.url()
    );
    let r = run(&scenario, &["--quiet"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let res = r.results.unwrap();
    assert!(res["schedule"]["late_starts"].as_u64().unwrap() > 0);
    assert!(res["schedule"]["dropped"].as_u64().unwrap() > 0);
    // Starts queue behind a 100 ms server: the lag histogram shows it.
    assert!(
        res["schedule"]["lag_p99_us"].as_u64().unwrap() > 50_000,
        "{}",
        res["schedule"]
    );
    assert!(
        r.stdout
            .contains("schedule: starts behind their due time by p50 "),
        "{}",
        r.stdout
    );
    let summary = report_json(&r.dir.path().join("results.json"));
    let p99 = summary["summary"]["all"]["p99_us"].as_u64().unwrap();
    assert!(
        p99 > 300_000,
        "latency should include time spent behind schedule, p99 = {p99}µs"
    );
}

fn report_json(results: &Path) -> Value {
    let out = bin()
        .args(["report", "--format", "json"])
        .arg(results)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn refused_connections_give_one_clear_error_and_exit_69() {
    let down = support::refusing();
    let scenario = format!(
        r#"
name: down
targets:
  api: {{ url: "http://{}" }}
load: {{ users: 2, iterations: 200 }}
requests:
  - {{ name: ping, http: {{ target: api, path: / }} }}
"#,
        down.addr
    );
    let r = run(&scenario, &["--quiet"]);
    assert_eq!(r.code, 69, "{}\n{}", r.stdout, r.stderr);
    let res = r.results.unwrap();
    assert_eq!(count(&res, "ping", json!({"transport": "refused"})), 200);
    assert_eq!(
        r.stderr.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("target `api`"), "{}", r.stderr);
    assert!(
        r.stdout.contains("connection refused ✗ × 200"),
        "{}",
        r.stdout
    );
}

#[test]
fn resets_are_counted_as_transport_errors() {
    let server = support::start();
    let scenario = format!(
        r#"
name: resets
targets:
  web: {{ url: "{}" }}
load: {{ users: 2, iterations: 100 }}
requests:
  - {{ name: flaky, http: {{ target: web, path: /reset }} }}
  - {{ name: fine, http: {{ target: web, path: /ok }} }}
"#,
        server.url()
    );
    let r = run(&scenario, &["--quiet"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let res = r.results.unwrap();
    let flaky = total(&res, "flaky");
    // The server reads each request and resets the connection without a
    // byte of answer: closed before any response, with the reset named.
    let resets = count(&res, "flaky", json!({"transport": "no_response"}));
    assert!(flaky > 0);
    assert_eq!(resets, flaky, "{}", r.stdout);
    assert!(
        words(&r.stdout).contains("before any response (reading the response: Connection reset"),
        "{}",
        r.stdout
    );
    assert_eq!(
        count(&res, "fine", json!({"status": 200})),
        server.counts.get("/ok")
    );
}

#[test]
fn chunked_bodies_and_silently_closed_connections() {
    let server = support::start();
    let scenario = format!(
        r#"
name: framing
targets:
  web: {{ url: "{}" }}
load: {{ users: 2, iterations: 200, wait: 5ms }}
requests:
  - name: chunked
    http: {{ target: web, path: /chunked }}
    expect: {{ status: 200, body_contains: "chunk-one chunk-two" }}
  - {{ name: closing, http: {{ target: web, path: /close-after }} }}
"#,
        server.url()
    );
    let r = run(&scenario, &["--quiet"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let res = r.results.unwrap();
    // Every request is answered, whole: the chunks are joined, and a
    // connection the server closed while idle is replaced, not counted as
    // an error.
    let chunked = count(&res, "chunked", json!({"status": 200}));
    let closing = count(&res, "closing", json!({"status": 200}));
    assert_eq!(chunked + closing, 200, "{}", r.stdout);
    assert_eq!(server.counts.get("/chunked"), chunked);
    assert_eq!(server.counts.get("/close-after"), closing);
    assert!(chunked > 0 && closing > 0);
}

#[test]
fn drain_cuts_off_slow_requests_as_unknown() {
    let server = support::start();
    let scenario = format!(
        r#"
name: drain
targets:
  web: {{ url: "{}" }}
load: {{ users: 4, duration: 500ms, drain: 300ms }}
requests:
  - {{ name: slow, http: {{ target: web, path: /slow/5000 }} }}
"#,
        server.url()
    );
    let r = run(&scenario, &["--quiet"]);
    // The server counts a slow request when it answers, 5 s after it came:
    // none answered yet means the drain limit cut the run short.
    assert_eq!(
        server.counts.get("/slow"),
        0,
        "the run waited for the slow answers"
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let res = r.results.unwrap();
    assert_eq!(total(&res, "slow"), 0);
    assert_eq!(request(&res, "slow")["unknown"], 4);
    assert!(r.stdout.contains("outcome unknown"), "{}", r.stdout);
}

#[test]
fn thresholds_gate_the_exit_code() {
    let server = support::start();
    let scenario = format!(
        r#"
name: gate
targets:
  web: {{ url: "{}" }}
load: {{ users: 2, iterations: 200 }}
requests:
  - {{ name: ok, http: {{ target: web, path: /ok }} }}
  - {{ name: bad, http: {{ target: web, path: /status/503 }} }}
thresholds:
  - ok.p99 < 5s
  - all.errors < 1%
"#,
        server.url()
    );
    let r = run(&scenario, &["--quiet"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("pass ok.p99 < 5s"), "{}", r.stdout);
    assert!(r.stdout.contains("FAIL all.errors < 1%"), "{}", r.stdout);
    let res = r.results.unwrap();
    assert_eq!(res["thresholds"][0]["passed"], true);
    assert_eq!(res["thresholds"][1]["passed"], false);
}

#[test]
fn results_file_matches_its_schema_and_re_renders() {
    let server = support::start();
    let scenario = format!(
        r#"
name: schema
targets:
  web: {{ url: "{}", headers: {{ x-team: qa }} }}
load: {{ rate: 100/s, duration: 1500ms }}
data:
  ids: ["1", "2"]
requests:
  - {{ name: ok, http: {{ target: web, path: "/items/{{{{ pick(ids) }}}}", query: {{ q: "{{{{ uuid() }}}}" }} }} }}
  - {{ name: gone, http: {{ target: web, path: /reset }} }}
thresholds: [ "all.p95 < 10s" ]
"#,
        server.url()
    );
    let r = run(&scenario, &["--quiet"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let results = r.results.unwrap();
    let schema: Value =
        serde_json::from_str(include_str!("../schema/results.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&results)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(!results["windows"].as_array().unwrap().is_empty());

    let out = bin()
        .arg("report")
        .arg(r.dir.path().join("results.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        r.stdout,
        "re-rendered report differs"
    );
}

#[test]
fn overrides_replace_the_file_settings() {
    let server = support::start();
    let scenario = r#"
name: overrides
targets:
  web: { url: "http://127.0.0.1:1" }
load: { users: 1, duration: 1h }
requests:
  - { name: ok, http: { target: web, path: /ok } }
"#;
    let target = format!("web={}", server.url());
    let r = run(
        scenario,
        &[
            "--quiet",
            "--target",
            &target,
            "--users",
            "3",
            "--iterations",
            "90",
        ],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(server.counts.get("/ok"), 90);
    assert_eq!(r.results.unwrap()["load"]["users"], 3);
}

#[test]
fn interrupt_writes_what_ran_and_exits_130() {
    let server = support::start();
    let dir = tempfile::tempdir().unwrap();
    let file = write_scenario(
        dir.path(),
        &format!(
            r#"
name: long
targets:
  web: {{ url: "{}" }}
load: {{ users: 2, wait: 10ms, duration: 60s }}
requests:
  - {{ name: ok, http: {{ target: web, path: /ok }} }}
"#,
            server.url()
        ),
    );
    let child = support::spawn_run(&file, dir.path());
    // Interrupt a run under load: once the server has answered requests.
    server.counts.wait_for("/ok", 5, Duration::from_secs(60));
    let r = support::interrupt(child, dir);
    assert_eq!(r.code, 130, "{}\n{}", r.stdout, r.stderr);
    let res = r.results.unwrap();
    assert_eq!(res["interrupted"], true);
    let n = total(&res, "ok");
    assert!(
        n > 0 && n == server.counts.get("/ok"),
        "client {n}, server {}",
        server.counts.get("/ok")
    );
    assert!(r.stdout.contains("INTERRUPTED"));
}

#[test]
fn h2c_targets_speak_http2_with_prior_knowledge() {
    let server = support::start_h2c();
    let scenario = format!(
        r#"
name: h2c
targets:
  grpcish: {{ url: "http://{}", http2: true }}
load: {{ users: 4, iterations: 500 }}
requests:
  - {{ name: ok, http: {{ target: grpcish, path: /ok }} }}
"#,
        server.addr
    );
    let r = run(&scenario, &["--quiet"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        count(&r.results.unwrap(), "ok", json!({"status": 200})),
        500
    );
    assert_eq!(server.versions.get("HTTP/2.0"), 500);
}

#[test]
fn tls_targets_negotiate_the_protocol_and_check_certificates() {
    let server = support::start_tls();
    let scenario = |insecure: bool| {
        format!(
            r#"
name: tls
targets:
  secure: {{ url: "https://localhost:{}", insecure: {insecure} }}
load: {{ users: 2, iterations: 100 }}
requests:
  - {{ name: ok, http: {{ target: secure, path: / }} }}
"#,
            server.addr.port()
        )
    };
    let r = run(&scenario(true), &["--quiet"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(server.versions.get("HTTP/2.0"), 100, "ALPN chose HTTP/2");

    // A server that offers only HTTP/1.1 gets HTTP/1.1 over TLS.
    let h1 = support::start_tls_offering(&[b"http/1.1"]);
    let r = run(
        &scenario(true).replace(&server.addr.port().to_string(), &h1.addr.port().to_string()),
        &["--quiet"],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(h1.versions.get("HTTP/1.1"), 100, "ALPN chose HTTP/1.1");

    // Without `insecure`, a self-signed certificate is a TLS error.
    let r = run(&scenario(false), &["--quiet"]);
    assert_eq!(r.code, 69, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(count(r.results(), "ok", json!({"transport": "tls"})), 100);
    // The message says which check failed, in words, and what to do.
    for text in [&r.stdout, &r.stderr] {
        let text = &words(text);
        assert!(
            text.contains("the server's certificate is not signed by a CA this machine trusts"),
            "{text}"
        );
        assert!(
            text.contains("set `insecure: true` on the target"),
            "{text}"
        );
        assert!(!text.contains("UnknownIssuer"), "{text}");
    }
}

/// Text with its line breaks and indents as single spaces: the report
/// wraps long messages at 80 columns.
fn words(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn cli_help_snapshots() {
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["validate", "--help"],
        &["report", "--help"],
        &["demo", "--help"],
    ] {
        let out = bin().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        insta::assert_snapshot!(
            format!("help_{}", args[0].trim_start_matches('-')),
            String::from_utf8(out.stdout).unwrap()
        );
    }
}

#[test]
fn usage_errors_exit_64() {
    let out = bin().args(["run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let out = bin()
        .args(["run", "/nonexistent/scenario.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the scenario file"));
    // Values out of range are usage errors before any traffic, not panics.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (flag, value, words) in [
        ("--users", "100M", "more than one redproof runs at once"),
        ("--rate", "1e-20/s", "slowest rate"),
        ("--duration", "99999999999999999999s", "365 days"),
    ] {
        let out = bin()
            .current_dir(root)
            .args(["run", "scenarios/polls.yaml", flag, value])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{flag} {value}: {stderr}");
        assert!(stderr.contains(words), "{flag} {value}: {stderr}");
    }
}

#[test]
fn invalid_fixture_snapshots() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(root.join("scenarios/invalid"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 6);
    for f in fixtures {
        let rel = f.strip_prefix(root).unwrap();
        let out = bin()
            .current_dir(root)
            .arg("validate")
            .arg(rel)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{}", rel.display());
        let name = f.file_stem().unwrap().to_string_lossy().into_owned();
        insta::assert_snapshot!(
            format!("invalid_{name}"),
            String::from_utf8(out.stderr).unwrap()
        );
    }
}

#[test]
fn bundled_scenarios_validate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for e in std::fs::read_dir(root.join("scenarios")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|e| e == "yaml") {
            let out = bin().arg("validate").arg(&p).output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}: {}",
                p.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn a_bare_proto_name_resolves_beside_a_scenario_in_the_working_directory() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        root.join("proto/revert_name.proto"),
        dir.path().join("revert_name.proto"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("scenario.yaml"),
        r#"
name: bare
targets:
  revert: { url: "http://127.0.0.1:50052", protos: [revert_name.proto] }
load: { users: 1, duration: 1s }
requests:
  - name: revert
    grpc: { target: revert, method: revertname.RevertName/RevertName, message: { name: a } }
"#,
    )
    .unwrap();
    let out = bin()
        .current_dir(dir.path())
        .args(["validate", "scenario.yaml"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
