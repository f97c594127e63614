//! The report of a run with `scenarios:`: each scenario's load, start and
//! timing, and the rows that add up its requests (`scenario.request`).

use serde::{Deserialize, Serialize};

use super::{LoadInfo, Row, StageInfo, Summary};
use crate::engine::{EngineOutput, ScheduleStats};
use crate::measure::RequestStats;
use crate::scenario::{Load, LoadModel, Scenario, StageTarget};

/// One of the file's `scenarios:` in a results file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioResult {
    pub name: String,
    /// From T0 to the scenario's start.
    pub start_s: f64,
    /// From its start until it stopped starting iterations; its requests'
    /// rates are over this time.
    pub load_s: f64,
    pub load: LoadInfo,
    /// Open model only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleStats>,
}

impl LoadInfo {
    /// One load as written (after command-line overrides).
    pub(super) fn of(load: &Load) -> Self {
        let (model, users, rate, spawn_rate) = match &load.model {
            LoadModel::Closed {
                users, spawn_rate, ..
            } => ("closed", Some(*users), None, spawn_rate.map(|r| r.get())),
            LoadModel::Open { rate, .. } => ("open", None, Some(rate.get()), None),
        };
        LoadInfo {
            model: model.into(),
            users,
            rate,
            spawn_rate,
            duration_s: load.duration.map(|d| d.as_secs_f64()),
            iterations: load.iterations,
            drain_s: load.drain.as_secs_f64(),
            stages: load
                .stages
                .iter()
                .map(|st| {
                    let (users, rate) = match st.target {
                        StageTarget::Users(u) => (Some(u), None),
                        StageTarget::Rate { from, to } => (None, Some((from.get(), to.get()))),
                    };
                    StageInfo {
                        for_s: st.duration.as_secs_f64(),
                        users,
                        rate_from: rate.map(|r| r.0),
                        rate_to: rate.map(|r| r.1),
                    }
                })
                .collect(),
        }
    }

    /// The whole run's load: its only part's, or over several parts the
    /// users and rates added up (`mixed` when both models run), the
    /// longest end and drain.
    pub(super) fn of_run(s: &Scenario) -> Self {
        let mut parts = s.parts.iter().map(|p| LoadInfo::of(&p.load));
        let Some(mut info) = parts.next() else {
            return LoadInfo {
                model: "closed".into(),
                users: None,
                rate: None,
                spawn_rate: None,
                duration_s: None,
                iterations: None,
                drain_s: 0.0,
                stages: Vec::new(),
            };
        };
        info.duration_s = info.duration_s.map(|d| d + s.parts[0].start.as_secs_f64());
        for (p, next) in s.parts[1..].iter().zip(parts) {
            if next.model != info.model {
                info.model = "mixed".into();
            }
            info.users = add(info.users, next.users);
            info.rate = add(info.rate, next.rate);
            info.duration_s = info
                .duration_s
                .zip(next.duration_s)
                .map(|(a, b)| a.max(b + p.start.as_secs_f64()));
            info.iterations = add(info.iterations, next.iterations);
            info.drain_s = info.drain_s.max(next.drain_s);
            // Stages of several scenarios do not add up to one profile.
            info.stages.clear();
            info.spawn_rate = None;
        }
        info
    }
}

fn add<T: std::ops::Add<Output = T>>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    }
}

/// Each named part of the run, as the results file keeps it.
pub(super) fn scenario_results(s: &Scenario, out: &EngineOutput) -> Vec<ScenarioResult> {
    s.parts
        .iter()
        .zip(&out.parts)
        .filter_map(|(p, o)| {
            Some(ScenarioResult {
                name: p.name.clone()?,
                start_s: o.start.as_secs_f64(),
                load_s: o.load_time.as_secs_f64(),
                load: LoadInfo::of(&p.load),
                schedule: o.schedule.clone(),
            })
        })
        .collect()
}

/// A scenario's name and how long it started iterations, in seconds.
pub type Span = (String, f64);

/// The scenario a request belongs to: the part of `scenario.request`
/// before the dot.
pub(super) fn scenario_of(request: &str) -> Option<&str> {
    request.split_once('.').map(|(s, _)| s)
}

/// Seconds over which a request's rate is figured: its scenario's load
/// time, else the run's.
pub(super) fn secs_of(request: &str, spans: &[Span], run_s: f64) -> f64 {
    scenario_of(request)
        .and_then(|s| spans.iter().find(|(n, _)| n == s))
        .map_or(run_s, |(_, secs)| *secs)
        .max(1e-3)
}

/// One row per scenario, adding up its requests.
pub(super) fn scenario_rows(requests: &[(&str, &RequestStats)], spans: &[Span]) -> Vec<Row> {
    spans
        .iter()
        .map(|(name, secs)| {
            let mut total = RequestStats::default();
            for (_, st) in requests
                .iter()
                .filter(|(r, _)| scenario_of(r) == Some(name.as_str()))
            {
                total.merge(st);
            }
            Row::of(name, &total, secs.max(1e-3))
        })
        .collect()
}

impl Summary {
    /// The rows of the RED table in order: each scenario's requests then
    /// the scenario's total, and `all` last.
    pub fn table_rows(&self) -> Vec<&Row> {
        let mut out = Vec::new();
        if self.scenarios.is_empty() {
            out.extend(&self.rows);
        } else {
            for s in &self.scenarios {
                out.extend(
                    self.rows
                        .iter()
                        .filter(|r| scenario_of(&r.name) == Some(s.name.as_str())),
                );
                out.push(s);
            }
        }
        out.push(&self.all);
        out
    }
}
