//! HTTP requests prepared once from the compiled plan (method, static
//! headers serialised, request line built when nothing in it is
//! templated) and rendered per call into the worker's buffers.

use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, header};
use http_body_util::Full;

use super::connect::Endpoint;
use super::{CallResult, Scratch};
use crate::outcome::TransportError;
use crate::scenario::bad_target_byte;
use crate::scenario::{Body, HttpCall, MultipartPiece};
use crate::template::{JsonTemplate, Template, push_query_encoded};

/// `host` (when given and `headers` has none) and `headers`, serialised
/// for an HTTP/1.1 request head. Validation keeps framing headers
/// (`content-length`, `transfer-encoding` …) out of scenarios; the length
/// is written for each request's body.
pub(super) fn h1_header_lines(headers: &HeaderMap, host: Option<&HeaderValue>) -> Vec<u8> {
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

pub(super) fn push_header_line(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Whether a rendered value may go in a header: no control characters
/// but tab (the rule of [`HeaderValue::from_bytes`]).
pub(super) fn valid_header_value(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// A compiled body.
#[derive(Debug, Clone)]
pub(super) enum BodyTemplate {
    Json(JsonTemplate),
    Text(Template),
    Form(Vec<(String, Template)>),
    Multipart(Vec<MultipartPiece>),
}

/// One request ready to send: everything static is resolved up front.
#[derive(Debug)]
pub(super) struct PreparedRequest {
    pub(super) method: Method,
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
    /// The request target when it has no templates.
    static_path: Option<Box<str>>,
    /// The user's cookie jar for the target is read and filled.
    pub(super) jar: bool,
    /// Redirects to follow.
    pub(super) follow: u32,
    /// HTTP/1.1: `host` and the static headers, serialised.
    h1_headers: Vec<u8>,
    /// HTTP/1.1: whether an empty body still gets `content-length: 0`
    /// (methods that normally carry a body).
    h1_length_always: bool,
    /// HTTP/1.1: the request asks for `connection: close`, so each one
    /// goes out on a new connection.
    pub(super) h1_close: bool,
}

/// A request sent again to follow a redirect: to the path in
/// `Scratch::url`, with this method, with or without its body.
#[derive(Debug, Clone, Copy)]
pub(super) struct Hop<'a> {
    pub method: &'a Method,
    pub with_body: bool,
}

impl PreparedRequest {
    pub(super) fn new(name: &str, h: &HttpCall, endpoint: &Endpoint) -> Result<Self, String> {
        let mut static_headers = endpoint.headers.clone();
        let mut dynamic_headers = Vec::new();
        for (k, tpl) in &h.headers {
            match tpl.as_static() {
                Some(v) => {
                    let v = HeaderValue::from_str(v)
                        .map_err(|_| format!("request `{name}`: invalid value for header `{k}`"))?;
                    static_headers.insert(k.clone(), v);
                }
                None => dynamic_headers.push((k.clone(), tpl.clone())),
            }
        }
        // A templated header replaces the target's header of that name.
        for (name_, _) in &dynamic_headers {
            static_headers.remove(name_);
        }
        let dynamic = |n: &HeaderName| dynamic_headers.iter().any(|(d, _)| d == n);
        let jar = endpoint.cookies
            && !static_headers.contains_key(header::COOKIE)
            && !dynamic(&header::COOKIE);
        let body = match &h.body {
            None => None,
            Some(Body::Text(t)) => Some(BodyTemplate::Text(t.clone())),
            Some(Body::Form(fields)) => {
                if !static_headers.contains_key(header::CONTENT_TYPE)
                    && !dynamic(&header::CONTENT_TYPE)
                {
                    static_headers.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/x-www-form-urlencoded"),
                    );
                }
                Some(BodyTemplate::Form(fields.clone()))
            }
            Some(Body::Multipart(m)) => {
                if !static_headers.contains_key(header::CONTENT_TYPE)
                    && !dynamic(&header::CONTENT_TYPE)
                {
                    let v = format!("multipart/form-data; boundary={}", m.boundary);
                    static_headers.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_str(&v).expect("the boundary is a valid token"),
                    );
                }
                Some(BodyTemplate::Multipart(m.parts.clone()))
            }
            Some(Body::Json(j)) => {
                if !static_headers.contains_key(header::CONTENT_TYPE)
                    && !dynamic(&header::CONTENT_TYPE)
                {
                    static_headers.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                }
                Some(BodyTemplate::Json(j.clone()))
            }
        };
        let path = h.path.clone();
        let query = h.query.clone();
        let method = h.method.clone();
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
            static_path: None,
            // A cookie header written in the scenario is sent as written.
            jar,
            follow: h.follow_redirects.unwrap_or(endpoint.follow_redirects),
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
            prepared.static_path = Some(target.as_str().into());
            prepared.h1_line =
                Some(format!("{} {target} HTTP/1.1\r\n", prepared.method).into_bytes());
        }
        Ok(prepared)
    }

    /// The path (and query) the request went to: its static one, or the
    /// one rendered into `url`.
    pub(super) fn sent_path<'a>(&'a self, url: &'a str, hop: Option<Hop<'_>>) -> &'a str {
        match hop {
            Some(_) => url,
            None => self.static_path.as_deref().unwrap_or(url),
        }
    }

    /// Renders the request target (path and query) into `out`.
    pub(super) fn render_target(
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
    /// Renders the body into `s.text`, or a multipart one into `s.bin`.
    pub(super) fn render_body(&self, s: &mut Scratch) {
        s.text.clear();
        s.bin.clear();
        match &self.body {
            None => {}
            Some(BodyTemplate::Text(t)) => t.render_into(&mut s.text, &mut s.rng, &s.vars),
            Some(BodyTemplate::Json(t)) => {
                t.render_into(&mut s.text, &mut s.rng, &mut s.tmp, &s.vars)
            }
            Some(BodyTemplate::Form(fields)) => {
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        s.text.push('&');
                    }
                    s.text.push_str(k);
                    s.text.push('=');
                    s.tmp.clear();
                    v.render_into(&mut s.tmp, &mut s.rng, &s.vars);
                    push_query_encoded(&mut s.text, &s.tmp);
                }
            }
            Some(BodyTemplate::Multipart(parts)) => {
                for p in parts {
                    match p {
                        MultipartPiece::Bytes(b) => s.bin.extend_from_slice(b),
                        MultipartPiece::Field(t) => {
                            s.tmp.clear();
                            t.render_into(&mut s.tmp, &mut s.rng, &s.vars);
                            s.bin.extend_from_slice(s.tmp.as_bytes());
                        }
                    }
                }
            }
        }
    }

    /// Renders the whole HTTP/1.1 request, head and body, into `s.wbuf`.
    /// For a redirect `hop`, the request goes to `s.url` with its method.
    pub(super) fn write_h1(
        &self,
        e: &Endpoint,
        target: usize,
        s: &mut Scratch,
        hop: Option<Hop<'_>>,
    ) -> Result<(), CallResult> {
        // The body first: its length goes in the head.
        let with_body = hop.is_none_or(|h| h.with_body);
        if with_body {
            self.render_body(s);
        } else {
            s.text.clear();
            s.bin.clear();
        }
        s.wbuf.clear();
        match (&self.h1_line, hop) {
            (Some(line), None) => s.wbuf.extend_from_slice(line),
            _ => {
                if hop.is_none() {
                    self.render_target(e, &mut s.url, &mut s.tmp, &mut s.rng, &s.vars);
                }
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
                let method = hop.map_or(&self.method, |h| h.method);
                s.wbuf.extend_from_slice(method.as_str().as_bytes());
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
                return Err(invalid_header("header", name, &s.tmp));
            }
            push_header_line(&mut s.wbuf, name.as_str(), s.tmp.as_bytes());
        }
        if self.jar
            && let Some(jar) = s.jars.get_mut(target)
            && !jar.is_empty()
        {
            s.tmp.clear();
            let path = self.sent_path(&s.url, hop);
            if jar.write_header(&mut s.tmp, path, e.tls.is_some(), Instant::now()) {
                push_header_line(&mut s.wbuf, "cookie", s.tmp.as_bytes());
            }
        }
        // At most one of `text` and `bin` holds the body.
        let length = s.text.len() + s.bin.len();
        if length > 0 || (self.h1_length_always && with_body) {
            use std::io::Write;
            let _ = write!(s.wbuf, "content-length: {length}\r\n");
        }
        s.wbuf.extend_from_slice(b"\r\n");
        s.wbuf.extend_from_slice(s.text.as_bytes());
        s.wbuf.extend_from_slice(&s.bin);
        Ok(())
    }
}

/// A header (or gRPC metadata, `what`) that rendered to a value that
/// cannot be sent. The message says where and why but never quotes the
/// value: headers carry tokens, and the message lands in every report.
pub(super) fn invalid_header(what: &str, name: &HeaderName, value: &str) -> CallResult {
    let why = match value
        .bytes()
        .enumerate()
        .find(|&(_, b)| b != b'\t' && (b < 0x20 || b == 0x7f))
    {
        Some((at, b)) => format!("control character 0x{b:02x} at byte {at}"),
        None => "a byte HTTP forbids".to_owned(),
    };
    CallResult::Failed(
        TransportError::Other,
        format!(
            "{what} `{name}` rendered to an invalid value ({} bytes, {why})",
            value.len()
        ),
    )
}

impl PreparedRequest {
    /// Renders request `r` for an HTTP/2 connection.
    pub(super) fn h2_request(
        &self,
        e: &Endpoint,
        target: usize,
        s: &mut Scratch,
        hop: Option<Hop<'_>>,
    ) -> Result<Request<Full<Bytes>>, CallResult> {
        let uri = match (&self.static_uri, hop) {
            (Some(uri), None) => uri.clone(),
            _ => {
                if hop.is_none() {
                    self.render_target(e, &mut s.url, &mut s.tmp, &mut s.rng, &s.vars);
                }
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
        if hop.is_none_or(|h| h.with_body) {
            self.render_body(s);
        } else {
            s.text.clear();
            s.bin.clear();
        }
        let body = if s.bin.is_empty() {
            Bytes::from(std::mem::take(&mut s.text))
        } else {
            Bytes::from(std::mem::take(&mut s.bin))
        };
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = hop.map_or(&self.method, |h| h.method).clone();
        *req.uri_mut() = uri;
        let headers = req.headers_mut();
        *headers = self.static_headers.clone();
        for (name, tpl) in &self.dynamic_headers {
            s.tmp.clear();
            tpl.render_into(&mut s.tmp, &mut s.rng, &s.vars);
            let v = HeaderValue::from_str(&s.tmp)
                .map_err(|_| invalid_header("header", name, &s.tmp))?;
            headers.insert(name.clone(), v);
        }
        if self.jar
            && let Some(jar) = s.jars.get_mut(target)
            && !jar.is_empty()
        {
            s.tmp.clear();
            let path = self.sent_path(&s.url, hop);
            if jar.write_header(&mut s.tmp, path, e.tls.is_some(), Instant::now())
                && let Ok(v) = HeaderValue::from_str(&s.tmp)
            {
                headers.insert(header::COOKIE, v);
            }
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_header_value_is_described_not_quoted() {
        let name = HeaderName::from_static("authorization");
        let CallResult::Failed(kind, message) =
            invalid_header("header", &name, "Bearer secret-token\n")
        else {
            panic!("a failure")
        };
        assert_eq!(kind, TransportError::Other);
        assert!(!message.contains("secret"), "{message}");
        assert_eq!(
            message,
            "header `authorization` rendered to an invalid value (20 bytes, control character 0x0a at byte 19)"
        );
    }
}
