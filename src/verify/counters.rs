//! Arithmetic on raw counter samples: the increase over the run with
//! reset correction, drops, the last change, and histogram buckets.

use std::collections::BTreeMap;

use crate::metrics::Series;

/// What one counter series did between T0 and S.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Increase {
    /// Increase from the baseline (last sample ≤ T0, or 0 for a series
    /// born during the run) to the last sample ≤ S, corrected for resets.
    pub delta: f64,
    /// Drops seen from the baseline on.
    pub drops: usize,
    /// Samples from the baseline on (the number of scrapes seen).
    pub samples: usize,
    /// The series had no sample at or before T0.
    pub born: bool,
    /// Time of the newest sample ≤ S.
    pub newest_ms: i64,
    /// Time of the first sample at the final value: the counter has not
    /// changed since.
    pub settled_since_ms: i64,
    /// Drops that look like another process's counter rather than a
    /// reset: the value fell by less than half, or climbed back above the
    /// value before the drop within three scrapes.
    pub sawtooth_drops: usize,
    /// Scrapes at which the page held the series more than once with
    /// different values (only the first is kept, as Prometheus does).
    pub duplicates: usize,
}

/// Samples at or before `s` with one per timestamp: a series written
/// twice on one page is read by the embedded scraper as two samples at
/// the same time; the first is kept, as Prometheus keeps it. Returns the
/// samples and how many timestamps held differing values.
fn dedup(samples: &[(i64, f64)], s: i64) -> (Vec<(i64, f64)>, usize) {
    let mut out: Vec<(i64, f64)> = Vec::with_capacity(samples.len());
    let mut duplicates = 0;
    let mut last_dup_t = None;
    for &(t, v) in samples.iter().filter(|(t, _)| *t <= s) {
        if let Some(&(pt, pv)) = out.last()
            && pt == t
        {
            if pv.to_bits() != v.to_bits() && last_dup_t != Some(t) {
                duplicates += 1;
                last_dup_t = Some(t);
            }
            continue;
        }
        out.push((t, v));
    }
    (out, duplicates)
}

/// Samples of `series` at or before `s` that are NaN or infinite.
pub fn non_finite(series: &Series, s: i64) -> usize {
    series
        .samples
        .iter()
        .filter(|(t, v)| *t <= s && !v.is_finite())
        .count()
}

/// The increase of a counter series between `t0` and `s` (ms).
pub fn increase(series: &Series, t0: i64, s: i64) -> Option<Increase> {
    let (samples, duplicates) = dedup(&series.samples, s);
    let samples: Vec<(i64, f64)> = samples.into_iter().filter(|(_, v)| v.is_finite()).collect();
    let (newest_ms, _) = *samples.last()?;
    let start = samples.iter().rposition(|(t, _)| *t <= t0);
    let born = start.is_none();
    let window = &samples[start.unwrap_or(0)..];
    let mut delta = if born { window[0].1 } else { 0.0 };
    let mut drops = 0;
    let mut sawtooth = 0;
    let mut settled_since_ms = window[0].0;
    for (j, pair) in window.windows(2).enumerate() {
        let ((_, a), (t, b)) = (pair[0], pair[1]);
        if b < a {
            drops += 1;
            let mut prev = b;
            let climbs_back = window[j + 2..]
                .iter()
                .take(3)
                .take_while(|(_, v)| {
                    let ok = *v >= prev;
                    prev = *v;
                    ok
                })
                .any(|(_, v)| *v > a);
            if b > a / 2.0 || climbs_back {
                sawtooth += 1;
            }
            delta += b;
        } else {
            delta += b - a;
        }
        if b != a {
            settled_since_ms = t;
        }
    }
    Some(Increase {
        delta,
        drops,
        samples: window.len(),
        born,
        newest_ms,
        settled_since_ms,
        sawtooth_drops: sawtooth,
        duplicates,
    })
}

/// The value of `le` as a number (`+Inf` included).
pub fn le_of(series: &Series) -> Option<f64> {
    let le = series.labels.get("le")?;
    match le.as_str() {
        "+Inf" | "Inf" | "inf" => Some(f64::INFINITY),
        v => v.parse().ok(),
    }
}

/// Cumulative bucket increases summed over series: `(le, count)` in
/// ascending `le`. Series whose increase is unknown are skipped.
pub fn bucket_increases(buckets: &[Series], t0: i64, s: i64) -> Vec<(f64, f64)> {
    let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for b in buckets {
        let (Some(le), Some(inc)) = (le_of(b), increase(b, t0, s)) else {
            continue;
        };
        let e = by_le.entry(le.to_bits_ordered()).or_insert((le, 0.0));
        e.1 += inc.delta;
    }
    by_le.into_values().collect()
}

/// Orders floats by value through their bits (for positive values and
/// infinity, which is all `le` holds).
trait OrderedBits {
    fn to_bits_ordered(self) -> u64;
}

impl OrderedBits for f64 {
    fn to_bits_ordered(self) -> u64 {
        if self < 0.0 { 0 } else { self.to_bits() }
    }
}

/// The bucket `(lower, upper]` holding rank `q` of `buckets`.
pub fn bucket_of_quantile(buckets: &[(f64, f64)], q: f64) -> Option<(f64, f64)> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = 0.0;
    for &(le, count) in buckets {
        if count >= rank {
            return Some((lower, le));
        }
        lower = le;
    }
    None
}

/// Interpolates a quantile inside its bucket the way `histogram_quantile`
/// does; a quantile in the `+Inf` bucket is the top finite bound.
pub fn interpolated_quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let in_bucket = count - below;
            if in_bucket <= 0.0 {
                return Some(le);
            }
            return Some(lower + (le - lower) * (rank - below) / in_bucket);
        }
        lower = le;
        below = count;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(samples: &[(i64, f64)]) -> Series {
        Series {
            name: "x".into(),
            labels: Default::default(),
            samples: samples.to_vec(),
        }
    }

    #[test]
    fn increase_from_the_baseline() {
        let s = series(&[
            (0, 5.0),
            (1000, 7.0),
            (2000, 10.0),
            (3000, 12.0),
            (4000, 20.0),
        ]);
        let i = increase(&s, 1500, 3500).unwrap();
        assert_eq!(i.delta, 5.0);
        assert!(!i.born);
        assert_eq!(i.newest_ms, 3000);
        assert_eq!(i.drops, 0);
    }

    #[test]
    fn born_during_the_run_counts_from_zero() {
        let s = series(&[(2000, 3.0), (3000, 4.0)]);
        let i = increase(&s, 1500, 5000).unwrap();
        assert_eq!(i.delta, 4.0);
        assert!(i.born);
    }

    #[test]
    fn resets_are_corrected_and_counted() {
        let s = series(&[(0, 100.0), (1000, 110.0), (2000, 3.0), (3000, 8.0)]);
        let i = increase(&s, 500, 5000).unwrap();
        assert_eq!(i.delta, 10.0 + 3.0 + 5.0);
        assert_eq!((i.drops, i.sawtooth_drops), (1, 0));
        assert_eq!(i.settled_since_ms, 3000);
    }

    #[test]
    fn interleaved_registries_saw_tooth() {
        let s = series(&[
            (0, 10.0),
            (1000, 30.0),
            (2000, 25.0),
            (3000, 50.0),
            (4000, 44.0),
        ]);
        let i = increase(&s, 0, 5000).unwrap();
        assert_eq!((i.drops, i.sawtooth_drops), (2, 2));
        // A reset: falls far and stays below the old value.
        let r = series(&[
            (0, 10.0),
            (1000, 140.0),
            (2000, 35.0),
            (3000, 105.0),
            (4000, 30.0),
        ]);
        let i = increase(&r, 0, 5000).unwrap();
        assert_eq!((i.drops, i.sawtooth_drops), (2, 0));
    }

    #[test]
    fn a_series_written_twice_on_a_page_is_not_a_drop() {
        // Two collectors export the same series: every scrape holds it
        // twice, the second copy lower.
        let s = series(&[
            (0, 10.0),
            (0, 3.0),
            (1000, 20.0),
            (1000, 4.0),
            (2000, 30.0),
            (2000, 5.0),
        ]);
        let i = increase(&s, 0, 5000).unwrap();
        assert_eq!((i.delta, i.drops, i.duplicates), (20.0, 0, 3));
        // Identical copies are harmless.
        let same = series(&[(0, 1.0), (0, 1.0), (1000, 2.0), (1000, 2.0)]);
        assert_eq!(increase(&same, 0, 5000).unwrap().duplicates, 0);
    }

    #[test]
    fn nothing_before_s_is_no_data() {
        assert!(increase(&series(&[(5000, 1.0)]), 0, 4000).is_none());
    }

    #[test]
    fn quantiles_from_buckets() {
        let b = [
            (0.1, 50.0),
            (0.5, 90.0),
            (1.0, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert_eq!(bucket_of_quantile(&b, 0.5), Some((0.0, 0.1)));
        assert_eq!(bucket_of_quantile(&b, 0.95), Some((0.5, 1.0)));
        let p = interpolated_quantile(&b, 0.7).unwrap();
        assert!((p - 0.3).abs() < 1e-9, "{p}");
        let top = [(1.0, 10.0), (f64::INFINITY, 20.0)];
        assert_eq!(interpolated_quantile(&top, 0.99), Some(1.0));
        assert_eq!(bucket_of_quantile(&top, 0.99), Some((1.0, f64::INFINITY)));
    }
}
