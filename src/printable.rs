//! Text from servers made safe to print. A response body, a gRPC status
//! message or a metrics page can hold terminal control sequences
//! (`ESC ]0;title BEL`, `ESC [2J`) that would retitle or clear the
//! terminal of whoever reads the report, or break a Markdown table; such
//! text is escaped once, when it is stored into the report.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `s` with every control character (C0, DEL and C1), and the Unicode
/// bidirectional overrides that reorder what is shown, written as an
/// escape: `\n`, `\t`, `\r`, `\x1b`, `\u{9b}`, `\u{202e}`. Everything
/// else, backslashes included, is kept as it is.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x80 && needs_escape(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// [`escape_controls`] on an owned string, reusing it when nothing needs
/// escaping.
pub fn escaped(s: String) -> String {
    match escape_controls(&s) {
        Cow::Borrowed(_) => s,
        Cow::Owned(o) => o,
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        let s = r"ok: naïve café — C:\path {x}";
        assert!(matches!(escape_controls(s), Cow::Borrowed(t) if t == s));
    }

    #[test]
    fn terminal_sequences_are_written_out() {
        assert_eq!(
            escape_controls("a\x1b]0;pwned\x07\x1b[2Jb"),
            r"a\x1b]0;pwned\x07\x1b[2Jb"
        );
        assert_eq!(escape_controls("1\n2\r\n\t3\0\x7f"), r"1\n2\r\n\t3\x00\x7f");
    }

    #[test]
    fn c1_controls_and_bidi_overrides_are_escaped() {
        assert_eq!(escape_controls("\u{9b}2J"), r"\u{9b}2J");
        assert_eq!(escape_controls("abc\u{202e}fed"), r"abc\u{202e}fed");
        assert_eq!(escaped("x\u{2066}y".to_owned()), r"x\u{2066}y");
    }
}
