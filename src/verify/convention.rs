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
    /// Seconds per unit of the duration metric's values and bucket
    /// bounds: from the scenario's `unit:`, else from the name's suffix.
    pub duration_unit: f64,
    /// The same request under the other generation of a library's names
    /// (OpenTelemetry's old and stable HTTP conventions), read when these
    /// names find nothing.
    pub fallback: Option<Box<Names>>,
    /// Said in the preflight when the fallback is read instead.
    pub fallback_note: String,
}

/// Seconds per unit of a duration metric, from its name's suffix
/// (`_seconds`, `_milliseconds`, `_microseconds`, `_nanoseconds`, as the
/// Prometheus naming rules and OpenTelemetry's exporter write them).
pub fn unit_of(name: &str) -> Option<f64> {
    let base = name
        .strip_suffix("_bucket")
        .or_else(|| name.strip_suffix("_count"))
        .or_else(|| name.strip_suffix("_sum"))
        .unwrap_or(name);
    [
        ("_seconds", 1.0),
        ("_milliseconds", 1e-3),
        ("_microseconds", 1e-6),
        ("_nanoseconds", 1e-9),
    ]
    .into_iter()
    .find(|(suffix, _)| base.ends_with(suffix))
    .map(|(_, u)| u)
}

/// The name of a unit of `seconds` seconds, for messages.
pub fn unit_name(seconds: f64) -> &'static str {
    let near = |u: f64| (seconds / u - 1.0).abs() < 1e-6;
    if near(1e-3) {
        "milliseconds"
    } else if near(1e-6) {
        "microseconds"
    } else if near(1e-9) {
        "nanoseconds"
    } else if near(1.0) {
        "seconds"
    } else {
        "an unknown unit"
    }
}

/// OpenTelemetry's stable HTTP server metric (`OTEL_SEMCONV_STABILITY_OPT_IN=http`
/// or `http/dup`) and the labels it carries.
const OTEL_STABLE: &str = "http_server_request_duration_seconds";
/// The old (pre-1.0 semantic conventions) metric the Python
/// instrumentations export by default, in milliseconds.
const OTEL_OLD: &str = "http_server_duration_milliseconds";
/// Stable attribute labels and their old names.
const OTEL_LABELS: [(&str, &str); 3] = [
    ("http_route", "http_target"),
    ("http_request_method", "http_method"),
    ("http_response_status_code", "http_status_code"),
];

/// Renames the matchers of one generation of OpenTelemetry labels to the
/// other (`old` picks the direction).
fn otel_matchers(m: &[Matcher], to_old: bool) -> Vec<Matcher> {
    m.iter()
        .map(|x| {
            let renamed = OTEL_LABELS.iter().find_map(|(stable, old)| {
                let (from, to) = if to_old { (stable, old) } else { (old, stable) };
                (x.label == *from).then_some(*to)
            });
            match renamed {
                Some(to) => Matcher::new(to, x.op, &x.value).expect("a valid label"),
                None => x.clone(),
            }
        })
        .collect()
}

/// The names of one generation of OpenTelemetry's HTTP server metric.
fn otel(m: Vec<Matcher>, old: bool) -> Names {
    let (base, status) = if old {
        (OTEL_OLD, "http_status_code")
    } else {
        (OTEL_STABLE, "http_response_status_code")
    };
    Names {
        requests: Selector::new(format!("{base}_count"), m.clone()),
        status: Some(StatusSource::Label(status.into())),
        duration: Some((Selector::new(base, m), DurationKind::Histogram)),
        duration_unit: unit_of(base).unwrap_or(1.0),
        fallback: None,
        fallback_note: String::new(),
    }
}

/// The entry's OpenTelemetry names: the generation its matchers are
/// written in, with the other as the fallback.
fn otel_names(m: &[Matcher]) -> Names {
    let written_old = m
        .iter()
        .any(|x| OTEL_LABELS.iter().any(|(_, old)| x.label == *old));
    let mut primary = otel(m.to_vec(), written_old);
    let fallback = otel(otel_matchers(m, !written_old), !written_old);
    primary.fallback_note = if written_old {
        format!(
            "only OpenTelemetry's stable HTTP names are exported (`{OTEL_STABLE}`, labels http_route, http_request_method, http_response_status_code), not the old `{OTEL_OLD}` the matchers are written for: the service runs with OTEL_SEMCONV_STABILITY_OPT_IN=http; read the stable names with the matchers renamed"
        )
    } else {
        format!(
            "only OpenTelemetry's old HTTP names are exported (`{OTEL_OLD}` in milliseconds, labels http_target, http_method, http_status_code), not `{OTEL_STABLE}`: the instrumentation runs without OTEL_SEMCONV_STABILITY_OPT_IN; read the old names with the matchers renamed. Set OTEL_SEMCONV_STABILITY_OPT_IN=http (or http/dup for both) in the service to export the stable names"
        )
    };
    primary.fallback = Some(Box::new(fallback));
    primary
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
            Convention::Otel
                if e.requests_metric.is_none()
                    && e.status_label.is_none()
                    && e.duration_metric.is_none() =>
            {
                let mut n = otel_names(&m);
                if let Some(u) = e.unit {
                    n.duration_unit = u;
                }
                return n;
            }
            Convention::Otel => (
                format!("{OTEL_STABLE}_count"),
                Some(StatusSource::Label("http_response_status_code".into())),
                Some((OTEL_STABLE.into(), DurationKind::Histogram)),
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
        let duration_unit = e
            .unit
            .or_else(|| duration.as_ref().and_then(|(n, _)| unit_of(n)))
            .unwrap_or(1.0);
        // The statsd bridge has no labels for the view: matchers such as
        // `job` still apply to each family.
        Names {
            requests: Selector::new(requests, m.clone()),
            status,
            duration: duration.map(|(n, k)| (Selector::new(n, m.clone()), k)),
            duration_unit,
            fallback: None,
            fallback_note: String::new(),
        }
    }

    /// Every request selector that may hold the entry's series: these
    /// names' and the fallback's.
    pub fn request_selectors(&self) -> Vec<&Selector> {
        let mut out = vec![&self.requests];
        if let Some(f) = &self.fallback {
            out.push(&f.requests);
        }
        out
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

/// The metric families verification may read for `entries`, as name
/// prefixes (a counter's `_total` and a histogram's `_count` left off, so
/// `_created`, `_bucket` and `_sum` are included): the embedded scraper
/// keeps only these, so a page of a million other series costs no memory.
pub fn family_prefixes(entries: &[VerifyEntry]) -> Vec<String> {
    let mut out = vec!["process_start_time_seconds".to_owned()];
    let base = |metric: &str| {
        metric
            .strip_suffix("_total")
            .or_else(|| metric.strip_suffix("_count"))
            .unwrap_or(metric)
            .to_owned()
    };
    for e in entries {
        let mut names = Some(Names::of(e));
        while let Some(n) = names {
            out.push(base(&n.requests.metric));
            if let Some((d, _)) = &n.duration {
                out.push(d.metric.clone());
            }
            if let Some(StatusSource::MetricSuffix(prefix)) = &n.status {
                out.push(prefix.clone());
            }
            names = n.fallback.map(|b| *b);
        }
    }
    out.retain(|p| !p.is_empty());
    out.sort();
    out.dedup();
    out
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

/// Whether a client status is a success: an HTTP status below 400, or
/// gRPC's OK.
pub fn is_success_key(key: &str) -> bool {
    match key.parse::<u16>() {
        Ok(code) => code < 400,
        Err(_) => grpc_code(key) == Some("OK"),
    }
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
    fn the_scraper_keeps_every_family_the_checks_read() {
        let entries = [
            crate::verify::testing::entry(Convention::Django, &[("view", "v")]),
            crate::verify::testing::entry(Convention::Otel, &[]),
            crate::verify::testing::entry(Convention::Statsd, &[]),
        ];
        let keep = family_prefixes(&entries);
        let kept = |name: &str| keep.iter().any(|p| name.starts_with(p.as_str()));
        for name in [
            "django_http_responses_total_by_status_view_method_total",
            "django_http_responses_total_by_status_view_method_created",
            "django_http_requests_latency_seconds_by_view_method_bucket",
            "http_server_request_duration_seconds_count",
            "http_server_duration_milliseconds_bucket",
            "gunicorn_requests",
            "gunicorn_request_status_500",
            "gunicorn_request_duration_sum",
            "process_start_time_seconds",
        ] {
            assert!(kept(name), "{name} is dropped: {keep:?}");
        }
        assert!(!kept("python_gc_objects_collected_total"), "{keep:?}");
    }

    #[test]
    fn units_come_from_the_name() {
        assert_eq!(unit_of("http_server_duration_milliseconds"), Some(1e-3));
        assert_eq!(unit_of("rpc_latency_microseconds_bucket"), Some(1e-6));
        assert_eq!(
            unit_of("django_http_requests_latency_seconds_by_view_method"),
            None
        );
        assert_eq!(unit_of("http_request_duration_seconds"), Some(1.0));
        assert_eq!(unit_name(1e-3), "milliseconds");
    }

    #[test]
    fn otel_names_fall_back_to_the_other_generation() {
        use crate::scenario::verification::Tolerance;
        let e = VerifyEntry {
            name: "r".into(),
            group: Vec::new(),
            derived: Vec::new(),
            callee: None,
            request: Some(0),
            convention: Convention::Otel,
            side: Side::Server,
            matchers: vec![
                Matcher::new("http_route", MatchOp::Eq, "/polls/{id}").unwrap(),
                Matcher::new("job", MatchOp::Eq, "app").unwrap(),
            ],
            requests_metric: None,
            status_label: None,
            duration_metric: None,
            unit: None,
            tolerance: Tolerance::default(),
            overhead: std::time::Duration::ZERO,
        };
        let n = Names::of(&e);
        assert_eq!(
            n.requests.to_string(),
            "http_server_request_duration_seconds_count{http_route=\"/polls/{id}\",job=\"app\"}"
        );
        assert_eq!(n.duration_unit, 1.0);
        let old = n.fallback.as_deref().unwrap();
        assert_eq!(
            old.requests.to_string(),
            "http_server_duration_milliseconds_count{http_target=\"/polls/{id}\",job=\"app\"}"
        );
        assert_eq!(old.duration_unit, 1e-3);
        assert!(
            n.fallback_note
                .contains("OTEL_SEMCONV_STABILITY_OPT_IN=http")
        );
        // Matchers written for the old names read those first.
        let mut e = e;
        e.matchers[0] = Matcher::new("http_target", MatchOp::Eq, "/polls/{id}").unwrap();
        let n = Names::of(&e);
        assert_eq!(n.requests.metric, "http_server_duration_milliseconds_count");
        assert!(matches!(&n.status, Some(StatusSource::Label(l)) if l == "http_status_code"));
        assert_eq!(
            n.fallback.as_deref().unwrap().requests.metric,
            "http_server_request_duration_seconds_count"
        );
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
