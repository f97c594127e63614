//! The engine's threads: each runs a single-threaded runtime with its
//! own executor and clock, and its share of every part's workers.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::schedule::{Schedule, Shared};
use super::worker::{self, WeightedChoice, WorkerPlan};
use super::{EnginePlan, FAR, PartPlan, clock};
use crate::exec::ExecutorFactory;
use crate::measure::Recorder;
use crate::scenario::LoadModel;

/// The message of a panic caught on engine thread `thread`.
pub(super) fn panic_message(thread: usize, payload: &(dyn std::any::Any + Send)) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned());
    format!("internal error: engine thread {thread} panicked: {what}")
}

pub(super) fn run_thread<F: ExecutorFactory>(
    factory: &F,
    thread: usize,
    threads: usize,
    shared: &[Arc<Shared>],
    rec: Arc<Mutex<Recorder>>,
    plan: &EnginePlan,
) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let exec = Rc::new(factory.build()?);
        let clock = Rc::new(clock::Clock::new());
        let mut workers_set = tokio::task::JoinSet::new();
        for (part, sh) in plan.parts.iter().zip(shared) {
            let here = ThisThread {
                exec: &exec,
                clock: &clock,
                thread,
                threads,
            };
            spawn_workers(&mut workers_set, &here, sh, &rec, plan, part);
        }
        // A worker that panics stops the whole run at once: its requests
        // would otherwise silently go missing from the counts.
        let mut failure = None;
        while let Some(r) = workers_set.join_next().await {
            if let Err(e) = r
                && e.is_panic()
                && failure.is_none()
            {
                failure = Some(panic_message(thread, e.into_panic().as_ref()));
                for sh in shared {
                    sh.halt();
                    sh.abort.cancel();
                }
            }
        }
        failure.map_or(Ok(()), Err)
    })
}

/// What an engine thread's workers share: its executor and clock, and
/// which thread it is of how many.
struct ThisThread<'a, E> {
    exec: &'a Rc<E>,
    clock: &'a Rc<clock::Clock>,
    thread: usize,
    threads: usize,
}

/// Starts this thread's share of one part's workers (users, or open
/// model slots).
fn spawn_workers<E: crate::exec::Executor + 'static>(
    set: &mut tokio::task::JoinSet<()>,
    here: &ThisThread<'_, E>,
    sh: &Arc<Shared>,
    rec: &Arc<Mutex<Recorder>>,
    plan: &EnginePlan,
    part: &PartPlan,
) {
    let (thread, threads) = (here.thread, here.threads);
    let load = &part.load;
    let weights: Vec<u32> = part.entries.iter().map(|e| e.0).collect();
    let wp = Rc::new(WorkerPlan {
        choice: WeightedChoice::new(&weights),
        entries: part.entries.iter().map(|e| e.1.clone()).collect(),
        on_start: part.on_start.clone(),
        on_start_failures: part.on_start_failures,
        steps: plan.steps.clone(),
        variables: plan.variables,
        pace: load.pace,
        thread,
        idle: RefCell::new(Vec::new()),
    });
    let workers = match load.model {
        LoadModel::Closed { users, .. } => users,
        LoadModel::Open { max_in_flight, .. } => max_in_flight,
    };
    let staged = sh.users.is_some();
    // Workers are dealt round-robin so both the spawn order and the
    // in-flight cap spread evenly over threads.
    for w in (thread as u64..workers).step_by(threads) {
        let schedule = match &load.model {
            LoadModel::Closed {
                spawn_rate, wait, ..
            } => Schedule::Closed {
                user: w,
                spawn_at: Some(
                    sh.t0
                        + match spawn_rate {
                            Some(r) if !staged => {
                                Duration::try_from_secs_f64(r.interval().as_secs_f64() * w as f64)
                                    .unwrap_or(FAR)
                            }
                            _ => Duration::ZERO,
                        },
                ),
                wait: *wait,
                pace: load.pace,
                next_due: None,
                left: load.iterations_per_user,
            },
            LoadModel::Open { .. } => Schedule::Open(here.clock.clone()),
        };
        let seed = fastrand::u64(..) ^ w;
        set.spawn_local(worker::worker(
            here.exec.clone(),
            sh.clone(),
            rec.clone(),
            wp.clone(),
            schedule,
            seed,
        ));
    }
}
