//! The scenario file exactly as written: serde types that mirror the YAML,
//! with the source position of every value a user may get wrong.
//!
//! Nothing here is checked beyond its YAML shape; `super::parse` turns these
//! into a validated [`super::Scenario`].

use std::fmt;
use std::marker::PhantomData;

use marked_yaml::Spanned;
use serde::Deserialize;
use serde::de::{MapAccess, Visitor};

/// A string value with its position in the file.
pub type Text = Spanned<String>;

/// A YAML mapping that keeps the order the user wrote it in.
#[derive(Debug)]
pub struct OrderedMap<V>(pub Vec<(Text, V)>);

impl<V> Default for OrderedMap<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry()? {
                    out.push((k, v));
                }
                Ok(OrderedMap(out))
            }
        }
        d.deserialize_map(MapVisitor(PhantomData))
    }
}

/// Top level of a scenario file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScenario {
    pub name: Text,
    #[serde(default)]
    pub targets: OrderedMap<RawTarget>,
    /// The load of a file without `scenarios:`.
    pub load: Option<Spanned<RawLoad>>,
    /// Lists for `pick()` and feeds of rows; read from the YAML tree,
    /// since an entry is either a list or a mapping.
    #[serde(default)]
    pub data: OrderedMap<Spanned<serde::de::IgnoredAny>>,
    pub requests: Option<Spanned<Vec<RawRequest>>>,
    /// Steps each user runs once, before its first iteration.
    #[serde(default)]
    pub on_start: Vec<RawRequest>,
    /// What a user does when `on_start` keeps failing.
    pub on_start_failures: Option<Spanned<RawOnStartFailures>>,
    /// Several loads side by side, each with its own requests, instead of
    /// the top-level `load:` and `requests:`.
    pub scenarios: Option<Spanned<OrderedMap<RawSubScenario>>>,
    /// `NAME.METRIC OP VALUE`, or `{ threshold: …, abort_on_fail: true,
    /// delay: 10s }`; read from the YAML tree, since an entry is either.
    #[serde(default)]
    pub thresholds: Vec<Spanned<serde::de::IgnoredAny>>,
    pub metrics: Option<Spanned<RawMetrics>>,
    #[serde(default)]
    pub verify: OrderedMap<Spanned<RawVerify>>,
    #[serde(default)]
    pub alerts: OrderedMap<Text>,
    #[serde(default)]
    pub promql: Vec<Spanned<RawPromql>>,
}

/// One entry of `scenarios:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSubScenario {
    pub load: Option<Spanned<RawLoad>>,
    /// Delay from the run's start, e.g. `30s`.
    pub start: Option<Text>,
    pub requests: Option<Spanned<Vec<RawRequest>>>,
    #[serde(default)]
    pub on_start: Vec<RawRequest>,
    pub on_start_failures: Option<Spanned<RawOnStartFailures>>,
}

/// `on_start_failures: { max: 5, then: abort }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOnStartFailures {
    pub max: Text,
    pub then: Option<Text>,
}

/// Where server-side metrics come from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub prometheus: Option<Text>,
    pub token_env: Option<Text>,
    #[serde(default)]
    pub scrape: Vec<Text>,
    pub scrape_interval: Option<Text>,
    pub grace: Option<Text>,
    pub settle_timeout: Option<Text>,
    pub max_response: Option<Text>,
}

/// How one request shows up in the server's metrics.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVerify {
    pub convention: Text,
    pub side: Option<Text>,
    #[serde(default, rename = "match")]
    pub matchers: OrderedMap<Text>,
    /// The custom convention's request counter, or the requests this
    /// entry covers (`requests: [deposit, overdraw]`).
    pub requests: Option<Spanned<MetricOrRequests>>,
    pub counter: Option<Text>,
    /// Other requests whose calls reach these series: request → calls
    /// each causes.
    #[serde(default)]
    pub derived: OrderedMap<Text>,
    /// For a gRPC client-side entry: the verify entry of the callee's
    /// server-side metrics, compared per code (hop consistency).
    pub callee: Option<Text>,
    pub status_label: Option<Text>,
    pub duration: Option<Text>,
    pub unit: Option<Text>,
    pub tolerance: Option<RawTolerance>,
    pub overhead: Option<Text>,
}

/// `requests:` of a verify entry: a metric name (custom convention) or a
/// list of request names.
#[derive(Debug)]
pub enum MetricOrRequests {
    Metric(String),
    Requests(Vec<Text>),
}

impl<'de> Deserialize<'de> for MetricOrRequests {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MetricOrRequests;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a metric name or a list of request names")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MetricOrRequests::Metric(v.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(t) = seq.next_element()? {
                    out.push(t);
                }
                Ok(MetricOrRequests::Requests(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Allowed disagreement beyond the run's outcome-unknown requests.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTolerance {
    pub count: Option<Text>,
    pub errors: Option<Text>,
    pub duration: Option<Text>,
}

/// A PromQL expression that must satisfy a comparison at the end.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPromql {
    pub name: Text,
    pub query: Text,
    pub expect: Text,
}

/// A service the scenario talks to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub url: Text,
    #[serde(default)]
    pub headers: OrderedMap<Text>,
    pub timeout: Option<Text>,
    /// Speak HTTP/2 without TLS (h2c, "prior knowledge").
    pub http2: Option<Spanned<bool>>,
    /// Accept any TLS certificate (self-signed test servers).
    pub insecure: Option<Spanned<bool>>,
    /// HTTP: the largest response body kept for checks and captures
    /// (`16M`).
    pub max_body: Option<Text>,
    /// gRPC: `.proto` files describing the target's services.
    #[serde(default)]
    pub protos: Vec<Text>,
    /// gRPC: directories imports in `protos` are resolved against.
    #[serde(default)]
    pub import_paths: Vec<Text>,
    /// gRPC: read the services from the server's reflection service.
    pub reflection: Option<Spanned<bool>>,
    /// gRPC: the largest reply message accepted (`16M`).
    pub max_message: Option<Text>,
    /// HTTP: credentials sent with every request.
    pub auth: Option<Spanned<RawAuth>>,
    /// HTTP: a cookie jar per user (default true).
    pub cookies: Option<Spanned<bool>>,
    /// HTTP: how many redirects to follow (default 0).
    pub follow_redirects: Option<Text>,
    /// `https`: a private CA bundle and a client certificate.
    pub tls: Option<Spanned<RawTls>>,
}

/// `tls: { ca: ca.pem, cert: client.pem, key: client-key.pem }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificates trusted instead of the system's roots.
    pub ca: Option<Text>,
    /// PEM client certificate chain, for mutual TLS.
    pub cert: Option<Text>,
    /// PEM private key of `cert`.
    pub key: Option<Text>,
}

/// `auth: { basic: { user, password } }` or `auth: { bearer: TOKEN }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub basic: Option<Spanned<RawBasic>>,
    pub bearer: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBasic {
    pub user: Text,
    pub password: Text,
}

/// How much load, and for how long.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLoad {
    pub users: Option<Text>,
    pub spawn_rate: Option<Text>,
    pub wait: Option<Text>,
    pub rate: Option<Text>,
    pub max_in_flight: Option<Text>,
    pub duration: Option<Text>,
    pub iterations: Option<Text>,
    pub iterations_per_user: Option<Text>,
    pub drain: Option<Text>,
    pub stages: Option<Spanned<Vec<RawStage>>>,
    /// Closed model: each user starts an iteration this often.
    pub pace: Option<Text>,
}

/// One stage of a ramped load: `users` (closed) or `rate` (open, a
/// constant `100/s` or a ramp `100/s..500/s`) for a while.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStage {
    #[serde(rename = "for")]
    pub duration: Text,
    pub users: Option<Text>,
    pub rate: Option<Text>,
}

/// A value taken from a response into a user variable.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCapture {
    /// A JSON path into the response body (HTTP) or message (gRPC).
    pub json: Option<Text>,
    /// An HTTP response header.
    pub header: Option<Text>,
}

/// One entry of `requests:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequest {
    pub name: Text,
    pub weight: Option<Text>,
    pub http: Option<Spanned<RawHttp>>,
    pub grpc: Option<Spanned<RawGrpc>>,
    pub expect: Option<RawExpect>,
    /// Ordered steps, each a request of its own, instead of one call.
    pub flow: Option<Spanned<Vec<RawRequest>>>,
    #[serde(default)]
    pub capture: OrderedMap<Spanned<RawCapture>>,
    /// Pause after this step (a duration or a range).
    pub think: Option<Text>,
}

/// A gRPC call. `message` and `messages` are read from the YAML tree, like
/// an HTTP `json` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrpc {
    pub target: Text,
    /// `package.Service/Method`.
    pub method: Text,
    pub message: Option<Spanned<serde::de::IgnoredAny>>,
    pub messages: Option<Spanned<serde::de::IgnoredAny>>,
    /// Client and bidirectional streaming: send `message` this many times.
    pub count: Option<Text>,
    #[serde(default)]
    pub metadata: OrderedMap<Text>,
    pub deadline: Option<Text>,
}

/// An HTTP call. `json` is read separately from the YAML tree so that
/// numbers, booleans and quoted strings keep their types.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub target: Text,
    pub method: Option<Text>,
    pub path: Text,
    #[serde(default)]
    pub query: OrderedMap<Text>,
    #[serde(default)]
    pub headers: OrderedMap<Text>,
    pub json: Option<Spanned<serde::de::IgnoredAny>>,
    pub body: Option<Text>,
    /// Credentials for this request, replacing the target's.
    pub auth: Option<Spanned<RawAuth>>,
    /// How many redirects to follow, replacing the target's setting.
    pub follow_redirects: Option<Text>,
    /// An `application/x-www-form-urlencoded` body: name → value.
    pub form: Option<Spanned<OrderedMap<Text>>>,
    /// A `multipart/form-data` body.
    pub multipart: Option<Spanned<RawMultipart>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMultipart {
    /// Text parts: name → value (a template).
    #[serde(default)]
    pub fields: OrderedMap<Text>,
    /// File parts: name → file.
    #[serde(default)]
    pub files: OrderedMap<Spanned<RawFilePart>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFilePart {
    /// Read once, relative to the scenario file.
    pub file: Text,
    /// Default `application/octet-stream`.
    pub content_type: Option<Text>,
    /// The file name sent; default the file's own name.
    pub filename: Option<Text>,
}

/// What counts as success.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExpect {
    pub status: Option<Spanned<OneOrMany>>,
    /// gRPC status codes.
    pub code: Option<Spanned<OneOrMany>>,
    /// JSON path → expected value; read from the YAML tree for its types.
    pub json: Option<Spanned<serde::de::IgnoredAny>>,
    pub body_contains: Option<Text>,
    #[serde(default)]
    pub header: OrderedMap<Text>,
}

/// `200`, `2xx`, or a list of those.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn items(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}
