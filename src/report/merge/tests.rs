use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::engine::EngineOutput;
use crate::measure::Recorder;
use crate::outcome::Outcome;
use crate::report::ShardInfo;
use crate::scenario::Scenario;

const SCENARIO: &str = "name: s\ntargets: { web: { url: \"http://127.0.0.1:1\" } }\nload: { users: 4, duration: 3s }\nrequests:\n  - { name: a, http: { target: web, path: / } }\n  - { name: b, http: { target: web, path: /b } }\nthresholds:\n  - all.count >= 12\n";

fn scenario() -> Scenario {
    crate::scenario::parse(Path::new("s.yaml"), SCENARIO).unwrap()
}

/// A shard that recorded `n` requests of `a` (200, `ms` each) in every
/// second of a 3 s load that started at `t0_ms`.
fn shard(index: u32, count: u32, t0_ms: u64, n: u64, ms: u64) -> (String, RunReport) {
    let mut totals = Recorder::new(2);
    let mut windows = Vec::new();
    for second in 1..=3 {
        let mut w = Recorder::new(2);
        for _ in 0..n {
            w.record(0, Outcome::Status(200), true, Duration::from_millis(ms));
        }
        w.record(1, Outcome::Status(500), false, Duration::from_millis(ms));
        totals.merge(&w);
        windows.push(Window::of(f64::from(second), &w, true));
    }
    let out = EngineOutput::completed(
        totals,
        windows,
        UNIX_EPOCH + Duration::from_millis(t0_ms),
        Duration::from_secs(3),
        1,
    );
    let (mut r, _) = RunReport::new(&scenario(), "s.yaml", &out);
    r.shard = Some(ShardInfo {
        index,
        count,
        scenario_hash: "ab".repeat(32),
    });
    (format!("shard-{index}.json"), r)
}

#[test]
fn adds_counts_windows_and_reevaluates_thresholds() {
    let t0 = 1_800_000_000_000;
    let (a, b) = (shard(0, 2, t0, 2, 10), shard(1, 2, t0 + 3, 1, 30));
    assert!(
        a.1.thresholds.iter().all(|t| !t.passed),
        "9 < 12 on a shard"
    );
    let (m, summary) = merge(vec![a, b]).unwrap();
    assert_eq!(summary.all.count, 15);
    assert_eq!(summary.rows[0].count, 9);
    assert_eq!(summary.rows[1].errors, 6);
    assert!(m.thresholds.iter().all(|t| t.passed));
    assert_eq!(m.windows.len(), 3);
    assert!(
        m.windows
            .iter()
            .all(|w| w.all.count == 5 && w.all.errors == 2)
    );
    // 2 of 3 responses of `a` took 10 ms, so the median is 10 ms.
    assert!((9_900..=10_100).contains(&m.windows[0].requests[0].p50_us));
    assert_eq!(m.load.users, Some(8));
    assert_eq!(m.merged.as_ref().map(|x| x.shards), Some(2));
    assert!(m.shard.is_none());
}

#[test]
fn refuses_missing_repeated_and_foreign_shards() {
    let t0 = 1_800_000_000_000;
    let e = merge(vec![shard(0, 3, t0, 1, 1), shard(2, 3, t0, 1, 1)]).unwrap_err();
    assert!(e.contains("shard 1/3 is missing"), "{e}");
    let e = merge(vec![shard(0, 2, t0, 1, 1), shard(0, 2, t0, 1, 1)]).unwrap_err();
    assert!(e.contains("shard 0/2 is given twice"), "{e}");
    let mut other = shard(1, 2, t0, 1, 1);
    other.1.shard.as_mut().unwrap().scenario_hash = "cd".repeat(32);
    let e = merge(vec![shard(0, 2, t0, 1, 1), other]).unwrap_err();
    assert!(e.contains("comes from another scenario"), "{e}");
    let mut plain = shard(1, 2, t0, 1, 1);
    plain.1.shard = None;
    let e = merge(vec![shard(0, 2, t0, 1, 1), plain]).unwrap_err();
    assert!(e.contains("without `--shard`"), "{e}");
}

#[test]
fn refuses_failed_and_disjoint_shards() {
    let t0 = 1_800_000_000_000;
    let mut failed = shard(1, 2, t0, 1, 1);
    failed.1.interrupted = true;
    let e = merge(vec![shard(0, 2, t0, 1, 1), failed]).unwrap_err();
    assert!(
        e.contains("shard 1/2 (`shard-1.json`) did not complete"),
        "{e}"
    );
    let e = merge(vec![shard(0, 2, t0, 1, 1), shard(1, 2, t0 + 60_000, 1, 1)]).unwrap_err();
    assert!(e.contains("windows do not overlap"), "{e}");
}

/// Each shard records its share of every scenario's load; the merged
/// report holds the file's loads again, stage by stage.
#[test]
fn adds_up_each_scenarios_load() {
    const MIXED: &str = "name: m\ntargets: { web: { url: \"http://127.0.0.1:1\" } }\nscenarios:\n  browse:\n    load: { stages: [ { for: 2s, users: 3 }, { for: 2s, users: 7 } ] }\n    requests:\n      - { name: page, http: { target: web, path: / } }\n  api:\n    load: { stages: [ { for: 4s, rate: 10/s..30/s } ], max_in_flight: 9 }\n    requests:\n      - { name: list, http: { target: web, path: /l } }\n";
    let whole = crate::scenario::parse(Path::new("m.yaml"), MIXED).unwrap();
    let t0 = 1_800_000_000_000;
    let quiet_two_parts = |t0_ms: u64| {
        EngineOutput::completed(
            Recorder::new(2),
            Vec::new(),
            UNIX_EPOCH + Duration::from_millis(t0_ms),
            Duration::from_secs(4),
            2,
        )
    };
    let shards = (0..3)
        .map(|index| {
            let mut s = whole.clone();
            let shard = crate::scenario::shard::Shard::parse(&format!("{index}/3"), None).unwrap();
            s.take_shard(shard).unwrap();
            let out = quiet_two_parts(t0);
            let (mut r, _) = RunReport::new(&s, "m.yaml", &out);
            r.shard = Some(ShardInfo {
                index,
                count: 3,
                scenario_hash: "ab".repeat(32),
            });
            (format!("shard-{index}.json"), r)
        })
        .collect::<Vec<_>>();
    let share = &shards[2].1.scenarios[0].load.stages;
    assert_eq!(share[1].users, Some(2), "7 users over 3 shards: 3, 2, 2");
    let (m, _) = merge(shards).unwrap();
    let (unsplit, _) = RunReport::new(&whole, "m.yaml", &quiet_two_parts(t0));
    let json = |l: &LoadInfo| serde_json::to_value(l).unwrap();
    for (merged, file) in m.scenarios.iter().zip(&unsplit.scenarios) {
        assert_eq!(json(&merged.load), json(&file.load), "{}", merged.name);
    }
    assert_eq!(m.scenarios[0].load.stages[1].users, Some(7));
    let rate = &m.scenarios[1].load.stages[0];
    assert!((rate.rate_to.unwrap() - 30.0).abs() < 1e-9, "{rate:?}");
}
