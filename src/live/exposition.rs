//! The client's RED figures as a Prometheus text exposition page (format
//! 0.0.4), rendered from the run's cumulative recorder once a second.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use crate::engine::{EngineOutput, PartNow};
use crate::measure::Recorder;
use crate::outcome::{Answer, Outcome};
use crate::scenario::{LoadModel, Scenario};

/// Upper bounds of the latency histogram's buckets, in µs: the default
/// buckets of prometheus_client, go-grpc-prometheus and OpenTelemetry
/// (5 ms … 10 s) together with django-prometheus' longer ones (25 s …
/// 75 s) and finer ones below 5 ms, so every common server bucket bound
/// is also a client bucket bound and `histogram_quantile` interpolates
/// both sides over the same bounds.
pub const BUCKETS_MICROS: [u64; 21] = [
    500, 1_000, 2_500, 5_000, 7_500, 10_000, 25_000, 50_000, 75_000, 100_000, 250_000, 500_000,
    750_000, 1_000_000, 2_500_000, 5_000_000, 7_500_000, 10_000_000, 25_000_000, 50_000_000,
    75_000_000,
];

/// The exposition's content type, as Prometheus asks for the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the page's labels say about each request and part, taken once
/// from the scenario.
#[derive(Debug, Clone)]
pub struct Exposition {
    /// Each request's labels, already escaped: `request="…"` and, with
    /// `scenarios:`, `scenario="…"`.
    request_labels: Vec<String>,
    /// Each part's labels (empty without `scenarios:`) and whether it is
    /// the closed model.
    parts: Vec<(String, bool)>,
}

impl Exposition {
    pub fn new(scenario: &Scenario) -> Self {
        let several = scenario.parts.len() > 1;
        let mut part_of = vec![None; scenario.requests.len()];
        for p in &scenario.parts {
            let steps = p
                .on_start
                .iter()
                .chain(p.entries.iter().flat_map(|e| &e.steps));
            for &i in steps {
                part_of[i].get_or_insert(p.name.as_deref().unwrap_or_default());
            }
        }
        let scenario_label = |name: &str| {
            if several {
                format!("scenario=\"{}\"", escape_label(name))
            } else {
                String::new()
            }
        };
        let request_labels = scenario
            .requests
            .iter()
            .zip(&part_of)
            .map(|(r, part)| {
                let mut l = format!("request=\"{}\"", escape_label(r.name.as_str()));
                let s = scenario_label(part.unwrap_or_default());
                if !s.is_empty() {
                    l.push(',');
                    l.push_str(&s);
                }
                l
            })
            .collect();
        let parts = scenario
            .parts
            .iter()
            .map(|p| {
                (
                    scenario_label(p.name.as_deref().unwrap_or_default()),
                    matches!(p.load.model, LoadModel::Closed { .. }),
                )
            })
            .collect();
        Self {
            request_labels,
            parts,
        }
    }

    /// The page for the figures recorded so far and each part's load now.
    pub fn render(&self, totals: &Recorder, parts: &[PartNow]) -> String {
        let mut out = String::with_capacity(4096);
        self.requests(&mut out, totals);
        self.durations(&mut out, totals);
        self.load(&mut out, parts);
        out
    }

    /// The page for a finished run: its final counts, no users, no
    /// arrivals, nothing in flight.
    pub fn render_final(&self, run: &EngineOutput) -> String {
        let parts: Vec<PartNow> = self
            .parts
            .iter()
            .enumerate()
            .map(|(i, (_, closed))| {
                let schedule = run.parts.get(i).and_then(|p| p.schedule.as_ref());
                PartNow {
                    users: closed.then_some(0),
                    rate: (!closed).then_some(0.0),
                    in_flight: 0,
                    late_starts: schedule.map_or(0, |s| s.late_starts),
                    behind: schedule.map_or(0, |s| s.dropped),
                }
            })
            .collect();
        self.render(&run.totals, &parts)
    }

    fn requests(&self, out: &mut String, totals: &Recorder) {
        header(
            out,
            "redproof_requests_total",
            "counter",
            "Completed requests by request and outcome (HTTP status, gRPC code, check_failed:STATUS or transport error); ok=\"false\" when the outcome did not meet the request's expect.",
        );
        for (labels, stats) in self.request_labels.iter().zip(&totals.requests) {
            for o in &stats.outcomes {
                let _ = writeln!(
                    out,
                    "redproof_requests_total{{{labels},outcome=\"{}\",ok=\"{}\"}} {}",
                    escape_label(&outcome_label(o.outcome)),
                    o.ok,
                    o.histogram.len()
                );
            }
        }
        header(
            out,
            "redproof_requests_unknown_total",
            "counter",
            "Requests cut off at the end of the drain: the server may or may not have handled them.",
        );
        for (labels, stats) in self.request_labels.iter().zip(&totals.requests) {
            let _ = writeln!(
                out,
                "redproof_requests_unknown_total{{{labels}}} {}",
                stats.unknown
            );
        }
    }

    fn durations(&self, out: &mut String, totals: &Recorder) {
        header(
            out,
            "redproof_request_duration_seconds",
            "histogram",
            "Client latency of requests that got a response (transport errors left out), from send (or, in the open model, due time) to last byte.",
        );
        for (labels, stats) in self.request_labels.iter().zip(&totals.requests) {
            let h = stats.response_latency();
            let (buckets, sum_micros) = bucket_counts(&h);
            for (bound, n) in BUCKETS_MICROS.iter().zip(buckets) {
                let _ = writeln!(
                    out,
                    "redproof_request_duration_seconds_bucket{{{labels},le=\"{}\"}} {n}",
                    *bound as f64 / 1e6
                );
            }
            let _ = writeln!(
                out,
                "redproof_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.len()
            );
            let _ = writeln!(
                out,
                "redproof_request_duration_seconds_sum{{{labels}}} {}",
                sum_micros as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "redproof_request_duration_seconds_count{{{labels}}} {}",
                h.len()
            );
        }
    }

    fn load(&self, out: &mut String, parts: &[PartNow]) {
        let labelled = |labels: &str| {
            if labels.is_empty() {
                String::new()
            } else {
                format!("{{{labels}}}")
            }
        };
        let each = |out: &mut String, name: &str, value: &dyn Fn(&PartNow) -> Option<String>| {
            for ((labels, _), p) in self.parts.iter().zip(parts) {
                if let Some(v) = value(p) {
                    let _ = writeln!(out, "{name}{} {v}", labelled(labels));
                }
            }
        };
        if parts.iter().any(|p| p.users.is_some()) {
            header(
                out,
                "redproof_users",
                "gauge",
                "Closed model: users running iterations.",
            );
            each(out, "redproof_users", &|p| p.users.map(|u| u.to_string()));
        }
        if parts.iter().any(|p| p.rate.is_some()) {
            header(
                out,
                "redproof_target_rate",
                "gauge",
                "Open model: the arrival rate the schedule asks for now, per second.",
            );
            each(out, "redproof_target_rate", &|p| {
                p.rate.map(|r| r.to_string())
            });
            header(
                out,
                "redproof_late_starts_total",
                "counter",
                "Open model: iterations started more than 5 ms after their due time.",
            );
            each(out, "redproof_late_starts_total", &|p| {
                p.rate.map(|_| p.late_starts.to_string())
            });
            header(
                out,
                "redproof_arrivals_behind",
                "gauge",
                "Open model: arrivals due that have not started because every in-flight slot is busy; once the run ends, those dropped.",
            );
            each(out, "redproof_arrivals_behind", &|p| {
                p.rate.map(|_| p.behind.to_string())
            });
        }
        header(
            out,
            "redproof_in_flight",
            "gauge",
            "Requests sent and not yet answered.",
        );
        each(out, "redproof_in_flight", &|p| {
            Some(p.in_flight.to_string())
        });
    }
}

/// An outcome as a label value: the HTTP status (`200`), the gRPC code
/// as go-grpc-prometheus writes `grpc_code` (`InvalidArgument`), the
/// transport error as the results file names it (`refused`), or
/// `check_failed:` and the answer.
fn outcome_label(o: Outcome) -> String {
    match o {
        Outcome::Status(s) => s.to_string(),
        Outcome::Grpc(c) => c.go_name().to_owned(),
        Outcome::CheckFailed(Answer::Status(s)) => format!("check_failed:{s}"),
        Outcome::CheckFailed(Answer::Grpc(c)) => format!("check_failed:{}", c.go_name()),
        Outcome::Transport(t) => serde_json::to_value(t)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| t.as_str().to_owned()),
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Cumulative counts at each of [`BUCKETS_MICROS`] and the sum of the
/// values, in µs. Each recorded value stands for its HDR bucket's median
/// (within 0.1% of what was recorded).
fn bucket_counts(h: &Histogram<u64>) -> ([u64; BUCKETS_MICROS.len()], u64) {
    let mut counts = [0; BUCKETS_MICROS.len()];
    let mut sum = 0u64;
    for v in h.iter_recorded() {
        let value = h.median_equivalent(v.value_iterated_to());
        let n = v.count_at_value();
        sum = sum.saturating_add(value.saturating_mul(n));
        let first = BUCKETS_MICROS.partition_point(|b| *b < value);
        if let Some(c) = counts.get_mut(first) {
            *c += n;
        }
    }
    for i in 1..counts.len() {
        counts[i] += counts[i - 1];
    }
    (counts, sum)
}

/// A label value as the text format writes it: `\`, `"` and newlines
/// escaped.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A `# HELP` text: `\` and newlines escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::text::parse;
    use crate::outcome::TransportError;

    fn scenario(text: &str) -> Scenario {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.yaml");
        std::fs::write(&path, text).unwrap();
        crate::scenario::load_file(&path).unwrap()
    }

    fn value(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        parse(page)
            .unwrap()
            .into_iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    const ONE: &str = r#"
name: one
targets: { web: { url: "http://127.0.0.1:1" } }
load: { users: 2, duration: 1s }
requests:
  - { name: home, http: { target: web, path: / } }
  - { name: search, http: { target: web, path: /s } }
"#;

    #[test]
    fn counts_outcomes_and_buckets_per_request() {
        let s = scenario(ONE);
        let e = Exposition::new(&s);
        let mut rec = Recorder::new(2);
        for ms in [1, 3, 3, 40, 900] {
            rec.record(0, Outcome::Status(200), true, Duration::from_millis(ms));
        }
        rec.record(0, Outcome::Status(500), false, Duration::from_millis(20));
        rec.record_error(
            1,
            TransportError::Refused,
            Duration::from_micros(50),
            || "refused".into(),
        );
        rec.record_unknown(1);
        let parts = [PartNow {
            users: Some(2),
            rate: None,
            in_flight: 1,
            late_starts: 0,
            behind: 0,
        }];
        let page = e.render(&rec, &parts);
        let v = |name, labels: &[(&str, &str)]| value(&page, name, labels);
        let total = "redproof_requests_total";
        let ok = [("request", "home"), ("outcome", "200"), ("ok", "true")];
        assert_eq!(v(total, &ok), Some(5.0), "{page}");
        let failed = [("request", "home"), ("outcome", "500"), ("ok", "false")];
        assert_eq!(v(total, &failed), Some(1.0));
        let refused = [
            ("request", "search"),
            ("outcome", "refused"),
            ("ok", "false"),
        ];
        assert_eq!(v(total, &refused), Some(1.0));
        let unknown = "redproof_requests_unknown_total";
        assert_eq!(v(unknown, &[("request", "search")]), Some(1.0));

        // Six responses for home (the 500 too); the refused call has none.
        let bucket = "redproof_request_duration_seconds_bucket";
        let le = |le| v(bucket, &[("request", "home"), ("le", le)]);
        assert_eq!(le("0.001"), Some(1.0));
        assert_eq!(le("0.005"), Some(3.0));
        assert_eq!(le("0.025"), Some(4.0));
        assert_eq!(le("0.05"), Some(5.0));
        assert_eq!(le("1"), Some(6.0));
        assert_eq!(le("+Inf"), Some(6.0));
        let count = "redproof_request_duration_seconds_count";
        assert_eq!(v(count, &[("request", "search")]), Some(0.0));
        let sum = v(
            "redproof_request_duration_seconds_sum",
            &[("request", "home")],
        )
        .unwrap();
        assert!((sum - 0.967).abs() < 0.002, "{sum}");

        assert_eq!(v("redproof_users", &[]), Some(2.0));
        assert_eq!(v("redproof_in_flight", &[]), Some(1.0));
        assert_eq!(v("redproof_target_rate", &[]), None, "closed model only");
        for name in [total, unknown, "redproof_request_duration_seconds"] {
            assert!(page.contains(&format!("# TYPE {name} ")), "{name}");
            assert!(page.contains(&format!("# HELP {name} ")), "{name}");
        }
    }

    #[test]
    fn several_scenarios_are_labelled() {
        let s = scenario(
            r#"
name: two
targets: { web: { url: "http://127.0.0.1:1" } }
scenarios:
  browse:
    load: { users: 3, duration: 1s }
    requests: [{ name: home, http: { target: web, path: / } }]
  api:
    load: { rate: 5/s, duration: 1s }
    requests: [{ name: list, http: { target: web, path: /l } }]
"#,
        );
        let e = Exposition::new(&s);
        let mut rec = Recorder::new(2);
        rec.record(1, Outcome::Status(200), true, Duration::from_millis(2));
        let parts = [
            PartNow {
                users: Some(3),
                ..PartNow::default()
            },
            PartNow {
                rate: Some(5.0),
                late_starts: 4,
                behind: 2,
                ..PartNow::default()
            },
        ];
        let page = e.render(&rec, &parts);
        let v = |name, labels: &[(&str, &str)]| value(&page, name, labels);
        let labels = [
            ("request", "api.list"),
            ("scenario", "api"),
            ("outcome", "200"),
            ("ok", "true"),
        ];
        assert_eq!(v("redproof_requests_total", &labels), Some(1.0), "{page}");
        assert_eq!(v("redproof_users", &[("scenario", "browse")]), Some(3.0));
        assert_eq!(v("redproof_target_rate", &[("scenario", "api")]), Some(5.0));
        assert_eq!(
            v("redproof_late_starts_total", &[("scenario", "api")]),
            Some(4.0)
        );
        assert_eq!(
            v("redproof_late_starts_total", &[("scenario", "browse")]),
            None
        );
        assert_eq!(
            v("redproof_arrivals_behind", &[("scenario", "api")]),
            Some(2.0)
        );
        assert_eq!(
            v("redproof_arrivals_behind", &[("scenario", "browse")]),
            None
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        let mut rec = Recorder::new(1);
        rec.record_check_failed(
            0,
            crate::outcome::Answer::Status(200),
            Duration::from_millis(1),
            || "no".into(),
        );
        let page = Exposition::new(&scenario(ONE)).render(&rec, &[]);
        let labels = [
            ("request", "home"),
            ("outcome", "check_failed:200"),
            ("ok", "false"),
        ];
        assert_eq!(value(&page, "redproof_requests_total", &labels), Some(1.0));
    }
}
