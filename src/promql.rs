//! Series selectors (`metric{label="value"}`) as redproof builds them,
//! rendered as PromQL for Prometheus and matched directly by the embedded
//! scraper, and syntax checks of user-written PromQL.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A series' labels, without `__name__`.
pub type Labels = BTreeMap<String, String>;

/// How a label matcher compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchOp {
    #[serde(rename = "=")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
    #[serde(rename = "=~")]
    Re,
    #[serde(rename = "!~")]
    NotRe,
}

impl MatchOp {
    fn as_str(self) -> &'static str {
        match self {
            MatchOp::Eq => "=",
            MatchOp::Ne => "!=",
            MatchOp::Re => "=~",
            MatchOp::NotRe => "!~",
        }
    }
}

/// One label matcher. Regular expressions are anchored, as in PromQL.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub label: String,
    pub op: MatchOp,
    pub value: String,
    regex: Option<regex::Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, o: &Self) -> bool {
        self.label == o.label && self.op == o.op && self.value == o.value
    }
}

impl Matcher {
    pub fn new(label: &str, op: MatchOp, value: &str) -> Result<Self, String> {
        if !is_label_name(label) {
            return Err(format!(
                "`{label}` is not a valid label name (letters, digits and `_`, not starting with a digit)"
            ));
        }
        let regex = match op {
            MatchOp::Re | MatchOp::NotRe => Some(
                regex::Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| format!("`{value}` is not a valid regular expression: {e}"))?,
            ),
            _ => None,
        };
        Ok(Self {
            label: label.to_owned(),
            op,
            value: value.to_owned(),
            regex,
        })
    }

    /// `value` as written in a scenario: `=~re`, `!~re`, `!=v` or a plain
    /// value for equality.
    pub fn parse(label: &str, written: &str) -> Result<Self, String> {
        let (op, v) = if let Some(v) = written.strip_prefix("=~") {
            (MatchOp::Re, v)
        } else if let Some(v) = written.strip_prefix("!~") {
            (MatchOp::NotRe, v)
        } else if let Some(v) = written.strip_prefix("!=") {
            (MatchOp::Ne, v)
        } else {
            (MatchOp::Eq, written)
        };
        Self::new(label, op, v)
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.matches_value(labels.get(&self.label).map_or("", String::as_str))
    }

    pub fn matches_value(&self, v: &str) -> bool {
        match self.op {
            MatchOp::Eq => v == self.value,
            MatchOp::Ne => v != self.value,
            MatchOp::Re => self.regex.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::NotRe => !self.regex.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}\"{}\"",
            self.label,
            self.op.as_str(),
            escape(&self.value)
        )
    }
}

/// A metric name with label matchers.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    pub metric: String,
    pub matchers: Vec<Matcher>,
}

impl Selector {
    pub fn new(metric: impl Into<String>, matchers: Vec<Matcher>) -> Self {
        Self {
            metric: metric.into(),
            matchers,
        }
    }

    /// The same matchers on another metric.
    pub fn with_metric(&self, metric: impl Into<String>) -> Self {
        Self::new(metric, self.matchers.clone())
    }

    /// The same metric and matchers plus one more.
    pub fn and(&self, m: Matcher) -> Self {
        let mut s = self.clone();
        s.matchers.push(m);
        s
    }

    /// Matches a series by name and labels; a `__name__` matcher applies
    /// to the name, and an empty `metric` matches any name.
    pub fn matches(&self, name: &str, labels: &Labels) -> bool {
        (self.metric.is_empty() || name == self.metric)
            && self.matchers.iter().all(|m| {
                if m.label == "__name__" {
                    m.matches_value(name)
                } else {
                    m.matches(labels)
                }
            })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.metric)?;
        if !self.matchers.is_empty() {
            let parts: Vec<String> = self.matchers.iter().map(ToString::to_string).collect();
            write!(f, "{{{}}}", parts.join(","))?;
        }
        Ok(())
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Checks PromQL syntax without a Prometheus.
pub fn check_syntax(expr: &str) -> Result<(), String> {
    promql_parser::parser::parse(expr)
        .map(|_| ())
        .map_err(|e| e.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn renders_promql() {
        let s = Selector::new(
            "http_requests_total",
            vec![
                Matcher::parse("handler", "/accounts").unwrap(),
                Matcher::parse("status", "=~5..").unwrap(),
                Matcher::parse("method", "!=POST").unwrap(),
                Matcher::parse("view", "a\"b").unwrap(),
            ],
        );
        assert_eq!(
            s.to_string(),
            r#"http_requests_total{handler="/accounts",status=~"5..",method!="POST",view="a\"b"}"#
        );
        assert_eq!(Selector::new("up", vec![]).to_string(), "up");
    }

    #[test]
    fn matches_like_prometheus() {
        let s = Selector::new(
            "m",
            vec![
                Matcher::parse("code", "=~5..").unwrap(),
                Matcher::parse("job", "!~test.*").unwrap(),
            ],
        );
        assert!(s.matches("m", &labels(&[("code", "500"), ("job", "web")])));
        assert!(!s.matches("m", &labels(&[("code", "5000"), ("job", "web")])));
        assert!(!s.matches("m", &labels(&[("code", "500"), ("job", "testing")])));
        assert!(!s.matches("n", &labels(&[("code", "500")])));
        // A missing label is the empty string.
        let empty = Selector::new("m", vec![Matcher::parse("x", "").unwrap()]);
        assert!(empty.matches("m", &labels(&[])));
    }

    #[test]
    fn rejects_bad_matchers() {
        assert!(Matcher::parse("1abc", "x").is_err());
        assert!(Matcher::parse("a", "=~(").is_err());
    }

    #[test]
    fn syntax() {
        assert!(check_syntax("sum(rate(http_requests_total{status=~\"5..\"}[1m]))").is_ok());
        let e = check_syntax("sum(rate(x[1m])").unwrap_err();
        assert!(!e.is_empty());
    }
}
