//! Executors send one request and say what happened. The engine drives
//! them through the [`Executor`] trait and never sees a protocol.
//!
//! Executors are built once per engine thread by an [`ExecutorFactory`]:
//! each thread gets its own connection pool, so connections never hop
//! between threads and nothing is shared on the hot path.

use std::error::Error as _;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, Method};

use crate::measure::TransportError;
use crate::scenario::{Body, Expect, Scenario};
use crate::template::{JsonTemplate, Template, TemplateEnv, compile_located};

/// A compiled body.
#[derive(Debug, Clone)]
enum BodyTemplate {
    Json(JsonTemplate),
    Text(Template),
}

/// Every template of one HTTP request, compiled.
#[derive(Debug, Clone)]
struct HttpTemplate {
    path: Template,
    /// Keys are already percent-encoded.
    query: Vec<(String, Template)>,
    headers: Vec<(String, Template)>,
    body: Option<BodyTemplate>,
}

impl HttpTemplate {
    fn compile(h: &crate::scenario::HttpCall, env: &TemplateEnv) -> Result<Self, String> {
        let t = |l| compile_located(l, env).map_err(|e| e.message);
        Ok(Self {
            path: t(&h.path)?,
            query: h
                .query
                .iter()
                .map(|(k, v)| {
                    let mut key = String::new();
                    crate::template::push_query_encoded(&mut key, k);
                    Ok((key, t(v)?))
                })
                .collect::<Result<_, String>>()?,
            headers: h
                .headers
                .iter()
                .map(|(k, v)| Ok((k.clone(), t(v)?)))
                .collect::<Result<_, String>>()?,
            body: match &h.body {
                None => None,
                Some(Body::Text(b)) => Some(BodyTemplate::Text(t(b)?)),
                Some(Body::Json(j)) => Some(BodyTemplate::Json(
                    JsonTemplate::compile(j, env).map_err(|e| {
                        e.into_iter()
                            .map(|e| e.message)
                            .collect::<Vec<_>>()
                            .join("; ")
                    })?,
                )),
            },
        })
    }
}

/// The result of one call.
#[derive(Debug, Clone, PartialEq)]
pub enum CallResult {
    /// A response with this status, read to the last byte.
    Status(u16),
    /// No (complete) response; the message explains.
    Failed(TransportError, String),
}

/// Per-worker buffers and randomness, reused across requests.
pub struct Scratch {
    pub rng: fastrand::Rng,
    url: String,
    text: String,
    tmp: String,
}

impl Scratch {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
            url: String::with_capacity(128),
            text: String::new(),
            tmp: String::new(),
        }
    }
}

/// Sends requests by index into the scenario's request list.
pub trait Executor {
    fn execute(&self, request: usize, scratch: &mut Scratch) -> impl Future<Output = CallResult>;

    /// Whether `status` meets request `request`'s expectation.
    fn accepts(&self, request: usize, status: u16) -> bool;
}

/// Builds one executor per engine thread.
pub trait ExecutorFactory: Send + Sync + 'static {
    type Executor: Executor + 'static;
    fn build(&self) -> Result<Self::Executor, String>;
}

/// One request ready to send: everything static is resolved up front.
#[derive(Debug)]
struct PreparedRequest {
    target: usize,
    method: Method,
    base: String,
    templates: HttpTemplate,
    static_headers: HeaderMap,
    dynamic_headers: Vec<(HeaderName, crate::template::Template)>,
    expect: Expect,
}

/// Everything needed to build HTTP executors, shared by all threads.
#[derive(Debug)]
pub struct HttpPlan {
    targets: Vec<crate::scenario::Target>,
    requests: Vec<PreparedRequest>,
}

impl HttpPlan {
    /// Compiles the templates of every request of a validated scenario.
    pub fn new(s: &Scenario) -> Result<Self, String> {
        let env = TemplateEnv::new(
            s.data
                .iter()
                .map(|d| (d.name.as_str(), d.values.as_slice())),
        );
        let mut requests = Vec::new();
        for r in &s.requests {
            let t = HttpTemplate::compile(&r.http, &env)
                .map_err(|e| format!("request `{}`: {e}", r.name))?;
            let target = &s.targets[r.http.target];
            let mut static_headers = HeaderMap::new();
            let mut dynamic_headers = Vec::new();
            for (name, tpl) in &t.headers {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("request `{}`: invalid header name `{name}`", r.name))?;
                match tpl.as_static() {
                    Some(v) => {
                        let v = HeaderValue::from_str(v).map_err(|_| {
                            format!("request `{}`: invalid value for header `{name}`", r.name)
                        })?;
                        static_headers.insert(name, v);
                    }
                    None => dynamic_headers.push((name, tpl.clone())),
                }
            }
            if matches!(t.body, Some(BodyTemplate::Json(_)))
                && !static_headers.contains_key(CONTENT_TYPE)
            {
                static_headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            requests.push(PreparedRequest {
                target: r.http.target,
                method: Method::from_bytes(r.http.method.as_bytes()).map_err(|e| e.to_string())?,
                base: target.url.clone(),
                templates: t,
                static_headers,
                dynamic_headers,
                expect: r.expect.clone(),
            });
        }
        Ok(Self {
            targets: s.targets.clone(),
            requests,
        })
    }
}

/// Installs the TLS crypto provider once per process.
pub fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// HTTP executor over reqwest, with one client (connection pool) per target.
pub struct HttpExecutor {
    plan: Arc<HttpPlan>,
    clients: Vec<Client>,
}

impl ExecutorFactory for Arc<HttpPlan> {
    type Executor = HttpExecutor;

    fn build(&self) -> Result<HttpExecutor, String> {
        init_tls();
        let clients = self
            .targets
            .iter()
            .map(|t| {
                let mut headers = HeaderMap::new();
                for (k, v) in &t.headers {
                    headers.insert(
                        HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?,
                        HeaderValue::from_str(v).map_err(|e| e.to_string())?,
                    );
                }
                let mut b = Client::builder()
                    .user_agent(concat!("redproof/", env!("CARGO_PKG_VERSION")))
                    .default_headers(headers)
                    .timeout(t.timeout)
                    .connect_timeout(t.timeout.min(Duration::from_secs(10)))
                    .tcp_nodelay(true)
                    .pool_max_idle_per_host(usize::MAX)
                    .no_proxy();
                if t.http2 {
                    b = b.http2_prior_knowledge();
                }
                if t.insecure {
                    b = b.tls_danger_accept_invalid_certs(true);
                }
                b.build().map_err(|e| {
                    format!(
                        "target `{}`: cannot build an HTTP client: {}",
                        t.name,
                        chain(&e)
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(HttpExecutor {
            plan: self.clone(),
            clients,
        })
    }
}

impl Executor for HttpExecutor {
    async fn execute(&self, index: usize, s: &mut Scratch) -> CallResult {
        let r = &self.plan.requests[index];
        let t = &r.templates;
        s.url.clear();
        s.url.push_str(&r.base);
        t.path.render_into(&mut s.url, &mut s.rng);
        for (i, (k, v)) in t.query.iter().enumerate() {
            s.url.push(if i == 0 { '?' } else { '&' });
            s.url.push_str(k);
            s.url.push('=');
            s.tmp.clear();
            v.render_into(&mut s.tmp, &mut s.rng);
            crate::template::push_query_encoded(&mut s.url, &s.tmp);
        }
        let mut rb = self.clients[r.target].request(r.method.clone(), s.url.as_str());
        if !r.static_headers.is_empty() {
            rb = rb.headers(r.static_headers.clone());
        }
        for (name, tpl) in &r.dynamic_headers {
            s.tmp.clear();
            tpl.render_into(&mut s.tmp, &mut s.rng);
            match HeaderValue::from_str(&s.tmp) {
                Ok(v) => rb = rb.header(name, v),
                Err(_) => {
                    return CallResult::Failed(
                        TransportError::Other,
                        format!("header `{name}` rendered to an invalid value `{}`", s.tmp),
                    );
                }
            }
        }
        match &t.body {
            None => {}
            Some(BodyTemplate::Text(tpl)) => {
                s.text.clear();
                tpl.render_into(&mut s.text, &mut s.rng);
                rb = rb.body(s.text.clone());
            }
            Some(BodyTemplate::Json(tpl)) => {
                s.text.clear();
                tpl.render_into(&mut s.text, &mut s.rng, &mut s.tmp);
                rb = rb.body(s.text.clone());
            }
        }
        let mut resp = match rb.send().await {
            Ok(resp) => resp,
            Err(e) => return CallResult::Failed(classify(&e), chain(&e)),
        };
        let status = resp.status().as_u16();
        loop {
            match resp.chunk().await {
                Ok(Some(_)) => {}
                Ok(None) => return CallResult::Status(status),
                Err(e) => {
                    let kind = match classify(&e) {
                        TransportError::Other => TransportError::Body,
                        k => k,
                    };
                    return CallResult::Failed(kind, chain(&e));
                }
            }
        }
    }

    fn accepts(&self, request: usize, status: u16) -> bool {
        self.plan.requests[request].expect.accepts(status)
    }
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

/// Sorts a reqwest error into a transport error kind by walking its
/// causes: the I/O error kind is the most reliable signal, then TLS and
/// DNS errors by type or message.
pub fn classify(e: &reqwest::Error) -> TransportError {
    if e.is_timeout() {
        return TransportError::Timeout;
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = e.source();
    let mut text = String::new();
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
        text.push_str(&c.to_string());
        text.push('\n');
        cur = c.source();
    }
    if text.contains("dns error") || text.contains("failed to lookup address") {
        TransportError::Dns
    } else if e.is_connect() {
        TransportError::Connect
    } else if text.contains("connection closed")
        || text.contains("connection reset")
        || text.contains("closed before message completed")
        || text.contains("stream error")
    {
        TransportError::Reset
    } else if e.is_body() || e.is_decode() {
        TransportError::Body
    } else {
        TransportError::Other
    }
}
