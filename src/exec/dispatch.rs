//! The executor: one plan of prepared HTTP and gRPC requests, shared by
//! all threads, and the per-thread executor that sends them.
//!
//! Each worker owns one connection per target (like wrk), kept in its
//! [`Scratch`]: no pool, no locks, no URL parsing beyond the rendered path.
//! Connections are HTTP/1.1 (see [`super::h1`]), or HTTP/2 on hyper's
//! connection API with prior knowledge (`http2: true`) or when TLS
//! negotiates `h2` through ALPN. A connection that fails is dropped and
//! the worker's next request opens a new one.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;

use super::check::ResponseRules;
use super::connect::{Conn, Endpoint};
use super::cookies;
use super::grpc::{self, PreparedGrpc};
use super::h1::H1Error;
use super::request::{Hop, PreparedRequest};
use super::{CallResult, Executor, ExecutorFactory, Scratch, chain, classify};
use crate::outcome::{Answer, GrpcCode, Outcome, TransportError};
use crate::scenario::{Call, DEFAULT_MAX_MESSAGE, Expect, Scenario};

/// A request of either protocol, ready to send.
#[derive(Debug)]
enum Prepared {
    Http(PreparedRequest),
    Grpc(PreparedGrpc),
}

/// One request of the plan.
#[derive(Debug)]
struct PlannedCall {
    target: usize,
    expect: Expect,
    call: Prepared,
    rules: Option<ResponseRules>,
}

/// Everything needed to build executors, shared by all threads: resolved
/// targets and compiled requests, HTTP and gRPC.
#[derive(Debug)]
pub struct CallPlan {
    endpoints: Vec<Endpoint>,
    /// `scheme://authority` of each target, for gRPC calls.
    origins: Vec<Uri>,
    requests: Vec<PlannedCall>,
}

impl CallPlan {
    /// Resolves targets and prepares the compiled requests of a validated
    /// scenario for the wire.
    pub fn new(s: &Scenario) -> Result<Self, String> {
        let endpoints = s
            .targets
            .iter()
            .map(Endpoint::new)
            .collect::<Result<Vec<_>, _>>()?;
        let origins = endpoints
            .iter()
            .map(grpc::origin)
            .collect::<Result<Vec<_>, _>>()?;
        let requests = s
            .requests
            .iter()
            .map(|r| {
                let target = r.call.target();
                let call = match &r.call {
                    Call::Http(h) => Prepared::Http(PreparedRequest::new(
                        r.name.as_str(),
                        h,
                        &endpoints[target],
                    )?),
                    Call::Grpc(g) => Prepared::Grpc(PreparedGrpc::new(
                        r.name.as_str(),
                        g,
                        &endpoints[target],
                        s.targets[target]
                            .grpc
                            .as_ref()
                            .map_or(DEFAULT_MAX_MESSAGE, |t| t.max_message),
                    )?),
                };
                Ok(PlannedCall {
                    target,
                    expect: r.expect.clone(),
                    call,
                    rules: ResponseRules::of(r),
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Self {
            endpoints,
            origins,
            requests,
        })
    }
}

/// The per-thread executor.
pub struct CallExecutor {
    plan: Arc<CallPlan>,
}

impl ExecutorFactory for Arc<CallPlan> {
    type Executor = CallExecutor;

    fn build(&self) -> Result<CallExecutor, String> {
        Ok(CallExecutor { plan: self.clone() })
    }
}

impl Executor for CallExecutor {
    async fn execute(&self, index: usize, s: &mut Scratch) -> CallResult {
        let planned = &self.plan.requests[index];
        let target = planned.target;
        let e = &self.plan.endpoints[target];
        match &planned.call {
            Prepared::Http(r) if r.follow == 0 => {
                self.execute_http(r, planned, target, e, s, None).await
            }
            // Boxed: only requests that follow redirects pay for the loop.
            Prepared::Http(r) => Box::pin(self.follow_redirects(r, planned, target, e, s)).await,
            Prepared::Grpc(g) => {
                // Boxed: gRPC calls are large futures, and HTTP requests
                // should not pay for their size.
                Box::pin(self.execute_grpc(g, planned, target, e, s)).await
            }
        }
    }

    fn accepts(&self, request: usize, outcome: Outcome) -> bool {
        self.plan.requests[request].expect.accepts(outcome)
    }
}

/// Keeps the response's `location` for a redirect to follow.
fn keep_location(s: &mut Scratch, headers: &http::HeaderMap) {
    s.location.clear();
    if let Some(l) = headers
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
    {
        s.location.push_str(l);
    }
}

/// The path (and query) a redirect from `from` to `location` leads to,
/// when it stays on the target's scheme and authority.
fn same_origin_path(e: &Endpoint, from: &str, location: &str) -> Option<String> {
    let location = location.split('#').next().unwrap_or(location);
    let path = if let Some((scheme, rest)) = location.split_once("://") {
        let (authority, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        if !scheme.eq_ignore_ascii_case(e.scheme.as_str())
            || !authority.eq_ignore_ascii_case(e.authority.as_str())
        {
            return None;
        }
        if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        }
    } else if location.starts_with("//") {
        return same_origin_path(e, from, &format!("{}:{location}", e.scheme));
    } else if location.starts_with('/') {
        location.to_owned()
    } else {
        // Relative to the directory of the current path.
        let dir = from.split('?').next().unwrap_or(from);
        let dir = &dir[..dir.rfind('/').map_or(0, |i| i + 1)];
        format!("{}{location}", if dir.is_empty() { "/" } else { dir })
    };
    (crate::scenario::bad_target_byte(&path).is_none()).then_some(path)
}

/// A reusable timer armed to fire `after` from now.
fn arm(s: &mut Scratch, after: Duration) -> std::pin::Pin<Box<tokio::time::Sleep>> {
    let mut deadline = s
        .deadline
        .take()
        .unwrap_or_else(|| Box::pin(tokio::time::sleep(Duration::ZERO)));
    deadline.as_mut().reset(tokio::time::Instant::now() + after);
    deadline
}

impl CallExecutor {
    async fn execute_grpc(
        &self,
        g: &PreparedGrpc,
        planned: &PlannedCall,
        target: usize,
        e: &Endpoint,
        s: &mut Scratch,
    ) -> CallResult {
        if s.grpc_conns.len() < self.plan.endpoints.len() {
            s.grpc_conns.resize_with(self.plan.endpoints.len(), || None);
        }
        let (limit, is_deadline) = g.limit(e.timeout);
        let mut timer = arm(s, limit);
        let connecting = std::cell::Cell::new(false);
        let origin = &self.plan.origins[target];
        let call = async {
            // The connection stays in its slot during the call (HTTP/2
            // senders are cheap clones), so a call cut off by its deadline
            // leaves it for the next one; it is replaced once it closes.
            let conn = match &s.grpc_conns[target] {
                Some(c) if !c.is_closed() => c.clone(),
                _ => {
                    connecting.set(true);
                    let c = Box::pin(grpc::connect(e)).await;
                    connecting.set(false);
                    match c {
                        Ok(c) => {
                            s.grpc_conns[target] = Some(c.clone());
                            c
                        }
                        Err((k, m)) => return CallResult::Failed(k, m),
                    }
                }
            };
            let result = g
                .call(&conn, origin, s, planned.rules.as_ref(), &planned.expect)
                .await;
            if conn.is_closed() {
                s.grpc_conns[target] = None;
            }
            result
        };
        let outcome = tokio::select! {
            biased;
            r = call => Some(r),
            _ = timer.as_mut() => None,
        };
        s.deadline = Some(timer);
        match outcome {
            Some(r) => r,
            None if connecting.get() => CallResult::Failed(
                TransportError::Connect,
                format!("no connection to `{}` within {:?}", e.name, limit),
            ),
            // The call's own deadline: the client gives up and the call
            // ends as DEADLINE_EXCEEDED (the connection stays usable; the
            // stream is reset).
            None if is_deadline => CallResult::Grpc {
                code: GrpcCode::DEADLINE_EXCEEDED,
                sent: 0,
                received: 0,
            },
            None => {
                // No answer at all within the target's timeout: the
                // connection is suspect, as for HTTP.
                s.grpc_conns[target] = None;
                CallResult::Failed(
                    TransportError::Timeout,
                    format!("no final status from `{}` within {:?}", e.name, limit),
                )
            }
        }
    }

    /// Sends `r`, then follows the redirects it is answered with, up to
    /// its limit, within the target's origin. A redirect elsewhere, or
    /// beyond the limit, is the answer.
    async fn follow_redirects(
        &self,
        r: &PreparedRequest,
        planned: &PlannedCall,
        target: usize,
        e: &Endpoint,
        s: &mut Scratch,
    ) -> CallResult {
        let mut result = self.execute_http(r, planned, target, e, s, None).await;
        let mut method = r.method.clone();
        let mut with_body = true;
        let mut hopped = false;
        for _ in 0..r.follow {
            let CallResult::Status(code) = result else {
                break;
            };
            if !matches!(code, 301 | 302 | 303 | 307 | 308) || s.location.is_empty() {
                break;
            }
            let from = if hopped {
                s.url.as_str()
            } else {
                r.sent_path(&s.url, None)
            };
            let Some(next) = same_origin_path(e, from, &s.location) else {
                break;
            };
            s.url = next;
            hopped = true;
            // 303, and 301/302 after a POST, continue as a GET without
            // the body, as browsers do; 307 and 308 repeat the request.
            if (code == 303 && method != Method::HEAD)
                || (matches!(code, 301 | 302) && method == Method::POST)
            {
                method = Method::GET;
                with_body = false;
            }
            let hop = Hop {
                method: &method,
                with_body,
            };
            result = self.execute_http(r, planned, target, e, s, Some(hop)).await;
        }
        result
    }

    async fn execute_http(
        &self,
        r: &PreparedRequest,
        planned: &PlannedCall,
        target: usize,
        e: &Endpoint,
        s: &mut Scratch,
        hop: Option<Hop<'_>>,
    ) -> CallResult {
        if s.conns.len() < self.plan.endpoints.len() {
            s.conns.resize_with(self.plan.endpoints.len(), || None);
        }
        let mut deadline = arm(s, e.timeout);
        // A deadline that expires while connecting means the target never
        // answered: a connect failure, not a slow response.
        let connecting = std::cell::Cell::new(false);
        let call = async {
            // A connection the server has closed is replaced before use;
            // that is not a failure of this request, which was not sent.
            for attempt in 0..2 {
                let usable = match s.conns[target].as_mut() {
                    None => false,
                    Some(c) => c.usable().await,
                };
                if !usable {
                    // Boxed: connecting is rare, and its state would
                    // otherwise make every request's future larger.
                    connecting.set(true);
                    let conn = Box::pin(e.connect()).await;
                    connecting.set(false);
                    s.conns[target] = Some(conn.map_err(|(k, m)| CallResult::Failed(k, m))?);
                }
                // A keep-alive connection the server closed while idle is
                // usually seen closed above, before anything is written.
                // When the close races the write and the write fails, the
                // request never reached the server: it is sent once more
                // on a fresh connection rather than counted as an error the
                // server never saw. When the write went through but the
                // server closed without a byte of answer, it most likely
                // never read the request either: an idempotent request is
                // sent once more, as browsers and Go's client do, and
                // counted as a retry (verification allows for the server
                // having seen both); any other is reported as closed
                // before any response.
                let retry = attempt == 0;
                match s.conns[target].as_mut().expect("connected above") {
                    Conn::H1(_) => match self.exchange_h1(r, planned, target, e, s, hop).await {
                        Err(err) if err.unsent && retry => s.conns[target] = None,
                        Err(err) if err.stale && retry && r.method.is_idempotent() => {
                            s.retries += 1;
                            s.conns[target] = None;
                        }
                        Err(err) if err.stale && !r.method.is_idempotent() => {
                            return Err(CallResult::Failed(
                                err.kind,
                                format!(
                                    "{} on a kept-alive connection (a {} is not sent twice)",
                                    err.message, r.method
                                ),
                            ));
                        }
                        Err(err) => return Err(CallResult::Failed(err.kind, err.message)),
                        Ok(done) => return Ok(done),
                    },
                    Conn::H2(sender) => {
                        let sender = sender.clone();
                        match self.exchange_h2(sender, r, planned, target, s, hop).await {
                            Err(Ok(_)) if retry => s.conns[target] = None,
                            Err(Ok(err)) | Err(Err(err)) => return Err(err),
                            Ok(done) => return Ok(done),
                        }
                    }
                }
            }
            Err(CallResult::Failed(
                TransportError::Reset,
                "the server closed two connections in a row before the request went out".to_owned(),
            ))
        };
        let outcome = tokio::select! {
            biased;
            r = call => Ok(r),
            _ = deadline.as_mut() => Err(()),
        };
        s.deadline = Some(deadline);
        match outcome {
            Ok(Ok(done)) => done,
            Ok(Err(failed)) => {
                s.conns[target] = None;
                failed
            }
            Err(_) if connecting.get() => {
                s.conns[target] = None;
                CallResult::Failed(
                    TransportError::Connect,
                    format!("no connection to `{}` within {:?}", e.name, e.timeout),
                )
            }
            Err(_) => {
                s.conns[target] = None;
                CallResult::Failed(
                    TransportError::Timeout,
                    format!(
                        "no complete response from `{}` within {:?}",
                        e.name, e.timeout
                    ),
                )
            }
        }
    }
}

impl CallExecutor {
    /// Sends an HTTP/1.1 request on the worker's connection to `target`
    /// and reads the whole response.
    async fn exchange_h1(
        &self,
        r: &PreparedRequest,
        planned: &PlannedCall,
        target: usize,
        e: &Endpoint,
        s: &mut Scratch,
        hop: Option<Hop<'_>>,
    ) -> Result<CallResult, H1Error> {
        if let Err(failed) = r.write_h1(e, target, s, hop) {
            return Ok(failed);
        }
        let Some(Conn::H1(conn)) = s.conns[target].as_mut() else {
            unreachable!("an HTTP/1.1 connection is open");
        };
        let head = conn
            .send(
                &s.wbuf,
                r.method == Method::HEAD,
                planned.rules.is_some(),
                r.jar || r.follow > 0,
            )
            .await?;
        // The body is kept only when checks or captures read it, and only
        // for a status the step expects.
        let rules = planned
            .rules
            .as_ref()
            .filter(|_| planned.expect.accepts(Outcome::Status(head.status)));
        s.body.clear();
        conn.set_max_body(e.max_body);
        conn.read_body(head.framing, rules.map(|_| &mut s.body))
            .await?;
        if r.jar {
            cookies::store_all(&mut s.jars, target, &head.headers, r.sent_path(&s.url, hop));
        }
        if r.follow > 0 {
            keep_location(s, &head.headers);
        }
        if r.h1_close {
            s.conns[target] = None;
        }
        Ok(match rules {
            Some(rules) => match rules.apply_http(&head.headers, &s.body, &mut s.vars) {
                Ok(()) => CallResult::Status(head.status),
                Err(message) => CallResult::CheckFailed {
                    answer: Answer::Status(head.status),
                    message,
                },
            },
            None => CallResult::Status(head.status),
        })
    }

    /// Sends a request on an HTTP/2 connection and reads the whole
    /// response. `Err(Ok(_))` means the request never left, so it may be
    /// sent again on a new connection.
    async fn exchange_h2(
        &self,
        mut sender: http2::SendRequest<Full<Bytes>>,
        r: &PreparedRequest,
        planned: &PlannedCall,
        target: usize,
        s: &mut Scratch,
        hop: Option<Hop<'_>>,
    ) -> Result<CallResult, Result<CallResult, CallResult>> {
        let e = &self.plan.endpoints[target];
        let req = r.h2_request(e, target, s, hop).map_err(Err)?;
        let resp = sender.try_send_request(req).await.map_err(|mut err| {
            let unsent = err.take_message().is_some();
            let err = err.into_error();
            let failed = CallResult::Failed(
                classify(&err),
                format!("sending the request: {}", chain(&err)),
            );
            if unsent { Ok(failed) } else { Err(failed) }
        })?;
        let status = resp.status().as_u16();
        let (parts, mut body) = resp.into_parts();
        if r.jar {
            cookies::store_all(
                &mut s.jars,
                target,
                &parts.headers,
                r.sent_path(&s.url, hop),
            );
        }
        if r.follow > 0 {
            keep_location(s, &parts.headers);
        }
        let rules = planned
            .rules
            .as_ref()
            .filter(|_| planned.expect.accepts(Outcome::Status(status)));
        s.body.clear();
        while let Some(frame) = body.frame().await {
            match frame {
                Err(err) => {
                    let kind = match classify(&err) {
                        TransportError::Other => TransportError::Body,
                        k => k,
                    };
                    return Err(Err(CallResult::Failed(
                        kind,
                        format!("reading the response body: {}", chain(&err)),
                    )));
                }
                Ok(f) => {
                    if rules.is_some()
                        && let Some(data) = f.data_ref()
                    {
                        if s.body.len() + data.len() > e.max_body {
                            return Err(Err(CallResult::Failed(
                                TransportError::Body,
                                format!(
                                    "the response body is over the {} byte limit (the target's `max_body`)",
                                    e.max_body
                                ),
                            )));
                        }
                        s.body.extend_from_slice(data);
                    }
                }
            }
        }
        if let Some(rules) = rules
            && let Err(message) = rules.apply_http(&parts.headers, &s.body, &mut s.vars)
        {
            return Ok(CallResult::CheckFailed {
                answer: Answer::Status(status),
                message,
            });
        }
        Ok(CallResult::Status(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(yaml: &str) -> CallPlan {
        let s = crate::scenario::parse(std::path::Path::new("t.yaml"), yaml)
            .unwrap_or_else(|e| panic!("{e:?}"));
        CallPlan::new(&s).unwrap()
    }

    /// The HTTP/1.1 bytes of the plan's request `i`.
    fn wire(p: &CallPlan, i: usize) -> String {
        let Prepared::Http(r) = &p.requests[i].call else {
            panic!("not HTTP");
        };
        let mut s = Scratch::new(1);
        r.write_h1(
            &p.endpoints[p.requests[i].target],
            p.requests[i].target,
            &mut s,
            None,
        )
        .unwrap();
        String::from_utf8(s.wbuf).unwrap()
    }

    #[test]
    fn requests_are_written_once_per_header() {
        let p = plan(
            r#"
name: wire
targets:
  api: { url: "http://127.0.0.1:8080/v1", headers: { authorization: static, x-env: test } }
load: { users: 1, iterations: 1 }
requests:
  - name: create
    http:
      target: api
      method: POST
      path: /items
      headers: { authorization: "Bearer {{ seq() }}", connection: close }
      json: { n: 1 }
  - name: empty
    http: { target: api, method: POST, path: "/x/{{ seq() }}", headers: { host: example.test } }
"#,
        );
        // A templated header replaces the target's; the body's length
        // and type are written once.
        let create = wire(&p, 0);
        let (head, body) = create.split_once("\r\n\r\n").unwrap();
        let mut lines: Vec<&str> = head.split("\r\n").collect();
        assert_eq!(lines.remove(0), "POST /v1/items HTTP/1.1");
        lines.sort_unstable();
        let agent = concat!("user-agent: redproof/", env!("CARGO_PKG_VERSION"));
        assert_eq!(
            lines,
            [
                "authorization: Bearer 1",
                "connection: close",
                "content-length: 7",
                "content-type: application/json",
                "host: 127.0.0.1:8080",
                agent,
                "x-env: test",
            ]
        );
        assert_eq!(body, r#"{"n":1}"#);
        let Prepared::Http(r) = &p.requests[0].call else {
            unreachable!()
        };
        assert!(r.h1_close);
        // A `host` header replaces the target's authority; an empty POST
        // says its length is 0.
        let empty = wire(&p, 1);
        assert!(empty.starts_with("POST /v1/x/2 HTTP/1.1\r\n"), "{empty}");
        assert!(empty.contains("\r\nhost: example.test\r\n"), "{empty}");
        assert!(!empty.contains("127.0.0.1"), "{empty}");
        assert!(empty.ends_with("\r\ncontent-length: 0\r\n\r\n"), "{empty}");
    }

    #[test]
    fn rendered_targets_with_spaces_or_fragments_are_refused() {
        let p = plan(
            r#"
name: wire
targets: { api: { url: "http://127.0.0.1:8080" } }
data: { words: ["a b", "c#d"] }
load: { users: 1, iterations: 1 }
requests:
  - { name: get, http: { target: api, path: "/{{ pick(words) }}" } }
"#,
        );
        let Prepared::Http(r) = &p.requests[0].call else {
            unreachable!()
        };
        let mut s = Scratch::new(1);
        for _ in 0..20 {
            match r.write_h1(&p.endpoints[0], 0, &mut s, None) {
                Err(CallResult::Failed(TransportError::Other, m)) => {
                    assert!(m.contains("percent-encode"), "{m}")
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
