//! The demo services on ephemeral loopback ports, in a thread of the
//! test process, and a real Prometheus scraping them.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use redproof_services::edge::{self, EdgeListeners, EdgeOptions};
use redproof_services::faults::{Fault, Faults};
use redproof_services::polls::{self, PollsOptions};
use redproof_services::revert::{self, GrpcOptions};
use redproof_services::time_service;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::prometheus::Prometheus;

/// Demo services on ephemeral ports, stopped on drop.
pub struct Services {
    pub polls: SocketAddr,
    pub edge_web: SocketAddr,
    pub edge_grpc_metrics: SocketAddr,
    /// revert-name's gRPC and metrics addresses, then time's.
    pub chain: [SocketAddr; 4],
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Services {
    /// polls with the given faults, plus edge, revert-name and time
    /// (healthy) when `grpc` is set.
    pub fn start(faults: &[&str], grpc: bool) -> Self {
        Self::start_with(faults, grpc, &[])
    }

    /// [`Services::start`] with `revert_faults` on revert-name.
    pub fn start_with(faults: &[&str], grpc: bool, revert_faults: &[&str]) -> Self {
        let flags: Vec<Fault> = faults.iter().map(|f| f.parse().unwrap()).collect();
        let faults = Faults::from_flags(&flags);
        let revert_flags: Vec<Fault> = revert_faults.iter().map(|f| f.parse().unwrap()).collect();
        let revert_faults = Faults::from_flags(&revert_flags);
        let shutdown = CancellationToken::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let token = shutdown.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let bind = || async { TcpListener::bind("127.0.0.1:0").await.unwrap() };
                let polls_l = bind().await;
                let polls_addr = polls_l.local_addr().unwrap();
                let opts = PollsOptions {
                    mean: Duration::from_millis(20),
                    stddev: Duration::from_millis(5),
                    faults,
                };
                let mut tasks = tokio::task::JoinSet::new();
                tasks.spawn(polls::serve(polls_l, opts, token.clone()));
                let (mut edge_web, mut edge_metrics) = (polls_addr, polls_addr);
                let mut chain = [polls_addr; 4];
                if grpc {
                    let (rg, rm, tg, tm) = (bind().await, bind().await, bind().await, bind().await);
                    for (slot, l) in chain.iter_mut().zip([&rg, &rm, &tg, &tm]) {
                        *slot = l.local_addr().unwrap();
                    }
                    let l = EdgeListeners {
                        web: bind().await,
                        grpc: bind().await,
                        grpc_metrics: bind().await,
                    };
                    edge_web = l.web.local_addr().unwrap();
                    edge_metrics = l.grpc_metrics.local_addr().unwrap();
                    let edge_grpc = format!("http://{}", l.grpc.local_addr().unwrap());
                    let grpc_opts = || GrpcOptions {
                        edge: Some(edge_grpc.clone()),
                        heartbeat_every: Duration::from_secs(5),
                        faults: Faults::default(),
                        ..GrpcOptions::default()
                    };
                    let eo = EdgeOptions {
                        revert_name: format!("http://{}", rg.local_addr().unwrap()),
                        time: format!("http://{}", tg.local_addr().unwrap()),
                        deadline: Duration::from_secs(2),
                        faults: Faults::default(),
                    };
                    tasks.spawn(edge::serve(l, eo, token.clone()));
                    let revert_opts = GrpcOptions {
                        faults: revert_faults,
                        ..grpc_opts()
                    };
                    tasks.spawn(revert::serve(rg, rm, revert_opts, token.clone()));
                    tasks.spawn(time_service::serve(tg, tm, grpc_opts(), token.clone()));
                }
                tx.send((polls_addr, edge_web, edge_metrics, chain))
                    .unwrap();
                while tasks.join_next().await.is_some() {}
            });
        });
        let (polls, edge_web, edge_grpc_metrics, chain) = rx.recv().unwrap();
        Services {
            polls,
            edge_web,
            edge_grpc_metrics,
            chain,
            shutdown,
            thread: Some(thread),
        }
    }

    pub fn polls_metrics(&self) -> String {
        format!("http://{}/prometheus/metrics", self.polls)
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A Prometheus scraping `targets` (job, metrics URL) every second, with
/// the demo alert rules; killed on drop.
pub fn prometheus(targets: &[(&str, String)]) -> Prometheus {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/rules/demo.yml");
    Prometheus::start(targets, &[&rules])
}
