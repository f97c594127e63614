//! The `load:` section: the model (closed users or open arrival rate),
//! its length, stages and pacing.

use std::time::Duration;

use marked_yaml::Spanned;

use super::checker::{Checker, pos};
use super::raw;
use super::types::*;
use super::units::{self, DurationRange, Rate};
use crate::position::Pos;

pub(super) fn check_load(
    c: &mut Checker,
    load: &Spanned<raw::RawLoad>,
    load_pos: Option<Pos>,
) -> Option<Load> {
    let l: &raw::RawLoad = load;
    let users = c.parse_opt(&l.users, "users", units::parse_concurrency);
    let iterations = c.parse_opt(&l.iterations, "iterations", units::parse_count);
    let max_in_flight = c.parse_opt(&l.max_in_flight, "max_in_flight", units::parse_concurrency);
    let rate = c.parse_opt(&l.rate, "rate", Rate::parse);
    let spawn_rate = c.parse_opt(&l.spawn_rate, "spawn_rate", Rate::parse);
    let wait = c.parse_opt(&l.wait, "wait", DurationRange::parse);
    let duration = c.parse_opt(&l.duration, "duration", units::parse_duration);
    let drain = c.parse_opt(&l.drain, "drain", units::parse_duration);
    let iterations_per_user = c.parse_opt(
        &l.iterations_per_user,
        "iterations_per_user",
        units::parse_count,
    );
    let pace = c.parse_opt(&l.pace, "pace", units::parse_duration);
    let stages = l
        .stages
        .as_ref()
        .map(|s| check_stages(c, s))
        .unwrap_or_default();
    if let Some(raw_stages) = &l.stages {
        for (v, field) in [
            (&l.users, "users"),
            (&l.rate, "rate"),
            (&l.duration, "duration"),
        ] {
            if let Some(v) = v {
                c.err(
                    pos(v),
                    format!("`{field}`: `stages` set the load and its length; drop `{field}`"),
                );
            }
        }
        let closed = stages
            .iter()
            .filter(|s| matches!(s.target, StageTarget::Users(_)))
            .count();
        if closed != 0 && closed != stages.len() {
            c.err(pos(raw_stages), "`stages`: every stage gives `users` (closed model) or every stage gives `rate` (open model), not a mix");
        }
    }

    for (v, field) in [
        (&l.users, "users"),
        (&l.iterations, "iterations"),
        (&l.iterations_per_user, "iterations_per_user"),
        (&l.max_in_flight, "max_in_flight"),
    ] {
        if let Some(v) = v
            && units::parse_count(v) == Ok(0)
        {
            c.err(pos(v), format!("`{field}`: expected at least 1, got `0`"));
        }
    }
    if let Some(d) = &l.duration
        && duration == Some(Duration::ZERO)
    {
        c.err(pos(d), "`duration`: expected a positive duration, got zero");
    }
    let staged_users = stages.iter().find_map(|s| match s.target {
        StageTarget::Users(_) => Some(()),
        StageTarget::Rate { .. } => None,
    });
    let max_staged_users = stages
        .iter()
        .filter_map(|s| match s.target {
            StageTarget::Users(u) => Some(u),
            StageTarget::Rate { .. } => None,
        })
        .max();
    let first_staged_rate = stages.iter().find_map(|s| match s.target {
        StageTarget::Rate { from, .. } => Some(from),
        StageTarget::Users(_) => None,
    });
    let model = match (&l.users, &l.rate) {
        _ if l.stages.is_some() => match (staged_users, max_staged_users, first_staged_rate) {
            (Some(()), Some(users), _) => Some(LoadModel::Closed {
                users: users.max(1),
                spawn_rate,
                wait: wait.unwrap_or(DurationRange {
                    min: Duration::ZERO,
                    max: Duration::ZERO,
                }),
            }),
            (None, _, Some(rate)) => Some(LoadModel::Open {
                rate,
                max_in_flight: max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT),
            }),
            _ => None,
        },
        (Some(_), Some(r)) => {
            c.err(pos(r), "`load`: `users` (closed model) and `rate` (open model) exclude each other; keep one");
            None
        }
        (None, None) => {
            c.err(load_pos, "`load`: expected `users:` (closed model, like Locust) or `rate:` (open model, requests per second)");
            None
        }
        (Some(_), None) => {
            if let Some(m) = &l.max_in_flight {
                c.err(pos(m), "`max_in_flight` applies to the open model (`rate:`); with `users:` concurrency is the user count");
            }
            users.map(|users| LoadModel::Closed {
                users,
                spawn_rate,
                wait: wait.unwrap_or(DurationRange {
                    min: Duration::ZERO,
                    max: Duration::ZERO,
                }),
            })
        }
        (None, Some(_)) => {
            for (v, field) in [(&l.spawn_rate, "spawn_rate"), (&l.wait, "wait")] {
                if let Some(v) = v {
                    c.err(pos(v), format!("`{field}` applies to the closed model (`users:`); the open model starts requests at `rate`"));
                }
            }
            rate.map(|rate| LoadModel::Open {
                rate,
                max_in_flight: max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT),
            })
        }
    };
    let closed = matches!(model, Some(LoadModel::Closed { .. }));
    if !closed {
        for (v, field) in [
            (&l.pace, "pace"),
            (&l.iterations_per_user, "iterations_per_user"),
        ] {
            if let Some(v) = v {
                c.err(pos(v), format!("`{field}` applies to the closed model (`users:`); the open model starts iterations at `rate`"));
            }
        }
    }
    if let (Some(p), Some(w)) = (&l.pace, &l.wait) {
        let _ = p;
        c.err(pos(w), "`wait` and `pace` both set the time between a user's iterations; keep one (`pace` keeps a constant rate per user)");
    }
    if l.duration.is_none()
        && l.iterations.is_none()
        && l.iterations_per_user.is_none()
        && l.stages.is_none()
    {
        c.err(load_pos, "`load`: expected `duration:` (e.g. `30s`), `iterations:` (in total), `iterations_per_user:` or `stages:` to say when the run ends");
    }
    let duration = if stages.is_empty() {
        duration
    } else {
        Some(stages.iter().map(|s| s.duration).sum())
    };
    Some(Load {
        model: model?,
        duration,
        iterations,
        drain: drain.unwrap_or(DEFAULT_DRAIN),
        iterations_per_user,
        stages,
        pace,
    })
}

/// Checks `on_start` and `requests`: every step becomes a [`Request`],
/// every top-level entry an [`Entry`]. Variables a step's templates use
/// must be captured by an earlier step of its flow, by `on_start`, or be a
/// column of a data feed.
fn check_stages(c: &mut Checker, raw: &Spanned<Vec<raw::RawStage>>) -> Vec<Stage> {
    if raw.is_empty() {
        c.err(
            pos(raw),
            "`stages`: expected at least one stage, e.g. `[{ for: 30s, users: 10 }]`",
        );
    }
    let mut out = Vec::new();
    for st in raw.iter() {
        let duration = c.parse(&st.duration, "for", units::parse_duration);
        if duration == Some(Duration::ZERO) {
            c.err(
                pos(&st.duration),
                "`for`: expected a positive duration, got zero",
            );
        }
        let target = match (&st.users, &st.rate) {
            (Some(u), None) => c
                .parse(u, "users", units::parse_concurrency)
                .map(StageTarget::Users),
            (None, Some(r)) => c.parse(r, "rate", |text| match text.split_once("..") {
                Some((a, b)) => Ok(StageTarget::Rate {
                    from: Rate::parse(a.trim())?,
                    to: Rate::parse(b.trim())?,
                }),
                None => {
                    let r = Rate::parse(text)?;
                    Ok(StageTarget::Rate { from: r, to: r })
                }
            }),
            _ => {
                c.err(pos(&st.duration), "a stage gives `users: N` (closed model) or `rate: 100/s` / `rate: 100/s..500/s` (open model)");
                None
            }
        };
        if let (Some(duration), Some(target)) = (duration, target) {
            out.push(Stage { duration, target });
        }
    }
    out
}
