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
//! A worker's unit of work is an *iteration*: it picks an entry by weight
//! and runs its steps in order (one step for a plain request, several for
//! a flow), with think times between them and captured values in the
//! user's variables. Before its first iteration a worker runs the
//! `on_start` steps; before each one it draws a row from every data feed.
//! With `stages`, the active users (closed) or the arrival rate (open)
//! follow a [`crate::profile`].
//!
//! Stopping is two tokens: `stop` ends the starting of iterations (a flow
//! already started runs on to its end), `abort` (at the end of the drain)
//! cuts off the requests in flight, which are then recorded as "outcome
//! unknown".

mod clock;
mod plan;
mod runtime;
mod schedule;
mod worker;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::exec::ExecutorFactory;
use crate::measure::{Recorder, Window};
use crate::profile::{RateProfile, UserProfile};
use crate::scenario::{Load, LoadModel};

pub use plan::{EnginePlan, PartPlan, StepPlan};

/// Later than any run ends: validation keeps durations within a year.
const FAR: Duration = Duration::from_secs(2 * 366 * 86_400);
use schedule::{FeedState, Shared};
use worker::lock;

/// How far the open-model schedule was kept.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScheduleStats {
    /// Requests started more than 5 ms after their due time.
    pub late_starts: u64,
    /// Requests due before the end that never started.
    pub dropped: u64,
    /// The largest delay between due time and start, in µs.
    pub max_lag_us: u64,
    /// The median delay between due time and start, in µs.
    #[serde(default)]
    pub lag_p50_us: u64,
    /// The 99th percentile of that delay, in µs.
    #[serde(default)]
    pub lag_p99_us: u64,
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
    /// Why the run stopped early, when a data feed ran out.
    pub stopped_by: Option<String>,
    /// The scenario's own condition stopped the run as failed
    /// (`on_start_failures` with `then: abort`).
    pub aborted: Option<String>,
    /// Users that stopped after failing `on_start` (`then: stop_user`).
    pub users_stopped: u64,
    /// An engine thread failed (a panic, a runtime that would not start):
    /// the run was stopped, and what it recorded until then is kept.
    pub failure: Option<String>,
    /// Each part's own timing and schedule, in the plan's order.
    pub parts: Vec<PartOutput>,
}

#[cfg(test)]
impl EngineOutput {
    /// A run that completed at T0 `t0` with one load time for its `parts`
    /// parts, all starting at T0, and drained 100 ms.
    pub(crate) fn completed(
        totals: Recorder,
        windows: Vec<Window>,
        t0: SystemTime,
        load_time: Duration,
        parts: usize,
    ) -> Self {
        Self {
            totals,
            windows,
            t0,
            load_time,
            elapsed: load_time + Duration::from_millis(100),
            interrupted: false,
            schedule: None,
            stopped_by: None,
            aborted: None,
            users_stopped: 0,
            failure: None,
            parts: vec![
                PartOutput {
                    start: Duration::ZERO,
                    load_time,
                    schedule: None,
                };
                parts
            ],
        }
    }
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
    /// Everything recorded so far.
    pub totals: &'a Recorder,
    pub completed: u64,
    pub draining: bool,
    /// Each part's load at this moment, in the plan's order.
    pub parts: &'a [PartNow],
}

/// One part's load at a moment of the run, for live metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartNow {
    /// Closed model: users running iterations (0 before the part starts
    /// and once it stopped).
    pub users: Option<u64>,
    /// Open model: the arrival rate due now, per second.
    pub rate: Option<f64>,
    /// Requests sent and not yet answered.
    pub in_flight: u64,
    /// Open model: iterations started more than 5 ms after their due time.
    pub late_starts: u64,
    /// Open model: arrivals due that have not started (all in-flight
    /// slots busy); once the part stopped, those that never will.
    pub behind: u64,
}

/// One part's figures, beside the run's.
#[derive(Debug, Clone)]
pub struct PartOutput {
    /// From T0 to the part's start.
    pub start: Duration,
    /// From the part's start until its starting stopped.
    pub load_time: Duration,
    /// Open model only.
    pub schedule: Option<ScheduleStats>,
}

/// A part while the run goes on: its shared state and where it is in
/// its life (running, draining, done).
struct PartRun {
    sh: Arc<Shared>,
    /// When it stopped starting iterations.
    stopped_at: Option<Instant>,
    /// When its requests still in flight are cut off.
    drain_deadline: Option<Instant>,
}

impl PartRun {
    /// Stops starting iterations (if not yet) and starts the drain.
    fn stop(&mut self, now: Instant, drain: Duration) {
        if self.stopped_at.is_none() {
            self.stopped_at = Some(now);
            self.drain_deadline = Some(now + drain);
        }
        self.sh.halt();
    }
}

/// Runs every part's load until its end, `interrupt`, or iterations run
/// out, then drains. `on_progress` is called once a second; when it gives
/// a reason, the run stops there as aborted (and drains).
pub async fn run<F: ExecutorFactory + Clone>(
    factory: F,
    plan: &EnginePlan,
    interrupt: CancellationToken,
    abort_now: CancellationToken,
    mut on_progress: impl FnMut(&Progress) -> Option<String>,
) -> Result<EngineOutput, String> {
    let n_requests = plan.steps.len();
    let threads = plan.threads.max(1);
    // Build executors before T0 so client set-up is not load time.
    let mut executors = Vec::new();
    for _ in 0..threads {
        executors.push(factory.build()?);
    }
    drop(executors);
    if let Some(wait) = plan
        .start_at
        .and_then(|at| at.duration_since(SystemTime::now()).ok())
    {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = interrupt.cancelled() => {}
        }
    }

    let t0 = Instant::now();
    let t0_wall = SystemTime::now();
    let changed = Arc::new(tokio::sync::Notify::new());
    let feeds = Arc::new(
        plan.feeds
            .iter()
            .map(|f| FeedState {
                feed: f.clone(),
                cursor: AtomicU64::new(0),
            })
            .collect::<Vec<_>>(),
    );
    let mut parts: Vec<PartRun> = plan
        .parts
        .iter()
        .map(|p| PartRun {
            sh: Arc::new(Shared::new(
                t0 + p.start,
                &p.load,
                feeds.clone(),
                changed.clone(),
                threads,
            )),
            stopped_at: None,
            drain_deadline: None,
        })
        .collect();
    let shared: Vec<Arc<Shared>> = parts.iter().map(|p| p.sh.clone()).collect();
    let recorders: Vec<Arc<Mutex<Recorder>>> = (0..threads)
        .map(|_| Arc::new(Mutex::new(Recorder::new(n_requests))))
        .collect();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<Result<(), String>>(threads);
    let mut handles = Vec::new();
    for (thread, rec) in recorders.iter().enumerate() {
        let factory = factory.clone();
        let shared = shared.clone();
        let rec = rec.clone();
        let done = done_tx.clone();
        let plan = plan.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("redproof-load-{thread}"))
                .spawn(move || {
                    // A panic outside the workers (building the executor,
                    // the runtime) still reports, so the run ends cleanly.
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        runtime::run_thread(&factory, thread, threads, &shared, rec, &plan)
                    }))
                    .unwrap_or_else(|p| Err(runtime::panic_message(thread, p.as_ref())));
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
    let mut interrupted = false;
    let mut finished = 0;
    let mut thread_error = None;
    let far = t0 + FAR;
    let drains: Vec<Duration> = plan.parts.iter().map(|p| p.load.drain).collect();
    let stop_all = |parts: &mut [PartRun], now: Instant| {
        for (p, drain) in parts.iter_mut().zip(&drains) {
            p.stop(now, *drain);
        }
    };

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
        let w = Window::of(
            now.duration_since(t0).as_secs_f64(),
            window,
            plan.window_histograms,
        );
        let len = now.duration_since(*last_flush);
        *last_flush = now;
        windows.push(w);
        len
    };

    while finished < threads {
        let load_end = |p: &PartRun, part: &PartPlan| match (p.stopped_at, part.load.duration) {
            (None, Some(d)) => p.sh.t0 + d,
            _ => far,
        };
        let wake = parts
            .iter()
            .zip(&plan.parts)
            .map(|(p, part)| load_end(p, part).min(p.drain_deadline.unwrap_or(far)))
            .fold(next_tick, Instant::min);
        tokio::select! {
            r = done_rx.recv() => match r {
                Some(r) => {
                    finished += 1;
                    if let Err(e) = r {
                        thread_error.get_or_insert(e);
                        for p in &parts {
                            p.sh.halt();
                            p.sh.abort.cancel();
                        }
                    }
                }
                None => break,
            },
            // Stopped from inside: iterations or a data feed ran out, or
            // the scenario's own condition aborted the run.
            _ = changed.notified() => {
                let now = Instant::now();
                let aborted = parts.iter().any(|p| lock_text(&p.sh.aborted).is_some());
                if aborted {
                    stop_all(&mut parts, now);
                }
                for (p, drain) in parts.iter_mut().zip(&drains) {
                    if p.sh.stop.is_cancelled() {
                        p.stop(now, *drain);
                    }
                }
            }
            _ = interrupt.cancelled(), if !interrupted => {
                interrupted = true;
                stop_all(&mut parts, Instant::now());
            }
            _ = abort_now.cancelled(), if !parts.iter().all(|p| p.sh.abort.is_cancelled()) => {
                let now = Instant::now();
                for p in &mut parts {
                    p.sh.halt();
                    p.sh.abort.cancel();
                    p.stopped_at.get_or_insert(now);
                    p.drain_deadline = None;
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                for (i, p) in parts.iter_mut().enumerate() {
                    if p.stopped_at.is_none() && now >= load_end(p, &plan.parts[i]) {
                        p.stop(now, drains[i]);
                    }
                    if p.drain_deadline.is_some_and(|d| now >= d) {
                        p.sh.abort.cancel();
                        p.drain_deadline = None;
                    }
                }
                if now >= next_tick {
                    let len = flush(now, &mut window, &mut totals, &mut windows, &mut last_flush);
                    next_tick += Duration::from_secs(1);
                    let completed = totals.total().count();
                    let now_parts = parts_now(plan, &parts, now);
                    let abort = on_progress(&Progress {
                        elapsed: now.duration_since(t0),
                        planned: plan.planned(),
                        load: describe_parts(plan, &parts, now),
                        window: windows.last().expect("just pushed"),
                        window_len: len,
                        totals: &totals,
                        completed,
                        draining: parts.iter().all(|p| p.stopped_at.is_some()),
                        parts: &now_parts,
                    });
                    if let Some(why) = abort
                        && parts.iter().any(|p| p.stopped_at.is_none())
                    {
                        lock_text(&parts[0].sh.aborted).get_or_insert(why);
                        stop_all(&mut parts, now);
                    }
                }
            }
        }
    }
    let t1 = Instant::now();
    for h in handles {
        let _ = h.join();
    }
    flush(t1, &mut window, &mut totals, &mut windows, &mut last_flush);
    if windows
        .last()
        .is_some_and(|w| w.all.count == 0 && windows.len() > 1)
    {
        windows.pop();
    }

    let outputs: Vec<PartOutput> = parts
        .iter()
        .zip(&plan.parts)
        .map(|(p, part)| {
            let stopped_at = p.stopped_at.unwrap_or(t1);
            PartOutput {
                start: part.start,
                load_time: stopped_at.saturating_duration_since(p.sh.t0),
                schedule: schedule_stats(&p.sh, &part.load, stopped_at, &totals),
            }
        })
        .collect();
    let load_time = parts
        .iter()
        .map(|p| p.stopped_at.unwrap_or(t1).duration_since(t0))
        .max()
        .unwrap_or_default();
    let first = |f: fn(&Shared) -> Option<String>| parts.iter().find_map(|p| f(&p.sh));
    Ok(EngineOutput {
        totals,
        windows,
        t0: t0_wall,
        load_time,
        elapsed: t1.duration_since(t0),
        interrupted,
        schedule: merge_schedules(outputs.iter().filter_map(|o| o.schedule.as_ref())),
        failure: thread_error,
        aborted: first(|sh| lock_text(&sh.aborted).clone()),
        users_stopped: parts
            .iter()
            .map(|p| p.sh.users_stopped.load(Ordering::Relaxed))
            .sum(),
        stopped_by: first(|sh| lock_text(&sh.exhausted).clone()),
        parts: outputs,
    })
}

fn lock_text(m: &Mutex<Option<String>>) -> std::sync::MutexGuard<'_, Option<String>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How far an open-model part kept its schedule.
fn schedule_stats(
    sh: &Shared,
    load: &Load,
    stopped_at: Instant,
    totals: &Recorder,
) -> Option<ScheduleStats> {
    let behind = arrivals_behind(sh, load, stopped_at)?;
    let lag = |q: f64| {
        totals
            .start_lag
            .as_ref()
            .filter(|h| !h.is_empty())
            .map_or(0, |h| h.value_at_quantile(q))
    };
    Some(ScheduleStats {
        late_starts: sh.late.load(Ordering::Relaxed),
        dropped: behind,
        max_lag_us: sh
            .max_lag_us
            .load(Ordering::Relaxed)
            .max(totals.start_lag.as_ref().map_or(0, |h| h.max())),
        lag_p50_us: lag(0.5),
        lag_p99_us: lag(0.99),
    })
}

/// Open model: the arrivals due before `until` (or the planned end,
/// whichever comes first: timer slop past the end is not a drop) that
/// have not started.
fn arrivals_behind(sh: &Shared, load: &Load, until: Instant) -> Option<u64> {
    let rate = sh.rate.as_ref()?;
    let until = sh.end.map_or(until, |end| until.min(end));
    let due_by_time = rate
        .arrivals(until.saturating_duration_since(sh.t0).as_secs_f64())
        .ceil() as u64;
    let due = load.iterations.map_or(due_by_time, |n| n.min(due_by_time));
    Some(due.saturating_sub(sh.started.load(Ordering::Relaxed)))
}

/// The run's schedule figures over its open-model parts (their start lags
/// are recorded together).
fn merge_schedules<'a>(all: impl Iterator<Item = &'a ScheduleStats>) -> Option<ScheduleStats> {
    all.fold(None, |acc: Option<ScheduleStats>, s| {
        Some(match acc {
            None => s.clone(),
            Some(a) => ScheduleStats {
                late_starts: a.late_starts + s.late_starts,
                dropped: a.dropped + s.dropped,
                max_lag_us: a.max_lag_us.max(s.max_lag_us),
                lag_p50_us: a.lag_p50_us,
                lag_p99_us: a.lag_p99_us,
            },
        })
    })
}

/// The progress line's load: each part's, named when there are several.
fn describe_parts(plan: &EnginePlan, parts: &[PartRun], now: Instant) -> String {
    let texts: Vec<String> = plan
        .parts
        .iter()
        .zip(parts)
        .map(|(part, p)| {
            let text = if now < p.sh.t0 {
                format!("starts at {}s", part.start.as_secs())
            } else if p.stopped_at.is_some() {
                "done".to_owned()
            } else {
                describe_load(&part.load, p.sh.users.as_ref(), now.duration_since(p.sh.t0))
            };
            match &part.name {
                Some(name) => format!("{name}: {text}"),
                None => text,
            }
        })
        .collect();
    texts.join(" · ")
}

fn describe_load(load: &Load, users: Option<&UserProfile>, elapsed: Duration) -> String {
    let t = elapsed.as_secs_f64();
    let stage = match UserProfile::stage_at(&load.stages, t) {
        Some(i) => format!("stage {}/{} · ", i + 1, load.stages.len()),
        None if !load.stages.is_empty() => "after the stages · ".to_owned(),
        None => String::new(),
    };
    match &load.model {
        LoadModel::Closed { users: max, .. } => {
            format!("{stage}{}/{max} users", active_users(load, users, t))
        }
        LoadModel::Open { rate, .. } => match RateProfile::of(load) {
            Some(p) if !load.stages.is_empty() => format!("{stage}{:.0}/s", p.rate_at(t)),
            _ => format!("{rate}"),
        },
    }
}

/// Closed model: the users running iterations `t` seconds after the
/// part's start (spawning, or following its stages).
fn active_users(load: &Load, users: Option<&UserProfile>, t: f64) -> u64 {
    let LoadModel::Closed {
        users: max,
        spawn_rate,
        ..
    } = &load.model
    else {
        return 0;
    };
    match (users, spawn_rate) {
        (Some(p), _) => p.level(t).floor() as u64,
        (None, Some(r)) => ((t * r.get()).floor() as u64 + 1).min(*max),
        (None, None) => *max,
    }
}

/// Each part's load at `now`, for live metrics.
fn parts_now(plan: &EnginePlan, parts: &[PartRun], now: Instant) -> Vec<PartNow> {
    plan.parts
        .iter()
        .zip(parts)
        .map(|(part, p)| {
            let running = now >= p.sh.t0 && p.stopped_at.is_none();
            let t = now.saturating_duration_since(p.sh.t0).as_secs_f64();
            let load = &part.load;
            let (users, rate) = match &load.model {
                LoadModel::Closed { .. } => (
                    Some(if running {
                        active_users(load, p.sh.users.as_ref(), t)
                    } else {
                        0
                    }),
                    None,
                ),
                LoadModel::Open { .. } => (
                    None,
                    Some(match p.sh.rate.as_ref() {
                        Some(r) if running => r.rate_at(t),
                        _ => 0.0,
                    }),
                ),
            };
            PartNow {
                users,
                rate,
                in_flight: p.sh.in_flight(),
                late_starts: p.sh.late.load(Ordering::Relaxed),
                behind: if now < p.sh.t0 {
                    0
                } else {
                    arrivals_behind(&p.sh, load, p.stopped_at.unwrap_or(now)).unwrap_or(0)
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
