//! What runs: the top-level `load:` and `requests:` of a file, or its
//! `scenarios:` (k6's), each a load of its own with its own requests,
//! start and `on_start`, all sharing the file's targets, data and feeds.

use std::time::Duration;

use marked_yaml::{Node, Spanned};

use super::checker::{Checker, pos};
use super::load::check_load;
use super::raw::{RawOnStartFailures, RawRequest, RawScenario, RawSubScenario, Text};
use super::steps::{PartSource, Steps, check_requests};
use super::types::*;
use super::units;
use crate::template::TemplateEnv;

/// The parts of the file and every step they hold.
pub(super) struct Parts {
    pub(super) parts: Vec<SubScenario>,
    pub(super) steps: Steps,
    /// The names of `scenarios:`, as written (valid or not), so a
    /// threshold or verify entry naming another can say which exist.
    pub(super) names: Vec<String>,
}

pub(super) fn check_parts(
    c: &mut Checker,
    raw: &RawScenario,
    root: &Node,
    targets: &[Target],
    env: &TemplateEnv,
    feeds: &[Feed],
) -> Parts {
    let mut steps = Steps::new(feeds);
    let root_map = root.as_mapping();
    let Some(scenarios) = &raw.scenarios else {
        let load = match &raw.load {
            Some(l) => check_load(c, l, key_pos(root, "load")),
            None => {
                c.err(
                    None,
                    "expected `load:` and `requests:`, or `scenarios:` (several loads, each with its own `load:` and `requests:`)",
                );
                None
            }
        };
        let part = check_part(
            c,
            &mut steps,
            targets,
            env,
            PartInput {
                name: None,
                requests: raw.requests.as_ref(),
                on_start: &raw.on_start,
                on_start_failures: raw.on_start_failures.as_ref(),
                node: root_map,
                missing_at: None,
            },
        );
        let parts = match (load, part) {
            (Some(load), Some(p)) => vec![SubScenario {
                name: None,
                start: Duration::ZERO,
                load,
                entries: p.entries,
                on_start: p.on_start,
                on_start_failures: p.on_start_failures,
            }],
            _ => Vec::new(),
        };
        return Parts {
            parts,
            steps,
            names: Vec::new(),
        };
    };
    // Top-level sections that belong to a single load are in the way.
    for key in ["load", "requests", "on_start", "on_start_failures"] {
        if raw_has(raw, key) {
            c.err(
                key_pos(root, key),
                format!(
                    "`{key}`: a file with `scenarios:` gives each scenario its own `{key}:`; move it into a scenario"
                ),
            );
        }
    }
    if scenarios.0.is_empty() {
        c.err(
            pos(scenarios),
            "`scenarios`: expected at least one scenario, e.g. `scenarios: { api: { load: { rate: 50/s, duration: 1m }, requests: [...] } }`",
        );
    }
    let nodes = root_map.and_then(|m| m.get_mapping("scenarios"));
    let mut parts = Vec::new();
    let mut names = Vec::new();
    for (name, sub) in &scenarios.0 {
        names.push(name.to_string());
        let valid = check_scenario_name(c, name);
        let node = nodes.and_then(|m| m.get_mapping(name.as_str()));
        let load = check_sub_load(c, name, sub, node);
        let start = c
            .parse_opt(&sub.start, "start", units::parse_duration)
            .unwrap_or(Duration::ZERO);
        let part = check_part(
            c,
            &mut steps,
            targets,
            env,
            PartInput {
                name: Some(name.as_str()),
                requests: sub.requests.as_ref(),
                on_start: &sub.on_start,
                on_start_failures: sub.on_start_failures.as_ref(),
                node,
                missing_at: Some(name),
            },
        );
        if let (true, Some(load), Some(p)) = (valid, load, part) {
            parts.push(SubScenario {
                name: Some(name.to_string()),
                start,
                load,
                entries: p.entries,
                on_start: p.on_start,
                on_start_failures: p.on_start_failures,
            });
        }
    }
    Parts {
        parts,
        steps,
        names,
    }
}

/// Whether the top level of the file sets `key`.
fn raw_has(raw: &RawScenario, key: &str) -> bool {
    match key {
        "load" => raw.load.is_some(),
        "requests" => raw.requests.is_some(),
        "on_start" => !raw.on_start.is_empty(),
        _ => raw.on_start_failures.is_some(),
    }
}

fn key_pos(root: &Node, key: &str) -> Option<super::Pos> {
    root.as_mapping()?
        .keys()
        .find(|k| k.as_str() == key)
        .and_then(|k| super::Pos::of_span(k.span()))
}

/// A scenario name follows the rules of request names: it is the first
/// half of `scenario.request`.
fn check_scenario_name(c: &mut Checker, name: &Text) -> bool {
    match RequestName::parse(name) {
        Ok(_) => true,
        Err(e) => {
            c.err(
                pos(name),
                format!(
                    "`scenarios`: {}",
                    e.replace("request name", "scenario name")
                ),
            );
            false
        }
    }
}

fn check_sub_load(
    c: &mut Checker,
    name: &Text,
    sub: &RawSubScenario,
    node: Option<&marked_yaml::types::MarkedMappingNode>,
) -> Option<Load> {
    match &sub.load {
        Some(l) => {
            let at = node
                .and_then(|m| m.keys().find(|k| k.as_str() == "load"))
                .and_then(|k| super::Pos::of_span(k.span()));
            check_load(c, l, at)
        }
        None => {
            c.err(
                pos(name),
                format!(
                    "scenario `{}`: expected `load:`, e.g. `load: {{ users: 10, duration: 1m }}` or `load: {{ rate: 50/s, duration: 1m }}`",
                    name.as_str()
                ),
            );
            None
        }
    }
}

/// One part as written.
struct PartInput<'a> {
    name: Option<&'a str>,
    requests: Option<&'a Spanned<Vec<RawRequest>>>,
    on_start: &'a [RawRequest],
    on_start_failures: Option<&'a Spanned<RawOnStartFailures>>,
    node: Option<&'a marked_yaml::types::MarkedMappingNode>,
    /// Where to point when `requests:` is missing: the scenario's name.
    missing_at: Option<&'a Text>,
}

struct CheckedPart {
    entries: Vec<Entry>,
    on_start: Vec<usize>,
    on_start_failures: Option<OnStartFailures>,
}

fn check_part(
    c: &mut Checker,
    steps: &mut Steps,
    targets: &[Target],
    env: &TemplateEnv,
    input: PartInput,
) -> Option<CheckedPart> {
    let Some(requests) = input.requests else {
        let what = match input.name {
            Some(n) => format!("scenario `{n}`: expected `requests:`"),
            None => "expected `requests:`".to_owned(),
        };
        c.err(
            input.missing_at.and_then(pos),
            format!("{what}, a list of requests and `flow:`s, e.g. `requests: [{{ name: home, http: {{ target: web, path: / }} }}]`"),
        );
        return None;
    };
    let checked = check_requests(
        c,
        &PartSource {
            name: input.name,
            requests,
            on_start: input.on_start,
            node: input.node,
        },
        targets,
        env,
        steps,
    );
    let on_start_failures = input
        .on_start_failures
        .and_then(|f| check_on_start_failures(c, f, input.on_start.is_empty()));
    Some(CheckedPart {
        entries: checked.entries,
        on_start: checked.on_start,
        on_start_failures,
    })
}

/// `on_start_failures: { max: N, then: stop_user | abort }`.
fn check_on_start_failures(
    c: &mut Checker,
    f: &Spanned<RawOnStartFailures>,
    no_on_start: bool,
) -> Option<OnStartFailures> {
    if no_on_start {
        c.err(
            pos(f),
            "`on_start_failures` goes with `on_start`, and this scenario has none",
        );
    }
    let max = c.parse(&f.max, "max", |t| {
        let n = units::parse_count(t)?;
        if (1..=1_000_000).contains(&n) {
            Ok(n as u32)
        } else {
            Err(format!(
                "expected between 1 and 1M failed attempts, got `{t}`"
            ))
        }
    });
    let then = match f.then.as_ref().map(|t| t.as_str()) {
        None | Some("abort") => Some(GiveUp::Abort),
        Some("stop_user") => Some(GiveUp::StopUser),
        Some(other) => {
            c.err(
                f.then.as_ref().and_then(pos),
                format!("`then`: expected `abort` or `stop_user`, got `{other}`"),
            );
            None
        }
    };
    Some(OnStartFailures {
        max: max?,
        then: then?,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::scenario::units::Rate;

    const TWO: &str = r#"
name: two
targets:
  web: { url: "http://127.0.0.1:8000" }
scenarios:
  browse:
    load: { users: 3, duration: 20s }
    on_start:
      - { name: login, http: { target: web, path: /login } }
    requests:
      - { name: home, weight: 2, http: { target: web, path: / } }
  api:
    start: 30s
    load: { rate: 50/s, duration: 1m }
    requests:
      - { name: home, http: { target: web, path: /api } }
"#;

    fn two() -> Scenario {
        crate::scenario::parse(Path::new("two.yaml"), TWO).unwrap()
    }

    #[test]
    fn each_scenario_is_a_part_with_qualified_request_names() {
        let s = two();
        let names: Vec<&str> = s.requests.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["browse.login", "browse.home", "api.home"]);
        let [browse, api] = &s.parts[..] else {
            panic!("two parts expected")
        };
        assert_eq!(browse.name.as_deref(), Some("browse"));
        assert_eq!(browse.on_start, [0]);
        assert_eq!(browse.entries[0].name, "browse.home");
        assert_eq!(browse.entries[0].weight.get(), 2);
        assert_eq!(api.start, Duration::from_secs(30));
        assert_eq!(api.entries[0].steps, [2]);
        assert!(api.on_start.is_empty());
        assert!(matches!(api.load.model, LoadModel::Open { .. }));
        assert_eq!(api.end(), Some(Duration::from_secs(90)));
    }

    #[test]
    fn users_and_rate_change_the_scenario_they_name() {
        let mut s = two();
        let users = |scenario: Option<&str>, value| Overrides {
            users: Some(Scoped {
                scenario: scenario.map(str::to_owned),
                value,
            }),
            ..Default::default()
        };
        let err = s.apply(&users(None, 5)).unwrap_err();
        assert!(err.contains("several scenarios (browse, api)"), "{err}");
        assert!(err.contains("--users browse=20"), "{err}");
        let err = s.apply(&users(Some("shop"), 5)).unwrap_err();
        assert!(err.contains("no scenario `shop`"), "{err}");
        s.apply(&users(Some("api"), 5)).unwrap();
        assert!(matches!(
            s.parts[1].load.model,
            LoadModel::Closed { users: 5, .. }
        ));
        assert!(matches!(
            s.parts[0].load.model,
            LoadModel::Closed { users: 3, .. }
        ));
        s.apply(&Overrides {
            rate: Some(Scoped::parse("browse=7/s", Rate::parse).unwrap()),
            duration: Some(Duration::from_secs(4)),
            ..Default::default()
        })
        .unwrap();
        assert!(matches!(s.parts[0].load.model, LoadModel::Open { .. }));
        assert!(
            s.parts
                .iter()
                .all(|p| p.load.duration == Some(Duration::from_secs(4)))
        );

        // A file with one load takes the bare value, not a name.
        let mut one = crate::scenario::parse(
            Path::new("one.yaml"),
            "name: one\ntargets: { web: { url: \"http://127.0.0.1:8000\" } }\nload: { users: 1, duration: 1s }\nrequests: [{ name: home, http: { target: web, path: / } }]\n",
        )
        .unwrap();
        let err = one.apply(&users(Some("api"), 2)).unwrap_err();
        assert!(err.contains("no `scenarios:`"), "{err}");
        one.apply(&users(None, 2)).unwrap();
        assert!(matches!(
            one.parts[0].load.model,
            LoadModel::Closed { users: 2, .. }
        ));
    }

    #[test]
    fn misplaced_and_missing_sections_are_reported_where_written() {
        let bad = TWO
            .replace("scenarios:\n", "requests: []\nscenarios:\n")
            .replace("    start: 30s\n", "    start: later\n")
            .replace("    load: { users: 3, duration: 20s }\n", "");
        let err = crate::scenario::parse(Path::new("two.yaml"), &bad)
            .unwrap_err()
            .to_string();
        for says in [
            "two.yaml:5:1: `requests`: a file with `scenarios:` gives each scenario its own `requests:`",
            "two.yaml:7:3: scenario `browse`: expected `load:`",
            "two.yaml:13:12: `start`: expected a duration",
        ] {
            assert!(err.contains(says), "{says}\n{err}");
        }
        let err = crate::scenario::parse(
            Path::new("none.yaml"),
            "name: none\ntargets: { web: { url: \"http://127.0.0.1:8000\" } }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("expected `load:` and `requests:`, or `scenarios:`"),
            "{err}"
        );
    }
}
