//! What the engine runs, taken from the scenario: each part's load, start
//! and weighted entries, the steps, feeds and the size of each user's
//! variables.

use std::time::Duration;

use std::time::SystemTime;

use crate::scenario::units::DurationRange;
use crate::scenario::{Feed, Load, OnStartFailures, Scenario};

/// What the engine needs to know about the scenario.
#[derive(Debug, Clone)]
pub struct EnginePlan {
    /// Loads run side by side: one, or one per entry of `scenarios:`.
    pub parts: Vec<PartPlan>,
    /// Indexed like the scenario's requests.
    pub steps: Vec<StepPlan>,
    pub feeds: Vec<Feed>,
    /// Slots in each user's variable table.
    pub variables: usize,
    /// Engine threads; each has its own runtime and connection pools.
    pub threads: usize,
    /// Keep each one-second window's latency histograms (shards, whose
    /// windows `redproof merge` adds up).
    pub window_histograms: bool,
    /// Start the load at this wall-clock time (shards starting together),
    /// once the clients are built; at once when absent or past.
    pub start_at: Option<SystemTime>,
}

/// One load: its own users or arrivals, from its own start.
#[derive(Debug, Clone)]
pub struct PartPlan {
    /// For the progress line; `None` for a file without `scenarios:`.
    pub name: Option<String>,
    /// From T0 to this load's own start.
    pub start: Duration,
    pub load: Load,
    /// What an iteration picks from: a weight and the steps to run.
    pub entries: Vec<(u32, Vec<usize>)>,
    /// Steps each worker runs once, before its first iteration.
    pub on_start: Vec<usize>,
    /// When a worker gives up on `on_start`.
    pub on_start_failures: Option<OnStartFailures>,
}

/// How the engine runs one step.
#[derive(Debug, Clone, Default)]
pub struct StepPlan {
    /// Pause after the step.
    pub think: Option<DurationRange>,
    /// The step captures values: when it fails, the rest of its flow
    /// cannot run and the iteration ends.
    pub captures: bool,
}

impl EnginePlan {
    pub fn new(s: &Scenario, threads: usize) -> Self {
        Self {
            parts: s
                .parts
                .iter()
                .map(|p| PartPlan {
                    name: p.name.clone(),
                    start: p.start,
                    load: p.load.clone(),
                    entries: p
                        .entries
                        .iter()
                        .map(|e| (e.weight.get(), e.steps.clone()))
                        .collect(),
                    on_start: p.on_start.clone(),
                    on_start_failures: p.on_start_failures,
                })
                .collect(),
            steps: s
                .requests
                .iter()
                .map(|r| StepPlan {
                    think: r.think,
                    captures: !r.captures.is_empty(),
                })
                .collect(),
            feeds: s.feeds.clone(),
            variables: s.variables.len(),
            threads,
            window_histograms: false,
            start_at: None,
        }
    }

    /// A plan of independent requests with these weights (no flows).
    pub fn of_requests(load: Load, weights: &[u32], threads: usize) -> Self {
        Self {
            parts: vec![PartPlan {
                name: None,
                start: Duration::ZERO,
                load,
                entries: weights
                    .iter()
                    .enumerate()
                    .map(|(i, w)| (*w, vec![i]))
                    .collect(),
                on_start: Vec::new(),
                on_start_failures: None,
            }],
            steps: vec![StepPlan::default(); weights.len()],
            feeds: Vec::new(),
            variables: 0,
            threads,
            window_histograms: false,
            start_at: None,
        }
    }

    /// From T0 until the last part stops starting iterations, when every
    /// part's length is known in time.
    pub fn planned(&self) -> Option<Duration> {
        self.parts.iter().try_fold(Duration::ZERO, |longest, p| {
            Some(longest.max(p.start + p.load.duration?))
        })
    }
}
