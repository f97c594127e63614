//! `redproof verify RESULTS.json`: verification after the fact, for the
//! window of a recorded run, from the results file's client side and the
//! scenario's verify section it stores.

use anyhow::anyhow;

use super::exit::{Exit, Failure, exit_code, fail};
use crate::cli::{OutputArgs, VerifyArgs};
use crate::metrics::{MetricSource, Prometheus, Scraper, SourceError};
use crate::report::{RunReport, render_text};
use crate::scenario::verification::Verification;
use crate::secrets::scrub;
use crate::verify::{self, ClientRun};

/// Text for the terminal: control characters escaped, values read from
/// the environment masked.
fn shown(s: &str) -> String {
    scrub(&crate::printable::escape_controls(s)).into_owned()
}

pub(super) async fn run(args: VerifyArgs) -> Result<Exit, Failure> {
    let file = args.file.display().to_string();
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| fail(Exit::Usage, anyhow!("cannot read `{file}`: {e}")))?;
    let report =
        RunReport::from_json(&text).map_err(|e| fail(Exit::Usage, anyhow!("`{file}`: {e}")))?;
    verify_results(report, &file, args.prometheus.as_deref(), &args.output).await
}

/// Verifies the recorded run `report` (read from `file`) against
/// Prometheus, then prints and writes the report as a run does.
pub(super) async fn verify_results(
    mut report: RunReport,
    file: &str,
    prometheus: Option<&str>,
    output: &OutputArgs,
) -> Result<Exit, Failure> {
    let usage = |e: String| fail(Exit::Usage, anyhow!("`{file}`: {e}"));
    let mut spec = report.verify_spec.clone().ok_or_else(|| {
        usage("the results file holds no verify section: its scenario asked for no verification, or an older redproof wrote it".into())
    })?;
    if let Some(url) = prometheus {
        spec.prometheus = Some(url.to_owned());
        spec.scrape.clear();
    }
    if spec.prometheus.is_none() {
        return Err(usage(
            "the run was verified with the embedded scraper, which keeps no past: give --prometheus URL of a Prometheus that scraped the same targets".into(),
        ));
    }
    let verification = Verification::from_spec(&spec, report.requests.len()).map_err(usage)?;
    let metrics = &verification.metrics;
    let url = metrics.prometheus.as_ref().expect("checked above");
    let token = match &metrics.token_env {
        Some(var) => Some(std::env::var(var).map_err(|_| {
            fail(
                Exit::Usage,
                anyhow!("metrics.token_env names `{var}`, which is not set in the environment"),
            )
        })?),
        None => None,
    };
    let source = Prometheus::new(url, token, metrics.max_response)
        .map_err(|e| fail(Exit::Usage, anyhow!(e)))?;
    let stats = report.request_stats().map_err(usage)?;
    let summary = report.summary().map_err(usage)?;
    let names: Vec<String> = report.requests.iter().map(|r| r.name.clone()).collect();
    let client = ClientRun::from_results(
        &names,
        &stats,
        &report.windows,
        report.timing.t0_unix_ms as i64,
        report.timing.t1_unix_ms as i64,
        report.timing.load_s,
    );
    report.verification = None;
    report.verification_error = None;
    report.verification_unavailable = false;
    let outcome = match source.check().await {
        Err(e) => Err(e),
        Ok(_) => verify::verify_after(&source, &verification, &client).await,
    };
    let down = matches!(outcome, Err(SourceError::Unavailable(_)));
    let message = outcome.as_ref().err().map(ToString::to_string);
    report.attach_verification(outcome.map_err(|e| e.to_string()), &summary);
    report.verification_unavailable = down;
    anstream::print!("{}", scrub(&render_text(&report, &summary)));
    super::run::write_outputs(output, &report, &summary)?;
    if let Some(e) = message {
        eprintln!("error: verification not run: {}", shown(&e));
    }
    Ok(exit_code(&report))
}

/// Preflight before a run's load: prints what it found; `Some(exit
/// code)` when the run must stop before sending anything.
pub(super) async fn preflight<M: MetricSource>(
    source: &M,
    v: &Verification,
    quiet: bool,
) -> Option<Exit> {
    let p = match verify::preflight::preflight(source, v, crate::metrics::now_ms()).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: preflight: {}", shown(&e.to_string()));
            eprintln!("hint: nothing was sent; --no-preflight runs the load anyway");
            return Some(if matches!(e, SourceError::Unavailable(_)) {
                Exit::Unavailable
            } else {
                Exit::VerificationFailed
            });
        }
    };
    for w in &p.warnings {
        eprintln!("preflight: note: {}", shown(w));
    }
    if !p.failures.is_empty() {
        for f in &p.failures {
            eprintln!(
                "FAIL {}  {}\n  → {}\n  query: {}",
                f.name(),
                shown(&f.summary),
                shown(f.diagnosis.as_deref().unwrap_or_default()),
                shown(&f.query)
            );
        }
        eprintln!(
            "error: preflight failed: {} verify entr{} can never match; nothing was sent (--no-preflight runs the load anyway)",
            p.failures.len(),
            if p.failures.len() == 1 { "y" } else { "ies" }
        );
        return Some(Exit::VerificationFailed);
    }
    if !quiet {
        eprintln!(
            "preflight: {} answers, {} target{} scraped{}",
            shown(&source.describe()),
            p.targets,
            if p.targets == 1 { "" } else { "s" },
            p.interval
                .map(|i| format!(" every {}s", i.as_secs_f64()))
                .unwrap_or_default()
        );
    }
    None
}

/// Preflight for the embedded scraper, after its baseline scrape: a page
/// that is down stops the run before any traffic (exit 69 when nothing
/// answered, 2 when a page answered with an error or with text that is
/// not a metrics page), then the checks every source gets.
pub(super) async fn preflight_scraper(
    source: &Scraper,
    v: &Verification,
    quiet: bool,
) -> Option<Exit> {
    let down = source.down();
    if down.is_empty() {
        return preflight(source, v, quiet).await;
    }
    for page in &down {
        eprintln!(
            "error: preflight: metrics page {} is down: {}",
            shown(&page.url),
            shown(&page.error)
        );
    }
    let unreachable = down.iter().any(|p| p.unreachable);
    eprintln!(
        "hint: nothing was sent; {}, or run the load anyway with --no-preflight",
        if unreachable {
            "start the service or fix the address in metrics.scrape"
        } else {
            "fix the path in metrics.scrape (it must serve the Prometheus text format)"
        }
    );
    Some(if unreachable {
        Exit::Unavailable
    } else {
        Exit::VerificationFailed
    })
}
