//! Load profiles over time: how many users are active (closed model) and
//! when each arrival is due (open model), for constant loads and for
//! `stages`. Times are seconds from the load start (T0).

use crate::scenario::{Load, LoadModel, Stage, StageTarget};

/// A piece of a piecewise-linear function of time.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Piece {
    t0: f64,
    t1: f64,
    v0: f64,
    v1: f64,
}

impl Piece {
    fn at(&self, t: f64) -> f64 {
        if self.t1 <= self.t0 {
            return self.v1;
        }
        self.v0 + (self.v1 - self.v0) * ((t - self.t0) / (self.t1 - self.t0))
    }
}

/// Closed model: the number of active users over time. User `w` (counting
/// from 0) is active while the level is above `w`; users leave from the
/// highest index down.
#[derive(Debug, Clone)]
pub struct UserProfile {
    pieces: Vec<Piece>,
}

impl UserProfile {
    /// The profile of `stages`: during each stage the level moves toward
    /// the stage's users at `spawn_rate` users per second (at once when no
    /// rate is given), then holds.
    pub fn new(stages: &[Stage], spawn_rate: Option<f64>) -> Self {
        let mut pieces = Vec::new();
        let (mut t, mut level) = (0.0_f64, 0.0_f64);
        for s in stages {
            let StageTarget::Users(target) = s.target else {
                continue;
            };
            let target = target as f64;
            let end = t + s.duration.as_secs_f64();
            let ramp_end = match spawn_rate {
                Some(r) if r > 0.0 => (t + (target - level).abs() / r).min(end),
                _ => t,
            };
            let reached = if ramp_end >= end && ramp_end > t {
                level + (target - level).signum() * spawn_rate.unwrap_or(0.0) * (end - t)
            } else {
                target
            };
            if ramp_end > t {
                pieces.push(Piece {
                    t0: t,
                    t1: ramp_end,
                    v0: level,
                    v1: reached,
                });
            }
            if end > ramp_end {
                pieces.push(Piece {
                    t0: ramp_end,
                    t1: end,
                    v0: reached,
                    v1: reached,
                });
            }
            t = end;
            level = reached;
        }
        Self { pieces }
    }

    /// Active users at `t` (the last level holds after the end).
    pub fn level(&self, t: f64) -> f64 {
        match self.pieces.iter().find(|p| t < p.t1) {
            Some(p) => p.at(t.max(p.t0)),
            None => self.pieces.last().map_or(0.0, |p| p.v1),
        }
    }

    pub fn is_active(&self, user: u64, t: f64) -> bool {
        self.level(t) >= user as f64 + 1.0 - 1e-9
    }

    /// The first time at or after `t` when `user` is active; `None` when it
    /// never is again.
    pub fn next_active(&self, user: u64, t: f64) -> Option<f64> {
        let need = user as f64 + 1.0;
        if self.is_active(user, t) {
            return Some(t);
        }
        for p in self.pieces.iter().filter(|p| p.t1 > t) {
            let from = t.max(p.t0);
            if p.at(from) >= need - 1e-9 {
                return Some(from);
            }
            if p.v1 >= need - 1e-9 && p.v1 > p.v0 {
                let at = p.t0 + (need - p.v0) / (p.v1 - p.v0) * (p.t1 - p.t0);
                return Some(at.max(from));
            }
        }
        None
    }

    /// Which stage `t` falls in (0-based), or `None` after the last.
    pub fn stage_at(stages: &[Stage], t: f64) -> Option<usize> {
        let mut end = 0.0;
        for (i, s) in stages.iter().enumerate() {
            end += s.duration.as_secs_f64();
            if t < end {
                return Some(i);
            }
        }
        None
    }
}

/// Open model: the arrival rate over time, and when arrival `k` is due.
#[derive(Debug, Clone)]
pub struct RateProfile {
    /// Rate (per second) pieces; after the last, arrivals stop.
    pieces: Vec<Piece>,
    /// Arrivals before each piece.
    before: Vec<f64>,
    /// A constant rate without end (no stages).
    constant: Option<f64>,
}

impl RateProfile {
    pub fn of(load: &Load) -> Option<Self> {
        let LoadModel::Open { rate, .. } = load.model else {
            return None;
        };
        if load.stages.is_empty() {
            return Some(Self {
                pieces: Vec::new(),
                before: Vec::new(),
                constant: Some(rate.get()),
            });
        }
        let mut pieces = Vec::new();
        let mut before = Vec::new();
        let (mut t, mut n) = (0.0, 0.0);
        for s in &load.stages {
            let StageTarget::Rate { from, to } = s.target else {
                continue;
            };
            let d = s.duration.as_secs_f64();
            let p = Piece {
                t0: t,
                t1: t + d,
                v0: from.get(),
                v1: to.get(),
            };
            before.push(n);
            n += (p.v0 + p.v1) / 2.0 * d;
            pieces.push(p);
            t += d;
        }
        Some(Self {
            pieces,
            before,
            constant: None,
        })
    }

    /// Arrivals due in `[0, t)`.
    pub fn arrivals(&self, t: f64) -> f64 {
        if let Some(r) = self.constant {
            return r * t;
        }
        let mut total = 0.0;
        for (p, n) in self.pieces.iter().zip(&self.before) {
            if t <= p.t0 {
                break;
            }
            let tau = t.min(p.t1) - p.t0;
            total = n + (p.v0 + p.at(p.t0 + tau)) / 2.0 * tau;
        }
        total
    }

    /// When arrival `k` (0-based) is due, in seconds; `None` past the end.
    pub fn due(&self, k: u64) -> Option<f64> {
        let k = k as f64;
        if let Some(r) = self.constant {
            return Some(k / r);
        }
        for (p, n) in self.pieces.iter().zip(&self.before) {
            let d = p.t1 - p.t0;
            let in_piece = (p.v0 + p.v1) / 2.0 * d;
            if k < n + in_piece {
                // n + v0·τ + (v1 − v0)·τ²/(2d) = k, solved in a form that is
                // stable for rising, falling and flat rates.
                let delta = k - n;
                let a = (p.v1 - p.v0) / (2.0 * d);
                let b = p.v0;
                let disc = (b * b + 4.0 * a * delta).max(0.0);
                let denom = b + disc.sqrt();
                let tau = if denom > 0.0 {
                    2.0 * delta / denom
                } else {
                    0.0
                };
                return Some(p.t0 + tau.min(d));
            }
        }
        None
    }

    /// The rate at `t`, per second.
    pub fn rate_at(&self, t: f64) -> f64 {
        if let Some(r) = self.constant {
            return r;
        }
        self.pieces
            .iter()
            .find(|p| t < p.t1)
            .map_or(0.0, |p| p.at(t.max(p.t0)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::scenario::units::Rate;

    fn users(secs: u64, n: u64) -> Stage {
        Stage {
            duration: Duration::from_secs(secs),
            target: StageTarget::Users(n),
        }
    }

    #[test]
    fn users_ramp_at_the_spawn_rate_and_leave_from_the_top() {
        let p = UserProfile::new(&[users(10, 10), users(10, 4)], Some(2.0));
        assert_eq!(p.level(0.0), 0.0);
        assert!((p.level(2.5) - 5.0).abs() < 1e-9);
        assert_eq!(p.level(7.0), 10.0);
        assert!((p.level(11.0) - 8.0).abs() < 1e-9);
        assert_eq!(p.level(15.0), 4.0);
        assert_eq!(p.level(100.0), 4.0);
        assert!(p.is_active(4, 3.0) && !p.is_active(5, 2.9));
        assert_eq!(p.next_active(5, 0.0), Some(3.0));
        assert_eq!(p.next_active(9, 12.0), None);
        assert_eq!(p.next_active(0, 30.0), Some(30.0));
        // Without a spawn rate the level jumps.
        let p = UserProfile::new(&[users(5, 3), users(5, 6)], None);
        assert_eq!(p.level(0.0), 3.0);
        assert_eq!(p.level(5.0), 6.0);
        assert_eq!(p.next_active(4, 1.0), Some(5.0));
    }

    #[test]
    fn a_ramp_that_cannot_finish_stops_where_the_stage_ends() {
        let p = UserProfile::new(&[users(2, 10), users(2, 10)], Some(1.0));
        assert!((p.level(2.0) - 2.0).abs() < 1e-9);
        assert!((p.level(4.0) - 4.0).abs() < 1e-9);
    }

    #[test]
    fn arrivals_follow_constant_and_linear_rates() {
        let r = |a: f64, b: f64, secs: u64| Stage {
            duration: Duration::from_secs(secs),
            target: StageTarget::Rate {
                from: Rate::per_second(a).unwrap(),
                to: Rate::per_second(b).unwrap(),
            },
        };
        let load = Load {
            model: LoadModel::Open {
                rate: Rate::per_second(100.0).unwrap(),
                max_in_flight: 10,
            },
            duration: Some(Duration::from_secs(30)),
            iterations: None,
            drain: Duration::ZERO,
            iterations_per_user: None,
            stages: vec![r(100.0, 100.0, 10), r(100.0, 300.0, 20)],
            pace: None,
        };
        let p = RateProfile::of(&load).unwrap();
        assert!((p.arrivals(10.0) - 1000.0).abs() < 1e-6);
        // 1000 + (100 + 300) / 2 · 20 = 5000 in all.
        assert!((p.arrivals(30.0) - 5000.0).abs() < 1e-6);
        assert!((p.rate_at(20.0) - 200.0).abs() < 1e-9);
        assert!((p.due(500).unwrap() - 5.0).abs() < 1e-9);
        for k in [1000_u64, 1500, 3000, 4999] {
            let t = p.due(k).unwrap();
            assert!((p.arrivals(t) - k as f64).abs() < 1e-6, "{k} at {t}");
        }
        assert_eq!(p.due(5000), None);
    }
}
