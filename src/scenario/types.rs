//! The validated scenario: every value here has been checked, so a
//! `Scenario` that exists is one redproof can run. Requests carry their
//! compiled templates, JSON paths and header names, so executors never
//! read scenario text.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};

use super::threshold::Threshold;
use super::units::{DurationRange, Rate};
use super::url::BaseUrl;
use super::verification::Verification;
use crate::outcome::{GrpcCode, Outcome};
use crate::position::{Located, Pos};
use crate::template::{JsonNode, JsonTemplate, Template};

/// Closed model with no `max_in_flight`: how many requests may be open.
pub(super) const DEFAULT_MAX_IN_FLIGHT: u64 = 1000;
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest gRPC reply message accepted by default: 16 MiB, four
/// times tonic's own limit, so real replies fit.
pub const DEFAULT_MAX_MESSAGE: usize = 16 << 20;
/// The largest HTTP response body kept for checks and captures by
/// default; bodies nobody reads are discarded as they arrive, whatever
/// their size.
pub const DEFAULT_MAX_BODY: usize = 16 << 20;
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

    /// `scenario.request`: a request of one of the file's `scenarios:`.
    /// Both parts are valid names, so the only `.` is the separator.
    pub fn qualified(scenario: &str, request: &RequestName) -> Self {
        Self(format!("{scenario}.{}", request.0))
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
    /// What runs: one load with its entries for a file without
    /// `scenarios:`, else one per scenario, in file order.
    pub parts: Vec<SubScenario>,
    pub data: Vec<DataList>,
    /// Files of rows drawn by users into their variables.
    pub feeds: Vec<Feed>,
    /// Every step of every part: plain requests, the steps of flows and
    /// `on_start` steps. Reports, thresholds and verification name these
    /// (`scenario.request` for the requests of `scenarios:`).
    pub requests: Vec<Request>,
    /// Names of the per-user variable slots: feed columns
    /// (`feed.column`), then captures.
    pub variables: Vec<String>,
    pub thresholds: Vec<Threshold>,
    /// Thresholds that stop the run as soon as they fail.
    pub abort_on_fail: Vec<AbortRule>,
    pub verification: Verification,
    /// The counter of `seq()`, shared by every template of the run; a
    /// shard interleaves it with the others'.
    pub sequence: Arc<crate::template::Sequence>,
}

/// One load of a run with its own users or arrivals: the whole file, or
/// one entry of `scenarios:` (k6's scenarios). Parts run side by side,
/// each from its `start`.
#[derive(Debug, Clone)]
pub struct SubScenario {
    /// The key under `scenarios:`; `None` for a file without them.
    pub name: Option<String>,
    /// Delay from the run's start (T0) to this part's first iteration.
    pub start: Duration,
    pub load: Load,
    /// What users choose between, by weight: one request or a flow.
    pub entries: Vec<Entry>,
    /// Steps (indices into [`Scenario::requests`]) each user runs once,
    /// first.
    pub on_start: Vec<usize>,
    /// When a user gives up on `on_start`; without it, a user retries
    /// (with a growing pause) for as long as the run lasts.
    pub on_start_failures: Option<OnStartFailures>,
}

impl SubScenario {
    /// When this part stops starting iterations, from T0, if its length
    /// is known in time.
    pub fn end(&self) -> Option<Duration> {
        self.load.duration.map(|d| self.start + d)
    }
}

/// A threshold with `abort_on_fail: true`: checked every second on the
/// figures so far, once `delay` of load has passed.
#[derive(Debug, Clone, PartialEq)]
pub struct AbortRule {
    /// Index into [`Scenario::thresholds`].
    pub threshold: usize,
    pub delay: Duration,
}

/// `on_start_failures`: after `max` failed `on_start` attempts in a row,
/// the user stops, or the whole run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnStartFailures {
    pub max: u32,
    pub then: GiveUp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// This user runs nothing more; the others go on.
    StopUser,
    /// The run stops starting iterations and ends as failed (exit 1).
    Abort,
}

/// A scenario file's path and text.
#[derive(Debug)]
pub struct ScenarioFile {
    pub path: PathBuf,
    pub text: String,
    /// The text of each file `include:` read, in order: with `text`, what
    /// makes two shards' scenarios the same.
    pub included: Vec<String>,
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
    /// The largest response body kept for checks and captures; a longer
    /// one is a `body` error.
    pub max_body: usize,
    /// Set for gRPC targets: where their services are described.
    pub grpc: Option<GrpcTarget>,
    /// Each user keeps the cookies this target sets and sends them back
    /// (HTTP targets, unless `cookies: false`).
    pub cookies: bool,
    /// Redirects followed within the target's origin.
    pub follow_redirects: u32,
    /// `https`: trusted roots and a client certificate, read at
    /// validation.
    pub tls: Option<TlsFiles>,
}

/// A target's `tls:` files, parsed.
#[derive(Clone)]
pub struct TlsFiles {
    /// Trusted instead of the system's roots, when not empty.
    pub ca: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// The client certificate chain and its key, for mutual TLS.
    pub client: Option<(
        Vec<rustls::pki_types::CertificateDer<'static>>,
        Arc<rustls::pki_types::PrivateKeyDer<'static>>,
    )>,
}

impl std::fmt::Debug for TlsFiles {
    /// Counts only: a key is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("ca", &self.ca.len())
            .field("client", &self.client.as_ref().map(|(c, _)| c.len()))
            .finish()
    }
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
    /// Redirects to follow; `None` takes the target's.
    pub follow_redirects: Option<u32>,
}

/// A request body.
#[derive(Debug, Clone)]
pub enum Body {
    /// Sent as JSON with `content-type: application/json`.
    Json(JsonTemplate),
    /// Sent as is.
    Text(Template),
    /// `name=value&…`, URL-encoded, with
    /// `content-type: application/x-www-form-urlencoded`. Names are
    /// already encoded.
    Form(Vec<(String, Template)>),
    /// `multipart/form-data`: literal bytes (part heads, file contents)
    /// and templated field values, with its boundary.
    Multipart(Multipart),
}

/// A compiled multipart body: everything but the fields' values is built
/// once.
#[derive(Debug, Clone)]
pub struct Multipart {
    pub boundary: String,
    pub parts: Vec<MultipartPiece>,
}

#[derive(Debug, Clone)]
pub enum MultipartPiece {
    Bytes(bytes::Bytes),
    Field(Template),
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
    /// Applies to every part of the run.
    pub duration: Option<Duration>,
    /// Applies to every part of the run.
    pub iterations: Option<u64>,
    pub users: Option<Scoped<u64>>,
    pub rate: Option<Scoped<Rate>>,
    /// `NAME=URL` pairs.
    pub targets: Vec<(String, String)>,
    /// Prometheus base URL, replacing `metrics.prometheus`.
    pub prometheus: Option<String>,
}

/// A command-line value for one of the file's `scenarios:` (`api=20`),
/// or for its only load (`20`).
#[derive(Debug, Clone, PartialEq)]
pub struct Scoped<T> {
    pub scenario: Option<String>,
    pub value: T,
}

impl<T> Scoped<T> {
    /// Reads `VALUE` or `SCENARIO=VALUE`.
    pub fn parse(text: &str, value: impl Fn(&str) -> Result<T, String>) -> Result<Self, String> {
        Ok(match text.split_once('=') {
            Some((name, v)) => Self {
                scenario: Some(name.trim().to_owned()),
                value: value(v.trim())?,
            },
            None => Self {
                scenario: None,
                value: value(text)?,
            },
        })
    }
}

impl Scenario {
    /// Applies command-line overrides. `--users` switches to the closed
    /// model and `--rate` to the open one, keeping the other settings;
    /// with several scenarios they name the one they change.
    pub fn apply(&mut self, o: &Overrides) -> Result<(), String> {
        if o.users.is_some() && o.rate.is_some() {
            return Err("--users and --rate choose different load models; give one".into());
        }
        for part in &mut self.parts {
            let load = &mut part.load;
            if let Some(d) = o.duration {
                load.duration = Some(d);
                if o.iterations.is_none() {
                    load.iterations = None;
                }
            }
            if let Some(n) = o.iterations {
                load.iterations = Some(n);
                if o.duration.is_none() {
                    load.duration = None;
                }
            }
        }
        if let Some(users) = &o.users {
            if users.value == 0 {
                return Err("--users must be at least 1".into());
            }
            let load = &mut self
                .part_for(users.scenario.as_deref(), "--users", "20")?
                .load;
            load.stages.clear();
            load.model = match &load.model {
                LoadModel::Closed {
                    spawn_rate, wait, ..
                } => LoadModel::Closed {
                    users: users.value,
                    spawn_rate: *spawn_rate,
                    wait: *wait,
                },
                LoadModel::Open { .. } => LoadModel::Closed {
                    users: users.value,
                    spawn_rate: None,
                    wait: DurationRange {
                        min: Duration::ZERO,
                        max: Duration::ZERO,
                    },
                },
            };
        }
        if let Some(rate) = &o.rate {
            let load = &mut self
                .part_for(rate.scenario.as_deref(), "--rate", "100/s")?
                .load;
            load.stages.clear();
            let max_in_flight = match load.model {
                LoadModel::Open { max_in_flight, .. } => max_in_flight,
                LoadModel::Closed { .. } => DEFAULT_MAX_IN_FLIGHT,
            };
            load.model = LoadModel::Open {
                rate: rate.value,
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

    /// The part a `--users`/`--rate` override changes: the only one, or
    /// the one it names.
    fn part_for(
        &mut self,
        name: Option<&str>,
        flag: &str,
        example: &str,
    ) -> Result<&mut SubScenario, String> {
        let names: Vec<&str> = self
            .parts
            .iter()
            .filter_map(|p| p.name.as_deref())
            .collect();
        let list = names.join(", ");
        let first = names.first().copied().unwrap_or("NAME");
        let i = match name {
            None if self.parts.len() == 1 => 0,
            None => {
                return Err(format!(
                    "{flag} {example}: this file has several scenarios ({list}); say which, e.g. {flag} {first}={example}"
                ));
            }
            Some(n) => match self.parts.iter().position(|p| p.name.as_deref() == Some(n)) {
                Some(i) => i,
                None if names.is_empty() => {
                    return Err(format!(
                        "{flag} {n}=…: this file has no `scenarios:`; give the value alone, e.g. {flag} {example}"
                    ));
                }
                None => {
                    return Err(format!(
                        "{flag} {n}=…: no scenario `{n}` in the file (scenarios: {list})"
                    ));
                }
            },
        };
        Ok(&mut self.parts[i])
    }

    /// The part named `name`, for `scenarios:` files.
    pub fn part(&self, name: &str) -> Option<&SubScenario> {
        self.parts.iter().find(|p| p.name.as_deref() == Some(name))
    }

    /// Index of a request by name.
    pub fn request_index(&self, name: &str) -> Option<usize> {
        self.requests.iter().position(|r| r.name.as_str() == name)
    }
}
