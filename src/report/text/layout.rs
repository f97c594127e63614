//! Laying text out for an 80-column terminal: display widths, padding,
//! wrapping with a hanging indent, and the colours of verdicts.
//!
//! Colours are written as ANSI styles unconditionally; the report is
//! printed through `anstream`, which strips them when stdout is not a
//! terminal, under `NO_COLOR`, or with `--color never`.

use anstyle::{AnsiColor, Style};
use unicode_width::UnicodeWidthStr;

/// The width the report fits.
pub const WIDTH: usize = 80;

/// A lead wider than this puts the text it introduces on the next line,
/// so that wrapped text keeps a useful width.
const MAX_LEAD: usize = 40;

/// How a status reads at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Pass,
    Fail,
    NoData,
    Skipped,
}

impl Tone {
    fn style(self) -> Style {
        match self {
            Tone::Pass => Style::new().fg_color(Some(AnsiColor::Green.into())),
            Tone::Fail => Style::new().fg_color(Some(AnsiColor::Red.into())).bold(),
            Tone::NoData => Style::new().fg_color(Some(AnsiColor::Yellow.into())),
            Tone::Skipped => Style::new().dimmed(),
        }
    }

    /// `text` in this tone's colour.
    pub fn paint(self, text: &str) -> String {
        let s = self.style();
        format!("{s}{text}{s:#}")
    }
}

/// Display columns of `s` (wide characters count two).
pub fn width(s: &str) -> usize {
    s.width()
}

/// `s` padded with spaces to `w` display columns, on the right.
pub fn pad(s: &str, w: usize) -> String {
    format!("{s}{}", " ".repeat(w.saturating_sub(width(s))))
}

/// The width of a name column: the widest name, at least `min`, at
/// most `max` (longer names get a line of their own).
pub fn name_width<'a>(names: impl IntoIterator<Item = &'a str>, min: usize, max: usize) -> usize {
    names
        .into_iter()
        .map(width)
        .max()
        .unwrap_or(0)
        .clamp(min, max)
}

/// A table row: `name` in a column `name_w` wide then `figures`; a name
/// too wide for its column is a line of its own, with the figures on
/// the next.
pub fn table_row(o: &mut String, indent: &str, name: &str, name_w: usize, figures: &str) {
    if width(name) > name_w {
        o.push_str(&format!(
            "{indent}{name}\n{indent}{}{figures}\n",
            " ".repeat(name_w)
        ));
    } else {
        o.push_str(&format!("{indent}{}{figures}\n", pad(name, name_w)));
    }
}

/// `text` wrapped at [`WIDTH`] after `lead` on the first line, its other
/// lines indented by `indent` columns; `styled` is what is printed in
/// place of `lead` (the same text, coloured). Words are not broken: a
/// token wider than the line (a long URL or query) overflows on its own
/// line.
pub fn hanging(o: &mut String, lead: &str, styled: &str, text: &str, indent: usize) {
    let lead_w = width(lead);
    let rest = " ".repeat(indent);
    if text.is_empty() {
        o.push_str(styled.trim_end());
        o.push('\n');
        return;
    }
    if lead_w > MAX_LEAD.max(indent) {
        o.push_str(styled.trim_end());
        o.push('\n');
        wrap_into(o, text, &rest, &rest);
        return;
    }
    let first = " ".repeat(lead_w);
    let start = o.len();
    wrap_into(o, text, &first, &rest);
    o.replace_range(start..start + first.len(), styled);
}

/// `text` wrapped at [`WIDTH`], the first line after `first`, the others
/// after `rest`.
pub fn wrap_into(o: &mut String, text: &str, first: &str, rest: &str) {
    let options = textwrap::Options::new(WIDTH)
        .initial_indent(first)
        .subsequent_indent(rest)
        .break_words(false)
        .word_splitter(textwrap::WordSplitter::NoHyphenation);
    let lines = textwrap::wrap(text, options);
    if lines.is_empty() {
        o.push_str(first.trim_end());
        o.push('\n');
    }
    for line in lines {
        o.push_str(&line);
        o.push('\n');
    }
}

/// `parts` joined by ` · ` after `lead`, a line broken only between
/// parts (each later line indented by two spaces); `styled` is printed
/// in place of `lead`.
pub fn joined(o: &mut String, lead: &str, styled: &str, parts: &[String]) {
    let mut line = lead.to_owned();
    let mut line_styled = styled.to_owned();
    let mut fresh = true;
    for p in parts {
        let sep = if fresh { "" } else { " · " };
        if !fresh && width(&line) + sep.len() - 1 + width(p) > WIDTH {
            o.push_str(&line_styled);
            o.push('\n');
            line = "  ".to_owned();
            line_styled = line.clone();
        } else {
            line.push_str(sep);
            line_styled.push_str(sep);
        }
        line.push_str(p);
        line_styled.push_str(p);
        fresh = false;
    }
    o.push_str(&line_styled);
    o.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_count_display_columns() {
        assert_eq!(width("≈75ms"), 5);
        assert_eq!(width("要求"), 4);
        assert_eq!(pad("要求", 6), "要求  ");
    }

    #[test]
    fn hanging_indent_wraps_at_80_and_keeps_long_tokens_whole() {
        let mut o = String::new();
        let words = "the server counted fewer requests than the client sent ".repeat(3);
        hanging(
            &mut o,
            "  FAIL    a.count  ",
            "  F!      a.count  ",
            &words,
            10,
        );
        let lines: Vec<&str> = o.lines().collect();
        assert!(lines.len() > 1, "{o}");
        assert!(lines[0].starts_with("  F!      a.count  the server"), "{o}");
        assert!(
            lines[1..]
                .iter()
                .all(|l| l.starts_with("          ") && !l[10..].starts_with(' ')),
            "{o}"
        );
        assert!(lines.iter().all(|l| width(l) <= WIDTH), "{o}");

        let mut o = String::new();
        let url = format!("query: http://127.0.0.1:9090/{}", "x".repeat(90));
        hanging(&mut o, "  ", "  ", &url, 4);
        let lines: Vec<&str> = o.lines().collect();
        assert_eq!(
            lines,
            [
                "  query:",
                &format!("    http://127.0.0.1:9090/{}", "x".repeat(90))
            ]
        );
    }

    #[test]
    fn joined_parts_break_only_between_parts() {
        let parts: Vec<String> = [
            "6 of 28 checks failed (2 thresholds, 4 verification)",
            "1 no data",
            "16 skipped",
            "exit 3",
        ]
        .map(String::from)
        .to_vec();
        let mut o = String::new();
        joined(&mut o, "FAIL · ", "FAIL · ", &parts);
        assert_eq!(
            o,
            "FAIL · 6 of 28 checks failed (2 thresholds, 4 verification) · 1 no data\n  16 skipped · exit 3\n"
        );
        let mut o = String::new();
        joined(
            &mut o,
            "PASS · ",
            "PASS · ",
            &["31 checks".into(), "exit 0".into()],
        );
        assert_eq!(o, "PASS · 31 checks · exit 0\n");
    }

    #[test]
    fn a_wide_lead_puts_the_text_below_it() {
        let mut o = String::new();
        let lead = format!("  pass    {}  ", "n".repeat(50));
        hanging(&mut o, &lead, &lead, "short", 10);
        assert_eq!(
            o,
            format!("  pass    {}\n          short\n", "n".repeat(50))
        );
    }

    #[test]
    fn long_names_get_their_own_line() {
        let mut o = String::new();
        table_row(&mut o, "", "short", 8, " 1 2");
        table_row(&mut o, "", "a_rather_long_name", 8, " 3 4");
        assert_eq!(o, "short    1 2\na_rather_long_name\n         3 4\n");
    }

    #[test]
    fn tones_wrap_text_in_styles_that_strip_cleanly() {
        let red = Tone::Fail.paint("FAIL");
        assert_ne!(red, "FAIL");
        assert_eq!(anstream::adapter::strip_str(&red).to_string(), "FAIL");
    }
}
