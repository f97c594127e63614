//! The shipped Grafana dashboard (`deploy/grafana/redproof.json`): its
//! panels' queries, with Grafana's variables replaced by plausible values
//! so Prometheus and PromQL parsers can read them.

use std::collections::BTreeSet;

use serde_json::Value;

/// The dashboard as shipped.
pub fn dashboard() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/redproof.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every panel, those inside collapsed rows too.
pub fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// (panel title, expr as written) of every query of every panel.
pub fn queries(d: &Value) -> Vec<(String, String)> {
    panels(d)
        .into_iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            p["targets"].as_array().into_iter().flatten().map(move |t| {
                (
                    title.clone(),
                    t["expr"].as_str().unwrap_or_default().to_owned(),
                )
            })
        })
        .collect()
}

/// The names of the variables `expr` uses: `$name`, `${name}` and
/// `${name:format}`.
pub fn variables(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        let name: String = if let Some(inner) = rest.strip_prefix('{') {
            let end = inner.find('}').unwrap_or(inner.len());
            inner[..end].split(':').next().unwrap().to_owned()
        } else {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        };
        out.insert(name);
    }
    out
}

/// `expr` with every variable replaced: Grafana's own (`$__rate_interval`
/// and the like) by durations, the dashboard's by `values`.
pub fn substitute(expr: &str, values: &[(&str, &str)]) -> String {
    let builtins = [
        ("__rate_interval", "1m"),
        ("__interval", "15s"),
        ("__range", "1h"),
    ];
    let mut out = expr.to_owned();
    for (name, value) in values.iter().chain(&builtins) {
        out = out.replace(&format!("${{{name}}}"), value);
        // `$job` but not the start of `$job_name`.
        let plain = format!("${name}");
        let mut replaced = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(i) = rest.find(&plain) {
            let after = &rest[i + plain.len()..];
            replaced.push_str(&rest[..i]);
            if after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                replaced.push_str(&plain);
            } else {
                replaced.push_str(value);
            }
            rest = after;
        }
        replaced.push_str(rest);
        out = replaced;
    }
    out
}
