//! The validation pass's shared tools: the diagnostics collector and the
//! small checks every part of the file uses.

use marked_yaml::Spanned;

use super::Diagnostic;
use super::raw::Text;
use crate::position::{Located, Pos};

pub(super) fn check_url(url: &str) -> Result<String, String> {
    let example = "expected an absolute URL such as `http://127.0.0.1:8000`";
    let parsed: http::Uri = url
        .parse()
        .map_err(|e| format!("{example}, got `{url}` ({e})"))?;
    let scheme = parsed
        .scheme_str()
        .ok_or_else(|| format!("{example}, got `{url}` (no scheme)"))?;
    if !matches!(scheme, "http" | "https") {
        return Err(format!(
            "expected an `http://` or `https://` URL, got scheme `{scheme}` in `{url}`"
        ));
    }
    if parsed.host().is_none_or(str::is_empty) {
        return Err(format!("{example}, got `{url}` (no host)"));
    }
    if parsed.query().is_some() || url.contains('#') {
        return Err(format!(
            "a target URL is a base without query or fragment, got `{url}`"
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// Collects diagnostics while building the model.
pub(super) struct Checker {
    pub(super) diags: Vec<Diagnostic>,
}

impl Checker {
    pub(super) fn err(&mut self, pos: Option<Pos>, msg: impl Into<String>) {
        self.diags.push(Diagnostic::at(pos, msg));
    }

    /// Runs a parser on an optional value, recording its error.
    pub(super) fn parse_opt<T>(
        &mut self,
        v: &Option<Text>,
        field: &str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        v.as_ref().and_then(|v| self.parse(v, field, f))
    }

    /// Runs a parser on a located value, recording its error.
    pub(super) fn parse<T>(
        &mut self,
        v: &Text,
        field: &str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match f(v.as_str()) {
            Ok(t) => Some(t),
            Err(e) => {
                self.err(pos(v), format!("`{field}`: {e}"));
                None
            }
        }
    }
}

pub(super) fn pos<T>(s: &Spanned<T>) -> Option<Pos> {
    Pos::of_span(s.span())
}

pub(super) fn located(t: &Text) -> Located<String> {
    Located {
        value: t.to_string(),
        pos: pos(t),
    }
}
