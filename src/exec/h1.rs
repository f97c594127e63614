//! HTTP/1.1 on one connection, for load and for the fetcher.
//!
//! A request goes out in one write and its response is read straight off
//! the socket into a buffer the connection keeps: no connection task, no
//! channels between tasks, and no header map unless checks read headers.
//! That is most of the per-request CPU a load generator controls, which is
//! why HTTP/1.1 does not go through hyper here (HTTP/2 and gRPC do).
//!
//! Responses are framed as RFC 9112 §6.3 says: no body after `HEAD`, 1xx,
//! 204 and 304; chunked when `transfer-encoding` ends in `chunked`; else
//! `content-length`; else the body runs to the end of the connection.
//! Interim 1xx responses (`100 Continue`, `103 Early Hints`) are skipped.
//! Head parsing and chunk sizes are httparse's.

use std::mem::MaybeUninit;
use std::task::{Context, Poll, Waker};

use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

use super::classify;
use crate::outcome::TransportError;

/// The read buffer's starting size; it grows only for a larger head.
const BUFFER: usize = 16 * 1024;
/// The largest response head (status line and headers) accepted.
const MAX_HEAD: usize = 256 * 1024;
const MAX_HEADERS: usize = 256;
/// The longest chunk-size line or trailer line accepted.
const MAX_LINE: usize = 8 * 1024;

/// How a response's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// The server closes the connection after the body.
    Close,
}

/// A response's status line and headers.
#[derive(Debug)]
pub(crate) struct Head {
    pub status: u16,
    /// Filled only when asked for.
    pub headers: HeaderMap,
    pub framing: Framing,
}

/// Why an exchange failed.
#[derive(Debug)]
pub(crate) struct H1Error {
    pub kind: TransportError,
    pub message: String,
    /// The request could not be written on a connection that had already
    /// served a response: the server closed it while idle and never saw
    /// this request, so it may be sent again on a new connection.
    pub unsent: bool,
    /// The request went out whole on a connection that had already served
    /// a response, and the server closed it without a byte of answer: a
    /// keep-alive connection closed while idle, just as the request was
    /// written. The server most likely never read it; an idempotent
    /// request may be sent again on a new connection.
    pub stale: bool,
}

impl H1Error {
    fn new(kind: TransportError, message: String) -> Self {
        Self {
            kind,
            message,
            unsent: false,
            stale: false,
        }
    }

    fn io(e: &std::io::Error, what: &str) -> Self {
        Self::new(classify(e), format!("{what}: {e}"))
    }
}

/// One HTTP/1.1 connection. Requests are sent one at a time.
pub(crate) struct H1Conn {
    io: Box<dyn Io>,
    buf: Vec<u8>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// Whether the next request may go out: false from the moment a
    /// request is written until its response has been read whole, and for
    /// good once the server said it closes or ended a body by closing. An
    /// exchange cut off midway thus never leaves a connection that looks
    /// reusable.
    reusable: bool,
    /// Whether the response being read lets the connection be kept.
    keep_alive: bool,
    /// Whether a response has been read on this connection.
    reused: bool,
    /// The largest body kept when a body is kept: a metrics page or an
    /// API answer that never ends must not take the machine's memory.
    max_body: usize,
}

impl H1Conn {
    pub(crate) fn new(io: Box<dyn Io>) -> Self {
        Self {
            io,
            buf: vec![0; BUFFER],
            start: 0,
            end: 0,
            reusable: true,
            keep_alive: true,
            reused: false,
            max_body: usize::MAX,
        }
    }

    /// Caps the bodies kept by [`H1Conn::read_body`]; a longer one is a
    /// `body` error and the connection is not reused.
    pub(crate) fn set_max_body(&mut self, max: usize) {
        self.max_body = max;
    }

    fn over_cap(&mut self, sink: &Option<&mut Vec<u8>>, announced: u64) -> Result<(), H1Error> {
        let kept = sink.as_deref().map_or(0, Vec::len) as u64;
        if sink.is_some() && kept.saturating_add(announced) > self.max_body as u64 {
            return Err(self.fail(
                TransportError::Body,
                format!("the response body is over the {} byte limit", self.max_body),
            ));
        }
        Ok(())
    }

    /// Whether another request can go out on this connection. A server
    /// that closed an idle connection (or sent bytes nobody asked for)
    /// shows up as a readable socket; the check uses the readiness the
    /// runtime already holds, so it costs no system call when idle.
    pub(crate) fn is_usable(&mut self) -> bool {
        if !self.reusable {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut probe = [0u8; 1];
        let mut rb = ReadBuf::new(&mut probe);
        match std::pin::Pin::new(&mut self.io).poll_read(&mut cx, &mut rb) {
            Poll::Pending => true,
            Poll::Ready(_) => {
                self.reusable = false;
                false
            }
        }
    }

    /// Writes `request` (head and body, complete) and reads the response
    /// head. `head_request` says the method was `HEAD`, whose response
    /// has no body; `want_headers` fills [`Head::headers`], `want_session`
    /// puts at least `set-cookie` and `location` there. The body must then be
    /// read with [`H1Conn::read_body`] before the next request.
    pub(crate) async fn send(
        &mut self,
        request: &[u8],
        head_request: bool,
        want_headers: bool,
        want_session: bool,
    ) -> Result<Head, H1Error> {
        let reused = self.reused;
        self.reusable = false;
        if let Err(e) = async {
            self.io.write_all(request).await?;
            self.io.flush().await
        }
        .await
        {
            let mut err = H1Error::io(&e, "sending the request");
            err.unsent = reused;
            return Err(err);
        }
        self.reused = true;
        // Whether any of the answer arrived (an interim response counts).
        let mut answered = false;
        loop {
            match self.parse_head(head_request, want_headers, want_session) {
                Ok(Some((status, head))) => {
                    answered = true;
                    // Interim responses precede the real one; a 101 is
                    // final (and ends HTTP on this connection).
                    if (100..200).contains(&status) && status != 101 {
                        continue;
                    }
                    self.keep_alive = head.keep_alive && status != 101;
                    return Ok(Head {
                        status,
                        headers: head.headers,
                        framing: head.framing,
                    });
                }
                Ok(None) => {
                    if self.end - self.start >= MAX_HEAD {
                        return Err(self.fail(
                            TransportError::Other,
                            format!("the response head is larger than {} KiB", MAX_HEAD / 1024),
                        ));
                    }
                    let silent = !answered && self.end == self.start;
                    let read = self.fill().await;
                    let closed = match &read {
                        Ok(0) => Some(String::new()),
                        Err(e) if e.kind == TransportError::Reset => {
                            Some(format!(" ({})", e.message))
                        }
                        _ => None,
                    };
                    if let (true, Some(how)) = (silent, closed) {
                        let mut err = self.fail(
                            TransportError::NoResponse,
                            format!("the server closed the connection before any response{how}"),
                        );
                        err.stale = reused;
                        return Err(err);
                    }
                    match read {
                        Ok(0) => {
                            return Err(self.fail(
                                TransportError::Reset,
                                "the server closed the connection in the middle of the response head"
                                    .to_owned(),
                            ));
                        }
                        Ok(_) => {}
                        Err(e) => return Err(e),
                    }
                }
                Err(m) => {
                    return Err(
                        self.fail(TransportError::Other, format!("invalid HTTP response: {m}"))
                    );
                }
            }
        }
    }

    /// Parses a response head from the buffer and consumes it; `None`
    /// when the head is not all there yet. Kept out of [`H1Conn::send`] so
    /// the room for headers is not part of its future.
    fn parse_head(
        &mut self,
        head_request: bool,
        want_headers: bool,
        want_session: bool,
    ) -> Result<Option<(u16, ParsedHead)>, String> {
        // Uninitialised: clearing room for every header on each parse
        // would cost more than the parse.
        let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut resp,
            &self.buf[self.start..self.end],
            &mut headers,
        ) {
            Ok(httparse::Status::Complete(len)) => {
                let status = resp.code.unwrap_or(0);
                let head = read_head(&resp, head_request, want_headers, want_session)?;
                self.start += len;
                Ok(Some((status, head)))
            }
            Ok(httparse::Status::Partial) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Reads the body the head announced, appending it to `sink` when
    /// given and discarding it otherwise.
    pub(crate) async fn read_body(
        &mut self,
        framing: Framing,
        mut sink: Option<&mut Vec<u8>>,
    ) -> Result<(), H1Error> {
        match framing {
            Framing::Empty => {}
            Framing::Length(n) => {
                self.over_cap(&sink, n)?;
                self.copy(n, &mut sink).await?
            }
            Framing::Chunked => loop {
                let size = self.chunk_size().await?;
                if size == 0 {
                    self.trailers().await?;
                    break;
                }
                self.over_cap(&sink, size)?;
                self.copy(size, &mut sink).await?;
                self.expect_crlf().await?;
            },
            Framing::Close => loop {
                self.take(u64::MAX, &mut sink);
                self.over_cap(&sink, 0)?;
                if self.fill().await.map_err(body_error)? == 0 {
                    break;
                }
            },
        }
        // Bytes after the response that nobody asked for make the
        // connection unusable too.
        self.reusable = self.keep_alive && self.start == self.end;
        Ok(())
    }

    fn fail(&mut self, kind: TransportError, message: String) -> H1Error {
        self.keep_alive = false;
        H1Error::new(kind, message)
    }

    /// Reads more bytes after `end`, compacting the buffer first and
    /// growing it when it is full (only a large head fills it: bodies are
    /// consumed as they arrive, and framing lines are short). Returns 0 at
    /// the end of the connection.
    async fn fill(&mut self) -> Result<usize, H1Error> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                self.buf.resize((self.buf.len() * 2).min(MAX_HEAD), 0);
            }
        }
        debug_assert!(self.end < self.buf.len());
        match self.io.read(&mut self.buf[self.end..]).await {
            Ok(n) => {
                self.end += n;
                Ok(n)
            }
            Err(e) => {
                self.keep_alive = false;
                Err(H1Error::io(&e, "reading the response"))
            }
        }
    }

    /// Consumes up to `n` buffered body bytes; returns how many.
    fn take(&mut self, n: u64, sink: &mut Option<&mut Vec<u8>>) -> u64 {
        let have = (self.end - self.start) as u64;
        let k = have.min(n) as usize;
        if let Some(out) = sink.as_deref_mut() {
            out.extend_from_slice(&self.buf[self.start..self.start + k]);
        }
        self.start += k;
        k as u64
    }

    /// Consumes exactly `n` body bytes.
    async fn copy(&mut self, mut n: u64, sink: &mut Option<&mut Vec<u8>>) -> Result<(), H1Error> {
        loop {
            n -= self.take(n, sink);
            if n == 0 {
                return Ok(());
            }
            if self.fill().await.map_err(body_error)? == 0 {
                return Err(self.fail(
                    TransportError::Reset,
                    format!("the server closed the connection with {n} body bytes still to come"),
                ));
            }
        }
    }

    async fn chunk_size(&mut self) -> Result<u64, H1Error> {
        loop {
            match httparse::parse_chunk_size(&self.buf[self.start..self.end]) {
                Ok(httparse::Status::Complete((used, size))) => {
                    self.start += used;
                    return Ok(size);
                }
                Ok(httparse::Status::Partial) => self.more_line().await?,
                Err(_) => {
                    return Err(self.fail(
                        TransportError::Body,
                        "invalid chunk size in a chunked body".to_owned(),
                    ));
                }
            }
        }
    }

    /// Skips the trailer section after the last chunk, up to its empty line.
    async fn trailers(&mut self) -> Result<(), H1Error> {
        loop {
            let rest = &self.buf[self.start..self.end];
            match rest.windows(2).position(|w| w == b"\r\n") {
                Some(at) => {
                    self.start += at + 2;
                    if at == 0 {
                        return Ok(());
                    }
                }
                None => self.more_line().await?,
            }
        }
    }

    async fn expect_crlf(&mut self) -> Result<(), H1Error> {
        while self.end - self.start < 2 {
            self.more_line().await?;
        }
        if &self.buf[self.start..self.start + 2] != b"\r\n" {
            return Err(self.fail(
                TransportError::Body,
                "a chunk of a chunked body does not end with CRLF".to_owned(),
            ));
        }
        self.start += 2;
        Ok(())
    }

    /// Reads more of a framing line, which must end within [`MAX_LINE`].
    async fn more_line(&mut self) -> Result<(), H1Error> {
        if self.end - self.start > MAX_LINE {
            return Err(self.fail(
                TransportError::Body,
                "a line of a chunked body is too long".to_owned(),
            ));
        }
        if self.fill().await.map_err(body_error)? == 0 {
            return Err(self.fail(
                TransportError::Reset,
                "the server closed the connection in the middle of a chunked body".to_owned(),
            ));
        }
        Ok(())
    }
}

/// An I/O failure while reading a body: a kind the classifier cannot place
/// is a body error.
fn body_error(mut e: H1Error) -> H1Error {
    if e.kind == TransportError::Other {
        e.kind = TransportError::Body;
    }
    e
}

struct ParsedHead {
    headers: HeaderMap,
    framing: Framing,
    keep_alive: bool,
}

/// Framing and persistence from a parsed head (RFC 9112 §6.3 and §9.3).
fn read_head(
    resp: &httparse::Response<'_, '_>,
    head_request: bool,
    want_headers: bool,
    want_session: bool,
) -> Result<ParsedHead, String> {
    let status = resp.code.unwrap_or(0);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoded = false;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut headers = HeaderMap::new();
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            // Digits only; a list of equal values counts as one (RFC 9110
            // §8.6).
            for item in h.value.split(|&b| b == b',') {
                let v = parse_length(item.trim_ascii()).ok_or_else(|| {
                    format!(
                        "invalid content-length `{}`",
                        String::from_utf8_lossy(h.value)
                    )
                })?;
                if length.is_some_and(|l| l != v) {
                    return Err("conflicting content-length values".to_owned());
                }
                length = Some(v);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoded = true;
            chunked = last_token(h.value).eq_ignore_ascii_case(b"chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        if (want_headers
            || (want_session
                && (h.name.eq_ignore_ascii_case("set-cookie")
                    || h.name.eq_ignore_ascii_case("location"))))
            && let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(h.name.as_bytes()),
                HeaderValue::from_bytes(h.value),
            )
        {
            headers.append(name, value);
        }
    }
    let framing = if head_request || (100..200).contains(&status) || status == 204 || status == 304
    {
        Framing::Empty
    } else if transfer_encoded {
        if chunked {
            Framing::Chunked
        } else {
            Framing::Close
        }
    } else {
        match length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    };
    let http10 = resp.version == Some(0);
    // Transfer-Encoding beside Content-Length, or from an HTTP/1.0 server,
    // may have been framed differently by something on the way: read the
    // body, but do not trust the connection after it (RFC 9112 §6.1).
    let suspect = transfer_encoded && (length.is_some() || http10);
    let keep_alive =
        !close && !suspect && (!http10 || keep_alive_token) && framing != Framing::Close;
    Ok(ParsedHead {
        headers,
        framing,
        keep_alive,
    })
}

fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn last_token(value: &[u8]) -> &[u8] {
    value
        .rsplit(|&b| b == b',')
        .next()
        .unwrap_or_default()
        .trim_ascii()
}

/// A connected socket, plain or TLS.
pub(crate) trait Io:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static
{
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Io for T {}

#[cfg(test)]
mod tests;
