//! A reader for the Prometheus text exposition format (0.0.4, and the
//! sample lines of OpenMetrics).
//!
//! Written here rather than taken from `prometheus-parse`, which splits
//! label values on `,` and `=` and ignores escapes, so it misreads values
//! such as `handler="/a,b"` or `msg="say \"hi\""`.

use crate::promql::Labels;

/// One sample line: metric name, labels, value. Timestamps in the text
/// are ignored: a scrape's samples all carry the scrape's start time, as
/// in Prometheus.
#[derive(Debug, Clone, PartialEq)]
pub struct TextSample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

/// Parses a whole page. Comment lines are skipped; a malformed line is an
/// error naming its line number.
pub fn parse(text: &str) -> Result<Vec<TextSample>, String> {
    let mut out = Vec::new();
    parse_each(text, |_| true, |s| out.push(s))?;
    Ok(out)
}

/// Hands each sample of a family `keep` accepts to `sample`, one line at
/// a time, so a large page is never held as a list of samples. Lines of
/// other families are only checked for a valid metric name; a malformed
/// line of a kept family is an error naming its line number.
pub fn parse_each(
    text: &str,
    keep: impl Fn(&str) -> bool,
    mut sample: impl FnMut(TextSample),
) -> Result<(), String> {
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |e: String| format!("line {}: {e}: `{line}`", i + 1);
        let name = metric_name(line).map_err(at)?;
        if keep(name) {
            sample(parse_line(line, name).map_err(at)?);
        }
    }
    Ok(())
}

/// The metric name a sample line starts with.
fn metric_name(line: &str) -> Result<&str, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("expected a metric name followed by a value")?;
    let name = &line[..name_end];
    if !crate::promql::is_metric_name(name) {
        return Err(format!("`{name}` is not a valid metric name"));
    }
    Ok(name)
}

fn parse_line(line: &str, name: &str) -> Result<TextSample, String> {
    let name_end = name.len();
    let mut rest = &line[name_end..];
    let mut labels = Labels::new();
    if let Some(r) = rest.strip_prefix('{') {
        let (l, after) = parse_labels(r)?;
        labels = l;
        rest = after;
    }
    let value_text = rest
        .split_whitespace()
        .next()
        .ok_or("expected a value after the name and labels")?;
    Ok(TextSample {
        name: name.to_owned(),
        labels,
        value: parse_value(value_text)?,
    })
}

/// Reads `a="x",b="y"}` and returns the labels and the text after `}`.
fn parse_labels(mut s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Labels::new();
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = s
            .find('=')
            .ok_or("expected `label=\"value\"` in the labels")?;
        let key = s[..eq].trim();
        if !crate::promql::is_label_name(key) {
            return Err(format!("`{key}` is not a valid label name"));
        }
        s = s[eq + 1..].trim_start();
        s = s
            .strip_prefix('"')
            .ok_or_else(|| format!("expected a quoted value for label `{key}`"))?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("the value of label `{key}` is not closed")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err(format!("the value of label `{key}` is not closed")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.insert(key.to_owned(), value);
        s = s[end + 1..].trim_start();
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        }
    }
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        "NaN" | "nan" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| format!("`{s}` is not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_labels_and_values() {
        let page = "# HELP x_total Requests\n# TYPE x_total counter\n\
x_total{view=\"polls:2xx_success\",method=\"GET\"} 12\n\
h_bucket{le=\"+Inf\",handler=\"/a,b=c\"} 3 1700000000000\n\
odd{msg=\"say \\\"hi\\\"\\n\"} NaN\n\
bare 1.5e3\n";
        let s = parse(page).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].name, "x_total");
        assert_eq!(s[0].labels["view"], "polls:2xx_success");
        assert_eq!(s[0].value, 12.0);
        assert_eq!(s[1].labels["handler"], "/a,b=c");
        assert_eq!(s[1].labels["le"], "+Inf");
        assert_eq!(s[2].labels["msg"], "say \"hi\"\n");
        assert!(s[2].value.is_nan());
        assert_eq!(s[3].value, 1500.0);
        assert!(s[3].labels.is_empty());
    }

    #[test]
    fn names_the_bad_line() {
        let e = parse("ok 1\nbroken{a=\"x} 1\n").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
        assert!(parse("x{a=b} 1").is_err());
        assert!(parse("x abc").is_err());
    }

    #[test]
    fn keeps_only_the_families_asked_for() {
        let page = "a_total{x=\"1\"} 1\nb_total{broken 2\na_created 5\n";
        let mut kept = Vec::new();
        parse_each(page, |n| n.starts_with("a_"), |s| kept.push(s.name)).unwrap();
        assert_eq!(kept, ["a_total", "a_created"]);
        // The line of a family not kept is not read past its name; a
        // kept one is, and its error names the line.
        let e = parse_each(page, |n| n.starts_with('b'), |_| {}).unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
        assert!(parse_each("9bad 1\n", |_| false, |_| {}).is_err());
    }
}
