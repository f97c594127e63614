//! The demo services over real sockets on ephemeral loopback ports: their
//! answers, their metric names and labels, and each fault's effect on the
//! exported series. [`web`] holds polls and bank, [`grpc`] edge,
//! revert-name and time; the helpers here serve both.

#[path = "../support/exposition.rs"]
mod exposition;
mod grpc;
mod web;

use std::time::{Duration, Instant};

use redproof_services::faults::{Fault, Faults};
use tokio::net::TcpListener;

pub(crate) async fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap().to_string();
    (l, a)
}

pub(crate) fn faults(flags: &[&str]) -> Faults {
    Faults::from_flags(
        &flags
            .iter()
            .map(|f| f.parse::<Fault>().unwrap())
            .collect::<Vec<_>>(),
    )
}

pub(crate) async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Polls `done` every 10 ms until it holds. `what` names the awaited event
/// in the failure reported when `timeout` passes first; the timeout only
/// keeps a broken service from hanging the test.
pub(crate) async fn wait_until<F: Future<Output = bool>>(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> F,
) {
    let deadline = Instant::now() + timeout;
    while !done().await {
        assert!(
            Instant::now() < deadline,
            "gave up after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
