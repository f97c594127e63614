//! The validated scenario: every value here has been checked, so a
//! `Scenario` that exists is one redproof can run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use marked_yaml::{LoadError, LoaderOptions, Node, Spanned};

use super::raw::{self, OrderedMap, RawScenario, Text};
use super::threshold::{self, Threshold};
use super::units::{self, DurationRange, Rate};
use super::verification::Verification;
use super::{Diagnostic, JsonNode, Located, Pos};
use crate::measure::{GrpcCode, Outcome};
use crate::template::{JsonTemplate, Template, TemplateEnv};

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

/// A service base URL with the settings shared by its requests.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    /// Base URL without a trailing `/`; request paths are appended.
    pub url: String,
    pub headers: Vec<(String, String)>,
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
    Json(Located<String>),
    /// An HTTP response header (lowercase).
    Header(String),
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
            Call::Http(h) => h.method.clone(),
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
    /// send, in order, for client and bidirectional streaming.
    pub messages: Vec<JsonNode>,
    /// Where `message:` or `messages:` was written.
    pub messages_pos: Option<Pos>,
    /// `count:`: the single message is sent this many times.
    pub repeat: Option<Located<u64>>,
    pub metadata: Vec<(String, Located<String>)>,
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

/// An HTTP request; strings are templates compiled by `crate::template`.
#[derive(Debug, Clone)]
pub struct HttpCall {
    /// Index into [`Scenario::targets`].
    pub target: usize,
    pub method: String,
    pub path: Located<String>,
    pub query: Vec<(String, Located<String>)>,
    pub headers: Vec<(String, Located<String>)>,
    pub body: Option<Body>,
}

/// A request body.
#[derive(Debug, Clone)]
pub enum Body {
    /// Sent as JSON with `content-type: application/json`.
    Json(JsonNode),
    /// Sent as is.
    Text(Located<String>),
}

/// The outcomes that count as success.
#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    /// HTTP statuses.
    pub status: Vec<StatusPattern>,
    /// gRPC status codes.
    pub codes: Vec<GrpcCode>,
    /// JSON path → expected value, in the body or the gRPC reply.
    pub json: Vec<(Located<String>, serde_json::Value)>,
    pub body_contains: Option<String>,
    /// Header (lowercase) → expected value.
    pub headers: Vec<(String, String)>,
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
            target.url = check_url(url)?;
        }
        if let Some(p) = &o.prometheus {
            self.verification.metrics.prometheus =
                Some(check_url(p).map_err(|e| format!("--prometheus: {e}"))?);
        }
        Ok(())
    }

    /// Index of a request by name.
    pub fn request_index(&self, name: &str) -> Option<usize> {
        self.requests.iter().position(|r| r.name.as_str() == name)
    }
}

const DEFAULT_MAX_IN_FLIGHT: u64 = 1000;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_DRAIN: Duration = Duration::from_secs(10);
const HTTP_METHODS: &[&str] = &[
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE",
];

pub(super) fn check_url(url: &str) -> Result<String, String> {
    let example = "expected an absolute URL such as `http://127.0.0.1:8000`";
    let parsed: http::Uri = url
        .parse()
        .map_err(|e| format!("{example}, got `{url}` ({e})"))?;
    let scheme = parsed
        .scheme_str()
        .ok_or_else(|| format!("{example}, got `{url}` (no scheme)"))?;
    if !matches!(scheme, "http" | "https") {
        return Err(format!(
            "expected an `http://` or `https://` URL, got scheme `{scheme}` in `{url}`"
        ));
    }
    if parsed.host().is_none_or(str::is_empty) {
        return Err(format!("{example}, got `{url}` (no host)"));
    }
    if parsed.query().is_some() || url.contains('#') {
        return Err(format!(
            "a target URL is a base without query or fragment, got `{url}`"
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// Collects diagnostics while building the model.
pub(super) struct Checker {
    diags: Vec<Diagnostic>,
}

impl Checker {
    pub(super) fn err(&mut self, pos: Option<Pos>, msg: impl Into<String>) {
        self.diags.push(Diagnostic::at(pos, msg));
    }

    /// Runs a parser on an optional value, recording its error.
    pub(super) fn parse_opt<T>(
        &mut self,
        v: &Option<Text>,
        field: &str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        v.as_ref().and_then(|v| self.parse(v, field, f))
    }

    /// Runs a parser on a located value, recording its error.
    pub(super) fn parse<T>(
        &mut self,
        v: &Text,
        field: &str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match f(v.as_str()) {
            Ok(t) => Some(t),
            Err(e) => {
                self.err(pos(v), format!("`{field}`: {e}"));
                None
            }
        }
    }
}

pub(super) fn pos<T>(s: &Spanned<T>) -> Option<Pos> {
    Pos::of_span(s.span())
}

fn located(t: &Text) -> Located<String> {
    Located {
        value: t.to_string(),
        pos: pos(t),
    }
}

fn load_error(e: &LoadError) -> Diagnostic {
    let marker = match e {
        LoadError::TopLevelMustBeMapping(m)
        | LoadError::TopLevelMustBeSequence(m)
        | LoadError::UnexpectedAnchor(m)
        | LoadError::MappingKeyMustBeScalar(m)
        | LoadError::UnexpectedTag(m)
        | LoadError::ScanError(m, _) => Some(*m),
        LoadError::DuplicateKey(inner) => inner.key.span().start().copied(),
    };
    let message = match e {
        LoadError::TopLevelMustBeMapping(_) => {
            "a scenario file is a YAML mapping (`name:`, `targets:`, `load:`, `requests:` …)"
                .to_owned()
        }
        LoadError::UnexpectedAnchor(_) => {
            "YAML anchors and aliases are not supported in scenario files".to_owned()
        }
        LoadError::UnexpectedTag(_) => {
            "YAML tags (`!foo`) are not supported in scenario files".to_owned()
        }
        LoadError::DuplicateKey(inner) => format!("the key `{}` appears twice", inner.key.as_str()),
        LoadError::ScanError(_, s) => format!("invalid YAML: {}", s.info()),
        other => format!("invalid YAML: {other}"),
    };
    Diagnostic::at(
        marker.map(|m| Pos {
            line: m.line(),
            column: m.column(),
        }),
        message,
    )
}

/// Reads and validates scenario text.
pub(super) fn build(path: &Path, text: &str) -> Result<Scenario, Vec<Diagnostic>> {
    let options = LoaderOptions::default()
        .error_on_duplicate_keys(true)
        .prevent_coercion(true)
        .toplevel_mapping();
    let node =
        marked_yaml::parse_yaml_with_options(0, text, options).map_err(|e| vec![load_error(&e)])?;
    // Serde stops at the first unknown key; remove each one and try again,
    // so a file with several misspellings reports them all, and the rest
    // of the file is still checked.
    let mut node = node;
    let mut shape_errors = Vec::new();
    let raw: RawScenario = loop {
        match marked_yaml::from_node::<RawScenario>(&node) {
            Ok(raw) => break raw,
            Err(e) => {
                let mut pos = e.start_mark().map(|m| Pos {
                    line: m.line(),
                    column: m.column(),
                });
                let where_ = e.path().map(|p| format!(" in `{p}`")).unwrap_or_default();
                let inner = e.into_inner();
                let mut removed = false;
                if let marked_yaml::spanned_serde::Error::UnknownFieldError(field, _, _) = &inner {
                    // The reported span is the enclosing mapping; point at the key.
                    if let Some(key_pos) = find_key(&node, field, pos.unwrap_or_default()) {
                        pos = Some(key_pos);
                        removed = remove_key(&mut node, field, key_pos);
                    }
                }
                shape_errors.push(Diagnostic::at(
                    pos,
                    format!("{}{where_}", lowercase_first(&inner.to_string())),
                ));
                if !removed || shape_errors.len() >= 50 {
                    return Err(shape_errors);
                }
            }
        }
    };
    let mut c = Checker {
        diags: shape_errors,
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let scenario = check(&mut c, &raw, &node, base);
    if c.diags.is_empty() {
        Ok(scenario.expect("a scenario without diagnostics is complete"))
    } else {
        Err(c.diags)
    }
}

/// Removes the mapping key named `key` that starts at `at`.
fn remove_key(node: &mut Node, key: &str, at: Pos) -> bool {
    match node {
        Node::Scalar(_) => false,
        Node::Sequence(seq) => seq.iter_mut().any(|n| remove_key(n, key, at)),
        Node::Mapping(map) => {
            let found = map
                .keys()
                .find(|k| k.as_str() == key && Pos::of_span(k.span()) == Some(at))
                .cloned();
            match found {
                Some(k) => map.remove(&k).is_some(),
                None => map.values_mut().any(|v| remove_key(v, key, at)),
            }
        }
    }
}

/// The first mapping key named `key` at or after `from`.
fn find_key(node: &Node, key: &str, from: Pos) -> Option<Pos> {
    let after = |p: Option<Pos>| p.filter(|p| (p.line, p.column) >= (from.line, from.column));
    match node {
        Node::Scalar(_) => None,
        Node::Sequence(seq) => seq.iter().find_map(|n| find_key(n, key, from)),
        Node::Mapping(map) => map.iter().find_map(|(k, v)| {
            if k.as_str() == key
                && let Some(p) = after(Pos::of_span(k.span()))
            {
                return Some(p);
            }
            find_key(v, key, from)
        }),
    }
}

fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(f) => f.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn check(c: &mut Checker, raw: &RawScenario, root: &Node, base: &Path) -> Option<Scenario> {
    if raw.name.trim().is_empty() {
        c.err(
            pos(&raw.name),
            "`name`: expected a scenario name, got an empty string",
        );
    }
    let targets = check_targets(c, &raw.targets, base);
    let (data, feeds) = super::feeds::check_data(c, &raw.data, root, base);
    let load_key = find_key(root, "load", Pos::default());
    let load = check_load(c, &raw.load, load_key);
    let env = TemplateEnv::new(data.iter().map(|d| (d.name.as_str(), d.values.as_slice())));
    let steps = check_requests(c, raw, root, &targets, &env, &feeds);
    let mut requests = steps.requests;
    for r in &mut requests {
        if let Call::Grpc(g) = &mut r.call
            && let Some(pool) = targets[g.target]
                .grpc
                .as_ref()
                .and_then(|t| t.pool.as_ref())
        {
            for d in super::grpc::resolve_call(g, pool) {
                c.diags.push(d);
            }
        }
    }
    let names: Vec<&str> = steps.step_names.iter().map(String::as_str).collect();
    let mut thresholds = Vec::new();
    for t in &raw.thresholds {
        match threshold::parse(t.as_str(), &names) {
            Ok(th) => thresholds.push(th),
            Err(e) => c.err(pos(t), format!("threshold `{}`: {e}", t.as_str())),
        }
    }
    let verification = super::verification::check(c, raw, &names);
    for (t, raw_t) in thresholds.iter().zip(&raw.thresholds) {
        if let (true, threshold::Subject::Request(name)) = (t.server, &t.subject) {
            let has_entry = verification
                .entries
                .iter()
                .any(|e| names.get(e.request).is_some_and(|r| r == name));
            if !has_entry {
                c.err(
                    pos(raw_t),
                    format!(
                        "threshold `{}`: server figures need a `verify.{name}` entry saying where `{name}` is counted",
                        raw_t.as_str()
                    ),
                );
            }
        }
    }
    if raw.targets.0.is_empty() {
        c.err(None, "`targets`: expected at least one target, e.g. `targets: { web: { url: \"http://127.0.0.1:8000\" } }`");
    }
    Some(Scenario {
        name: raw.name.to_string(),
        targets,
        load: load?,
        data,
        feeds,
        entries: steps.entries,
        on_start: steps.on_start,
        variables: steps.variables,
        requests,
        thresholds,
        verification,
    })
}

/// Headers that frame the request on the wire: redproof writes them from
/// the body it sends, and a second, different value would make the
/// request unreadable (or read differently by a proxy and the server).
const FRAMING_HEADERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
];

fn check_header_name(c: &mut Checker, k: &Text) {
    if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
        c.err(
            pos(k),
            format!(
                "`headers`: `{}` is not a valid HTTP header name",
                k.as_str()
            ),
        );
    } else if FRAMING_HEADERS.iter().any(|f| k.eq_ignore_ascii_case(f)) {
        c.err(
            pos(k),
            format!(
                "`headers`: `{}` cannot be set; redproof frames each request from its body",
                k.as_str()
            ),
        );
    }
}

fn check_targets(c: &mut Checker, raw: &OrderedMap<raw::RawTarget>, base: &Path) -> Vec<Target> {
    let mut out: Vec<Target> = Vec::new();
    for (name, t) in &raw.0 {
        let grpc = check_grpc_target(c, t, base);
        let url = c.parse(&t.url, "url", check_url);
        let timeout = c
            .parse_opt(&t.timeout, "timeout", units::parse_duration)
            .unwrap_or(DEFAULT_TIMEOUT);
        let mut headers = Vec::new();
        for (k, v) in &t.headers.0 {
            check_header_name(c, k);
            if http::HeaderValue::from_str(v).is_err() {
                c.err(
                    pos(v),
                    format!(
                        "`headers`: the value of `{}` is not a valid HTTP header value",
                        k.as_str()
                    ),
                );
            }
            headers.push((k.to_string(), v.to_string()));
        }
        if let Some(url) = url {
            out.push(Target {
                name: name.to_string(),
                url,
                headers,
                timeout,
                http2: grpc.is_some() || t.http2.as_ref().is_some_and(|b| **b),
                insecure: t.insecure.as_ref().is_some_and(|b| **b),
                grpc,
            });
        } else {
            // Keep the index stable for requests that name this target.
            out.push(Target {
                name: name.to_string(),
                url: String::new(),
                headers,
                timeout,
                http2: false,
                insecure: false,
                grpc,
            });
        }
    }
    out
}

/// The gRPC side of a target: `protos` (compiled now) or `reflection`.
fn check_grpc_target(c: &mut Checker, t: &raw::RawTarget, base: &Path) -> Option<GrpcTarget> {
    let reflection = t.reflection.as_ref().is_some_and(|b| **b);
    let resolve = |p: &Text| base.join(p.as_str());
    if !t.protos.is_empty() && reflection {
        c.err(
            t.reflection.as_ref().and_then(pos),
            "`protos` and `reflection: true` both describe the services; keep one",
        );
        return None;
    }
    if reflection {
        if let Some(first) = t.import_paths.first() {
            c.err(
                pos(first),
                "`import_paths` goes with `protos`, not with `reflection`",
            );
        }
        return Some(GrpcTarget {
            source: ProtoSource::Reflection,
            pool: None,
        });
    }
    if t.protos.is_empty() {
        if let Some(first) = t.import_paths.first() {
            c.err(
                pos(first),
                "`import_paths` goes with `protos`: list the `.proto` files too",
            );
        }
        return None;
    }
    let files: Vec<PathBuf> = t.protos.iter().map(resolve).collect();
    let mut import_paths: Vec<PathBuf> = t.import_paths.iter().map(resolve).collect();
    if import_paths.is_empty() {
        // By default imports resolve next to the files themselves.
        for f in &files {
            let dir = f.parent().unwrap_or(Path::new(".")).to_owned();
            if !import_paths.contains(&dir) {
                import_paths.push(dir);
            }
        }
    }
    let source = ProtoSource::Protos {
        files,
        import_paths,
    };
    let pool = match super::grpc::compile_protos(&source) {
        Ok(pool) => Some(pool),
        Err((index, message)) => {
            let at = index
                .and_then(|i| t.protos.get(i))
                .or(t.protos.first())
                .and_then(pos);
            c.err(at, format!("`protos`: {message}"));
            None
        }
    };
    Some(GrpcTarget { source, pool })
}

fn check_load(
    c: &mut Checker,
    load: &Spanned<raw::RawLoad>,
    load_pos: Option<Pos>,
) -> Option<Load> {
    let l: &raw::RawLoad = load;
    let users = c.parse_opt(&l.users, "users", units::parse_count);
    let iterations = c.parse_opt(&l.iterations, "iterations", units::parse_count);
    let max_in_flight = c.parse_opt(&l.max_in_flight, "max_in_flight", units::parse_count);
    let rate = c.parse_opt(&l.rate, "rate", Rate::parse);
    let spawn_rate = c.parse_opt(&l.spawn_rate, "spawn_rate", Rate::parse);
    let wait = c.parse_opt(&l.wait, "wait", DurationRange::parse);
    let duration = c.parse_opt(&l.duration, "duration", units::parse_duration);
    let drain = c.parse_opt(&l.drain, "drain", units::parse_duration);
    let iterations_per_user = c.parse_opt(
        &l.iterations_per_user,
        "iterations_per_user",
        units::parse_count,
    );
    let pace = c.parse_opt(&l.pace, "pace", units::parse_duration);
    let stages = l
        .stages
        .as_ref()
        .map(|s| check_stages(c, s))
        .unwrap_or_default();
    if let Some(raw_stages) = &l.stages {
        for (v, field) in [
            (&l.users, "users"),
            (&l.rate, "rate"),
            (&l.duration, "duration"),
        ] {
            if let Some(v) = v {
                c.err(
                    pos(v),
                    format!("`{field}`: `stages` set the load and its length; drop `{field}`"),
                );
            }
        }
        let closed = stages
            .iter()
            .filter(|s| matches!(s.target, StageTarget::Users(_)))
            .count();
        if closed != 0 && closed != stages.len() {
            c.err(pos(raw_stages), "`stages`: every stage gives `users` (closed model) or every stage gives `rate` (open model), not a mix");
        }
    }

    for (v, field) in [
        (&l.users, "users"),
        (&l.iterations, "iterations"),
        (&l.iterations_per_user, "iterations_per_user"),
        (&l.max_in_flight, "max_in_flight"),
    ] {
        if let Some(v) = v
            && units::parse_count(v) == Ok(0)
        {
            c.err(pos(v), format!("`{field}`: expected at least 1, got `0`"));
        }
    }
    if let Some(d) = &l.duration
        && duration == Some(Duration::ZERO)
    {
        c.err(pos(d), "`duration`: expected a positive duration, got zero");
    }
    let staged_users = stages.iter().find_map(|s| match s.target {
        StageTarget::Users(_) => Some(()),
        StageTarget::Rate { .. } => None,
    });
    let max_staged_users = stages
        .iter()
        .filter_map(|s| match s.target {
            StageTarget::Users(u) => Some(u),
            StageTarget::Rate { .. } => None,
        })
        .max();
    let first_staged_rate = stages.iter().find_map(|s| match s.target {
        StageTarget::Rate { from, .. } => Some(from),
        StageTarget::Users(_) => None,
    });
    let model = match (&l.users, &l.rate) {
        _ if l.stages.is_some() => match (staged_users, max_staged_users, first_staged_rate) {
            (Some(()), Some(users), _) => Some(LoadModel::Closed {
                users: users.max(1),
                spawn_rate,
                wait: wait.unwrap_or(DurationRange {
                    min: Duration::ZERO,
                    max: Duration::ZERO,
                }),
            }),
            (None, _, Some(rate)) => Some(LoadModel::Open {
                rate,
                max_in_flight: max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT),
            }),
            _ => None,
        },
        (Some(_), Some(r)) => {
            c.err(pos(r), "`load`: `users` (closed model) and `rate` (open model) exclude each other; keep one");
            None
        }
        (None, None) => {
            c.err(load_pos, "`load`: expected `users:` (closed model, like Locust) or `rate:` (open model, requests per second)");
            None
        }
        (Some(_), None) => {
            if let Some(m) = &l.max_in_flight {
                c.err(pos(m), "`max_in_flight` applies to the open model (`rate:`); with `users:` concurrency is the user count");
            }
            users.map(|users| LoadModel::Closed {
                users,
                spawn_rate,
                wait: wait.unwrap_or(DurationRange {
                    min: Duration::ZERO,
                    max: Duration::ZERO,
                }),
            })
        }
        (None, Some(_)) => {
            for (v, field) in [(&l.spawn_rate, "spawn_rate"), (&l.wait, "wait")] {
                if let Some(v) = v {
                    c.err(pos(v), format!("`{field}` applies to the closed model (`users:`); the open model starts requests at `rate`"));
                }
            }
            rate.map(|rate| LoadModel::Open {
                rate,
                max_in_flight: max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT),
            })
        }
    };
    let closed = matches!(model, Some(LoadModel::Closed { .. }));
    if !closed {
        for (v, field) in [
            (&l.pace, "pace"),
            (&l.iterations_per_user, "iterations_per_user"),
        ] {
            if let Some(v) = v {
                c.err(pos(v), format!("`{field}` applies to the closed model (`users:`); the open model starts iterations at `rate`"));
            }
        }
    }
    if let (Some(p), Some(w)) = (&l.pace, &l.wait) {
        let _ = p;
        c.err(pos(w), "`wait` and `pace` both set the time between a user's iterations; keep one (`pace` keeps a constant rate per user)");
    }
    if l.duration.is_none()
        && l.iterations.is_none()
        && l.iterations_per_user.is_none()
        && l.stages.is_none()
    {
        c.err(load_pos, "`load`: expected `duration:` (e.g. `30s`), `iterations:` (in total), `iterations_per_user:` or `stages:` to say when the run ends");
    }
    let duration = if stages.is_empty() {
        duration
    } else {
        Some(stages.iter().map(|s| s.duration).sum())
    };
    Some(Load {
        model: model?,
        duration,
        iterations,
        drain: drain.unwrap_or(DEFAULT_DRAIN),
        iterations_per_user,
        stages,
        pace,
    })
}

/// Checks `on_start` and `requests`: every step becomes a [`Request`],
/// every top-level entry an [`Entry`]. Variables a step's templates use
/// must be captured by an earlier step of its flow, by `on_start`, or be a
/// column of a data feed.
fn check_stages(c: &mut Checker, raw: &Spanned<Vec<raw::RawStage>>) -> Vec<Stage> {
    if raw.is_empty() {
        c.err(
            pos(raw),
            "`stages`: expected at least one stage, e.g. `[{ for: 30s, users: 10 }]`",
        );
    }
    let mut out = Vec::new();
    for st in raw.iter() {
        let duration = c.parse(&st.duration, "for", units::parse_duration);
        if duration == Some(Duration::ZERO) {
            c.err(
                pos(&st.duration),
                "`for`: expected a positive duration, got zero",
            );
        }
        let target = match (&st.users, &st.rate) {
            (Some(u), None) => c
                .parse(u, "users", units::parse_count)
                .map(StageTarget::Users),
            (None, Some(r)) => c.parse(r, "rate", |text| match text.split_once("..") {
                Some((a, b)) => Ok(StageTarget::Rate {
                    from: Rate::parse(a.trim())?,
                    to: Rate::parse(b.trim())?,
                }),
                None => {
                    let r = Rate::parse(text)?;
                    Ok(StageTarget::Rate { from: r, to: r })
                }
            }),
            _ => {
                c.err(pos(&st.duration), "a stage gives `users: N` (closed model) or `rate: 100/s` / `rate: 100/s..500/s` (open model)");
                None
            }
        };
        if let (Some(duration), Some(target)) = (duration, target) {
            out.push(Stage { duration, target });
        }
    }
    out
}

fn check_requests(
    c: &mut Checker,
    raw: &RawScenario,
    root: &Node,
    targets: &[Target],
    env: &TemplateEnv,
    feeds: &[Feed],
) -> Steps {
    if raw.requests.is_empty() {
        c.err(
            pos(&raw.requests),
            "`requests`: expected at least one request",
        );
    }
    let mut st = Steps::default();
    for f in feeds {
        for (i, col) in f.columns.iter().enumerate() {
            st.variables.push(format!("{}.{col}", f.name));
            debug_assert_eq!(st.variables.len() - 1, f.first_slot + i);
        }
    }
    let base_vars: Vec<(String, usize)> = st
        .variables
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i))
        .collect();
    let root_map = root.as_mapping();
    let on_start_nodes = root_map.and_then(|m| m.get_sequence("on_start"));
    let mut allowed = base_vars;
    for (i, r) in raw.on_start.iter().enumerate() {
        let node = on_start_nodes.and_then(|s| s.get_mapping(i));
        if let Some(w) = &r.weight {
            c.err(
                pos(w),
                "`weight`: `on_start` steps run once per user and have no weight",
            );
        }
        if let Some(f) = &r.flow {
            c.err(pos(f), "`flow`: `on_start` is already a list of steps");
        }
        if let Some(idx) = check_step(c, r, node, targets, env, &mut allowed, &mut st) {
            st.on_start.push(idx);
        }
    }
    let after_start = allowed;
    let entry_nodes = root_map.and_then(|m| m.get_sequence("requests"));
    for (i, r) in raw.requests.iter().enumerate() {
        let node = entry_nodes.and_then(|s| s.get_mapping(i));
        let weight = check_weight(c, r);
        let mut allowed = after_start.clone();
        let steps = match &r.flow {
            None => check_step(c, r, node, targets, env, &mut allowed, &mut st)
                .into_iter()
                .collect(),
            Some(flow) => {
                check_name(c, &r.name, &mut st.names);
                if r.http.is_some() || r.grpc.is_some() || r.expect.is_some() {
                    c.err(
                        pos(&r.name),
                        format!(
                            "request `{}`: a flow's calls are its steps; move `http`/`grpc`/`expect` into a step",
                            r.name.as_str()
                        ),
                    );
                }
                if !r.capture.0.is_empty() || r.think.is_some() {
                    c.err(
                        pos(&r.name),
                        format!(
                            "request `{}`: `capture` and `think` belong to the flow's steps",
                            r.name.as_str()
                        ),
                    );
                }
                if flow.is_empty() {
                    c.err(pos(flow), "`flow`: expected at least one step");
                }
                let step_nodes = node.and_then(|m| m.get_sequence("flow"));
                let mut steps = Vec::new();
                for (j, step) in flow.iter().enumerate() {
                    if let Some(w) = &step.weight {
                        c.err(
                            pos(w),
                            "`weight`: a step runs whenever its flow does; weigh the flow instead",
                        );
                    }
                    if let Some(f) = &step.flow {
                        c.err(pos(f), "`flow`: flows do not nest");
                    }
                    let n = step_nodes.and_then(|s| s.get_mapping(j));
                    if let Some(idx) = check_step(c, step, n, targets, env, &mut allowed, &mut st) {
                        steps.push(idx);
                    }
                }
                steps
            }
        };
        if let Some(weight) = weight {
            for &s in &steps {
                st.requests[s].weight = weight;
            }
            st.entries.push(Entry {
                name: r.name.to_string(),
                weight,
                steps,
            });
        }
    }
    st
}

/// What [`check_requests`] builds.
#[derive(Default)]
struct Steps {
    requests: Vec<Request>,
    entries: Vec<Entry>,
    on_start: Vec<usize>,
    variables: Vec<String>,
    /// Every step and flow name, to find duplicates.
    names: Vec<String>,
    /// Every step's name as written, built or not: what thresholds and
    /// verification may name (equal to `requests`' names when valid).
    step_names: Vec<String>,
}

fn check_name(c: &mut Checker, name: &Text, seen: &mut Vec<String>) -> Option<RequestName> {
    let parsed = match RequestName::parse(name) {
        Ok(n) => Some(n),
        Err(e) => {
            c.err(pos(name), format!("`name`: {e}"));
            None
        }
    };
    if seen.iter().any(|n| n == name.as_str()) {
        c.err(
            pos(name),
            format!(
                "`name`: the request name `{}` is used twice; names must be unique",
                name.as_str()
            ),
        );
    }
    seen.push(name.to_string());
    parsed
}

fn check_weight(c: &mut Checker, r: &raw::RawRequest) -> Option<Weight> {
    match &r.weight {
        None => Weight::new(1),
        Some(w) => match c.parse(w, "weight", units::parse_count).map(Weight::new) {
            Some(Some(w)) => Some(w),
            Some(None) => {
                c.err(
                    pos(w),
                    format!(
                        "`weight`: expected a whole number from 1 to 1000000, got `{}`",
                        w.as_str()
                    ),
                );
                None
            }
            None => None,
        },
    }
}

/// Checks one step (a request, a flow step or an `on_start` step) and adds
/// it to `st`; its captures become variables for the steps after it.
fn check_step(
    c: &mut Checker,
    r: &raw::RawRequest,
    node: Option<&marked_yaml::types::MarkedMappingNode>,
    targets: &[Target],
    env: &TemplateEnv,
    allowed: &mut Vec<(String, usize)>,
    st: &mut Steps,
) -> Option<usize> {
    let name = check_name(c, &r.name, &mut st.names);
    st.step_names.push(r.name.to_string());
    let env = env.with_vars(allowed.iter().cloned());
    let mut expect = Expect::default();
    let raw_expect = r.expect.as_ref();
    if let Some(s) = raw_expect.and_then(|e| e.status.as_ref()) {
        if r.grpc.is_some() {
            c.err(pos(s), "`expect.status` is for HTTP requests; a gRPC call expects `code:` (e.g. `code: OK`)");
        }
        expect.status.clear();
        for item in s.items() {
            match StatusPattern::parse(item) {
                Some(p) => expect.status.push(p),
                None => c.err(pos(s), format!("`expect.status`: expected a status code such as `200` or a class such as `2xx`, got `{item}`")),
            }
        }
    }
    if let Some(s) = raw_expect.and_then(|e| e.code.as_ref()) {
        if r.http.is_some() {
            c.err(pos(s), "`expect.code` is for gRPC calls; an HTTP request expects `status:` (e.g. `status: 2xx`)");
        }
        expect.codes.clear();
        for item in s.items() {
            match GrpcCode::parse(item) {
                Some(code) => expect.codes.push(code),
                None => c.err(
                    pos(s),
                    format!(
                        "`expect.code`: expected a gRPC status code ({}), got `{item}`",
                        GrpcCode::NAMES.join(", ")
                    ),
                ),
            }
        }
    }
    if let Some(e) = raw_expect {
        if let Some(b) = &e.body_contains {
            if r.grpc.is_some() {
                c.err(
                    pos(b),
                    "`expect.body_contains` is for HTTP responses; check a gRPC reply with `json:`",
                );
            }
            expect.body_contains = Some(b.to_string());
        }
        for (k, v) in &e.header.0 {
            if r.grpc.is_some() {
                c.err(pos(k), "`expect.header` is for HTTP responses");
            }
            match http::HeaderName::from_bytes(k.as_bytes()) {
                Ok(h) => expect.headers.push((h.as_str().to_owned(), v.to_string())),
                Err(_) => c.err(
                    pos(k),
                    format!(
                        "`expect.header`: `{}` is not a valid HTTP header name",
                        k.as_str()
                    ),
                ),
            }
        }
        if let Some(j) = &e.json {
            let json_node = node
                .and_then(|m| m.get_mapping("expect"))
                .and_then(|m| m.get_node("json"));
            match json_node {
                Some(Node::Mapping(map)) => {
                    for (path, value) in map.iter() {
                        let at = Pos::of_span(path.span());
                        if let Err(e) = serde_json_path::JsonPath::parse(path.as_str()) {
                            c.err(at, format!("`expect.json`: `{}` is not a valid JSON path: {e}", path.as_str()));
                            continue;
                        }
                        expect.json.push((
                            Located {
                                value: path.as_str().to_owned(),
                                pos: at,
                            },
                            json_value(&json_from_yaml(value)),
                        ));
                    }
                }
                _ => c.err(pos(j), "`expect.json`: expected a mapping of JSON path to value, e.g. `{ \"$.balance\": 100 }`"),
            }
        }
    }
    let call_node = |key: &str| node.and_then(|m| m.get_mapping(key));
    let call = match (&r.http, &r.grpc) {
        (Some(_), Some(g)) => {
            c.err(
                pos(g),
                "`http` and `grpc` exclude each other; a request makes one call",
            );
            None
        }
        (None, None) => {
            c.err(
                pos(&r.name),
                format!(
                    "request `{}`: expected an `http:` or a `grpc:` call, or a `flow:` of steps",
                    r.name.as_str()
                ),
            );
            None
        }
        (Some(http), None) => {
            let json_node = call_node("http").and_then(|m| m.get_node("json"));
            check_http(c, http, json_node, targets, &env).map(Call::Http)
        }
        (None, Some(g)) => check_grpc(c, g, call_node("grpc"), targets, &env).map(Call::Grpc),
    };
    let think = c.parse_opt(&r.think, "think", DurationRange::parse);
    let mut captures = Vec::new();
    for (var, cap) in &r.capture.0 {
        let valid = var.starts_with(|ch: char| ch.is_ascii_alphabetic() || ch == '_')
            && var
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
        if !valid {
            c.err(
                pos(var),
                format!(
                    "`capture`: `{}` is not a variable name (letters, digits and `_`, not starting with a digit)",
                    var.as_str()
                ),
            );
            continue;
        }
        let source = match (&cap.json, &cap.header) {
            (Some(p), None) => match serde_json_path::JsonPath::parse(p) {
                Ok(_) => Some(CaptureSource::Json(located(p))),
                Err(e) => {
                    c.err(
                        pos(p),
                        format!(
                            "`capture.{}`: `{}` is not a valid JSON path: {e}",
                            var.as_str(),
                            p.as_str()
                        ),
                    );
                    None
                }
            },
            (None, Some(h)) => {
                if r.grpc.is_some() {
                    c.err(pos(h), "`capture.header` is for HTTP responses; capture a gRPC reply field with `json:`");
                }
                match http::HeaderName::from_bytes(h.as_bytes()) {
                    Ok(name) => Some(CaptureSource::Header(name.as_str().to_owned())),
                    Err(_) => {
                        c.err(
                            pos(h),
                            format!(
                                "`capture.{}`: `{}` is not a valid HTTP header name",
                                var.as_str(),
                                h.as_str()
                            ),
                        );
                        None
                    }
                }
            }
            _ => {
                c.err(
                    pos(cap),
                    format!(
                        "`capture.{}`: expected one of `json: \"$.path\"` or `header: NAME`",
                        var.as_str()
                    ),
                );
                None
            }
        };
        let slot = match st.variables.iter().position(|v| v == var.as_str()) {
            Some(s) => s,
            None => {
                st.variables.push(var.to_string());
                st.variables.len() - 1
            }
        };
        if let Some(source) = source {
            captures.push(Capture {
                name: var.to_string(),
                slot,
                source,
            });
        }
        if !allowed.iter().any(|(n, _)| n == var.as_str()) {
            allowed.push((var.to_string(), slot));
        }
    }
    let request = Request {
        name: name?,
        weight: Weight::new(1).expect("1 is a valid weight"),
        call: call?,
        expect,
        captures,
        think,
    };
    st.requests.push(request);
    Some(st.requests.len() - 1)
}

/// A YAML-typed JSON value with templates left as text.
fn json_value(node: &JsonNode) -> serde_json::Value {
    use serde_json::Value;
    match node {
        JsonNode::Null => Value::Null,
        JsonNode::Bool(b) => Value::Bool(*b),
        JsonNode::Number(n) => serde_json::from_str(n).unwrap_or(Value::Null),
        JsonNode::String(s) => Value::String(s.value.clone()),
        JsonNode::Array(items) => Value::Array(items.iter().map(json_value).collect()),
        JsonNode::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.value.clone(), json_value(v)))
                .collect(),
        ),
    }
}

fn check_http(
    c: &mut Checker,
    h: &Spanned<raw::RawHttp>,
    json: Option<&Node>,
    targets: &[Target],
    env: &TemplateEnv,
) -> Option<HttpCall> {
    let target = find_target(c, &h.target, targets);
    if let Some(t) = target.map(|i| &targets[i])
        && t.grpc.is_some()
    {
        c.err(
            pos(&h.target),
            format!(
                "`target`: `{}` is a gRPC target (it has `protos` or `reflection`); call it with `grpc:`",
                t.name
            ),
        );
    }
    let method = match &h.method {
        None => Some("GET".to_owned()),
        Some(m) => {
            let up = m.to_ascii_uppercase();
            if HTTP_METHODS.contains(&up.as_str()) {
                Some(up)
            } else {
                c.err(
                    pos(m),
                    format!(
                        "`method`: expected one of {}, got `{}`",
                        HTTP_METHODS.join(", "),
                        m.as_str()
                    ),
                );
                None
            }
        }
    };
    if !h.path.starts_with('/') {
        c.err(
            pos(&h.path),
            format!(
                "`path`: expected a path starting with `/`, got `{}`",
                h.path.as_str()
            ),
        );
    }
    let mut headers = Vec::new();
    for (k, v) in &h.headers.0 {
        check_header_name(c, k);
        if k.eq_ignore_ascii_case("connection") && v.contains("{{") {
            c.err(
                pos(v),
                "`headers`: `connection` decides whether the connection is kept, \
                 so its value cannot be a template",
            );
        }
        if !v.contains("{{") && http::HeaderValue::from_str(v).is_err() {
            c.err(
                pos(v),
                format!(
                    "`headers`: the value of `{}` is not a valid HTTP header value",
                    k.as_str()
                ),
            );
        }
        headers.push((k.to_string(), located(v)));
    }
    let body = match (&h.json, &h.body, json) {
        (Some(j), Some(_), _) => {
            c.err(pos(j), "`json` and `body` exclude each other; keep one");
            None
        }
        (Some(_), None, Some(node)) => Some(Body::Json(json_from_yaml(node))),
        (None, Some(b), _) => Some(Body::Text(located(b))),
        _ => None,
    };
    let mut check_template = |t: &Located<String>| {
        if let Err(e) = Template::compile(&t.value, env) {
            c.err(t.pos, format!("template {e}"));
        }
    };
    let path = located(&h.path);
    check_template(&path);
    let query: Vec<(String, Located<String>)> = h
        .query
        .0
        .iter()
        .map(|(k, v)| (k.to_string(), located(v)))
        .collect();
    for (_, v) in query.iter().chain(&headers) {
        check_template(v);
    }
    match &body {
        Some(Body::Text(t)) => check_template(t),
        Some(Body::Json(j)) => {
            if let Err(errors) = JsonTemplate::compile(j, env) {
                for e in errors {
                    c.err(e.pos, e.message);
                }
            }
        }
        None => {}
    }
    Some(HttpCall {
        target: target?,
        method: method?,
        path,
        query,
        headers,
        body,
    })
}

/// The index of the target a call names, or an error listing the targets.
fn find_target(c: &mut Checker, name: &Text, targets: &[Target]) -> Option<usize> {
    let target = targets.iter().position(|t| t.name == **name);
    if target.is_none() {
        let known: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        c.err(
            pos(name),
            format!(
                "`target`: no target named `{}`; expected one of: {}",
                name.as_str(),
                if known.is_empty() {
                    "(none defined)".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        );
    }
    target
}

fn check_grpc(
    c: &mut Checker,
    g: &Spanned<raw::RawGrpc>,
    node: Option<&marked_yaml::types::MarkedMappingNode>,
    targets: &[Target],
    env: &TemplateEnv,
) -> Option<GrpcCall> {
    let target = find_target(c, &g.target, targets);
    if let Some(t) = target.map(|i| &targets[i])
        && t.grpc.is_none()
    {
        c.err(
            pos(&g.target),
            format!(
                "`target`: `{}` has no `protos:` or `reflection: true`; a gRPC call needs one of them to know its messages",
                t.name
            ),
        );
    }
    let method = g.method.as_str().trim_start_matches('/');
    let well_formed = method
        .split_once('/')
        .is_some_and(|(svc, m)| !svc.is_empty() && !m.is_empty() && !m.contains('/'));
    if !well_formed {
        c.err(
            pos(&g.method),
            format!(
                "`method`: expected `package.Service/Method`, got `{}`",
                g.method.as_str()
            ),
        );
    }
    let messages_pos = g
        .message
        .as_ref()
        .map(pos)
        .or(g.messages.as_ref().map(pos))
        .flatten();
    let messages = match (
        node.and_then(|m| m.get_node("message")),
        node.and_then(|m| m.get_node("messages")),
    ) {
        (Some(_), Some(_)) => {
            c.err(
                g.messages.as_ref().and_then(pos),
                "`message` and `messages` exclude each other: one message (optionally sent `count` times), or a list",
            );
            Vec::new()
        }
        (Some(m), None) => vec![json_from_yaml(m)],
        (None, Some(Node::Sequence(seq))) => {
            if seq.is_empty() {
                c.err(messages_pos, "`messages`: expected at least one message");
            }
            seq.iter().map(json_from_yaml).collect()
        }
        (None, Some(_)) => {
            c.err(messages_pos, "`messages`: expected a list of messages");
            Vec::new()
        }
        // No message: the request message with every field at its default.
        (None, None) => vec![JsonNode::Object(Vec::new())],
    };
    let repeat = g.count.as_ref().and_then(|v| {
        if g.messages.is_some() {
            c.err(
                pos(v),
                "`count` repeats `message`; with a `messages` list, drop it",
            );
        }
        let n = c.parse(v, "count", units::parse_count)?;
        if n == 0 {
            c.err(pos(v), "`count`: expected at least 1, got `0`");
        }
        Some(Located {
            value: n,
            pos: pos(v),
        })
    });
    let mut metadata = Vec::new();
    for (k, v) in &g.metadata.0 {
        let lower = k.to_ascii_lowercase();
        if http::HeaderName::from_bytes(lower.as_bytes()).is_err() || lower.starts_with(':') {
            c.err(
                pos(k),
                format!("`metadata`: `{}` is not a valid metadata key", k.as_str()),
            );
        } else if lower.ends_with("-bin") {
            c.err(
                pos(k),
                format!(
                    "`metadata`: `{}`: binary (`-bin`) metadata is not supported",
                    k.as_str()
                ),
            );
        }
        if let Err(e) = Template::compile(v, env) {
            c.err(pos(v), format!("template {e}"));
        }
        metadata.push((lower, located(v)));
    }
    let deadline = g.deadline.as_ref().and_then(|v| {
        let d = c.parse(v, "deadline", units::parse_duration)?;
        if d.is_zero() {
            c.err(pos(v), "`deadline`: expected a positive duration, got zero");
        }
        Some(d)
    });
    for m in &messages {
        if let Err(errors) = JsonTemplate::compile(m, env) {
            for e in errors {
                c.err(e.pos, e.message);
            }
        }
    }
    Some(GrpcCall {
        target: target?,
        method: located(&g.method),
        messages,
        messages_pos,
        repeat,
        metadata,
        deadline,
        resolved: None,
    })
}

/// Converts YAML to JSON keeping YAML's own typing: plain scalars that read
/// as numbers, booleans or null become those; quoted scalars stay strings.
fn json_from_yaml(node: &Node) -> JsonNode {
    match node {
        Node::Scalar(s) => {
            let text = s.as_str();
            if s.may_coerce() {
                match text {
                    "null" | "~" | "" => return JsonNode::Null,
                    "true" => return JsonNode::Bool(true),
                    "false" => return JsonNode::Bool(false),
                    _ => {}
                }
                if serde_json::from_str::<serde_json::Number>(text).is_ok() {
                    return JsonNode::Number(text.to_owned());
                }
            }
            JsonNode::String(Located {
                value: text.to_owned(),
                pos: Pos::of_span(s.span()),
            })
        }
        Node::Sequence(seq) => JsonNode::Array(seq.iter().map(json_from_yaml).collect()),
        Node::Mapping(map) => JsonNode::Object(
            map.iter()
                .map(|(k, v)| {
                    (
                        Located {
                            value: k.as_str().to_owned(),
                            pos: Pos::of_span(k.span()),
                        },
                        json_from_yaml(v),
                    )
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, Vec<Diagnostic>> {
        build(Path::new("t.yaml"), text)
    }

    const GOOD: &str = r#"
name: shop
targets:
  web: { url: "http://127.0.0.1:8000/" }
load:
  users: 5
  wait: 10ms..20ms
  duration: 2s
data:
  names: [alice, bob]
requests:
  - name: home
    weight: 2
    http: { target: web, path: "/" }
  - name: buy
    http:
      target: web
      method: post
      path: /buy
      json: { qty: 3, ok: true, note: "7", who: "{{ pick(names) }}" }
    expect: { status: [200, 2xx] }
thresholds:
  - home.p95 < 300ms
"#;

    #[test]
    fn good_scenario_builds() {
        let s = parse(GOOD).unwrap();
        assert_eq!(s.targets[0].url, "http://127.0.0.1:8000");
        assert_eq!(s.requests.len(), 2);
        assert_eq!(s.requests[0].weight.get(), 2);
        let Call::Http(http) = &s.requests[1].call else {
            panic!("http call expected");
        };
        assert_eq!(http.method, "POST");
        let Some(Body::Json(JsonNode::Object(fields))) = &http.body else {
            panic!("json body expected");
        };
        assert_eq!(fields[0].1, JsonNode::Number("3".into()));
        assert_eq!(fields[1].1, JsonNode::Bool(true));
        assert!(matches!(&fields[2].1, JsonNode::String(l) if l.value == "7"));
        assert!(matches!(s.load.model, LoadModel::Closed { users: 5, .. }));
        assert_eq!(s.thresholds.len(), 1);
    }

    #[test]
    fn every_problem_is_reported_with_its_position() {
        let text = GOOD
            .replace("weight: 2", "weight: 0")
            .replace("target: web, path", "target: api, path")
            .replace("duration: 2s", "duration: 2 parsecs")
            .replace("name: buy", "name: home");
        let diags = parse(&text).unwrap_err();
        let msgs: Vec<String> = diags
            .iter()
            .map(|d| {
                format!(
                    "{}:{} {}",
                    d.pos.unwrap().line,
                    d.pos.unwrap().column,
                    d.message
                )
            })
            .collect();
        assert_eq!(diags.len(), 4, "{msgs:#?}");
        assert!(
            msgs.iter().any(|m| m.starts_with("8:13 `duration`")),
            "{msgs:#?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("weight") && m.contains("got `0`")),
            "{msgs:#?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("no target named `api`") && m.contains("web")),
            "{msgs:#?}"
        );
        assert!(msgs.iter().any(|m| m.contains("used twice")), "{msgs:#?}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let text = GOOD.replace("wait: 10ms..20ms", "wiat: 10ms..20ms");
        let diags = parse(&text).unwrap_err();
        assert_eq!(diags.len(), 1);
        assert!(
            diags[0].message.contains("unknown field `wiat`"),
            "{:?}",
            diags[0]
        );
        assert_eq!(diags[0].pos.unwrap().line, 7);
    }

    #[test]
    fn every_unknown_key_is_reported_with_the_rest() {
        let text = GOOD
            .replace("wait: 10ms..20ms", "wiat: 10ms..20ms")
            .replace("duration: 2s", "duraton: 2s")
            .replace("weight: 2", "weight: 0");
        let diags = parse(&text).unwrap_err();
        let has = |s: &str| diags.iter().any(|d| d.message.contains(s));
        assert!(has("`wiat`") && has("`duraton`"), "{diags:#?}");
        assert!(has("to say when the run ends"), "{diags:#?}");
        assert!(has("`weight`"), "{diags:#?}");
        assert_eq!(diags.len(), 4, "{diags:#?}");
    }

    #[test]
    fn overrides_switch_models_and_targets() {
        let mut s = parse(GOOD).unwrap();
        s.apply(&Overrides {
            rate: Some(Rate::parse("100/s").unwrap()),
            targets: vec![("web".into(), "http://127.0.0.2:9/".into())],
            ..Default::default()
        })
        .unwrap();
        assert!(matches!(s.load.model, LoadModel::Open { .. }));
        assert_eq!(s.targets[0].url, "http://127.0.0.2:9");
        let err = s
            .apply(&Overrides {
                targets: vec![("nope".into(), "http://x".into())],
                ..Default::default()
            })
            .unwrap_err();
        assert!(err.contains("no target `nope`"));
    }

    #[test]
    fn status_patterns() {
        assert!(StatusPattern::parse("2xx").unwrap().matches(204));
        assert!(!StatusPattern::parse("200").unwrap().matches(201));
        assert!(StatusPattern::parse("700").is_none());
        assert!(Expect::default().accepts(Outcome::Status(302)));
        assert!(!Expect::default().accepts(Outcome::Status(404)));
    }
}
