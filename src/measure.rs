//! Client-side measurement: what happened to every request, and how long
//! it took.
//!
//! Each engine thread owns one [`Recorder`] (behind an uncontended mutex)
//! and records into it directly; once a second the engine merges every
//! thread's recorder into the run totals and into a one-second window, then
//! resets it, keeping its allocations. Nothing is sent per request, and a
//! recorder's size depends on the requests and outcomes seen, not on run
//! length or on the number of users.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::outcome::{Answer, Outcome, TransportError};
use crate::printable::escaped;

/// Latency histogram in microseconds, 3 significant digits, growing as
/// needed so short runs stay small.
pub fn new_histogram() -> Histogram<u64> {
    let mut h = Histogram::new(3).expect("3 significant digits is valid");
    h.auto(true);
    h
}

/// Records a latency, growing the histogram when needed.
fn record_micros(h: &mut Histogram<u64>, latency: Duration) {
    let micros = (latency.as_micros() as u64).max(1);
    if h.record(micros).is_err() {
        h.saturating_record(micros);
    }
}

/// Counts and latencies of one outcome of one request.
#[derive(Debug, Clone)]
pub struct OutcomeStats {
    pub outcome: Outcome,
    /// Whether the outcome met the request's expectation.
    pub ok: bool,
    pub histogram: Histogram<u64>,
    /// The first error message seen, for transport errors.
    pub example: Option<String>,
}

/// Everything recorded for one request name.
#[derive(Debug, Clone, Default)]
pub struct RequestStats {
    pub outcomes: Vec<OutcomeStats>,
    /// Requests cut off by the end of the drain: the server may or may not
    /// have handled them.
    pub unknown: u64,
    /// gRPC messages sent and received by completed calls.
    pub messages: MessageCounts,
    /// Requests sent a second time on a new connection after a kept-alive
    /// one closed with no answer: the server most likely saw them once,
    /// but may have seen them twice.
    pub retries: u64,
    /// With `pace`: response latency corrected for coordinated omission
    /// (each late iteration also stands for the ones it held back).
    pub corrected: Option<Histogram<u64>>,
}

/// Messages sent and received by gRPC calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageCounts {
    pub sent: u64,
    pub received: u64,
}

impl RequestStats {
    fn slot(&mut self, outcome: Outcome, ok: bool) -> &mut OutcomeStats {
        // A handful of outcomes per request: a linear scan beats hashing.
        // `ok` is part of the key: in `all`, the same status can be expected
        // by one request and an error for another.
        let i = match self
            .outcomes
            .iter()
            .position(|o| o.outcome == outcome && o.ok == ok)
        {
            Some(i) => i,
            None => {
                self.outcomes.push(OutcomeStats {
                    outcome,
                    ok,
                    histogram: new_histogram(),
                    example: None,
                });
                self.outcomes.len() - 1
            }
        };
        &mut self.outcomes[i]
    }

    /// Completed requests (every outcome, not the unknown ones).
    pub fn count(&self) -> u64 {
        self.outcomes.iter().map(|o| o.histogram.len()).sum()
    }

    /// Completed requests whose outcome did not meet the expectation.
    pub fn errors(&self) -> u64 {
        self.outcomes
            .iter()
            .filter(|o| !o.ok)
            .map(|o| o.histogram.len())
            .sum()
    }

    /// Latency over every request that got a response (an HTTP status or
    /// a gRPC code). Transport errors are left out: a refused connection
    /// takes microseconds and would make a failing service look fast.
    pub fn response_latency(&self) -> Histogram<u64> {
        let mut h = new_histogram();
        for o in &self.outcomes {
            if o.outcome.is_response() {
                h.add(&o.histogram)
                    .expect("auto-resizing histograms always merge");
            }
        }
        h
    }

    pub fn merge(&mut self, other: &RequestStats) {
        for o in &other.outcomes {
            if o.histogram.is_empty() && o.example.is_none() {
                continue;
            }
            let slot = self.slot(o.outcome, o.ok);
            slot.histogram
                .add(&o.histogram)
                .expect("auto-resizing histograms always merge");
            if slot.example.is_none() {
                slot.example.clone_from(&o.example);
            }
        }
        self.unknown += other.unknown;
        self.retries += other.retries;
        self.messages.sent += other.messages.sent;
        self.messages.received += other.messages.received;
        if let Some(theirs) = &other.corrected {
            self.corrected
                .get_or_insert_with(new_histogram)
                .add(theirs)
                .expect("auto-resizing histograms always merge");
        }
    }
}

/// Per-request statistics, indexed like the scenario's requests.
#[derive(Debug, Clone)]
pub struct Recorder {
    pub requests: Vec<RequestStats>,
    /// Open model: how far behind its due time each iteration started,
    /// in µs (0 recorded as 1).
    pub start_lag: Option<Histogram<u64>>,
}

impl Recorder {
    pub fn new(requests: usize) -> Self {
        Self {
            requests: (0..requests).map(|_| RequestStats::default()).collect(),
            start_lag: None,
        }
    }

    /// Records how late an open-model iteration started.
    pub fn record_start_lag(&mut self, lag: Duration) {
        record_micros(self.start_lag.get_or_insert_with(new_histogram), lag);
    }

    /// Records one finished request.
    pub fn record(&mut self, request: usize, outcome: Outcome, ok: bool, latency: Duration) {
        record_micros(
            &mut self.requests[request].slot(outcome, ok).histogram,
            latency,
        );
    }

    /// Records a response's latency corrected for coordinated omission
    /// against the per-user `pace`.
    pub fn record_corrected(&mut self, request: usize, latency: Duration, pace: Duration) {
        let h = self.requests[request]
            .corrected
            .get_or_insert_with(new_histogram);
        let micros = (latency.as_micros() as u64).max(1);
        let interval = (pace.as_micros() as u64).max(1);
        if h.record_correct(micros, interval).is_err() {
            h.saturating_record(micros);
        }
    }

    /// Adds the messages of one gRPC call.
    pub fn record_messages(&mut self, request: usize, sent: u64, received: u64) {
        let m = &mut self.requests[request].messages;
        m.sent += sent;
        m.received += received;
    }

    /// Records a response whose checks or captures failed, keeping the
    /// first message.
    pub fn record_check_failed(
        &mut self,
        request: usize,
        answer: Answer,
        latency: Duration,
        message: impl FnOnce() -> String,
    ) {
        let slot = self.requests[request].slot(Outcome::CheckFailed(answer), false);
        record_micros(&mut slot.histogram, latency);
        if slot.example.is_none() {
            // Messages quote servers (bodies, status messages, protocol
            // errors): escaped here, they are safe in every report.
            slot.example = Some(escaped(message()));
        }
    }

    /// Records a transport error, keeping its message when it is the first.
    pub fn record_error(
        &mut self,
        request: usize,
        kind: TransportError,
        latency: Duration,
        message: impl FnOnce() -> String,
    ) {
        let slot = self.requests[request].slot(Outcome::Transport(kind), false);
        record_micros(&mut slot.histogram, latency);
        if slot.example.is_none() {
            // Messages quote servers (bodies, status messages, protocol
            // errors): escaped here, they are safe in every report.
            slot.example = Some(escaped(message()));
        }
    }

    /// Records requests sent again after a stale connection.
    pub fn record_retries(&mut self, request: usize, n: u32) {
        self.requests[request].retries += u64::from(n);
    }

    /// Records a request cut off at the end of the drain.
    pub fn record_unknown(&mut self, request: usize) {
        self.requests[request].unknown += 1;
    }

    pub fn merge(&mut self, other: &Recorder) {
        for (mine, theirs) in self.requests.iter_mut().zip(&other.requests) {
            mine.merge(theirs);
        }
        if let Some(theirs) = &other.start_lag {
            self.start_lag
                .get_or_insert_with(new_histogram)
                .add(theirs)
                .expect("auto-resizing histograms always merge");
        }
    }

    /// Empties the recorder, keeping allocated histograms for reuse.
    pub fn reset(&mut self) {
        for r in &mut self.requests {
            for o in &mut r.outcomes {
                o.histogram.reset();
                o.example = None;
            }
            r.unknown = 0;
            r.retries = 0;
            r.messages = MessageCounts::default();
            if let Some(h) = &mut r.corrected {
                h.reset();
            }
        }
        if let Some(h) = &mut self.start_lag {
            h.reset();
        }
    }

    /// All requests together.
    pub fn total(&self) -> RequestStats {
        let mut all = RequestStats::default();
        for r in &self.requests {
            all.merge(r);
        }
        all
    }
}

/// The figures of one request (or of all) over one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowFigures {
    pub count: u64,
    pub errors: u64,
    pub p50_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    /// The window's response latency (HdrHistogram V2, µs, base64), kept
    /// by shards so `redproof merge` computes the merged percentiles
    /// exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram: Option<String>,
}

impl WindowFigures {
    /// The figures of `stats`; with `keep_histogram`, its latency too.
    pub fn of(stats: &RequestStats, keep_histogram: bool) -> Self {
        Self::from_histogram(
            stats.count(),
            stats.errors(),
            &stats.response_latency(),
            keep_histogram,
        )
    }

    fn from_histogram(count: u64, errors: u64, h: &Histogram<u64>, keep: bool) -> Self {
        let q = |q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        Self {
            count,
            errors,
            p50_us: q(0.50),
            p95_us: q(0.95),
            p99_us: q(0.99),
            histogram: keep.then(|| encode_histogram(h)),
        }
    }

    /// The figures of the same second from several runs added up, with
    /// percentiles from their merged histograms. Each part needs its
    /// histogram.
    pub fn sum<'a>(parts: impl IntoIterator<Item = &'a WindowFigures>) -> Result<Self, String> {
        let (mut count, mut errors, mut h) = (0, 0, new_histogram());
        for p in parts {
            count += p.count;
            errors += p.errors;
            let part = p
                .histogram
                .as_deref()
                .ok_or("a window has no histogram: it was not written by `run --shard`")?;
            h.add(&decode_histogram(part)?)
                .map_err(|e| format!("histograms cannot be added: {e:?}"))?;
        }
        Ok(Self::from_histogram(count, errors, &h, true))
    }
}

/// One second of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Seconds from the load start to the end of this window.
    pub t: f64,
    pub all: WindowFigures,
    /// Indexed like the scenario's requests.
    pub requests: Vec<WindowFigures>,
}

impl Window {
    /// The window recorded in `rec`, ending `t` seconds after the load
    /// start; with `keep_histograms`, with its latency histograms.
    pub fn of(t: f64, rec: &Recorder, keep_histograms: bool) -> Self {
        Self {
            t,
            all: WindowFigures::of(&rec.total(), keep_histograms),
            requests: rec
                .requests
                .iter()
                .map(|r| WindowFigures::of(r, keep_histograms))
                .collect(),
        }
    }
}

/// A histogram as HdrHistogram V2 bytes in base64, the form results
/// files carry.
pub fn encode_histogram(h: &Histogram<u64>) -> String {
    use base64::Engine as _;
    use hdrhistogram::serialization::{Serializer as _, V2Serializer};
    let mut buf = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut buf)
        .expect("serialising into memory cannot fail");
    base64::engine::general_purpose::STANDARD.encode(buf)
}

/// Reads a histogram written by [`encode_histogram`].
pub fn decode_histogram(s: &str) -> Result<Histogram<u64>, String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| format!("histogram is not base64: {e}"))?;
    let mut h: Histogram<u64> = hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("histogram cannot be read: {e:?}"))?;
    h.auto(true);
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_are_stored_escaped() {
        let mut r = Recorder::new(2);
        // A gRPC status message as a server may send it.
        r.record_error(0, TransportError::Other, Duration::ZERO, || {
            "status: \x1b]0;pwned\x07\x1b[2J".into()
        });
        r.record_check_failed(1, Answer::Status(200), Duration::ZERO, || {
            "the body is not JSON: `\u{9b}31m`".into()
        });
        assert_eq!(
            r.requests[0].outcomes[0].example.as_deref(),
            Some(r"status: \x1b]0;pwned\x07\x1b[2J")
        );
        assert_eq!(
            r.requests[1].outcomes[0].example.as_deref(),
            Some(r"the body is not JSON: `\u{9b}31m`")
        );
    }

    #[test]
    fn merging_adds_counts_and_keeps_first_example() {
        let mut a = Recorder::new(2);
        let mut b = Recorder::new(2);
        for _ in 0..10 {
            a.record(0, Outcome::Status(200), true, Duration::from_millis(5));
        }
        b.record(0, Outcome::Status(500), false, Duration::from_millis(50));
        b.record_error(
            1,
            TransportError::Refused,
            Duration::from_micros(80),
            || "refused #1".into(),
        );
        b.record_error(
            1,
            TransportError::Refused,
            Duration::from_micros(80),
            || "refused #2".into(),
        );
        b.record_unknown(1);
        a.merge(&b);
        assert_eq!(a.requests[0].count(), 11);
        assert_eq!(a.requests[0].errors(), 1);
        assert_eq!(a.requests[1].count(), 2);
        assert_eq!(a.requests[1].unknown, 1);
        assert_eq!(
            a.requests[1].outcomes[0].example.as_deref(),
            Some("refused #1")
        );
        let lat = a.requests[0].response_latency();
        assert_eq!(lat.len(), 11);
        assert!(lat.max() >= 49_000);
        // Transport errors do not enter response latency.
        assert!(a.requests[1].response_latency().is_empty());
        let total = a.total();
        assert_eq!((total.count(), total.errors(), total.unknown), (13, 3, 1));
    }

    #[test]
    fn all_keeps_each_requests_expectation() {
        // Request 0 expects 404, request 1 does not.
        let mut a = Recorder::new(2);
        a.record(0, Outcome::Status(404), true, Duration::from_millis(1));
        a.record(1, Outcome::Status(404), false, Duration::from_millis(1));
        a.record(1, Outcome::Status(404), false, Duration::from_millis(1));
        let total = a.total();
        assert_eq!((total.count(), total.errors()), (3, 2));
    }

    #[test]
    fn reset_empties_but_keeps_shape() {
        let mut a = Recorder::new(1);
        a.record(0, Outcome::Status(200), true, Duration::from_millis(1));
        a.reset();
        assert_eq!(a.requests[0].count(), 0);
        assert_eq!(a.requests[0].outcomes.len(), 1);
        let w = Window::of(1.0, &a, false);
        assert_eq!(w.all, WindowFigures::default());
    }

    #[test]
    fn window_figures_use_response_latency() {
        let mut a = Recorder::new(1);
        for ms in 1..=100 {
            a.record(0, Outcome::Status(200), true, Duration::from_millis(ms));
        }
        let f = WindowFigures::of(&a.requests[0], false);
        assert_eq!(f.count, 100);
        assert!((49_000..=51_000).contains(&f.p50_us), "{f:?}");
        assert!((94_000..=96_000).contains(&f.p95_us), "{f:?}");
    }

    #[test]
    fn window_sums_merge_histograms_exactly() {
        let (mut a, mut b, mut both) = (Recorder::new(1), Recorder::new(1), Recorder::new(1));
        for ms in 1..=60 {
            a.record(0, Outcome::Status(200), true, Duration::from_millis(ms));
            both.record(0, Outcome::Status(200), true, Duration::from_millis(ms));
        }
        for ms in 200..=240 {
            b.record(0, Outcome::Status(500), false, Duration::from_millis(ms));
            both.record(0, Outcome::Status(500), false, Duration::from_millis(ms));
        }
        let parts = [Window::of(1.0, &a, true), Window::of(1.0, &b, true)];
        let sum = WindowFigures::sum(parts.iter().map(|w| &w.requests[0])).unwrap();
        let whole = WindowFigures::of(&both.requests[0], false);
        assert_eq!(
            WindowFigures {
                histogram: None,
                ..sum.clone()
            },
            whole
        );
        assert_eq!((sum.count, sum.errors), (101, 41));
        let bare = Window::of(1.0, &a, false);
        assert!(WindowFigures::sum([&bare.all]).is_err());
    }
}
