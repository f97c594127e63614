//! `redproof-services`: run the demo services on their usual ports.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use redproof_services::bank::{self, BankOptions};
use redproof_services::edge::{self, EdgeListeners, EdgeOptions};
use redproof_services::faults::{FAULT_HELP, Fault, Faults};
use redproof_services::polls::{self, PollsOptions};
use redproof_services::revert::{self, GrpcOptions};
use redproof_services::time_service;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The demo services redproof is shown and tested against, with real
/// Prometheus instrumentation and switchable instrumentation bugs.
#[derive(Debug, Parser)]
#[command(name = "redproof-services", version)]
struct Cli {
    /// Inject an instrumentation fault (repeatable): workers=N,
    /// uncounted-errors, unmeasured-delay=DUR, ms-as-seconds,
    /// reset-every=DUR, frozen-metrics[=AFTER].
    #[arg(long = "fault", value_name = "NAME[=VALUE]", global = true)]
    faults: Vec<Fault>,

    /// Address to bind on.
    #[arg(long, default_value = "127.0.0.1", global = true)]
    host: std::net::IpAddr,

    #[command(subcommand)]
    service: Service,
}

#[derive(Debug, Subcommand)]
enum Service {
    /// REST /proxy/{name}/ (web 8012), gRPC BeatHeart (50053), gRPC metrics (9995).
    Edge {
        #[arg(long, default_value_t = 8012)]
        web_port: u16,
        #[arg(long, default_value_t = 50053)]
        grpc_port: u16,
        #[arg(long, default_value_t = 9995)]
        metrics_port: u16,
        #[arg(long, default_value = "http://127.0.0.1:50052")]
        revert_name: String,
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        time: String,
    },
    /// gRPC RevertName (50052), metrics (9998).
    RevertName {
        #[arg(long, default_value_t = 50052)]
        grpc_port: u16,
        #[arg(long, default_value_t = 9998)]
        metrics_port: u16,
        /// Edge's gRPC URL for heartbeats ("" for none).
        #[arg(long, default_value = "http://127.0.0.1:50053")]
        edge: String,
        /// Seconds between heartbeats.
        #[arg(long, default_value_t = 5.0)]
        heartbeat_every: f64,
    },
    /// gRPC WhatTimeIs (50051), metrics (9999).
    Time {
        #[arg(long, default_value_t = 50051)]
        grpc_port: u16,
        #[arg(long, default_value_t = 9999)]
        metrics_port: u16,
        #[arg(long, default_value = "http://127.0.0.1:50053")]
        edge: String,
        #[arg(long, default_value_t = 5.0)]
        heartbeat_every: f64,
    },
    /// Django-style polls views (8000), metrics at /prometheus/metrics.
    Polls {
        #[arg(long, default_value_t = 8000)]
        port: u16,
        /// Mean latency of /polls/2xx_success/ in milliseconds.
        #[arg(long, default_value_t = 800)]
        mean_ms: u64,
        /// Standard deviation of that latency in milliseconds.
        #[arg(long, default_value_t = 200)]
        stddev_ms: u64,
    },
    /// Accounts and transactions (8888), FastAPI-style metrics at /metrics.
    Bank {
        #[arg(long, default_value_t = 8888)]
        port: u16,
        /// SQLite file that keeps accounts across restarts (in memory when absent).
        #[arg(long)]
        database: Option<PathBuf>,
    },
    /// Every service on its default port.
    All {
        /// SQLite file for bank (in memory when absent).
        #[arg(long)]
        bank_database: Option<PathBuf>,
    },
}

async fn bind(host: std::net::IpAddr, port: u16, what: &str) -> Result<TcpListener, String> {
    let addr = SocketAddr::new(host, port);
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("{what}: cannot listen on {addr}: {e}"))
}

fn grpc_opts(edge: String, every: f64, faults: &Faults) -> GrpcOptions {
    GrpcOptions {
        edge: (!edge.is_empty()).then_some(edge),
        heartbeat_every: Duration::from_secs_f64(every.max(0.05)),
        faults: faults.clone(),
        ..GrpcOptions::default()
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let faults = Faults::from_flags(&cli.faults);
    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            redproof_services::stop_signal().await;
            shutdown.cancel();
        });
    }
    if !cli.faults.is_empty() {
        let names: Vec<String> = cli.faults.iter().map(ToString::to_string).collect();
        eprintln!("faults: {}", names.join(", "));
    } else {
        eprintln!("faults: none (healthy); available: {FAULT_HELP}");
    }
    match run(cli, faults, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(69)
        }
    }
}

async fn run(cli: Cli, faults: Faults, shutdown: CancellationToken) -> Result<(), String> {
    let h = cli.host;
    let io = |e: std::io::Error| e.to_string();
    match cli.service {
        Service::Edge {
            web_port,
            grpc_port,
            metrics_port,
            revert_name,
            time,
        } => {
            let l = EdgeListeners {
                web: bind(h, web_port, "edge web").await?,
                grpc: bind(h, grpc_port, "edge gRPC").await?,
                grpc_metrics: bind(h, metrics_port, "edge gRPC metrics").await?,
            };
            eprintln!(
                "edge: web http://{h}:{web_port} (metrics /prometheus/metrics), gRPC {h}:{grpc_port}, gRPC metrics http://{h}:{metrics_port}/metrics"
            );
            let opts = EdgeOptions {
                revert_name,
                time,
                deadline: Duration::from_secs(2),
                faults,
            };
            edge::serve(l, opts, shutdown).await.map_err(io)
        }
        Service::RevertName {
            grpc_port,
            metrics_port,
            edge,
            heartbeat_every,
        } => {
            let (g, m) = (
                bind(h, grpc_port, "revert-name gRPC").await?,
                bind(h, metrics_port, "revert-name metrics").await?,
            );
            eprintln!(
                "revert-name: gRPC {h}:{grpc_port}, metrics http://{h}:{metrics_port}/metrics"
            );
            revert::serve(g, m, grpc_opts(edge, heartbeat_every, &faults), shutdown)
                .await
                .map_err(io)
        }
        Service::Time {
            grpc_port,
            metrics_port,
            edge,
            heartbeat_every,
        } => {
            let (g, m) = (
                bind(h, grpc_port, "time gRPC").await?,
                bind(h, metrics_port, "time metrics").await?,
            );
            eprintln!("time: gRPC {h}:{grpc_port}, metrics http://{h}:{metrics_port}/metrics");
            time_service::serve(g, m, grpc_opts(edge, heartbeat_every, &faults), shutdown)
                .await
                .map_err(io)
        }
        Service::Polls {
            port,
            mean_ms,
            stddev_ms,
        } => {
            let l = bind(h, port, "polls").await?;
            eprintln!("polls: http://{h}:{port}/polls/2xx_success/ (metrics /prometheus/metrics)");
            let opts = PollsOptions {
                mean: Duration::from_millis(mean_ms),
                stddev: Duration::from_millis(stddev_ms),
                faults,
            };
            polls::serve(l, opts, shutdown).await.map_err(io)
        }
        Service::Bank { port, database } => {
            let l = bind(h, port, "bank").await?;
            eprintln!("bank: http://{h}:{port}/accounts (metrics /metrics)");
            bank::serve(l, BankOptions { database, faults }, shutdown)
                .await
                .map_err(io)
        }
        Service::All { bank_database } => {
            let edge_l = EdgeListeners {
                web: bind(h, 8012, "edge web").await?,
                grpc: bind(h, 50053, "edge gRPC").await?,
                grpc_metrics: bind(h, 9995, "edge gRPC metrics").await?,
            };
            let revert_l = (
                bind(h, 50052, "revert-name gRPC").await?,
                bind(h, 9998, "revert-name metrics").await?,
            );
            let time_l = (
                bind(h, 50051, "time gRPC").await?,
                bind(h, 9999, "time metrics").await?,
            );
            let polls_l = bind(h, 8000, "polls").await?;
            let bank_l = bind(h, 8888, "bank").await?;
            eprintln!(
                "edge:        web http://{h}:8012/proxy/NAME/ · metrics http://{h}:8012/prometheus/metrics · gRPC {h}:50053 · gRPC metrics http://{h}:9995/metrics"
            );
            eprintln!("revert-name: gRPC {h}:50052 · metrics http://{h}:9998/metrics");
            eprintln!("time:        gRPC {h}:50051 · metrics http://{h}:9999/metrics");
            eprintln!(
                "polls:       http://{h}:8000/polls/2xx_success/ · metrics http://{h}:8000/prometheus/metrics"
            );
            eprintln!("bank:        http://{h}:8888/accounts · metrics http://{h}:8888/metrics");
            let edge_url = format!("http://{h}:50053");
            let r = tokio::try_join!(
                edge::serve(
                    edge_l,
                    EdgeOptions {
                        revert_name: format!("http://{h}:50052"),
                        time: format!("http://{h}:50051"),
                        deadline: Duration::from_secs(2),
                        faults: faults.clone()
                    },
                    shutdown.clone()
                ),
                revert::serve(
                    revert_l.0,
                    revert_l.1,
                    grpc_opts(edge_url.clone(), 5.0, &faults),
                    shutdown.clone()
                ),
                time_service::serve(
                    time_l.0,
                    time_l.1,
                    grpc_opts(edge_url, 5.0, &faults),
                    shutdown.clone()
                ),
                polls::serve(
                    polls_l,
                    PollsOptions {
                        faults: faults.clone(),
                        ..Default::default()
                    },
                    shutdown.clone()
                ),
                bank::serve(
                    bank_l,
                    BankOptions {
                        database: bank_database,
                        faults
                    },
                    shutdown
                ),
            );
            r.map(|_| ()).map_err(io)
        }
    }
}
