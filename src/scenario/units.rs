//! Human-friendly quantities used in scenario files: durations (`250ms`,
//! `1m30s`), rates (`200/s`, `30/m`) and counts (`10k`, `1M`).
//!
//! Each parser returns a message that says what was expected, so scenario
//! validation can put it next to the offending value.

use std::fmt;
use std::time::Duration;

/// The longest duration a scenario may give: longer ones are typing
/// mistakes, and keeping every duration within a year keeps every instant
/// redproof computes from them representable.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// The slowest rate: one event a year.
const MIN_RATE: f64 = 1.0 / (365.0 * 86_400.0);

/// The fastest rate one redproof is asked for; far beyond what a machine
/// sends, so anything above is a typing mistake.
const MAX_RATE: f64 = 1e8;

/// Parses `250ms`, `2s`, `1.5s`, `1m30s`, `2h`, `500us`. A bare number is
/// rejected: a unit-less duration is a classic source of 1000× mistakes.
/// At most [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let expected =
        || format!("expected a duration such as `250ms`, `2s`, `1m30s` or `1h`, got `{text}`");
    let s = text.trim();
    if s.is_empty() {
        return Err(expected());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(expected)?;
        if num_len == 0 {
            return Err(expected());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| expected())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(expected()),
        };
        total += value * seconds;
    }
    match Duration::try_from_secs_f64(total) {
        Ok(d) if d <= MAX_DURATION => Ok(d),
        _ => Err(format!(
            "`{text}` is longer than the longest duration redproof accepts, 365 days (`8760h`)"
        )),
    }
}

/// A range of durations, `50ms..200ms`, or a single duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationRange {
    /// Shortest value, inclusive.
    pub min: Duration,
    /// Longest value, inclusive; equal to `min` for a constant.
    pub max: Duration,
}

impl DurationRange {
    /// Parses `1s` or `50ms..200ms`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.split_once("..") {
            None => {
                let d = parse_duration(text)?;
                Ok(Self { min: d, max: d })
            }
            Some((a, b)) => {
                let min = parse_duration(a)?;
                let max = parse_duration(b)?;
                if min > max {
                    return Err(format!(
                        "the range `{text}` starts after it ends; write it as `low..high`"
                    ));
                }
                Ok(Self { min, max })
            }
        }
    }

    /// Draws a value uniformly from the range.
    pub fn sample(&self, rng: &mut fastrand::Rng) -> Duration {
        if self.min == self.max {
            return self.min;
        }
        let lo = self.min.as_nanos() as u64;
        let hi = self.max.as_nanos() as u64;
        Duration::from_nanos(rng.u64(lo..=hi))
    }
}

/// Events per second. Always positive and finite.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate(f64);

impl Rate {
    /// Parses `200/s`, `30/m`, `1000/h` or a bare number meaning per second.
    pub fn parse(text: &str) -> Result<Self, String> {
        let expected = || format!("expected a rate such as `200/s`, `30/m` or `50`, got `{text}`");
        let s = text.trim();
        let (num, per) = match s.split_once('/') {
            Some((n, unit)) => {
                let per = match unit.trim() {
                    "s" | "sec" | "second" => 1.0,
                    "m" | "min" | "minute" => 60.0,
                    "h" | "hour" => 3600.0,
                    _ => return Err(expected()),
                };
                (n.trim(), per)
            }
            None => (s, 1.0),
        };
        let value = parse_count_f64(num).ok_or_else(expected)?;
        let per_second = value / per;
        if per_second <= 0.0 {
            return Err(format!("a rate must be above zero, got `{text}`"));
        }
        if per_second < MIN_RATE {
            return Err(format!(
                "`{text}` is slower than the slowest rate redproof accepts, one a year"
            ));
        }
        Self::per_second(per_second).ok_or_else(|| {
            format!("`{text}` is faster than the fastest rate redproof accepts, 100M/s")
        })
    }

    /// A rate from a per-second figure; `None` unless between one a year
    /// and 100M/s.
    pub fn per_second(value: f64) -> Option<Self> {
        (MIN_RATE..=MAX_RATE)
            .contains(&value)
            .then_some(Self(value))
    }

    /// The rate in events per second.
    pub fn get(self) -> f64 {
        self.0
    }

    /// Time between two events at this rate.
    pub fn interval(self) -> Duration {
        Duration::from_secs_f64(1.0 / self.0)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.fract() == 0.0 {
            write!(f, "{}/s", self.0 as u64)
        } else {
            write!(f, "{:.3}/s", self.0)
        }
    }
}

fn parse_count_f64(text: &str) -> Option<f64> {
    let s = text.trim().replace('_', "");
    let (digits, mult) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1e3),
        'M' => (&s[..s.len() - 1], 1e6),
        'G' => (&s[..s.len() - 1], 1e9),
        _ => (&s[..], 1.0),
    };
    let v: f64 = digits.parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v * mult)
}

/// Parses a whole count: `100`, `10k`, `1.5M`, `1_000`.
pub fn parse_count(text: &str) -> Result<u64, String> {
    let expected = || format!("expected a whole number such as `100`, `10k` or `1M`, got `{text}`");
    let v = parse_count_f64(text).ok_or_else(expected)?;
    if v.fract() != 0.0 || v > u64::MAX as f64 {
        return Err(expected());
    }
    Ok(v as u64)
}

/// Parses a size in bytes between `1k` and `4G`: `64M`, `16k`, `2_000_000`.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let n = parse_count(text)?;
    if (1000..=4_000_000_000).contains(&n) {
        Ok(n as usize)
    } else {
        Err(format!(
            "expected bytes between `1k` and `4G`, got `{text}`"
        ))
    }
}

/// The most users, or requests in flight, one redproof runs: each holds a
/// task, buffers and a connection per target, so beyond this a machine runs
/// out of memory or sockets long before the load is useful.
pub const MAX_CONCURRENCY: u64 = 1_000_000;

/// Parses a user count or in-flight cap: a count of at most
/// [`MAX_CONCURRENCY`].
pub fn parse_concurrency(text: &str) -> Result<u64, String> {
    let n = parse_count(text)?;
    if n > MAX_CONCURRENCY {
        return Err(format!(
            "`{text}` is more than one redproof runs at once (1M); split the load over several redproof processes"
        ));
    }
    Ok(n)
}

/// A count with `,` between thousands: `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Formats a duration the way the report prints latencies: `812µs`,
/// `12.3ms`, `1.25s`.
pub fn format_micros(us: u64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 10_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("500us").unwrap(), Duration::from_micros(500));
        for bad in ["", "10", "ms", "5 parsecs", "1x", "-1s"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("expected a duration"), "{bad}: {err}");
        }
    }

    #[test]
    fn durations_and_rates_stay_in_range() {
        assert_eq!(parse_duration("8760h").unwrap(), MAX_DURATION);
        for huge in [
            "99999999999999999999s",
            "3000000000000000h",
            "8761h",
            "1e400s",
        ] {
            let err = parse_duration(huge).unwrap_err();
            assert!(
                err.contains("365 days") || err.contains("expected a duration"),
                "{huge}: {err}"
            );
        }
        assert!(
            parse_duration("99999999999999999999s")
                .unwrap_err()
                .contains("365 days")
        );
        assert!(Rate::parse("1e-20/s").unwrap_err().contains("slowest rate"));
        assert!(Rate::parse("1e30/s").unwrap_err().contains("fastest rate"));
        assert!(Rate::parse("0/s").unwrap_err().contains("above zero"));
        assert!(Rate::parse("1/h").is_ok());
        assert!(Rate::parse("100M/s").is_ok());
        // The slowest rate's interval is still a representable duration.
        let slow = Rate::per_second(MIN_RATE).unwrap();
        assert!(slow.interval() <= MAX_DURATION + Duration::from_secs(1));
    }

    #[test]
    fn ranges() {
        let r = DurationRange::parse("50ms..200ms").unwrap();
        assert_eq!(r.min, Duration::from_millis(50));
        assert_eq!(r.max, Duration::from_millis(200));
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..1000 {
            let d = r.sample(&mut rng);
            assert!(d >= r.min && d <= r.max);
        }
        assert!(
            DurationRange::parse("2s..1s")
                .unwrap_err()
                .contains("starts after")
        );
        let c = DurationRange::parse("1s").unwrap();
        assert_eq!(c.sample(&mut rng), Duration::from_secs(1));
    }

    #[test]
    fn rates() {
        assert_eq!(Rate::parse("200/s").unwrap().get(), 200.0);
        assert_eq!(Rate::parse("30/m").unwrap().get(), 0.5);
        assert_eq!(Rate::parse("1k/s").unwrap().get(), 1000.0);
        assert_eq!(Rate::parse("50").unwrap().get(), 50.0);
        assert_eq!(
            Rate::parse("200/s").unwrap().interval(),
            Duration::from_millis(5)
        );
        assert!(Rate::parse("0/s").unwrap_err().contains("above zero"));
        assert!(Rate::parse("fast").unwrap_err().contains("expected a rate"));
        assert!(Rate::parse("10/fortnight").is_err());
    }

    #[test]
    fn counts() {
        assert_eq!(parse_count("100").unwrap(), 100);
        assert_eq!(parse_count("10k").unwrap(), 10_000);
        assert_eq!(parse_count("1.5M").unwrap(), 1_500_000);
        assert_eq!(parse_count("1_000").unwrap(), 1000);
        assert!(parse_count("1.5").is_err());
        assert!(parse_count("many").is_err());
    }

    #[test]
    fn micros_formatting() {
        assert_eq!(format_micros(812), "812µs");
        assert_eq!(format_micros(1_234), "1.23ms");
        assert_eq!(format_micros(12_345), "12.3ms");
        assert_eq!(format_micros(1_250_000), "1.25s");
    }
}
