//! `data:`: lists for `pick()`, and feeds of rows read from CSV or
//! JSON-lines files.
//!
//! ```yaml
//! data:
//!   names: [alice, bob]                    # a list for pick(names)
//!   customers:                             # a feed: {{ customers.name }}
//!     file: customers.csv                  # header row names the columns
//!     draw: unique                         # sequential (default), random, unique
//!     exhausted: stop                      # unique only: stop (default) or cycle
//! ```

use std::path::Path;

use marked_yaml::{Node, Spanned};

use super::checker::{Checker, pos};
use super::raw::OrderedMap;
use super::types::{DataList, Draw, Exhausted, Feed};
use crate::position::Pos;

/// Reads `data:` from the YAML tree: a sequence is a list, a mapping a feed.
pub(super) fn check_data(
    c: &mut Checker,
    raw: &OrderedMap<Spanned<serde::de::IgnoredAny>>,
    root: &Node,
    base: &Path,
) -> (Vec<DataList>, Vec<Feed>) {
    let mut lists = Vec::new();
    let mut feeds: Vec<Feed> = Vec::new();
    let Some(data) = root.as_mapping().and_then(|m| m.get_mapping("data")) else {
        return (lists, feeds);
    };
    for (name, _) in &raw.0 {
        let at = pos(name);
        if name.contains('.') {
            c.err(
                at,
                format!("`data.{}`: names may not contain `.`", name.as_str()),
            );
            continue;
        }
        match data.get_node(name.as_str()) {
            Some(Node::Sequence(seq)) => {
                if seq.is_empty() {
                    c.err(at, format!("`data.{}`: expected at least one value", name.as_str()));
                }
                let mut values = Vec::new();
                for v in seq.iter() {
                    match v {
                        Node::Scalar(s) => values.push(s.as_str().to_owned()),
                        other => c.err(
                            Pos::of_span(other.span()),
                            format!("`data.{}`: expected plain values in the list", name.as_str()),
                        ),
                    }
                }
                lists.push(DataList {
                    name: name.to_string(),
                    values,
                });
            }
            Some(Node::Mapping(map)) => {
                let first_slot = feeds.iter().map(|f| f.columns.len()).sum();
                if let Some(feed) = check_feed(c, name.as_str(), map, at, base, first_slot) {
                    feeds.push(feed);
                }
            }
            _ => c.err(
                at,
                format!(
                    "`data.{}`: expected a list of values, or a feed `{{ file: rows.csv, draw: sequential }}`",
                    name.as_str()
                ),
            ),
        }
    }
    (lists, feeds)
}

fn check_feed(
    c: &mut Checker,
    name: &str,
    map: &marked_yaml::types::MarkedMappingNode,
    at: Option<Pos>,
    base: &Path,
    first_slot: usize,
) -> Option<Feed> {
    let mut file = None;
    let mut draw = Draw::Sequential;
    let mut exhausted = None;
    for (k, v) in map.iter() {
        let kpos = Pos::of_span(k.span());
        let Some(value) = v.as_scalar().map(|s| s.as_str()) else {
            c.err(
                kpos,
                format!("`data.{name}.{}`: expected a plain value", k.as_str()),
            );
            continue;
        };
        let vpos = Pos::of_span(v.span());
        match k.as_str() {
            "file" => file = Some((value.to_owned(), vpos)),
            "draw" => match value {
                "sequential" => draw = Draw::Sequential,
                "random" => draw = Draw::Random,
                "unique" => draw = Draw::Unique,
                other => c.err(
                    vpos,
                    format!("`data.{name}.draw`: expected `sequential`, `random` or `unique`, got `{other}`"),
                ),
            },
            "exhausted" => match value {
                "stop" => exhausted = Some((Exhausted::Stop, vpos)),
                "cycle" => exhausted = Some((Exhausted::Cycle, vpos)),
                other => c.err(
                    vpos,
                    format!("`data.{name}.exhausted`: expected `stop` or `cycle`, got `{other}`"),
                ),
            },
            other => c.err(
                kpos,
                format!("`data.{name}`: unknown key `{other}`; a feed has `file`, `draw` and `exhausted`"),
            ),
        }
    }
    if let Some((_, p)) = exhausted
        && draw != Draw::Unique
    {
        c.err(
            p,
            format!("`data.{name}.exhausted` applies to `draw: unique`; other draws never run out"),
        );
    }
    let Some((file, fpos)) = file else {
        c.err(
            at,
            format!("`data.{name}`: a feed needs `file:` (a .csv or .jsonl file)"),
        );
        return None;
    };
    let path = base.join(&file);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            c.err(
                fpos,
                format!("`data.{name}.file`: cannot read `{}`: {e}", path.display()),
            );
            return None;
        }
    };
    let parsed = if file.ends_with(".csv") {
        read_csv(&text)
    } else if file.ends_with(".jsonl") || file.ends_with(".ndjson") {
        read_json_lines(&text)
    } else {
        Err("expected a `.csv` or `.jsonl` file".to_owned())
    };
    let (columns, rows) = match parsed {
        Ok(x) => x,
        Err(e) => {
            c.err(fpos, format!("`data.{name}.file`: `{file}`: {e}"));
            return None;
        }
    };
    if rows.is_empty() {
        c.err(fpos, format!("`data.{name}.file`: `{file}` has no rows"));
        return None;
    }
    Some(Feed {
        name: name.to_owned(),
        columns,
        rows,
        draw,
        exhausted: exhausted.map_or(Exhausted::Stop, |(e, _)| e),
        first_slot,
    })
}

fn valid_column(c: &str) -> bool {
    !c.is_empty()
        && c.chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
}

/// A CSV file with a header row.
fn read_csv(text: &str) -> Result<(Vec<String>, Vec<Vec<String>>), String> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let columns: Vec<String> = reader
        .headers()
        .map_err(|e| e.to_string())?
        .iter()
        .map(str::to_owned)
        .collect();
    if let Some(bad) = columns.iter().find(|c| !valid_column(c)) {
        return Err(format!(
            "column `{bad}` in the header row is not a name (letters, digits, `_`, `-`)"
        ));
    }
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| format!("row {}: {e}", i + 2))?;
        rows.push(record.iter().map(str::to_owned).collect());
    }
    Ok((columns, rows))
}

/// One JSON object per line; the first object's keys are the columns
/// (in sorted order); a key missing from a later line is empty.
fn read_json_lines(text: &str) -> Result<(Vec<String>, Vec<Vec<String>>), String> {
    let mut columns: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        let obj = value
            .as_object()
            .ok_or_else(|| format!("line {}: expected a JSON object", i + 1))?;
        if columns.is_empty() {
            columns = obj.keys().cloned().collect();
            if let Some(bad) = columns.iter().find(|c| !valid_column(c)) {
                return Err(format!("line {}: key `{bad}` is not a name", i + 1));
            }
        }
        rows.push(
            columns
                .iter()
                .map(|c| match obj.get(c) {
                    None | Some(serde_json::Value::Null) => String::new(),
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                })
                .collect(),
        );
    }
    Ok((columns, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_json_lines_give_columns_and_rows() {
        let (cols, rows) = read_csv("name, cents\n\"Smith, Ann\",100\nbo,2\n").unwrap();
        assert_eq!(cols, ["name", "cents"]);
        assert_eq!(rows, [["Smith, Ann", "100"], ["bo", "2"]]);
        let (cols, rows) =
            read_json_lines("{\"name\":\"ann\",\"n\":1}\n\n{\"name\":\"bo\"}\n").unwrap();
        assert_eq!(cols, ["n", "name"]);
        assert_eq!(rows, [["1", "ann"], ["", "bo"]]);
        assert!(read_csv("a b\n1\n").unwrap_err().contains("not a name"));
        assert!(read_json_lines("[1]").unwrap_err().contains("line 1"));
    }
}
