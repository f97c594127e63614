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
}

impl<I: Instruments> Worker<I> {
    fn new() -> Self {
        let mut registry = Registry::default();
        let instruments = Arc::new(I::register(&mut registry));
        Self {
            registry,
            instruments,
        }
    }

    fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        to_text_format(&text)
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
    pub fn instruments(&self) -> Arc<I> {
        let s = self.state();
        let i = if s.workers.len() == 1 {
            0
        } else {
            fastrand::usize(..s.workers.len())
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
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(after.max(Duration::ZERO)) => {
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
