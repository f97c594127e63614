//! edge: the front door of the original system. REST `GET /proxy/{name}/`
//! calls revert-name and time over gRPC and returns both; gRPC
//! `heartbeat.Heartbeat/BeatHeart` receives the others' heartbeats.
//!
//! Web metrics are django-prometheus' at `/prometheus/metrics` on the web
//! port; gRPC server and client metrics are go-grpc-prometheus' at
//! `/metrics` on their own port.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::exporter::Exporter;
use crate::faults::Faults;
use crate::grpc::proto::heartbeat::heartbeat_server::{Heartbeat, HeartbeatServer};
use crate::grpc::proto::heartbeat::{BeatHeartReply, BeatHeartRequest};
use crate::grpc::proto::revertname::RevertNameRequest;
use crate::grpc::proto::revertname::revert_name_client::RevertNameClient;
use crate::grpc::proto::timeservice::WhatTimeIsRequest;
use crate::grpc::proto::timeservice::time_client::TimeClient;
use crate::grpc::{GrpcInstruments, Side, observe_unary};
use crate::web::{self, Django, Views, WebMetrics};

/// Settings of the edge service.
#[derive(Debug, Clone)]
pub struct EdgeOptions {
    /// revert-name's gRPC URL, e.g. `http://127.0.0.1:50052`.
    pub revert_name: String,
    /// time's gRPC URL, e.g. `http://127.0.0.1:50051`.
    pub time: String,
    /// Deadline of each downstream call.
    pub deadline: Duration,
    pub faults: Faults,
}

/// The listeners edge serves on.
pub struct EdgeListeners {
    pub web: TcpListener,
    pub grpc: TcpListener,
    pub grpc_metrics: TcpListener,
}

struct HeartbeatService {
    exporter: Arc<Exporter<GrpcInstruments>>,
    received: Mutex<HashMap<String, u64>>,
}

#[tonic::async_trait]
impl Heartbeat for HeartbeatService {
    async fn beat_heart(
        &self,
        req: tonic::Request<BeatHeartRequest>,
    ) -> Result<tonic::Response<BeatHeartReply>, tonic::Status> {
        observe_unary(
            &self.exporter,
            Side::Server,
            crate::heartbeat::BEAT_HEART,
            async {
                let service = req.into_inner().service;
                let mut r = self.received.lock().unwrap_or_else(|p| p.into_inner());
                let n = r.entry(service).or_default();
                *n += 1;
                Ok(tonic::Response::new(BeatHeartReply { received: *n }))
            },
        )
        .await
    }
}

#[derive(Clone)]
struct Proxy {
    revert: RevertNameClient<Channel>,
    time: TimeClient<Channel>,
    exporter: Arc<Exporter<GrpcInstruments>>,
    deadline: Duration,
}

/// A client call bounded by `deadline`, failing as `DEADLINE_EXCEEDED`
/// the way grpc-go reports an expired deadline.
async fn with_deadline<T>(
    deadline: Duration,
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(deadline, call).await {
        Ok(r) => r,
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "no answer within {deadline:?}"
        ))),
    }
}

async fn proxy(State(p): State<Proxy>, Path(name): Path<String>) -> Response {
    let (mut revert, mut time) = (p.revert.clone(), p.time.clone());
    let reverted = observe_unary(
        &p.exporter,
        Side::Client,
        crate::revert::REVERT_NAME,
        with_deadline(p.deadline, async {
            let mut req = tonic::Request::new(RevertNameRequest { name: name.clone() });
            req.set_timeout(p.deadline);
            revert.revert_name(req).await
        }),
    );
    let now = observe_unary(
        &p.exporter,
        Side::Client,
        crate::time_service::WHAT_TIME_IS,
        with_deadline(p.deadline, async {
            let mut req = tonic::Request::new(WhatTimeIsRequest {});
            req.set_timeout(p.deadline);
            time.what_time_is(req).await
        }),
    );
    match tokio::join!(reverted, now) {
        (Ok(r), Ok(t)) => axum::Json(json!({
            "name": name,
            "reverted": r.into_inner().reverted,
            "time": t.into_inner().time,
        }))
        .into_response(),
        (r, t) => {
            let err = r.err().or(t.err()).expect("one call failed");
            (
                StatusCode::BAD_GATEWAY,
                axum::Json(json!({ "error": format!("downstream call failed: {:?}: {}", err.code(), err.message()) })),
            )
                .into_response()
        }
    }
}

fn channel(url: &str, deadline: Duration) -> std::io::Result<Channel> {
    Ok(Channel::from_shared(url.to_owned())
        .map_err(|e| std::io::Error::other(format!("`{url}`: {e}")))?
        .connect_timeout(deadline)
        .connect_lazy())
}

/// Serves edge until `shutdown`.
pub async fn serve(
    l: EdgeListeners,
    opts: EdgeOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let web_exporter = Exporter::<Django>::new(&opts.faults);
    web_exporter.spawn_fault_timers(shutdown.clone());
    let grpc_exporter = Exporter::<GrpcInstruments>::new(&opts.faults);
    grpc_exporter.spawn_fault_timers(shutdown.clone());

    let state = Proxy {
        revert: RevertNameClient::new(channel(&opts.revert_name, opts.deadline)?),
        time: TimeClient::new(channel(&opts.time, opts.deadline)?),
        exporter: grpc_exporter.clone(),
        deadline: opts.deadline,
    };
    let metrics = Arc::new(WebMetrics {
        exporter: web_exporter.clone(),
        views: Views(vec![("/proxy/{name}/", "proxy")]),
    });
    let app = Router::new()
        .route("/proxy/{name}/", get(proxy))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            web::instrument::<Django>,
        ))
        .merge(crate::metrics_router("/prometheus/metrics", web_exporter));
    let heartbeat = HeartbeatServer::new(HeartbeatService {
        exporter: grpc_exporter.clone(),
        received: Mutex::new(HashMap::new()),
    });
    tokio::try_join!(
        crate::serve_http(l.web, app, shutdown.clone()),
        crate::serve_grpc(
            l.grpc,
            crate::grpc_router(true).add_service(heartbeat),
            shutdown.clone()
        ),
        crate::serve_metrics(l.grpc_metrics, grpc_exporter, "/metrics", shutdown),
    )?;
    Ok(())
}
