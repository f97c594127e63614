//! A load profile in words, as the report's header gives it: the model,
//! then users or rates with their ramp, spawn rate and iterations.

use super::{LoadInfo, StageInfo};
use crate::scenario::units::thousands;

/// `closed model, 20 users, spawn 5/s`, `closed model, users 10 → 20 → 5
/// over 30s (10s each)`, `open model, rate 50/s → 200/s over 1m`.
pub(super) fn describe(load: &LoadInfo) -> String {
    let mut parts = vec![format!("{} model", load.model)];
    let users_staged = load.stages.iter().any(|s| s.users.is_some());
    let rate_staged = load.stages.iter().any(|s| s.rate_to.is_some());
    if users_staged {
        let points: Vec<String> = load
            .stages
            .iter()
            .map(|s| thousands(s.users.unwrap_or(0)))
            .collect();
        parts.push(format!(
            "users {}{}",
            points.join(" → "),
            over(&load.stages)
        ));
    } else if rate_staged {
        parts.push(format!(
            "rate {}{}",
            rate_points(&load.stages),
            over(&load.stages)
        ));
    } else {
        if let Some(u) = load.users {
            parts.push(format!(
                "{} user{}",
                thousands(u),
                if u == 1 { "" } else { "s" }
            ));
        }
        if let Some(r) = load.rate {
            parts.push(rate(r));
        }
    }
    if let Some(r) = load.spawn_rate {
        parts.push(format!("spawn {}", rate(r)));
    }
    if let Some(n) = load.iterations {
        parts.push(format!(
            "{} iteration{}",
            thousands(n),
            if n == 1 { "" } else { "s" }
        ));
    }
    parts.join(", ")
}

/// The rates a ramp passes through: each stage's end, and its start
/// where that is not the previous stage's end.
fn rate_points(stages: &[StageInfo]) -> String {
    let mut points: Vec<f64> = Vec::new();
    for s in stages {
        if let Some(from) = s.rate_from
            && points.last() != Some(&from)
        {
            points.push(from);
        }
        if let Some(to) = s.rate_to {
            points.push(to);
        }
    }
    let text: Vec<String> = points.into_iter().map(rate).collect();
    text.join(" → ")
}

/// ` over 30s (10s each)` or ` over 2m (30s, 1m, 30s)`.
fn over(stages: &[StageInfo]) -> String {
    let total: f64 = stages.iter().map(|s| s.for_s).sum();
    let each = if stages.len() < 2 {
        String::new()
    } else if stages.iter().all(|s| s.for_s == stages[0].for_s) {
        format!(" ({} each)", secs(stages[0].for_s))
    } else {
        let all: Vec<String> = stages.iter().map(|s| secs(s.for_s)).collect();
        format!(" ({})", all.join(", "))
    };
    format!(" over {}{each}", secs(total))
}

/// `200/s`, `0.5/s`.
fn rate(r: f64) -> String {
    if r.fract() == 0.0 {
        format!("{}/s", thousands(r as u64))
    } else {
        format!("{}/s", (r * 1000.0).round() / 1000.0)
    }
}

/// `45s`, `2m`, `1m30s`, `1h5m`, `1.5s`.
fn secs(s: f64) -> String {
    if s.fract() != 0.0 || s < 60.0 {
        return format!("{}s", (s * 10.0).round() / 10.0);
    }
    let s = s as u64;
    let (h, m, sec) = (s / 3600, s / 60 % 60, s % 60);
    let mut o = String::new();
    if h > 0 {
        o += &format!("{h}h");
    }
    if m > 0 {
        o += &format!("{m}m");
    }
    if sec > 0 {
        o += &format!("{sec}s");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(model: &str) -> LoadInfo {
        LoadInfo {
            model: model.into(),
            users: None,
            rate: None,
            spawn_rate: None,
            duration_s: Some(30.0),
            iterations: None,
            drain_s: 1.0,
            stages: Vec::new(),
        }
    }

    fn users(for_s: f64, users: u64) -> StageInfo {
        StageInfo {
            for_s,
            users: Some(users),
            rate_from: None,
            rate_to: None,
        }
    }

    fn rates(for_s: f64, from: f64, to: f64) -> StageInfo {
        StageInfo {
            for_s,
            users: None,
            rate_from: Some(from),
            rate_to: Some(to),
        }
    }

    #[test]
    fn constant_loads() {
        let mut closed = load("closed");
        closed.users = Some(20);
        assert_eq!(describe(&closed), "closed model, 20 users");
        closed.spawn_rate = Some(5.0);
        closed.iterations = Some(10_000);
        assert_eq!(
            describe(&closed),
            "closed model, 20 users, spawn 5/s, 10,000 iterations"
        );
        let mut open = load("open");
        open.rate = Some(0.5);
        assert_eq!(describe(&open), "open model, 0.5/s");
    }

    #[test]
    fn ramps_name_every_stage_and_their_length() {
        let mut closed = load("closed");
        closed.users = Some(20);
        closed.spawn_rate = Some(10.0);
        closed.stages = vec![users(10.0, 10), users(10.0, 20), users(10.0, 5)];
        assert_eq!(
            describe(&closed),
            "closed model, users 10 → 20 → 5 over 30s (10s each), spawn 10/s"
        );
        let mut open = load("open");
        open.rate = Some(100.0);
        open.stages = vec![rates(30.0, 100.0, 100.0), rates(60.0, 100.0, 500.0)];
        assert_eq!(
            describe(&open),
            "open model, rate 100/s → 100/s → 500/s over 1m30s (30s, 1m)"
        );
        open.stages = vec![rates(90.0, 50.0, 200.0)];
        assert_eq!(describe(&open), "open model, rate 50/s → 200/s over 1m30s");
    }

    #[test]
    fn durations_read_as_written() {
        assert_eq!(secs(45.0), "45s");
        assert_eq!(secs(120.0), "2m");
        assert_eq!(secs(3900.0), "1h5m");
        assert_eq!(secs(1.5), "1.5s");
    }
}
