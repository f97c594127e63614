//! From YAML text to a [`Scenario`]: the file is read with positions,
//! mapped onto the raw serde types (every unknown key reported, not only
//! the first), then checked part by part.

use std::path::Path;
use std::sync::Arc;

use marked_yaml::{LoadError, LoaderOptions, Node};

use super::Diagnostic;
use super::checker::{Checker, pos};
use super::include::Included;
use super::raw::RawScenario;
use super::targets::check_targets;
use super::threshold;
use super::types::*;
use super::units;
use crate::position::Pos;
use crate::template::TemplateEnv;

/// How scenario files (and the files they include) are read.
pub(super) fn loader_options() -> LoaderOptions {
    LoaderOptions::default()
        .error_on_duplicate_keys(true)
        .prevent_coercion(true)
        .toplevel_mapping()
}

pub(super) fn load_error(e: &LoadError) -> Diagnostic {
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
            source: m.source(),
        }),
        message,
    )
}

/// Reads and validates scenario text; on failure, the diagnostics and
/// the files `include:` read (their sources, for quoting).
pub(super) fn build(path: &Path, text: &str) -> Result<Scenario, (Vec<Diagnostic>, Vec<Included>)> {
    let mut node = marked_yaml::parse_yaml_with_options(0, text, loader_options())
        .map_err(|e| (vec![load_error(&e)], Vec::new()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut include_errors = Vec::new();
    let included = super::include::resolve(&mut node, base, &mut include_errors);
    let texts = included.iter().map(|i| i.text.clone()).collect();
    build_merged(path, text, texts, node, base, include_errors).map_err(|d| (d, included))
}

fn build_merged(
    path: &Path,
    text: &str,
    included: Vec<String>,
    node: Node,
    base: &Path,
    include_errors: Vec<Diagnostic>,
) -> Result<Scenario, Vec<Diagnostic>> {
    // Serde stops at the first unknown key; remove each one and try again,
    // so a file with several misspellings reports them all, and the rest
    // of the file is still checked.
    let mut node = node;
    let mut shape_errors = include_errors;
    let raw: RawScenario = loop {
        match marked_yaml::from_node::<RawScenario>(&node) {
            Ok(raw) => break raw,
            Err(e) => {
                let mut pos = e.start_mark().map(|m| Pos {
                    line: m.line(),
                    column: m.column(),
                    source: m.source(),
                });
                let where_ = e.path().map(|p| format!(" in `{p}`")).unwrap_or_default();
                let inner = e.into_inner();
                let mut removed = false;
                if let marked_yaml::spanned_serde::Error::UnknownFieldError(field, _, _) = &inner {
                    // The reported span is the enclosing mapping; point at the key.
                    // A key from an included file lies in another
                    // source than the mapping the error names.
                    let key_pos = find_key(&node, field, pos.unwrap_or_default())
                        .or_else(|| find_key_anywhere(&node, field));
                    if let Some(key_pos) = key_pos {
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
        base: base.to_owned(),
    };
    let file = Arc::new(ScenarioFile {
        path: path.to_owned(),
        text: text.to_owned(),
        included,
    });
    let scenario = check(&mut c, &raw, &node, base, file);
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

/// The first mapping key named `key`, in any file.
fn find_key_anywhere(node: &Node, key: &str) -> Option<Pos> {
    match node {
        Node::Scalar(_) => None,
        Node::Sequence(seq) => seq.iter().find_map(|n| find_key_anywhere(n, key)),
        Node::Mapping(map) => map.iter().find_map(|(k, v)| {
            if k.as_str() == key {
                return Pos::of_span(k.span());
            }
            find_key_anywhere(v, key)
        }),
    }
}

/// The first mapping key named `key` at or after `from`.
fn find_key(node: &Node, key: &str, from: Pos) -> Option<Pos> {
    let after = |p: Option<Pos>| {
        p.filter(|p| p.source == from.source && (p.line, p.column) >= (from.line, from.column))
    };
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

fn check(
    c: &mut Checker,
    raw: &RawScenario,
    root: &Node,
    base: &Path,
    file: Arc<ScenarioFile>,
) -> Option<Scenario> {
    if raw.name.trim().is_empty() {
        c.err(
            pos(&raw.name),
            "`name`: expected a scenario name, got an empty string",
        );
    }
    let targets = check_targets(c, &raw.targets, base);
    let (data, feeds) = super::feeds::check_data(c, &raw.data, root, base);
    let env = TemplateEnv::new(data.iter().map(|d| (d.name.as_str(), d.values.as_slice())));
    let parts = super::parts::check_parts(c, raw, root, &targets, &env, &feeds);
    let steps = parts.steps;
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
    let mut abort_on_fail = Vec::new();
    let mut written = Vec::new();
    for entry in threshold_entries(c, root) {
        match threshold::parse(&entry.text, &names, &parts.names) {
            Ok(th) => {
                if let Some((delay, at)) = entry.abort {
                    if th.server {
                        c.err(
                            at,
                            format!(
                                "threshold `{}`: `abort_on_fail` needs figures during the run; server figures come after it",
                                entry.text
                            ),
                        );
                    }
                    abort_on_fail.push(AbortRule {
                        threshold: thresholds.len(),
                        delay,
                    });
                }
                thresholds.push(th);
                written.push(entry);
            }
            Err(e) => c.err(entry.pos, format!("threshold `{}`: {e}", entry.text)),
        }
    }
    let verification = super::verification::check(c, raw, &names);
    for (t, raw_t) in thresholds.iter().zip(&written) {
        if let (true, threshold::Subject::Request(name)) = (t.server, &t.subject) {
            let has_entry = verification.entries.iter().any(|e| {
                e.request
                    .and_then(|i| names.get(i))
                    .is_some_and(|r| r == name)
            });
            if !has_entry {
                c.err(
                    raw_t.pos,
                    format!(
                        "threshold `{}`: server figures need a `verify.{name}` entry saying where `{name}` is counted",
                        raw_t.text
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
        file,
        targets,
        parts: parts.parts,
        data,
        feeds,
        variables: steps.variables,
        requests,
        thresholds,
        abort_on_fail,
        verification,
        sequence: env.sequence(),
    })
}

/// One entry of `thresholds:` as written.
struct ThresholdEntry {
    text: String,
    pos: Option<Pos>,
    /// `abort_on_fail: true`, with its delay and where it is written.
    abort: Option<(std::time::Duration, Option<Pos>)>,
}

/// The `thresholds:` entries: a string, or a mapping with `threshold:`,
/// `abort_on_fail:` and `delay:`.
fn threshold_entries(c: &mut Checker, root: &Node) -> Vec<ThresholdEntry> {
    let Some(seq) = root
        .as_mapping()
        .and_then(|m| m.get_node("thresholds"))
        .and_then(Node::as_sequence)
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in seq.iter() {
        let at = Pos::of_span(item.span());
        match item {
            Node::Scalar(s) => out.push(ThresholdEntry {
                text: s.as_str().to_owned(),
                pos: at,
                abort: None,
            }),
            Node::Mapping(map) => {
                let mut text = None;
                let mut abort = None;
                let mut delay = None;
                for (k, v) in map.iter() {
                    let kpos = Pos::of_span(k.span());
                    let vpos = Pos::of_span(v.span());
                    let Some(value) = v.as_scalar().map(|s| s.as_str()) else {
                        c.err(kpos, format!("`thresholds.{}`: expected a plain value", k.as_str()));
                        continue;
                    };
                    match k.as_str() {
                        "threshold" => text = Some((value.to_owned(), vpos)),
                        "abort_on_fail" => match value {
                            "true" => abort = Some(vpos),
                            "false" => {}
                            other => c.err(
                                vpos,
                                format!("`abort_on_fail`: expected `true` or `false`, got `{other}`"),
                            ),
                        },
                        "delay" => match units::parse_duration(value) {
                            Ok(d) => delay = Some((d, kpos)),
                            Err(e) => c.err(vpos, format!("`delay`: {e}")),
                        },
                        other => c.err(
                            kpos,
                            format!(
                                "unknown field `{other}` in a threshold, expected `threshold`, `abort_on_fail` or `delay`"
                            ),
                        ),
                    }
                }
                if let (Some((_, dpos)), None) = (&delay, &abort) {
                    c.err(*dpos, "`delay` goes with `abort_on_fail: true`: it is how long the run goes before the threshold may stop it");
                }
                match text {
                    Some((text, pos)) => out.push(ThresholdEntry {
                        text,
                        pos,
                        abort: abort.map(|a| (delay.map_or(std::time::Duration::ZERO, |d| d.0), a)),
                    }),
                    None => c.err(
                        at,
                        "a threshold entry: expected `threshold: \"NAME.METRIC OP VALUE\"` (with `abort_on_fail: true` and an optional `delay: 10s`)",
                    ),
                }
            }
            other => c.err(
                Pos::of_span(other.span()),
                "a threshold: expected `NAME.METRIC OP VALUE`, e.g. `checkout.p95 < 300ms`, or a mapping with `threshold:`",
            ),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Outcome;
    use crate::scenario::units::Rate;

    fn parse(text: &str) -> Result<Scenario, Vec<Diagnostic>> {
        build(Path::new("t.yaml"), text).map_err(|(d, _)| d)
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
        assert_eq!(s.targets[0].url.redacted(), "http://127.0.0.1:8000");
        assert_eq!(s.requests.len(), 2);
        assert_eq!(s.requests[0].weight.get(), 2);
        let Call::Http(http) = &s.requests[1].call else {
            panic!("http call expected");
        };
        assert_eq!(http.method, "POST");
        let Some(Body::Json(body)) = &http.body else {
            panic!("json body expected");
        };
        // YAML's typing carries into JSON: plain scalars that read as
        // numbers or booleans stay so, quoted ones stay strings.
        let mut out = String::new();
        body.render_into(
            &mut out,
            &mut fastrand::Rng::with_seed(1),
            &mut String::new(),
            &[],
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["qty"], 3);
        assert_eq!(v["ok"], true);
        assert_eq!(v["note"], "7");
        assert!(v["who"] == "alice" || v["who"] == "bob", "{out}");
        assert!(matches!(
            s.parts[0].load.model,
            LoadModel::Closed { users: 5, .. }
        ));
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
    fn grpc_targets_set_their_largest_reply() {
        let web = "  web: { url: \"http://127.0.0.1:8000/\" }\n";
        let with = |rpc: &str| GOOD.replace(web, &format!("{web}  rpc: {{ {rpc} }}\n"));
        let max = |s: &Scenario| s.targets[1].grpc.as_ref().unwrap().max_message;
        let url = r#"url: "http://127.0.0.1:50051", reflection: true"#;
        assert_eq!(max(&parse(&with(url)).unwrap()), DEFAULT_MAX_MESSAGE);
        let s = parse(&with(&format!("{url}, max_message: 1k"))).unwrap();
        assert_eq!(max(&s), 1000);
        let diags = parse(&with(&format!("{url}, max_message: 16 megs"))).unwrap_err();
        assert_eq!(diags.len(), 1, "{diags:#?}");
        let at = diags[0].pos.unwrap();
        assert_eq!((at.line, at.column), (5, 72), "{diags:#?}");
        assert!(
            diags[0].message.starts_with("`max_message`: expected"),
            "{diags:#?}"
        );
        let diags = parse(&GOOD.replace("8000/\" }", "8000/\", max_message: 1M }")).unwrap_err();
        assert!(
            diags[0].message.contains("goes with gRPC targets"),
            "{diags:#?}"
        );
        assert_eq!(diags[0].pos.unwrap().line, 4, "{diags:#?}");
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
    fn paths_that_cannot_go_on_the_wire_are_refused_where_written() {
        for (path, why) in [
            ("/a b", "it has ` `"),
            ("/a#b", "it has `#`"),
            ("/café", "it has"),
        ] {
            let text = GOOD.replace(r#"path: "/" }"#, &format!(r#"path: "{path}" }}"#));
            let diags = parse(&text).unwrap_err();
            assert_eq!(diags.len(), 1, "{diags:#?}");
            assert!(diags[0].message.contains(why), "{diags:#?}");
            assert!(diags[0].message.contains("percent-encode"), "{diags:#?}");
            assert_eq!(diags[0].pos.map(|p| p.line), Some(14), "{diags:#?}");
        }
    }

    #[test]
    fn overrides_switch_models_and_targets() {
        let mut s = parse(GOOD).unwrap();
        s.apply(&Overrides {
            rate: Some(Scoped {
                scenario: None,
                value: Rate::parse("100/s").unwrap(),
            }),
            targets: vec![("web".into(), "http://127.0.0.2:9/".into())],
            ..Default::default()
        })
        .unwrap();
        assert!(matches!(s.parts[0].load.model, LoadModel::Open { .. }));
        assert_eq!(s.targets[0].url.redacted(), "http://127.0.0.2:9");
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

/// Validation of arbitrary damage to real scenario files: it may reject
/// them, never panic. `REDPROOF_FUZZ_CASES` sets how many files (256 by
/// default, kept small for CI).
#[cfg(test)]
mod mutated {
    use proptest::prelude::*;

    use super::*;

    const SEEDS: &[&str] = &[
        include_str!("../../scenarios/polls.yaml"),
        include_str!("../../scenarios/bank.yaml"),
        include_str!("../../scenarios/open-rate.yaml"),
        include_str!("../../scenarios/demo.yaml"),
        include_str!("../../scenarios/polls-alert.yaml"),
    ];

    /// Values that have broken parsers before: huge, tiny, negative,
    /// non-numbers, templates, control characters, YAML specials.
    const HOSTILE: &[&str] = &[
        "99999999999999999999s",
        "3000000000000000h",
        "1e-20/s",
        "1e308/s",
        "-1",
        "0",
        "NaN",
        "inf",
        "18446744073709551616",
        "100000000",
        "0s",
        "1ms..0ms",
        "{{",
        "}}",
        "{{ pick(nope) }}",
        "{{ number(x) }}",
        "$..[?(@",
        "\"\"",
        "~",
        "[]",
        "{}",
        "&a",
        "*a",
        "!!binary x",
        "\u{1b}[2J",
        "é",
        "http://[::1",
        "5xx..",
        "p100 < 1ms",
        "all.errors < -1%",
    ];

    #[derive(Debug, Clone)]
    enum Damage {
        /// Replace the value after the `n`-th `:` with a hostile one.
        Value(usize, usize),
        /// Delete `len` bytes at `at`.
        Cut(usize, usize),
        /// Repeat line `n`.
        Repeat(usize),
    }

    fn damage() -> impl Strategy<Value = Damage> {
        prop_oneof![
            (any::<usize>(), 0..HOSTILE.len()).prop_map(|(n, h)| Damage::Value(n, h)),
            (any::<usize>(), 1usize..40).prop_map(|(at, len)| Damage::Cut(at, len)),
            any::<usize>().prop_map(Damage::Repeat),
        ]
    }

    fn apply(text: &str, d: &Damage) -> String {
        match *d {
            Damage::Value(n, h) => {
                let colons: Vec<usize> = text.match_indices(": ").map(|(i, _)| i + 2).collect();
                if colons.is_empty() {
                    return text.to_owned();
                }
                let start = colons[n % colons.len()];
                let end = text[start..]
                    .find(['\n', ',', '}'])
                    .map_or(text.len(), |e| start + e);
                format!("{}{}{}", &text[..start], HOSTILE[h], &text[end..])
            }
            Damage::Cut(at, len) => {
                let mut at = at % text.len().max(1);
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                let mut end = (at + len).min(text.len());
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                format!("{}{}", &text[..at], &text[end..])
            }
            Damage::Repeat(n) => {
                let lines: Vec<&str> = text.lines().collect();
                let i = n % lines.len().max(1);
                let mut out: Vec<&str> = lines[..=i].to_vec();
                out.extend_from_slice(&lines[i..]);
                out.join("\n")
            }
        }
    }

    fn cases() -> u32 {
        std::env::var("REDPROOF_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

        #[test]
        fn validation_never_panics(
            seed in 0..SEEDS.len(),
            damages in proptest::collection::vec(damage(), 1..4),
        ) {
            let mut text = SEEDS[seed].to_owned();
            for d in &damages {
                text = apply(&text, d);
            }
            // Either outcome is fine; a panic fails the case.
            let _ = build(Path::new("scenarios/mutated.yaml"), &text);
        }
    }
}
