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
    pub requests: Vec<Request>,
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
    pub weight: Weight,
    pub call: Call,
    pub expect: Expect,
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
        }
    }
}

impl Expect {
    pub fn accepts(&self, outcome: Outcome) -> bool {
        match outcome {
            Outcome::Status(status) => self.status.iter().any(|p| p.matches(status)),
            Outcome::Grpc(code) => self.codes.contains(&code),
            Outcome::Transport(_) => false,
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
    let data = check_data(c, &raw.data);
    let load_key = find_key(root, "load", Pos::default());
    let load = check_load(c, &raw.load, load_key);
    let env = TemplateEnv::new(data.iter().map(|d| (d.name.as_str(), d.values.as_slice())));
    let mut requests = check_requests(c, raw, root, &targets, &env);
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
    let mut names: Vec<&str> = raw.requests.iter().map(|r| r.name.as_str()).collect();
    names.dedup();
    let mut thresholds = Vec::new();
    for t in &raw.thresholds {
        match threshold::parse(t.as_str(), &names) {
            Ok(th) => thresholds.push(th),
            Err(e) => c.err(pos(t), format!("threshold `{}`: {e}", t.as_str())),
        }
    }
    let request_names: Vec<&str> = raw.requests.iter().map(|r| r.name.as_str()).collect();
    let verification = super::verification::check(c, raw, &request_names);
    for (t, raw_t) in thresholds.iter().zip(&raw.thresholds) {
        if let (true, threshold::Subject::Request(name)) = (t.server, &t.subject) {
            let has_entry = verification.entries.iter().any(|e| {
                raw.requests
                    .get(e.request)
                    .is_some_and(|r| r.name.as_str() == name)
            });
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
        requests,
        thresholds,
        verification,
    })
}

fn check_targets(c: &mut Checker, raw: &OrderedMap<raw::RawTarget>, base: &Path) -> Vec<Target> {
    let mut out: Vec<Target> = Vec::new();
    for (name, t) in &raw.0 {
        let grpc = check_grpc_target(c, t, base);
        let url = c.parse(&t.url, "url", check_url);
        let timeout = t
            .timeout
            .as_ref()
            .and_then(|v| c.parse(v, "timeout", units::parse_duration))
            .unwrap_or(DEFAULT_TIMEOUT);
        let mut headers = Vec::new();
        for (k, v) in &t.headers.0 {
            if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
                c.err(
                    pos(k),
                    format!(
                        "`headers`: `{}` is not a valid HTTP header name",
                        k.as_str()
                    ),
                );
            }
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

fn check_data(c: &mut Checker, raw: &OrderedMap<Spanned<Vec<Text>>>) -> Vec<DataList> {
    raw.0
        .iter()
        .map(|(name, values)| {
            if values.is_empty() {
                c.err(
                    pos(values),
                    format!("`data.{}`: expected at least one value", name.as_str()),
                );
            }
            DataList {
                name: name.to_string(),
                values: values.iter().map(|v| v.to_string()).collect(),
            }
        })
        .collect()
}

fn check_load(
    c: &mut Checker,
    load: &Spanned<raw::RawLoad>,
    load_pos: Option<Pos>,
) -> Option<Load> {
    let l: &raw::RawLoad = load;
    let count = |c: &mut Checker, v: &Option<Text>, field: &str| {
        v.as_ref()
            .and_then(|v| c.parse(v, field, units::parse_count))
    };
    let users = count(c, &l.users, "users");
    let iterations = count(c, &l.iterations, "iterations");
    let max_in_flight = count(c, &l.max_in_flight, "max_in_flight");
    let rate = l
        .rate
        .as_ref()
        .and_then(|v| c.parse(v, "rate", Rate::parse));
    let spawn_rate = l
        .spawn_rate
        .as_ref()
        .and_then(|v| c.parse(v, "spawn_rate", Rate::parse));
    let wait = l
        .wait
        .as_ref()
        .and_then(|v| c.parse(v, "wait", DurationRange::parse));
    let duration = l
        .duration
        .as_ref()
        .and_then(|v| c.parse(v, "duration", units::parse_duration));
    let drain = l
        .drain
        .as_ref()
        .and_then(|v| c.parse(v, "drain", units::parse_duration));

    for (v, field) in [
        (&l.users, "users"),
        (&l.iterations, "iterations"),
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
    let model = match (&l.users, &l.rate) {
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
    if l.duration.is_none() && l.iterations.is_none() {
        c.err(load_pos, "`load`: expected `duration:` (e.g. `30s`) or `iterations:` (total requests) to say when the run ends");
    }
    Some(Load {
        model: model?,
        duration,
        iterations,
        drain: drain.unwrap_or(DEFAULT_DRAIN),
    })
}

fn check_requests(
    c: &mut Checker,
    raw: &RawScenario,
    root: &Node,
    targets: &[Target],
    env: &TemplateEnv,
) -> Vec<Request> {
    if raw.requests.is_empty() {
        c.err(
            pos(&raw.requests),
            "`requests`: expected at least one request",
        );
    }
    let json_nodes = root.as_mapping().and_then(|m| m.get_sequence("requests"));
    let mut out: Vec<Request> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (i, r) in raw.requests.iter().enumerate() {
        let name = match RequestName::parse(&r.name) {
            Ok(n) => Some(n),
            Err(e) => {
                c.err(pos(&r.name), format!("`name`: {e}"));
                None
            }
        };
        if seen.contains(&r.name.as_str()) {
            c.err(
                pos(&r.name),
                format!(
                    "`name`: the request name `{}` is used twice; names must be unique",
                    r.name.as_str()
                ),
            );
        }
        seen.push(r.name.as_str());
        let weight = match &r.weight {
            None => Weight::new(1),
            Some(w) => {
                let v = c.parse(w, "weight", units::parse_count);
                match v.map(Weight::new) {
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
                }
            }
        };
        let mut expect = Expect::default();
        if let Some(s) = r.expect.as_ref().and_then(|e| e.status.as_ref()) {
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
        if let Some(s) = r.expect.as_ref().and_then(|e| e.code.as_ref()) {
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
        let call_node = |key: &str| {
            json_nodes
                .and_then(|s| s.get_mapping(i))
                .and_then(|m| m.get_mapping(key))
        };
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
                        "request `{}`: expected an `http:` or a `grpc:` call",
                        r.name.as_str()
                    ),
                );
                None
            }
            (Some(http), None) => {
                let json_node = call_node("http").and_then(|m| m.get_node("json"));
                check_http(c, http, json_node, targets, env).map(Call::Http)
            }
            (None, Some(g)) => check_grpc(c, g, call_node("grpc"), targets, env).map(Call::Grpc),
        };
        if let (Some(name), Some(weight), Some(call)) = (name, weight, call) {
            out.push(Request {
                name,
                weight,
                call,
                expect,
            });
        }
    }
    out
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
        if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
            c.err(
                pos(k),
                format!(
                    "`headers`: `{}` is not a valid HTTP header name",
                    k.as_str()
                ),
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
