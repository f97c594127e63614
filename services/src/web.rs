//! HTTP instrumentation in the shape of the Python libraries the demo
//! services stand in for:
//!
//! - [`Django`]: django-prometheus (`django_http_…` families, view names);
//! - [`FastApi`]: prometheus-fastapi-instrumentator (`http_requests_total`
//!   with grouped status, `http_request_duration_seconds`);
//! - [`GunicornStatsd`] (in [`crate::statsd`]): gunicorn's statsd metrics
//!   after statsd_exporter's default mapping;
//! - [`Otel`]: OpenTelemetry's HTTP server instrumentation as its
//!   Prometheus exporter shows it.
//!
//! A pair of instrument sets, `(A, B)`, records every request in both, as
//! an app instrumented by two libraries does.
//!
//! [`instrument`] is the axum middleware; it applies the request-level
//! faults (`uncounted-errors`, `unmeasured-delay`, `ms-as-seconds`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::exporter::{CONTENT_TYPE, Exporter, Instruments};
pub use crate::statsd::GunicornStatsd;

/// django-prometheus' default latency buckets.
pub const DJANGO_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 25.0, 50.0, 75.0,
];
/// The semantic conventions' advisory buckets for
/// `http.server.request.duration`.
pub const OTEL_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// prometheus-fastapi-instrumentator's default latency buckets.
pub const FASTAPI_BUCKETS: &[f64] = &[0.1, 0.5, 1.0];

/// Marks a response produced by an unhandled error, with the error's type
/// name, as Django's exception middleware would see it.
#[derive(Debug, Clone)]
pub struct Exception(pub &'static str);

/// One finished request, as the middleware saw it.
pub struct Observation<'a> {
    /// The route template (`/accounts/{account_id}`), if one matched.
    pub route: Option<&'a str>,
    pub method: &'a str,
    pub status: u16,
    /// Already converted by the `ms-as-seconds` fault when active.
    pub seconds: f64,
    pub exception: Option<&'static str>,
}

/// Instruments that record HTTP requests.
pub trait WebInstruments: Instruments {
    fn observe(&self, o: &Observation, views: &Views);
}

/// Maps route templates to Django view names.
#[derive(Debug, Clone, Default)]
pub struct Views(pub Vec<(&'static str, &'static str)>);

impl Views {
    fn name(&self, route: Option<&str>) -> String {
        route
            .and_then(|r| {
                self.0
                    .iter()
                    .find(|(t, _)| *t == r)
                    .map(|(_, v)| (*v).to_owned())
            })
            .unwrap_or_else(|| "<unnamed view>".to_owned())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusViewMethod {
    status: String,
    view: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViewMethod {
    view: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViewLabel {
    view: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    r#type: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn django_histogram() -> Histogram {
    Histogram::new(DJANGO_BUCKETS.iter().copied())
}

fn fastapi_histogram() -> Histogram {
    Histogram::new(FASTAPI_BUCKETS.iter().copied())
}

/// django-prometheus families.
pub struct Django {
    requests_by_method: Family<MethodLabel, Counter>,
    responses_by_status_view_method: Family<StatusViewMethod, Counter>,
    latency_by_view_method: HistogramFamily<ViewMethod>,
    exceptions_by_view: Family<ViewLabel, Counter>,
    exceptions_by_type: Family<TypeLabel, Counter>,
}

impl Instruments for Django {
    fn register(r: &mut Registry) -> Self {
        let d = Django {
            requests_by_method: Family::default(),
            responses_by_status_view_method: Family::default(),
            latency_by_view_method: Family::new_with_constructor(django_histogram),
            exceptions_by_view: Family::default(),
            exceptions_by_type: Family::default(),
        };
        r.register(
            "django_http_requests_total_by_method",
            "Count of requests by method",
            d.requests_by_method.clone(),
        );
        r.register(
            "django_http_responses_total_by_status_view_method",
            "Count of responses by status, view, method",
            d.responses_by_status_view_method.clone(),
        );
        r.register(
            "django_http_requests_latency_seconds_by_view_method",
            "Histogram of request processing time labelled by view",
            d.latency_by_view_method.clone(),
        );
        r.register(
            "django_http_exceptions_total_by_view",
            "Count of exceptions by view",
            d.exceptions_by_view.clone(),
        );
        r.register(
            "django_http_exceptions_total_by_type",
            "Count of exceptions by object type",
            d.exceptions_by_type.clone(),
        );
        d
    }
}

impl WebInstruments for Django {
    fn observe(&self, o: &Observation, views: &Views) {
        let view = views.name(o.route);
        let method = o.method.to_owned();
        self.requests_by_method
            .get_or_create(&MethodLabel {
                method: method.clone(),
            })
            .inc();
        self.responses_by_status_view_method
            .get_or_create(&StatusViewMethod {
                status: o.status.to_string(),
                view: view.clone(),
                method: method.clone(),
            })
            .inc();
        self.latency_by_view_method
            .get_or_create(&ViewMethod {
                view: view.clone(),
                method,
            })
            .observe(o.seconds);
        if let Some(kind) = o.exception {
            self.exceptions_by_view
                .get_or_create(&ViewLabel { view })
                .inc();
            self.exceptions_by_type
                .get_or_create(&TypeLabel {
                    r#type: kind.to_owned(),
                })
                .inc();
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandlerMethodStatus {
    handler: String,
    method: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandlerMethod {
    handler: String,
    method: String,
}

/// prometheus-fastapi-instrumentator families (default settings: status
/// codes grouped as `2xx`, untemplated routes as `none`).
pub struct FastApi {
    requests: Family<HandlerMethodStatus, Counter>,
    duration: HistogramFamily<HandlerMethod>,
}

impl Instruments for FastApi {
    fn register(r: &mut Registry) -> Self {
        let f = FastApi {
            requests: Family::default(),
            duration: Family::new_with_constructor(fastapi_histogram),
        };
        r.register(
            "http_requests",
            "Total number of requests by method, status and handler",
            f.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "Latency with only few buckets by handler. Made to be only used if aggregation by handler is important",
            f.duration.clone(),
        );
        f
    }
}

impl WebInstruments for FastApi {
    fn observe(&self, o: &Observation, _views: &Views) {
        let handler = o.route.unwrap_or("none").to_owned();
        self.requests
            .get_or_create(&HandlerMethodStatus {
                handler: handler.clone(),
                method: o.method.to_owned(),
                status: format!("{}xx", o.status / 100),
            })
            .inc();
        self.duration
            .get_or_create(&HandlerMethod {
                handler,
                method: o.method.to_owned(),
            })
            .observe(o.seconds);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OtelAttributes {
    http_request_method: String,
    http_response_status_code: String,
    http_route: String,
    /// The status code of a 5xx, empty otherwise (an empty label is no
    /// label to Prometheus).
    error_type: String,
    url_scheme: String,
    network_protocol_version: String,
    otel_scope_name: String,
    otel_scope_version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OtelOldAttributes {
    http_method: String,
    http_status_code: String,
    /// The route template, as the instrumentation puts it in metrics.
    http_target: String,
    http_scheme: String,
    http_flavor: String,
    otel_scope_name: String,
    otel_scope_version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetInfo {
    service_name: String,
    telemetry_sdk_language: String,
    telemetry_sdk_name: String,
    telemetry_sdk_version: String,
}

/// The OpenTelemetry SDK's default explicit buckets, used by the old
/// `http.server.duration` histogram (milliseconds).
pub const OTEL_OLD_BUCKETS: &[f64] = &[
    0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0,
    10000.0,
];

/// Which of OpenTelemetry's HTTP metric names are exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtelSemconv {
    /// `http_server_request_duration_seconds` (`OTEL_SEMCONV_STABILITY_OPT_IN=http`).
    Stable,
    /// `http_server_duration_milliseconds`: the instrumentations' default
    /// without the opt-in.
    Old,
    /// Both (`http/dup`).
    Both,
}

impl OtelSemconv {
    /// From `OTEL_SEMCONV_STABILITY_OPT_IN` as the Python instrumentations
    /// read it (`http`, `http/dup`, anything else: the old names). Unset,
    /// the demo exports the stable names, unlike the libraries, so its
    /// scenarios read the names of the current conventions.
    pub fn from_env() -> Self {
        Self::parse(
            std::env::var("OTEL_SEMCONV_STABILITY_OPT_IN")
                .ok()
                .as_deref(),
        )
    }

    pub fn parse(v: Option<&str>) -> Self {
        let Some(v) = v else {
            return OtelSemconv::Stable;
        };
        let opts: Vec<&str> = v.split(',').map(str::trim).collect();
        if opts.contains(&"http/dup") {
            OtelSemconv::Both
        } else if opts.contains(&"http") {
            OtelSemconv::Stable
        } else {
            OtelSemconv::Old
        }
    }
}

const OTEL_SCOPE: &str = "opentelemetry.instrumentation.django";
const OTEL_VERSION: &str = "0.48b0";

/// OpenTelemetry's Django instrumentation as its Prometheus exporter
/// shows it: `http.server.request.duration` (seconds) and, without the
/// opt-in, the old `http.server.duration` (milliseconds). Dots become
/// underscores, the unit a suffix, the instrumentation scope labels, and
/// the resource a `target_info` gauge. Each histogram's `_count` is the
/// request counter; there are no counters and no `_created`.
pub struct Otel {
    semconv: OtelSemconv,
    duration: HistogramFamily<OtelAttributes>,
    old_duration: HistogramFamily<OtelOldAttributes>,
}

impl Instruments for Otel {
    fn register(r: &mut Registry) -> Self {
        Otel::with_semconv(r, OtelSemconv::from_env())
    }
}

impl Otel {
    /// Registers the families of `semconv`'s names.
    pub fn with_semconv(r: &mut Registry, semconv: OtelSemconv) -> Self {
        let o = Otel {
            semconv,
            duration: Family::new_with_constructor(|| Histogram::new(OTEL_BUCKETS.iter().copied())),
            old_duration: Family::new_with_constructor(|| {
                Histogram::new(OTEL_OLD_BUCKETS.iter().copied())
            }),
        };
        if o.semconv != OtelSemconv::Old {
            r.register(
                "http_server_request_duration_seconds",
                "Duration of HTTP server requests.",
                o.duration.clone(),
            );
        }
        if o.semconv != OtelSemconv::Stable {
            r.register(
                "http_server_duration_milliseconds",
                "Duration of HTTP server requests.",
                o.old_duration.clone(),
            );
        }
        let info: Family<TargetInfo, Gauge> = Family::default();
        info.get_or_create(&TargetInfo {
            service_name: "polls".into(),
            telemetry_sdk_language: "python".into(),
            telemetry_sdk_name: "opentelemetry".into(),
            telemetry_sdk_version: "1.27.0".into(),
        })
        .set(1);
        r.register("target_info", "Target metadata", info);
        o
    }
}

impl WebInstruments for Otel {
    fn observe(&self, o: &Observation, _views: &Views) {
        let route = o.route.unwrap_or_default().to_owned();
        if self.semconv != OtelSemconv::Old {
            // error.type: the exception's type, else the 5xx status.
            let error_type = match (o.status >= 500, o.exception) {
                (false, _) => String::new(),
                (true, Some(e)) => e.to_owned(),
                (true, None) => o.status.to_string(),
            };
            self.duration
                .get_or_create(&OtelAttributes {
                    http_request_method: o.method.to_owned(),
                    http_response_status_code: o.status.to_string(),
                    http_route: route.clone(),
                    error_type,
                    url_scheme: "http".into(),
                    network_protocol_version: "1.1".into(),
                    otel_scope_name: OTEL_SCOPE.to_owned(),
                    otel_scope_version: OTEL_VERSION.to_owned(),
                })
                .observe(o.seconds);
        }
        if self.semconv != OtelSemconv::Stable {
            self.old_duration
                .get_or_create(&OtelOldAttributes {
                    http_method: o.method.to_owned(),
                    http_status_code: o.status.to_string(),
                    http_target: route,
                    http_scheme: "http".into(),
                    http_flavor: "1.1".into(),
                    otel_scope_name: OTEL_SCOPE.to_owned(),
                    otel_scope_version: OTEL_VERSION.to_owned(),
                })
                .observe(o.seconds * 1000.0);
        }
    }
}

impl<A: Instruments, B: Instruments> Instruments for (A, B) {
    fn register(r: &mut Registry) -> Self {
        (A::register(r), B::register(r))
    }
}

impl<A: WebInstruments, B: WebInstruments> WebInstruments for (A, B) {
    fn observe(&self, o: &Observation, views: &Views) {
        self.0.observe(o, views);
        self.1.observe(o, views);
    }
}

/// Middleware recording into gunicorn's statsd metrics: every response,
/// timed around the handler only (gunicorn does not see the listen queue
/// either), unaffected by the app's own instrumentation bugs.
pub async fn gunicorn_statsd(
    State(g): State<Arc<GunicornStatsd>>,
    req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let resp = next.run(req).await;
    g.observe(resp.status().as_u16(), start.elapsed().as_secs_f64());
    resp
}

/// State of the instrumentation middleware.
pub struct WebMetrics<I: WebInstruments> {
    pub exporter: Arc<Exporter<I>>,
    pub views: Views,
}

/// The axum middleware: applies `unmeasured-delay` before the timer
/// starts, times the handler, and records unless `uncounted-errors`
/// drops a 5xx.
pub async fn instrument<I: WebInstruments>(
    State(m): State<Arc<WebMetrics<I>>>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let faults = m.exporter.faults().clone();
    if let Some(d) = faults.unmeasured_delay {
        tokio::time::sleep(d).await;
    }
    let start = Instant::now();
    let method = req.method().as_str().to_owned();
    let resp = next.run(req).await;
    let elapsed: Duration = start.elapsed();
    let status = resp.status().as_u16();
    if !(faults.uncounted_errors && status >= 500) {
        m.exporter.instruments().observe(
            &Observation {
                route: matched.as_ref().map(|m| m.as_str()),
                method: &method,
                status,
                seconds: faults.observed_seconds(elapsed),
                exception: resp.extensions().get::<Exception>().map(|e| e.0),
            },
            &m.views,
        );
    }
    resp
}

/// The metrics endpoint handler.
pub async fn metrics_text<I: Instruments>(State(e): State<Arc<Exporter<I>>>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
        e.scrape(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otel_semconv_from_the_opt_in() {
        assert_eq!(OtelSemconv::parse(None), OtelSemconv::Stable);
        assert_eq!(OtelSemconv::parse(Some("http")), OtelSemconv::Stable);
        assert_eq!(
            OtelSemconv::parse(Some("database, http/dup")),
            OtelSemconv::Both
        );
        assert_eq!(OtelSemconv::parse(Some("")), OtelSemconv::Old);
    }

    fn exported(semconv: OtelSemconv) -> String {
        let mut r = Registry::default();
        let o = Otel::with_semconv(&mut r, semconv);
        for (status, exception) in [(200, None), (500, Some("ZeroDivisionError"))] {
            o.observe(
                &Observation {
                    route: Some("/polls/{id}/"),
                    method: "GET",
                    status,
                    seconds: 0.02,
                    exception,
                },
                &Views::default(),
            );
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        text
    }

    #[test]
    fn otel_old_names_are_in_milliseconds_with_old_labels() {
        let old = exported(OtelSemconv::Old);
        assert!(
            !old.contains("http_server_request_duration_seconds"),
            "{old}"
        );
        let count = old
            .lines()
            .find(|l| {
                l.starts_with("http_server_duration_milliseconds_count{")
                    && l.contains("http_status_code=\"200\"")
            })
            .unwrap_or_else(|| panic!("{old}"));
        assert!(count.contains("http_method=\"GET\""), "{count}");
        assert!(count.contains("http_target=\"/polls/{id}/\""), "{count}");
        assert!(
            old.lines()
                .any(|l| l.starts_with("http_server_duration_milliseconds_sum{")
                    && l.ends_with(" 20.0")),
            "{old}"
        );
        assert!(old.contains("target_info{"), "{old}");

        let stable = exported(OtelSemconv::Stable);
        assert!(
            !stable.contains("http_server_duration_milliseconds"),
            "{stable}"
        );
        assert!(
            stable.contains("error_type=\"ZeroDivisionError\""),
            "{stable}"
        );
        let both = exported(OtelSemconv::Both);
        assert!(
            both.contains("http_server_duration_milliseconds_count")
                && both.contains("http_server_request_duration_seconds_count"),
            "{both}"
        );
    }
}
