//! The shipped Grafana dashboard (`deploy/grafana/redproof.json`): every
//! panel's PromQL parses once Grafana's variables are filled in, every
//! variable it uses is defined, every panel names the datasource, and
//! each server convention redproof verifies has its overlay.

mod support;

use std::collections::BTreeSet;

use support::grafana::{dashboard, panels, queries, substitute, variables};

/// Values a user would pick for the dashboard's variables.
const VALUES: &[(&str, &str)] = &[
    ("client_job", "redproof"),
    ("request", "(home|search)"),
    ("job", "polls"),
    ("route", "polls:2xx_success"),
    ("datasource", "prometheus"),
];

fn defined(d: &serde_json::Value) -> BTreeSet<String> {
    d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn every_query_parses_as_promql() {
    let d = dashboard();
    let all = queries(&d);
    assert!(all.len() >= 30, "{} queries", all.len());
    let mut broken = Vec::new();
    for (title, expr) in &all {
        assert!(
            !expr.trim().is_empty(),
            "panel `{title}` has an empty query"
        );
        let filled = substitute(expr, VALUES);
        assert!(!filled.contains('$'), "`{filled}` still holds a variable");
        if let Err(e) = promql_parser::parser::parse(&filled) {
            broken.push(format!("panel `{title}`: {e}\n  {filled}"));
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn every_variable_used_is_defined() {
    let d = dashboard();
    let names = defined(&d);
    for wanted in ["datasource", "job", "request", "client_job", "route"] {
        assert!(names.contains(wanted), "no `{wanted}` variable: {names:?}");
    }
    let mut used = BTreeSet::new();
    for (_, expr) in queries(&d) {
        used.extend(variables(&expr));
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        let q = &v["query"];
        let text = q["query"].as_str().or(q.as_str()).unwrap_or_default();
        used.extend(variables(text));
        used.extend(variables(
            v["datasource"]["uid"].as_str().unwrap_or_default(),
        ));
    }
    let undefined: Vec<_> = used
        .iter()
        .filter(|u| !u.starts_with("__") && !names.contains(*u))
        .collect();
    assert!(undefined.is_empty(), "undefined variables: {undefined:?}");
    // The variable queries parse too.
    for v in d["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map(|(selector, _)| selector)
                .unwrap_or(q);
            let filled = substitute(inner, VALUES);
            promql_parser::parser::parse(&filled)
                .unwrap_or_else(|e| panic!("variable `{}`: {e}: {filled}", v["name"]));
        }
    }
}

#[test]
fn every_panel_and_query_names_the_datasource_variable() {
    let d = dashboard();
    let mut ids = BTreeSet::new();
    for p in panels(&d) {
        let title = p["title"].as_str().unwrap();
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "id of `{title}` repeated"
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "panel `{title}`");
        assert_eq!(p["datasource"]["type"], "prometheus", "panel `{title}`");
        for t in p["targets"].as_array().unwrap() {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "`{title}`");
        }
    }
    assert_eq!(d["schemaVersion"], 39);
}

#[test]
fn each_server_convention_is_overlaid_on_the_client() {
    let d = dashboard();
    let text: Vec<String> = queries(&d).into_iter().map(|q| q.1).collect();
    let uses = |metric: &str| text.iter().any(|e| e.contains(metric));
    for metric in [
        "django_http_responses_total_by_status_view_method_total",
        "django_http_requests_latency_seconds_by_view_method_bucket",
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "grpc_server_handled_total",
        "grpc_server_handling_seconds_bucket",
        "http_server_request_duration_seconds_bucket",
        "http_server_duration_milliseconds_bucket",
        "gunicorn_requests",
        "gunicorn_request_duration",
        "redproof_requests_total",
        "redproof_request_duration_seconds_bucket",
        "redproof_users",
        "redproof_target_rate",
        "redproof_in_flight",
        "redproof_late_starts_total",
    ] {
        assert!(uses(metric), "no panel reads `{metric}`");
    }
    // Each overlay panel shows both sides.
    for p in panels(&d) {
        let title = p["title"].as_str().unwrap();
        if !title.contains("client vs server") {
            continue;
        }
        let legends: Vec<&str> = p["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["legendFormat"].as_str().unwrap())
            .collect();
        assert!(legends.iter().any(|l| l.starts_with("client")), "{title}");
        assert!(legends.iter().any(|l| l.starts_with("server")), "{title}");
    }
}
