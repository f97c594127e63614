//! The validated scenario: every value here has been checked, so a
//! `Scenario` that exists is one redproof can run. Requests carry their
//! compiled templates, JSON paths and header names, so executors never
//! read scenario text.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::threshold::Threshold;
use super::units::{DurationRange, Rate};
use super::verification::Verification;
use crate::outcome::{GrpcCode, Outcome};
use crate::position::{Located, Pos};
use crate::template::{JsonNode, JsonTemplate, Template};
use http::{HeaderName, HeaderValue, Method, Uri};

/// Closed model with no `max_in_flight`: how many requests may be open.
pub(super) const DEFAULT_MAX_IN_FLIGHT: u64 = 1000;
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest gRPC reply message accepted by default: 16 MiB, four
/// times tonic's own limit, so real replies fit.
pub const DEFAULT_MAX_MESSAGE: usize = 16 << 20;
pub(super) const DEFAULT_DRAIN: Duration = Duration::from_secs(10);

/// A request name: letters, digits, `_` and `-`; never `all`, which names
/// the whole run in reports and thresholds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestName(String);

impl RequestName {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("a request name cannot be empty".into());
        }
        if s == "all" {
            return Err("`all` is reserved for the whole run; choose another request name".into());
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "request name `{s}` may only contain letters, digits, `_` and `-`"
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RequestName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A request's share of the traffic; at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weight(u32);

impl Weight {
    pub fn new(w: u64) -> Option<Self> {
        (1..=1_000_000).contains(&w).then_some(Self(w as u32))
    }
    pub fn get(self) -> u32 {
        self.0
    }
}

/// A checked scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    /// The file it was read from and its text, to quote in diagnostics
    /// found later (gRPC calls checked against a server's reflection).
    pub file: Arc<ScenarioFile>,
    pub targets: Vec<Target>,
    pub load: Load,
    pub data: Vec<DataList>,
    /// Files of rows drawn by users into their variables.
    pub feeds: Vec<Feed>,
    /// Every step: plain requests, the steps of flows and `on_start`
    /// steps. Reports, thresholds and verification name these.
    pub requests: Vec<Request>,
    /// What users choose between, by weight: one request or a flow.
    pub entries: Vec<Entry>,
    /// Steps (indices into `requests`) each user runs once, first.
    pub on_start: Vec<usize>,
    /// Names of the per-user variable slots: feed columns
    /// (`feed.column`), then captures.
    pub variables: Vec<String>,
    pub thresholds: Vec<Threshold>,
    pub verification: Verification,
}

/// A scenario file's path and text.
#[derive(Debug)]
pub struct ScenarioFile {
    pub path: PathBuf,
    pub text: String,
}

/// A checked base URL: absolute `http://` or `https://`, with a host,
/// without query or fragment, kept without a trailing `/`.
///
/// Credentials in it (`http://user:secret@host`) are taken out of the
/// authority, sent as HTTP basic auth, and never shown: `Display` and
/// [`BaseUrl::redacted`] give `http://user:***@host`.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseUrl {
    /// As written, without the trailing `/`, credentials masked.
    shown: String,
    /// Without userinfo: the authority that goes on the wire.
    uri: Uri,
    userinfo: Option<Userinfo>,
}

/// The userinfo of a URL, percent-decoded (RFC 3986 §3.2.1).
#[derive(Clone, PartialEq)]
struct Userinfo {
    user: Vec<u8>,
    password: Vec<u8>,
}

impl std::fmt::Debug for Userinfo {
    /// Never the credentials: a `Debug` of a scenario may end up in a
    /// panic message or a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Userinfo(***)")
    }
}

impl BaseUrl {
    /// Checks `url`; the error says what was expected and what was wrong,
    /// quoting the URL with its credentials masked.
    pub fn parse(url: &str) -> Result<Self, String> {
        let shown = redact_url(url);
        let example = "expected an absolute URL such as `http://127.0.0.1:8000`";
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("{example}, got `{shown}` ({e})"))?;
        let scheme = uri
            .scheme_str()
            .ok_or_else(|| format!("{example}, got `{shown}` (no scheme)"))?;
        if !matches!(scheme, "http" | "https") {
            return Err(format!(
                "expected an `http://` or `https://` URL, got scheme `{scheme}` in `{shown}`"
            ));
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(format!("{example}, got `{shown}` (no host)"));
        }
        if uri.query().is_some() || url.contains('#') {
            return Err(format!(
                "a target URL is a base without query or fragment, got `{shown}`"
            ));
        }
        let text = url.trim_end_matches('/');
        let uri = if text.len() == url.len() {
            uri
        } else {
            text.parse()
                .map_err(|e| format!("{example}, got `{shown}` ({e})"))?
        };
        let (uri, userinfo) =
            split_userinfo(uri).map_err(|e| format!("{example}, got `{shown}` ({e})"))?;
        Ok(Self {
            shown: redact_url(text),
            uri,
            userinfo,
        })
    }

    /// Stands in for a URL that did not validate, so target indices stay
    /// stable while the rest of the file is checked; a scenario with it
    /// never leaves validation.
    pub(super) fn invalid() -> Self {
        Self {
            shown: String::new(),
            uri: Uri::default(),
            userinfo: None,
        }
    }

    /// The URL as it may be shown: credentials masked.
    pub fn redacted(&self) -> &str {
        &self.shown
    }

    /// The URL without credentials.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// `authorization: Basic …` for credentials written in the URL,
    /// marked sensitive.
    pub fn basic_auth(&self) -> Option<HeaderValue> {
        use base64::Engine as _;
        let u = self.userinfo.as_ref()?;
        let mut pair = u.user.clone();
        pair.push(b':');
        pair.extend_from_slice(&u.password);
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
        let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
            .expect("base64 is a valid header value");
        value.set_sensitive(true);
        Some(value)
    }
}

impl std::fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// Takes the userinfo out of a URI's authority.
fn split_userinfo(uri: Uri) -> Result<(Uri, Option<Userinfo>), String> {
    let Some((info, host)) = uri.authority().and_then(|a| a.as_str().rsplit_once('@')) else {
        return Ok((uri, None));
    };
    let (user, password) = info.split_once(':').unwrap_or((info, ""));
    let userinfo = Userinfo {
        user: percent_decode(user),
        password: percent_decode(password),
    };
    let authority = host
        .parse()
        .map_err(|e| format!("the host after the credentials: {e}"))?;
    let mut parts = uri.into_parts();
    parts.authority = Some(authority);
    let uri = Uri::from_parts(parts).map_err(|e| e.to_string())?;
    Ok((uri, Some(userinfo)))
}

/// RFC 3986 percent-decoding; a `%` not followed by two hex digits stays
/// as written.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// `url` with the password of its userinfo masked (`user:***@`), or the
/// whole userinfo when it has no password (a lone token is the secret):
/// the only form in which a URL is shown, even in error messages.
pub fn redact_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let Some(at) = url[start..end].rfind('@').map(|i| start + i) else {
        return url.to_owned();
    };
    let masked = match url[start..at].split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    format!("{}{masked}{}", &url[..start], &url[at..])
}

/// A service base URL with the settings shared by its requests.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    /// Request paths are appended to it.
    pub url: BaseUrl,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Whole-request timeout, connect to last byte.
    pub timeout: Duration,
    /// HTTP/2 over cleartext with prior knowledge; TLS targets negotiate
    /// HTTP/2 through ALPN regardless.
    pub http2: bool,
    /// Skip TLS certificate verification.
    pub insecure: bool,
    /// Set for gRPC targets: where their services are described.
    pub grpc: Option<GrpcTarget>,
}

/// How a gRPC target's services are known.
#[derive(Debug, Clone)]
pub struct GrpcTarget {
    pub source: ProtoSource,
    /// The largest reply message accepted, in bytes; a larger one ends
    /// the call as a transport error (`too_large`).
    pub max_message: usize,
    /// The target's descriptors: compiled from `protos` when the scenario
    /// is read, or fetched by reflection when the run starts.
    pub pool: Option<prost_reflect::DescriptorPool>,
}

/// Where a gRPC target's descriptors come from.
#[derive(Debug, Clone, PartialEq)]
pub enum ProtoSource {
    /// `.proto` files, resolved against the scenario file's directory.
    Protos {
        files: Vec<PathBuf>,
        import_paths: Vec<PathBuf>,
    },
    /// The server's reflection service (v1, falling back to v1alpha).
    Reflection,
}

/// A top-level entry of `requests`: one request, or a flow of steps run
/// in order.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub weight: Weight,
    /// Indices into [`Scenario::requests`].
    pub steps: Vec<usize>,
}

/// A value a step takes from its response into a user variable.
#[derive(Debug, Clone)]
pub struct Capture {
    pub name: String,
    /// Slot in the user's variable table.
    pub slot: usize,
    pub source: CaptureSource,
}

#[derive(Debug, Clone)]
pub enum CaptureSource {
    /// A JSON path (RFC 9535) into the body, or into a gRPC reply written
    /// as JSON with the .proto's field names.
    Json(JsonQuery),
    /// An HTTP response header.
    Header(HeaderName),
}

/// A compiled JSON path (RFC 9535) and its text, for messages.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonQuery {
    pub text: String,
    pub path: serde_json_path::JsonPath,
}

/// Rows of a CSV or JSON-lines file; each user draws one at the start of
/// `on_start` and of every iteration, into `feed.column` variables.
#[derive(Debug, Clone)]
pub struct Feed {
    pub name: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub draw: Draw,
    pub exhausted: Exhausted,
    /// Slot of the first column in the user's variable table.
    pub first_slot: usize,
}

/// How rows are drawn from a feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Draw {
    /// In file order, shared by all users, starting over at the end.
    Sequential,
    /// Any row, each time.
    Random,
    /// Each row once across the run; then see [`Exhausted`].
    Unique,
}

/// What a `unique` feed does once every row has been drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    /// Stop starting iterations: the run ends (after the drain).
    Stop,
    /// Start over from the first row.
    Cycle,
}

/// A named list of values for `pick(name)` in templates.
#[derive(Debug, Clone)]
pub struct DataList {
    pub name: String,
    pub values: Vec<String>,
}

/// The load profile.
#[derive(Debug, Clone)]
pub struct Load {
    pub model: LoadModel,
    /// Stop starting requests after this long.
    pub duration: Option<Duration>,
    /// Stop after this many requests in total.
    pub iterations: Option<u64>,
    /// How long in-flight requests may finish after the end; the ones still
    /// running then are counted as "outcome unknown".
    pub drain: Duration,
    /// Closed model: each user stops after this many iterations.
    pub iterations_per_user: Option<u64>,
    /// A ramped profile; empty for a constant load. Its total length is
    /// the load's `duration`.
    pub stages: Vec<Stage>,
    /// Closed model: each user starts an iteration this often (constant
    /// throughput per user); latency is then also recorded corrected for
    /// coordinated omission against this interval.
    pub pace: Option<Duration>,
}

/// One stage of a ramped load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    pub duration: Duration,
    pub target: StageTarget,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StageTarget {
    /// Closed model: move to this many users (at `spawn_rate`).
    Users(u64),
    /// Open model: arrival rate from `from` to `to`, linearly (equal for a
    /// constant stage).
    Rate { from: Rate, to: Rate },
}

/// Closed (users) or open (arrival rate) load.
#[derive(Debug, Clone)]
pub enum LoadModel {
    /// N users, each looping: pick a request, send it, wait.
    Closed {
        users: u64,
        /// Users started per second; all at once when absent.
        spawn_rate: Option<Rate>,
        wait: DurationRange,
    },
    /// Requests start on a fixed schedule whatever the server does.
    Open {
        rate: Rate,
        /// Cap on concurrent requests; when reached, starts fall behind
        /// schedule and are counted as late.
        max_in_flight: u64,
    },
}

/// One weighted request.
#[derive(Debug, Clone)]
pub struct Request {
    pub name: RequestName,
    /// The weight of the entry the request belongs to.
    pub weight: Weight,
    pub call: Call,
    pub expect: Expect,
    pub captures: Vec<Capture>,
    /// Pause after this step, before the next one.
    pub think: Option<DurationRange>,
}

impl Request {
    /// Whether the response must be read (body or headers) for checks or
    /// captures.
    pub fn reads_response(&self) -> bool {
        !self.captures.is_empty() || self.expect.has_checks()
    }
}

/// What a request sends.
#[derive(Debug, Clone)]
pub enum Call {
    Http(HttpCall),
    Grpc(GrpcCall),
}

impl Call {
    /// Index into [`Scenario::targets`].
    pub fn target(&self) -> usize {
        match self {
            Call::Http(h) => h.target,
            Call::Grpc(g) => g.target,
        }
    }

    /// `GET` for HTTP; `package.Service/Method` for gRPC.
    pub fn method_label(&self) -> String {
        match self {
            Call::Http(h) => h.method.to_string(),
            Call::Grpc(g) => g.method.value.trim_start_matches('/').to_owned(),
        }
    }
}

/// A gRPC call. Messages are JSON (protobuf's JSON mapping) whose string
/// leaves may hold templates.
#[derive(Debug, Clone)]
pub struct GrpcCall {
    pub target: usize,
    /// `package.Service/Method`.
    pub method: Located<String>,
    /// One message for unary and server-streaming calls; the messages to
    /// send, in order, for client and bidirectional streaming. As written,
    /// to be checked against the method's input type.
    pub messages: Vec<JsonNode>,
    /// The same messages, compiled.
    pub templates: Vec<JsonTemplate>,
    /// Where `message:` or `messages:` was written.
    pub messages_pos: Option<Pos>,
    /// `count:`: the single message is sent this many times.
    pub repeat: Option<Located<u64>>,
    pub metadata: Vec<(HeaderName, Template)>,
    /// Ends the call with `DEADLINE_EXCEEDED`; also sent as `grpc-timeout`.
    pub deadline: Option<Duration>,
    /// The method, once the target's descriptors are known.
    pub resolved: Option<prost_reflect::MethodDescriptor>,
}

/// The four gRPC call shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcKind {
    Unary,
    ServerStreaming,
    ClientStreaming,
    Bidi,
}

impl GrpcKind {
    pub fn of(m: &prost_reflect::MethodDescriptor) -> Self {
        match (m.is_client_streaming(), m.is_server_streaming()) {
            (false, false) => Self::Unary,
            (false, true) => Self::ServerStreaming,
            (true, false) => Self::ClientStreaming,
            (true, true) => Self::Bidi,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unary => "unary",
            Self::ServerStreaming => "server_streaming",
            Self::ClientStreaming => "client_streaming",
            Self::Bidi => "bidi_streaming",
        }
    }

    /// Whether the client sends a stream of messages.
    pub fn client_streams(self) -> bool {
        matches!(self, Self::ClientStreaming | Self::Bidi)
    }
}

impl GrpcCall {
    pub fn kind(&self) -> Option<GrpcKind> {
        self.resolved.as_ref().map(GrpcKind::of)
    }

    /// `package.Service` and `Method`.
    pub fn service_and_method(&self) -> (&str, &str) {
        let m = self.method.value.trim_start_matches('/');
        m.split_once('/').unwrap_or((m, ""))
    }
}

/// An HTTP request, its strings compiled into templates.
#[derive(Debug, Clone)]
pub struct HttpCall {
    /// Index into [`Scenario::targets`].
    pub target: usize,
    pub method: Method,
    pub path: Template,
    /// Keys already percent-encoded.
    pub query: Vec<(String, Template)>,
    pub headers: Vec<(HeaderName, Template)>,
    pub body: Option<Body>,
}

/// A request body.
#[derive(Debug, Clone)]
pub enum Body {
    /// Sent as JSON with `content-type: application/json`.
    Json(JsonTemplate),
    /// Sent as is.
    Text(Template),
}

/// The outcomes that count as success.
#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    /// HTTP statuses.
    pub status: Vec<StatusPattern>,
    /// gRPC status codes.
    pub codes: Vec<GrpcCode>,
    /// JSON path → expected value, in the body or the gRPC reply.
    pub json: Vec<(JsonQuery, serde_json::Value)>,
    pub body_contains: Option<String>,
    /// Header → expected value.
    pub headers: Vec<(HeaderName, String)>,
}

impl Default for Expect {
    /// Any HTTP status below 400; gRPC `OK`.
    fn default() -> Self {
        Self {
            status: vec![
                StatusPattern::Class(1),
                StatusPattern::Class(2),
                StatusPattern::Class(3),
            ],
            codes: vec![GrpcCode::OK],
            json: Vec::new(),
            body_contains: None,
            headers: Vec::new(),
        }
    }
}

impl Expect {
    /// Whether anything beyond the status or code is checked.
    pub fn has_checks(&self) -> bool {
        !self.json.is_empty() || self.body_contains.is_some() || !self.headers.is_empty()
    }

    pub fn accepts(&self, outcome: Outcome) -> bool {
        match outcome {
            Outcome::Status(status) => self.status.iter().any(|p| p.matches(status)),
            Outcome::Grpc(code) => self.codes.contains(&code),
            Outcome::Transport(_) | Outcome::CheckFailed(_) => false,
        }
    }
}

/// `200` or `2xx`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StatusPattern {
    Exact(u16),
    Class(u8),
}

impl StatusPattern {
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if let Some(c) = s.strip_suffix("xx").or_else(|| s.strip_suffix("XX")) {
            let d: u8 = c.parse().ok()?;
            return (1..=5).contains(&d).then_some(Self::Class(d));
        }
        let code: u16 = s.parse().ok()?;
        (100..=599).contains(&code).then_some(Self::Exact(code))
    }

    pub fn matches(self, status: u16) -> bool {
        match self {
            Self::Exact(c) => c == status,
            Self::Class(d) => status / 100 == d as u16,
        }
    }
}

/// Settings given on the command line that replace the file's.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub duration: Option<Duration>,
    pub iterations: Option<u64>,
    pub users: Option<u64>,
    pub rate: Option<Rate>,
    /// `NAME=URL` pairs.
    pub targets: Vec<(String, String)>,
    /// Prometheus base URL, replacing `metrics.prometheus`.
    pub prometheus: Option<String>,
}

impl Scenario {
    /// Applies command-line overrides. `--users` switches to the closed
    /// model and `--rate` to the open one, keeping the other settings.
    pub fn apply(&mut self, o: &Overrides) -> Result<(), String> {
        if o.users.is_some() && o.rate.is_some() {
            return Err("--users and --rate choose different load models; give one".into());
        }
        if let Some(d) = o.duration {
            self.load.duration = Some(d);
            if o.iterations.is_none() {
                self.load.iterations = None;
            }
        }
        if let Some(n) = o.iterations {
            self.load.iterations = Some(n);
            if o.duration.is_none() {
                self.load.duration = None;
            }
        }
        if o.users.is_some() || o.rate.is_some() {
            // A constant load from the command line replaces the stages.
            self.load.stages.clear();
        }
        if let Some(users) = o.users {
            if users == 0 {
                return Err("--users must be at least 1".into());
            }
            self.load.model = match &self.load.model {
                LoadModel::Closed {
                    spawn_rate, wait, ..
                } => LoadModel::Closed {
                    users,
                    spawn_rate: *spawn_rate,
                    wait: *wait,
                },
                LoadModel::Open { .. } => LoadModel::Closed {
                    users,
                    spawn_rate: None,
                    wait: DurationRange {
                        min: Duration::ZERO,
                        max: Duration::ZERO,
                    },
                },
            };
        }
        if let Some(rate) = o.rate {
            let max_in_flight = match self.load.model {
                LoadModel::Open { max_in_flight, .. } => max_in_flight,
                LoadModel::Closed { .. } => DEFAULT_MAX_IN_FLIGHT,
            };
            self.load.model = LoadModel::Open {
                rate,
                max_in_flight,
            };
        }
        for (name, url) in &o.targets {
            let known: Vec<String> = self.targets.iter().map(|t| t.name.clone()).collect();
            let target = self
                .targets
                .iter_mut()
                .find(|t| &t.name == name)
                .ok_or_else(|| {
                    format!(
                        "--target {name}=…: no target `{name}` in the scenario (targets: {})",
                        known.join(", ")
                    )
                })?;
            target.url = BaseUrl::parse(url)?;
        }
        if let Some(p) = &o.prometheus {
            self.verification.metrics.prometheus =
                Some(BaseUrl::parse(p).map_err(|e| format!("--prometheus: {e}"))?);
        }
        Ok(())
    }

    /// Index of a request by name.
    pub fn request_index(&self, name: &str) -> Option<usize> {
        self.requests.iter().position(|r| r.name.as_str() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_a_url_become_basic_auth_and_are_never_shown() {
        let u = BaseUrl::parse("http://alice:s3cr%40t@127.0.0.1:8000/api/").unwrap();
        assert_eq!(u.redacted(), "http://alice:***@127.0.0.1:8000/api");
        assert_eq!(u.to_string(), u.redacted());
        assert_eq!(u.uri().authority().unwrap().as_str(), "127.0.0.1:8000");
        assert_eq!(u.uri().to_string(), "http://127.0.0.1:8000/api");
        let auth = u.basic_auth().unwrap();
        assert!(auth.is_sensitive());
        // base64("alice:s3cr@t")
        assert_eq!(auth, "Basic YWxpY2U6czNjckB0");
        let debug = format!("{u:?}");
        assert!(!debug.contains("s3cr"), "{debug}");
    }

    #[test]
    fn a_lone_user_is_masked_whole() {
        let u = BaseUrl::parse("https://ghp_token@example.test").unwrap();
        assert_eq!(u.redacted(), "https://***@example.test");
        // base64("ghp_token:")
        assert_eq!(u.basic_auth().unwrap(), "Basic Z2hwX3Rva2VuOg==");
        assert_eq!(BaseUrl::parse("http://h:1").unwrap().basic_auth(), None);
    }

    #[test]
    fn errors_quote_urls_masked() {
        let e = BaseUrl::parse("http://bob:hunter2@host/x?q=1").unwrap_err();
        assert!(e.contains("http://bob:***@host/x?q=1"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        assert_eq!(redact_url("http://a:b@c/d@e"), "http://a:***@c/d@e");
        assert_eq!(redact_url("http://c/d@e"), "http://c/d@e");
        assert_eq!(percent_decode("%41%4a%zz%"), b"AJ%zz%");
    }
}
