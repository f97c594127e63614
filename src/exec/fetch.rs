//! A small GET client over the executors' connection code, for
//! Prometheus' HTTP API and `/metrics` pages.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full};

use super::chain;
use super::connect::{Conn, Endpoint};
use super::request::h1_header_lines;
use crate::scenario::Target;
use crate::scenario::{BaseUrl, bad_target_byte};

/// Why a GET failed.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchError {
    pub message: String,
    /// A response head arrived: the server is there, and what it sent
    /// (its body) was the problem.
    pub answered: bool,
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A plain GET client for one base URL, used to read Prometheus' API and
/// `/metrics` pages. It keeps one connection and reopens it when needed;
/// calls are serialised.
pub struct Fetcher {
    endpoint: Endpoint,
    conn: tokio::sync::Mutex<Option<Conn>>,
    /// The largest body read; a longer answer is an error, not a reason
    /// to grow without bound.
    max_body: usize,
}

impl Fetcher {
    /// `url` is a base URL; `headers` are sent with every request.
    pub fn new(
        url: &BaseUrl,
        headers: Vec<(HeaderName, HeaderValue)>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let target = Target {
            name: url.to_string(),
            url: url.clone(),
            headers,
            timeout,
            http2: false,
            insecure: false,
            max_body: crate::scenario::verification::DEFAULT_MAX_RESPONSE,
            grpc: None,
            cookies: false,
            follow_redirects: 0,
            tls: None,
        };
        Ok(Self {
            endpoint: Endpoint::new(&target)?,
            conn: tokio::sync::Mutex::new(None),
            max_body: crate::scenario::verification::DEFAULT_MAX_RESPONSE,
        })
    }

    /// Caps the bodies this fetcher reads at `max` bytes.
    pub fn with_max_body(mut self, max: usize) -> Self {
        self.max_body = max;
        self
    }

    /// GETs `path_and_query` (appended to the base URL's path) and returns
    /// the status and the whole body.
    pub async fn get(&self, path_and_query: &str) -> Result<(u16, Bytes), FetchError> {
        let e = &self.endpoint;
        let mut slot = self.conn.lock().await;
        let mut answered = false;
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
                        let head = match conn.send(&req, false, false, false).await {
                            Ok(head) => head,
                            // A kept-alive connection that closed as the
                            // request went out: a GET is sent once more.
                            Err(err) if (err.unsent || err.stale) && retry => {
                                *slot = None;
                                continue;
                            }
                            Err(err) => return Err(err.message),
                        };
                        answered = true;
                        let mut body = Vec::new();
                        conn.set_max_body(self.max_body);
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
                        answered = true;
                        let status = resp.status().as_u16();
                        let body = http_body_util::Limited::new(resp.into_body(), self.max_body)
                            .collect()
                            .await
                            .map_err(|err| {
                                format!("reading the response: {}", chain(err.as_ref()))
                            })?
                            .to_bytes();
                        return Ok((status, body));
                    }
                }
            }
            Err("the connection closed twice in a row".to_owned())
        };
        let result = tokio::time::timeout(e.timeout, work).await;
        let message = match result {
            Ok(Ok(r)) => return Ok(r),
            Ok(Err(m)) => m,
            Err(_) if answered => format!("the body did not arrive within {:?}", e.timeout),
            Err(_) => format!("no answer within {:?}", e.timeout),
        };
        *slot = None;
        Err(FetchError { message, answered })
    }
}
