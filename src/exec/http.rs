//! The HTTP executor.
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
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::check::ResponseRules;
use super::grpc::{self, PreparedGrpc};
use super::h1::{H1Conn, H1Error};
use super::{CallResult, Executor, ExecutorFactory, Scratch, chain, classify, init_tls};
use crate::outcome::{Answer, GrpcCode, Outcome, TransportError};
use crate::scenario::{Body, Call, Expect, HttpCall, Scenario, Target};
use crate::template::{JsonTemplate, Template, TemplateEnv, compile_located, push_query_encoded};

/// A worker's open connection to one target.
pub(crate) enum Conn {
    H1(H1Conn),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Conn {
    /// Whether a request can go out on this connection now.
    async fn usable(&mut self) -> bool {
        match self {
            Conn::H1(c) => c.is_usable(),
            Conn::H2(s) => !s.is_closed() && (s.is_ready() || s.ready().await.is_ok()),
        }
    }
}

/// `host` (when given and `headers` has none) and `headers`, serialised
/// for an HTTP/1.1 request head. Validation keeps framing headers
/// (`content-length`, `transfer-encoding` …) out of scenarios; the length
/// is written for each request's body.
fn h1_header_lines(headers: &HeaderMap, host: Option<&HeaderValue>) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(host) = host
        && !headers.contains_key(header::HOST)
    {
        push_header_line(&mut out, "host", host.as_bytes());
    }
    for (k, v) in headers {
        push_header_line(&mut out, k.as_str(), v.as_bytes());
    }
    out
}

/// The first byte that may not appear in an HTTP/1.1 request target:
/// whitespace, control characters, non-ASCII (to be percent-encoded) and
/// `#` (fragments are not sent).
fn bad_target_byte(target: &str) -> Option<char> {
    target
        .bytes()
        .find(|&b| b <= b' ' || b >= 0x7f || b == b'#')
        .map(char::from)
}

fn push_header_line(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Whether a rendered value may go in a header: no control characters
/// but tab (the rule of [`HeaderValue::from_bytes`]).
fn valid_header_value(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// A connected socket, plain or TLS.
pub(crate) trait Io:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static
{
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A target resolved for connecting.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) name: String,
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
    host: String,
    port: u16,
    /// Path of the target URL, prepended to every request path.
    prefix: String,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    h2c: bool,
    pub(crate) timeout: Duration,
    connect_timeout: Duration,
    /// `user-agent` and the target's headers.
    pub(crate) headers: HeaderMap,
    /// `host` for HTTP/1.1 requests.
    host_header: HeaderValue,
}

impl Endpoint {
    pub(crate) fn new(t: &Target) -> Result<Self, String> {
        let uri: Uri = t
            .url
            .parse()
            .map_err(|e| format!("target `{}`: invalid URL `{}`: {e}", t.name, t.url))?;
        let scheme = uri.scheme().cloned().unwrap_or(Scheme::HTTP);
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("target `{}`: URL `{}` has no host", t.name, t.url))?;
        let https = scheme == Scheme::HTTPS;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let server_name = ServerName::try_from(host.clone()).map_err(|e| {
                format!(
                    "target `{}`: `{host}` is not a valid TLS server name: {e}",
                    t.name
                )
            })?;
            Some((Arc::new(tls_config(t.insecure)?), server_name))
        } else {
            None
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("redproof/", env!("CARGO_PKG_VERSION"))),
        );
        for (k, v) in &t.headers {
            headers.insert(
                HeaderName::from_bytes(k.as_bytes())
                    .map_err(|e| format!("target `{}`: header `{k}`: {e}", t.name))?,
                HeaderValue::from_str(v)
                    .map_err(|e| format!("target `{}`: header `{k}`: {e}", t.name))?,
            );
        }
        Ok(Self {
            name: t.name.clone(),
            scheme,
            host,
            port,
            prefix: uri.path().trim_end_matches('/').to_owned(),
            tls,
            h2c: t.http2,
            timeout: t.timeout,
            connect_timeout: t.timeout.min(Duration::from_secs(10)),
            headers,
            host_header: HeaderValue::from_str(authority.as_str())
                .map_err(|e| format!("target `{}`: {e}", t.name))?,
            authority,
        })
    }

    /// Opens a connection: resolve, connect, TLS, HTTP handshake.
    async fn connect(&self) -> Result<Conn, (TransportError, String)> {
        let (io, h2) = self.open().await?;
        handshake(io, h2).await
    }

    /// Opens a socket (with TLS for `https`), saying whether HTTP/2 is to
    /// be spoken on it: prior knowledge, or `h2` negotiated through ALPN.
    pub(crate) async fn open(&self) -> Result<(Box<dyn Io>, bool), (TransportError, String)> {
        let addrs: Vec<_> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| {
                (
                    TransportError::Dns,
                    format!("cannot resolve `{}`: {e}", self.host),
                )
            })?
            .collect();
        let mut last = None;
        let mut stream = None;
        for addr in addrs {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    stream = Some(s);
                    break;
                }
                Ok(Err(e)) => {
                    last = Some((
                        if e.kind() == std::io::ErrorKind::ConnectionRefused {
                            TransportError::Refused
                        } else {
                            TransportError::Connect
                        },
                        format!("tcp connect to {addr}: {e}"),
                    ))
                }
                Err(_) => {
                    last = Some((
                        TransportError::Connect,
                        format!(
                            "tcp connect to {addr}: no answer within {:?}",
                            self.connect_timeout
                        ),
                    ))
                }
            }
        }
        let stream = stream.ok_or_else(|| {
            last.unwrap_or((
                TransportError::Dns,
                format!("`{}` resolved to no address", self.host),
            ))
        })?;
        let _ = stream.set_nodelay(true);
        match &self.tls {
            None => Ok((Box::new(stream), self.h2c)),
            Some((config, name)) => {
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name.clone(), stream)
                    .await
                    .map_err(|e| {
                        (
                            TransportError::Tls,
                            format!("TLS handshake with `{}`: {}", self.host, chain(&e)),
                        )
                    })?;
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                Ok((Box::new(tls), h2))
            }
        }
    }
}

async fn handshake(io: Box<dyn Io>, h2: bool) -> Result<Conn, (TransportError, String)> {
    let io = TokioIo::new(io);
    let fail = |e: hyper::Error| (classify(&e), format!("HTTP handshake: {}", chain(&e)));
    if h2 {
        let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(fail)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn::H2(sender))
    } else {
        Ok(Conn::H1(H1Conn::new(io.into_inner())))
    }
}

fn tls_config(insecure: bool) -> Result<rustls::ClientConfig, String> {
    init_tls();
    let mut config = if insecure {
        rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(
                rustls::crypto::ring::default_provider().into(),
            )))
            .with_no_client_auth()
    } else {
        use rustls_platform_verifier::ConfigVerifierExt;
        rustls::ClientConfig::with_platform_verifier()
            .map_err(|e| format!("cannot load the system's TLS roots: {e}"))?
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// `insecure: true`: accepts any certificate (self-signed test servers),
/// still checking that signatures are well formed.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A compiled body.
#[derive(Debug, Clone)]
enum BodyTemplate {
    Json(JsonTemplate),
    Text(Template),
}

/// One request ready to send: everything static is resolved up front.
#[derive(Debug)]
struct PreparedRequest {
    method: Method,
    path: Template,
    /// Keys are already percent-encoded.
    query: Vec<(String, Template)>,
    /// The target's headers, then the request's static ones.
    static_headers: HeaderMap,
    dynamic_headers: Vec<(HeaderName, Template)>,
    body: Option<BodyTemplate>,
    /// The HTTP/2 request URI when path and query have no templates, so
    /// it is built once instead of per request.
    static_uri: Option<Uri>,
    /// HTTP/1.1: the request line when path and query have no templates.
    h1_line: Option<Vec<u8>>,
    /// HTTP/1.1: `host` and the static headers, serialised.
    h1_headers: Vec<u8>,
    /// HTTP/1.1: whether an empty body still gets `content-length: 0`
    /// (methods that normally carry a body).
    h1_length_always: bool,
    /// HTTP/1.1: the request asks for `connection: close`, so each one
    /// goes out on a new connection.
    h1_close: bool,
}

impl PreparedRequest {
    fn new(
        name: &str,
        h: &HttpCall,
        endpoint: &Endpoint,
        env: &TemplateEnv,
    ) -> Result<Self, String> {
        let t = |l| compile_located(l, env).map_err(|e| format!("request `{name}`: {}", e.message));
        let mut static_headers = endpoint.headers.clone();
        let mut dynamic_headers = Vec::new();
        for (k, v) in &h.headers {
            let name_ = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("request `{name}`: invalid header name `{k}`"))?;
            let tpl = t(v)?;
            match tpl.as_static() {
                Some(v) => {
                    let v = HeaderValue::from_str(v)
                        .map_err(|_| format!("request `{name}`: invalid value for header `{k}`"))?;
                    static_headers.insert(name_, v);
                }
                None => dynamic_headers.push((name_, tpl)),
            }
        }
        // A templated header replaces the target's header of that name.
        for (name_, _) in &dynamic_headers {
            static_headers.remove(name_);
        }
        let dynamic = |n: &HeaderName| dynamic_headers.iter().any(|(d, _)| d == n);
        let body = match &h.body {
            None => None,
            Some(Body::Text(b)) => Some(BodyTemplate::Text(t(b)?)),
            Some(Body::Json(j)) => {
                if !static_headers.contains_key(header::CONTENT_TYPE)
                    && !dynamic(&header::CONTENT_TYPE)
                {
                    static_headers.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                }
                let compiled = JsonTemplate::compile(j, env).map_err(|e| {
                    format!(
                        "request `{name}`: {}",
                        e.into_iter()
                            .map(|e| e.message)
                            .collect::<Vec<_>>()
                            .join("; ")
                    )
                })?;
                Some(BodyTemplate::Json(compiled))
            }
        };
        let path = t(&h.path)?;
        let query: Vec<(String, Template)> = h
            .query
            .iter()
            .map(|(k, v)| {
                let mut key = String::new();
                push_query_encoded(&mut key, k);
                Ok((key, t(v)?))
            })
            .collect::<Result<_, String>>()?;
        let method = Method::from_bytes(h.method.as_bytes()).map_err(|e| e.to_string())?;
        let host = (!dynamic(&header::HOST)).then_some(&endpoint.host_header);
        let mut prepared = Self {
            h1_headers: h1_header_lines(&static_headers, host),
            h1_close: static_headers.get_all(header::CONNECTION).iter().any(|v| {
                v.as_bytes()
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
            }),
            h1_length_always: matches!(method, Method::POST | Method::PUT | Method::PATCH),
            method,
            path,
            query,
            static_headers,
            dynamic_headers,
            body,
            static_uri: None,
            h1_line: None,
        };
        if prepared.path.as_static().is_some()
            && prepared.query.iter().all(|(_, v)| v.as_static().is_some())
        {
            let mut target = String::new();
            prepared.render_target(
                endpoint,
                &mut target,
                &mut String::new(),
                &mut fastrand::Rng::with_seed(0),
                &[],
            );
            Uri::try_from(target.as_str())
                .map_err(|e| format!("request `{name}`: `{target}` is not a valid URI: {e}"))?;
            if let Some(b) = bad_target_byte(&target) {
                return Err(format!(
                    "request `{name}`: `{target}` is not a valid request target: \
                     it has `{}` (percent-encode it)",
                    b.escape_default()
                ));
            }
            let h2 = Uri::builder()
                .scheme(endpoint.scheme.clone())
                .authority(endpoint.authority.clone())
                .path_and_query(target.as_str())
                .build()
                .map_err(|e| format!("request `{name}`: `{target}` is not a valid URI: {e}"))?;
            prepared.static_uri = Some(h2);
            prepared.h1_line =
                Some(format!("{} {target} HTTP/1.1\r\n", prepared.method).into_bytes());
        }
        Ok(prepared)
    }

    /// Renders the request target (path and query) into `out`.
    fn render_target(
        &self,
        e: &Endpoint,
        out: &mut String,
        tmp: &mut String,
        rng: &mut fastrand::Rng,
        vars: &[String],
    ) {
        out.clear();
        out.push_str(&e.prefix);
        self.path.render_into(out, rng, vars);
        for (i, (k, v)) in self.query.iter().enumerate() {
            out.push(if i == 0 { '?' } else { '&' });
            out.push_str(k);
            out.push('=');
            tmp.clear();
            v.render_into(tmp, rng, vars);
            push_query_encoded(out, tmp);
        }
    }
}

impl PreparedRequest {
    /// Renders the body into `s.text`.
    fn render_body(&self, s: &mut Scratch) {
        s.text.clear();
        match &self.body {
            None => {}
            Some(BodyTemplate::Text(t)) => t.render_into(&mut s.text, &mut s.rng, &s.vars),
            Some(BodyTemplate::Json(t)) => {
                t.render_into(&mut s.text, &mut s.rng, &mut s.tmp, &s.vars)
            }
        }
    }

    /// Renders the whole HTTP/1.1 request, head and body, into `s.wbuf`.
    fn write_h1(&self, e: &Endpoint, s: &mut Scratch) -> Result<(), CallResult> {
        // The body first: its length goes in the head.
        self.render_body(s);
        s.wbuf.clear();
        match &self.h1_line {
            Some(line) => s.wbuf.extend_from_slice(line),
            None => {
                self.render_target(e, &mut s.url, &mut s.tmp, &mut s.rng, &s.vars);
                if let Some(b) = bad_target_byte(&s.url) {
                    return Err(CallResult::Failed(
                        TransportError::Other,
                        format!(
                            "rendered path `{}` is not a valid request target: \
                             it has `{}` (percent-encode it)",
                            s.url,
                            b.escape_default()
                        ),
                    ));
                }
                s.wbuf.extend_from_slice(self.method.as_str().as_bytes());
                s.wbuf.push(b' ');
                s.wbuf.extend_from_slice(s.url.as_bytes());
                s.wbuf.extend_from_slice(b" HTTP/1.1\r\n");
            }
        }
        s.wbuf.extend_from_slice(&self.h1_headers);
        for (name, tpl) in &self.dynamic_headers {
            s.tmp.clear();
            tpl.render_into(&mut s.tmp, &mut s.rng, &s.vars);
            if !valid_header_value(&s.tmp) {
                return Err(invalid_header(name, &s.tmp));
            }
            push_header_line(&mut s.wbuf, name.as_str(), s.tmp.as_bytes());
        }
        if !s.text.is_empty() || self.h1_length_always {
            use std::io::Write;
            let _ = write!(s.wbuf, "content-length: {}\r\n", s.text.len());
        }
        s.wbuf.extend_from_slice(b"\r\n");
        s.wbuf.extend_from_slice(s.text.as_bytes());
        Ok(())
    }
}

fn invalid_header(name: &HeaderName, value: &str) -> CallResult {
    CallResult::Failed(
        TransportError::Other,
        format!("header `{name}` rendered to an invalid value `{value}`"),
    )
}

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
    /// Resolves targets and compiles the templates of a validated scenario.
    pub fn new(s: &Scenario) -> Result<Self, String> {
        let env = TemplateEnv::new(
            s.data
                .iter()
                .map(|d| (d.name.as_str(), d.values.as_slice())),
        )
        .with_vars(s.variables.iter().cloned().enumerate().map(|(i, n)| (n, i)));
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
                        &env,
                    )?),
                    Call::Grpc(g) => Prepared::Grpc(PreparedGrpc::new(
                        r.name.as_str(),
                        g,
                        &endpoints[target],
                        &env,
                    )?),
                };
                Ok(PlannedCall {
                    target,
                    expect: r.expect.clone(),
                    call,
                    rules: ResponseRules::of(r)
                        .map_err(|e| format!("request `{}`: {e}", r.name))?,
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

impl CallExecutor {
    /// Renders request `r` for an HTTP/2 connection.
    fn build_h2_request(
        &self,
        r: &PreparedRequest,
        e: &Endpoint,
        s: &mut Scratch,
    ) -> Result<Request<Full<Bytes>>, CallResult> {
        let uri = match &r.static_uri {
            Some(uri) => uri.clone(),
            None => {
                r.render_target(e, &mut s.url, &mut s.tmp, &mut s.rng, &s.vars);
                Uri::builder()
                    .scheme(e.scheme.clone())
                    .authority(e.authority.clone())
                    .path_and_query(s.url.as_str())
                    .build()
                    .map_err(|err| {
                        CallResult::Failed(
                            TransportError::Other,
                            format!("rendered path `{}` is not a valid URI: {err}", s.url),
                        )
                    })?
            }
        };
        r.render_body(s);
        let body = Bytes::from(std::mem::take(&mut s.text));
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = r.method.clone();
        *req.uri_mut() = uri;
        let headers = req.headers_mut();
        *headers = r.static_headers.clone();
        for (name, tpl) in &r.dynamic_headers {
            s.tmp.clear();
            tpl.render_into(&mut s.tmp, &mut s.rng, &s.vars);
            let v = HeaderValue::from_str(&s.tmp).map_err(|_| invalid_header(name, &s.tmp))?;
            headers.insert(name.clone(), v);
        }
        Ok(req)
    }
}

impl Executor for CallExecutor {
    async fn execute(&self, index: usize, s: &mut Scratch) -> CallResult {
        let planned = &self.plan.requests[index];
        let target = planned.target;
        let e = &self.plan.endpoints[target];
        match &planned.call {
            Prepared::Http(r) => self.execute_http(r, planned, target, e, s).await,
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

    async fn execute_http(
        &self,
        r: &PreparedRequest,
        planned: &PlannedCall,
        target: usize,
        e: &Endpoint,
        s: &mut Scratch,
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
                // server never saw. A request written whole is never sent
                // twice, even when the answer is a bare close, so the
                // server's counts can be compared with the client's.
                let retry = attempt == 0;
                match s.conns[target].as_mut().expect("connected above") {
                    Conn::H1(_) => match self.exchange_h1(r, planned, target, e, s).await {
                        Err(err) if err.unsent && retry => s.conns[target] = None,
                        Err(err) => return Err(CallResult::Failed(err.kind, err.message)),
                        Ok(done) => return Ok(done),
                    },
                    Conn::H2(sender) => {
                        let sender = sender.clone();
                        match self.exchange_h2(sender, r, planned, e, s).await {
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
    ) -> Result<CallResult, H1Error> {
        if let Err(failed) = r.write_h1(e, s) {
            return Ok(failed);
        }
        let Some(Conn::H1(conn)) = s.conns[target].as_mut() else {
            unreachable!("an HTTP/1.1 connection is open");
        };
        let head = conn
            .send(&s.wbuf, r.method == Method::HEAD, planned.rules.is_some())
            .await?;
        // The body is kept only when checks or captures read it, and only
        // for a status the step expects.
        let rules = planned
            .rules
            .as_ref()
            .filter(|_| planned.expect.accepts(Outcome::Status(head.status)));
        s.body.clear();
        conn.read_body(head.framing, rules.map(|_| &mut s.body))
            .await?;
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
        e: &Endpoint,
        s: &mut Scratch,
    ) -> Result<CallResult, Result<CallResult, CallResult>> {
        let req = self.build_h2_request(r, e, s).map_err(Err)?;
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

/// A plain GET client for one base URL, used to read Prometheus' API and
/// `/metrics` pages. It keeps one connection and reopens it when needed;
/// calls are serialised.
pub struct Fetcher {
    endpoint: Endpoint,
    conn: tokio::sync::Mutex<Option<Conn>>,
}

impl Fetcher {
    /// `url` is a base URL; `headers` are sent with every request.
    pub fn new(
        url: &str,
        headers: Vec<(String, String)>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let target = Target {
            name: url.to_owned(),
            url: url.trim_end_matches('/').to_owned(),
            headers,
            timeout,
            http2: false,
            insecure: false,
            grpc: None,
        };
        Ok(Self {
            endpoint: Endpoint::new(&target)?,
            conn: tokio::sync::Mutex::new(None),
        })
    }

    /// GETs `path_and_query` (appended to the base URL's path) and returns
    /// the status and the whole body.
    pub async fn get(&self, path_and_query: &str) -> Result<(u16, Bytes), String> {
        let e = &self.endpoint;
        let mut slot = self.conn.lock().await;
        let work = async {
            for attempt in 0..2 {
                let usable = match slot.as_mut() {
                    None => false,
                    Some(c) => c.usable().await,
                };
                if !usable {
                    *slot = Some(e.connect().await.map_err(|(_, m)| m)?);
                }
                let retry = attempt == 0;
                match slot.as_mut().expect("connected above") {
                    Conn::H1(conn) => {
                        let target = format!("{}{path_and_query}", e.prefix);
                        if let Some(b) = bad_target_byte(&target) {
                            return Err(format!(
                                "invalid request path `{path_and_query}`: it has `{}`",
                                b.escape_default()
                            ));
                        }
                        let mut req = format!("GET {target} HTTP/1.1\r\n").into_bytes();
                        req.extend_from_slice(&h1_header_lines(&e.headers, Some(&e.host_header)));
                        req.extend_from_slice(b"\r\n");
                        let head = match conn.send(&req, false, false).await {
                            Ok(head) => head,
                            Err(err) if err.unsent && retry => {
                                *slot = None;
                                continue;
                            }
                            Err(err) => return Err(err.message),
                        };
                        let mut body = Vec::new();
                        conn.read_body(head.framing, Some(&mut body))
                            .await
                            .map_err(|err| err.message)?;
                        return Ok((head.status, Bytes::from(body)));
                    }
                    Conn::H2(sender) => {
                        let uri: Uri = format!(
                            "{}://{}{}{}",
                            e.scheme, e.authority, e.prefix, path_and_query
                        )
                        .parse()
                        .map_err(|err| format!("invalid request path `{path_and_query}`: {err}"))?;
                        let mut req = Request::get(uri)
                            .body(Full::new(Bytes::new()))
                            .map_err(|err| err.to_string())?;
                        *req.headers_mut() = e.headers.clone();
                        let resp = match sender.try_send_request(req).await {
                            Ok(r) => r,
                            Err(mut err) => {
                                *slot = None;
                                // The server closed a kept-alive connection
                                // before the request left: retry once on a
                                // new one.
                                if retry && err.take_message().is_some() {
                                    continue;
                                }
                                return Err(chain(&err.into_error()));
                            }
                        };
                        let status = resp.status().as_u16();
                        let body = resp
                            .into_body()
                            .collect()
                            .await
                            .map_err(|err| format!("reading the response: {}", chain(&err)))?
                            .to_bytes();
                        return Ok((status, body));
                    }
                }
            }
            Err("the connection closed twice in a row".to_owned())
        };
        let result = tokio::time::timeout(e.timeout, work).await;
        match result {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(m)) => {
                *slot = None;
                Err(m)
            }
            Err(_) => {
                *slot = None;
                Err(format!("no answer within {:?}", e.timeout))
            }
        }
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
        r.write_h1(&p.endpoints[p.requests[i].target], &mut s)
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
            match r.write_h1(&p.endpoints[0], &mut s) {
                Err(CallResult::Failed(TransportError::Other, m)) => {
                    assert!(m.contains("percent-encode"), "{m}")
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
