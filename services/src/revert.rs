//! revert-name: reverses names over gRPC (`revertname.RevertName`), and
//! sends heartbeats to edge. gRPC metrics on their own port.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::exporter::Exporter;
use crate::faults::Faults;
use crate::grpc::proto::revertname::revert_name_server::{RevertName, RevertNameServer};
use crate::grpc::proto::revertname::{RevertNameReply, RevertNameRequest};
use crate::grpc::{GrpcInstruments, Method, Side, observe_unary};

pub const REVERT_NAME: Method = Method {
    service: "revertname.RevertName",
    method: "RevertName",
};

/// Settings shared by the gRPC services that send heartbeats.
#[derive(Debug, Clone)]
pub struct GrpcOptions {
    /// Edge's gRPC URL for heartbeats; none are sent when absent.
    pub edge: Option<String>,
    pub heartbeat_every: Duration,
    pub faults: Faults,
}

impl Default for GrpcOptions {
    fn default() -> Self {
        Self {
            edge: None,
            heartbeat_every: Duration::from_secs(5),
            faults: Faults::default(),
        }
    }
}

struct Service {
    exporter: Arc<Exporter<GrpcInstruments>>,
}

#[tonic::async_trait]
impl RevertName for Service {
    async fn revert_name(
        &self,
        req: Request<RevertNameRequest>,
    ) -> Result<Response<RevertNameReply>, Status> {
        observe_unary(&self.exporter, Side::Server, REVERT_NAME, async {
            let name = req.into_inner().name;
            if name.is_empty() {
                return Err(Status::invalid_argument("name must not be empty"));
            }
            Ok(Response::new(RevertNameReply {
                reverted: name.chars().rev().collect(),
            }))
        })
        .await
    }
}

/// The metrics of a gRPC demo service, with its fault timers and (when an
/// edge address is set) its heartbeats started.
pub(crate) fn start_exporter(
    service: &'static str,
    opts: &GrpcOptions,
    shutdown: &CancellationToken,
) -> std::io::Result<Arc<Exporter<GrpcInstruments>>> {
    let exporter = Exporter::<GrpcInstruments>::new(&opts.faults);
    exporter.spawn_fault_timers(shutdown.clone());
    if let Some(edge) = &opts.edge {
        crate::heartbeat::spawn(
            service,
            edge.clone(),
            opts.heartbeat_every,
            exporter.clone(),
            shutdown.clone(),
        )
        .map_err(std::io::Error::other)?;
    }
    Ok(exporter)
}

/// Serves revert-name's gRPC on `grpc` and its metrics on `metrics` until
/// `shutdown`.
pub async fn serve(
    grpc: TcpListener,
    metrics: TcpListener,
    opts: GrpcOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let exporter = start_exporter("revert-name", &opts, &shutdown)?;
    let router = crate::grpc_router().add_service(RevertNameServer::new(Service {
        exporter: exporter.clone(),
    }));
    crate::serve_grpc_with_metrics(grpc, router, metrics, exporter, shutdown).await
}
