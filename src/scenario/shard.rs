//! Shards: one scenario run by N redproof processes (a Kubernetes Indexed
//! Job, a CI matrix), each sending its part, whose results `redproof
//! merge` adds up to the report of one big run.
//!
//! [`split_load`] and [`split_feeds`] are functions of one `load:` and
//! its feeds, so a file with several loads splits each the same way.
//! Counts are dealt like cards: shard `i` of `n` gets the `k`-th unit
//! for every `k` with `k % n == i`, so 5 users over 3 shards are 2, 2
//! and 1 and the parts always add up to the whole. Rates are divided
//! (10/s over 3 shards is 3.33/s each), which the open model keeps
//! exactly on average.

use std::fmt;

use sha2::{Digest as _, Sha256};

use super::units::Rate;
use super::{Draw, Feed, Load, LoadModel, Overrides, Scenario, ScenarioFile, StageTarget};

/// Environment variable a Kubernetes Indexed Job sets to the pod's index.
pub const INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// Which part of a scenario this process runs: `index` of `count`,
/// counting from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Parses `I/N` (`0 <= I < N`), or `N` alone with the index read from
    /// `index_env` (the value of `JOB_COMPLETION_INDEX`).
    pub fn parse(text: &str, index_env: Option<&str>) -> Result<Self, String> {
        let expected = || {
            format!(
                "expected `I/N` such as `0/4` (shard I of N, from 0), or `N` with {INDEX_ENV} set; got `{text}`"
            )
        };
        let (index, count) = match text.split_once('/') {
            Some((i, n)) => (i.trim().to_owned(), n.trim()),
            None => {
                let i = index_env.ok_or_else(|| {
                    format!("`{text}` gives the shard count only, and {INDEX_ENV} is not set: write `I/{text}`")
                })?;
                (i.trim().to_owned(), text.trim())
            }
        };
        let index: u32 = index.parse().map_err(|_| expected())?;
        let count: u32 = count.parse().map_err(|_| expected())?;
        if count == 0 {
            return Err(format!("`{text}`: the shard count must be at least 1"));
        }
        if index >= count {
            return Err(format!(
                "`{text}`: shard {index} does not exist; shards of {count} are numbered 0 to {}",
                count - 1
            ));
        }
        Ok(Self { index, count })
    }

    /// This shard's part of `total` units dealt round-robin.
    pub fn share(&self, total: u64) -> u64 {
        let (n, i) = (u64::from(self.count), u64::from(self.index));
        total / n + u64::from(i < total % n)
    }

    /// The first unit of this shard's contiguous block of `total`.
    fn block_start(&self, total: u64) -> u64 {
        let (n, i) = (u64::from(self.count), u64::from(self.index));
        i * (total / n) + i.min(total % n)
    }

    fn rate(&self, r: Rate, what: &str) -> Result<Rate, String> {
        Rate::per_second(r.get() / f64::from(self.count)).ok_or_else(|| {
            format!(
                "{what} {}/s over {} shards is below the slowest rate redproof accepts",
                r.get(),
                self.count
            )
        })
    }
}

/// Shard `shard`'s part of a load: users (constant and per stage),
/// iterations and `max_in_flight` dealt round-robin; arrival rates and
/// spawn rates divided. Durations, waits, pacing and the drain stay as
/// they are, so every shard runs for the same time.
pub fn split_load(load: &Load, shard: Shard) -> Result<Load, String> {
    let mut out = load.clone();
    let too_few = |what: &str, n: u64| {
        format!(
            "{what} {n} cannot be split over {} shards: each shard needs at least one; use at most {n} shards",
            shard.count
        )
    };
    out.model = match &load.model {
        LoadModel::Closed {
            users,
            spawn_rate,
            wait,
        } => {
            let mine = shard.share(*users);
            if mine == 0 {
                return Err(too_few("users:", *users));
            }
            LoadModel::Closed {
                users: mine,
                spawn_rate: spawn_rate
                    .map(|r| shard.rate(r, "spawn_rate:"))
                    .transpose()?,
                wait: *wait,
            }
        }
        LoadModel::Open {
            rate,
            max_in_flight,
        } => LoadModel::Open {
            rate: shard.rate(*rate, "rate:")?,
            max_in_flight: shard.share(*max_in_flight).max(1),
        },
    };
    for stage in &mut out.stages {
        stage.target = match stage.target {
            StageTarget::Users(u) => StageTarget::Users(shard.share(u)),
            StageTarget::Rate { from, to } => StageTarget::Rate {
                from: shard.rate(from, "a stage's rate")?,
                to: shard.rate(to, "a stage's rate")?,
            },
        };
    }
    if let Some(n) = load.iterations {
        let mine = shard.share(n);
        if mine == 0 {
            return Err(too_few("iterations:", n));
        }
        out.iterations = Some(mine);
    }
    Ok(out)
}

/// Shard `shard`'s rows of each `unique` feed: a contiguous block, so
/// no row is used by two shards. `sequential` and `random` feeds keep
/// every row.
pub fn split_feeds(feeds: &mut [Feed], shard: Shard) -> Result<(), String> {
    for f in feeds.iter_mut().filter(|f| f.draw == Draw::Unique) {
        let total = f.rows.len() as u64;
        let (start, len) = (shard.block_start(total), shard.share(total));
        if len == 0 {
            return Err(format!(
                "data feed `{}` has {total} rows, fewer than {} shards: a unique feed needs a row for each shard",
                f.name, shard.count
            ));
        }
        f.rows = f.rows[start as usize..(start + len) as usize].to_vec();
    }
    Ok(())
}

impl Scenario {
    /// Keeps this shard's part of every scenario's load, of the feeds and
    /// of the `seq()` values.
    pub fn take_shard(&mut self, shard: Shard) -> Result<(), String> {
        for part in &mut self.parts {
            part.load = split_load(&part.load, shard)?;
        }
        split_feeds(&mut self.feeds, shard)?;
        self.sequence
            .interleave(u64::from(shard.index), u64::from(shard.count));
        Ok(())
    }
}

/// What identifies a scenario across shards: SHA-256 of its file, the
/// files it includes and the overrides that change its load, in hex.
/// Target and Prometheus URLs are left out: shards may reach the same
/// service by different addresses.
pub fn scenario_hash(file: &ScenarioFile, o: &Overrides) -> String {
    let mut h = Sha256::new();
    let mut part = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    part(file.text.as_bytes());
    for text in &file.included {
        part(text.as_bytes());
    }
    let overrides = format!(
        "duration={:?};iterations={:?};users={:?};rate={:?}",
        o.duration,
        o.iterations,
        o.users.as_ref().map(|u| (&u.scenario, u.value)),
        o.rate.as_ref().map(|r| (&r.scenario, r.value.get()))
    );
    part(overrides.as_bytes());
    h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
}

#[cfg(test)]
mod tests;
