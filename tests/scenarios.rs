//! End-to-end tests of several scenarios in one file (`scenarios:`): each
//! runs its own load from its own start against a loopback server that
//! counts and timestamps requests per path. Every load is bounded by a
//! few seconds.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Run, total};

/// A closed-model scenario for 2 s from the start, and an open-model one
/// at 40/s for 1 s from 1 s in; `thresholds` are added as written.
fn mixed(server: &support::TestServer, thresholds: &str) -> String {
    format!(
        r#"
name: mixed
targets:
  web: {{ url: "{}" }}
scenarios:
  browse:
    load: {{ users: 2, wait: 10ms, duration: 2s, drain: 2s }}
    requests:
      - {{ name: home, weight: 3, http: {{ target: web, path: /browse/home }} }}
      - name: buy
        flow:
          - {{ name: cart, http: {{ target: web, path: /browse/cart }} }}
          - {{ name: pay, http: {{ target: web, path: /browse/pay }} }}
  api:
    start: 1s
    load: {{ rate: 40/s, duration: 1s, drain: 2s }}
    requests:
      - {{ name: list, http: {{ target: web, path: /api/list }} }}
thresholds:
{thresholds}
"#,
        server.url()
    )
}

fn run(scenario: &str, args: &[&str]) -> Run {
    let mut all = vec!["--quiet"];
    all.extend_from_slice(args);
    support::run_scenario(scenario, &[], &all)
}

fn scenario_entry<'a>(results: &'a Value, name: &str) -> &'a Value {
    results["scenarios"]
        .as_array()
        .expect("a scenarios section")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no scenario `{name}` in {results:#}"))
}

#[test]
fn each_scenario_runs_its_own_load_in_its_own_window() {
    let server = support::start();
    let r = run(
        &mixed(
            &server,
            "  - browse.home.count > 10\n  - api.list.count >= 40\n  - api.errors < 1%\n  - api.list.count > 1000",
        ),
        &[],
    );
    // One threshold is made to fail: the exit code says so.
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let res = r.results();

    // Every request the client counted, the server answered, per path.
    for (name, path) in [
        ("browse.home", "/browse/home"),
        ("browse.cart", "/browse/cart"),
        ("browse.pay", "/browse/pay"),
        ("api.list", "/api/list"),
    ] {
        assert_eq!(total(res, name), server.counts.get(path), "{name}");
    }
    // The open model starts exactly its arrivals: 40/s for 1 s.
    assert_eq!(total(res, "api.list"), 40, "{}", r.stdout);
    assert!(total(res, "browse.home") > 10, "{}", r.stdout);
    // A flow's steps run together.
    assert_eq!(total(res, "browse.cart"), total(res, "browse.pay"));

    // Each scenario's requests arrive in its own window: browse from the
    // start for 2 s, api from 1 s for 1 s.
    let (browse_first, browse_last) = server.counts.span("/browse/home").unwrap();
    let (api_first, api_last) = server.counts.span("/api/list").unwrap();
    let after = |t: std::time::Instant| t.duration_since(browse_first);
    assert!(
        (Duration::from_millis(900)..Duration::from_millis(1300)).contains(&after(api_first)),
        "api started {:?} after browse",
        after(api_first)
    );
    assert!(
        (Duration::from_millis(1800)..Duration::from_millis(2300)).contains(&after(api_last)),
        "api's last request came {:?} after browse started",
        after(api_last)
    );
    assert!(
        (Duration::from_millis(1700)..Duration::from_millis(2300)).contains(&after(browse_last)),
        "browse's last request came {:?} after its first",
        after(browse_last)
    );

    // The results file has a section per scenario; rates are over each
    // scenario's own time.
    let browse = scenario_entry(res, "browse");
    let api = scenario_entry(res, "api");
    assert_eq!(browse["start_s"], 0.0);
    assert_eq!(api["start_s"], 1.0);
    assert_eq!(api["load"]["model"], "open");
    assert_eq!(browse["load"]["users"], 2);
    let api_load = api["load_s"].as_f64().unwrap();
    assert!((0.95..1.3).contains(&api_load), "{api_load}");
    assert_eq!(res["load"]["model"], "mixed");
    let load_s = res["timing"]["load_s"].as_f64().unwrap();
    assert!((1.95..2.5).contains(&load_s), "{load_s}");

    // Thresholds on `scenario.request` and on a whole scenario.
    let passed = |text: &str| {
        res["thresholds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["threshold"]["text"] == text)
            .unwrap_or_else(|| panic!("no threshold `{text}`"))["passed"]
            .as_bool()
            .unwrap()
    };
    assert!(passed("browse.home.count > 10"));
    assert!(passed("api.list.count >= 40"));
    assert!(passed("api.errors < 1%"));
    assert!(!passed("api.list.count > 1000"));

    // The report: a line per scenario, its requests and its total.
    let out = &r.stdout;
    assert!(out.contains("mixed · 2 scenarios"), "{out}");
    assert!(out.contains("\nscenarios\n"), "{out}");
    assert!(
        out.contains("  api     open model, 40/s · from 1.0s"),
        "{out}"
    );
    assert!(
        out.contains("  browse  closed model, 2 users · from 0.0s"),
        "{out}"
    );
    let table = out.lines().position(|l| l.starts_with("request ")).unwrap();
    let row = |name: &str| {
        table
            + out
                .lines()
                .skip(table)
                .position(|l| l.split_whitespace().next() == Some(name))
                .unwrap_or_else(|| panic!("no row `{name}` in\n{out}"))
    };
    assert!(row("browse.home") < row("browse") && row("browse") < row("api.list"));
    assert!(row("api.list") < row("api") && row("api") < row("all"));
    let api_row: Vec<&str> = out
        .lines()
        .nth(row("api"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(api_row[1], "40", "{out}");
    assert!(out.contains("FAIL api.list.count > 1000"), "{out}");

    // The results file re-renders with the same sections.
    let report = std::process::Command::new(env!("CARGO_BIN_EXE_redproof"))
        .env("NO_COLOR", "1")
        .arg("report")
        .arg(r.dir.path().join("results.json"))
        .output()
        .unwrap();
    let rendered = String::from_utf8(report.stdout).unwrap();
    assert!(
        rendered.contains("  api     open model, 40/s"),
        "{rendered}"
    );
    assert_eq!(
        rendered.lines().filter(|l| l.starts_with("api ")).count(),
        1,
        "{rendered}"
    );
}

#[test]
fn users_and_rate_name_the_scenario_they_change() {
    let server = support::start();
    let scenario = mixed(&server, "  - all.count > 0");

    // With several scenarios, a bare value is ambiguous.
    let r = run(&scenario, &["--users", "3"]);
    assert_eq!(r.code, 64, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains(
            "--users 20: this file has several scenarios (browse, api); say which, e.g. --users browse=20"
        ),
        "{}",
        r.stderr
    );
    let r = run(&scenario, &["--rate", "shop=10/s"]);
    assert_eq!(r.code, 64, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("--rate shop=…: no scenario `shop` in the file (scenarios: browse, api)"),
        "{}",
        r.stderr
    );
    assert_eq!(
        server.counts.get("/"),
        0,
        "nothing is sent on a usage error"
    );

    // Named, it changes that scenario only: api at 20/s for 1 s.
    let r = run(&scenario, &["--rate", "api=20/s"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let res = r.results();
    assert_eq!(total(res, "api.list"), 20, "{}", r.stdout);
    assert_eq!(scenario_entry(res, "api")["load"]["rate"], 20.0);
    assert_eq!(scenario_entry(res, "browse")["load"]["users"], 2);
}

#[test]
fn ctrl_c_stops_every_scenario_even_one_not_started_yet() {
    let server = support::start();
    let dir = tempfile::tempdir().unwrap();
    let file = support::write_scenario(
        dir.path(),
        &format!(
            r#"
name: later
targets:
  web: {{ url: "{}" }}
scenarios:
  now:
    load: {{ users: 1, wait: 10ms, duration: 60s }}
    requests:
      - {{ name: ping, http: {{ target: web, path: /now }} }}
  later:
    start: 30s
    load: {{ rate: 10/s, duration: 30s }}
    requests:
      - {{ name: ping, http: {{ target: web, path: /later }} }}
"#,
            server.url()
        ),
    );
    let child = support::spawn_run(&file, dir.path());
    server.counts.wait_for("/now", 5, Duration::from_secs(60));
    let r = support::interrupt(child, dir);
    assert_eq!(r.code, 130, "{}\n{}", r.stdout, r.stderr);
    let res = r.results();
    assert_eq!(res["interrupted"], true);
    // The run ended at the interrupt, not when `later` would have.
    assert!(res["timing"]["elapsed_s"].as_f64().unwrap() < 20.0);
    assert_eq!(total(res, "later.ping"), 0);
    assert_eq!(server.counts.get("/later"), 0);
    assert_eq!(total(res, "now.ping"), server.counts.get("/now"));
    assert_eq!(scenario_entry(res, "later")["load_s"], 0.0);
}
