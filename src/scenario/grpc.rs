//! gRPC descriptors: compiling `.proto` files with protox, and checking
//! every gRPC call of a scenario against its target's services before
//! any traffic, so a typo in a method or a field is a scenario error with
//! its file, line and column rather than a run full of failures.

use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor};

use super::Diagnostic;
use super::types::{GrpcCall, GrpcKind, ProtoSource, Scenario};
use crate::position::Pos;
use crate::template::JsonNode;

/// Compiles a target's `.proto` files (and their imports). On failure,
/// returns the index of the offending file when known, and the compiler's
/// message with `file:line:column`.
pub fn compile_protos(source: &ProtoSource) -> Result<DescriptorPool, (Option<usize>, String)> {
    let ProtoSource::Protos {
        files,
        import_paths,
    } = source
    else {
        return Err((None, "not a `protos` target".into()));
    };
    for (i, f) in files.iter().enumerate() {
        if !f.is_file() {
            return Err((
                Some(i),
                format!("cannot read `{}`: no such file", f.display()),
            ));
        }
    }
    for dir in import_paths {
        if !dir.is_dir() {
            return Err((
                None,
                format!("import path `{}` is not a directory", dir.display()),
            ));
        }
    }
    let mut compiler = protox::Compiler::new(import_paths).map_err(|e| (None, describe(&e)))?;
    compiler.include_imports(true);
    for (i, f) in files.iter().enumerate() {
        compiler.open_file(f).map_err(|e| (Some(i), describe(&e)))?;
    }
    Ok(compiler.descriptor_pool())
}

/// protox's message, prefixed with `file:line:column` when it points into
/// a file.
fn describe(e: &protox::Error) -> String {
    use miette::Diagnostic as _;
    let at = (|| {
        let file = e.file()?;
        let span = e.labels()?.next()?;
        let contents = e.source_code()?.read_span(span.inner(), 0, 0).ok()?;
        Some(format!(
            "{file}:{}:{}",
            contents.line() + 1,
            contents.column() + 1
        ))
    })();
    let mut msg = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        let m = c.to_string();
        if !msg.contains(&m) {
            msg.push_str(": ");
            msg.push_str(&m);
        }
        cur = c.source();
    }
    match (at, e.file()) {
        (Some(at), _) => format!("{at}: {msg}"),
        (None, Some(file)) if !msg.contains(file) => format!("{file}: {msg}"),
        _ => msg,
    }
}

impl Scenario {
    /// Installs descriptors fetched by reflection for target `target` and
    /// checks the calls made to it.
    pub fn resolve_target(&mut self, target: usize, pool: DescriptorPool) -> Vec<Diagnostic> {
        let mut diags = Vec::new();
        for r in &mut self.requests {
            if let super::Call::Grpc(g) = &mut r.call
                && g.target == target
            {
                diags.extend(resolve_call(g, &pool));
            }
        }
        if let Some(t) = self.targets[target].grpc.as_mut() {
            t.pool = Some(pool);
        }
        diags
    }

    /// Targets whose descriptors are still to be fetched by reflection.
    pub fn reflection_targets(&self) -> Vec<usize> {
        self.targets
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                t.grpc
                    .as_ref()
                    .is_some_and(|g| g.source == ProtoSource::Reflection && g.pool.is_none())
            })
            .map(|(i, _)| i)
            .collect()
    }
}

/// Finds the call's method in `pool` and checks its messages against the
/// request type; sets `g.resolved` when the method exists.
pub fn resolve_call(g: &mut GrpcCall, pool: &DescriptorPool) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let (service, method) = g.service_and_method();
    if method.is_empty() {
        // A malformed method name is already reported.
        return out;
    }
    let Some(svc) = pool.get_service_by_name(service) else {
        let known: Vec<String> = pool.services().map(|s| s.full_name().to_owned()).collect();
        out.push(Diagnostic::at(
            g.method.pos,
            format!(
                "`method`: no service `{service}`; the target has: {}",
                if known.is_empty() {
                    "(no services)".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        ));
        return out;
    };
    let Some(m) = svc.methods().find(|m| m.name() == method) else {
        let known: Vec<String> = svc
            .methods()
            .map(|m| format!("{}/{}", svc.full_name(), m.name()))
            .collect();
        out.push(Diagnostic::at(
            g.method.pos,
            format!(
                "`method`: `{service}` has no method `{method}`; its methods are: {}",
                known.join(", ")
            ),
        ));
        return out;
    };
    let kind = GrpcKind::of(&m);
    if !kind.client_streams() {
        if g.messages.len() > 1 {
            out.push(Diagnostic::at(
                g.messages_pos,
                format!(
                    "`messages`: `{}` is a {} method and takes one request message; write `message:`",
                    g.method.value,
                    kind.as_str().replace('_', "-")
                ),
            ));
        }
        if let Some(r) = &g.repeat {
            out.push(Diagnostic::at(
                r.pos,
                format!(
                    "`count`: `{}` is a {} method and takes one request message",
                    g.method.value,
                    kind.as_str().replace('_', "-")
                ),
            ));
        }
    }
    let input = m.input();
    for msg in &g.messages {
        check_message(msg, &input, g.messages_pos, "message", &mut out);
    }
    g.resolved = Some(m);
    out
}

/// Well-known types have their own JSON forms (a timestamp is a string);
/// their values are left to the encoder.
fn is_well_known(m: &MessageDescriptor) -> bool {
    m.full_name().starts_with("google.protobuf.")
}

fn what(node: &JsonNode) -> &'static str {
    match node {
        JsonNode::Null => "null",
        JsonNode::Bool(_) => "a boolean",
        JsonNode::Number(_) => "a number",
        JsonNode::String(_) => "a string",
        JsonNode::Array(_) => "a list",
        JsonNode::Object(_) => "an object",
    }
}

/// Checks a JSON message against a message type: every field exists and
/// has a value of its type.
fn check_message(
    node: &JsonNode,
    desc: &MessageDescriptor,
    at: Option<Pos>,
    path: &str,
    out: &mut Vec<Diagnostic>,
) {
    if is_well_known(desc) {
        return;
    }
    let fields = match node {
        JsonNode::Object(fields) => fields,
        JsonNode::Null => return,
        other => {
            out.push(Diagnostic::at(
                at,
                format!(
                    "`{path}`: expected an object (message `{}`), got {}",
                    desc.full_name(),
                    what(other)
                ),
            ));
            return;
        }
    };
    for (key, value) in fields {
        let Some(field) = desc
            .get_field_by_name(&key.value)
            .or_else(|| desc.get_field_by_json_name(&key.value))
        else {
            let names: Vec<String> = desc.fields().map(|f| f.name().to_owned()).collect();
            out.push(Diagnostic::at(
                key.pos.or(at),
                format!(
                    "`{path}.{}`: message `{}` has no field `{}`; its fields are: {}",
                    key.value,
                    desc.full_name(),
                    key.value,
                    if names.is_empty() {
                        "(none)".to_owned()
                    } else {
                        names.join(", ")
                    }
                ),
            ));
            continue;
        };
        let at = key.pos.or(at);
        let path = format!("{path}.{}", key.value);
        if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                continue;
            };
            match value {
                JsonNode::Object(entries) => {
                    let value_field = entry.map_entry_value_field();
                    for (k, v) in entries {
                        check_value(
                            v,
                            &value_field,
                            k.pos.or(at),
                            &format!("{path}.{}", k.value),
                            out,
                        );
                    }
                }
                JsonNode::Null => {}
                other => out.push(Diagnostic::at(
                    at,
                    format!(
                        "`{path}`: field `{}` of `{}` is a map and expects an object, got {}",
                        field.name(),
                        desc.full_name(),
                        what(other)
                    ),
                )),
            }
        } else if field.is_list() {
            match value {
                JsonNode::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        check_value(item, &field, at, &format!("{path}[{i}]"), out);
                    }
                }
                JsonNode::Null => {}
                other => out.push(Diagnostic::at(
                    at,
                    format!(
                        "`{path}`: field `{}` of `{}` is repeated and expects a list of {}, got {}",
                        field.name(),
                        desc.full_name(),
                        expected(&field.kind()),
                        what(other)
                    ),
                )),
            }
        } else {
            check_value(value, &field, at, &path, out);
        }
    }
}

/// What a field of this kind takes, for messages.
fn expected(kind: &Kind) -> String {
    match kind {
        Kind::Double | Kind::Float => "a number".into(),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => "a 32-bit integer".into(),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => "a 64-bit integer".into(),
        Kind::Uint32 | Kind::Fixed32 => "an unsigned 32-bit integer".into(),
        Kind::Uint64 | Kind::Fixed64 => "an unsigned 64-bit integer".into(),
        Kind::Bool => "a boolean".into(),
        Kind::String => "a string".into(),
        Kind::Bytes => "bytes (base64 text)".into(),
        Kind::Message(m) => format!("a `{}` message (an object)", m.full_name()),
        Kind::Enum(e) => {
            let names: Vec<String> = e.values().map(|v| v.name().to_owned()).collect();
            format!("a `{}` value ({})", e.full_name(), names.join(", "))
        }
    }
}

/// Whether `text` is an integer that fits `kind`.
fn integer_fits(text: &str, kind: &Kind) -> bool {
    match kind {
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => text.parse::<i32>().is_ok(),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => text.parse::<i64>().is_ok(),
        Kind::Uint32 | Kind::Fixed32 => text.parse::<u32>().is_ok(),
        Kind::Uint64 | Kind::Fixed64 => text.parse::<u64>().is_ok(),
        _ => false,
    }
}

fn check_value(
    node: &JsonNode,
    field: &FieldDescriptor,
    at: Option<Pos>,
    path: &str,
    out: &mut Vec<Diagnostic>,
) {
    let kind = field.kind();
    // A templated string renders at run time; its text is checked by the
    // encoder then (a failure is that request's error).
    let templated = matches!(node, JsonNode::String(s) if s.value.contains("{{"));
    let ok = match (&kind, node) {
        (_, JsonNode::Null) => true,
        (Kind::Message(m), n) => {
            let at = match n {
                JsonNode::String(s) => s.pos.or(at),
                _ => at,
            };
            check_message(n, m, at, path, out);
            return;
        }
        (_, JsonNode::String(_)) if templated => true,
        (Kind::String | Kind::Bytes, JsonNode::String(_)) => true,
        (Kind::Bool, JsonNode::Bool(_)) => true,
        (Kind::Double | Kind::Float, JsonNode::Number(_)) => true,
        (Kind::Double | Kind::Float, JsonNode::String(s)) => {
            matches!(s.value.as_str(), "NaN" | "Infinity" | "-Infinity")
                || s.value.parse::<f64>().is_ok()
        }
        // Protobuf's JSON mapping takes integers as numbers or strings.
        (k, JsonNode::Number(n) | JsonNode::String(super::Located { value: n, .. }))
            if integer_fits(n, k) =>
        {
            true
        }
        (Kind::Enum(e), JsonNode::String(s)) => e.get_value_by_name(&s.value).is_some(),
        (Kind::Enum(e), JsonNode::Number(n)) => {
            n.parse::<i32>().is_ok_and(|n| e.get_value(n).is_some())
        }
        _ => false,
    };
    if !ok {
        let got = match node {
            JsonNode::Number(n) => format!("`{n}`"),
            JsonNode::String(s) => format!("\"{}\"", s.value),
            other => what(other).to_owned(),
        };
        let at = match node {
            JsonNode::String(s) => s.pos.or(at),
            _ => at,
        };
        out.push(Diagnostic::at(
            at,
            format!(
                "`{path}`: field `{}` of `{}` expects {}, got {got}",
                field.name(),
                field.parent_message().full_name(),
                expected(&kind)
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> DescriptorPool {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.proto");
        std::fs::write(
            &f,
            r#"syntax = "proto3";
package t;
enum Color { RED = 0; GREEN = 1; }
message Inner { string s = 1; }
message Req {
  string name = 1;
  int32 n = 2;
  uint64 big = 3;
  bool flag = 4;
  repeated Inner items = 5;
  map<string, int32> counts = 6;
  Color color = 7;
  double ratio = 8;
}
service S { rpc Call (Req) returns (Inner); rpc Many (stream Req) returns (stream Inner); }
"#,
        )
        .unwrap();
        compile_protos(&ProtoSource::Protos {
            files: vec![f],
            import_paths: vec![dir.path().to_owned()],
        })
        .unwrap()
    }

    fn s(v: &str) -> JsonNode {
        JsonNode::String(v.into())
    }

    fn obj(fields: Vec<(&str, JsonNode)>) -> JsonNode {
        JsonNode::Object(fields.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    fn problems(node: JsonNode) -> Vec<String> {
        let pool = pool();
        let desc = pool.get_message_by_name("t.Req").unwrap();
        let mut out = Vec::new();
        check_message(&node, &desc, None, "message", &mut out);
        out.into_iter().map(|d| d.message).collect()
    }

    #[test]
    fn good_messages_pass() {
        let msg = obj(vec![
            ("name", s("{{ pick(names) }}")),
            ("n", JsonNode::Number("-3".into())),
            ("big", s("18446744073709551615")),
            ("flag", JsonNode::Bool(true)),
            ("items", JsonNode::Array(vec![obj(vec![("s", s("x"))])])),
            ("counts", obj(vec![("a", JsonNode::Number("1".into()))])),
            ("color", s("GREEN")),
            ("ratio", JsonNode::Number("0.5".into())),
        ]);
        assert_eq!(problems(msg), Vec::<String>::new());
    }

    #[test]
    fn wrong_fields_and_types_are_named() {
        let msg = obj(vec![
            ("nme", s("x")),
            ("n", s("three")),
            ("big", JsonNode::Number("-1".into())),
            ("flag", s("yes")),
            ("items", obj(vec![])),
            ("color", s("BLUE")),
        ]);
        let p = problems(msg);
        assert_eq!(p.len(), 6, "{p:#?}");
        assert!(p[0].contains("message `t.Req` has no field `nme`; its fields are: name, n, big"));
        assert!(p[1].contains("field `n` of `t.Req` expects a 32-bit integer, got \"three\""));
        assert!(p[2].contains("expects an unsigned 64-bit integer, got `-1`"));
        assert!(p[3].contains("expects a boolean"));
        assert!(p[4].contains("is repeated and expects a list of a `t.Inner` message"));
        assert!(p[5].contains("expects a `t.Color` value (RED, GREEN)"));
    }

    #[test]
    fn methods_are_looked_up_with_a_list_of_what_exists() {
        let pool = pool();
        let mut call = GrpcCall {
            target: 0,
            method: "t.S/Cal".into(),
            messages: vec![obj(vec![])],
            templates: Vec::new(),
            messages_pos: None,
            repeat: None,
            metadata: Vec::new(),
            deadline: None,
            resolved: None,
        };
        let d = resolve_call(&mut call, &pool);
        assert!(
            d[0].message
                .contains("`t.S` has no method `Cal`; its methods are: t.S/Call, t.S/Many"),
            "{d:?}"
        );
        call.method = "t.X/Call".into();
        let d = resolve_call(&mut call, &pool);
        assert!(
            d[0].message
                .contains("no service `t.X`; the target has: t.S")
        );
        call.method = "t.S/Call".into();
        call.messages = vec![obj(vec![]), obj(vec![])];
        let d = resolve_call(&mut call, &pool);
        assert!(
            d[0].message
                .contains("is a unary method and takes one request message")
        );
        call.method = "t.S/Many".into();
        assert!(resolve_call(&mut call, &pool).is_empty());
        assert_eq!(call.kind(), Some(GrpcKind::Bidi));
    }

    #[test]
    fn compile_errors_carry_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bad.proto");
        std::fs::write(&f, "syntax = \"proto3\";\nmessage A {\n  strin x = 1;\n}\n").unwrap();
        let (_, msg) = compile_protos(&ProtoSource::Protos {
            files: vec![f],
            import_paths: vec![dir.path().to_owned()],
        })
        .unwrap_err();
        assert!(msg.starts_with("bad.proto:3:"), "{msg}");
    }
}
