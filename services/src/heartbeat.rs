//! The heartbeat revert-name and time send to edge: a periodic unary gRPC
//! call, recorded with the sender's gRPC client metrics.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::exporter::Exporter;
use crate::grpc::proto::heartbeat::BeatHeartRequest;
use crate::grpc::proto::heartbeat::heartbeat_client::HeartbeatClient;
use crate::grpc::{GrpcInstruments, Method, Side, observe_unary};

pub const BEAT_HEART: Method = Method {
    service: "heartbeat.Heartbeat",
    method: "BeatHeart",
    grpc_type: "unary",
};

/// Sends a heartbeat to `edge` (a URL such as `http://127.0.0.1:50053`)
/// every `every` until `shutdown`. Failures are recorded, never fatal.
pub fn spawn(
    service: &'static str,
    edge: String,
    every: Duration,
    exporter: Arc<Exporter<GrpcInstruments>>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let channel = Channel::from_shared(edge.clone())
        .map_err(|e| format!("edge address `{edge}`: {e}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect_lazy();
    tokio::spawn(async move {
        let mut client = HeartbeatClient::new(channel);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let sent_unix_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as i64;
            let req = BeatHeartRequest {
                service: service.to_owned(),
                sent_unix_ms,
            };
            let _ =
                observe_unary(&exporter, Side::Client, BEAT_HEART, client.beat_heart(req)).await;
        }
    });
    Ok(())
}
