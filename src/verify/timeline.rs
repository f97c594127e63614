//! The server's RED over the run, one point per scrape interval, for the
//! HTML report to draw over the client's one-second windows. Computed
//! from the same raw samples the checks read (the embedded scraper's
//! scrapes, or Prometheus' stored samples through range selectors), with
//! resets corrected as the counts are, never through `rate()`.

use serde::{Deserialize, Serialize};

use super::counters;
use crate::metrics::Series;

/// More points than a chart can show are merged into wider intervals.
const MAX_POINTS: i64 = 600;

/// The server's figures over one interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerPoint {
    /// Seconds from the load start (T0) to the end of the interval.
    pub t: f64,
    /// Requests the server counted, per second.
    pub rps: f64,
    /// Server errors (5xx, gRPC codes that blame the server) per second,
    /// when the metric tells statuses apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors_per_s: Option<f64>,
    /// The 95th percentile interpolated in the interval's bucket
    /// increases, seconds; absent without a histogram or without traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_s: Option<f64>,
}

/// The intervals `(start, end]` (ms) covering `t0..t1`, one scrape
/// interval wide (at least a second), and fewer than [`MAX_POINTS`].
pub fn intervals(t0: i64, t1: i64, interval_ms: i64) -> Vec<(i64, i64)> {
    if t1 <= t0 {
        return Vec::new();
    }
    let step = interval_ms
        .max(1000)
        .max((t1 - t0 + MAX_POINTS - 1) / MAX_POINTS);
    let n = (t1 - t0 + step - 1) / step;
    (0..n)
        .map(|i| (t0 + i * step, t0 + (i + 1) * step))
        .collect()
}

/// The points of `intervals` from the request counters: all of them for
/// the rate, those `is_error` picks for the errors (`None`: the metric
/// does not tell statuses apart).
pub fn counted<'a>(
    series: impl Iterator<Item = &'a Series> + Clone,
    is_error: Option<&dyn Fn(&Series) -> bool>,
    t0: i64,
    intervals: &[(i64, i64)],
) -> Vec<ServerPoint> {
    intervals
        .iter()
        .map(|&(start, end)| {
            let secs = (end - start) as f64 / 1000.0;
            let delta = |s: &Series| counters::increase(s, start, end).map_or(0.0, |i| i.delta);
            ServerPoint {
                t: (end - t0) as f64 / 1000.0,
                rps: series.clone().map(delta).fold(0.0, |a, x| a + x) / secs,
                errors_per_s: is_error.map(|is_error| {
                    series
                        .clone()
                        .filter(|s| is_error(s))
                        .map(delta)
                        .fold(0.0, |a, x| a + x)
                        / secs
                }),
                p95_s: None,
            }
        })
        .collect()
}

/// Adds each interval's 95th percentile from the histogram's bucket
/// series (`unit`: seconds per unit of the metric).
pub fn add_p95(
    points: &mut [ServerPoint],
    buckets: &[Series],
    unit: f64,
    intervals: &[(i64, i64)],
) {
    for (p, &(start, end)) in points.iter_mut().zip(intervals) {
        let b = counters::bucket_increases(buckets, start, end);
        p.p95_s = counters::interpolated_quantile(&b, 0.95).map(|q| q * unit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promql::Labels;

    fn series(le: Option<&str>, samples: &[(i64, f64)]) -> Series {
        let mut labels = Labels::new();
        if let Some(le) = le {
            labels.insert("le".into(), le.into());
        }
        Series {
            name: "x".into(),
            labels,
            samples: samples.to_vec(),
        }
    }

    #[test]
    fn intervals_follow_the_scrape_interval_and_stay_bounded() {
        assert_eq!(
            intervals(0, 3000, 1000),
            [(0, 1000), (1000, 2000), (2000, 3000)]
        );
        assert_eq!(intervals(0, 2500, 2000), [(0, 2000), (2000, 4000)]);
        assert!(intervals(0, 3_600_000, 1000).len() <= MAX_POINTS as usize);
        assert!(intervals(5, 5, 1000).is_empty());
    }

    #[test]
    fn rates_come_from_raw_samples_with_resets_corrected() {
        let ok = series(
            None,
            &[(-500, 10.0), (500, 20.0), (1500, 40.0), (2500, 5.0)],
        );
        let err = series(None, &[(-500, 0.0), (500, 1.0), (1500, 1.0), (2500, 3.0)]);
        let both = [ok, err.clone()];
        let is_err = |s: &Series| *s == err;
        let p = counted(both.iter(), Some(&is_err), 0, &intervals(0, 3000, 1000));
        // (0,1000]: 10 + 1; (1000,2000]: 20 + 0; (2000,3000]: reset, 5 + 2.
        let rps: Vec<f64> = p.iter().map(|p| p.rps).collect();
        assert_eq!(rps, [11.0, 20.0, 7.0]);
        let errors: Vec<Option<f64>> = p.iter().map(|p| p.errors_per_s).collect();
        assert_eq!(errors, [Some(1.0), Some(0.0), Some(2.0)]);
        assert_eq!(p[2].t, 3.0);
    }

    #[test]
    fn p95_is_interpolated_per_interval() {
        let buckets = [
            series(Some("0.1"), &[(-500, 0.0), (500, 100.0), (1500, 100.0)]),
            series(Some("1"), &[(-500, 0.0), (500, 100.0), (1500, 200.0)]),
            series(Some("+Inf"), &[(-500, 0.0), (500, 100.0), (1500, 200.0)]),
        ];
        let iv = intervals(0, 2000, 1000);
        let mut p = counted(std::iter::empty(), None, 0, &iv);
        add_p95(&mut p, &buckets, 1.0, &iv);
        assert!((p[0].p95_s.unwrap() - 0.095).abs() < 1e-9);
        // Every request of the second interval fell in (0.1, 1].
        assert!((p[1].p95_s.unwrap() - 0.955).abs() < 1e-9);
    }
}
