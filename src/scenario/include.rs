//! `include:` other YAML files into a scenario: their `targets`, `data`
//! and `requests` (flows included) join the main file's, before anything
//! is checked. Each included file is parsed as its own source, so every
//! value from it keeps its file, line and column for messages.

use std::path::{Path, PathBuf};

use marked_yaml::Node;
use marked_yaml::types::MarkedMappingNode;

use super::Diagnostic;
use crate::position::Pos;

/// What an included file may hold.
const INCLUDABLE: &[&str] = &["targets", "data", "requests"];

/// A file read through `include:`; its source number is its index + 1.
#[derive(Debug, Clone)]
pub struct Included {
    pub path: PathBuf,
    pub text: String,
}

/// Merges the files listed under the root's `include:` into `root`, and
/// removes the key. `base` is the main file's directory.
pub(super) fn resolve(root: &mut Node, base: &Path, diags: &mut Vec<Diagnostic>) -> Vec<Included> {
    let mut included: Vec<Included> = Vec::new();
    let Some(map) = root.as_mapping_mut() else {
        return included;
    };
    let include_key = map.keys().find(|k| k.as_str() == "include").cloned();
    let Some(include_key) = include_key else {
        return included;
    };
    let list = map.remove(&include_key).expect("found above");
    let items: Vec<Node> = match list {
        Node::Sequence(seq) => seq.iter().cloned().collect(),
        scalar @ Node::Scalar(_) => vec![scalar],
        Node::Mapping(m) => {
            diags.push(Diagnostic::at(
                Pos::of_span(m.span()),
                "`include`: expected a file name or a list of them, e.g. `include: [common/targets.yaml]`",
            ));
            return included;
        }
    };
    for item in items {
        let at = Pos::of_span(item.span());
        let Some(name) = item.as_scalar().map(|s| s.as_str().to_owned()) else {
            diags.push(Diagnostic::at(at, "`include`: expected a file name"));
            continue;
        };
        let path = base.join(&name);
        if included.iter().any(|i| i.path == path) {
            diags.push(Diagnostic::at(
                at,
                format!("`include`: `{name}` is included twice"),
            ));
            continue;
        }
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                diags.push(Diagnostic::at(
                    at,
                    format!(
                        "`include`: cannot read `{name}` (relative to the scenario's directory): {e}"
                    ),
                ));
                continue;
            }
        };
        let source = included.len() + 1;
        included.push(Included {
            path: path.clone(),
            text: text.clone(),
        });
        let node = match marked_yaml::parse_yaml_with_options(
            source,
            &text,
            super::parse::loader_options(),
        ) {
            Ok(n) => n,
            Err(e) => {
                diags.push(super::parse::load_error(&e));
                continue;
            }
        };
        let Node::Mapping(inc) = node else {
            continue;
        };
        merge(map, inc, &name, diags);
    }
    included
}

/// Adds the included mapping's parts to the main one.
fn merge(
    main: &mut MarkedMappingNode,
    inc: MarkedMappingNode,
    name: &str,
    diags: &mut Vec<Diagnostic>,
) {
    for (k, v) in inc.iter() {
        let kpos = Pos::of_span(k.span());
        if !INCLUDABLE.contains(&k.as_str()) {
            diags.push(Diagnostic::at(
                kpos,
                format!(
                    "`{}` cannot be included: an included file holds `targets`, `data` and `requests`; the rest belongs in the main file",
                    k.as_str()
                ),
            ));
            continue;
        }
        let existing = main.keys().find(|m| m.as_str() == k.as_str()).cloned();
        match (k.as_str(), v) {
            ("requests", Node::Sequence(seq)) => match existing.and_then(|e| main.get_mut(&e)) {
                Some(Node::Sequence(main_seq)) => main_seq.extend(seq.iter().cloned()),
                Some(_) => {}
                None => {
                    main.insert(k.clone(), Node::Sequence(seq.clone()));
                }
            },
            ("targets" | "data", Node::Mapping(entries)) => {
                let target = match existing {
                    Some(e) => main.get_mut(&e),
                    None => {
                        main.insert(
                            k.clone(),
                            Node::Mapping(MarkedMappingNode::new_empty(*entries.span())),
                        );
                        main.get_mut(k)
                    }
                };
                let Some(Node::Mapping(target)) = target else {
                    continue;
                };
                for (ek, ev) in entries.iter() {
                    if target.keys().any(|t| t.as_str() == ek.as_str()) {
                        diags.push(Diagnostic::at(
                            Pos::of_span(ek.span()),
                            format!(
                                "`{}.{}` is defined again by `{name}`; names must be unique",
                                k.as_str(),
                                ek.as_str()
                            ),
                        ));
                    } else {
                        target.insert(ek.clone(), ev.clone());
                    }
                }
            }
            (key, other) => diags.push(Diagnostic::at(
                Pos::of_span(other.span()),
                format!(
                    "`{key}`: expected {}",
                    if key == "requests" {
                        "a list of requests"
                    } else {
                        "a mapping of names"
                    }
                ),
            )),
        }
    }
}
