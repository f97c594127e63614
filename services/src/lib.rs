//! Demo services for redproof: the systems it is shown and tested against.
//!
//! Each service is a function taking pre-bound listeners, options (with
//! its [`faults::Faults`]) and a shutdown token, so tests and
//! `redproof demo` can run them in-process on ephemeral ports, and the
//! `redproof-services` binary can run them on their usual ports.
//!
//! # Layout
//!
//! - [`faults`]: the instrumentation bugs that can be switched on.
//! - [`exporter`]: metric registries and the `/metrics` text, with the
//!   registry-level faults (workers, resets, frozen endpoint).
//! - [`web`]: HTTP instrumentation (django-prometheus, fastapi
//!   instrumentator, gunicorn statsd) as an axum middleware.
//! - [`statsd`]: gunicorn's metrics as statsd_exporter serves them,
//!   with client_golang's windowed summary.
//! - [`grpc`]: gRPC instrumentation (go-grpc-prometheus) and generated code.
//! - services: [`edge`], [`revert`] (revert-name), [`time_service`]
//!   (time), [`polls`], [`bank`]; [`heartbeat`] is the client the gRPC
//!   services use to report to edge.

pub mod bank;
pub mod edge;
pub mod exporter;
pub mod faults;
pub mod grpc;
pub mod heartbeat;
pub mod polls;
pub mod revert;
pub mod statsd;
pub mod time_service;
pub mod web;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::exporter::{Exporter, Instruments};

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM.
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Serves an axum app until `shutdown`, letting in-flight requests finish.
pub async fn serve_http(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Serves an exporter's text at `path` until `shutdown`.
pub async fn serve_metrics<I: Instruments>(
    listener: TcpListener,
    exporter: Arc<Exporter<I>>,
    path: &str,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_http(listener, metrics_router(path, exporter), shutdown).await
}

/// A router answering `path` with an exporter's text.
pub fn metrics_router<I: Instruments>(path: &str, exporter: Arc<Exporter<I>>) -> Router {
    Router::new()
        .route(path, get(web::metrics_text::<I>))
        .with_state(exporter)
}

/// A tonic router with gRPC reflection already added: `v1alpha`, and `v1`
/// when `v1` is set.
pub fn grpc_router(v1: bool) -> tonic::transport::server::Router {
    let v1 = v1.then(|| {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(grpc::proto::DESCRIPTOR_SET)
            .build_v1()
            .expect("the embedded descriptor set is valid")
    });
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(grpc::proto::DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("the embedded descriptor set is valid");
    tonic::transport::Server::builder()
        .add_service(v1alpha)
        .add_optional_service(v1)
}

/// Serves a gRPC router on `grpc` and its metrics on `metrics` until
/// `shutdown`.
pub async fn serve_grpc_with_metrics(
    grpc: TcpListener,
    router: tonic::transport::server::Router,
    metrics: TcpListener,
    exporter: Arc<Exporter<grpc::GrpcInstruments>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    tokio::try_join!(
        serve_grpc(grpc, router, shutdown.clone()),
        serve_metrics(metrics, exporter, "/metrics", shutdown),
    )?;
    Ok(())
}

/// Serves a tonic router until `shutdown`.
pub async fn serve_grpc(
    listener: TcpListener,
    router: tonic::transport::server::Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // Without TCP_NODELAY a streamed reply that follows a small write waits
    // for the client's delayed ACK (about 40 ms).
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |conn| {
            conn.inspect(|s| {
                let _ = s.set_nodelay(true);
            })
        },
    );
    router
        .serve_with_incoming_shutdown(incoming, async move { shutdown.cancelled().await })
        .await
        .map_err(std::io::Error::other)
}
