//! Instrumentation faults: the metric bugs redproof exists to catch,
//! reproduced on demand with `--fault NAME[=VALUE]`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The faults a service runs with. The default is a healthy service.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// `workers=N`: N separate metric registries, requests spread across
    /// them unevenly (worker i takes a share ∝ i+1, as with gunicorn's
    /// sync workers) and scrapes answered by each in turn, as with
    /// gunicorn or uwsgi workers that each keep their own
    /// `prometheus_client` registry.
    pub workers: Option<usize>,
    /// `uncounted-errors`: 5xx responses and non-OK gRPC calls are not
    /// recorded, as when an exception escapes the metrics middleware.
    pub uncounted_errors: bool,
    /// `unmeasured-delay=DUR`: requests wait this long before the timer
    /// starts, like time spent in a queue the handler never sees.
    pub unmeasured_delay: Option<Duration>,
    /// `ms-as-seconds`: latency in milliseconds observed into a histogram
    /// whose unit is seconds.
    pub ms_as_seconds: bool,
    /// `reset-every=DUR`: the registry is recreated periodically, as when a
    /// process restarts.
    pub reset_every: Option<Duration>,
    /// `frozen-metrics[=AFTER]`: the metrics endpoint keeps answering with
    /// the values it had AFTER the first request (default: at once), as a
    /// cached or stuck exporter does while the service keeps serving.
    pub frozen_after: Option<Duration>,
}

/// One `--fault` flag.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    Workers(usize),
    UncountedErrors,
    UnmeasuredDelay(Duration),
    MsAsSeconds,
    ResetEvery(Duration),
    FrozenMetrics(Duration),
}

pub const FAULT_HELP: &str = "workers=N, uncounted-errors, unmeasured-delay=DUR, ms-as-seconds, reset-every=DUR, frozen-metrics[=AFTER]";

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, value) = match s.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (s.trim(), None),
        };
        let need = |what: &str| {
            value.ok_or_else(|| format!("fault `{name}` needs a value: `{name}={what}`"))
        };
        let dur = |v: &str| {
            parse_duration(v).ok_or_else(|| {
                format!("fault `{name}`: expected a duration such as `200ms`, got `{v}`")
            })
        };
        match name {
            "workers" => {
                let v = need("4")?;
                match v.parse::<usize>() {
                    Ok(n) if n >= 1 => Ok(Fault::Workers(n)),
                    _ => Err(format!(
                        "fault `workers`: expected a whole number of at least 1, got `{v}`"
                    )),
                }
            }
            "uncounted-errors" => Ok(Fault::UncountedErrors),
            "unmeasured-delay" => Ok(Fault::UnmeasuredDelay(dur(need("200ms")?)?)),
            "ms-as-seconds" => Ok(Fault::MsAsSeconds),
            "reset-every" => Ok(Fault::ResetEvery(dur(need("10s")?)?)),
            "frozen-metrics" => Ok(Fault::FrozenMetrics(
                value.map(dur).transpose()?.unwrap_or_default(),
            )),
            _ => Err(format!(
                "unknown fault `{name}`; expected one of: {FAULT_HELP}"
            )),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Workers(n) => write!(f, "workers={n}"),
            Fault::UncountedErrors => f.write_str("uncounted-errors"),
            Fault::UnmeasuredDelay(d) => write!(f, "unmeasured-delay={}ms", d.as_millis()),
            Fault::MsAsSeconds => f.write_str("ms-as-seconds"),
            Fault::ResetEvery(d) => write!(f, "reset-every={}ms", d.as_millis()),
            Fault::FrozenMetrics(d) => write!(f, "frozen-metrics={}ms", d.as_millis()),
        }
    }
}

impl Faults {
    pub fn from_flags(flags: &[Fault]) -> Self {
        let mut f = Faults::default();
        for flag in flags {
            match flag {
                Fault::Workers(n) => f.workers = Some(*n),
                Fault::UncountedErrors => f.uncounted_errors = true,
                Fault::UnmeasuredDelay(d) => f.unmeasured_delay = Some(*d),
                Fault::MsAsSeconds => f.ms_as_seconds = true,
                Fault::ResetEvery(d) => f.reset_every = Some(*d),
                Fault::FrozenMetrics(d) => f.frozen_after = Some(*d),
            }
        }
        f
    }

    /// The value to observe into a seconds histogram for `elapsed`.
    pub fn observed_seconds(&self, elapsed: Duration) -> f64 {
        if self.ms_as_seconds {
            elapsed.as_secs_f64() * 1000.0
        } else {
            elapsed.as_secs_f64()
        }
    }
}

fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let v: f64 = s[..split].parse().ok()?;
    let unit = match &s[split..] {
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(v * unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_fault() {
        assert_eq!("workers=4".parse(), Ok(Fault::Workers(4)));
        assert_eq!("uncounted-errors".parse(), Ok(Fault::UncountedErrors));
        assert_eq!(
            "unmeasured-delay=300ms".parse(),
            Ok(Fault::UnmeasuredDelay(Duration::from_millis(300)))
        );
        assert_eq!("ms-as-seconds".parse(), Ok(Fault::MsAsSeconds));
        assert_eq!(
            "reset-every=2s".parse(),
            Ok(Fault::ResetEvery(Duration::from_secs(2)))
        );
        assert_eq!(
            "frozen-metrics".parse(),
            Ok(Fault::FrozenMetrics(Duration::ZERO))
        );
        assert_eq!(
            "frozen-metrics=1s".parse(),
            Ok(Fault::FrozenMetrics(Duration::from_secs(1)))
        );
        assert!(
            "workers=0"
                .parse::<Fault>()
                .unwrap_err()
                .contains("at least 1")
        );
        assert!(
            "workers"
                .parse::<Fault>()
                .unwrap_err()
                .contains("needs a value")
        );
        assert!(
            "slow"
                .parse::<Fault>()
                .unwrap_err()
                .contains("unknown fault")
        );
        let f = Faults::from_flags(&[Fault::MsAsSeconds, Fault::Workers(2)]);
        assert_eq!(f.workers, Some(2));
        assert_eq!(f.observed_seconds(Duration::from_millis(250)), 250.0);
    }
}
