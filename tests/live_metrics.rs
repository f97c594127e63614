//! `--metrics-listen`: the client's figures scraped while a run goes on,
//! and a final page whose counts are the results file's.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::exposition;
use support::{http_get, outcomes, wait_until, write_scenario};

/// `redproof run FILE --metrics-listen 127.0.0.1:0 --metrics-linger 60s`
/// writing `results.json` into `dir`, with the live page's URL as it
/// printed it and its stderr read to the end.
struct LiveRun {
    child: std::process::Child,
    url: String,
    /// The live page's `HOST:PORT`.
    addr: String,
    log: std::thread::JoinHandle<String>,
}

impl LiveRun {
    fn start(file: &std::path::Path, dir: &std::path::Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_redproof"))
            .env("NO_COLOR", "1")
            .arg("run")
            .arg(file)
            .args(["--metrics-listen", "127.0.0.1:0", "--metrics-linger", "60s"])
            .arg("--out")
            .arg(dir.join("results.json"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let log = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stderr).lines() {
                let line = line.unwrap();
                if let Some(url) = line.strip_prefix("live metrics: ") {
                    let _ = tx.send(url.to_owned());
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("redproof printed the address it listens on");
        let addr = url
            .trim_start_matches("http://")
            .trim_end_matches("/metrics")
            .to_owned();
        Self {
            child,
            url,
            addr,
            log,
        }
    }
}

/// The live page at `addr`, which must answer 200.
fn scrape(addr: &str) -> String {
    let (status, page) = http_get(addr, "/metrics").expect("the live page answers");
    assert_eq!(status, 200);
    page
}

#[test]
fn live_page_during_the_run_and_final_counts_equal_the_results() {
    let server = support::start();
    let dir = tempfile::tempdir().unwrap();
    let file = write_scenario(
        dir.path(),
        &format!(
            r#"
name: live
targets:
  web: {{ url: "{}" }}
load: {{ users: 3, duration: 3s, wait: 5ms }}
requests:
  - {{ name: home, http: {{ target: web, path: /slow/10 }} }}
  - {{ name: broken, http: {{ target: web, path: /status/500 }}, expect: {{ status: 200 }} }}
"#,
            server.url()
        ),
    );
    let started = Instant::now();
    let LiveRun {
        mut child,
        addr,
        log,
        ..
    } = LiveRun::start(&file, dir.path());
    assert!(!addr.ends_with(":0"), "{addr}");

    // During the run: requests counted, three users running.
    let mut page = String::new();
    wait_until("a live page with requests", Duration::from_secs(20), || {
        page = scrape(&addr);
        exposition::sum(&page, "redproof_requests_total", &[]) > 0.0
    });
    assert_eq!(
        exposition::sample(&page, "redproof_users", &[]),
        Some(3.0),
        "scraped during the load:\n{page}"
    );
    assert!(page.contains("# TYPE redproof_request_duration_seconds histogram"));
    redproof::metrics::text::parse(&page).expect("our own parser reads the page");

    // After the run: the results are written, the final page is served
    // until it is scraped.
    let results = dir.path().join("results.json");
    wait_until("the results file", Duration::from_secs(30), || {
        results.exists()
    });
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&results).unwrap()).unwrap();
    let page = scrape(&addr);
    for request in ["home", "broken"] {
        let mut seen = 0.0;
        for (outcome, ok, n) in outcomes(&results, request) {
            let status = outcome["status"]
                .as_u64()
                .expect("HTTP answers only")
                .to_string();
            let labels = [
                ("request", request),
                ("outcome", status.as_str()),
                ("ok", if ok { "true" } else { "false" }),
            ];
            assert_eq!(
                exposition::sum(&page, "redproof_requests_total", &labels),
                n as f64,
                "{request} {status}\n{page}"
            );
            seen += n as f64;
        }
        assert!(seen > 0.0, "{request}");
        assert_eq!(
            exposition::sum(&page, "redproof_requests_total", &[("request", request)]),
            seen
        );
        let inf = [("request", request), ("le", "+Inf")];
        assert_eq!(
            exposition::sum(&page, "redproof_request_duration_seconds_bucket", &inf),
            seen
        );
    }
    // /slow/10 takes at least 10 ms: none is in the 5 ms bucket.
    let fast = [("request", "home"), ("le", "0.005")];
    assert_eq!(
        exposition::sum(&page, "redproof_request_duration_seconds_bucket", &fast),
        0.0
    );
    assert_eq!(exposition::sample(&page, "redproof_users", &[]), Some(0.0));
    assert_eq!(
        exposition::sample(&page, "redproof_in_flight", &[]),
        Some(0.0)
    );

    // Scraped once, the final page lets redproof exit, long before the
    // 60 s linger.
    let status = child.wait().unwrap();
    let stderr = log.join().unwrap();
    assert!(status.success(), "{status}\n{stderr}");
    assert!(started.elapsed() < Duration::from_secs(40), "{stderr}");
    assert!(stderr.contains("serving the final figures"), "{stderr}");
}

/// An open-model run whose in-flight slots are all busy: the arrivals it
/// falls behind show while it runs, and the final page holds those it
/// dropped, as the results file does.
#[test]
fn arrivals_behind_a_full_in_flight_cap_show_live() {
    let server = support::start();
    let dir = tempfile::tempdir().unwrap();
    // Two slots of 50 ms answer about 40/s of the 200/s due.
    let file = write_scenario(
        dir.path(),
        &format!(
            r#"
name: behind
targets:
  web: {{ url: "{}" }}
load: {{ rate: 200/s, duration: 3s, max_in_flight: 2 }}
requests:
  - {{ name: slow, http: {{ target: web, path: /slow/50 }} }}
"#,
            server.url()
        ),
    );
    let LiveRun {
        mut child,
        addr,
        log,
        ..
    } = LiveRun::start(&file, dir.path());
    wait_until(
        "a live page with arrivals behind",
        Duration::from_secs(20),
        || {
            exposition::sample(&scrape(&addr), "redproof_arrivals_behind", &[]).unwrap_or(0.0)
                >= 50.0
        },
    );
    let results = dir.path().join("results.json");
    wait_until("the results file", Duration::from_secs(30), || {
        results.exists()
    });
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&results).unwrap()).unwrap();
    let dropped = results["schedule"]["dropped"].as_f64().expect("open model");
    assert!(dropped > 0.0, "{results}");
    let page = scrape(&addr);
    assert_eq!(
        exposition::sample(&page, "redproof_arrivals_behind", &[]),
        Some(dropped),
        "{page}"
    );
    let status = child.wait().unwrap();
    let stderr = log.join().unwrap();
    assert!(status.success(), "{status}\n{stderr}");
}

#[test]
fn a_port_in_use_is_a_usage_error_before_any_traffic() {
    let server = support::start();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let scenario = format!(
        r#"
name: taken
targets:
  web: {{ url: "{}" }}
load: {{ users: 1, iterations: 5 }}
requests:
  - {{ name: home, http: {{ target: web, path: / }} }}
"#,
        server.url()
    );
    let run = support::run_scenario(&scenario, &[], &["--metrics-listen", &addr]);
    assert_eq!(run.code, 64, "{}", run.stderr);
    assert!(run.stderr.contains("--metrics-listen"), "{}", run.stderr);
    assert!(run.stderr.contains(&addr), "{}", run.stderr);
    assert_eq!(server.counts.get("/"), 0, "nothing was sent");

    let run = support::run_scenario(&scenario, &[], &["--metrics-listen", "nowhere"]);
    assert_eq!(run.code, 64, "{}", run.stderr);
    assert!(run.stderr.contains("HOST:PORT"), "{}", run.stderr);
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A real Prometheus scrapes the live page of a run with a closed and an
/// open scenario: what it stored ends at the results file's counts, and
/// every client-side panel of the shipped dashboard has data.
#[test]
fn prometheus_scrapes_the_live_page_and_the_dashboards_client_panels_draw() {
    let server = support::start();
    let dir = tempfile::tempdir().unwrap();
    let file = write_scenario(
        dir.path(),
        &format!(
            r#"
name: live-prometheus
targets:
  web: {{ url: "{}" }}
scenarios:
  browse:
    load: {{ users: 2, duration: 8s, wait: 5ms }}
    requests:
      - {{ name: home, http: {{ target: web, path: /slow/5 }} }}
  api:
    load: {{ rate: 40/s, duration: 8s }}
    requests:
      - {{ name: broken, http: {{ target: web, path: /status/500 }}, expect: {{ status: 200 }} }}
"#,
            server.url()
        ),
    );
    let from = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let LiveRun {
        mut child,
        url,
        log,
        ..
    } = LiveRun::start(&file, dir.path());
    let prometheus = support::prometheus::Prometheus::start(&[("redproof", url)], &[]);
    // redproof exits once the final page was scraped: by Prometheus.
    let status = child.wait().unwrap();
    let stderr = log.join().unwrap();
    assert!(status.success(), "{status}\n{stderr}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("results.json")).unwrap())
            .unwrap();
    let api = prometheus.url().trim_start_matches("http://").to_owned();
    let query = |path: &str| -> serde_json::Value {
        let (code, body) = http_get(&api, path).expect("Prometheus answers");
        assert_eq!(code, 200, "{path}\n{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["data"]["result"].clone()
    };

    // The last samples Prometheus stored are the results file's counts.
    for request in ["browse.home", "api.broken"] {
        let q = format!(
            r#"sum(last_over_time(redproof_requests_total{{job="redproof", request="{request}"}}[5m]))"#
        );
        let r = query(&format!("/api/v1/query?query={}", encode(&q)));
        let stored: f64 = r[0]["value"][1].as_str().unwrap().parse().unwrap();
        assert_eq!(
            stored as u64,
            support::total(&results, request),
            "{request}"
        );
    }

    // Every client panel draws a line over the run.
    let to = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let d = support::grafana::dashboard();
    let client: Vec<_> = support::grafana::queries(&d)
        .into_iter()
        .filter(|(_, e)| e.contains("$client_job") && !e.contains("$job"))
        .collect();
    assert!(client.len() >= 6, "{client:?}");
    for (title, expr) in client {
        let q = support::grafana::substitute(
            &expr,
            &[
                ("client_job", "redproof"),
                ("request", "browse.home|api.broken"),
            ],
        );
        let r = query(&format!(
            "/api/v1/query_range?query={}&start={from}&end={to}&step=1",
            encode(&q)
        ));
        let points: Vec<f64> = r
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["values"].as_array().unwrap())
            .filter_map(|v| v[1].as_str()?.parse().ok())
            .filter(|v: &f64| v.is_finite())
            .collect();
        assert!(!points.is_empty(), "{title}: no data for {q}");
        if !title.contains("Late starts") && !title.contains("in flight") {
            assert!(
                points.iter().any(|v| *v > 0.0),
                "{title}: only zeros for {q}"
            );
        }
    }
}
