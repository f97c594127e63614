//! Metric names and labels of the instrumentation libraries redproof
//! knows, resolved for one `verify:` entry.

use crate::outcome::GrpcCode;
use crate::promql::{MatchOp, Matcher, Selector};
use crate::scenario::verification::{Convention, Side, VerifyEntry};

/// How a status is written in a label value or metric name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusStyle {
    /// `200`, `404`: compared per code.
    Code,
    /// `2xx`: compared per class.
    Class,
    /// gRPC code names, Go (`Unavailable`) or Python (`UNAVAILABLE`).
    Grpc,
}

/// Where the status of a counted request is found.
#[derive(Debug, Clone)]
pub enum StatusSource {
    /// A label of the request counter.
    Label(String),
    /// One counter per status, named `prefix<code>` (statsd_exporter's
    /// `gunicorn_request_status_500`).
    MetricSuffix(String),
}

/// How server latency is exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationKind {
    Histogram,
    Summary,
}

/// The resolved metric names of one entry.
#[derive(Debug, Clone)]
pub struct Names {
    /// The request counter (or a histogram's `_count`) with matchers.
    pub requests: Selector,
    pub status: Option<StatusSource>,
    /// Base name of the duration histogram or summary, with matchers.
    pub duration: Option<(Selector, DurationKind)>,
}

impl Names {
    pub fn of(e: &VerifyEntry) -> Self {
        let m = e.matchers.clone();
        let client = e.side == Side::Client;
        let (requests, status, duration) = match e.convention {
            Convention::Grpc => {
                let side = if client { "client" } else { "server" };
                (
                    format!("grpc_{side}_handled_total"),
                    Some(StatusSource::Label("grpc_code".into())),
                    Some((
                        format!("grpc_{side}_handling_seconds"),
                        DurationKind::Histogram,
                    )),
                )
            }
            Convention::Django => (
                "django_http_responses_total_by_status_view_method_total".into(),
                Some(StatusSource::Label("status".into())),
                Some((
                    "django_http_requests_latency_seconds_by_view_method".into(),
                    DurationKind::Histogram,
                )),
            ),
            Convention::Fastapi => (
                "http_requests_total".into(),
                Some(StatusSource::Label("status".into())),
                Some((
                    "http_request_duration_seconds".into(),
                    DurationKind::Histogram,
                )),
            ),
            Convention::Statsd => (
                "gunicorn_requests".into(),
                Some(StatusSource::MetricSuffix(
                    "gunicorn_request_status_".into(),
                )),
                Some(("gunicorn_request_duration".into(), DurationKind::Summary)),
            ),
            Convention::Otel => (
                "http_server_request_duration_seconds_count".into(),
                Some(StatusSource::Label("http_response_status_code".into())),
                Some((
                    "http_server_request_duration_seconds".into(),
                    DurationKind::Histogram,
                )),
            ),
            Convention::Custom => (String::new(), None, None),
        };
        let requests = e.requests_metric.clone().unwrap_or(requests);
        let status = match &e.status_label {
            Some(l) => Some(StatusSource::Label(l.clone())),
            None if e.convention == Convention::Custom => None,
            None => status,
        };
        let duration = match &e.duration_metric {
            Some(d) => Some((d.clone(), DurationKind::Histogram)),
            None => duration,
        };
        // The statsd bridge has no labels for the view: matchers such as
        // `job` still apply to each family.
        Names {
            requests: Selector::new(requests, m.clone()),
            status,
            duration: duration.map(|(n, k)| (Selector::new(n, m.clone()), k)),
        }
    }

    /// The selector of the per-status counters, when status is in the
    /// metric name.
    pub fn status_metrics(&self) -> Option<Selector> {
        match &self.status {
            Some(StatusSource::MetricSuffix(prefix)) => {
                let mut s = Selector::new("", self.requests.matchers.clone());
                s.matchers.push(
                    Matcher::new("__name__", MatchOp::Re, &format!("{prefix}[0-9]+"))
                        .expect("a fixed pattern"),
                );
                Some(s)
            }
            _ => None,
        }
    }
}

/// gRPC code names in Go's spelling, by number.
/// Normalises a gRPC code (Go `Unavailable`, Python `UNAVAILABLE`, a
/// number, or `CANCELLED`) to Go's spelling.
pub fn grpc_code(s: &str) -> Option<&'static str> {
    GrpcCode::parse(s).map(GrpcCode::go_name)
}

/// The key a status is compared under: `500`, `5xx`, or a gRPC code.
pub fn status_key(value: &str, style: StatusStyle) -> String {
    match style {
        StatusStyle::Code => value.to_owned(),
        StatusStyle::Class => match value.as_bytes().first() {
            Some(d) if d.is_ascii_digit() => format!("{}xx", *d as char),
            _ => value.to_owned(),
        },
        StatusStyle::Grpc => grpc_code(value).map_or_else(|| value.to_owned(), str::to_owned),
    }
}

/// Guesses how status values are written from the values found.
pub fn style_of<'a>(values: impl IntoIterator<Item = &'a str>) -> StatusStyle {
    let mut style = StatusStyle::Code;
    for v in values {
        if v.len() == 3 && v.ends_with("xx") {
            return StatusStyle::Class;
        }
        if v.parse::<u16>().is_err() && grpc_code(v).is_some() {
            style = StatusStyle::Grpc;
        }
    }
    style
}

/// Whether a status key counts as a server error: 5xx, or a gRPC code
/// other than OK and the client's own mistakes.
pub fn is_server_error(key: &str) -> bool {
    if key.starts_with('5') {
        return true;
    }
    matches!(
        key,
        "Unknown"
            | "DeadlineExceeded"
            | "ResourceExhausted"
            | "Aborted"
            | "Unimplemented"
            | "Internal"
            | "Unavailable"
            | "DataLoss"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_spellings_meet() {
        assert_eq!(grpc_code("UNAVAILABLE"), Some("Unavailable"));
        assert_eq!(grpc_code("Unavailable"), Some("Unavailable"));
        assert_eq!(grpc_code("DEADLINE_EXCEEDED"), Some("DeadlineExceeded"));
        assert_eq!(grpc_code("CANCELLED"), Some("Canceled"));
        assert_eq!(grpc_code("14"), Some("Unavailable"));
        assert_eq!(grpc_code("nonsense"), None);
    }

    #[test]
    fn keys_and_styles() {
        assert_eq!(style_of(["200", "404"]), StatusStyle::Code);
        assert_eq!(style_of(["2xx", "5xx"]), StatusStyle::Class);
        assert_eq!(style_of(["OK", "Unavailable"]), StatusStyle::Grpc);
        assert_eq!(status_key("503", StatusStyle::Class), "5xx");
        assert_eq!(status_key("INTERNAL", StatusStyle::Grpc), "Internal");
        assert!(is_server_error("5xx") && is_server_error("502") && !is_server_error("404"));
    }
}
