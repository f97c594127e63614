//! Executors send one request and say what happened. The engine drives
//! them through the [`Executor`] trait and never sees a protocol.
//!
//! Executors are built once per engine thread by an [`ExecutorFactory`];
//! connections belong to the worker that opened them (in its [`Scratch`]),
//! so they never hop between threads and nothing is shared on the hot path.

mod check;
mod connect;
mod cookies;
mod dispatch;
mod fetch;
mod grpc;
mod h1;
mod request;

use std::future::Future;

pub use dispatch::{CallExecutor, CallPlan};
pub use fetch::Fetcher;
pub use grpc::reflect;

use crate::outcome::{Answer, GrpcCode, Outcome, TransportError};

/// The result of one call.
#[derive(Debug, Clone, PartialEq)]
pub enum CallResult {
    /// A response with this status, read to the last byte.
    Status(u16),
    /// A gRPC call that ended with this code, and the messages it sent and
    /// received.
    Grpc {
        code: GrpcCode,
        sent: u64,
        received: u64,
    },
    /// An expected status or code whose checks or captures failed.
    CheckFailed { answer: Answer, message: String },
    /// No (complete) response; the message explains.
    Failed(TransportError, String),
}

/// Per-worker state reused across requests: randomness, buffers and the
/// worker's open connections.
pub struct Scratch {
    pub rng: fastrand::Rng,
    url: String,
    text: String,
    tmp: String,
    /// A multipart body (it may hold any bytes); empty for other bodies.
    bin: Vec<u8>,
    /// The user's variables: captures and the columns of drawn feed rows,
    /// by slot.
    pub vars: Vec<String>,
    /// The HTTP/1.1 request being sent.
    wbuf: Vec<u8>,
    /// The response body, when checks or captures read it.
    body: Vec<u8>,
    conns: Vec<Option<connect::Conn>>,
    /// The user's cookies, by target (grown when a target first sets one).
    jars: Vec<cookies::Jar>,
    /// The `location` of the last response, when it is a redirect to
    /// follow.
    location: String,
    grpc_conns: Vec<Option<grpc::GrpcConn>>,
    /// The request timeout, re-armed for each request rather than
    /// created anew.
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// Times the last request was sent again on a new connection after a
    /// kept-alive one closed with no answer; the engine takes it after
    /// each request.
    pub retries: u32,
}

/// Open connections, one slot per target, as a worker's scratch holds
/// them: the open model keeps them in a pool between arrivals.
#[derive(Default)]
pub struct Connections {
    conns: Vec<Option<connect::Conn>>,
    grpc_conns: Vec<Option<grpc::GrpcConn>>,
}

impl Connections {
    /// True when no connection is open.
    pub fn is_empty(&self) -> bool {
        self.conns.iter().all(Option::is_none) && self.grpc_conns.iter().all(Option::is_none)
    }
}

impl Scratch {
    /// Exchanges this scratch's connections with `other`'s.
    pub fn swap_connections(&mut self, other: &mut Connections) {
        std::mem::swap(&mut self.conns, &mut other.conns);
        std::mem::swap(&mut self.grpc_conns, &mut other.grpc_conns);
    }

    pub fn new(seed: u64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
            url: String::with_capacity(128),
            text: String::new(),
            tmp: String::new(),
            bin: Vec::new(),
            vars: Vec::new(),
            wbuf: Vec::with_capacity(512),
            body: Vec::new(),
            conns: Vec::new(),
            jars: Vec::new(),
            location: String::new(),
            grpc_conns: Vec::new(),
            deadline: None,
            retries: 0,
        }
    }
}

/// Sends requests by index into the scenario's request list.
pub trait Executor {
    fn execute(&self, request: usize, scratch: &mut Scratch) -> impl Future<Output = CallResult>;

    /// Whether `outcome` meets request `request`'s expectation.
    fn accepts(&self, request: usize, outcome: Outcome) -> bool;
}

/// Builds one executor per engine thread.
pub trait ExecutorFactory: Send + Sync + 'static {
    type Executor: Executor + 'static;
    fn build(&self) -> Result<Self::Executor, String>;
}

/// Installs the TLS crypto provider once per process.
pub fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The error and its causes on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Sorts an I/O-level failure into a transport error kind, walking its
/// causes: the I/O error kind is the most reliable signal, then TLS errors
/// by type and hyper's own classification.
pub fn classify(e: &(dyn std::error::Error + 'static)) -> TransportError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if c.downcast_ref::<rustls::Error>().is_some() {
            return TransportError::Tls;
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
            {
                return TransportError::Tls;
            }
            use std::io::ErrorKind::*;
            match io.kind() {
                ConnectionRefused => return TransportError::Refused,
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => {
                    return TransportError::Reset;
                }
                TimedOut => return TransportError::Timeout,
                _ => {}
            }
        }
        if let Some(h) = c.downcast_ref::<hyper::Error>()
            && (h.is_incomplete_message() || h.is_closed() || h.is_canceled())
        {
            return TransportError::Reset;
        }
        cur = c.source();
    }
    TransportError::Other
}
