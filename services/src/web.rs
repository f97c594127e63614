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
    otel_scope_name: String,
}

/// OpenTelemetry's `http.server.request.duration` histogram (seconds) as
/// the Prometheus exporter names it: dots become underscores, the unit
/// becomes a `_seconds` suffix, and the instrumentation scope is a label.
/// Its `_count` is the request counter.
pub struct Otel {
    duration: HistogramFamily<OtelAttributes>,
}

impl Instruments for Otel {
    fn register(r: &mut Registry) -> Self {
        let o = Otel {
            duration: Family::new_with_constructor(|| Histogram::new(OTEL_BUCKETS.iter().copied())),
        };
        r.register(
            "http_server_request_duration_seconds",
            "Duration of HTTP server requests.",
            o.duration.clone(),
        );
        o
    }
}

impl WebInstruments for Otel {
    fn observe(&self, o: &Observation, _views: &Views) {
        self.duration
            .get_or_create(&OtelAttributes {
                http_request_method: o.method.to_owned(),
                http_response_status_code: o.status.to_string(),
                http_route: o.route.unwrap_or_default().to_owned(),
                otel_scope_name: "opentelemetry.instrumentation.django".to_owned(),
            })
            .observe(o.seconds);
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
