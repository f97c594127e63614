//! Request templates, compiled once per run and rendered per request.
//!
//! A template is text with `{{ … }}` expressions:
//!
//! | expression          | value                                           |
//! |---------------------|-------------------------------------------------|
//! | `pick(names)`       | a random value of the `data:` list `names`      |
//! | `randint(1, 100)`   | a random integer, both ends included            |
//! | `uuid()`            | a random UUID v4                                |
//! | `seq()`             | 1, 2, 3 … shared by the whole run (see [`Sequence`]) |
//! | `name`              | the user's variable `name` (a capture)          |
//! | `feed.column`       | a column of the row the user drew from a feed   |
//! | `number(name)`      | a variable, written unquoted in a JSON body     |
//! | `env("NAME")`       | an environment variable, read once at validation |
//! | `env("NAME", "x")`  | the same, `x` when it is not set                |
//!
//! Compilation turns the text into literal and dynamic parts, so rendering
//! is a sequence of appends into a reused buffer with no parsing and no
//! allocation on the hot path. A JSON body is compiled the same way: its
//! static structure is serialised once, and only templated leaves are
//! rendered (and escaped) per request.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::position::{Located, Pos};

/// Values shared by all templates of a run.
#[derive(Debug, Clone)]
pub struct TemplateEnv {
    data: HashMap<String, Arc<[String]>>,
    seq: Arc<Sequence>,
    /// Per-user variables a template may use, with their slot in the
    /// user's variable table.
    vars: Vec<(String, usize)>,
}

impl TemplateEnv {
    /// An environment with the scenario's named data lists.
    pub fn new<'a>(lists: impl IntoIterator<Item = (&'a str, &'a [String])>) -> Self {
        Self {
            data: lists
                .into_iter()
                .map(|(name, values)| (name.to_owned(), values.to_vec().into()))
                .collect(),
            seq: Arc::new(Sequence::default()),
            vars: Vec::new(),
        }
    }

    /// The counter behind every `seq()` of the run.
    pub fn sequence(&self) -> Arc<Sequence> {
        self.seq.clone()
    }

    /// The same environment, where templates may use these variables.
    pub fn with_vars(&self, vars: impl IntoIterator<Item = (String, usize)>) -> Self {
        Self {
            data: self.data.clone(),
            seq: self.seq.clone(),
            vars: vars.into_iter().collect(),
        }
    }
}

/// The values of `seq()`: 1, 2, 3 … for a whole run. Shard `i` of `n`
/// takes every `n`-th value from `i + 1` instead, so the shards of one
/// scenario never send the same value.
#[derive(Debug)]
pub struct Sequence {
    /// The next value minus one.
    next: AtomicU64,
    step: AtomicU64,
}

impl Default for Sequence {
    fn default() -> Self {
        Self {
            next: AtomicU64::new(0),
            step: AtomicU64::new(1),
        }
    }
}

impl Sequence {
    /// Makes this run's values `offset + 1`, `offset + 1 + step`, …
    /// (set once, before the load starts).
    pub fn interleave(&self, offset: u64, step: u64) {
        self.next.store(offset, Ordering::Relaxed);
        self.step.store(step.max(1), Ordering::Relaxed);
    }

    fn next(&self) -> u64 {
        self.next
            .fetch_add(self.step.load(Ordering::Relaxed), Ordering::Relaxed)
            + 1
    }
}

/// A JSON body as written in YAML; string leaves may hold templates.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonNode {
    Null,
    Bool(bool),
    /// The number as written, already checked to be valid JSON.
    Number(String),
    String(Located<String>),
    Array(Vec<JsonNode>),
    /// Keys keep their position, for messages about fields.
    Object(Vec<(Located<String>, JsonNode)>),
}

/// A template error and where its text starts.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateError {
    pub pos: Option<Pos>,
    pub message: String,
}

#[derive(Debug, Clone)]
enum Part {
    Lit(Box<str>),
    Pick(Arc<[String]>),
    RandInt(i64, i64),
    Uuid,
    Seq(Arc<Sequence>),
    /// A slot of the user's variable table.
    Var(usize),
    /// A variable written unquoted in JSON (`number(name)`).
    Num(usize),
}

/// A compiled text template.
#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Compiles `text`; the error says which expression is wrong and why.
    pub fn compile(text: &str, env: &TemplateEnv) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                let lit = &rest[..open];
                match parts.last_mut() {
                    Some(Part::Lit(prev)) => *prev = format!("{prev}{lit}").into(),
                    _ => parts.push(Part::Lit(lit.into())),
                }
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("`{{{{` without a closing `}}}}` in `{text}`"))?;
            match compile_expr(after[..close].trim(), env)? {
                // An `env()` value is text known now: it joins the
                // literal before it, so a template of literals and
                // `env()` alone is still static.
                Part::Lit(value) => match parts.last_mut() {
                    Some(Part::Lit(prev)) => *prev = format!("{prev}{value}").into(),
                    _ => parts.push(Part::Lit(value)),
                },
                part => parts.push(part),
            }
            rest = &after[close + 2..];
        }
        if rest.contains("}}") {
            return Err(format!("`}}}}` without an opening `{{{{` in `{text}`"));
        }
        if !rest.is_empty() {
            match parts.last_mut() {
                Some(Part::Lit(prev)) => *prev = format!("{prev}{rest}").into(),
                _ => parts.push(Part::Lit(rest.into())),
            }
        }
        Ok(Self { parts })
    }

    /// The text when the template has no expressions.
    pub fn as_static(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Lit(s)] => Some(s),
            _ => None,
        }
    }

    /// True when the template is one expression that always renders a
    /// number, so a JSON body can carry it unquoted.
    fn is_numeric(&self) -> bool {
        matches!(
            self.parts.as_slice(),
            [Part::RandInt(..)] | [Part::Seq(_)] | [Part::Num(_)]
        )
    }

    /// Appends the rendered text to `out`; `vars` is the user's variable
    /// table.
    pub fn render_into(&self, out: &mut String, rng: &mut fastrand::Rng, vars: &[String]) {
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Pick(values) => out.push_str(&values[rng.usize(..values.len())]),
                Part::RandInt(lo, hi) => {
                    let _ = write!(out, "{}", rng.i64(*lo..=*hi));
                }
                Part::Uuid => push_uuid(out, rng.u128(..)),
                Part::Seq(counter) => {
                    let _ = write!(out, "{}", counter.next());
                }
                Part::Var(slot) | Part::Num(slot) => {
                    out.push_str(vars.get(*slot).map_or("", String::as_str))
                }
            }
        }
    }

    /// Renders into a new string (tests and one-off use).
    pub fn render(&self, rng: &mut fastrand::Rng) -> String {
        let mut s = String::new();
        self.render_into(&mut s, rng, &[]);
        s
    }
}

fn compile_expr(expr: &str, env: &TemplateEnv) -> Result<Part, String> {
    let known = "expected `pick(list)`, `randint(low, high)`, `uuid()`, `seq()`, `number(name)`, `env(\"NAME\")` or a variable";
    if !expr.is_empty()
        && expr
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return match env.vars.iter().find(|(n, _)| n == expr) {
            Some((_, slot)) => Ok(Part::Var(*slot)),
            None => {
                let names: Vec<&str> = env.vars.iter().map(|(n, _)| n.as_str()).collect();
                Err(format!(
                    "`{expr}`: unknown variable `{expr}`; variables here are captures of earlier steps (or of `on_start`) and columns of data feeds: {}",
                    if names.is_empty() {
                        "(none)".to_owned()
                    } else {
                        names.join(", ")
                    }
                ))
            }
        };
    }
    let (func, args) = expr
        .strip_suffix(')')
        .and_then(|e| e.split_once('('))
        .ok_or_else(|| format!("`{{{{ {expr} }}}}`: {known}"))?;
    if func.trim() == "env" {
        return compile_env(expr, args).map(|v| Part::Lit(v.into()));
    }
    let args: Vec<&str> = args
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    let arity = |n: usize| {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!(
                "`{expr}`: `{}` takes {n} argument{}, got {}",
                func.trim(),
                if n == 1 { "" } else { "s" },
                args.len()
            ))
        }
    };
    match func.trim() {
        "pick" => {
            arity(1)?;
            let name = args[0].trim_matches(|c| c == '"' || c == '\'');
            let values = env.data.get(name).ok_or_else(|| {
                let mut known: Vec<&str> = env.data.keys().map(String::as_str).collect();
                known.sort_unstable();
                format!(
                    "`{expr}`: no data list named `{name}`; defined under `data:`: {}",
                    if known.is_empty() {
                        "(none)".to_owned()
                    } else {
                        known.join(", ")
                    }
                )
            })?;
            Ok(Part::Pick(values.clone()))
        }
        "randint" => {
            arity(2)?;
            let parse = |a: &str| {
                a.parse::<i64>()
                    .map_err(|_| format!("`{expr}`: expected whole numbers, got `{a}`"))
            };
            let (lo, hi) = (parse(args[0])?, parse(args[1])?);
            if lo > hi {
                return Err(format!(
                    "`{expr}`: the low end {lo} is above the high end {hi}"
                ));
            }
            Ok(Part::RandInt(lo, hi))
        }
        "uuid" => arity(0).map(|_| Part::Uuid),
        "number" => {
            arity(1)?;
            match compile_expr(args[0], env)? {
                Part::Var(slot) => Ok(Part::Num(slot)),
                _ => Err(format!("`{expr}`: `number` takes a variable name")),
            }
        }
        "seq" => arity(0).map(|_| Part::Seq(env.seq.clone())),
        other => Err(format!("`{expr}`: unknown function `{other}`; {known}")),
    }
}

/// `env("NAME")` or `env("NAME", "default")`: the variable's value, read
/// now and registered as a secret, or the default written in the file.
fn compile_env(expr: &str, args: &str) -> Result<String, String> {
    let usage = format!(
        "`{expr}`: expected `env(\"NAME\")` or `env(\"NAME\", \"default\")`, with quoted arguments"
    );
    let mut rest = args.trim();
    let mut strings = Vec::new();
    while !rest.is_empty() {
        let quote = rest.chars().next().filter(|c| matches!(c, '"' | '\''));
        let quote = quote.ok_or_else(|| usage.clone())?;
        let end = rest[1..].find(quote).ok_or_else(|| usage.clone())? + 1;
        strings.push(&rest[1..end]);
        rest = rest[end + 1..].trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
            if rest.is_empty() {
                return Err(usage);
            }
        } else if !rest.is_empty() {
            return Err(usage);
        }
    }
    let (name, default) = match strings.as_slice() {
        [name] => (*name, None),
        [name, default] => (*name, Some(*default)),
        _ => return Err(usage),
    };
    if name.is_empty()
        || name.starts_with(|c: char| c.is_ascii_digit())
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(format!(
            "`{expr}`: `{name}` is not an environment variable name (letters, digits and `_`)"
        ));
    }
    match (std::env::var(name), default) {
        (Ok(value), _) => {
            crate::secrets::register(&value);
            Ok(value)
        }
        (Err(std::env::VarError::NotUnicode(_)), _) => Err(format!(
            "`{expr}`: the environment variable `{name}` is not valid UTF-8"
        )),
        (Err(_), Some(default)) => Ok(default.to_owned()),
        (Err(_), None) => Err(format!(
            "`{expr}`: the environment variable `{name}` is not set; set it, or give a default: `env(\"{name}\", \"…\")`"
        )),
    }
}

fn push_uuid(out: &mut String, bits: u128) {
    // Version 4, variant 1 (RFC 9562).
    let v = (bits & !(0xF << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    let hex = format!("{v:032x}");
    out.push_str(&hex[0..8]);
    out.push('-');
    out.push_str(&hex[8..12]);
    out.push('-');
    out.push_str(&hex[12..16]);
    out.push('-');
    out.push_str(&hex[16..20]);
    out.push('-');
    out.push_str(&hex[20..32]);
}

#[derive(Debug, Clone)]
enum JsonPart {
    Lit(Box<str>),
    /// Rendered, then written as an escaped JSON string.
    Str(Template),
    /// Rendered as is (a number).
    Raw(Template),
}

/// A compiled JSON body.
#[derive(Debug, Clone)]
pub struct JsonTemplate {
    parts: Vec<JsonPart>,
}

impl JsonTemplate {
    /// Compiles a body; on failure returns the error of every bad leaf.
    pub fn compile(node: &JsonNode, env: &TemplateEnv) -> Result<Self, Vec<TemplateError>> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut errors = Vec::new();
        build_json(node, env, &mut parts, &mut lit, &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        if !lit.is_empty() {
            parts.push(JsonPart::Lit(lit.into()));
        }
        Ok(Self { parts })
    }

    /// The JSON text, when nothing in it is templated.
    pub fn as_static(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [JsonPart::Lit(s)] => Some(s),
            _ => None,
        }
    }

    pub fn render_into(
        &self,
        out: &mut String,
        rng: &mut fastrand::Rng,
        scratch: &mut String,
        vars: &[String],
    ) {
        for p in &self.parts {
            match p {
                JsonPart::Lit(s) => out.push_str(s),
                JsonPart::Raw(t) => t.render_into(out, rng, vars),
                JsonPart::Str(t) => {
                    scratch.clear();
                    t.render_into(scratch, rng, vars);
                    push_json_string(out, scratch);
                }
            }
        }
    }
}

fn build_json(
    node: &JsonNode,
    env: &TemplateEnv,
    parts: &mut Vec<JsonPart>,
    lit: &mut String,
    errors: &mut Vec<TemplateError>,
) {
    match node {
        JsonNode::Null => lit.push_str("null"),
        JsonNode::Bool(b) => lit.push_str(if *b { "true" } else { "false" }),
        JsonNode::Number(n) => lit.push_str(n),
        JsonNode::String(s) => {
            let t = match compile_located(s, env) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(e);
                    return;
                }
            };
            match t.as_static() {
                Some(text) => push_json_string(lit, text),
                None => {
                    if !lit.is_empty() {
                        parts.push(JsonPart::Lit(std::mem::take(lit).into()));
                    }
                    parts.push(if t.is_numeric() {
                        JsonPart::Raw(t)
                    } else {
                        JsonPart::Str(t)
                    });
                }
            }
        }
        JsonNode::Array(items) => {
            lit.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    lit.push(',');
                }
                build_json(item, env, parts, lit, errors);
            }
            lit.push(']');
        }
        JsonNode::Object(fields) => {
            lit.push('{');
            for (i, (k, v)) in fields.iter().enumerate() {
                if i > 0 {
                    lit.push(',');
                }
                push_json_string(lit, &k.value);
                lit.push(':');
                build_json(v, env, parts, lit, errors);
            }
            lit.push('}');
        }
    }
}

fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends `s` percent-encoded for a URL query component.
pub fn push_query_encoded(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// Compiles a template written in the scenario file.
fn compile_located(s: &Located<String>, env: &TemplateEnv) -> Result<Template, TemplateError> {
    Template::compile(&s.value, env).map_err(|e| TemplateError {
        pos: s.pos,
        message: format!("template {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> TemplateEnv {
        TemplateEnv {
            data: [(
                "names".to_owned(),
                Arc::from(vec!["ann".to_owned(), "bo".to_owned()]),
            )]
            .into(),
            seq: Arc::new(Sequence::default()),
            vars: Vec::new(),
        }
    }

    #[test]
    fn interleaved_sequences_are_disjoint() {
        let shards: Vec<Sequence> = (0..3)
            .map(|i| {
                let s = Sequence::default();
                s.interleave(i, 3);
                s
            })
            .collect();
        let mut seen: Vec<u64> = shards
            .iter()
            .flat_map(|s| (0..4).map(|_| s.next()).collect::<Vec<_>>())
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (1..=12).collect::<Vec<_>>());
    }

    #[test]
    fn env_is_read_at_compile_time_and_joins_the_literals() {
        let home = std::env::var("PATH").expect("PATH is set where tests run");
        let t = Template::compile("a{{ env(\"PATH\") }}b", &env()).unwrap();
        assert_eq!(t.as_static(), Some(format!("a{home}b").as_str()));
        // Two values with literals between them, as in `HOST:PORT`.
        let t = Template::compile("a{{ env(\"PATH\") }}:{{ env(\"PATH\") }}b", &env()).unwrap();
        assert_eq!(t.as_static(), Some(format!("a{home}:{home}b").as_str()));
        let t = Template::compile(
            "{{ env('REDPROOF_TEST_SURELY_UNSET', 'x, y') }}/{{ seq() }}",
            &env(),
        )
        .unwrap();
        assert_eq!(t.render(&mut fastrand::Rng::with_seed(1)), "x, y/1");
        let e = Template::compile("{{ env(\"REDPROOF_TEST_SURELY_UNSET\") }}", &env()).unwrap_err();
        assert!(e.contains("`REDPROOF_TEST_SURELY_UNSET` is not set"), "{e}");
        for bad in [
            "env(PATH)",
            "env()",
            "env(\"A\", \"b\", \"c\")",
            "env(\"1A\")",
            "env(\"A\",)",
        ] {
            let e = Template::compile(&format!("{{{{ {bad} }}}}"), &env()).unwrap_err();
            assert!(e.contains("env("), "{bad}: {e}");
        }
        assert_eq!(
            crate::secrets::scrub(&home),
            if home.len() >= 4 { "***" } else { &home }
        );
    }

    #[test]
    fn variables_render_from_the_users_table() {
        let env = env().with_vars([("account".to_owned(), 1), ("c.name".to_owned(), 0)]);
        let t = Template::compile("/a/{{ account }}/{{ c.name }}", &env).unwrap();
        let mut out = String::new();
        t.render_into(
            &mut out,
            &mut fastrand::Rng::with_seed(1),
            &["ann".to_owned(), "42".to_owned()],
        );
        assert_eq!(out, "/a/42/ann");
        let e = Template::compile("{{ acount }}", &env).unwrap_err();
        assert!(e.contains("unknown variable `acount`"), "{e}");
        assert!(e.contains("account, c.name"), "{e}");
    }

    #[test]
    fn renders_every_function() {
        let env = env();
        let mut rng = fastrand::Rng::with_seed(1);
        let t = Template::compile(
            "/u/{{ pick(names) }}/{{randint(5, 5)}}/{{ seq() }}/{{ seq() }}",
            &env,
        )
        .unwrap();
        let s = t.render(&mut rng);
        assert!(s == "/u/ann/5/1/2" || s == "/u/bo/5/1/2", "{s}");
        let u = Template::compile("{{ uuid() }}", &env)
            .unwrap()
            .render(&mut rng);
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
        assert_eq!(
            Template::compile("/plain", &env).unwrap().as_static(),
            Some("/plain")
        );
    }

    #[test]
    fn pick_covers_the_list() {
        let env = env();
        let t = Template::compile("{{ pick(names) }}", &env).unwrap();
        let mut rng = fastrand::Rng::with_seed(3);
        let picks: Vec<String> = (0..100).map(|_| t.render(&mut rng)).collect();
        assert!(picks.iter().any(|p| p == "ann") && picks.iter().any(|p| p == "bo"));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let env = env();
        let e = Template::compile("{{ pick(nmes) }}", &env).unwrap_err();
        assert!(
            e.contains("no data list named `nmes`") && e.contains("names"),
            "{e}"
        );
        assert!(
            Template::compile("{{ now() }}", &env)
                .unwrap_err()
                .contains("unknown function `now`")
        );
        assert!(
            Template::compile("{{ seq() ", &env)
                .unwrap_err()
                .contains("without a closing")
        );
        assert!(
            Template::compile("{{ randint(9, 1) }}", &env)
                .unwrap_err()
                .contains("above the high end")
        );
        assert!(
            Template::compile("{{ uuid(1) }}", &env)
                .unwrap_err()
                .contains("takes 0 arguments")
        );
    }

    #[test]
    fn json_bodies_keep_types_and_escape() {
        let env = env();
        let node = JsonNode::Object(vec![
            ("n".into(), JsonNode::Number("3".into())),
            (
                "id".into(),
                JsonNode::String(Located {
                    value: "{{ seq() }}".into(),
                    pos: None,
                }),
            ),
            (
                "who".into(),
                JsonNode::String(Located {
                    value: "a\"{{ pick(names) }}".into(),
                    pos: None,
                }),
            ),
            (
                "l".into(),
                JsonNode::Array(vec![JsonNode::Null, JsonNode::Bool(false)]),
            ),
        ]);
        let t = JsonTemplate::compile(&node, &env).unwrap();
        let mut out = String::new();
        let mut scratch = String::new();
        t.render_into(
            &mut out,
            &mut fastrand::Rng::with_seed(1),
            &mut scratch,
            &[],
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["n"], 3);
        assert_eq!(v["id"], 1);
        assert!(v["who"].as_str().unwrap().starts_with("a\""));
        assert_eq!(v["l"], serde_json::json!([null, false]));
    }

    #[test]
    fn query_encoding() {
        let mut s = String::new();
        push_query_encoded(&mut s, "a b&c=d/é");
        assert_eq!(s, "a%20b%26c%3Dd%2F%C3%A9");
    }
}
