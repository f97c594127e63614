//! The load engine: starts requests on a schedule, records what happened,
//! stops and drains.
//!
//! The engine runs `threads` OS threads, each with a single-threaded tokio
//! runtime, its own executor (connection pools) and its own [`Recorder`].
//! Every user (closed model) or in-flight slot (open model) is a task
//! running the same worker loop; only the [`Schedule`] differs:
//!
//! - closed: a user starts at its spawn time, then waits `wait` between
//!   requests; latency runs from send to last byte;
//! - open: slot *k* is due at `T0 + k / rate`; a free worker takes the next
//!   slot and sleeps until it is due; latency runs from the *due* time, so
//!   a stalled server shows in the percentiles (no coordinated omission).
//!
//! Stopping is two tokens: `stop` ends the starting of requests, `abort`
//! (at the end of the drain) cuts off the ones in flight, which are then
//! recorded as "outcome unknown".

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::exec::{CallResult, Executor, ExecutorFactory, Scratch};
use crate::measure::{Outcome, Recorder, Window};
use crate::scenario::units::DurationRange;
use crate::scenario::{Load, LoadModel};

/// A start later than this behind its due time counts as late.
const LATE_AFTER: Duration = Duration::from_millis(5);

/// What the engine needs to know about the scenario.
#[derive(Debug, Clone)]
pub struct EnginePlan {
    pub load: Load,
    /// Request weights, indexed like the scenario's requests.
    pub weights: Vec<u32>,
    /// Engine threads; each has its own runtime and connection pools.
    pub threads: usize,
}

/// How far the open-model schedule was kept.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScheduleStats {
    /// Requests started more than 5 ms after their due time.
    pub late_starts: u64,
    /// Requests due before the end that never started.
    pub dropped: u64,
    /// The largest delay between due time and start, in µs.
    pub max_lag_us: u64,
}

/// What one run produced.
#[derive(Debug)]
pub struct EngineOutput {
    pub totals: Recorder,
    pub windows: Vec<Window>,
    /// Wall-clock time of the load start (T0).
    pub t0: SystemTime,
    /// From T0 until starting stopped.
    pub load_time: Duration,
    /// From T0 until the drain ended (T1).
    pub elapsed: Duration,
    pub interrupted: bool,
    /// Open model only.
    pub schedule: Option<ScheduleStats>,
}

/// Live figures handed to the progress display once a second.
#[derive(Debug, Clone)]
pub struct Progress<'a> {
    pub elapsed: Duration,
    pub planned: Option<Duration>,
    /// "12/20 users" or "200/s".
    pub load: String,
    pub window: &'a Window,
    pub window_len: Duration,
    pub completed: u64,
    pub draining: bool,
}

/// Picks request indices in proportion to their weights.
#[derive(Debug, Clone)]
struct WeightedChoice {
    cumulative: Vec<u32>,
}

impl WeightedChoice {
    fn new(weights: &[u32]) -> Self {
        let mut sum = 0;
        Self {
            cumulative: weights
                .iter()
                .map(|w| {
                    sum += w;
                    sum
                })
                .collect(),
        }
    }

    fn pick(&self, rng: &mut fastrand::Rng) -> usize {
        match self.cumulative.len() {
            1 => 0,
            _ => {
                let x = rng.u32(0..*self.cumulative.last().expect("at least one request"));
                self.cumulative.partition_point(|&c| c <= x)
            }
        }
    }
}

/// State shared by every worker of a run.
struct Shared {
    t0: Instant,
    stop: CancellationToken,
    /// Mirrors `stop` for the per-request check: reading a token takes
    /// its lock, which threads would contend for.
    stopping: AtomicBool,
    abort: CancellationToken,
    /// Requests claimed so far, against `load.iterations`.
    claimed: AtomicU64,
    iterations: Option<u64>,
    /// Open model: when the last due slot is.
    end: Option<Instant>,
    interval: Option<Duration>,
    late: AtomicU64,
    max_lag_us: AtomicU64,
}

impl Shared {
    /// Stops the starting of requests.
    fn halt(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.stop.cancel();
    }
}

/// When a worker starts its next request.
enum Schedule {
    Closed {
        /// The user's spawn time, before its first request.
        spawn_at: Option<Instant>,
        wait: DurationRange,
    },
    Open,
}

impl Schedule {
    /// Waits for the next start and returns the instant latency is measured
    /// from, or `None` when this worker is done.
    async fn next(&mut self, sh: &Shared, rng: &mut fastrand::Rng) -> Option<Instant> {
        match self {
            Schedule::Closed { spawn_at, wait } => {
                let until = match spawn_at.take() {
                    Some(t) => Some(t),
                    None => {
                        let d = wait.sample(rng);
                        (!d.is_zero()).then(|| Instant::now() + d)
                    }
                };
                if let Some(until) = until {
                    tokio::select! {
                        biased;
                        _ = sh.stop.cancelled() => return None,
                        _ = tokio::time::sleep_until(until.into()) => {}
                    }
                } else if sh.stopping.load(Ordering::Relaxed) {
                    return None;
                }
                if let Some(limit) = sh.iterations
                    && sh.claimed.fetch_add(1, Ordering::Relaxed) >= limit
                {
                    // Users still waiting to spawn or between requests
                    // have nothing left to do.
                    sh.halt();
                    return None;
                }
                Some(Instant::now())
            }
            Schedule::Open => {
                let slot = sh.claimed.fetch_add(1, Ordering::Relaxed);
                if sh.iterations.is_some_and(|limit| slot >= limit) {
                    return None;
                }
                let interval = sh.interval.expect("open model has an interval");
                let due = sh.t0 + interval.mul_f64(slot as f64);
                if sh.end.is_some_and(|end| due >= end) {
                    return None;
                }
                tokio::select! {
                    biased;
                    _ = sh.stop.cancelled() => return None,
                    _ = tokio::time::sleep_until(due.into()) => {}
                }
                let lag = Instant::now().saturating_duration_since(due);
                if lag > LATE_AFTER {
                    sh.late.fetch_add(1, Ordering::Relaxed);
                    sh.max_lag_us
                        .fetch_max(lag.as_micros() as u64, Ordering::Relaxed);
                }
                Some(due)
            }
        }
    }
}

/// The one worker loop: next start, pick, send, record.
async fn worker<E: Executor>(
    exec: Rc<E>,
    sh: Arc<Shared>,
    rec: Arc<Mutex<Recorder>>,
    choice: Rc<WeightedChoice>,
    mut schedule: Schedule,
    seed: u64,
) {
    let mut scratch = Scratch::new(seed);
    // One long-lived wait on `abort`, so a request does not register and
    // unregister a waiter each time.
    let abort = sh.abort.clone().cancelled_owned();
    tokio::pin!(abort);
    while let Some(from) = schedule.next(&sh, &mut scratch.rng).await {
        let index = choice.pick(&mut scratch.rng);
        let result = tokio::select! {
            biased;
            _ = &mut abort => {
                lock(&rec).record_unknown(index);
                return;
            }
            r = exec.execute(index, &mut scratch) => r,
        };
        let latency = from.elapsed();
        match result {
            CallResult::Status(s) => {
                let outcome = Outcome::Status(s);
                let ok = exec.accepts(index, outcome);
                lock(&rec).record(index, outcome, ok, latency);
            }
            CallResult::Grpc {
                code,
                sent,
                received,
            } => {
                let outcome = Outcome::Grpc(code);
                let ok = exec.accepts(index, outcome);
                let mut rec = lock(&rec);
                rec.record(index, outcome, ok, latency);
                rec.record_messages(index, sent, received);
            }
            CallResult::Failed(kind, msg) => lock(&rec).record_error(index, kind, latency, || msg),
        }
    }
}

fn lock(m: &Mutex<Recorder>) -> std::sync::MutexGuard<'_, Recorder> {
    // A poisoned recorder still holds valid counts.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the load until its end, `interrupt`, or iterations run out, then
/// drains. `on_progress` is called once a second.
pub async fn run<F: ExecutorFactory + Clone>(
    factory: F,
    plan: &EnginePlan,
    interrupt: CancellationToken,
    abort_now: CancellationToken,
    mut on_progress: impl FnMut(&Progress),
) -> Result<EngineOutput, String> {
    let n_requests = plan.weights.len();
    let threads = plan.threads.max(1);
    let load = &plan.load;
    // Build executors before T0 so client set-up is not load time.
    let mut executors = Vec::new();
    for _ in 0..threads {
        executors.push(factory.build()?);
    }
    drop(executors);

    let t0 = Instant::now();
    let t0_wall = SystemTime::now();
    let (interval, end) = match load.model {
        LoadModel::Open { rate, .. } => (Some(rate.interval()), load.duration.map(|d| t0 + d)),
        LoadModel::Closed { .. } => (None, None),
    };
    let sh = Arc::new(Shared {
        t0,
        stop: CancellationToken::new(),
        stopping: AtomicBool::new(false),
        abort: CancellationToken::new(),
        claimed: AtomicU64::new(0),
        iterations: load.iterations,
        end,
        interval,
        late: AtomicU64::new(0),
        max_lag_us: AtomicU64::new(0),
    });
    let recorders: Vec<Arc<Mutex<Recorder>>> = (0..threads)
        .map(|_| Arc::new(Mutex::new(Recorder::new(n_requests))))
        .collect();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<Result<(), String>>(threads);
    let mut handles = Vec::new();
    for (thread, rec) in recorders.iter().enumerate() {
        let factory = factory.clone();
        let sh = sh.clone();
        let rec = rec.clone();
        let done = done_tx.clone();
        let weights = plan.weights.clone();
        let model = load.model.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("redproof-load-{thread}"))
                .spawn(move || {
                    let r = run_thread(&factory, thread, threads, sh, rec, &weights, &model);
                    let _ = done.blocking_send(r);
                })
                .map_err(|e| format!("cannot start an engine thread: {e}"))?,
        );
    }
    drop(done_tx);

    let mut totals = Recorder::new(n_requests);
    let mut windows = Vec::new();
    let mut window = Recorder::new(n_requests);
    let mut last_flush = t0;
    let mut next_tick = t0 + Duration::from_secs(1);
    let mut stopped_at: Option<Instant> = None;
    let mut drain_deadline: Option<Instant> = None;
    let mut interrupted = false;
    let mut finished = 0;
    let mut thread_error = None;
    let far = t0 + Duration::from_secs(86_400 * 365);

    let flush = |now: Instant,
                 window: &mut Recorder,
                 totals: &mut Recorder,
                 windows: &mut Vec<Window>,
                 last_flush: &mut Instant| {
        window.reset();
        for r in &recorders {
            let mut g = lock(r);
            window.merge(&g);
            g.reset();
        }
        totals.merge(window);
        let w = Window::of(now.duration_since(t0).as_secs_f64(), window);
        let len = now.duration_since(*last_flush);
        *last_flush = now;
        windows.push(w);
        len
    };

    while finished < threads {
        let load_end = match (stopped_at, load.duration) {
            (None, Some(d)) => t0 + d,
            _ => far,
        };
        let wake = next_tick.min(load_end).min(drain_deadline.unwrap_or(far));
        tokio::select! {
            r = done_rx.recv() => match r {
                Some(r) => {
                    finished += 1;
                    if let Err(e) = r {
                        thread_error.get_or_insert(e);
                        sh.halt();
                        sh.abort.cancel();
                    }
                }
                None => break,
            },
            _ = interrupt.cancelled(), if !interrupted => {
                interrupted = true;
                if stopped_at.is_none() {
                    stopped_at = Some(Instant::now());
                    drain_deadline = Some(Instant::now() + load.drain);
                    sh.halt();
                }
            }
            _ = abort_now.cancelled(), if !sh.abort.is_cancelled() => {
                sh.halt();
                sh.abort.cancel();
                stopped_at.get_or_insert_with(Instant::now);
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if stopped_at.is_none() && now >= load_end {
                    stopped_at = Some(now);
                    drain_deadline = Some(now + load.drain);
                    sh.halt();
                }
                if drain_deadline.is_some_and(|d| now >= d) {
                    sh.abort.cancel();
                    drain_deadline = None;
                }
                if now >= next_tick {
                    let len = flush(now, &mut window, &mut totals, &mut windows, &mut last_flush);
                    next_tick += Duration::from_secs(1);
                    let completed = totals.total().count();
                    on_progress(&Progress {
                        elapsed: now.duration_since(t0),
                        planned: load.duration,
                        load: describe_load(&load.model, now.duration_since(t0)),
                        window: windows.last().expect("just pushed"),
                        window_len: len,
                        completed,
                        draining: stopped_at.is_some(),
                    });
                }
            }
        }
    }
    let t1 = Instant::now();
    let stopped_at = stopped_at.unwrap_or(t1);
    for h in handles {
        let _ = h.join();
    }
    if let Some(e) = thread_error {
        return Err(e);
    }
    flush(t1, &mut window, &mut totals, &mut windows, &mut last_flush);
    if windows
        .last()
        .is_some_and(|w| w.all.count == 0 && windows.len() > 1)
    {
        windows.pop();
    }

    let schedule = interval.map(|interval| {
        // Slots due before the stop (or the planned end, whichever came
        // first: timer slop past the end must not count as a drop).
        let until = end.map_or(stopped_at, |end| stopped_at.min(end));
        let due_by_time =
            (until.duration_since(t0).as_secs_f64() / interval.as_secs_f64()).ceil() as u64;
        let due = load.iterations.map_or(due_by_time, |n| n.min(due_by_time));
        let total = totals.total();
        let started = total.count() + total.unknown;
        ScheduleStats {
            late_starts: sh.late.load(Ordering::Relaxed),
            dropped: due.saturating_sub(started),
            max_lag_us: sh.max_lag_us.load(Ordering::Relaxed),
        }
    });
    Ok(EngineOutput {
        totals,
        windows,
        t0: t0_wall,
        load_time: stopped_at.duration_since(t0),
        elapsed: t1.duration_since(t0),
        interrupted,
        schedule,
    })
}

fn describe_load(model: &LoadModel, elapsed: Duration) -> String {
    match model {
        LoadModel::Closed {
            users, spawn_rate, ..
        } => {
            let active = match spawn_rate {
                Some(r) => ((elapsed.as_secs_f64() * r.get()).floor() as u64 + 1).min(*users),
                None => *users,
            };
            format!("{active}/{users} users")
        }
        LoadModel::Open { rate, .. } => format!("{rate}"),
    }
}

fn run_thread<F: ExecutorFactory>(
    factory: &F,
    thread: usize,
    threads: usize,
    sh: Arc<Shared>,
    rec: Arc<Mutex<Recorder>>,
    weights: &[u32],
    model: &LoadModel,
) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let exec = Rc::new(factory.build()?);
        let choice = Rc::new(WeightedChoice::new(weights));
        let tracker = TaskTracker::new();
        let workers = match model {
            LoadModel::Closed { users, .. } => *users,
            LoadModel::Open { max_in_flight, .. } => *max_in_flight,
        };
        // Workers are dealt round-robin so both the spawn order and the
        // in-flight cap spread evenly over threads.
        for w in (thread as u64..workers).step_by(threads) {
            let schedule = match model {
                LoadModel::Closed {
                    spawn_rate, wait, ..
                } => Schedule::Closed {
                    spawn_at: Some(
                        sh.t0
                            + spawn_rate.map_or(Duration::ZERO, |r| r.interval().mul_f64(w as f64)),
                    ),
                    wait: *wait,
                },
                LoadModel::Open { .. } => Schedule::Open,
            };
            let seed = fastrand::u64(..) ^ w;
            tracker.spawn_local(worker(
                exec.clone(),
                sh.clone(),
                rec.clone(),
                choice.clone(),
                schedule,
                seed,
            ));
        }
        tracker.close();
        tracker.wait().await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_choice_follows_weights() {
        let c = WeightedChoice::new(&[2, 1, 1]);
        let mut rng = fastrand::Rng::with_seed(42);
        let mut counts = [0u32; 3];
        for _ in 0..100_000 {
            counts[c.pick(&mut rng)] += 1;
        }
        let share = |i: usize| counts[i] as f64 / 100_000.0;
        assert!((share(0) - 0.5).abs() < 0.01, "{counts:?}");
        assert!((share(1) - 0.25).abs() < 0.01, "{counts:?}");
        assert!((share(2) - 0.25).abs() < 0.01, "{counts:?}");
        assert_eq!(WeightedChoice::new(&[5]).pick(&mut rng), 0);
    }

    #[test]
    fn describes_ramping_users() {
        let m = LoadModel::Closed {
            users: 10,
            spawn_rate: crate::scenario::units::Rate::per_second(2.0),
            wait: DurationRange {
                min: Duration::ZERO,
                max: Duration::ZERO,
            },
        };
        assert_eq!(describe_load(&m, Duration::from_millis(1500)), "4/10 users");
        assert_eq!(describe_load(&m, Duration::from_secs(60)), "10/10 users");
    }
}
