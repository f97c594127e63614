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
use crate::grpc::proto::revertname::{RevertNameReply, RevertNameRequest, RevertNamesReply};
use crate::grpc::{GrpcInstruments, Method, Side, StreamCall, observe_unary};

pub const REVERT_NAMES: Method = Method {
    service: "revertname.RevertName",
    method: "RevertNames",
    grpc_type: "client_stream",
};

pub const REVERT_EACH: Method = Method {
    service: "revertname.RevertName",
    method: "RevertEach",
    grpc_type: "bidi_stream",
};

pub const REVERT_NAME: Method = Method {
    service: "revertname.RevertName",
    method: "RevertName",
    grpc_type: "unary",
};

/// Settings shared by the gRPC services that send heartbeats.
#[derive(Debug, Clone)]
pub struct GrpcOptions {
    /// Edge's gRPC URL for heartbeats; none are sent when absent.
    pub edge: Option<String>,
    pub heartbeat_every: Duration,
    pub faults: Faults,
    /// Whether reflection answers on `grpc.reflection.v1` as well as
    /// `v1alpha`; without it the service looks like a server from before
    /// the v1 API (grpc-go before 1.57, for example).
    pub reflection_v1: bool,
}

impl Default for GrpcOptions {
    fn default() -> Self {
        Self {
            edge: None,
            heartbeat_every: Duration::from_secs(5),
            faults: Faults::default(),
            reflection_v1: true,
        }
    }
}

struct Service {
    exporter: Arc<Exporter<GrpcInstruments>>,
}

fn reverse(name: &str) -> String {
    name.chars().rev().collect()
}

#[tonic::async_trait]
impl RevertName for Service {
    type RevertEachStream = tokio_stream::wrappers::ReceiverStream<Result<RevertNameReply, Status>>;

    async fn revert_names(
        &self,
        req: Request<tonic::Streaming<RevertNameRequest>>,
    ) -> Result<Response<RevertNamesReply>, Status> {
        let call = StreamCall::start(&self.exporter, REVERT_NAMES);
        let mut input = req.into_inner();
        let mut reverted = Vec::new();
        loop {
            match input.message().await {
                Ok(Some(m)) => {
                    call.received();
                    if m.name.is_empty() {
                        call.finish(tonic::Code::InvalidArgument);
                        return Err(Status::invalid_argument("name must not be empty"));
                    }
                    reverted.push(reverse(&m.name));
                }
                Ok(None) => break,
                Err(st) => {
                    call.finish(st.code());
                    return Err(st);
                }
            }
        }
        call.sent();
        call.finish(tonic::Code::Ok);
        Ok(Response::new(RevertNamesReply {
            count: reverted.len() as u32,
            reverted,
        }))
    }

    async fn revert_each(
        &self,
        req: Request<tonic::Streaming<RevertNameRequest>>,
    ) -> Result<Response<Self::RevertEachStream>, Status> {
        let call = StreamCall::start(&self.exporter, REVERT_EACH);
        let mut input = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let code = loop {
                match input.message().await {
                    Ok(Some(m)) => {
                        call.received();
                        if m.name.is_empty() {
                            let _ = tx
                                .send(Err(Status::invalid_argument("name must not be empty")))
                                .await;
                            break tonic::Code::InvalidArgument;
                        }
                        let reply = RevertNameReply {
                            reverted: reverse(&m.name),
                        };
                        if tx.send(Ok(reply)).await.is_err() {
                            break tonic::Code::Cancelled;
                        }
                        call.sent();
                    }
                    Ok(None) => break tonic::Code::Ok,
                    Err(st) => break st.code(),
                }
            };
            call.finish(code);
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

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
                reverted: reverse(&name),
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
    let router =
        crate::grpc_router(opts.reflection_v1).add_service(RevertNameServer::new(Service {
            exporter: exporter.clone(),
        }));
    crate::serve_grpc_with_metrics(grpc, router, metrics, exporter, shutdown).await
}
