//! The README's conformance table: each configuration's row.

use crate::config::{Config, Expect, server_of};
use crate::install::{repo, target_dir};

/// A diagnosis with what changes from run to run (numbers, addresses)
/// written as `N`, and `|` escaped for a Markdown table.
pub(crate) fn stable(diagnosis: &str) -> String {
    let mut out = String::new();
    let mut in_number = false;
    for ch in diagnosis.chars() {
        if ch.is_ascii_digit() || (in_number && (ch == '.' || ch == ',')) {
            if !in_number {
                out.push('N');
            }
            in_number = true;
            continue;
        }
        in_number = false;
        match ch {
            '|' => out.push_str("\\|"),
            '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out.trim().to_owned()
}

/// Writes this configuration's row of the README's table into
/// `target/conformance/rows/`, and checks that the README holds a row
/// for it with the same library, configuration and verdict, whose
/// diagnosis says what the test asserts.
pub(crate) fn table_row(c: &Config, verdict: &str, diagnosis: &str) {
    let head = format!(
        "| {} | {}: {} | {verdict} |",
        c.stack.library(),
        server_of(c),
        c.describe
    );
    let row = format!("{head} {diagnosis} |");
    let rows = target_dir().join("conformance/rows");
    std::fs::create_dir_all(&rows).unwrap();
    std::fs::write(rows.join(format!("{:03}.md", c.order)), format!("{row}\n")).unwrap();
    let words: &[&str] = match c.expect {
        Expect::Healthy => &["server count = client count"],
        Expect::Warned { words } => words,
        Expect::Fault { words, .. } => words,
    };
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let found = readme.lines().find_map(|l| l.strip_prefix(&head));
    assert!(
        found.is_some_and(|d| words
            .iter()
            .all(|w| d.to_lowercase().contains(&w.to_lowercase()))),
        "README.md's conformance table has no row for this configuration saying {words:?}; \
         conformance/table.sh rewrites it from target/conformance/rows/ after a run:\n{row}"
    );
}
