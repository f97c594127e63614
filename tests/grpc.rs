//! End-to-end gRPC tests: the `redproof` binary against the demo gRPC
//! services (revert-name, time, edge) on ephemeral loopback ports. Loads
//! are bounded by an iteration count or a few seconds.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redproof_services::edge::{self, EdgeListeners, EdgeOptions};
use redproof_services::faults::Faults;
use redproof_services::revert::{self, GrpcOptions};
use redproof_services::time_service;
use serde_json::{Value, json};
use support::{Run, count, outcomes, request, scrape_sum, total};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// edge, revert-name and time on ephemeral ports, stopped on drop.
/// revert-name offers reflection v1 and v1alpha, time v1alpha only.
/// revert-name has its own stop switch, to take it away mid-run.
struct Services {
    edge_web: SocketAddr,
    revert: SocketAddr,
    revert_metrics: SocketAddr,
    time: SocketAddr,
    stop_revert: CancellationToken,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Services {
    fn start() -> Self {
        let shutdown = CancellationToken::new();
        let stop_revert = shutdown.child_token();
        let (tx, rx) = std::sync::mpsc::channel();
        let (token, revert_token) = (shutdown.clone(), stop_revert.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let bind = || async { TcpListener::bind("127.0.0.1:0").await.unwrap() };
                let (rg, rm, tg, tm) = (bind().await, bind().await, bind().await, bind().await);
                let l = EdgeListeners {
                    web: bind().await,
                    grpc: bind().await,
                    grpc_metrics: bind().await,
                };
                let addrs = (
                    l.web.local_addr().unwrap(),
                    rg.local_addr().unwrap(),
                    rm.local_addr().unwrap(),
                    tg.local_addr().unwrap(),
                );
                let eo = EdgeOptions {
                    revert_name: format!("http://{}", addrs.1),
                    time: format!("http://{}", addrs.3),
                    deadline: Duration::from_secs(2),
                    faults: Faults::default(),
                };
                let mut tasks = tokio::task::JoinSet::new();
                tasks.spawn(edge::serve(l, eo, token.clone()));
                tasks.spawn(revert::serve(rg, rm, GrpcOptions::default(), revert_token));
                // time answers reflection on v1alpha only, as servers from
                // before the v1 API do: reading it takes the fallback.
                let time_opts = GrpcOptions {
                    reflection_v1: false,
                    ..GrpcOptions::default()
                };
                tasks.spawn(time_service::serve(tg, tm, time_opts, token.clone()));
                tx.send(addrs).unwrap();
                while tasks.join_next().await.is_some() {}
            });
        });
        let (edge_web, revert, revert_metrics, time) = rx.recv().unwrap();
        Services {
            edge_web,
            revert,
            revert_metrics,
            time,
            stop_revert,
            shutdown,
            thread: Some(thread),
        }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn proto(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("proto")
        .join(name)
        .display()
        .to_string()
}

fn run(scenario: &str) -> Run {
    support::run_scenario(scenario, &[], &["--quiet"])
}

/// A gRPC status outcome, as the results file writes it.
fn grpc(code: &str) -> Value {
    json!({ "grpc": code })
}

fn messages(results: &Value, name: &str) -> (u64, u64) {
    let m = &request(results, name)["messages"];
    (m["sent"].as_u64().unwrap(), m["received"].as_u64().unwrap())
}

#[test]
fn protos_and_reflection_mix_with_rest_by_weight() {
    let svc = Services::start();
    let r = run(&format!(
        r#"
name: edge-mix
targets:
  edge: {{ url: "http://{edge}" }}
  revert: {{ url: "http://{revert}", protos: ["{revert_proto}"] }}
  time: {{ url: "http://{time}", reflection: true }}
data:
  names: [alice, bob, carol]
load: {{ users: 8, iterations: 2000 }}
requests:
  - name: proxy
    weight: 2
    http: {{ target: edge, path: "/proxy/{{{{ pick(names) }}}}/" }}
    expect: {{ status: 200 }}
  - name: revert_name
    grpc:
      target: revert
      method: revertname.RevertName/RevertName
      message: {{ name: "{{{{ pick(names) }}}}" }}
      metadata: {{ x-request-id: "{{{{ uuid() }}}}" }}
      deadline: 2s
  - name: what_time_is
    grpc: {{ target: time, method: timeservice.Time/WhatTimeIs }}
"#,
        edge = svc.edge_web,
        revert = svc.revert,
        time = svc.time,
        revert_proto = proto("revert_name.proto"),
    ));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let res = r.results.unwrap();
    let proxy = count(&res, "proxy", json!({ "status": 200 }));
    let revert = count(&res, "revert_name", grpc("OK"));
    let time = count(&res, "what_time_is", grpc("OK"));
    assert_eq!(proxy + revert + time, 2000, "{}", r.stdout);
    // 2:1:1 over 2000 calls: 1000/500/500, ±15%.
    assert!((850..=1150).contains(&proxy), "proxy {proxy}");
    assert!((425..=575).contains(&revert), "revert {revert}");
    assert!((425..=575).contains(&time), "time {time}");
    assert_eq!(request(&res, "revert_name")["kind"], "grpc");
    assert_eq!(request(&res, "revert_name")["grpc_type"], "unary");
    assert_eq!(messages(&res, "revert_name"), (revert, revert));
    // revert-name served every direct call and one per proxied request.
    let served = scrape_sum(
        svc.revert_metrics,
        "grpc_server_handled_total",
        &[("grpc_method", "RevertName"), ("grpc_code", "OK")],
    );
    assert_eq!(served as u64, proxy + revert);
    assert!(r.stdout.contains("revert_name"), "{}", r.stdout);
    assert!(r.stdout.contains("OK × "), "{}", r.stdout);
}

#[test]
fn each_streaming_kind_counts_messages_both_ways() {
    let svc = Services::start();
    let r = run(&format!(
        r#"
name: streams
targets:
  revert: {{ url: "http://{revert}", protos: ["{revert_proto}"] }}
  time: {{ url: "http://{time}", protos: ["{time_proto}"] }}
load: {{ users: 3, iterations: 300 }}
requests:
  - name: ticks
    grpc:
      target: time
      method: timeservice.Time/Ticks
      message: {{ count: 3, interval_ms: 0 }}
  - name: names
    grpc:
      target: revert
      method: revertname.RevertName/RevertNames
      messages: [{{ name: ann }}, {{ name: "b{{{{ seq() }}}}" }}]
  - name: each
    grpc:
      target: revert
      method: revertname.RevertName/RevertEach
      message: {{ name: "n{{{{ randint(1, 9) }}}}" }}
      count: 4
"#,
        revert = svc.revert,
        time = svc.time,
        revert_proto = proto("revert_name.proto"),
        time_proto = proto("time.proto"),
    ));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let res = r.results.unwrap();
    let (ticks, names, each) = (
        count(&res, "ticks", grpc("OK")),
        count(&res, "names", grpc("OK")),
        count(&res, "each", grpc("OK")),
    );
    assert_eq!(ticks + names + each, 300, "{}", r.stdout);
    assert!(ticks > 0 && names > 0 && each > 0, "{}", r.stdout);
    assert_eq!(messages(&res, "ticks"), (ticks, 3 * ticks));
    assert_eq!(messages(&res, "names"), (2 * names, names));
    assert_eq!(messages(&res, "each"), (4 * each, 4 * each));
    assert_eq!(request(&res, "ticks")["grpc_type"], "server_streaming");
    assert_eq!(request(&res, "names")["grpc_type"], "client_streaming");
    assert_eq!(request(&res, "each")["grpc_type"], "bidi_streaming");
    assert!(r.stdout.contains("messages: "), "{}", r.stdout);
    // gRPC results follow the published schema.
    let schema: Value =
        serde_json::from_str(include_str!("../schema/results.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(&res).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn deadlines_and_status_codes_are_counted_by_name() {
    let svc = Services::start();
    let r = run(&format!(
        r#"
name: codes
targets:
  revert: {{ url: "http://{revert}", protos: ["{revert_proto}"] }}
  time: {{ url: "http://{time}", protos: ["{time_proto}"] }}
load: {{ users: 4, iterations: 200 }}
requests:
  - name: slow
    grpc:
      target: time
      method: timeservice.Time/Ticks
      message: {{ count: 3, interval_ms: 300 }}
      deadline: 100ms
    expect: {{ code: DEADLINE_EXCEEDED }}
  - name: empty_expected
    grpc:
      target: revert
      method: revertname.RevertName/RevertName
      message: {{ name: "" }}
    expect: {{ code: [INVALID_ARGUMENT] }}
  - name: empty
    grpc:
      target: revert
      method: revertname.RevertName/RevertName
      message: {{ name: "" }}
thresholds:
  - empty.errors > 99%
  - empty_expected.errors < 1%
"#,
        revert = svc.revert,
        time = svc.time,
        revert_proto = proto("revert_name.proto"),
        time_proto = proto("time.proto"),
    ));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let res = r.results.unwrap();
    let slow = outcomes(&res, "slow");
    assert_eq!(slow.len(), 1, "{slow:?}");
    assert_eq!(slow[0].0, grpc("DEADLINE_EXCEEDED"));
    assert!(slow[0].1);
    assert_eq!(
        outcomes(&res, "empty_expected"),
        vec![(
            grpc("INVALID_ARGUMENT"),
            true,
            count(&res, "empty_expected", grpc("INVALID_ARGUMENT"))
        )]
    );
    let empty = outcomes(&res, "empty");
    assert_eq!(empty.len(), 1, "{empty:?}");
    assert_eq!(
        (&empty[0].0, empty[0].1),
        (&grpc("INVALID_ARGUMENT"), false)
    );
    let total: u64 = ["slow", "empty_expected", "empty"]
        .iter()
        .map(|n| total(&res, n))
        .sum();
    assert_eq!(total, 200);
    assert!(r.stdout.contains("INVALID_ARGUMENT ✗ × "), "{}", r.stdout);
}

#[test]
fn a_server_that_goes_away_gives_transport_errors() {
    let svc = Services::start();
    let (stop, metrics) = (svc.stop_revert.clone(), svc.revert_metrics);
    let finished = Arc::new(AtomicBool::new(false));
    let run_finished = finished.clone();
    // revert-name goes away once it has answered calls, early in the 3 s
    // of load; the test only needs more than 10 of them, and 2 users can
    // have at most 2 in flight when it goes.
    let killer = std::thread::spawn(move || {
        while !run_finished.load(Ordering::Relaxed) {
            let ok = scrape_sum(
                metrics,
                "grpc_server_handled_total",
                &[("grpc_method", "RevertName"), ("grpc_code", "OK")],
            );
            if ok >= 20.0 {
                stop.cancel();
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let r = run(&format!(
        r#"
name: going-away
targets:
  revert: {{ url: "http://{revert}", protos: ["{revert_proto}"], timeout: 2s }}
load: {{ users: 2, wait: 5ms, duration: 3s, drain: 1s }}
requests:
  - name: revert_name
    grpc:
      target: revert
      method: revertname.RevertName/RevertName
      message: {{ name: alice }}
"#,
        revert = svc.revert,
        revert_proto = proto("revert_name.proto"),
    ));
    finished.store(true, Ordering::Relaxed);
    killer.join().unwrap();
    assert!(
        svc.stop_revert.is_cancelled(),
        "revert-name never answered 20 calls\n{}\n{}",
        r.stdout,
        r.stderr
    );
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    let res = r.results.expect("results are written");
    let outs = outcomes(&res, "revert_name");
    let ok = count(&res, "revert_name", grpc("OK"));
    let transport: u64 = outs
        .iter()
        .filter(|o| o.0["transport"] == "refused" || o.0["transport"] == "reset")
        .map(|o| o.2)
        .sum();
    assert!(ok > 10, "{outs:?}");
    assert!(transport > 0, "{outs:?}\n{}", r.stdout);
    assert!(r.stdout.contains("transport errors"), "{}", r.stdout);
}

#[test]
fn reflection_checks_calls_before_traffic() {
    let svc = Services::start();
    let r = run(&format!(
        r#"
name: reflected
targets:
  revert: {{ url: "http://{revert}", reflection: true }}
load: {{ users: 1, iterations: 5 }}
requests:
  - name: typo
    grpc:
      target: revert
      method: revertname.RevertName/RevertNam
  - name: field
    grpc:
      target: revert
      method: revertname.RevertName/RevertName
      message: {{ name: 5, surname: x }}
"#,
        revert = svc.revert,
    ));
    assert_eq!(r.code, 64, "{}\n{}", r.stdout, r.stderr);
    assert!(r.results.is_none());
    assert!(
        r.stderr.contains("scenario.yaml:10:15: `method`: `revertname.RevertName` has no method `RevertNam`; its methods are: revertname.RevertName/RevertName, revertname.RevertName/RevertNames, revertname.RevertName/RevertEach"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("field `name` of `revertname.RevertNameRequest` expects a string, got `5`"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("has no field `surname`"), "{}", r.stderr);
    // Nothing was sent: the server counted no calls.
    let served = scrape_sum(svc.revert_metrics, "grpc_server_started_total", &[]);
    assert_eq!(served, 0.0);

    // A target without reflection (or not there at all) stops the run.
    let gone = support::refusing();
    let r = run(&format!(
        r#"
name: nobody
targets:
  gone: {{ url: "http://{addr}", reflection: true }}
load: {{ users: 1, iterations: 5 }}
requests:
  - name: call
    grpc: {{ target: gone, method: a.B/C }}
"#,
        addr = gone.addr
    ));
    assert_eq!(r.code, 69, "{}", r.stderr);
    assert!(
        r.stderr.contains("target `gone` (http://127.0.0.1:"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("cannot read its services by reflection"));
}

#[test]
fn grpc_calls_verify_against_the_servers_metrics() {
    let svc = Services::start();
    let r = run(&format!(
        r#"
name: grpc-verify
targets:
  revert: {{ url: "http://{revert}", protos: ["{revert_proto}"] }}
load: {{ users: 4, duration: 2s }}
requests:
  - name: revert_name
    weight: 3
    grpc:
      target: revert
      method: revertname.RevertName/RevertName
      message: {{ name: "n{{{{ randint(1, 99) }}}}" }}
  - name: names
    grpc:
      target: revert
      method: revertname.RevertName/RevertNames
      messages: [{{ name: a }}, {{ name: "" }}]
    expect: {{ code: INVALID_ARGUMENT }}
metrics:
  scrape: ["http://{metrics}/metrics"]
  scrape_interval: 500ms
verify:
  revert_name: {{ convention: grpc, match: {{ grpc_method: RevertName }} }}
  names: {{ convention: grpc, match: {{ grpc_method: RevertNames }} }}
"#,
        revert = svc.revert,
        metrics = svc.revert_metrics,
        revert_proto = proto("revert_name.proto"),
    ));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let stdout = &r.stdout;
    for check in ["count", "errors", "duration"] {
        assert!(
            stdout.contains(&format!("pass    revert_name.{check}")),
            "{stdout}"
        );
        assert!(
            stdout.contains(&format!("pass    names.{check}")),
            "{stdout}"
        );
    }
    assert!(stdout.contains("InvalidArgument: server "), "{stdout}");
}

#[test]
fn grpc_reply_fields_are_checked_and_captured() {
    let svc = Services::start();
    let r = run(&format!(
        r#"
name: grpc-capture
targets:
  revert: {{ url: "http://{revert}", protos: ["{revert_proto}"] }}
load: {{ users: 2, iterations: 30 }}
requests:
  - name: round_trip
    flow:
      - name: forth
        grpc:
          target: revert
          method: revertname.RevertName/RevertName
          message: {{ name: "abc{{{{ seq() }}}}" }}
        capture: {{ reverted: {{ json: "$.reverted" }} }}
      - name: back
        grpc:
          target: revert
          method: revertname.RevertName/RevertName
          message: {{ name: "{{{{ reverted }}}}" }}
        expect: {{ json: {{ "$.reverted": "abc" }} }}
  - name: count
    grpc:
      target: revert
      method: revertname.RevertName/RevertNames
      messages: [{{ name: a }}, {{ name: b }}]
    expect: {{ json: {{ "$.count": 3 }} }}
"#,
        revert = svc.revert,
        revert_proto = proto("revert_name.proto"),
    ));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let res = r.results.unwrap();
    let forth = count(&res, "forth", grpc("OK"));
    assert!(forth > 0);
    // `back` sends the captured reversal back: "abcN" reversed twice is
    // "abcN", so the check on "abc" fails for every call, as expected.
    let back = outcomes(&res, "back");
    assert_eq!(back.len(), 1, "{back:?}");
    assert_eq!(back[0].0, json!({ "check_failed": grpc("OK") }));
    assert!(!back[0].1);
    assert_eq!(back[0].2, forth);
    assert!(r.stdout.contains("`$.reverted` is \"abc"), "{}", r.stdout);
    // Two names sent: the reply's count is 2, not 3.
    assert!(outcomes(&res, "count").iter().all(|o| !o.1));
    assert!(
        r.stdout.contains("`$.count` is 2, expected 3"),
        "{}",
        r.stdout
    );
}

#[test]
fn grpc_over_tls_from_protos_and_by_reflection() {
    let svc = Services::start();
    // TLS in front of revert-name: the calls, and reading its descriptors
    // by reflection, go over TLS with ALPN `h2`.
    let front = support::tls_front(svc.revert);
    let r = run(&format!(
        r#"
name: grpc-tls
targets:
  protos: {{ url: "https://localhost:{port}", insecure: true, protos: ["{revert_proto}"] }}
  reflected: {{ url: "https://localhost:{port}", insecure: true, reflection: true }}
load: {{ users: 2, iterations: 200 }}
requests:
  - name: from_protos
    grpc:
      target: protos
      method: revertname.RevertName/RevertName
      message: {{ name: "abc" }}
    expect: {{ json: {{ "$.reverted": "cba" }} }}
  - name: by_reflection
    grpc:
      target: reflected
      method: revertname.RevertName/RevertName
      message: {{ name: "xyz" }}
    expect: {{ json: {{ "$.reverted": "zyx" }} }}
"#,
        port = front.addr.port(),
        revert_proto = proto("revert_name.proto"),
    ));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let res = r.results.unwrap();
    let (a, b) = (
        count(&res, "from_protos", grpc("OK")),
        count(&res, "by_reflection", grpc("OK")),
    );
    assert_eq!(a + b, 200, "{}", r.stdout);
    let served = scrape_sum(
        svc.revert_metrics,
        "grpc_server_handled_total",
        &[("grpc_method", "RevertName"), ("grpc_code", "OK")],
    );
    assert_eq!(served as u64, 200);
}

/// The example message of a transport error outcome.
fn transport_example(results: &Value, name: &str, kind: &str) -> String {
    request(results, name)["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["outcome"] == json!({ "transport": kind }))
        .and_then(|o| o["example"].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn replies_over_max_message_are_the_clients_error_not_out_of_range() {
    let svc = Services::start();
    let long = "x".repeat(5000);
    let r = run(&format!(
        r#"
name: too-large
targets:
  revert: {{ url: "http://{revert}", protos: ["{revert_proto}"], max_message: 1k }}
  roomy: {{ url: "http://{revert}", protos: ["{revert_proto}"] }}
load: {{ users: 2, iterations: 20 }}
requests:
  - name: long
    grpc:
      target: revert
      method: revertname.RevertName/RevertName
      message: {{ name: "{long}" }}
  - name: long_default
    grpc:
      target: roomy
      method: revertname.RevertName/RevertName
      message: {{ name: "{long}" }}
"#,
        revert = svc.revert,
        revert_proto = proto("revert_name.proto"),
    ));
    let res = r.results.expect("results are written");
    let long = outcomes(&res, "long");
    assert!(!long.is_empty(), "{}", r.stdout);
    assert!(
        long.iter()
            .all(|o| o.0 == json!({ "transport": "too_large" })),
        "{long:?}"
    );
    let example = transport_example(&res, "long", "too_large");
    assert!(
        example.contains("the limit is: 1000 bytes") && example.contains("max_message"),
        "{example}"
    );
    // The default limit (16 MiB) takes the same reply.
    assert_eq!(
        count(&res, "long_default", grpc("OK")),
        total(&res, "long_default")
    );
    assert!(r.stdout.contains("reply too large"), "{}", r.stdout);
    assert!(!r.stdout.contains("OUT_OF_RANGE"), "{}", r.stdout);
}

#[test]
fn http_answers_that_are_not_grpc_are_protocol_errors_with_their_status() {
    let server = support::start_h2c();
    let r = run(&format!(
        r#"
name: not-grpc
targets:
  proxy: {{ url: "http://{addr}", protos: ["{revert_proto}"] }}
load: {{ users: 1, iterations: 30 }}
requests:
  - name: not_found
    grpc:
      target: proxy
      method: revertname.RevertName/RevertName
      message: {{ name: a }}
      metadata: {{ x-answer-status: "404" }}
  - name: bad_gateway
    grpc:
      target: proxy
      method: revertname.RevertName/RevertName
      message: {{ name: a }}
      metadata: {{ x-answer-status: "502" }}
  - name: plain
    grpc:
      target: proxy
      method: revertname.RevertName/RevertName
      message: {{ name: a }}
"#,
        addr = server.addr,
        revert_proto = proto("revert_name.proto"),
    ));
    let res = r.results.expect("results are written");
    for (name, wanted) in [
        ("not_found", "HTTP 404"),
        ("bad_gateway", "HTTP 502"),
        ("plain", "HTTP 200 OK, no content-type"),
    ] {
        let outs = outcomes(&res, name);
        assert!(!outs.is_empty(), "{name}: {}", r.stdout);
        assert!(
            outs.iter()
                .all(|o| o.0 == json!({ "transport": "protocol" })),
            "{name}: {outs:?}"
        );
        let example = transport_example(&res, name, "protocol");
        assert!(
            example.contains("not a gRPC answer") && example.contains(wanted),
            "{name}: {example}"
        );
    }
    assert!(r.stdout.contains("text/html"), "{}", r.stdout);
    for made_up in ["INTERNAL", "UNKNOWN", "UNIMPLEMENTED", "UNAVAILABLE"] {
        assert!(!r.stdout.contains(made_up), "{}", r.stdout);
    }
}
