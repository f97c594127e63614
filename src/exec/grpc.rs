//! The gRPC executor: any method described by `.proto` files or server
//! reflection, with no generated code.
//!
//! Request messages are written as JSON (protobuf's JSON mapping) and
//! turned into protobuf with prost-reflect's dynamic messages: once, when
//! the message has no templates, or per call when it has. Calls go through
//! tonic's client (`tonic::client::Grpc`) with a codec that moves encoded
//! messages as bytes, over the worker's own HTTP/2 connection to the
//! target, so gRPC shares the HTTP executor's connection handling (TLS,
//! timeouts, one connection per worker and target).
//!
//! Response messages are counted, not decoded: a load test needs the
//! status and the message counts, and decoding would only cost CPU.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, Uri};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataMap;

use super::check::ResponseRules;
use super::connect::Endpoint;
use super::request::invalid_header;
use super::{CallResult, Scratch, chain, classify};
use crate::outcome::{Answer, GrpcCode, Outcome, TransportError};
use crate::scenario::{Expect, GrpcCall, GrpcKind, Target};
use crate::template::{JsonTemplate, Template};

/// A worker's HTTP/2 connection to a gRPC target.
pub(crate) type GrpcConn = http2::SendRequest<tonic::body::Body>;

/// Opens a gRPC connection: HTTP/2 with prior knowledge, or over TLS.
pub(crate) async fn connect(e: &Endpoint) -> Result<GrpcConn, (TransportError, String)> {
    let (io, _) = e.open().await?;
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
        .await
        .map_err(|err| (classify(&err), format!("HTTP/2 handshake: {}", chain(&err))))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// The connection as a tower service, which is what tonic's client calls.
#[derive(Clone)]
struct Channel(GrpcConn);

impl tower_service::Service<http::Request<tonic::body::Body>> for Channel {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = tonic::codegen::StdError;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let sent = self.0.send_request(req);
        Box::pin(async move {
            let resp = sent.await?;
            match NotGrpc::of(&resp) {
                Some(e) => Err(e.into()),
                None => Ok(resp),
            }
        })
    }
}

/// An HTTP response to a gRPC call that is not a gRPC answer: a status
/// other than 200 or a `content-type` other than `application/grpc`, and
/// no `grpc-status`. tonic would read it as a made-up code (`UNIMPLEMENTED`
/// for a 404, `INTERNAL` for an HTML body, …) that no server sent.
#[derive(Debug)]
struct NotGrpc {
    status: http::StatusCode,
    content_type: Option<String>,
}

impl NotGrpc {
    fn of<B>(resp: &http::Response<B>) -> Option<Self> {
        let content_type = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let grpc = content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/grpc"));
        let ok = resp.status() == http::StatusCode::OK && grpc;
        (!ok && !resp.headers().contains_key("grpc-status")).then(|| NotGrpc {
            status: resp.status(),
            content_type,
        })
    }
}

impl std::fmt::Display for NotGrpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not a gRPC answer: HTTP {}", self.status)?;
        match &self.content_type {
            Some(c) => write!(f, ", content-type `{c}`"),
            None => f.write_str(", no content-type"),
        }
    }
}

impl std::error::Error for NotGrpc {}

/// Moves already-encoded messages: requests are encoded from dynamic
/// messages before the call, responses are only counted.
#[derive(Debug, Clone, Copy, Default)]
struct BytesCodec;

impl Codec for BytesCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = BytesCodec;
    type Decoder = BytesCodec;

    fn encoder(&mut self) -> Self::Encoder {
        BytesCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        BytesCodec
    }
}

impl Encoder for BytesCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for BytesCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Self::Error> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// A request message: encoded once, or rendered and encoded per call.
#[derive(Debug)]
enum MessageSource {
    Static(Bytes),
    Template(JsonTemplate),
}

/// JSON text to protobuf bytes through a dynamic message.
fn encode_json(desc: &MessageDescriptor, json: &str) -> Result<Bytes, String> {
    let mut de = serde_json::Deserializer::from_str(json);
    let msg = DynamicMessage::deserialize(desc.clone(), &mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(Bytes::from(msg.encode_to_vec()))
}

/// One gRPC request ready to send.
#[derive(Debug)]
pub(crate) struct PreparedGrpc {
    kind: GrpcKind,
    path: PathAndQuery,
    input: MessageDescriptor,
    output: MessageDescriptor,
    messages: Vec<MessageSource>,
    /// How many times the message list is sent.
    repeat: u64,
    static_metadata: MetadataMap,
    dynamic_metadata: Vec<(HeaderName, Template)>,
    deadline: Option<Duration>,
    /// The largest reply message accepted, in bytes.
    max_message: usize,
}

impl PreparedGrpc {
    pub fn new(
        name: &str,
        g: &GrpcCall,
        endpoint: &Endpoint,
        max_message: usize,
    ) -> Result<Self, String> {
        let method = g.resolved.as_ref().ok_or_else(|| {
            format!(
                "request `{name}`: method `{}` was not resolved against the target's descriptors",
                g.method.value
            )
        })?;
        let input = method.input();
        let mut messages = Vec::new();
        for t in &g.templates {
            messages.push(match t.as_static() {
                Some(json) => MessageSource::Static(encode_json(&input, json).map_err(|e| {
                    format!(
                        "request `{name}`: the message does not fit `{}`: {e}",
                        input.full_name()
                    )
                })?),
                None => MessageSource::Template(t.clone()),
            });
        }
        let mut headers = endpoint.headers.clone();
        // The target's `user-agent` is HTTP's; tonic sets its own.
        headers.remove(http::header::USER_AGENT);
        let mut dynamic_metadata = Vec::new();
        for (key, tpl) in &g.metadata {
            match tpl.as_static() {
                Some(text) => {
                    let value = HeaderValue::from_str(text).map_err(|_| {
                        format!("request `{name}`: invalid value for metadata `{key}`")
                    })?;
                    headers.insert(key.clone(), value);
                }
                None => dynamic_metadata.push((key.clone(), tpl.clone())),
            }
        }
        let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
        Ok(Self {
            kind: GrpcKind::of(method),
            path: PathAndQuery::try_from(path.as_str())
                .map_err(|e| format!("request `{name}`: `{path}` is not a valid path: {e}"))?,
            input,
            output: method.output(),
            messages,
            repeat: g.repeat.as_ref().map_or(1, |r| r.value),
            static_metadata: MetadataMap::from_headers(headers),
            dynamic_metadata,
            deadline: g.deadline,
            max_message,
        })
    }

    fn encode(&self, m: &MessageSource, s: &mut Scratch) -> Result<Bytes, CallResult> {
        match m {
            MessageSource::Static(b) => Ok(b.clone()),
            MessageSource::Template(t) => {
                s.text.clear();
                t.render_into(&mut s.text, &mut s.rng, &mut s.tmp, &s.vars);
                encode_json(&self.input, &s.text).map_err(|e| {
                    CallResult::Failed(
                        TransportError::Other,
                        format!(
                            "the rendered message `{}` does not fit `{}`: {e}",
                            s.text,
                            self.input.full_name()
                        ),
                    )
                })
            }
        }
    }

    fn request<T>(&self, message: T, s: &mut Scratch) -> Result<tonic::Request<T>, CallResult> {
        let mut req = tonic::Request::new(message);
        *req.metadata_mut() = self.static_metadata.clone();
        for (key, tpl) in &self.dynamic_metadata {
            s.tmp.clear();
            tpl.render_into(&mut s.tmp, &mut s.rng, &s.vars);
            let v = HeaderValue::from_str(&s.tmp)
                .map_err(|_| invalid_header("metadata", key, &s.tmp))?;
            req.metadata_mut().as_mut().insert(key.clone(), v);
        }
        if let Some(d) = self.deadline {
            req.set_timeout(d);
        }
        Ok(req)
    }

    /// The time limit of one call, and whether reaching it is the call's
    /// own deadline (`DEADLINE_EXCEEDED`) rather than the target's timeout.
    pub fn limit(&self, target_timeout: Duration) -> (Duration, bool) {
        match self.deadline {
            Some(d) if d <= target_timeout => (d, true),
            _ => (target_timeout, false),
        }
    }

    /// Makes the call on `conn` and reads it to its final status.
    /// Makes the call on `conn` and reads it to its final status; then,
    /// for a code the step expects, applies its checks and captures to the
    /// last reply message.
    pub async fn call(
        &self,
        conn: &GrpcConn,
        origin: &Uri,
        s: &mut Scratch,
        rules: Option<&ResponseRules>,
        expect: &Expect,
    ) -> CallResult {
        let (result, last) = self.exchange(conn, origin, s).await;
        let CallResult::Grpc { code, .. } = result else {
            return result;
        };
        let Some(rules) = rules.filter(|_| expect.accepts(Outcome::Grpc(code))) else {
            return result;
        };
        let checked = match last {
            None => Err("no reply message to check".to_owned()),
            Some(bytes) => self
                .reply_json(bytes)
                .and_then(|reply| rules.apply_json(&reply, &mut s.vars)),
        };
        match checked {
            Ok(()) => result,
            Err(message) => CallResult::CheckFailed {
                answer: Answer::Grpc(code),
                message,
            },
        }
    }

    /// A reply message as JSON, with the .proto's field names and every
    /// field present.
    fn reply_json(&self, bytes: Bytes) -> Result<serde_json::Value, String> {
        let msg = DynamicMessage::decode(self.output.clone(), bytes)
            .map_err(|e| format!("the reply is not a `{}`: {e}", self.output.full_name()))?;
        // 64-bit integers as numbers (not protobuf JSON's strings), so
        // `expect.json` compares them with plain YAML numbers.
        let options = prost_reflect::SerializeOptions::new()
            .use_proto_field_name(true)
            .skip_default_fields(false)
            .stringify_64_bit_integers(false);
        msg.serialize_with_options(serde_json::value::Serializer, &options)
            .map_err(|e| e.to_string())
    }

    /// The call itself: its result and the last reply message.
    async fn exchange(
        &self,
        conn: &GrpcConn,
        origin: &Uri,
        s: &mut Scratch,
    ) -> (CallResult, Option<Bytes>) {
        let mut grpc = tonic::client::Grpc::with_origin(Channel(conn.clone()), origin.clone())
            .max_decoding_message_size(self.max_message);
        let limit = self.max_message;
        if let Err(e) = grpc.ready().await {
            return (
                CallResult::Failed(
                    classify(&*e),
                    format!("connection not ready: {}", chain(&*e)),
                ),
                None,
            );
        }
        let path = self.path.clone();
        match self.kind {
            GrpcKind::Unary | GrpcKind::ServerStreaming => {
                let msg = match self.encode(&self.messages[0], s) {
                    Ok(m) => m,
                    Err(failed) => return (failed, None),
                };
                let req = match self.request(msg, s) {
                    Ok(r) => r,
                    Err(failed) => return (failed, None),
                };
                if self.kind == GrpcKind::Unary {
                    match grpc.unary(req, path, BytesCodec).await {
                        Ok(reply) => (finished(GrpcCode::OK, 1, 1), Some(reply.into_inner())),
                        Err(st) => (status_result(&st, 1, 0, limit), None),
                    }
                } else {
                    match grpc.server_streaming(req, path, BytesCodec).await {
                        Ok(resp) => read_stream(resp.into_inner(), 1, limit).await,
                        Err(st) => (status_result(&st, 1, 0, limit), None),
                    }
                }
            }
            GrpcKind::ClientStreaming | GrpcKind::Bidi => {
                let mut out = Vec::with_capacity(self.messages.len() * self.repeat as usize);
                for _ in 0..self.repeat {
                    for m in &self.messages {
                        match self.encode(m, s) {
                            Ok(b) => out.push(b),
                            Err(failed) => return (failed, None),
                        }
                    }
                }
                // Counts what tonic took from the stream, so a call that
                // fails half-way reports what was sent before.
                let sent = Arc::new(AtomicU64::new(0));
                let counter = sent.clone();
                let stream = tokio_stream::StreamExt::map(tokio_stream::iter(out), move |m| {
                    counter.fetch_add(1, Ordering::Relaxed);
                    m
                });
                let req = match self.request(stream, s) {
                    Ok(r) => r,
                    Err(failed) => return (failed, None),
                };
                let sent_now = || sent.load(Ordering::Relaxed);
                if self.kind == GrpcKind::ClientStreaming {
                    match grpc.client_streaming(req, path, BytesCodec).await {
                        Ok(reply) => (
                            finished(GrpcCode::OK, sent_now(), 1),
                            Some(reply.into_inner()),
                        ),
                        Err(st) => (status_result(&st, sent_now(), 0, limit), None),
                    }
                } else {
                    match grpc.streaming(req, path, BytesCodec).await {
                        Ok(resp) => match read_stream(resp.into_inner(), 0, limit).await {
                            (CallResult::Grpc { code, received, .. }, last) => {
                                (finished(code, sent_now(), received), last)
                            }
                            other => other,
                        },
                        Err(st) => (status_result(&st, sent_now(), 0, limit), None),
                    }
                }
            }
        }
    }
}

fn finished(code: GrpcCode, sent: u64, received: u64) -> CallResult {
    CallResult::Grpc {
        code,
        sent,
        received,
    }
}

/// Reads a response stream to its final status, keeping the last message.
async fn read_stream(
    mut stream: tonic::Streaming<Bytes>,
    sent: u64,
    limit: usize,
) -> (CallResult, Option<Bytes>) {
    let mut received = 0;
    let mut last = None;
    loop {
        match stream.message().await {
            Ok(Some(m)) => {
                received += 1;
                last = Some(m);
            }
            Ok(None) => return (finished(GrpcCode::OK, sent, received), last),
            Err(st) => return (status_result(&st, sent, received, limit), None),
        }
    }
}

/// A status the server sent is the call's code; a status tonic made
/// itself is a transport error: from an I/O or HTTP/2 failure, from an
/// answer that is not gRPC, or from a reply over `limit` bytes. Those made
/// without a cause are known by their code and message.
fn status_result(st: &tonic::Status, sent: u64, received: u64, limit: usize) -> CallResult {
    match std::error::Error::source(st) {
        Some(cause) if cause.downcast_ref::<NotGrpc>().is_some() => {
            CallResult::Failed(TransportError::Protocol, cause.to_string())
        }
        Some(cause) => {
            let kind = match classify(cause) {
                TransportError::Other => TransportError::Reset,
                k => k,
            };
            CallResult::Failed(kind, format!("{}: {}", st.message(), chain(cause)))
        }
        None => match local_status(st, limit) {
            Some(kind) => CallResult::Failed(kind, local_message(st, kind)),
            None => finished(GrpcCode::from_number(st.code() as i32), sent, received),
        },
    }
}

/// Whether tonic made `st` up on the client: a reply over the decoding
/// limit (whose message names the client's own limit), or a response that
/// ended without a final status or carried frames that are not gRPC.
fn local_status(st: &tonic::Status, limit: usize) -> Option<TransportError> {
    let m = st.message();
    match st.code() {
        tonic::Code::OutOfRange
            if m.starts_with("Error, decoded message length too large")
                && m.ends_with(&format!("the limit is: {limit} bytes")) =>
        {
            Some(TransportError::TooLarge)
        }
        tonic::Code::Unknown | tonic::Code::Internal
            if m.starts_with("protocol error:") || m.starts_with("grpc-status header missing") =>
        {
            Some(TransportError::Protocol)
        }
        _ => None,
    }
}

fn local_message(st: &tonic::Status, kind: TransportError) -> String {
    match kind {
        TransportError::TooLarge => format!("{} (the target's `max_message`)", st.message()),
        _ => st.message().to_owned(),
    }
}

/// `scheme://authority` of a target, which tonic puts on every call.
pub(crate) fn origin(e: &Endpoint) -> Result<Uri, String> {
    Uri::builder()
        .scheme(e.scheme.clone())
        .authority(e.authority.clone())
        .path_and_query("/")
        .build()
        .map_err(|err| format!("target `{}`: {err}", e.name))
}

/// Reads a target's services through gRPC server reflection: v1, or
/// v1alpha when the server has only that.
pub async fn reflect(target: &Target) -> Result<DescriptorPool, String> {
    let e = Endpoint::new(target)?;
    let origin = origin(&e)?;
    let work = async {
        let conn = connect(&e).await.map_err(|(_, m)| m)?;
        match reflect_v1::fetch(Channel(conn.clone()), origin.clone()).await {
            Err(Fetch::Unimplemented(_)) => reflect_v1alpha::fetch(Channel(conn), origin)
                .await
                .map_err(|e| match e {
                    Fetch::Unimplemented(m) => format!(
                        "the server does not offer reflection (grpc.reflection.v1 or v1alpha): {m}"
                    ),
                    Fetch::Failed(m) => m,
                }),
            Err(Fetch::Failed(m)) => Err(m),
            Ok(files) => Ok(files),
        }
    };
    let files = tokio::time::timeout(e.timeout.min(Duration::from_secs(10)), work)
        .await
        .map_err(|_| "no answer from the reflection service within 10s".to_owned())??;
    let mut pool = DescriptorPool::new();
    pool.add_file_descriptor_protos(files)
        .map_err(|err| format!("the descriptors from reflection do not build: {err}"))?;
    Ok(pool)
}

enum Fetch {
    Unimplemented(String),
    Failed(String),
}

/// The reflection client, once per protocol version (the two generated
/// modules have the same shape but distinct types).
macro_rules! reflection_client {
    ($module:ident, $pb:path) => {
        mod $module {
            use std::collections::BTreeMap;

            use pb::server_reflection_client::ServerReflectionClient;
            use pb::server_reflection_request::MessageRequest;
            use pb::server_reflection_response::MessageResponse;
            use prost::Message as _;
            use $pb as pb;

            use super::{Channel, Fetch};

            async fn ask(
                client: &mut ServerReflectionClient<Channel>,
                request: MessageRequest,
            ) -> Result<MessageResponse, Fetch> {
                let req = pb::ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(request),
                };
                let failed = |st: tonic::Status| {
                    let m = format!("reflection: {}", super::describe_status(&st));
                    if st.code() == tonic::Code::Unimplemented {
                        Fetch::Unimplemented(m)
                    } else {
                        Fetch::Failed(m)
                    }
                };
                let mut stream = client
                    .server_reflection_info(tokio_stream::once(req))
                    .await
                    .map_err(failed)?
                    .into_inner();
                match stream.message().await.map_err(failed)? {
                    Some(pb::ServerReflectionResponse {
                        message_response: Some(MessageResponse::ErrorResponse(e)),
                        ..
                    }) => Err(Fetch::Failed(format!(
                        "reflection: {} (code {})",
                        e.error_message, e.error_code
                    ))),
                    Some(pb::ServerReflectionResponse {
                        message_response: Some(r),
                        ..
                    }) => Ok(r),
                    _ => Err(Fetch::Failed("reflection: empty answer".into())),
                }
            }

            /// Every file that defines a listed service, with its imports.
            pub(super) async fn fetch(
                channel: Channel,
                origin: http::Uri,
            ) -> Result<Vec<prost_types::FileDescriptorProto>, Fetch> {
                let mut client = ServerReflectionClient::with_origin(channel, origin);
                let services =
                    match ask(&mut client, MessageRequest::ListServices(String::new())).await? {
                        MessageResponse::ListServicesResponse(l) => l.service,
                        _ => {
                            return Err(Fetch::Failed(
                                "reflection: unexpected answer to list_services".into(),
                            ))
                        }
                    };
                let mut files: BTreeMap<String, prost_types::FileDescriptorProto> = BTreeMap::new();
                let add = |answer: MessageResponse,
                           files: &mut BTreeMap<String, prost_types::FileDescriptorProto>|
                 -> Result<(), Fetch> {
                    let MessageResponse::FileDescriptorResponse(f) = answer else {
                        return Err(Fetch::Failed("reflection: unexpected answer".into()));
                    };
                    for bytes in f.file_descriptor_proto {
                        let fd = prost_types::FileDescriptorProto::decode(bytes.as_slice())
                            .map_err(|e| {
                                Fetch::Failed(format!("reflection: bad descriptor: {e}"))
                            })?;
                        files.insert(fd.name().to_owned(), fd);
                    }
                    Ok(())
                };
                for s in services
                    .iter()
                    .filter(|s| !s.name.starts_with("grpc.reflection."))
                {
                    let answer = ask(
                        &mut client,
                        MessageRequest::FileContainingSymbol(s.name.clone()),
                    )
                    .await?;
                    add(answer, &mut files)?;
                }
                // Imports the server did not send with the files.
                loop {
                    let missing: Vec<String> = files
                        .values()
                        .flat_map(|f| f.dependency.iter())
                        .filter(|d| !files.contains_key(*d))
                        .cloned()
                        .collect();
                    if missing.is_empty() {
                        break;
                    }
                    for name in missing {
                        let answer = ask(&mut client, MessageRequest::FileByFilename(name)).await?;
                        add(answer, &mut files)?;
                    }
                }
                Ok(files.into_values().collect())
            }
        }
    };
}

reflection_client!(reflect_v1, tonic_reflection::pb::v1);
reflection_client!(reflect_v1alpha, tonic_reflection::pb::v1alpha);

/// A status with its cause, on one line.
fn describe_status(st: &tonic::Status) -> String {
    let mut m = format!("{:?}: {}", st.code(), st.message());
    if let Some(cause) = std::error::Error::source(st) {
        m.push_str(": ");
        m.push_str(&chain(cause));
    }
    m
}
