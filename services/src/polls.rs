//! polls: the Django polls app of the original system. Three views — a
//! slow success, a 404 and an unhandled exception — with django-prometheus
//! metrics, OpenTelemetry's Django instrumentation (through its Prometheus
//! exporter) and gunicorn's statsd metrics (as statsd_exporter serves
//! them), all at `/prometheus/metrics`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::exporter::Exporter;
use crate::faults::Faults;
use crate::web::{self, Django, Exception, GunicornStatsd, Otel, Views, WebMetrics};

/// Settings of the polls service.
#[derive(Debug, Clone)]
pub struct PollsOptions {
    /// Mean of the success view's normally distributed sleep.
    pub mean: Duration,
    /// Standard deviation of that sleep.
    pub stddev: Duration,
    pub faults: Faults,
}

impl Default for PollsOptions {
    fn default() -> Self {
        Self {
            mean: Duration::from_millis(800),
            stddev: Duration::from_millis(200),
            faults: Faults::default(),
        }
    }
}

/// A standard normal draw (Box–Muller).
fn standard_normal(rng: &mut fastrand::Rng) -> f64 {
    let u1 = rng.f64().max(f64::MIN_POSITIVE);
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Serves polls on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    opts: PollsOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // gunicorn's statsd metrics live in statsd_exporter, one process for
    // all workers, and are served here beside Django's.
    let gunicorn = Arc::new(GunicornStatsd::new(opts.faults.workers.unwrap_or(1)));
    let shared = gunicorn.clone();
    let exporter = Exporter::<(Django, Otel)>::with_shared_text(
        &opts.faults,
        Some(Arc::new(move |out: &mut String| shared.encode(out))),
    );
    exporter.spawn_fault_timers(shutdown.clone());
    let metrics = Arc::new(WebMetrics {
        exporter: exporter.clone(),
        views: Views(vec![
            ("/polls/2xx_success/", "polls:2xx_success"),
            ("/polls/4xx_not_found/", "polls:4xx_not_found"),
            ("/polls/5xx_exception/", "polls:5xx_exception"),
        ]),
    });
    let (mean, sd) = (opts.mean.as_secs_f64(), opts.stddev.as_secs_f64());
    let app = Router::new()
        .route(
            "/polls/2xx_success/",
            get(move || async move {
                let secs = (mean + sd * standard_normal(&mut fastrand::Rng::new())).max(0.0);
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                "Hello, world. You're at the polls index."
            }),
        )
        .route(
            "/polls/4xx_not_found/",
            get(|| async { (StatusCode::NOT_FOUND, "Poll does not exist") }),
        )
        .route("/polls/5xx_exception/", get(exception))
        .layer(axum::middleware::from_fn_with_state(
            gunicorn,
            web::gunicorn_statsd,
        ))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            web::instrument::<(Django, Otel)>,
        ))
        .merge(crate::metrics_router("/prometheus/metrics", exporter));
    crate::serve_http(listener, app, shutdown).await
}

/// A view that raises: Django answers 500 and its exception middleware
/// records the exception type.
async fn exception() -> Response {
    let mut r = (StatusCode::INTERNAL_SERVER_ERROR, "Server Error (500)").into_response();
    r.extensions_mut().insert(Exception("ZeroDivisionError"));
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn normal_draws_have_the_right_shape() {
        let mut rng = fastrand::Rng::with_seed(9);
        let xs: Vec<f64> = (0..20_000)
            .map(|_| super::standard_normal(&mut rng))
            .collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.03, "{mean}");
        assert!((var - 1.0).abs() < 0.05, "{var}");
    }
}
