//! Running redproof on a configuration and checking its verdicts
//! against what the configuration expects.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use crate::apps::{App, start};
use crate::config::{Config, Disrupt, Expect, Stack};
use crate::install::{installed, repo, runs};
use crate::support::prometheus::Prometheus;
use crate::support::{self, Run, http_get};
use crate::table::{stable, table_row};

/// One configuration runs at a time: the apps, Prometheus and redproof
/// share two cores, and latency checks need them not to queue behind
/// another configuration's load.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The scenario for `c` against `app`, verified through `prometheus`.
fn scenario(c: &Config, app: &App, prometheus: &str) -> String {
    // Long enough for a restarted server to count past what was scraped
    // from the old one, reconnections included.
    let duration = if c.disrupt == Disrupt::RestartUnscraped {
        "10s"
    } else {
        "4s"
    };
    let head = format!(
        "name: conformance\nload: {{ users: {}, wait: {}, duration: {duration}, drain: 5s }}\nmetrics: {{ prometheus: \"{prometheus}\" }}\n",
        c.users, c.wait
    );
    if matches!(c.stack, Stack::GrpcPy | Stack::GrpcGo) {
        let proto = repo().join("proto");
        return format!(
            r#"{head}targets:
  app:
    url: "{url}"
    protos: ["{p}/revert_name.proto", "{p}/time.proto"]
    timeout: 5s
data:
  names: [alice, bob, carol, ""]
requests:
  - name: revert_name
    grpc: {{ target: app, method: revertname.RevertName/RevertName, message: {{ name: "{{{{ pick(names) }}}}" }} }}
    expect: {{ code: [OK, INVALID_ARGUMENT] }}
  - name: what_time_is
    grpc: {{ target: app, method: timeservice.Time/WhatTimeIs }}
verify:
  revert_name: {{ convention: grpc, match: {{ grpc_method: RevertName }} }}
  what_time_is: {{ convention: grpc, match: {{ grpc_method: WhatTimeIs }} }}
"#,
            url = app.url,
            p = proto.display()
        );
    }
    let slash = if c.stack == Stack::Django { "/" } else { "" };
    let verify = |route: &str| match c.stack {
        Stack::Django => format!("{{ convention: django, match: {{ view: {route} }} }}"),
        Stack::Fastapi => {
            format!("{{ convention: fastapi, match: {{ handler: /items/{route} }} }}")
        }
        Stack::Otel => format!("{{ convention: otel, match: {{ http_route: /items/{route} }} }}"),
        Stack::Uwsgi => format!(
            "{{ convention: custom, requests: app_requests_total, status_label: status, duration: app_request_duration_seconds, match: {{ route: {route} }} }}"
        ),
        Stack::GrpcPy | Stack::GrpcGo => unreachable!(),
    };
    format!(
        r#"{head}targets:
  app: {{ url: "{url}", timeout: 5s }}
requests:
  - name: success
    http: {{ target: app, path: /items/ok{slash} }}
  - name: not_found
    http: {{ target: app, path: /items/missing{slash} }}
    expect: {{ status: 404 }}
  - name: exception
    http: {{ target: app, path: /items/boom{slash} }}
    expect: {{ status: 500 }}
verify:
  success: {ok}
  not_found: {missing}
  exception: {boom}
"#,
        url = app.url,
        ok = verify("ok"),
        missing = verify("missing"),
        boom = verify("boom"),
    )
}

/// One verdict of a run's results.
#[derive(Debug)]
struct Verdict {
    warnings: Vec<String>,
    request: Option<String>,
    check: String,
    status: String,
    summary: String,
    diagnosis: String,
}

impl Verdict {
    fn name(&self) -> String {
        match &self.request {
            Some(r) => format!("{r}.{}", self.check),
            None => self.check.clone(),
        }
    }

    fn failed(&self) -> bool {
        self.status == "fail" || self.status == "no_data"
    }
}

fn verdicts(run: &Run) -> Vec<Verdict> {
    run.results()["verification"]["verdicts"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|v| Verdict {
            warnings: v["warnings"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|w| w.as_str().map(str::to_owned))
                .collect(),
            request: v["request"].as_str().map(str::to_owned),
            check: v["check"].as_str().unwrap_or_default().to_owned(),
            status: v["status"].as_str().unwrap_or_default().to_owned(),
            summary: v["summary"].as_str().unwrap_or_default().to_owned(),
            diagnosis: v["diagnosis"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

/// Verdicts one per line: name, status, summary and diagnosis.
fn list(verdicts: &[&Verdict]) -> String {
    verdicts
        .iter()
        .map(|v| {
            format!(
                "  {} {}: {}\n    → {}",
                v.name(),
                v.status,
                v.summary,
                v.diagnosis
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The server's count of `request`, from the results file.
fn server_count(run: &Run, request: &str) -> Option<f64> {
    run.results()["verification"]["server"]
        .as_array()?
        .iter()
        .find(|f| f["request"] == request)?["count"]
        .as_f64()
}

/// Everything needed to understand a failed expectation.
fn context(c: &Config, app: &App, prometheus: &Prometheus, run: &Run) -> String {
    let mut s = format!(
        "configuration: {} · {}\n--- redproof stdout\n{}\n--- redproof stderr\n{}\n--- app log (last 60 lines)\n",
        c.stack.library(),
        c.describe,
        run.stdout,
        run.stderr
    );
    let log = app.log();
    let lines: Vec<&str> = log.lines().collect();
    for l in &lines[lines.len().saturating_sub(60)..] {
        let _ = writeln!(s, "{l}");
    }
    let plog = prometheus.log();
    let _ = writeln!(
        s,
        "--- prometheus log (last 10 lines)\n{}",
        plog.lines()
            .rev()
            .take(10)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    s
}

/// Requests of `name` the server answered with an HTTP status or a gRPC
/// code: what it can have counted.
fn answered(results: &Value, name: &str) -> u64 {
    support::outcomes(results, name)
        .iter()
        .filter(|o| o.0.get("status").is_some() || o.0.get("grpc").is_some())
        .map(|o| o.2)
        .sum()
}

/// The requests of a configuration's scenario.
fn request_names(c: &Config) -> &'static [&'static str] {
    match c.stack {
        Stack::GrpcPy | Stack::GrpcGo => &["revert_name", "what_time_is"],
        _ => &["success", "not_found", "exception"],
    }
}

/// Runs configuration `c` and checks what redproof says about it.
pub(crate) fn conformance(c: Config) {
    if !installed(c.stack) {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut app = start(&c);
    let prometheus = Prometheus::start(&[("app", app.metrics.clone())], &[]);
    let scenario = scenario(&c, &app, &prometheus.url());
    let times = match c.expect {
        Expect::Healthy | Expect::Warned { .. } => runs(),
        Expect::Fault { .. } => 1,
    };
    let mut row = None;
    for i in 1..=times {
        let run = if c.disrupt == Disrupt::None {
            run_redproof(&scenario, &["--quiet", "--threads", "1"])
        } else {
            run_disrupted(&scenario, &mut app, &prometheus, c.disrupt)
        };
        let ctx = || {
            format!(
                "run {i} of {times}\n{}",
                context(&c, &app, &prometheus, &run)
            )
        };
        assert!(run.results.is_some(), "no results file\n{}", ctx());
        let all = verdicts(&run);
        assert!(!all.is_empty(), "no verification verdicts\n{}", ctx());
        let failing: Vec<&Verdict> = all.iter().filter(|v| v.failed()).collect();
        match c.expect {
            Expect::Healthy | Expect::Warned { .. } => {
                assert!(
                    failing.is_empty(),
                    "a healthy configuration failed:\n{}\n{}",
                    list(&failing),
                    ctx()
                );
                assert_eq!(run.code, 0, "{}", ctx());
                for r in request_names(&c) {
                    let client = answered(run.results(), r) as f64;
                    assert!(client > 0.0, "no responses to {r}\n{}", ctx());
                    assert_eq!(
                        server_count(&run, r),
                        Some(client),
                        "{r}: server count differs from the client's\n{}",
                        ctx()
                    );
                }
                row = Some(("pass".to_owned(), "server count = client count".to_owned()));
                if let Expect::Warned { words } = c.expect {
                    let warning = all.iter().flat_map(|v| &v.warnings).find(|w| {
                        let w = w.to_lowercase();
                        words.iter().all(|x| w.contains(&x.to_lowercase()))
                    });
                    let Some(warning) = warning else {
                        panic!(
                            "expected every check to pass with a warning saying {words:?}\n{}",
                            ctx()
                        );
                    };
                    row = Some(("pass, with a warning".to_owned(), stable(warning)));
                }
            }
            Expect::Fault {
                checks,
                words,
                also,
            } => {
                let owner = failing.iter().find(|v| {
                    checks.contains(&v.check.as_str()) && {
                        let text = format!("{} {}", v.summary, v.diagnosis).to_lowercase();
                        words.iter().all(|w| text.contains(&w.to_lowercase()))
                    }
                });
                let Some(owner) = owner else {
                    panic!(
                        "expected {} to fail with a diagnosis saying {words:?}; failing:\n{}\n{}",
                        checks.join(" or "),
                        list(&failing),
                        ctx()
                    );
                };
                let others: Vec<&Verdict> = failing
                    .iter()
                    .copied()
                    .filter(|v| v.check != owner.check && !also.contains(&v.check.as_str()))
                    .collect();
                assert!(
                    others.is_empty(),
                    "one cause must read as one failure (`{}`); also failing:\n{}\n{}",
                    owner.check,
                    list(&others),
                    ctx()
                );
                assert_eq!(run.code, 2, "{}", ctx());
                row = Some((
                    format!(
                        "fail: {}",
                        checks
                            .iter()
                            .map(|c| format!("`{c}`"))
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ),
                    stable(&owner.diagnosis),
                ));
            }
        }
    }
    if let Some((verdict, diagnosis)) = row {
        table_row(&c, &verdict, &diagnosis);
    }
}

/// The redproof under test: `REDPROOF_BIN`, or the one cargo built.
fn redproof_bin() -> PathBuf {
    std::env::var_os("REDPROOF_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_redproof")))
}

/// `redproof run` on `scenario` with `args`, its results in a fresh
/// temporary directory.
fn run_redproof(scenario: &str, args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let file = support::write_scenario(dir.path(), scenario);
    let out = Command::new(redproof_bin())
        .env("NO_COLOR", "1")
        .arg("run")
        .arg(&file)
        .arg("--out")
        .arg(dir.path().join("results.json"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    support::finish(out, dir)
}

/// `redproof run` on `scenario` while the server is restarted or
/// stopped, once Prometheus has scraped 100 of the calls it answered.
fn run_disrupted(scenario: &str, app: &mut App, prometheus: &Prometheus, disrupt: Disrupt) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let file = support::write_scenario(dir.path(), scenario);
    let child = Command::new(redproof_bin())
        .env("NO_COLOR", "1")
        .arg("run")
        .arg(&file)
        .arg("--out")
        .arg(dir.path().join("results.json"))
        .args(["--quiet", "--threads", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let api = prometheus.url();
    let api = api.trim_start_matches("http://");
    // Few calls before an unscraped restart, so that the new process
    // counts past them well before the load ends.
    let calls = if disrupt == Disrupt::RestartUnscraped {
        1.0
    } else {
        100.0
    };
    support::wait_until(
        &format!("Prometheus to scrape {calls} answered calls"),
        Duration::from_secs(30),
        || scraped_calls(api).values().sum::<f64>() >= calls,
    );
    match disrupt {
        Disrupt::Restart => app.restart(),
        Disrupt::RestartUnscraped => {
            let page = app.metrics.trim_start_matches("http://").to_owned();
            let (addr, path) = page.split_at(page.find('/').unwrap());
            // Paused first: the old server's own page then holds at least
            // what any scrape of it stored or will store.
            let _resume = prometheus.pause();
            let before = page_calls(addr, path);
            app.restart();
            // Series the server exports at zero before any call cannot
            // drop.
            support::wait_until(
                "the restarted server to count past every scraped value",
                Duration::from_secs(10),
                || {
                    let now = page_calls(addr, path);
                    before
                        .iter()
                        .all(|(k, v)| *v == 0.0 || now.get(k).is_some_and(|n| n > v))
                },
            );
        }
        Disrupt::Stop => app.kill(),
        Disrupt::None => {}
    }
    support::finish(child.wait_with_output().unwrap(), dir)
}

/// `grpc_server_handled_total` by method and code, as Prometheus last
/// scraped it.
fn scraped_calls(api: &str) -> BTreeMap<(String, String), f64> {
    let Some((200, body)) = http_get(api, "/api/v1/query?query=grpc_server_handled_total") else {
        return BTreeMap::new();
    };
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    let Some(result) = v["data"]["result"].as_array() else {
        return BTreeMap::new();
    };
    result
        .iter()
        .filter_map(|r| {
            let label = |n: &str| r["metric"][n].as_str().unwrap_or_default().to_owned();
            let value = r["value"][1].as_str()?.parse().ok()?;
            Some(((label("grpc_method"), label("grpc_code")), value))
        })
        .collect()
}

/// `grpc_server_handled_total` by method and code, read from the
/// server's own page at `addr` and `path`.
fn page_calls(addr: &str, path: &str) -> BTreeMap<(String, String), f64> {
    let Some((200, body)) = http_get(addr, path) else {
        return BTreeMap::new();
    };
    let label = |labels: &str, name: &str| {
        let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
        let len = labels[start..].find('"')?;
        Some(labels[start..start + len].to_owned())
    };
    body.lines()
        .filter_map(|l| {
            let (labels, value) = l
                .strip_prefix("grpc_server_handled_total{")?
                .split_once("} ")?;
            let key = (label(labels, "grpc_method")?, label(labels, "grpc_code")?);
            Some((key, value.trim().parse().ok()?))
        })
        .collect()
}
