//! Scenario files: reading YAML, validating it into a checked model, and
//! reporting every problem at once with its file, line and column.
//!
//! Reading happens in two stages. [`raw`] mirrors the file with serde and
//! keeps the position of each value; `parse` checks those values (with
//! `load`, `steps`, `calls`, `feeds`, [`grpc`] and [`verification`] for
//! the sections of the file) and builds a [`Scenario`] in which every field
//! is already valid and every template, JSON path and header name is
//! compiled, so the rest of redproof never re-checks or re-parses input.

mod calls;
mod checker;
mod diagnostic;
mod feeds;
pub mod grpc;
mod include;
mod load;
mod parse;
mod parts;
pub mod raw;
pub mod shard;
mod steps;
mod targets;
pub mod threshold;
mod types;
pub mod units;
mod url;
pub mod verification;

use std::path::Path;

pub use calls::bad_target_byte;
pub use diagnostic::{Diagnostic, ScenarioErrors};
pub use types::*;
pub use url::{BaseUrl, redact_url};

pub use crate::position::{Located, Pos};
pub use crate::template::JsonNode;

/// Reads and validates a scenario file.
pub fn load_file(path: &Path) -> Result<Scenario, ScenarioErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ScenarioErrors::new(
            path,
            "",
            vec![Diagnostic::at(
                None,
                format!("cannot read the scenario file: {e}"),
            )],
        )
    })?;
    parse(path, &text)
}

/// Validates scenario text; `path` is only used in messages and to resolve
/// relative file references.
pub fn parse(path: &Path, text: &str) -> Result<Scenario, ScenarioErrors> {
    parse::build(path, text).map_err(|(d, included)| {
        ScenarioErrors::new(path, text, d)
            .with_includes(included.into_iter().map(|i| (i.path, i.text)).collect())
    })
}
