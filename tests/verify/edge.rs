//! The chain of `scenarios/edge.yaml`, verified hop by hop.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::services::{Services, prometheus};
use crate::support::{self, Run};
use crate::{assert_clean, with_commas};

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
        serde_json::from_str(include_str!("../../schema/results.schema.json")).unwrap();
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
