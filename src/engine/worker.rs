//! The one worker loop: wait for the schedule, draw feed rows, pick an
//! entry by weight and run its steps, recording every outcome into the
//! thread's recorder.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::plan::StepPlan;
use super::schedule::{InFlight, Schedule, Shared, sleep_unless_stopped};
use crate::exec::{CallResult, Connections, Executor, Scratch};
use crate::measure::Recorder;
use crate::outcome::Outcome;
use crate::scenario::{GiveUp, OnStartFailures};

/// Picks request indices in proportion to their weights.
#[derive(Debug, Clone)]
pub(super) struct WeightedChoice {
    pub(super) cumulative: Vec<u32>,
}

impl WeightedChoice {
    pub(super) fn new(weights: &[u32]) -> Self {
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

    pub(super) fn pick(&self, rng: &mut fastrand::Rng) -> usize {
        match self.cumulative.len() {
            1 => 0,
            _ => {
                let x = rng.u32(0..*self.cumulative.last().expect("at least one request"));
                self.cumulative.partition_point(|&c| c <= x)
            }
        }
    }
}

/// The pause after a user's first failed `on_start`; it doubles with each
/// failure in a row, up to [`ON_START_BACKOFF_MAX`].
const ON_START_BACKOFF_MIN: Duration = Duration::from_millis(50);
const ON_START_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What every worker of a thread shares.
pub(super) struct WorkerPlan {
    pub(super) choice: WeightedChoice,
    pub(super) entries: Vec<Vec<usize>>,
    pub(super) on_start: Vec<usize>,
    pub(super) on_start_failures: Option<OnStartFailures>,
    pub(super) steps: Vec<StepPlan>,
    pub(super) variables: usize,
    pub(super) pace: Option<Duration>,
    /// This engine thread's number, which picks its in-flight counter.
    pub(super) thread: usize,
    /// Open model: the thread's idle connections, the most recently used
    /// last. An arrival takes the warmest one, as a client's connection
    /// pool does, rather than each worker keeping its own: with a worker
    /// per slot of `max_in_flight`, most arrivals would otherwise open a
    /// connection, or find one idle for seconds.
    pub(super) idle: RefCell<Vec<Connections>>,
}

/// What a worker's steps run with.
pub(super) struct Ctx<'a, E> {
    pub(super) exec: &'a E,
    pub(super) rec: &'a Mutex<Recorder>,
    pub(super) plan: &'a WorkerPlan,
    pub(super) in_flight: &'a InFlight,
}

impl<E> Clone for Ctx<'_, E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for Ctx<'_, E> {}

/// Why a run of steps ended early.
pub(super) enum Cut {
    /// The drain ended: in-flight work was cut off.
    Aborted,
}

/// Runs `steps` in order for one user. The first step's latency runs from
/// `from` (the open model's due time); later steps from their own start.
/// `Ok(false)` when a step's capture failed and the rest was skipped.
pub(super) async fn run_steps<E: Executor>(
    cx: Ctx<'_, E>,
    steps: &[usize],
    from: Instant,
    scratch: &mut Scratch,
    abort: &mut std::pin::Pin<&mut tokio_util::sync::WaitForCancellationFutureOwned>,
) -> Result<bool, Cut> {
    let Ctx {
        exec,
        rec,
        plan,
        in_flight,
    } = cx;
    // A flow that has started runs to its end even when the run stops
    // starting iterations; only the end of the drain cuts it off.
    for (i, &step) in steps.iter().enumerate() {
        let from = if i == 0 { from } else { Instant::now() };
        in_flight.add(1);
        let result = tokio::select! {
            biased;
            _ = abort.as_mut() => {
                in_flight.add(-1);
                lock(rec).record_unknown(step);
                return Err(Cut::Aborted);
            }
            r = exec.execute(step, scratch) => r,
        };
        in_flight.add(-1);
        let latency = from.elapsed();
        let retries = std::mem::take(&mut scratch.retries);
        let ok = {
            let mut rec = lock(rec);
            if retries > 0 {
                rec.record_retries(step, retries);
            }
            let (ok, answered) = match result {
                CallResult::Status(s) => {
                    let outcome = Outcome::Status(s);
                    let ok = exec.accepts(step, outcome);
                    rec.record(step, outcome, ok, latency);
                    (ok, true)
                }
                CallResult::Grpc {
                    code,
                    sent,
                    received,
                } => {
                    let outcome = Outcome::Grpc(code);
                    let ok = exec.accepts(step, outcome);
                    rec.record(step, outcome, ok, latency);
                    rec.record_messages(step, sent, received);
                    (ok, true)
                }
                CallResult::CheckFailed { answer, message } => {
                    rec.record_check_failed(step, answer, latency, || message);
                    (false, true)
                }
                CallResult::Failed(kind, msg) => {
                    rec.record_error(step, kind, latency, || msg);
                    (false, false)
                }
            };
            if let (Some(pace), true) = (plan.pace, answered) {
                rec.record_corrected(step, latency, pace);
            }
            ok
        };
        let spec = &plan.steps[step];
        if !ok && spec.captures {
            // The values later steps need were not captured.
            return Ok(false);
        }
        if let Some(think) = spec.think
            && i + 1 < steps.len()
        {
            let d = think.sample(&mut scratch.rng);
            if !d.is_zero() {
                tokio::select! {
                    biased;
                    _ = abort.as_mut() => return Err(Cut::Aborted),
                    _ = tokio::time::sleep(d) => {}
                }
            }
        }
    }
    Ok(true)
}

/// Draws a row from every feed into the user's variables; false when a
/// feed that stops has run out (the run is then stopping).
pub(super) fn draw_rows(sh: &Shared, scratch: &mut Scratch) -> bool {
    for f in sh.feeds.iter() {
        let Some(row) = f.draw(&mut scratch.rng) else {
            let mut why = sh.exhausted.lock().unwrap_or_else(|p| p.into_inner());
            why.get_or_insert_with(|| {
                format!(
                    "data feed `{}` ran out of rows ({} rows, draw: unique, exhausted: stop)",
                    f.feed.name,
                    f.feed.rows.len()
                )
            });
            sh.halt();
            return false;
        };
        for (i, v) in row.iter().enumerate() {
            scratch.vars[f.feed.first_slot + i].clone_from(v);
        }
    }
    true
}

/// The one worker loop: next start, draw, pick, run the steps, record.
pub(super) async fn worker<E: Executor>(
    exec: Rc<E>,
    sh: Arc<Shared>,
    rec: Arc<Mutex<Recorder>>,
    plan: Rc<WorkerPlan>,
    mut schedule: Schedule,
    seed: u64,
) {
    let mut scratch = Scratch::new(seed);
    scratch.vars.resize(plan.variables, String::new());
    let open = matches!(schedule, Schedule::Open(_));
    // One long-lived wait on `abort`, so a request does not register and
    // unregister a waiter each time.
    let abort = sh.abort.clone().cancelled_owned();
    tokio::pin!(abort);
    let mut started = plan.on_start.is_empty();
    let mut failed_starts: u32 = 0;
    let cx = Ctx {
        exec: &*exec,
        rec: &rec,
        plan: &plan,
        in_flight: &sh.in_flight[plan.thread],
    };
    loop {
        if open {
            let mut mine = Connections::default();
            scratch.swap_connections(&mut mine);
            if !mine.is_empty() {
                plan.idle.borrow_mut().push(mine);
            }
        }
        let Some(mut from) = schedule.next(&sh, &mut scratch.rng).await else {
            return;
        };
        if open {
            if let Some(mut warm) = plan.idle.borrow_mut().pop() {
                scratch.swap_connections(&mut warm);
            }
            lock(&rec).record_start_lag(Instant::now().saturating_duration_since(from));
        }
        if !draw_rows(&sh, &mut scratch) {
            return;
        }
        if !started {
            // `on_start` carries the iteration's start (and any schedule
            // lag); when one of its captures fails, this iteration ends and
            // the next one tries `on_start` again, rather than running
            // steps without the values they need. An iteration already
            // claimed runs even if the run has started stopping meanwhile.
            match run_steps(cx, &plan.on_start, from, &mut scratch, &mut abort).await {
                Err(Cut::Aborted) => return,
                Ok(done) => started = done,
            }
            if !started {
                // Back off before trying again, so a capture that cannot
                // succeed does not turn into a storm of `on_start` requests
                // (accounts created by the thousand) when users do not wait.
                failed_starts += 1;
                if let Some(limit) = plan.on_start_failures
                    && failed_starts >= limit.max
                {
                    give_up(&sh, limit);
                    return;
                }
                let backoff = ON_START_BACKOFF_MIN
                    .saturating_mul(1 << (failed_starts - 1).min(16))
                    .min(ON_START_BACKOFF_MAX);
                if !sleep_unless_stopped(&sh, Instant::now() + backoff).await {
                    return;
                }
                continue;
            }
            if !draw_rows(&sh, &mut scratch) {
                return;
            }
            from = Instant::now();
        }
        let entry = plan.choice.pick(&mut scratch.rng);
        let steps = &plan.entries[entry];
        if run_steps(cx, steps, from, &mut scratch, &mut abort)
            .await
            .is_err()
        {
            return;
        }
    }
}

/// A user whose `on_start` failed `limit.max` times in a row stops, and
/// with `then: abort` the run stops too.
fn give_up(sh: &Shared, limit: OnStartFailures) {
    match limit.then {
        GiveUp::StopUser => {
            sh.users_stopped.fetch_add(1, Ordering::Relaxed);
        }
        GiveUp::Abort => {
            let mut why = sh.aborted.lock().unwrap_or_else(|p| p.into_inner());
            why.get_or_insert_with(|| {
                format!(
                    "`on_start` failed {} time{} in a row for a user (on_start_failures: {{ max: {}, then: abort }})",
                    limit.max,
                    if limit.max == 1 { "" } else { "s" },
                    limit.max
                )
            });
            sh.halt();
        }
    }
}

pub(super) fn lock(m: &Mutex<Recorder>) -> std::sync::MutexGuard<'_, Recorder> {
    // A poisoned recorder still holds valid counts.
    m.lock().unwrap_or_else(|p| p.into_inner())
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
}
