//! End-to-end tests of user behaviour: flows with captures against the
//! bank demo service, data feeds, response checks, stages and pacing.
//! Every load is bounded by a few seconds or an iteration count.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use redproof_services::bank::{self, BankOptions};
use serde_json::{Value, json};
use support::{Run, outcomes, request, total};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Runs a scenario written to a temporary directory with `files` beside it.
fn run(scenario: &str, files: &[(&str, &str)]) -> Run {
    support::run_scenario(scenario, files, &["--quiet"])
}

/// The bank demo service on an ephemeral port, stopped on drop.
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
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(l.local_addr().unwrap()).unwrap();
                bank::serve(
                    l,
                    BankOptions {
                        database: None,
                        faults: Default::default(),
                    },
                    token,
                )
                .await
                .unwrap();
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

#[test]
fn captured_accounts_flow_into_later_steps() {
    let bank = Bank::start();
    let r = run(
        &format!(
            r#"
name: bank-flow
targets:
  bank: {{ url: "http://{addr}" }}
data:
  customers: {{ file: customers.csv }}
load: {{ users: 4, iterations: 200 }}
on_start:
  - name: open_account
    http: {{ target: bank, method: POST, path: /accounts, json: {{ owner: "{{{{ customers.name }}}}" }} }}
    expect: {{ status: 201 }}
    capture:
      account_id: {{ json: "$.id" }}
      kind: {{ header: content-type }}
requests:
  - name: deposit_and_check
    flow:
      - name: deposit
        http:
          target: bank
          method: POST
          path: "/accounts/{{{{ account_id }}}}/transactions"
          json: {{ kind: credit, amount: "{{{{ number(customers.cents) }}}}" }}
        expect: {{ status: 201, json: {{ "$.kind": credit }} }}
        capture: {{ tx: {{ json: "$.id" }} }}
      - name: balance
        http: {{ target: bank, path: "/accounts/{{{{ account_id }}}}/balance" }}
        expect: {{ status: 200, header: {{ content-type: application/json }} }}
"#,
            addr = bank.addr
        ),
        &[("customers.csv", "name,cents\nada,100\ngrace,250\nalan,50\n")],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let res = r.results();
    // One account per user, then 200 iterations of the two-step flow,
    // every one against a captured account: no 404 anywhere.
    assert_eq!(
        outcomes(res, "open_account"),
        vec![(json!({"status": 201}), true, 4)]
    );
    assert_eq!(
        outcomes(res, "deposit"),
        vec![(json!({"status": 201}), true, 200)]
    );
    assert_eq!(
        outcomes(res, "balance"),
        vec![(json!({"status": 200}), true, 200)]
    );
}

#[test]
fn a_failed_capture_ends_the_iteration_and_checks_count_as_check_failed() {
    let server = support::start();
    let r = run(
        &format!(
            r#"
name: checks
targets:
  web: {{ url: "{url}" }}
load: {{ users: 2, iterations: 40 }}
requests:
  - name: flow
    flow:
      - name: first
        http: {{ target: web, path: /status/200 }}
        capture: {{ id: {{ json: "$.id" }} }}
      - name: second
        http: {{ target: web, path: "/after/{{{{ id }}}}" }}
  - name: body_check
    http: {{ target: web, path: /status/200 }}
    expect: {{ status: 200, body_contains: nope }}
  - name: body_ok
    http: {{ target: web, path: /status/200 }}
    expect: {{ status: 200, body_contains: ok }}
  - name: header_check
    http: {{ target: web, path: /status/200 }}
    expect: {{ header: {{ content-type: application/json }} }}
  - name: wrong_status
    http: {{ target: web, path: /status/500 }}
    expect: {{ status: 200, body_contains: ok }}
"#,
            url = server.url()
        ),
        &[],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let res = r.results();
    // The body "ok\n" is not JSON: the capture fails, so `second` never runs.
    let first = outcomes(res, "first");
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].0, json!({"check_failed": {"status": 200}}));
    assert!(!first[0].1);
    assert_eq!(total(res, "second"), 0);
    assert_eq!(server.counts.get("/after"), 0);
    assert_eq!(
        outcomes(res, "body_check"),
        vec![(
            json!({"check_failed": {"status": 200}}),
            false,
            total(res, "body_check")
        )]
    );
    assert!(outcomes(res, "body_ok").iter().all(|o| o.1));
    assert!(outcomes(res, "header_check").iter().all(|o| !o.1));
    // A status the step does not expect stays a status error.
    assert_eq!(
        outcomes(res, "wrong_status"),
        vec![(json!({"status": 500}), false, total(res, "wrong_status"))]
    );
    let all: u64 = [
        "first",
        "body_check",
        "body_ok",
        "header_check",
        "wrong_status",
    ]
    .iter()
    .map(|n| total(res, n))
    .sum();
    assert_eq!(all, 40);
    assert!(r.stdout.contains("check_failed (200)"), "{}", r.stdout);
    assert!(
        r.stdout.contains("the body does not contain `nope`"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("the body is not JSON"), "{}", r.stdout);
}

#[test]
fn unique_rows_are_drawn_once_then_stop_or_cycle() {
    let rows = "id\n".to_owned() + &(1..=10).map(|i| format!("r{i}\n")).collect::<String>();
    let scenario = |exhausted: &str, end: &str, url: &str| {
        format!(
            r#"
name: unique
targets:
  web: {{ url: "{url}" }}
data:
  rows: {{ file: rows.csv, draw: unique, exhausted: {exhausted} }}
load: {{ users: 3, {end} }}
requests:
  - name: row
    http: {{ target: web, path: "/row/{{{{ rows.id }}}}/" }}
"#
        )
    };
    let server = support::start();
    let r = run(
        &scenario("stop", "duration: 30s", &server.url()),
        &[("rows.csv", &rows)],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    // Each row once, then the run stops long before its 30 s.
    assert_eq!(total(r.results(), "row"), 10);
    for i in 1..=10 {
        assert_eq!(server.counts.get(&format!("/row/r{i}/")), 1, "row r{i}");
    }
    assert!(r.results()["timing"]["load_s"].as_f64().unwrap() < 10.0);
    assert!(
        r.stderr.contains("data feed `rows` ran out of rows"),
        "{}",
        r.stderr
    );

    let server = support::start();
    let r = run(
        &scenario("cycle", "iterations: 25", &server.url()),
        &[("rows.csv", &rows)],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(total(r.results(), "row"), 25);
    // 25 draws over 10 rows: every row two or three times.
    let per_row: Vec<u64> = (1..=10)
        .map(|i| server.counts.get(&format!("/row/r{i}/")))
        .collect();
    assert!(per_row.iter().all(|&n| (2..=3).contains(&n)), "{per_row:?}");
    assert_eq!(per_row.iter().sum::<u64>(), 25);
}

/// Mean completed requests per one-second window over `[from, to)`.
fn window_rate(results: &Value, from: usize, to: usize) -> f64 {
    let w = results["windows"].as_array().unwrap();
    let counts: Vec<f64> = w[from..to.min(w.len())]
        .iter()
        .map(|w| w["all"]["count"].as_f64().unwrap())
        .collect();
    counts.iter().sum::<f64>() / counts.len() as f64
}

#[test]
fn closed_stages_reach_their_users_at_the_pace() {
    let server = support::start();
    let r = run(
        &format!(
            r#"
name: closed-stages
targets:
  web: {{ url: "{url}" }}
load:
  stages:
    - {{ for: 3s, users: 2 }}
    - {{ for: 3s, users: 6 }}
  pace: 100ms
  drain: 1s
requests:
  - name: home
    http: {{ target: web, path: / }}
"#,
            url = server.url()
        ),
        &[],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    // Each user starts 10 iterations a second: 20/s, then 60/s. The
    // bounds leave room for a stalled second on a busy machine; a pace
    // that was ignored (hundreds a second) or users that never came
    // (20/s throughout) are far outside them.
    let first = window_rate(r.results(), 0, 3);
    let second = window_rate(r.results(), 3, 6);
    assert!((14.0..=26.0).contains(&first), "first stage {first}/s");
    assert!((42.0..=78.0).contains(&second), "second stage {second}/s");
    // Pacing records the corrected latency as well, and says so.
    assert!(request(r.results(), "home")["corrected_histogram"].is_string());
    assert!(
        r.stdout.contains("pacing-corrected latency"),
        "{}",
        r.stdout
    );
}

#[test]
fn open_stages_ramp_the_arrival_rate() {
    let server = support::start();
    let r = run(
        &format!(
            r#"
name: open-stages
targets:
  web: {{ url: "{url}" }}
load:
  stages:
    - {{ for: 2s, rate: 50/s }}
    - {{ for: 2s, rate: 50/s..150/s }}
  drain: 1s
requests:
  - name: home
    http: {{ target: web, path: / }}
"#,
            url = server.url()
        ),
        &[],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    // 50/s for 2 s, then a ramp averaging 100/s for 2 s: 300 arrivals are
    // due, none at or after the end. A slot whose worker wakes after the
    // run stopped is counted as dropped, so started and dropped account
    // for the 300 exactly; only the last few (the last 50 ms at 150/s)
    // can land that late.
    let n = total(r.results(), "home");
    let dropped = r.results()["schedule"]["dropped"].as_u64().unwrap();
    assert!(n <= 300, "{n} requests started: more than were due");
    assert_eq!(n + dropped, 300, "started {n} + dropped {dropped}");
    assert!(dropped <= 7, "{dropped} slots dropped");
    let first = window_rate(r.results(), 0, 2);
    let last = window_rate(r.results(), 3, 4);
    assert!((35.0..=65.0).contains(&first), "first stage {first}/s");
    assert!((95.0..=155.0).contains(&last), "end of the ramp {last}/s");
}

#[test]
fn bundled_bank_scenario_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_redproof"))
        .arg("validate")
        .arg(root.join("scenarios/bank.yaml"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn iterations_count_per_user_or_in_total_after_on_start() {
    let server = support::start();
    let scenario = |end: &str| {
        format!(
            r#"
name: iterations
targets:
  web: {{ url: "{url}" }}
load: {{ users: 5, {end} }}
on_start:
  - name: login
    http: {{ target: web, path: /login }}
    capture: {{ session: {{ header: content-length }} }}
requests:
  - name: page
    flow:
      - name: one
        http: {{ target: web, path: "/one/{{{{ session }}}}" }}
      - name: two
        http: {{ target: web, path: "/two/{{{{ session }}}}" }}
"#,
            url = server.url()
        )
    };
    let r = run(&scenario("iterations_per_user: 4"), &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(total(r.results(), "login"), 5);
    assert_eq!(total(r.results(), "one"), 20);
    assert_eq!(total(r.results(), "two"), 20);
    // As many users as iterations: every claimed iteration still runs
    // after its user's on_start (the steps carry the value on_start
    // captured), and every flow runs to its end. Which users claim the
    // five is a race: a user first polled after the others have claimed
    // them all stops without running on_start.
    let before = (server.counts.get("/one/3"), server.counts.get("/two/3"));
    let r = run(&scenario("iterations: 5"), &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let logins = total(r.results(), "login");
    assert!((1..=5).contains(&logins), "{logins} logins");
    assert_eq!(total(r.results(), "one"), 5);
    assert_eq!(total(r.results(), "two"), 5);
    assert_eq!(server.counts.get("/one/3") - before.0, 5);
    assert_eq!(server.counts.get("/two/3") - before.1, 5);

    // `--iterations` replaces the file's count and counts whole flows,
    // not requests: 7 iterations of a two-step flow send 14 requests.
    let before = (server.counts.get("/one/3"), server.counts.get("/two/3"));
    let r = support::run_scenario(
        &scenario("iterations: 5"),
        &[],
        &["--quiet", "--iterations", "7"],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(total(r.results(), "one"), 7);
    assert_eq!(total(r.results(), "two"), 7);
    assert_eq!(server.counts.get("/one/3") - before.0, 7);
    assert_eq!(server.counts.get("/two/3") - before.1, 7);
}

#[test]
fn a_failing_on_start_backs_off_instead_of_spinning() {
    // The capture can never succeed (the answer is not JSON) and users do
    // not wait: without a pause between attempts this sent thousands of
    // logins a second.
    let server = support::start();
    let scenario = format!(
        r#"
name: failing-login
targets:
  web: {{ url: "{}" }}
load: {{ users: 1, duration: 2s }}
on_start:
  - name: login
    http: {{ target: web, path: /login }}
    capture: {{ token: {{ json: "$.token" }} }}
requests:
  - {{ name: page, http: {{ target: web, path: "/page/{{{{ token }}}}" }} }}
"#,
        server.url()
    );
    let r = run(&scenario, &[]);
    let logins = server.counts.get("/login");
    // 50 ms, doubling: at most 6 attempts fit in 2 s, however fast the
    // machine; at least the first retry does.
    assert!((2..=7).contains(&logins), "{logins} logins\n{}", r.stdout);
    assert_eq!(server.counts.get("/page"), 0);
    assert_eq!(total(r.results(), "login"), logins);
}

/// A login that can never succeed, with a limit on failed attempts.
fn failing_login(users: u32, then: &str) -> (support::TestServer, Run) {
    let server = support::start();
    let scenario = format!(
        r#"
name: failing-login
targets:
  web: {{ url: "{}" }}
load: {{ users: {users}, duration: 60s }}
on_start:
  - name: login
    http: {{ target: web, path: /login }}
    capture: {{ token: {{ json: "$.token" }} }}
on_start_failures: {{ max: 3, then: {then} }}
requests:
  - {{ name: page, http: {{ target: web, path: "/page/{{{{ token }}}}" }} }}
"#,
        server.url()
    );
    let r = support::run_scenario(&scenario, &[], &["--quiet"]);
    (server, r)
}

#[test]
fn on_start_failures_abort_the_run_as_failed() {
    // Aborting ends the 60 s run after three failed logins (0.15 s of
    // pauses): the test finishing at all shows the run stopped early.
    let (server, r) = failing_login(2, "abort");
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("RUN ABORTED: `on_start` failed 3 times in a row"),
        "{}",
        r.stdout
    );
    let res = r.results();
    assert!(
        res["aborted"].as_str().unwrap().contains("on_start"),
        "{res}"
    );
    assert!(res["timing"]["load_s"].as_f64().unwrap() < 30.0, "{res}");
    // The first user to give up stops the run; the other may have made
    // its third attempt by then, never a fourth.
    let logins = server.counts.get("/login");
    assert!((3..=6).contains(&logins), "{logins} logins");
    assert_eq!(total(res, "login"), logins);
    assert_eq!(server.counts.get("/page"), 0);
}

#[test]
fn on_start_failures_can_stop_only_the_user() {
    // Every user gives up, so the run has nothing left to do; its
    // duration still holds, so the load is cut with a short `--duration`.
    let server = support::start();
    let scenario = format!(
        r#"
name: failing-login
targets:
  web: {{ url: "{}" }}
load: {{ users: 2, duration: 1s }}
on_start:
  - name: login
    http: {{ target: web, path: /login }}
    capture: {{ token: {{ json: "$.token" }} }}
on_start_failures: {{ max: 2, then: stop_user }}
requests:
  - {{ name: page, http: {{ target: web, path: "/page/{{{{ token }}}}" }} }}
"#,
        server.url()
    );
    let r = support::run_scenario(&scenario, &[], &["--quiet"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("2 users stopped after failing `on_start`"),
        "{}",
        r.stdout
    );
    assert_eq!(r.results()["users_stopped"], 2);
    // Two attempts each, then nothing more.
    assert_eq!(server.counts.get("/login"), 4);
}

#[test]
fn on_start_failures_are_checked_at_validation() {
    let (_, r) = failing_login(1, "give_up");
    assert_eq!(r.code, 64, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("`then`: expected `abort` or `stop_user`, got `give_up`"),
        "{}",
        r.stderr
    );
}

fn failing_threshold(server: &support::TestServer, rule: &str) -> Run {
    let scenario = format!(
        r#"
name: abort-on-fail
targets:
  web: {{ url: "{}" }}
load: {{ users: 2, wait: 5ms, duration: 60s }}
requests:
  - {{ name: broken, http: {{ target: web, path: /status/500 }}, expect: {{ status: 200 }} }}
thresholds:
  - broken.p99 < 10s
  - {rule}
"#,
        server.url()
    );
    run(&scenario, &[])
}

#[test]
fn an_abort_on_fail_threshold_stops_the_run_when_it_fails() {
    let server = support::start();
    // Checked once a second on the figures so far: the 60 s run stops
    // after its first second, as failed, and says why.
    let r = failing_threshold(
        &server,
        r#"{ threshold: "all.errors < 10%", abort_on_fail: true }"#,
    );
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    // The report wraps at 80 columns: read it as one line.
    let words = r.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains(
            "RUN ABORTED: threshold `all.errors < 10%` failed after 1s (observed 100.00%) and has `abort_on_fail`"
        ),
        "{}",
        r.stdout
    );
    let load_s = r.results()["timing"]["load_s"].as_f64().unwrap();
    assert!(load_s < 30.0, "{load_s}");

    // With a delay, the run goes on at least that long first.
    let r = failing_threshold(
        &server,
        r#"{ threshold: "all.errors < 10%", abort_on_fail: true, delay: 2s }"#,
    );
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let load_s = r.results()["timing"]["load_s"].as_f64().unwrap();
    assert!((2.0..30.0).contains(&load_s), "{load_s}");
    assert!(r.stdout.contains("failed after 2s"), "{}", r.stdout);
}

#[test]
fn abort_on_fail_is_checked_at_validation() {
    let dir = tempfile::tempdir().unwrap();
    let file = support::write_scenario(
        dir.path(),
        r#"
name: abort-problems
targets:
  web: { url: "http://127.0.0.1:9" }
load: { users: 1, duration: 1s }
requests:
  - { name: ok, http: { target: web, path: / } }
thresholds:
  - { threshold: "ok.p95 < 1s", abort_on_fail: yes, delay: soon }
  - { threshold: "ok.p95 < 1s", delay: 1s }
  - { abort_on_fail: true }
  - { threshold: "ok.p95 < 1s", abort: true }
"#,
    );
    let out = Command::new(env!("CARGO_BIN_EXE_redproof"))
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8(out.stderr).unwrap();
    for (at, msg) in [
        (
            "9:48",
            "`abort_on_fail`: expected `true` or `false`, got `yes`",
        ),
        ("9:60", "`delay`: "),
        ("10:33", "`delay` goes with `abort_on_fail: true`"),
        ("11:5", "a threshold entry: expected `threshold:"),
        ("12:33", "unknown field `abort` in a threshold"),
    ] {
        assert!(err.contains(&format!(":{at}: {msg}")), "{at} {msg}\n{err}");
    }
}

#[test]
fn included_files_add_targets_data_and_requests() {
    let server = support::start();
    let common = format!(
        r#"
targets:
  web: {{ url: "{}" }}
data:
  names: [ann]
requests:
  - name: greet
    flow:
      - {{ name: hello, http: {{ target: web, path: "/hello/{{{{ pick(names) }}}}" }} }}
"#,
        server.url()
    );
    let scenario = r#"
name: with-includes
include: [common.yaml]
load: { users: 1, iterations: 4 }
requests:
  - { name: home, http: { target: web, path: /home }, weight: 1 }
"#;
    let r = run(scenario, &[("common.yaml", &common)]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(total(r.results(), "home") + total(r.results(), "hello"), 4);
    assert_eq!(
        server.counts.get("/home") + server.counts.get("/hello/ann"),
        4
    );
}
