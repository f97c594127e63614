//! edge, revert-name and time: gRPC metrics in go-grpc-prometheus' shape,
//! heartbeats, proxying, and gRPC faults.

use std::time::Duration;

use redproof_services::edge::{self, EdgeListeners, EdgeOptions};
use redproof_services::faults::Faults;
use redproof_services::grpc::proto::revertname::RevertNameRequest;
use redproof_services::grpc::proto::revertname::revert_name_client::RevertNameClient;
use redproof_services::revert::{self, GrpcOptions};
use redproof_services::time_service;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::exposition::sample;
use crate::{faults, get, listener, wait_until};

struct Grpc {
    edge_web: String,
    edge_metrics: String,
    revert_grpc: String,
    revert_metrics: String,
    shutdown: CancellationToken,
    handles: Vec<JoinHandle<std::io::Result<()>>>,
}

async fn start_grpc(flags: &[&str]) -> Grpc {
    let shutdown = CancellationToken::new();
    let (ew, ew_a) = listener().await;
    let (eg, eg_a) = listener().await;
    let (em, em_a) = listener().await;
    let (rg, rg_a) = listener().await;
    let (rm, rm_a) = listener().await;
    let (tg, tg_a) = listener().await;
    let (tm, _) = listener().await;
    let grpc_opts = GrpcOptions {
        edge: Some(format!("http://{eg_a}")),
        heartbeat_every: Duration::from_millis(100),
        faults: faults(flags),
        ..GrpcOptions::default()
    };
    let handles = vec![
        tokio::spawn(edge::serve(
            EdgeListeners {
                web: ew,
                grpc: eg,
                grpc_metrics: em,
            },
            EdgeOptions {
                revert_name: format!("http://{rg_a}"),
                time: format!("http://{tg_a}"),
                deadline: Duration::from_secs(2),
                faults: faults(flags),
            },
            shutdown.clone(),
        )),
        tokio::spawn(revert::serve(rg, rm, grpc_opts.clone(), shutdown.clone())),
        tokio::spawn(time_service::serve(tg, tm, grpc_opts, shutdown.clone())),
    ];
    Grpc {
        edge_web: format!("http://{ew_a}"),
        edge_metrics: format!("http://{em_a}/metrics"),
        revert_grpc: format!("http://{rg_a}"),
        revert_metrics: format!("http://{rm_a}/metrics"),
        shutdown,
        handles,
    }
}

impl Grpc {
    async fn stop(self) {
        self.shutdown.cancel();
        for h in self.handles {
            tokio::time::timeout(Duration::from_secs(5), h)
                .await
                .expect("shut down in time")
                .unwrap()
                .unwrap();
        }
    }
}

#[tokio::test]
async fn edge_proxies_over_grpc_and_receives_heartbeats() {
    let g = start_grpc(&[]).await;
    let (status, body) = get(&format!("{}/proxy/alice/", g.edge_web)).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["reverted"], "ecila");
    assert!(v["time"].as_str().unwrap().ends_with('Z'));

    let mut client = RevertNameClient::connect(g.revert_grpc.clone())
        .await
        .unwrap();
    let err = client
        .revert_name(RevertNameRequest {
            name: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // revert-name and time each beat every 100 ms.
    let edge_metrics = &g.edge_metrics;
    wait_until(
        "heartbeats from revert-name and time",
        Duration::from_secs(10),
        || async move {
            let (_, em) = get(edge_metrics).await;
            let beats = sample(
                &em,
                "grpc_server_handled_total",
                &[
                    ("grpc_service", "heartbeat.Heartbeat"),
                    ("grpc_method", "BeatHeart"),
                    ("grpc_code", "OK"),
                    ("grpc_type", "unary"),
                ],
            );
            beats.unwrap_or(0.0) >= 2.0
        },
    )
    .await;
    let (_, em) = get(&g.edge_metrics).await;
    assert_eq!(
        sample(
            &em,
            "grpc_client_handled_total",
            &[
                ("grpc_service", "revertname.RevertName"),
                ("grpc_method", "RevertName"),
                ("grpc_code", "OK")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &em,
            "grpc_client_handled_total",
            &[
                ("grpc_service", "timeservice.Time"),
                ("grpc_method", "WhatTimeIs")
            ]
        ),
        Some(1.0)
    );
    let (_, web) = get(&format!("{}/prometheus/metrics", g.edge_web)).await;
    assert_eq!(
        sample(
            &web,
            "django_http_responses_total_by_status_view_method_total",
            &[("view", "proxy"), ("status", "200"), ("method", "GET")]
        ),
        Some(1.0),
        "{web}"
    );
    let (_, rm) = get(&g.revert_metrics).await;
    assert_eq!(
        sample(
            &rm,
            "grpc_server_handled_total",
            &[("grpc_method", "RevertName"), ("grpc_code", "OK")]
        ),
        Some(1.0),
        "{rm}"
    );
    assert_eq!(
        sample(
            &rm,
            "grpc_server_handled_total",
            &[
                ("grpc_method", "RevertName"),
                ("grpc_code", "InvalidArgument")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &rm,
            "grpc_server_started_total",
            &[("grpc_method", "RevertName")]
        ),
        Some(2.0)
    );
    assert!(
        sample(
            &rm,
            "grpc_client_handled_total",
            &[("grpc_method", "BeatHeart"), ("grpc_code", "OK")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        sample(
            &rm,
            "grpc_server_handling_seconds_bucket",
            &[("grpc_method", "RevertName"), ("le", "0.005")]
        )
        .is_some()
    );
    g.stop().await;
}

#[tokio::test]
async fn edge_answers_502_when_a_downstream_is_down() {
    let (ew, ew_a) = listener().await;
    let (eg, _) = listener().await;
    let (em, _) = listener().await;
    // Bound but not listening: connections are refused, and no one else
    // can take the port while the test runs.
    let refusing = tokio::net::TcpSocket::new_v4().unwrap();
    refusing.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let dead = refusing.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let h = tokio::spawn(edge::serve(
        EdgeListeners {
            web: ew,
            grpc: eg,
            grpc_metrics: em,
        },
        EdgeOptions {
            revert_name: format!("http://{dead}"),
            time: format!("http://{dead}"),
            deadline: Duration::from_secs(1),
            faults: Faults::default(),
        },
        shutdown.clone(),
    ));
    let (status, body) = get(&format!("http://{ew_a}/proxy/bob/")).await;
    assert_eq!(status, 502);
    assert!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("Unavailable"),
        "{body}"
    );
    shutdown.cancel();
    h.await.unwrap().unwrap();
}

#[tokio::test]
async fn grpc_uncounted_errors_fault_drops_non_ok_codes() {
    let g = start_grpc(&["uncounted-errors"]).await;
    let mut client = RevertNameClient::connect(g.revert_grpc.clone())
        .await
        .unwrap();
    client
        .revert_name(RevertNameRequest { name: "x".into() })
        .await
        .unwrap();
    client
        .revert_name(RevertNameRequest {
            name: String::new(),
        })
        .await
        .unwrap_err();
    let (_, rm) = get(&g.revert_metrics).await;
    assert_eq!(
        sample(
            &rm,
            "grpc_server_handled_total",
            &[("grpc_method", "RevertName"), ("grpc_code", "OK")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &rm,
            "grpc_server_handled_total",
            &[
                ("grpc_method", "RevertName"),
                ("grpc_code", "InvalidArgument")
            ]
        ),
        None
    );
    assert_eq!(
        sample(
            &rm,
            "grpc_server_started_total",
            &[("grpc_method", "RevertName")]
        ),
        Some(2.0),
        "started is still counted"
    );
    g.stop().await;
}

#[tokio::test]
async fn grpc_servers_serve_reflection() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let g = start_grpc(&[]).await;
    let mut client = ServerReflectionClient::new(
        tonic::transport::Channel::from_shared(g.revert_grpc.clone())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let first = responses.message().await.unwrap().expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = first.message_response else {
        panic!("expected a service list, got {first:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"revertname.RevertName".to_owned()),
        "{names:?}"
    );
    g.stop().await;
}
