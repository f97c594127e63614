//! When iterations start: the state every worker of a run shares (stop
//! tokens, claimed iterations, feeds, the open model's arrival profile and
//! the closed model's user profile) and each worker's [`Schedule`].

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::clock::Clock;
use crate::profile::{RateProfile, UserProfile};
use crate::scenario::units::DurationRange;
use crate::scenario::{Draw, Exhausted, Feed, Load, LoadModel};

/// A start later than this behind its due time counts as late.
pub(super) const LATE_AFTER: Duration = Duration::from_millis(5);

/// Requests in flight on one engine thread. Only that thread's tasks
/// write it (with a plain load and store: no locked instruction), and the
/// control loop reads it once a second; the alignment keeps each thread's
/// counter on its own cache line.
#[repr(align(128))]
#[derive(Default)]
pub(super) struct InFlight(AtomicU64);

impl InFlight {
    /// Adds `delta` (1 at a request's start, -1 at its end); called only
    /// from the thread that owns the counter.
    pub(super) fn add(&self, delta: i64) {
        let n = self.0.load(Ordering::Relaxed);
        self.0
            .store(n.wrapping_add_signed(delta), Ordering::Relaxed);
    }

    pub(super) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A feed's rows and its shared cursor.
pub(super) struct FeedState {
    pub(super) feed: Feed,
    pub(super) cursor: AtomicU64,
}

impl FeedState {
    /// The next row for this feed's draw, or `None` when a unique feed
    /// that stops has run out.
    pub(super) fn draw(&self, rng: &mut fastrand::Rng) -> Option<&[String]> {
        let rows = &self.feed.rows;
        let i = match self.feed.draw {
            Draw::Random => rng.usize(..rows.len()),
            Draw::Sequential => {
                (self.cursor.fetch_add(1, Ordering::Relaxed) % rows.len() as u64) as usize
            }
            Draw::Unique => {
                let n = self.cursor.fetch_add(1, Ordering::Relaxed);
                match self.feed.exhausted {
                    Exhausted::Stop if n >= rows.len() as u64 => return None,
                    _ => (n % rows.len() as u64) as usize,
                }
            }
        };
        Some(&rows[i])
    }
}

/// State shared by every worker of a run.
pub(super) struct Shared {
    pub(super) t0: Instant,
    pub(super) stop: CancellationToken,
    /// Mirrors `stop` for the per-request check: reading a token takes
    /// its lock, which threads would contend for.
    pub(super) stopping: AtomicBool,
    pub(super) abort: CancellationToken,
    /// Requests claimed so far, against `load.iterations`.
    pub(super) claimed: AtomicU64,
    pub(super) iterations: Option<u64>,
    /// Open model: when each arrival is due.
    pub(super) rate: Option<RateProfile>,
    /// Open model: no arrival at or after this.
    pub(super) end: Option<Instant>,
    /// Closed model with stages: which users are active when.
    pub(super) users: Option<UserProfile>,
    /// Shared by every part of the run: a `unique` row is drawn once.
    pub(super) feeds: Arc<Vec<FeedState>>,
    /// Woken when any part of the run stops.
    pub(super) changed: Arc<Notify>,
    /// Set when a feed ran out and stopped the run.
    pub(super) exhausted: Mutex<Option<String>>,
    /// Set when the scenario's own condition ended the run as failed.
    pub(super) aborted: Mutex<Option<String>>,
    /// Users that gave up after failing `on_start` (`then: stop_user`).
    pub(super) users_stopped: AtomicU64,
    /// Open model: iterations started (an arrival that was not dropped).
    pub(super) started: AtomicU64,
    pub(super) late: AtomicU64,
    pub(super) max_lag_us: AtomicU64,
    /// Requests in flight, one counter per engine thread.
    pub(super) in_flight: Box<[InFlight]>,
}

impl Shared {
    /// The state of a part whose load starts at `t0`.
    pub(super) fn new(
        t0: Instant,
        load: &Load,
        feeds: Arc<Vec<FeedState>>,
        changed: Arc<Notify>,
        threads: usize,
    ) -> Self {
        let rate = RateProfile::of(load);
        let users = match &load.model {
            LoadModel::Closed { spawn_rate, .. } if !load.stages.is_empty() => {
                Some(UserProfile::new(&load.stages, spawn_rate.map(|r| r.get())))
            }
            _ => None,
        };
        Self {
            t0,
            stop: CancellationToken::new(),
            stopping: AtomicBool::new(false),
            abort: CancellationToken::new(),
            claimed: AtomicU64::new(0),
            iterations: load.iterations,
            end: rate.as_ref().and(load.duration).map(|d| t0 + d),
            rate,
            users,
            feeds,
            changed,
            exhausted: Mutex::new(None),
            aborted: Mutex::new(None),
            users_stopped: AtomicU64::new(0),
            started: AtomicU64::new(0),
            late: AtomicU64::new(0),
            max_lag_us: AtomicU64::new(0),
            in_flight: (0..threads).map(|_| InFlight::default()).collect(),
        }
    }

    /// Requests in flight over every thread.
    pub(super) fn in_flight(&self) -> u64 {
        self.in_flight.iter().map(InFlight::get).sum()
    }

    /// The instant `secs` after T0. Validation bounds durations and rates,
    /// so this saturates only for offsets far past any run's end.
    pub(super) fn at(&self, secs: f64) -> Instant {
        Duration::try_from_secs_f64(secs)
            .ok()
            .and_then(|d| self.t0.checked_add(d))
            .unwrap_or_else(|| self.t0 + super::FAR)
    }

    /// Stops the starting of requests.
    pub(super) fn halt(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        if !self.stop.is_cancelled() {
            self.stop.cancel();
            self.changed.notify_one();
        }
    }
}

/// When a worker starts its next iteration.
pub(super) enum Schedule {
    Closed {
        /// The user's number, from 0.
        user: u64,
        /// The user's spawn time, before its first iteration.
        spawn_at: Option<Instant>,
        wait: DurationRange,
        /// With `pace`: when the next iteration is due.
        pace: Option<Duration>,
        next_due: Option<Instant>,
        /// With `iterations_per_user`: iterations left.
        left: Option<u64>,
    },
    /// The thread's clock, shared by its arrivals.
    Open(Rc<Clock>),
}

/// Sleeps until `until` unless the run stops first; false when it did.
pub(super) async fn sleep_unless_stopped(sh: &Shared, until: Instant) -> bool {
    tokio::select! {
        biased;
        _ = sh.stop.cancelled() => false,
        _ = tokio::time::sleep_until(until.into()) => true,
    }
}

impl Schedule {
    /// Waits for the next start and returns the instant latency is measured
    /// from, or `None` when this worker is done.
    pub(super) async fn next(&mut self, sh: &Shared, rng: &mut fastrand::Rng) -> Option<Instant> {
        match self {
            Schedule::Closed {
                user,
                spawn_at,
                wait,
                pace,
                next_due,
                left,
            } => {
                if *left == Some(0) {
                    return None;
                }
                let until = match spawn_at.take() {
                    Some(t) => Some(t),
                    None => match pace {
                        Some(_) => next_due.filter(|t| *t > Instant::now()),
                        None => {
                            let d = wait.sample(rng);
                            (!d.is_zero()).then(|| Instant::now() + d)
                        }
                    },
                };
                if let Some(until) = until {
                    if !sleep_unless_stopped(sh, until).await {
                        return None;
                    }
                } else if sh.stopping.load(Ordering::Relaxed) {
                    return None;
                }
                if let Some(profile) = &sh.users {
                    let now = sh.t0.elapsed().as_secs_f64();
                    if !profile.is_active(*user, now) {
                        let at = profile.next_active(*user, now)?;
                        if !sleep_unless_stopped(sh, sh.at(at)).await {
                            return None;
                        }
                        // A user that starts again keeps its pace from now.
                        *next_due = None;
                    }
                }
                if let Some(limit) = sh.iterations
                    && sh.claimed.fetch_add(1, Ordering::Relaxed) >= limit
                {
                    // Users still waiting to spawn or between requests
                    // have nothing left to do.
                    sh.halt();
                    return None;
                }
                if let Some(n) = left {
                    *n -= 1;
                }
                let now = Instant::now();
                if let Some(p) = pace {
                    // Constant throughput per user: the next iteration is
                    // due one pace after this one started (at once if this
                    // one overruns).
                    *next_due = Some(now + *p);
                }
                Some(now)
            }
            Schedule::Open(clock) => {
                let slot = sh.claimed.fetch_add(1, Ordering::Relaxed);
                if sh.iterations.is_some_and(|limit| slot >= limit) {
                    return None;
                }
                let profile = sh.rate.as_ref().expect("open model has a rate profile");
                let due = sh.at(profile.due(slot)?);
                if sh.end.is_some_and(|end| due >= end) {
                    return None;
                }
                if sh.stop.is_cancelled() {
                    return None;
                }
                tokio::select! {
                    biased;
                    _ = sh.stop.cancelled() => return None,
                    _ = clock.until(due) => {}
                }
                let lag = Instant::now().saturating_duration_since(due);
                if lag > LATE_AFTER {
                    sh.late.fetch_add(1, Ordering::Relaxed);
                    sh.max_lag_us
                        .fetch_max(lag.as_micros() as u64, Ordering::Relaxed);
                }
                sh.started.fetch_add(1, Ordering::Relaxed);
                Some(due)
            }
        }
    }
}
