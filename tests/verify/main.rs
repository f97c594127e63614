//! End-to-end verification: the demo services run in this process on
//! ephemeral loopback ports, a real Prometheus (Debian's package) scrapes
//! them once a second, and `redproof run` must prove healthy services
//! clean and catch each injected fault with the right diagnosis.

#[path = "../support/mod.rs"]
mod support;

mod bank;
mod edge;
mod polls;
mod recheck;

use std::net::SocketAddr;

use support::{Run, responses};

/// The polls mix against `polls`, with a metrics block and extra YAML.
fn polls_scenario(polls: SocketAddr, metrics: &str, duration: &str, extra: &str) -> String {
    format!(
        r#"name: polls-e2e
targets:
  polls: {{ url: "http://{polls}", timeout: 5s }}
load: {{ users: 6, wait: 5ms..20ms, duration: {duration}, drain: 5s }}
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
metrics: {metrics}
verify:
  success: {{ convention: django, match: {{ view: "polls:2xx_success" }} }}
  not_found: {{ convention: django, match: {{ view: "polls:4xx_not_found" }} }}
  exception: {{ convention: django, match: {{ view: "polls:5xx_exception" }} }}
{extra}"#
    )
}

impl Run {
    fn verdicts(&self) -> Vec<(String, String, String)> {
        self.results.as_ref().unwrap()["verification"]["verdicts"]
            .as_array()
            .unwrap_or(&Vec::new())
            .iter()
            .map(|v| {
                let name = match v["request"].as_str() {
                    Some(r) => format!("{r}.{}", v["check"].as_str().unwrap()),
                    None => v["check"].as_str().unwrap().to_owned(),
                };
                (
                    name,
                    v["status"].as_str().unwrap().to_owned(),
                    format!(
                        "{} {}",
                        v["summary"].as_str().unwrap_or_default(),
                        v["diagnosis"].as_str().unwrap_or_default()
                    ),
                )
            })
            .collect()
    }

    fn failing(&self) -> Vec<(String, String, String)> {
        self.verdicts()
            .into_iter()
            .filter(|(_, s, _)| s == "fail" || s == "no_data")
            .collect()
    }

    fn verdict(&self, name: &str) -> (String, String) {
        self.verdicts()
            .into_iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, s, d)| (s, d))
            .unwrap_or_else(|| panic!("no verdict {name}; report:\n{}", self.stdout))
    }

    fn server_count(&self, request: &str) -> f64 {
        let v = self.results.as_ref().unwrap();
        v["verification"]["server"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["request"] == request)
            .and_then(|f| f["count"].as_f64())
            .unwrap_or(-1.0)
    }

    fn client_responses(&self, request: &str) -> f64 {
        responses(self.results(), request) as f64
    }

    /// Calls of a gRPC request that ended with a code.
    fn client_calls(&self, request: &str) -> f64 {
        support::outcomes(self.results(), request)
            .iter()
            .filter(|o| o.0.get("grpc").is_some())
            .map(|o| o.2)
            .sum::<u64>() as f64
    }
}

/// `redproof run` on one engine thread, quiet, with `args`.
fn redproof(scenario: &str, args: &[&str]) -> Run {
    support::run_scenario(
        scenario,
        &[],
        &[&["--quiet", "--threads", "1"], args].concat(),
    )
}

fn assert_clean(run: &Run) {
    assert_eq!(
        run.failing(),
        Vec::<(String, String, String)>::new(),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.verdicts()
            .iter()
            .all(|(_, s, _)| s == "pass" || s == "skipped"),
        "{}",
        run.stdout
    );
}

/// `1234567` as `1,234,567`, as reports write counts.
fn with_commas(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
