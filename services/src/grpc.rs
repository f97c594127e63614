//! gRPC instrumentation in go-grpc-prometheus' shape (`grpc_server_*` and
//! `grpc_client_*` families, Go spellings of status codes), and the
//! generated protocol code.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tonic::{Code, Status};

use crate::exporter::{Exporter, Instruments};

/// Generated code for `proto/`.
pub mod proto {
    pub mod revertname {
        tonic::include_proto!("revertname");
    }
    pub mod timeservice {
        tonic::include_proto!("timeservice");
    }
    pub mod heartbeat {
        tonic::include_proto!("heartbeat");
    }
    /// Encoded `FileDescriptorSet` of every demo proto, for reflection.
    pub const DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("descriptor");
}

/// Prometheus' default buckets, which go-grpc-prometheus uses.
pub const GRPC_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The name go's `codes.Code.String()` gives a status code.
pub fn go_code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    grpc_type: String,
    grpc_service: String,
    grpc_method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    grpc_type: String,
    grpc_service: String,
    grpc_method: String,
    grpc_code: String,
}

fn grpc_histogram() -> Histogram {
    Histogram::new(GRPC_BUCKETS.iter().copied())
}

/// One side's families (`server` or `client`).
pub struct GrpcFamilies {
    started: Family<MethodLabels, Counter>,
    handled: Family<CodeLabels, Counter>,
    msg_received: Family<MethodLabels, Counter>,
    msg_sent: Family<MethodLabels, Counter>,
    handling: Family<MethodLabels, Histogram, fn() -> Histogram>,
}

impl GrpcFamilies {
    fn register(r: &mut Registry, side: &str) -> Self {
        let f = GrpcFamilies {
            started: Family::default(),
            handled: Family::default(),
            msg_received: Family::default(),
            msg_sent: Family::default(),
            handling: Family::new_with_constructor(grpc_histogram),
        };
        let (who, verb) = if side == "server" {
            ("server", "started on the server")
        } else {
            ("client", "started on the client")
        };
        r.register(
            format!("grpc_{side}_started"),
            format!("Total number of RPCs {verb}"),
            f.started.clone(),
        );
        r.register(
            format!("grpc_{side}_handled"),
            format!(
                "Total number of RPCs completed on the {who}, regardless of success or failure"
            ),
            f.handled.clone(),
        );
        r.register(
            format!("grpc_{side}_msg_received"),
            format!("Total number of RPC stream messages received on the {who}"),
            f.msg_received.clone(),
        );
        r.register(
            format!("grpc_{side}_msg_sent"),
            format!("Total number of gRPC stream messages sent by the {who}"),
            f.msg_sent.clone(),
        );
        let hist = if side == "server" {
            "grpc_server_handling_seconds"
        } else {
            "grpc_client_handling_seconds"
        };
        r.register(
            hist,
            format!("Histogram of response latency (seconds) of gRPC that had been application-level handled by the {who}"),
            f.handling.clone(),
        );
        f
    }
}

/// Server and client families of one process.
pub struct GrpcInstruments {
    pub server: GrpcFamilies,
    pub client: GrpcFamilies,
}

impl Instruments for GrpcInstruments {
    fn register(r: &mut Registry) -> Self {
        Self {
            server: GrpcFamilies::register(r, "server"),
            client: GrpcFamilies::register(r, "client"),
        }
    }
}

/// A unary method, as labelled in metrics.
#[derive(Debug, Clone, Copy)]
pub struct Method {
    /// Fully qualified service, e.g. `revertname.RevertName`.
    pub service: &'static str,
    pub method: &'static str,
    /// `unary`, `client_stream`, `server_stream` or `bidi_stream`.
    pub grpc_type: &'static str,
}

impl Method {
    fn labels(&self) -> MethodLabels {
        MethodLabels {
            grpc_type: self.grpc_type.into(),
            grpc_service: self.service.into(),
            grpc_method: self.method.into(),
        }
    }

    fn code_labels(&self, code: Code) -> CodeLabels {
        CodeLabels {
            grpc_type: self.grpc_type.into(),
            grpc_service: self.service.into(),
            grpc_method: self.method.into(),
            grpc_code: go_code_name(code).into(),
        }
    }
}

/// Which side of a call is being recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Server,
    Client,
}

/// Runs a unary call and records it, applying the request-level faults.
/// On the server side `unmeasured-delay` waits before the timer starts.
pub async fn observe_unary<T>(
    exporter: &Arc<Exporter<GrpcInstruments>>,
    side: Side,
    m: Method,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let faults = exporter.faults().clone();
    if side == Side::Server
        && let Some(d) = faults.unmeasured_delay
    {
        tokio::time::sleep(d).await;
    }
    let inst = exporter.instruments();
    let fam = match side {
        Side::Server => &inst.server,
        Side::Client => &inst.client,
    };
    let labels = m.labels();
    fam.started.get_or_create(&labels).inc();
    if side == Side::Server {
        fam.msg_received.get_or_create(&labels).inc();
    } else {
        fam.msg_sent.get_or_create(&labels).inc();
    }
    let start = Instant::now();
    let result = call.await;
    let elapsed = start.elapsed();
    let code = match &result {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    };
    if faults.uncounted_errors && code != Code::Ok {
        return result;
    }
    fam.handled.get_or_create(&m.code_labels(code)).inc();
    if code == Code::Ok {
        if side == Side::Server {
            fam.msg_sent.get_or_create(&labels).inc();
        } else {
            fam.msg_received.get_or_create(&labels).inc();
        }
    }
    fam.handling
        .get_or_create(&labels)
        .observe(faults.observed_seconds(elapsed));
    result
}

/// A streaming call being served: counts messages as they pass and
/// records the outcome once, at [`StreamCall::finish`].
pub struct StreamCall {
    exporter: Arc<Exporter<GrpcInstruments>>,
    method: Method,
    labels: MethodLabels,
    start: Instant,
}

impl StreamCall {
    /// Counts the call as started.
    pub fn start(exporter: &Arc<Exporter<GrpcInstruments>>, method: Method) -> Self {
        let labels = method.labels();
        exporter
            .instruments()
            .server
            .started
            .get_or_create(&labels)
            .inc();
        Self {
            exporter: exporter.clone(),
            method,
            labels,
            start: Instant::now(),
        }
    }

    pub fn received(&self) {
        let inst = self.exporter.instruments();
        inst.server.msg_received.get_or_create(&self.labels).inc();
    }

    pub fn sent(&self) {
        let inst = self.exporter.instruments();
        inst.server.msg_sent.get_or_create(&self.labels).inc();
    }

    /// Records the final code and the handling time.
    pub fn finish(self, code: Code) {
        let faults = self.exporter.faults().clone();
        if faults.uncounted_errors && code != Code::Ok {
            return;
        }
        let inst = self.exporter.instruments();
        inst.server
            .handled
            .get_or_create(&self.method.code_labels(code))
            .inc();
        inst.server
            .handling
            .get_or_create(&self.labels)
            .observe(faults.observed_seconds(self.start.elapsed()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_spellings() {
        assert_eq!(go_code_name(Code::Unavailable), "Unavailable");
        assert_eq!(go_code_name(Code::Cancelled), "Canceled");
        assert_eq!(go_code_name(Code::Ok), "OK");
    }
}
