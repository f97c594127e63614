//! Pass/fail criteria on client figures, written the way k6 users expect:
//! `checkout.p95 < 300ms`, `all.errors < 1%`, `search.rps > 50`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::units;

/// What a threshold is about: one request, one of the file's
/// `scenarios:` (all its requests), or the whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    All,
    Request(String),
    Scenario(String),
}

/// The figure a threshold compares.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// A latency percentile, e.g. 95.0 or 99.9.
    Percentile(f64),
    Mean,
    Min,
    Max,
    /// Completed requests per second.
    Rps,
    /// Completed requests.
    Count,
    /// Errors, as a ratio of completed requests when the limit is a
    /// percentage, else as a count.
    Errors,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }

    pub fn holds(self, observed: f64, limit: f64) -> bool {
        match self {
            Op::Lt => observed < limit,
            Op::Le => observed <= limit,
            Op::Gt => observed > limit,
            Op::Ge => observed >= limit,
        }
    }
}

/// The limit, in the unit its metric is measured in.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    Micros(f64),
    /// A fraction (1% is 0.01).
    Ratio(f64),
    Number(f64),
}

impl Limit {
    pub fn value(self) -> f64 {
        match self {
            Limit::Micros(v) | Limit::Ratio(v) | Limit::Number(v) => v,
        }
    }
}

/// A parsed threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// As written in the scenario.
    pub text: String,
    pub subject: Subject,
    /// About the server's figures (`NAME.server.METRIC`) rather than the
    /// client's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub server: bool,
    pub metric: Metric,
    pub op: Op,
    pub limit: Limit,
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Parses `NAME.METRIC OP VALUE`; `requests` are the scenario's request
/// names (`scenario.request` inside `scenarios:`) and `scenarios` the
/// names of its `scenarios:`, so a typo is caught before any traffic.
pub fn parse(text: &str, requests: &[&str], scenarios: &[String]) -> Result<Threshold, String> {
    let ops = ["<=", ">=", "<", ">"];
    let (at, op_str) = ops
        .iter()
        .filter_map(|o| text.find(o).map(|i| (i, *o)))
        .min_by_key(|(i, o)| (*i, std::cmp::Reverse(o.len())))
        .ok_or("expected `NAME.METRIC OP VALUE`, e.g. `checkout.p95 < 300ms`")?;
    let op = match op_str {
        "<" => Op::Lt,
        "<=" => Op::Le,
        ">" => Op::Gt,
        _ => Op::Ge,
    };
    let lhs = text[..at].trim();
    let rhs = text[at + op_str.len()..].trim();
    // Names hold at most one `.` (`scenario.request`) and metrics may
    // hold one too (`p99.9`): the longest known name wins.
    let known = |name: &str| {
        name == "all" || requests.contains(&name) || scenarios.iter().any(|s| s == name)
    };
    let (name, metric_str) = lhs
        .match_indices('.')
        .map(|(i, _)| (&lhs[..i], &lhs[i + 1..]))
        .rfind(|(name, _)| known(name))
        .or_else(|| lhs.split_once('.'))
        .ok_or_else(|| {
            format!("expected `NAME.METRIC` before `{op_str}`, e.g. `all.p95`, got `{lhs}`")
        })?;
    let subject = if name == "all" {
        Subject::All
    } else if requests.contains(&name) {
        Subject::Request(name.to_owned())
    } else if scenarios.iter().any(|s| s == name) {
        let first = metric_str.split('.').next().unwrap_or_default();
        let is_metric = matches!(
            first,
            "mean" | "avg" | "min" | "max" | "rps" | "count" | "errors" | "server"
        ) || first.starts_with('p');
        if !is_metric {
            return Err(format!(
                "no request named `{name}.{first}`; expected `all`, a scenario or one of: {}",
                requests.join(", ")
            ));
        }
        Subject::Scenario(name.to_owned())
    } else {
        let scenario = lhs.split_once('.').map_or(lhs, |(s, _)| s);
        if !scenarios.is_empty() && !scenarios.iter().any(|s| s == scenario) {
            return Err(format!(
                "no scenario named `{scenario}`; expected `all` or one of: {}",
                scenarios.join(", ")
            ));
        }
        return Err(format!(
            "no request named `{name}`; expected `all` or one of: {}",
            requests.join(", ")
        ));
    };
    let (server, metric_str) = match metric_str.strip_prefix("server.") {
        Some(m) => (true, m),
        None => (false, metric_str),
    };
    if server && !matches!(subject, Subject::Request(_)) {
        return Err(
            "server figures are per request: write `NAME.server.METRIC`, not `all.server…` or `SCENARIO.server…`".into(),
        );
    }
    let metric = match metric_str {
        "mean" | "avg" => Metric::Mean,
        "min" => Metric::Min,
        "max" => Metric::Max,
        "rps" => Metric::Rps,
        "count" => Metric::Count,
        "errors" => Metric::Errors,
        p if p.starts_with('p') => {
            let q: f64 = p[1..].parse().map_err(|_| unknown_metric(metric_str))?;
            if !(0.0..=100.0).contains(&q) {
                return Err(format!("percentile `{p}` is outside p0..p100"));
            }
            Metric::Percentile(q)
        }
        _ => return Err(unknown_metric(metric_str)),
    };
    if server && matches!(metric, Metric::Min | Metric::Max) {
        return Err(format!(
            "`server.{metric_str}` is not known from server metrics; expected pNN, mean, rps, count or errors"
        ));
    }
    let limit = match metric {
        Metric::Percentile(_) | Metric::Mean | Metric::Min | Metric::Max => {
            let d = units::parse_duration(rhs)?;
            Limit::Micros(d.as_secs_f64() * 1e6)
        }
        Metric::Errors => match rhs.strip_suffix('%') {
            Some(p) => Limit::Ratio(
                p.trim().parse::<f64>().map_err(|_| {
                    format!("expected a percentage such as `1%` or a count, got `{rhs}`")
                })? / 100.0,
            ),
            None => Limit::Number(units::parse_count(rhs)? as f64),
        },
        Metric::Rps => Limit::Number(
            rhs.trim_end_matches("/s")
                .parse()
                .map_err(|_| format!("expected requests per second such as `50`, got `{rhs}`"))?,
        ),
        Metric::Count => Limit::Number(units::parse_count(rhs)? as f64),
    };
    Ok(Threshold {
        text: text.trim().to_owned(),
        subject,
        server,
        metric,
        op,
        limit,
    })
}

fn unknown_metric(m: &str) -> String {
    format!(
        "unknown metric `{m}`; expected p50, p90, p95, p99, p99.9, mean, min, max, rps, count or errors"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        let names = ["proxy", "revert"];
        let t = parse("proxy.p95 < 300ms", &names, &[]).unwrap();
        assert_eq!(t.metric, Metric::Percentile(95.0));
        assert_eq!(t.limit, Limit::Micros(300_000.0));
        let t = parse("all.errors <= 1%", &names, &[]).unwrap();
        assert_eq!((t.op, t.limit), (Op::Le, Limit::Ratio(0.01)));
        let t = parse("revert.rps > 50", &names, &[]).unwrap();
        assert_eq!(
            (t.subject, t.limit),
            (Subject::Request("revert".into()), Limit::Number(50.0))
        );
        let t = parse("all.errors < 5", &names, &[]).unwrap();
        assert_eq!(t.limit, Limit::Number(5.0));
        assert_eq!(
            parse("all.p99.9 < 1s", &names, &[]).unwrap().metric,
            Metric::Percentile(99.9)
        );
        let t = parse("proxy.server.p99 < 500ms", &names, &[]).unwrap();
        assert!(t.server);
        assert_eq!(t.metric, Metric::Percentile(99.0));
        assert!(parse("all.server.p99 < 1s", &names, &[]).is_err());
        assert!(parse("proxy.server.max < 1s", &names, &[]).is_err());
    }

    #[test]
    fn explains_mistakes() {
        let names = ["proxy"];
        assert!(
            parse("prxy.p95 < 1s", &names, &[])
                .unwrap_err()
                .contains("one of: proxy")
        );
        assert!(
            parse("proxy.p95 < 300", &names, &[])
                .unwrap_err()
                .contains("expected a duration")
        );
        assert!(
            parse("proxy.latency < 1s", &names, &[])
                .unwrap_err()
                .contains("unknown metric")
        );
        assert!(
            parse("proxy.p95 300ms", &names, &[])
                .unwrap_err()
                .contains("NAME.METRIC OP VALUE")
        );
    }

    #[test]
    fn names_a_scenario_or_its_requests() {
        let names = ["api.list", "browse.home"];
        let scenarios = ["api".to_owned(), "browse".to_owned()];
        let t = parse("api.list.p99.9 < 1s", &names, &scenarios).unwrap();
        assert_eq!(t.subject, Subject::Request("api.list".into()));
        assert_eq!(t.metric, Metric::Percentile(99.9));
        let t = parse("api.list.server.p95 < 1s", &names, &scenarios).unwrap();
        assert!(t.server);
        let t = parse("browse.errors < 1%", &names, &scenarios).unwrap();
        assert_eq!(t.subject, Subject::Scenario("browse".into()));
        assert!(parse("browse.server.p95 < 1s", &names, &scenarios).is_err());
        let e = parse("apx.list.p95 < 1s", &names, &scenarios).unwrap_err();
        assert!(e.contains("no scenario named `apx`"), "{e}");
        let e = parse("api.lst.p95 < 1s", &names, &scenarios).unwrap_err();
        assert!(e.contains("no request named `api.lst`"), "{e}");
    }

    #[test]
    fn ops() {
        assert!(Op::Lt.holds(1.0, 2.0));
        assert!(!Op::Gt.holds(1.0, 1.0));
        assert!(Op::Ge.holds(1.0, 1.0));
    }
}
