//! `redproof verify`: a results file verified again after the fact.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::Run;
use crate::support::services::{Services, prometheus};
use crate::{assert_clean, polls_scenario, redproof};

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
        serde_json::from_str(include_str!("../../schema/results.schema.json")).unwrap();
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
