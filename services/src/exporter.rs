//! Metric registries and the `/metrics` text, with the registry-level
//! faults applied: several worker registries answering in turn, periodic
//! resets, and a frozen endpoint.
//!
//! Families are kept with `prometheus-client`; the text is served in the
//! Prometheus 0.0.4 format the Python and Go client libraries use, so
//! counters are named in full (`…_total`) in `# HELP`/`# TYPE` lines too.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::faults::Faults;

/// Content type of the exposition text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A set of metric families registered together; one per worker registry.
pub trait Instruments: Send + Sync + 'static {
    fn register(registry: &mut Registry) -> Self
    where
        Self: Sized;
}

/// Text appended to every scrape from outside the worker registries, such
/// as a statsd_exporter's families: one process that every worker reports
/// to, so it is neither split by workers nor reset with them.
pub type SharedText = Arc<dyn Fn(&mut String) + Send + Sync>;

struct Worker<I> {
    registry: Registry,
    instruments: Arc<I>,
    /// When each counter series was first exported, in Unix seconds: the
    /// `_created` samples Python's prometheus_client adds to every
    /// counter. Each worker (and each reset registry) has its own.
    created: Mutex<std::collections::HashMap<String, f64>>,
}

impl<I: Instruments> Worker<I> {
    fn new() -> Self {
        let mut registry = Registry::default();
        let instruments = Arc::new(I::register(&mut registry));
        Self {
            registry,
            instruments,
            created: Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut created = self.created.lock().unwrap_or_else(|p| p.into_inner());
        with_created(&to_text_format(&text), |series| {
            *created.entry(series.to_owned()).or_insert(now)
        })
    }
}

struct State<I> {
    workers: Vec<Worker<I>>,
    next_scrape: usize,
    frozen: Option<String>,
}

/// The metrics of one service.
pub struct Exporter<I: Instruments> {
    faults: Faults,
    state: Mutex<State<I>>,
    shared: Option<SharedText>,
    /// Set by the first request; starts the `frozen-metrics` timer.
    served: std::sync::atomic::AtomicBool,
    first_request: tokio::sync::Notify,
}

impl<I: Instruments> Exporter<I> {
    pub fn new(faults: &Faults) -> Arc<Self> {
        Self::with_shared_text(faults, None)
    }

    /// An exporter whose scrapes also carry `shared`.
    pub fn with_shared_text(faults: &Faults, shared: Option<SharedText>) -> Arc<Self> {
        let n = faults.workers.unwrap_or(1);
        Arc::new(Self {
            faults: faults.clone(),
            state: Mutex::new(State {
                workers: (0..n).map(|_| Worker::new()).collect(),
                next_scrape: 0,
                frozen: None,
            }),
            shared,
            served: std::sync::atomic::AtomicBool::new(false),
            first_request: tokio::sync::Notify::new(),
        })
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<I>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The instruments of the worker that handles the next request: a
    /// random one, as when worker processes race to accept connections.
    /// The race is uneven, as with gunicorn's sync workers: worker `i`
    /// wins in proportion to `i + 1`, so the registries hold different
    /// counts and the scraped counters saw-tooth.
    pub fn instruments(&self) -> Arc<I> {
        if !self.served.swap(true, std::sync::atomic::Ordering::Relaxed) {
            self.first_request.notify_one();
        }
        let s = self.state();
        let n = s.workers.len();
        let i = if n == 1 {
            0
        } else {
            let mut ticket = fastrand::usize(..n * (n + 1) / 2);
            let mut i = 0;
            while ticket > i {
                ticket -= i + 1;
                i += 1;
            }
            i
        };
        s.workers[i].instruments.clone()
    }

    /// The text a scrape gets: the next worker's registry, or the frozen
    /// text.
    pub fn scrape(&self) -> String {
        let mut s = self.state();
        if let Some(f) = &s.frozen {
            return f.clone();
        }
        let i = s.next_scrape % s.workers.len();
        s.next_scrape = s.next_scrape.wrapping_add(1);
        let mut text = s.workers[i].encode();
        if let Some(shared) = &self.shared {
            shared(&mut text);
        }
        text
    }

    /// Starts the timers of the `reset-every` and `frozen-metrics` faults.
    pub fn spawn_fault_timers(self: &Arc<Self>, shutdown: CancellationToken) {
        if let Some(every) = self.faults.reset_every {
            let me = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at((Instant::now() + every).into(), every);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tick.tick() => {
                            let mut s = me.state();
                            let n = s.workers.len();
                            s.workers = (0..n).map(|_| Worker::new()).collect();
                        }
                    }
                }
            });
        }
        if let Some(after) = self.faults.frozen_after {
            let me = self.clone();
            tokio::spawn(async move {
                let freeze = async {
                    me.first_request.notified().await;
                    tokio::time::sleep(after.max(Duration::ZERO)).await;
                };
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = freeze => {
                        let text = me.scrape();
                        me.state().frozen = Some(text);
                    }
                }
            });
        }
    }
}

/// Converts OpenMetrics text from `prometheus-client` into the 0.0.4
/// format: no `# EOF`, and counter families named with their `_total`.
fn to_text_format(open_metrics: &str) -> String {
    let mut lines: Vec<String> = Vec::new();
    for line in open_metrics.lines() {
        if line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            let help_prefix = format!("# HELP {name} ");
            if let Some(prev) = lines.last_mut()
                && let Some(help) = prev.strip_prefix(&help_prefix)
            {
                *prev = format!("# HELP {name}_total {help}");
            }
            lines.push(format!("# TYPE {name}_total counter"));
            continue;
        }
        lines.push(line.to_owned());
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// Adds a `<name>_created{labels} <time>` sample after each counter
/// family, one per `<name>_total` series, as prometheus_client does.
fn with_created(text: &str, mut created: impl FnMut(&str) -> f64) -> String {
    let mut out = String::new();
    let mut family: Option<String> = None;
    let mut pending: Vec<String> = Vec::new();
    let flush = |out: &mut String, pending: &mut Vec<String>| {
        for l in pending.drain(..) {
            out.push_str(&l);
            out.push('\n');
        }
    };
    for line in text.lines() {
        if line.starts_with('#') {
            flush(&mut out, &mut pending);
            family = line
                .strip_prefix("# TYPE ")
                .and_then(|r| r.strip_suffix(" counter"))
                .and_then(|n| n.strip_suffix("_total"))
                .map(str::to_owned);
        } else if let Some(base) = &family
            && let Some(rest) = line
                .strip_prefix(base.as_str())
                .and_then(|r| r.strip_prefix("_total"))
        {
            let labels = rest.split_whitespace().next().unwrap_or("");
            let labels = if labels.starts_with('{') { labels } else { "" };
            let t = created(&format!("{base}{labels}"));
            pending.push(format!("{base}_created{labels} {t:.3}"));
        }
        out.push_str(line);
        out.push('\n');
    }
    flush(&mut out, &mut pending);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    struct One {
        c: Counter,
    }

    impl Instruments for One {
        fn register(r: &mut Registry) -> Self {
            let c = Counter::default();
            r.register("demo_requests", "Requests", c.clone());
            Self { c }
        }
    }

    #[test]
    fn counters_use_full_names_and_workers_answer_in_turn() {
        let e = Exporter::<One>::new(&Faults {
            workers: Some(2),
            ..Default::default()
        });
        for _ in 0..100 {
            e.instruments().c.inc();
        }
        let a = e.scrape();
        let b = e.scrape();
        assert!(a.contains("# TYPE demo_requests_total counter"), "{a}");
        assert!(
            a.lines()
                .any(|l| l == "# HELP demo_requests_total Requests."),
            "{a}"
        );
        assert!(!a.contains("# EOF"));
        let value = |t: &str| -> u64 {
            t.lines()
                .find_map(|l| l.strip_prefix("demo_requests_total "))
                .unwrap()
                .parse()
                .unwrap()
        };
        assert_eq!(
            value(&a) + value(&b),
            100,
            "each scrape answers from one worker"
        );
        assert!(value(&a) > 0 && value(&b) > 0);
    }
}
