//! The `requests:` section: plain requests, flows of steps and `on_start`,
//! with their weights, expectations, captures and the variables each
//! step may use.

use std::collections::HashSet;

use marked_yaml::types::MarkedMappingNode;
use marked_yaml::{Node, Spanned};

use super::calls::{check_grpc, check_http, json_from_yaml};
use super::checker::{Checker, pos};
use super::raw::{self, Text};
use super::types::*;
use super::units::{self, DurationRange};
use crate::outcome::GrpcCode;
use crate::position::Pos;
use crate::template::{JsonNode, TemplateEnv};

/// Where one part's requests are written: the top level of the file, or
/// one entry of `scenarios:`.
pub(super) struct PartSource<'a> {
    /// The scenario's name, which qualifies its request names
    /// (`scenario.request`); `None` at the top level.
    pub(super) name: Option<&'a str>,
    pub(super) requests: &'a Spanned<Vec<raw::RawRequest>>,
    pub(super) on_start: &'a [raw::RawRequest],
    /// The mapping that holds `requests:` and `on_start:`, for the values
    /// read from the YAML tree (JSON bodies, gRPC messages).
    pub(super) node: Option<&'a MarkedMappingNode>,
}

/// One part's entries and `on_start` steps, as indices into
/// [`Steps::requests`].
pub(super) struct PartSteps {
    pub(super) entries: Vec<Entry>,
    pub(super) on_start: Vec<usize>,
}

/// Checks one part's `on_start` and `requests`: every step becomes a
/// [`Request`] in `st`, every top-level entry an [`Entry`].
pub(super) fn check_requests(
    c: &mut Checker,
    part: &PartSource,
    targets: &[Target],
    env: &TemplateEnv,
    st: &mut Steps,
) -> PartSteps {
    if part.requests.is_empty() {
        c.err(
            pos(part.requests),
            "`requests`: expected at least one request",
        );
    }
    let base_vars: Vec<(String, usize)> = st.variables[..st.feed_variables]
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i))
        .collect();
    let prefix = part.name;
    st.prefix = prefix.map(str::to_owned);
    let mut out = PartSteps {
        entries: Vec::new(),
        on_start: Vec::new(),
    };
    let on_start_nodes = part.node.and_then(|m| m.get_sequence("on_start"));
    let mut allowed = base_vars;
    for (i, r) in part.on_start.iter().enumerate() {
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
        if let Some(idx) = check_step(c, r, node, targets, env, &mut allowed, st) {
            out.on_start.push(idx);
        }
    }
    let after_start = allowed;
    let entry_nodes = part.node.and_then(|m| m.get_sequence("requests"));
    for (i, r) in part.requests.iter().enumerate() {
        let node = entry_nodes.and_then(|s| s.get_mapping(i));
        let weight = check_weight(c, r);
        let mut allowed = after_start.clone();
        let steps = match &r.flow {
            None => check_step(c, r, node, targets, env, &mut allowed, st)
                .into_iter()
                .collect(),
            Some(flow) => {
                check_name(c, &r.name, prefix, &mut st.names);
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
                    if let Some(idx) = check_step(c, step, n, targets, env, &mut allowed, st) {
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
            out.entries.push(Entry {
                name: qualify(prefix, r.name.as_str()),
                weight,
                steps,
            });
        }
    }
    out
}

/// `scenario.name` inside a scenario, else `name`.
fn qualify(prefix: Option<&str>, name: &str) -> String {
    match prefix {
        Some(p) => format!("{p}.{name}"),
        None => name.to_owned(),
    }
}

/// What [`check_requests`] builds, over every part of the file.
#[derive(Default)]
pub(super) struct Steps {
    pub(super) requests: Vec<Request>,
    pub(super) variables: Vec<String>,
    /// The first variables are the feeds' columns, which every part's
    /// steps may use; captures follow.
    feed_variables: usize,
    /// The name of the part being checked, which qualifies its steps'
    /// names.
    prefix: Option<String>,
    /// Every step and flow name, to find duplicates.
    names: HashSet<String>,
    /// Every step's name as written, built or not: what thresholds and
    /// verification may name (equal to `requests`' names when valid).
    pub(super) step_names: Vec<String>,
}

impl Steps {
    /// Steps with the feeds' columns as their first variables.
    pub(super) fn new(feeds: &[Feed]) -> Self {
        let mut st = Steps::default();
        for f in feeds {
            for (i, col) in f.columns.iter().enumerate() {
                st.variables.push(format!("{}.{col}", f.name));
                debug_assert_eq!(st.variables.len() - 1, f.first_slot + i);
            }
        }
        st.feed_variables = st.variables.len();
        st
    }
}

fn check_name(
    c: &mut Checker,
    name: &Text,
    prefix: Option<&str>,
    seen: &mut HashSet<String>,
) -> Option<RequestName> {
    let parsed = match RequestName::parse(name) {
        Ok(n) => Some(match prefix {
            Some(p) => RequestName::qualified(p, &n),
            None => n,
        }),
        Err(e) => {
            c.err(pos(name), format!("`name`: {e}"));
            None
        }
    };
    if !seen.insert(qualify(prefix, name)) {
        c.err(
            pos(name),
            format!(
                "`name`: the request name `{}` is used twice; names must be unique",
                name.as_str()
            ),
        );
    }
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
    let prefix = st.prefix.clone();
    let name = check_name(c, &r.name, prefix.as_deref(), &mut st.names);
    st.step_names
        .push(qualify(prefix.as_deref(), r.name.as_str()));
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
                Ok(h) => expect.headers.push((h, v.to_string())),
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
                        let query = match serde_json_path::JsonPath::parse(path.as_str()) {
                            Ok(p) => JsonQuery { text: path.as_str().to_owned(), path: p },
                            Err(e) => {
                                c.err(at, format!("`expect.json`: `{}` is not a valid JSON path: {e}", path.as_str()));
                                continue;
                            }
                        };
                        expect.json.push((query, json_value(&json_from_yaml(value))));
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
                Ok(path) => Some(CaptureSource::Json(JsonQuery {
                    text: p.to_string(),
                    path,
                })),
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
                    Ok(name) => Some(CaptureSource::Header(name)),
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
