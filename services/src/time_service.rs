//! time: tells the time over gRPC (`timeservice.Time/WhatTimeIs`), and
//! sends heartbeats to edge. gRPC metrics on their own port.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::exporter::Exporter;
use crate::grpc::proto::timeservice::time_server::{Time, TimeServer};
use crate::grpc::proto::timeservice::{TicksRequest, WhatTimeIsReply, WhatTimeIsRequest};
use crate::grpc::{GrpcInstruments, Method, Side, StreamCall, observe_unary};

pub const TICKS: Method = Method {
    service: "timeservice.Time",
    method: "Ticks",
    grpc_type: "server_stream",
};

fn now_reply() -> WhatTimeIsReply {
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    WhatTimeIsReply {
        time: rfc3339(unix_ms),
        unix_ms,
    }
}
use crate::revert::GrpcOptions;

pub const WHAT_TIME_IS: Method = Method {
    service: "timeservice.Time",
    method: "WhatTimeIs",
    grpc_type: "unary",
};

struct Service {
    exporter: Arc<Exporter<GrpcInstruments>>,
}

/// RFC 3339 in UTC with milliseconds, from a Unix time in milliseconds.
pub fn rfc3339(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let ms = unix_ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[tonic::async_trait]
impl Time for Service {
    type TicksStream = tokio_stream::wrappers::ReceiverStream<Result<WhatTimeIsReply, Status>>;

    async fn ticks(
        &self,
        req: Request<TicksRequest>,
    ) -> Result<Response<Self::TicksStream>, Status> {
        let call = StreamCall::start(&self.exporter, TICKS);
        call.received();
        let r = req.into_inner();
        if r.count > 1000 || r.interval_ms > 10_000 {
            call.finish(tonic::Code::InvalidArgument);
            return Err(Status::invalid_argument(
                "at most 1000 ticks, at most 10000 ms apart",
            ));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let interval = std::time::Duration::from_millis(r.interval_ms.into());
        tokio::spawn(async move {
            let mut code = tonic::Code::Ok;
            for i in 0..r.count {
                if i > 0 && !interval.is_zero() {
                    tokio::time::sleep(interval).await;
                }
                if tx.send(Ok(now_reply())).await.is_err() {
                    code = tonic::Code::Cancelled;
                    break;
                }
                call.sent();
            }
            call.finish(code);
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    async fn what_time_is(
        &self,
        _req: Request<WhatTimeIsRequest>,
    ) -> Result<Response<WhatTimeIsReply>, Status> {
        observe_unary(&self.exporter, Side::Server, WHAT_TIME_IS, async {
            Ok(Response::new(now_reply()))
        })
        .await
    }
}

/// Serves time's gRPC on `grpc` and its metrics on `metrics` until
/// `shutdown`.
pub async fn serve(
    grpc: TcpListener,
    metrics: TcpListener,
    opts: GrpcOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let exporter = crate::revert::start_exporter("time", &opts, &shutdown)?;
    let router = crate::grpc_router(opts.reflection_v1).add_service(TimeServer::new(Service {
        exporter: exporter.clone(),
    }));
    crate::serve_grpc_with_metrics(grpc, router, metrics, exporter, shutdown).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_rfc3339() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::rfc3339(1_795_000_000_123),
            "2026-11-18T11:06:40.123Z"
        );
        assert_eq!(super::rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
