use super::*;
use crate::scenario::units::DurationRange;

#[test]
fn describes_ramping_users() {
    let mut load = Load {
        model: LoadModel::Closed {
            users: 10,
            spawn_rate: crate::scenario::units::Rate::per_second(2.0),
            wait: DurationRange {
                min: Duration::ZERO,
                max: Duration::ZERO,
            },
        },
        duration: None,
        iterations: None,
        drain: Duration::ZERO,
        iterations_per_user: None,
        stages: Vec::new(),
        pace: None,
    };
    assert_eq!(
        describe_load(&load, None, Duration::from_millis(1500)),
        "4/10 users"
    );
    assert_eq!(
        describe_load(&load, None, Duration::from_secs(60)),
        "10/10 users"
    );
    load.stages = vec![
        crate::scenario::Stage {
            duration: Duration::from_secs(10),
            target: crate::scenario::StageTarget::Users(10),
        },
        crate::scenario::Stage {
            duration: Duration::from_secs(10),
            target: crate::scenario::StageTarget::Users(4),
        },
    ];
    let p = UserProfile::new(&load.stages, Some(2.0));
    assert_eq!(
        describe_load(&load, Some(&p), Duration::from_secs(3)),
        "stage 1/2 · 6/10 users"
    );
    assert_eq!(
        describe_load(&load, Some(&p), Duration::from_secs(19)),
        "stage 2/2 · 4/10 users"
    );
}

/// Answers 200 to every call but the `panic_at`-th, where it panics.
#[derive(Clone)]
struct PanicsOnce {
    calls: Arc<AtomicU64>,
    panic_at: u64,
}

impl ExecutorFactory for PanicsOnce {
    type Executor = PanicsOnce;
    fn build(&self) -> Result<PanicsOnce, String> {
        Ok(self.clone())
    }
}

impl crate::exec::Executor for PanicsOnce {
    async fn execute(&self, _: usize, _: &mut crate::exec::Scratch) -> crate::exec::CallResult {
        if self.calls.fetch_add(1, Ordering::Relaxed) == self.panic_at {
            panic!("call {} went wrong", self.panic_at);
        }
        tokio::task::yield_now().await;
        crate::exec::CallResult::Status(200)
    }

    fn accepts(&self, _: usize, _: crate::outcome::Outcome) -> bool {
        true
    }
}

#[test]
fn a_panicking_worker_stops_the_run_and_keeps_what_it_recorded() {
    let load = Load {
        model: LoadModel::Closed {
            users: 4,
            spawn_rate: None,
            wait: DurationRange {
                min: Duration::ZERO,
                max: Duration::ZERO,
            },
        },
        duration: Some(Duration::from_secs(60)),
        iterations: Some(1_000_000),
        drain: Duration::from_secs(5),
        iterations_per_user: None,
        stages: Vec::new(),
        pace: None,
    };
    let factory = PanicsOnce {
        calls: Arc::new(AtomicU64::new(0)),
        panic_at: 500,
    };
    let plan = EnginePlan::of_requests(load, &[1], 2);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = rt
        .block_on(run(
            factory,
            &plan,
            CancellationToken::new(),
            CancellationToken::new(),
            |_| None,
        ))
        .unwrap();
    let failure = out.failure.expect("the panic is reported");
    assert!(failure.contains("call 500 went wrong"), "{failure}");
    // The calls before the panic are kept (but the few in flight on the
    // other users, cut off as unknown), and the run stopped far short.
    let recorded = out.totals.total().count();
    assert!((490..1_000_000).contains(&recorded), "{recorded}");
}
