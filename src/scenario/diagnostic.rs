//! Problems found in a scenario file, each with its position, and their
//! rendering with the offending line quoted under a caret.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::position::Pos;

/// One problem in a scenario file.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// Where the offending value starts, when known.
    pub pos: Option<Pos>,
    /// What is wrong, naming the field, the value and what was expected.
    pub message: String,
}

impl Diagnostic {
    pub fn at(pos: Option<Pos>, message: impl Into<String>) -> Self {
        Self {
            pos,
            message: message.into(),
        }
    }
}

/// Every problem found in one scenario file.
#[derive(Debug, thiserror::Error)]
pub struct ScenarioErrors {
    pub file: PathBuf,
    /// The file's text, to quote offending lines.
    pub source_text: String,
    pub diagnostics: Vec<Diagnostic>,
    /// Files read through `include:`: path and text, by source number - 1.
    pub includes: Vec<(PathBuf, String)>,
}

impl ScenarioErrors {
    pub fn new(file: &Path, source_text: &str, diagnostics: Vec<Diagnostic>) -> Self {
        let mut diagnostics = diagnostics;
        diagnostics.sort_by_key(|d| d.pos.map(|p| (p.source, p.line, p.column)));
        Self {
            file: file.to_owned(),
            source_text: source_text.to_owned(),
            diagnostics,
            includes: Vec::new(),
        }
    }

    /// The same errors, some of them in these included files.
    pub fn with_includes(mut self, includes: Vec<(PathBuf, String)>) -> Self {
        self.includes = includes;
        self
    }
}

impl fmt::Display for ScenarioErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match d.pos {
                Some(p) => {
                    let (name, text) =
                        match p.source.checked_sub(1).and_then(|i| self.includes.get(i)) {
                            Some((path, text)) => (path.display(), text.as_str()),
                            None => (self.file.display(), self.source_text.as_str()),
                        };
                    // A message may quote a value `env()` read.
                    let message = crate::secrets::scrub(&d.message);
                    writeln!(f, "{name}:{}:{}: {message}", p.line, p.column)?;
                    if let Some(line) = text.lines().nth(p.line.saturating_sub(1)) {
                        let gutter = p.line.to_string().len();
                        writeln!(f, "{:gutter$} |", "")?;
                        writeln!(f, "{} | {}", p.line, mask_userinfo(line))?;
                        let caret_col: usize = line
                            .chars()
                            .take(p.column.saturating_sub(1))
                            .map(|c| if c == '\t' { 1 } else { c.len_utf16() })
                            .sum();
                        writeln!(f, "{:gutter$} | {:caret_col$}^", "", "")?;
                    }
                }
                None => writeln!(f, "{file}: {}", crate::secrets::scrub(&d.message))?,
            }
        }
        let n = self.diagnostics.len();
        write!(
            f,
            "{n} problem{} in `{file}`",
            if n == 1 { "" } else { "s" }
        )
    }
}

/// `line` with the password of every URL in it masked (`user:***@`), so a
/// quoted scenario line never shows credentials. The masked text keeps its
/// length up to the `@`, so a caret under a later column still points at
/// the same place.
fn mask_userinfo(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find("://") {
        let start = i + 3;
        let end = rest[start..]
            .find(|c: char| c.is_whitespace() || "\"'/?#,}]".contains(c))
            .map_or(rest.len(), |e| start + e);
        out.push_str(&rest[..start]);
        let authority = &rest[start..end];
        match authority.rfind('@') {
            Some(at) => {
                let info = &authority[..at];
                match info.split_once(':') {
                    Some((user, password)) => {
                        out.push_str(user);
                        out.push(':');
                        out.extend(std::iter::repeat_n('*', password.chars().count()));
                    }
                    None => out.extend(std::iter::repeat_n('*', info.chars().count())),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_lines_never_show_url_credentials() {
        assert_eq!(
            mask_userinfo(r#"  web: { url: "http://ann:s3cret@h:80/x", timeout: 1s }"#),
            r#"  web: { url: "http://ann:******@h:80/x", timeout: 1s }"#
        );
        assert_eq!(
            mask_userinfo("a: https://tok@h b: http://h/p?q=a@b"),
            "a: https://***@h b: http://h/p?q=a@b"
        );
        let errors = ScenarioErrors::new(
            Path::new("s.yaml"),
            "name: x\nurl: \"http://u:hunter2@h\"\n",
            vec![Diagnostic::at(
                Some(Pos {
                    line: 2,
                    column: 6,
                    source: 0,
                }),
                "bad",
            )],
        );
        assert!(!errors.to_string().contains("hunter2"), "{errors}");
    }
}
