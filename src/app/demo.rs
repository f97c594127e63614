//! `redproof demo`: starts the polls and bank demo services in this
//! process on free loopback ports, points the bundled scenario
//! (`scenarios/demo.yaml`) at them and runs it with the embedded scraper.

use std::time::Duration;

use anyhow::anyhow;
use redproof_services::bank::{self, BankOptions};
use redproof_services::faults::{Fault, Faults};
use redproof_services::polls::{self, PollsOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::exit::{Exit, Failure, fail};
use super::run::{RunSettings, run_scenario};
use crate::cli::DemoArgs;
use crate::scenario::{self, Overrides, units};

/// The bundled scenario, written for the services' usual ports.
pub const SCENARIO: &str = include_str!("../../scenarios/demo.yaml");

pub async fn run(args: DemoArgs) -> Result<Exit, Failure> {
    if args.print_scenario {
        print!("{SCENARIO}");
        return Ok(Exit::Pass);
    }
    let flags: Vec<Fault> = args
        .faults
        .iter()
        .map(|f| f.parse::<Fault>())
        .collect::<Result<_, _>>()
        .map_err(|e| fail(Exit::Usage, anyhow!("--fault: {e}")))?;
    let faults = Faults::from_flags(&flags);
    let duration = args
        .duration
        .as_deref()
        .map(units::parse_duration)
        .transpose()
        .map_err(|e| fail(Exit::Usage, anyhow!("--duration: {e}")))?;

    let bind = || async {
        TcpListener::bind("127.0.0.1:0").await.map_err(|e| {
            fail(
                Exit::Unavailable,
                anyhow!("cannot bind a loopback port: {e}"),
            )
        })
    };
    let (polls_l, bank_l) = (bind().await?, bind().await?);
    let polls_addr = polls_l.local_addr().map_err(|e| fail(Exit::Internal, e))?;
    let bank_addr = bank_l.local_addr().map_err(|e| fail(Exit::Internal, e))?;
    let shutdown = CancellationToken::new();
    let services = tokio::spawn({
        let shutdown = shutdown.clone();
        let faults = faults.clone();
        async move {
            let polls_opts = PollsOptions {
                mean: Duration::from_millis(100),
                stddev: Duration::from_millis(25),
                faults: faults.clone(),
            };
            let bank_opts = BankOptions {
                database: None,
                faults,
            };
            tokio::try_join!(
                polls::serve(polls_l, polls_opts, shutdown.clone()),
                bank::serve(bank_l, bank_opts, shutdown),
            )
        }
    });

    let text = SCENARIO
        .replace("127.0.0.1:8000", &polls_addr.to_string())
        .replace("127.0.0.1:8888", &bank_addr.to_string());
    let mut scenario = scenario::parse(std::path::Path::new("scenarios/demo.yaml"), &text)
        .map_err(|e| fail(Exit::Internal, anyhow!("the bundled scenario: {e}")))?;
    scenario
        .apply(&Overrides {
            duration,
            ..Default::default()
        })
        .map_err(|e| fail(Exit::Usage, anyhow!(e)))?;
    if !args.output.quiet {
        let names: Vec<String> = flags.iter().map(ToString::to_string).collect();
        eprintln!(
            "demo: polls on http://{polls_addr}, bank on http://{bank_addr}; faults: {}",
            if names.is_empty() {
                "none (healthy)".to_owned()
            } else {
                names.join(", ")
            }
        );
    }
    let settings = RunSettings {
        threads: Some(1),
        output: args.output,
        preflight: true,
        progress: args.progress,
        shard: None,
        start_at: None,
        live: None,
    };
    let result = run_scenario(scenario, "scenarios/demo.yaml (bundled)", &settings).await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), services).await;
    result
}
