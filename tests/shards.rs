//! Shards end to end: one scenario run as several `redproof run --shard`
//! processes starting together against the demo polls service and a
//! test server, their results merged by `redproof merge`, and the
//! merged run verified once against a real Prometheus.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Duration;

use serde_json::Value;
use support::services::{Services, prometheus};
use support::{request, responses, total};

fn redproof() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_redproof"));
    c.env("NO_COLOR", "1").env_remove("JOB_COMPLETION_INDEX");
    c
}

/// A time `secs` from now, as `--start-at` takes it.
fn start_in(secs: u64) -> String {
    (chrono::Utc::now() + Duration::from_secs(secs))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Starts shard `index` of `count` of `scenario`, writing `shard-I.json`
/// in `dir`.
fn spawn_shard(dir: &Path, scenario: &Path, index: u32, count: u32, args: &[&str]) -> Child {
    redproof()
        .arg("run")
        .arg(scenario)
        .args(["--quiet", "--threads", "1"])
        .arg("--shard")
        .arg(format!("{index}/{count}"))
        .arg("--out")
        .arg(shard_file(dir, index))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn shard_file(dir: &Path, index: u32) -> PathBuf {
    dir.join(format!("shard-{index}.json"))
}

fn merge(dir: &Path, files: &[PathBuf], args: &[&str]) -> (Output, Option<Value>) {
    let out_path = dir.join("all.json");
    let _ = std::fs::remove_file(&out_path);
    let out = redproof()
        .arg("merge")
        .args(files)
        .arg("--out")
        .arg(&out_path)
        .args(args)
        .output()
        .unwrap();
    let merged = std::fs::read_to_string(&out_path)
        .ok()
        .map(|t| serde_json::from_str(&t).unwrap());
    (out, merged)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn finish(child: Child) -> Output {
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "a shard failed\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

#[test]
fn three_shards_merge_to_the_servers_counts_and_verify_once() {
    let services = Services::start(&[], false);
    let rows = support::start();
    let prom = prometheus(&[("polls", services.polls_metrics())]);
    let dir = tempfile::tempdir().unwrap();
    let mut csv = "id\n".to_owned();
    for i in 0..6000 {
        csv.push_str(&format!("r{i}\n"));
    }
    std::fs::write(dir.path().join("rows.csv"), csv).unwrap();
    let scenario = support::write_scenario(
        dir.path(),
        &format!(
            r#"name: sharded
targets:
  polls: {{ url: "http://{polls}", timeout: 5s }}
  rows: {{ url: "{rows}" }}
load: {{ users: 7, wait: 5ms..20ms, duration: 3s, drain: 5s }}
data:
  ids: {{ file: rows.csv, draw: unique, exhausted: stop }}
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
  - name: row
    weight: 1
    http: {{ target: rows, path: "/row/{{{{ ids.id }}}}/{{{{ seq() }}}}" }}
metrics: {{ prometheus: "{prom}" }}
verify:
  success: {{ convention: django, match: {{ view: "polls:2xx_success" }} }}
  not_found: {{ convention: django, match: {{ view: "polls:4xx_not_found" }} }}
  exception: {{ convention: django, match: {{ view: "polls:5xx_exception" }} }}
thresholds:
  - all.count >= 100
"#,
            polls = services.polls,
            rows = rows.url(),
            prom = prom.url(),
        ),
    );
    let at = start_in(3);
    let shards: Vec<Child> = (0..3)
        .map(|i| spawn_shard(dir.path(), &scenario, i, 3, &["--start-at", &at]))
        .collect();
    let outputs: Vec<Output> = shards.into_iter().map(finish).collect();
    assert!(
        text(&outputs[0].stdout).contains("closed model, 3 users"),
        "7 users over 3 shards: 3, 2, 2\n{}",
        text(&outputs[0].stdout)
    );
    let files: Vec<PathBuf> = (0..3).map(|i| shard_file(dir.path(), i)).collect();
    let parts: Vec<Value> = files
        .iter()
        .map(|f| serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap())
        .collect();
    for p in &parts {
        assert!(p.get("verification").is_none(), "a shard does not verify");
        let t0 = p["timing"]["t0_unix_ms"].as_u64().unwrap();
        let first = parts[0]["timing"]["t0_unix_ms"].as_u64().unwrap();
        assert!(
            t0.abs_diff(first) < 200,
            "shards start together: {t0} vs {first}"
        );
    }

    let (out, merged) = merge(dir.path(), &files, &["--verify"]);
    let merged = merged.expect("merge writes the merged results");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // Shard files and the merged file are results files like any other.
    let schema: Value =
        serde_json::from_str(include_str!("../schema/results.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for (name, v) in [("shard 0", &parts[0]), ("merged", &merged)] {
        let errors: Vec<String> = validator
            .iter_errors(v)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:#?}");
    }
    assert!(parts[0]["windows"][0]["all"]["histogram"].is_string());
    // The merged counts are the shards' sums, and equal the server's.
    for name in ["success", "not_found", "exception", "row"] {
        let sum: u64 = parts.iter().map(|p| total(p, name)).sum();
        assert_eq!(total(&merged, name), sum, "{name}");
    }
    let server = merged["verification"]["server"].as_array().unwrap();
    for name in ["success", "not_found", "exception"] {
        let counted = server
            .iter()
            .find(|f| f["request"] == name)
            .and_then(|f| f["count"].as_f64())
            .unwrap();
        assert_eq!(counted, responses(&merged, name) as f64, "{name}");
        assert!(request(&merged, name)["unknown"] == 0, "{name}");
    }
    let verdicts = merged["verification"]["verdicts"].as_array().unwrap();
    assert!(
        verdicts
            .iter()
            .all(|v| v["status"] == "pass" || v["status"] == "skipped"),
        "{}",
        text(&out.stdout)
    );
    // Weights 2:1:1:1 hold over the whole run.
    let all: u64 = ["success", "not_found", "exception", "row"]
        .iter()
        .map(|n| total(&merged, n))
        .sum();
    let share = total(&merged, "success") as f64 / all as f64;
    assert!(
        (0.3..0.5).contains(&share),
        "success share {share} of {all}"
    );
    // `unique` rows and `seq()` values were never sent twice, by any shard.
    let paths = rows.counts.paths("/row/");
    assert_eq!(paths.len() as u64, total(&merged, "row"));
    assert!(paths.values().all(|n| *n == 1), "a path was sent twice");
    let mut ids: Vec<&str> = paths.keys().map(|p| p.split('/').nth(2).unwrap()).collect();
    let mut seqs: Vec<&str> = paths.keys().map(|p| p.split('/').nth(3).unwrap()).collect();
    let n = paths.len();
    ids.sort_unstable();
    ids.dedup();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!((ids.len(), seqs.len()), (n, n));
    // The windows align by wall-clock second: about 3 of them, not 9.
    let windows = merged["windows"].as_array().unwrap();
    assert!(
        (3..=5).contains(&windows.len()),
        "{} windows",
        windows.len()
    );
    let window_sum: u64 = windows
        .iter()
        .map(|w| w["all"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(window_sum, all);
    assert_eq!(merged["merged"]["shards"], 3);
    assert!(merged["thresholds"][0]["passed"].as_bool().unwrap());
}

#[test]
fn a_failed_or_foreign_shard_makes_merge_fail() {
    let server = support::start();
    let dir = tempfile::tempdir().unwrap();
    let scenario = support::write_scenario(
        dir.path(),
        &format!(
            "name: small\ntargets: {{ web: {{ url: \"{}\" }} }}\nload: {{ users: 2, iterations: 20 }}\nrequests:\n  - {{ name: ok, http: {{ target: web, path: /ok }} }}\n",
            server.url()
        ),
    );
    finish(spawn_shard(dir.path(), &scenario, 0, 2, &[]));
    // Shard 1 cannot start: its start time has passed. It writes nothing.
    let late = spawn_shard(
        dir.path(),
        &scenario,
        1,
        2,
        &["--start-at", "2020-01-01T00:00:00Z"],
    )
    .wait_with_output()
    .unwrap();
    assert_eq!(late.status.code(), Some(64));
    assert!(text(&late.stderr).contains("--start-at: `2020-01-01T00:00:00Z` passed"));
    assert!(!shard_file(dir.path(), 1).exists());

    let (out, merged) = merge(dir.path(), &[shard_file(dir.path(), 0)], &[]);
    assert_eq!(out.status.code(), Some(64));
    assert!(merged.is_none());
    let err = text(&out.stderr);
    assert!(err.contains("shard 1/2 is missing"), "{err}");

    // A shard of the same file with another load is another scenario.
    finish(spawn_shard(
        dir.path(),
        &scenario,
        1,
        2,
        &["--iterations", "30"],
    ));
    let files = [shard_file(dir.path(), 0), shard_file(dir.path(), 1)];
    let (out, _) = merge(dir.path(), &files, &[]);
    assert_eq!(out.status.code(), Some(64));
    let err = text(&out.stderr);
    assert!(err.contains("comes from another scenario"), "{err}");

    // Shards that ran at different times do not add up to one run: this
    // one starts two seconds from now, long after shard 0 stopped.
    finish(spawn_shard(
        dir.path(),
        &scenario,
        1,
        2,
        &["--start-at", &start_in(2)],
    ));
    let (out, _) = merge(dir.path(), &files, &[]);
    assert_eq!(out.status.code(), Some(64));
    let err = text(&out.stderr);
    assert!(err.contains("windows do not overlap"), "{err}");

    // Started together, the two merge into the scenario's 20 requests.
    let at = start_in(2);
    let both: Vec<Child> = (0..2)
        .map(|i| spawn_shard(dir.path(), &scenario, i, 2, &["--start-at", &at]))
        .collect();
    both.into_iter().for_each(|c| drop(finish(c)));
    let (out, merged) = merge(dir.path(), &files, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(total(&merged.unwrap(), "ok"), 20);
}
