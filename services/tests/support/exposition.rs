//! Reading samples out of Prometheus exposition text, for tests that
//! compare what a service exported with what was sent to it. Shared by the
//! services' tests and redproof's end-to-end tests.

// Each test crate that includes this module uses a part of it.
#![allow(dead_code)]

/// The samples of `name` whose labels include every one of `labels`
/// (others are ignored), in page order.
pub fn samples<'a>(
    text: &'a str,
    name: &'a str,
    labels: &'a [(&str, &str)],
) -> impl Iterator<Item = f64> + 'a {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(move |l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            let ok = labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            if ok { value.parse().ok() } else { None }
        })
}

/// The value of the first sample `name{labels…}`.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(text, name, labels).next()
}

/// The sum of every sample `name{labels…}`: 0 when there is none.
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text, name, labels).sum()
}
