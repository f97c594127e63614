//! `redproof merge`: the results files of a scenario's shards added up
//! into the report of one run. Histograms add exactly (HDR histograms of
//! the same precision); one-second windows are added by wall-clock
//! second; thresholds are evaluated again on the sums. Verification is
//! left to the caller, once, for the union of the shards' windows.

use std::collections::BTreeMap;

use super::text::rfc3339;
use super::{LoadInfo, MergedInfo, RunReport, Summary, Timing, encode, evaluate, outcome_results};
use crate::engine::ScheduleStats;
use crate::measure::{RequestStats, Window, WindowFigures};

/// Merges shard results, each with the name of its file (for messages).
/// Refuses files that are not shards, come from different scenarios,
/// miss or repeat a shard, did not complete, or ran at times that do
/// not overlap.
pub fn merge(shards: Vec<(String, RunReport)>) -> Result<(RunReport, Summary), String> {
    let (first_name, first) = shards.first().ok_or("no results files to merge")?;
    let Some(first_shard) = &first.shard else {
        return Err(format!(
            "`{first_name}` is not a shard's results: it was written by `run` without `--shard`"
        ));
    };
    let count = first_shard.count;
    let mut by_index: BTreeMap<u32, &str> = BTreeMap::new();
    for (name, r) in &shards {
        let Some(sh) = &r.shard else {
            return Err(format!(
                "`{name}` is not a shard's results: it was written by `run` without `--shard`"
            ));
        };
        if sh.scenario_hash != first_shard.scenario_hash {
            return Err(format!(
                "`{name}` comes from another scenario than `{first_name}` (scenario hash {} vs {}): the files, or their --users, --rate, --duration or --iterations, differ",
                short(&sh.scenario_hash),
                short(&first_shard.scenario_hash)
            ));
        }
        if sh.count != count {
            return Err(format!(
                "`{name}` is shard {}/{} but `{first_name}` is one of {count} shards",
                sh.index, sh.count
            ));
        }
        if let Some(other) = by_index.insert(sh.index, name) {
            return Err(format!(
                "shard {}/{count} is given twice: `{other}` and `{name}`",
                sh.index
            ));
        }
        let unfinished = if let Some(e) = &r.failure {
            Some(format!("it failed: {e}"))
        } else if r.interrupted {
            Some("it was interrupted".to_owned())
        } else {
            None
        };
        if let Some(why) = unfinished {
            return Err(format!(
                "shard {}/{count} (`{name}`) did not complete, so the sum would not be the scenario's: {why}",
                sh.index
            ));
        }
        if r.requests.len() != first.requests.len()
            || r.requests
                .iter()
                .zip(&first.requests)
                .any(|(a, b)| a.name != b.name)
        {
            return Err(format!(
                "`{name}` and `{first_name}` record different requests: they come from different redproof versions"
            ));
        }
    }
    let missing: Vec<String> = (0..count)
        .filter(|i| !by_index.contains_key(i))
        .map(|i| format!("{i}/{count}"))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "shard{} {} {} missing: merge needs the results of all {count} shards (did a shard fail before writing its results?)",
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", "),
            if missing.len() == 1 { "is" } else { "are" }
        ));
    }
    check_overlap(&shards)?;

    let t0 = shards.iter().map(|(_, r)| r.timing.t0_unix_ms).min();
    let t0 = t0.expect("at least one shard");
    let stop = shards.iter().map(|(_, r)| r.timing.stop_unix_ms).max();
    let t1 = shards.iter().map(|(_, r)| r.timing.t1_unix_ms).max();
    let (stop, t1) = (stop.unwrap_or(t0), t1.unwrap_or(t0));

    let mut stats: Vec<RequestStats> = vec![RequestStats::default(); first.requests.len()];
    for (name, r) in &shards {
        for (sum, st) in stats
            .iter_mut()
            .zip(r.request_stats().map_err(|e| format!("`{name}`: {e}"))?)
        {
            sum.merge(&st);
        }
    }
    let mut merged = first.clone();
    for (req, st) in merged.requests.iter_mut().zip(&stats) {
        req.outcomes = outcome_results(st);
        req.unknown = st.unknown;
        req.retries = st.retries;
        req.messages = req.messages.map(|_| st.messages);
        req.corrected_histogram = st.corrected.as_ref().map(encode);
    }
    merged.timing = Timing {
        t0_unix_ms: t0,
        stop_unix_ms: stop,
        t1_unix_ms: t1,
        load_s: (stop - t0) as f64 / 1000.0,
        elapsed_s: (t1 - t0) as f64 / 1000.0,
    };
    merged.windows = merge_windows(&shards, t0)?;
    merged.load = sum_loads(shards.iter().map(|(_, r)| &r.load));
    merged.schedule = sum_schedules(shards.iter().map(|(_, r)| &r.schedule));
    for (i, part) in merged.scenarios.iter_mut().enumerate() {
        let theirs = || shards.iter().filter_map(move |(_, r)| r.scenarios.get(i));
        part.load = sum_loads(theirs().map(|p| &p.load));
        part.schedule = sum_schedules(theirs().map(|p| &p.schedule));
        part.load_s = theirs().map(|p| p.load_s).fold(part.load_s, f64::max);
    }
    merged.users_stopped = shards.iter().map(|(_, r)| r.users_stopped).sum();
    merged.aborted = shards
        .iter()
        .filter_map(|(_, r)| {
            let sh = r.shard.as_ref()?;
            r.aborted
                .as_ref()
                .map(|a| format!("shard {}/{}: {a}", sh.index, sh.count))
        })
        .reduce(|a, b| format!("{a}; {b}"));
    merged.verification = None;
    merged.verification_error = None;
    merged.verification_unavailable = false;
    merged.merged = Some(MergedInfo {
        shards: count,
        scenario_hash: first_shard.scenario_hash.clone(),
    });
    merged.shard = None;
    let summary = merged.summary()?;
    merged.thresholds = evaluate(
        &merged
            .thresholds
            .iter()
            .map(|t| t.threshold.clone())
            .collect::<Vec<_>>(),
        &summary,
        None,
        merged.timing.load_s,
    );
    Ok((merged, summary))
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// The load of the whole run from its shards' shares: users, rates and
/// iterations (also per stage) add up; the rest is the same in each.
fn sum_loads<'a>(mut loads: impl Iterator<Item = &'a LoadInfo>) -> LoadInfo {
    let first = loads.next().expect("at least one shard").clone();
    loads.fold(first, |mut sum, l| {
        sum.users = sum.users.zip(l.users).map(|(a, b)| a + b);
        sum.rate = sum.rate.zip(l.rate).map(|(a, b)| a + b);
        sum.iterations = sum.iterations.zip(l.iterations).map(|(a, b)| a + b);
        for (s, t) in sum.stages.iter_mut().zip(&l.stages) {
            s.users = s.users.zip(t.users).map(|(a, b)| a + b);
            s.rate_from = s.rate_from.zip(t.rate_from).map(|(a, b)| a + b);
            s.rate_to = s.rate_to.zip(t.rate_to).map(|(a, b)| a + b);
        }
        sum
    })
}

/// The shards' open-model schedules as one: counts add up; start lags
/// are kept as percentiles only, so they are the worst shard's.
fn sum_schedules<'a>(
    schedules: impl Iterator<Item = &'a Option<ScheduleStats>>,
) -> Option<ScheduleStats> {
    schedules.flatten().cloned().reduce(|a, b| ScheduleStats {
        late_starts: a.late_starts + b.late_starts,
        dropped: a.dropped + b.dropped,
        max_lag_us: a.max_lag_us.max(b.max_lag_us),
        lag_p50_us: a.lag_p50_us.max(b.lag_p50_us),
        lag_p99_us: a.lag_p99_us.max(b.lag_p99_us),
    })
}

/// Every shard's load must overlap every other's: shards that ran at
/// different times do not add up to one run.
fn check_overlap(shards: &[(String, RunReport)]) -> Result<(), String> {
    let latest_start = shards
        .iter()
        .max_by_key(|(_, r)| r.timing.t0_unix_ms)
        .expect("at least one shard");
    let earliest_end = shards
        .iter()
        .min_by_key(|(_, r)| r.timing.stop_unix_ms)
        .expect("at least one shard");
    // Windows are whole seconds: shards started together whose loads
    // were shorter than that may touch without overlapping by a
    // millisecond, and still belong to one run.
    if latest_start.1.timing.t0_unix_ms > earliest_end.1.timing.stop_unix_ms + 1000 {
        return Err(format!(
            "the shards' windows do not overlap: `{}` started its load at {}, over a second after `{}` had stopped at {}; start every shard with the same --start-at",
            latest_start.0,
            rfc3339(latest_start.1.timing.t0_unix_ms as i64),
            earliest_end.0,
            rfc3339(earliest_end.1.timing.stop_unix_ms as i64),
        ));
    }
    Ok(())
}

/// The shards' one-second windows added up by the wall-clock second
/// they end in, counted from the earliest start `t0`.
fn merge_windows(shards: &[(String, RunReport)], t0: u64) -> Result<Vec<Window>, String> {
    // Each window with its end in seconds from `t0`.
    let mut seconds: BTreeMap<u64, Vec<(f64, &Window)>> = BTreeMap::new();
    for (_, r) in shards {
        let offset = (r.timing.t0_unix_ms - t0) as f64 / 1000.0;
        for w in &r.windows {
            let end = offset + w.t;
            let second = end.round().max(1.0) as u64;
            seconds.entry(second).or_default().push((end, w));
        }
    }
    let requests = shards.first().map_or(0, |(_, r)| r.requests.len());
    seconds
        .into_iter()
        .map(|(second, parts)| {
            let t = parts.iter().map(|(end, _)| *end).fold(0.0, f64::max);
            Ok(Window {
                t: if t > 0.0 { t } else { second as f64 },
                all: WindowFigures::sum(parts.iter().map(|(_, w)| &w.all))?,
                requests: (0..requests)
                    .map(|i| {
                        WindowFigures::sum(parts.iter().filter_map(|(_, w)| w.requests.get(i)))
                    })
                    .collect::<Result<_, String>>()?,
            })
        })
        .collect::<Result<_, String>>()
        .map_err(|e| format!("cannot add up the shards' windows: {e}"))
}

#[cfg(test)]
mod tests;
