//! What a request sends: targets, HTTP calls (method, path, query,
//! headers, body) and gRPC calls, with their templates compiled.

use marked_yaml::{Node, Spanned};

use super::checker::{Checker, located, pos};
use super::raw::{self, Text};
use super::targets::check_follow;
use super::types::*;
use super::units;
use crate::position::{Located, Pos};
use crate::template::{JsonNode, JsonTemplate, Template, TemplateEnv, push_query_encoded};
use http::{HeaderName, Method};

const HTTP_METHODS: &[&str] = &[
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE",
];

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

pub(super) fn check_header_name(c: &mut Checker, k: &Text) -> Option<HeaderName> {
    let Ok(name) = HeaderName::from_bytes(k.as_bytes()) else {
        c.err(
            pos(k),
            format!(
                "`headers`: `{}` is not a valid HTTP header name",
                k.as_str()
            ),
        );
        return None;
    };
    if FRAMING_HEADERS.iter().any(|f| k.eq_ignore_ascii_case(f)) {
        c.err(
            pos(k),
            format!(
                "`headers`: `{}` cannot be set; redproof frames each request from its body",
                k.as_str()
            ),
        );
        return None;
    }
    Some(name)
}

/// The first byte that may not appear in an HTTP/1.1 request target:
/// whitespace, control characters, non-ASCII (to be percent-encoded) and
/// `#` (fragments are not sent).
pub fn bad_target_byte(target: &str) -> Option<char> {
    target
        .bytes()
        .find(|&b| b <= b' ' || b >= 0x7f || b == b'#')
        .map(char::from)
}

/// Compiles a template written in the file, recording its error.
fn compile(c: &mut Checker, t: &Text, env: &TemplateEnv) -> Option<Template> {
    match Template::compile(t, env) {
        Ok(t) => Some(t),
        Err(e) => {
            c.err(pos(t), format!("template {e}"));
            None
        }
    }
}

/// Compiles a JSON body or message, recording the error of every bad leaf.
fn compile_json(c: &mut Checker, node: &JsonNode, env: &TemplateEnv) -> Option<JsonTemplate> {
    match JsonTemplate::compile(node, env) {
        Ok(t) => Some(t),
        Err(errors) => {
            for e in errors {
                c.err(e.pos, e.message);
            }
            None
        }
    }
}

/// A target-level value with templates: only `env()` may be used there,
/// since it is read once, at validation.
pub(super) fn env_only(c: &mut Checker, t: &Text, field: &str) -> Option<String> {
    let empty = TemplateEnv::new([]);
    match Template::compile(t, &empty) {
        Ok(compiled) => compiled.as_static().map(str::to_owned),
        Err(e) if !e.contains("unknown variable") => {
            c.err(pos(t), format!("`{field}`: template {e}"));
            return None;
        }
        Err(_) => None,
    }
    .or_else(|| {
        c.err(
            pos(t),
            format!(
                "`{field}`: only `env(\"NAME\")` can be used here: it is read once, when \
                 the file is checked (templates that change per request go in a request's \
                 `headers`, `path`, `query` or body)"
            ),
        );
        None
    })
}

/// `Basic base64(user:password)`; both parts registered as secrets.
pub(super) fn basic_value(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    crate::secrets::register(password);
    crate::secrets::register(&encoded);
    format!("Basic {encoded}")
}

/// Which of `basic` and `bearer` an `auth:` holds; exactly one.
pub(super) fn auth_kind<'a>(
    c: &mut Checker,
    auth: &'a Spanned<raw::RawAuth>,
) -> Option<Result<&'a raw::RawBasic, &'a Text>> {
    match (&auth.basic, &auth.bearer) {
        (Some(b), None) => Some(Ok(b)),
        (None, Some(t)) => Some(Err(t)),
        _ => {
            c.err(
                pos(auth),
                "`auth`: expected one of `basic: { user: …, password: … }` or `bearer: TOKEN`",
            );
            None
        }
    }
}

/// The `authorization` header of a request's `auth:`. A bearer token may
/// use any template (a token captured at login); basic credentials are
/// encoded once, so only `env()` may be used in them.
fn request_auth(
    c: &mut Checker,
    auth: &Spanned<raw::RawAuth>,
    env: &TemplateEnv,
) -> Option<Template> {
    match auth_kind(c, auth)? {
        Ok(basic) => {
            let user = env_only(c, &basic.user, "auth.basic.user");
            let password = env_only(c, &basic.password, "auth.basic.password");
            let value = basic_value(&user?, &password?);
            if http::HeaderValue::from_str(&value).is_err() {
                c.err(
                    pos(auth),
                    "`auth`: the credentials are not valid in an HTTP header (control characters?)",
                );
                return None;
            }
            Template::compile(&value, &TemplateEnv::new([])).ok()
        }
        Err(token) => {
            let t = compile(c, token, env)?;
            if let Some(s) = t.as_static() {
                crate::secrets::register(s);
            }
            let with_scheme = match t.as_static() {
                Some(s) => format!("Bearer {s}"),
                None => format!("Bearer {}", token.as_str()),
            };
            // The written text compiles again with its scheme in front;
            // `env()` values were read above and are read the same now.
            match Template::compile(&with_scheme, env) {
                Ok(t) => Some(t),
                Err(e) => {
                    c.err(pos(token), format!("template {e}"));
                    None
                }
            }
        }
    }
}

pub(super) fn check_http(
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
        None => Some(Method::GET),
        Some(m) => {
            let up = m.to_ascii_uppercase();
            if HTTP_METHODS.contains(&up.as_str()) {
                Method::from_bytes(up.as_bytes()).ok()
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
    let mut headers_ok = true;
    for (k, v) in &h.headers.0 {
        let name = check_header_name(c, k);
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
        match (name, compile(c, v, env)) {
            (Some(name), Some(t)) => headers.push((name, t)),
            _ => headers_ok = false,
        }
    }
    if let Some(auth) = &h.auth {
        if let Some((k, _)) = h
            .headers
            .0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        {
            c.err(
                pos(k),
                "`headers`: `authorization` and `auth` both set the authorization header; keep one",
            );
            headers_ok = false;
        } else {
            match request_auth(c, auth, env) {
                Some(t) => headers.push((http::header::AUTHORIZATION, t)),
                None => headers_ok = false,
            }
        }
    }
    let bodies: Vec<(&str, Option<Pos>)> = [
        ("json", h.json.as_ref().and_then(pos)),
        ("body", h.body.as_ref().and_then(pos)),
        ("form", h.form.as_ref().and_then(pos)),
        ("multipart", h.multipart.as_ref().and_then(pos)),
    ]
    .into_iter()
    .filter(|(_, p)| p.is_some())
    .collect();
    let body = if let [(first, _), (second, at), ..] = bodies.as_slice() {
        c.err(
            *at,
            format!("`{first}` and `{second}` are both a body; a request sends one"),
        );
        None
    } else if let Some(node) = json.filter(|_| h.json.is_some()) {
        compile_json(c, &json_from_yaml(node), env).map(|t| Some(Body::Json(t)))
    } else if let Some(b) = &h.body {
        compile(c, b, env).map(|t| Some(Body::Text(t)))
    } else if let Some(form) = &h.form {
        let mut fields = Vec::new();
        let mut ok = true;
        for (k, v) in &form.0 {
            let mut key = String::new();
            push_query_encoded(&mut key, k);
            match compile(c, v, env) {
                Some(t) => fields.push((key, t)),
                None => ok = false,
            }
        }
        ok.then_some(Some(Body::Form(fields)))
    } else if let Some(m) = &h.multipart {
        check_multipart(c, m, env).map(|m| Some(Body::Multipart(m)))
    } else {
        Some(None)
    };
    let path = compile(c, &h.path, env);
    // A path without templates is sent as written: refuse now what could
    // not go on the wire. Templated paths are checked once rendered.
    if let Some(p) = path.as_ref().and_then(Template::as_static)
        && p.starts_with('/')
    {
        if let Some(b) = bad_target_byte(p) {
            c.err(
                pos(&h.path),
                format!(
                    "`path`: `{p}` is not a valid request target: it has `{}` (percent-encode it)",
                    b.escape_default()
                ),
            );
        } else if let Err(e) = http::uri::PathAndQuery::try_from(p) {
            c.err(
                pos(&h.path),
                format!("`path`: `{p}` is not a valid path: {e}"),
            );
        }
    }
    let mut query = Vec::new();
    let mut query_ok = true;
    for (k, v) in &h.query.0 {
        let mut key = String::new();
        push_query_encoded(&mut key, k);
        match compile(c, v, env) {
            Some(t) => query.push((key, t)),
            None => query_ok = false,
        }
    }
    if !(headers_ok && query_ok) {
        return None;
    }
    let follow_redirects = check_follow(c, &h.follow_redirects);
    Some(HttpCall {
        follow_redirects,
        target: target?,
        method: method?,
        path: path?,
        query,
        headers,
        body: body?,
    })
}

/// A multipart body: file parts are read now, relative to the scenario;
/// field values stay templates.
fn check_multipart(
    c: &mut Checker,
    m: &Spanned<raw::RawMultipart>,
    env: &TemplateEnv,
) -> Option<Multipart> {
    use bytes::Bytes;
    if m.fields.0.is_empty() && m.files.0.is_empty() {
        c.err(
            pos(m),
            "`multipart`: expected `fields:` (name → value) and/or `files:` (name → { file, content_type })",
        );
        return None;
    }
    let mut fields = Vec::new();
    for (name, v) in &m.fields.0 {
        fields.push((name, compile(c, v, env)));
    }
    let mut files = Vec::new();
    for (name, f) in &m.files.0 {
        let path = c.base.join(f.file.as_str());
        let content = match std::fs::read(&path) {
            Ok(b) => Some(b),
            Err(e) => {
                c.err(
                    pos(&f.file),
                    format!(
                        "`multipart`: cannot read `{}` (relative paths start at the scenario's directory): {e}",
                        f.file.as_str()
                    ),
                );
                None
            }
        };
        let content_type = f
            .content_type
            .as_ref()
            .map_or("application/octet-stream", |t| t.as_str());
        let valid_type = content_type
            .split_once('/')
            .is_some_and(|(a, b)| !a.trim().is_empty() && !b.trim().is_empty())
            && http::HeaderValue::from_str(content_type).is_ok();
        if !valid_type {
            c.err(
                f.content_type.as_ref().and_then(pos),
                format!(
                    "`content_type`: expected a media type such as `image/png` or `text/csv; charset=utf-8`, got `{content_type}`"
                ),
            );
        }
        let filename = match &f.filename {
            Some(n) => n.to_string(),
            None => std::path::Path::new(f.file.as_str())
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        if let Some(content) = content.filter(|_| valid_type) {
            files.push((name, filename, content_type.to_owned(), content));
        }
    }
    if fields.iter().any(|(_, t)| t.is_none()) || files.len() != m.files.0.len() {
        return None;
    }
    // A boundary that no file contains. Field values are rendered per
    // request; 96 random bits do not turn up in them by chance.
    let boundary = loop {
        let b = format!("redproof-{:024x}", fastrand::u128(..) >> 32);
        let clash = files
            .iter()
            .any(|(_, _, _, content)| content.windows(b.len()).any(|w| w == b.as_bytes()));
        if !clash {
            break b;
        }
    };
    let mut parts = Vec::new();
    let mut lit: Vec<u8> = Vec::new();
    for (name, t) in fields {
        lit.extend_from_slice(
            format!(
                "--{boundary}\r\ncontent-disposition: form-data; name=\"{}\"\r\n\r\n",
                quote_form_name(name)
            )
            .as_bytes(),
        );
        let t = t.expect("checked above");
        match t.as_static() {
            Some(v) => lit.extend_from_slice(v.as_bytes()),
            None => {
                parts.push(MultipartPiece::Bytes(Bytes::from(std::mem::take(&mut lit))));
                parts.push(MultipartPiece::Field(t));
            }
        }
        lit.extend_from_slice(b"\r\n");
    }
    for (name, filename, content_type, content) in files {
        lit.extend_from_slice(
            format!(
                "--{boundary}\r\ncontent-disposition: form-data; name=\"{}\"; filename=\"{}\"\r\ncontent-type: {content_type}\r\n\r\n",
                quote_form_name(name),
                quote_form_name(&filename)
            )
            .as_bytes(),
        );
        lit.extend_from_slice(&content);
        lit.extend_from_slice(b"\r\n");
    }
    lit.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    parts.push(MultipartPiece::Bytes(Bytes::from(lit)));
    Some(Multipart { boundary, parts })
}

/// A name or file name in a `content-disposition` header, with `"`, CR
/// and LF percent-encoded as browsers do (HTML's multipart/form-data).
fn quote_form_name(name: &str) -> String {
    name.replace('"', "%22")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
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

pub(super) fn check_grpc(
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
    let mut metadata_ok = true;
    for (k, v) in &g.metadata.0 {
        let lower = k.to_ascii_lowercase();
        let key = match HeaderName::from_bytes(lower.as_bytes()) {
            Ok(key) if !lower.starts_with(':') => Some(key),
            _ => {
                c.err(
                    pos(k),
                    format!("`metadata`: `{}` is not a valid metadata key", k.as_str()),
                );
                None
            }
        };
        if lower.ends_with("-bin") {
            c.err(
                pos(k),
                format!(
                    "`metadata`: `{}`: binary (`-bin`) metadata is not supported",
                    k.as_str()
                ),
            );
        }
        match (key, compile(c, v, env)) {
            (Some(key), Some(t)) => metadata.push((key, t)),
            _ => metadata_ok = false,
        }
    }
    let deadline = g.deadline.as_ref().and_then(|v| {
        let d = c.parse(v, "deadline", units::parse_duration)?;
        if d.is_zero() {
            c.err(pos(v), "`deadline`: expected a positive duration, got zero");
        }
        Some(d)
    });
    let templates: Option<Vec<JsonTemplate>> = messages
        .iter()
        .map(|m| compile_json(c, m, env))
        .collect::<Vec<_>>()
        .into_iter()
        .collect();
    if !metadata_ok {
        return None;
    }
    Some(GrpcCall {
        target: target?,
        method: located(&g.method),
        messages,
        templates: templates?,
        messages_pos,
        repeat,
        metadata,
        deadline,
        resolved: None,
    })
}

/// Converts YAML to JSON keeping YAML's own typing: plain scalars that read
/// as numbers, booleans or null become those; quoted scalars stay strings.
pub(super) fn json_from_yaml(node: &Node) -> JsonNode {
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
