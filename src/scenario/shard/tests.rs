use std::path::Path;
use std::time::Duration;

use super::*;

fn scenario(load: &str) -> Scenario {
    let text = format!(
        "name: s\ntargets: {{ web: {{ url: \"http://127.0.0.1:1\" }} }}\nload: {load}\nrequests:\n  - {{ name: a, http: {{ target: web, path: \"/{{{{ seq() }}}}\" }} }}\n"
    );
    crate::scenario::parse(Path::new("s.yaml"), &text).expect("valid scenario")
}

fn shards(n: u32) -> impl Iterator<Item = Shard> {
    (0..n).map(move |index| Shard { index, count: n })
}

#[test]
fn parses_index_and_count() {
    assert_eq!(Shard::parse("2/4", None), Ok(Shard { index: 2, count: 4 }));
    assert_eq!(
        Shard::parse("4", Some("3")),
        Ok(Shard { index: 3, count: 4 })
    );
    assert!(
        Shard::parse("4/4", None)
            .unwrap_err()
            .contains("numbered 0 to 3")
    );
    assert!(
        Shard::parse("0/0", None)
            .unwrap_err()
            .contains("at least 1")
    );
    assert!(Shard::parse("4", None).unwrap_err().contains(INDEX_ENV));
    assert!(
        Shard::parse("a/b", None)
            .unwrap_err()
            .contains("expected `I/N`")
    );
}

#[test]
fn users_and_iterations_are_dealt_round_robin() {
    let s = scenario("{ users: 5, iterations: 10, spawn_rate: 6/s }");
    let parts: Vec<Load> = shards(3)
        .map(|sh| split_load(&s.parts[0].load, sh).unwrap())
        .collect();
    let users: Vec<u64> = parts
        .iter()
        .map(|l| match l.model {
            LoadModel::Closed { users, .. } => users,
            LoadModel::Open { .. } => unreachable!(),
        })
        .collect();
    assert_eq!(users, [2, 2, 1]);
    let iterations: Vec<u64> = parts.iter().map(|l| l.iterations.unwrap()).collect();
    assert_eq!(iterations, [4, 3, 3]);
    let LoadModel::Closed { spawn_rate, .. } = &parts[2].model else {
        unreachable!()
    };
    assert_eq!(spawn_rate.unwrap().get(), 2.0);
}

#[test]
fn stages_add_up_at_every_level() {
    let s = scenario(
        "{ stages: [{ for: 1s, users: 7 }, { for: 1s, users: 2 }, { for: 1s, users: 10 }] }",
    );
    let parts: Vec<Load> = shards(4)
        .map(|sh| split_load(&s.parts[0].load, sh).unwrap())
        .collect();
    for (i, stage) in s.parts[0].load.stages.iter().enumerate() {
        let StageTarget::Users(whole) = stage.target else {
            unreachable!()
        };
        let sum: u64 = parts
            .iter()
            .map(|l| match l.stages[i].target {
                StageTarget::Users(u) => u,
                StageTarget::Rate { .. } => unreachable!(),
            })
            .sum();
        assert_eq!(sum, whole);
        assert!(parts.iter().all(|l| l.stages[i].duration == stage.duration));
    }
}

#[test]
fn rates_are_divided() {
    let s = scenario("{ stages: [{ for: 2s, rate: 30/s..90/s }], max_in_flight: 10 }");
    for sh in shards(3) {
        let l = split_load(&s.parts[0].load, sh).unwrap();
        assert_eq!(
            l.stages[0].target,
            StageTarget::Rate {
                from: Rate::per_second(10.0).unwrap(),
                to: Rate::per_second(30.0).unwrap()
            }
        );
        assert_eq!(l.duration, Some(Duration::from_secs(2)));
    }
}

#[test]
fn too_few_users_for_the_shards_is_an_error() {
    let s = scenario("{ users: 2, duration: 1s }");
    let e = split_load(&s.parts[0].load, Shard { index: 2, count: 3 }).unwrap_err();
    assert!(e.contains("users: 2 cannot be split over 3 shards"), "{e}");
}

#[test]
fn unique_rows_are_partitioned_and_others_kept() {
    let feed = |draw| Feed {
        name: "f".into(),
        columns: vec!["c".into()],
        rows: (0..7).map(|i| vec![i.to_string()]).collect(),
        draw,
        exhausted: crate::scenario::Exhausted::Stop,
        first_slot: 0,
    };
    let mut seen = Vec::new();
    for sh in shards(3) {
        let mut feeds = vec![feed(Draw::Unique), feed(Draw::Sequential)];
        split_feeds(&mut feeds, sh).unwrap();
        assert_eq!(feeds[1].rows.len(), 7);
        seen.extend(feeds[0].rows.iter().map(|r| r[0].clone()));
    }
    assert_eq!(seen, ["0", "1", "2", "3", "4", "5", "6"]);
    let mut feeds = vec![feed(Draw::Unique)];
    let e = split_feeds(&mut feeds, Shard { index: 7, count: 8 }).unwrap_err();
    assert!(e.contains("7 rows, fewer than 8 shards"), "{e}");
}

#[test]
fn hash_follows_the_text_and_load_overrides() {
    let s = scenario("{ users: 2, duration: 1s }");
    let base = scenario_hash(&s.file, &Overrides::default());
    assert_eq!(base.len(), 64);
    assert_eq!(base, scenario_hash(&s.file, &Overrides::default()));
    let users = Overrides {
        users: Some(crate::scenario::Scoped {
            scenario: None,
            value: 3,
        }),
        ..Default::default()
    };
    assert_ne!(base, scenario_hash(&s.file, &users));
    let target = Overrides {
        targets: vec![("web".into(), "http://127.0.0.1:2".into())],
        ..Default::default()
    };
    assert_eq!(base, scenario_hash(&s.file, &target));
    let other = scenario("{ users: 3, duration: 1s }");
    assert_ne!(base, scenario_hash(&other.file, &Overrides::default()));
}
