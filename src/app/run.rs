//! `redproof run`: load the scenario, run the engine, verify, report and
//! write every output.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow};
use tokio_util::sync::CancellationToken;

use super::exit::{Exit, Failure, exit_code, fail};
use super::signal::StopSignals;
use crate::cli::{OutputArgs, ProgressMode, RunArgs};
use crate::engine::{self, EnginePlan};
use crate::exec::CallPlan;
use crate::metrics::{MetricSource as _, Prometheus, Scraper, SourceError};
use crate::report::{
    ProgressDisplay, RunReport, ShardInfo, Summary, render_html, render_junit, render_markdown,
    render_text,
};
use crate::scenario::shard::{self, Shard};
use crate::scenario::units::{self, Rate};
use crate::scenario::verification::Verification;
use crate::scenario::{self, Diagnostic, Overrides, Scenario, ScenarioErrors, Scoped};
use crate::secrets::{scrub, scrub_json};
use crate::verify::{self, ClientRun, VerificationReport};

pub(super) fn load(path: &Path, overrides: &Overrides) -> Result<Scenario, ScenarioErrors> {
    let mut scenario = scenario::load_file(path)?;
    if let Err(e) = scenario.apply(overrides) {
        return Err(ScenarioErrors::new(path, "", vec![Diagnostic::at(None, e)]));
    }
    Ok(scenario)
}

fn overrides(a: &RunArgs) -> Result<Overrides, String> {
    let targets = a
        .targets
        .iter()
        .map(|t| {
            t.split_once('=')
                .map(|(n, u)| (n.to_owned(), u.to_owned()))
                .ok_or_else(|| format!("--target expects NAME=URL, got `{t}`"))
        })
        .collect::<Result<_, _>>()?;
    Ok(Overrides {
        duration: a
            .duration
            .as_deref()
            .map(units::parse_duration)
            .transpose()
            .map_err(|e| format!("--duration: {e}"))?,
        iterations: a
            .iterations
            .as_deref()
            .map(units::parse_count)
            .transpose()
            .map_err(|e| format!("--iterations: {e}"))?,
        users: a
            .users
            .as_deref()
            .map(|u| Scoped::parse(u, units::parse_concurrency))
            .transpose()
            .map_err(|e| format!("--users: {e}"))?,
        rate: a
            .rate
            .as_deref()
            .map(|r| Scoped::parse(r, Rate::parse))
            .transpose()
            .map_err(|e| format!("--rate: {e}"))?,
        targets,
        prometheus: a.prometheus.clone(),
    })
}

pub(super) async fn run(args: RunArgs) -> Result<Exit, Failure> {
    let ov = overrides(&args).map_err(|e| fail(Exit::Usage, anyhow!(e)))?;
    let mut scenario = match load(&args.file, &ov) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return Ok(Exit::Usage);
        }
    };
    let shard = match &args.shard {
        Some(text) => {
            let index_env = std::env::var(shard::INDEX_ENV).ok();
            let sh = Shard::parse(text, index_env.as_deref())
                .map_err(|e| fail(Exit::Usage, anyhow!("--shard: {e}")))?;
            let scenario_hash = shard::scenario_hash(&scenario.file, &ov);
            scenario.take_shard(sh).map_err(|e| {
                fail(
                    Exit::Usage,
                    anyhow!("--shard {sh}: `{}`: {e}", args.file.display()),
                )
            })?;
            Some(ShardInfo {
                index: sh.index,
                count: sh.count,
                scenario_hash,
            })
        }
        None => None,
    };
    let start_at = args
        .start_at
        .as_deref()
        .map(start_time)
        .transpose()
        .map_err(|e| fail(Exit::Usage, anyhow!("--start-at: {e}")))?;
    let live = super::live::Live::start(
        args.metrics_listen.as_deref(),
        args.metrics_linger.as_deref(),
    )
    .await?;
    let settings = RunSettings {
        threads: args.threads,
        output: args.output.clone(),
        preflight: !args.no_preflight,
        progress: args.progress,
        shard,
        start_at,
        live,
    };
    run_scenario(scenario, &args.file.display().to_string(), &settings).await
}

/// A start more than this late means the shards did not start together.
const START_SLACK: Duration = Duration::from_secs(1);

/// Reads `--start-at`: an RFC 3339 time that has not passed.
fn start_time(text: &str) -> Result<SystemTime, String> {
    let t: SystemTime = chrono::DateTime::parse_from_rfc3339(text.trim())
        .map_err(|e| {
            format!("expected an RFC 3339 time such as `2026-12-01T17:00:00Z`, got `{text}` ({e})")
        })?
        .into();
    if let Ok(late) = SystemTime::now().duration_since(t)
        && late > START_SLACK
    {
        return Err(format!(
            "`{text}` passed {:.1}s ago, so this run would not start with the others: give every shard a time far enough ahead for all of them to be ready",
            late.as_secs_f64()
        ));
    }
    Ok(t)
}

/// How a scenario is run, beyond the scenario itself.
pub(crate) struct RunSettings {
    pub threads: Option<usize>,
    pub output: OutputArgs,
    /// Check the metric source and the verify entries before the load.
    pub preflight: bool,
    pub progress: ProgressMode,
    /// This run is one shard: its results wait for `redproof merge`,
    /// which judges thresholds and verifies once for all shards.
    pub shard: Option<ShardInfo>,
    /// When the load starts (wall clock), for shards starting together.
    pub start_at: Option<SystemTime>,
    /// `--metrics-listen`: the client's figures served during the run.
    pub live: Option<super::live::Live>,
}

/// The metric source a run verifies against.
enum Source {
    Prometheus(Box<Prometheus>),
    Scraper(Arc<Scraper>),
}

impl Source {
    fn new(verification: &Verification) -> Result<Option<Self>, Failure> {
        let spec = &verification.metrics;
        if let Some(url) = &spec.prometheus {
            let token = match &spec.token_env {
                Some(var) => Some(std::env::var(var).map_err(|_| {
                    fail(
                        Exit::Usage,
                        anyhow!(
                            "metrics.token_env names `{var}`, which is not set in the environment"
                        ),
                    )
                })?),
                None => None,
            };
            return Ok(Some(Source::Prometheus(Box::new(
                Prometheus::new(url, token, spec.max_response)
                    .map_err(|e| fail(Exit::Usage, anyhow!(e)))?,
            ))));
        }
        if spec.scrape.is_empty() {
            return Ok(None);
        }
        Ok(Some(Source::Scraper(
            Scraper::new(
                &spec.scrape,
                spec.scrape_interval,
                spec.max_response,
                verify::convention::family_prefixes(&verification.entries),
            )
            .map_err(|e| fail(Exit::Usage, anyhow!(e)))?,
        )))
    }

    async fn verify(
        &self,
        scenario: &Scenario,
        client: &ClientRun,
    ) -> Result<VerificationReport, SourceError> {
        match self {
            Source::Prometheus(p) => {
                verify::verify(p.as_ref(), &scenario.verification, client).await
            }
            Source::Scraper(s) => verify::verify(s.as_ref(), &scenario.verification, client).await,
        }
    }
}

/// Fetches the descriptors of targets with `reflection: true` and checks
/// the calls made to them, before any traffic.
async fn resolve_by_reflection(scenario: &mut Scenario) -> Result<(), Failure> {
    let mut diagnostics = Vec::new();
    for t in scenario.reflection_targets() {
        let target = &scenario.targets[t];
        let pool = crate::exec::reflect(target).await.map_err(|e| {
            fail(
                Exit::Unavailable,
                anyhow!(
                    "target `{}` ({}): cannot read its services by reflection: {e}",
                    target.name,
                    target.url
                ),
            )
        })?;
        diagnostics.extend(scenario.resolve_target(t, pool));
    }
    if diagnostics.is_empty() {
        return Ok(());
    }
    let file = &scenario.file;
    eprintln!(
        "{}",
        ScenarioErrors::new(&file.path, &file.text, diagnostics)
    );
    Err(fail(
        Exit::Usage,
        anyhow!("the scenario's gRPC calls do not match the services the server reflects"),
    ))
}

/// Runs a loaded scenario: load, report, verification, outputs, exit code.
pub(crate) async fn run_scenario(
    scenario: Scenario,
    file: &str,
    settings: &RunSettings,
) -> Result<Exit, Failure> {
    let output = &settings.output;
    let mut scenario = scenario;
    resolve_by_reflection(&mut scenario).await?;
    let plan = Arc::new(CallPlan::new(&scenario).map_err(|e| fail(Exit::Usage, anyhow!(e)))?);
    super::limits::ensure_open_files(super::limits::open_files_needed(&scenario))
        .map_err(|e| fail(Exit::Usage, anyhow!(e)))?;
    let mut engine_plan = EnginePlan::new(
        &scenario,
        settings
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
    );
    engine_plan.window_histograms = settings.shard.is_some();
    engine_plan.start_at = settings.start_at;
    let sharded = settings.shard.is_some();

    // The metric source is checked before any traffic; an unreachable one
    // does not stop the run (the client figures are still worth having),
    // but verification is then reported as not run.
    let verification = &scenario.verification;
    let source = if verification.is_requested() {
        let source = Source::new(verification)?.ok_or_else(|| {
            fail(
                Exit::Usage,
                anyhow!(
                    "the scenario asks for verification but names no metric source: add `metrics: {{ scrape: [URL] }}` for the embedded scraper, `metrics: {{ prometheus: URL }}`, or --prometheus URL"
                ),
            )
        })?;
        Some(source)
    } else {
        None
    };
    let mut source_error = None;
    let stop_scraping = CancellationToken::new();
    match &source {
        Some(Source::Prometheus(p)) => {
            if let Err(e) = p.check().await {
                eprintln!(
                    "error: {}",
                    crate::printable::escape_controls(&e.to_string())
                );
                if settings.preflight {
                    eprintln!(
                        "hint: nothing was sent; fix the URL (metrics.prometheus or --prometheus), or run the load anyway with --no-preflight"
                    );
                    return Ok(Exit::Unavailable);
                }
                eprintln!("hint: the load still runs; verification will be reported as not run");
                source_error = Some(e.to_string());
            } else if settings.preflight
                && let Some(code) =
                    super::verify::preflight(p.as_ref(), verification, output.quiet).await
            {
                return Ok(code);
            }
        }
        Some(Source::Scraper(s)) if !sharded => {
            s.scrape_all().await;
            if settings.preflight
                && let Some(code) =
                    super::verify::preflight_scraper(s, verification, output.quiet).await
            {
                return Ok(code);
            }
            s.spawn(stop_scraping.clone());
        }
        Some(Source::Scraper(_)) | None => {}
    }
    if let (Some(sh), false) = (&settings.shard, output.quiet) {
        eprintln!(
            "shard {}/{}: thresholds and verification are judged once, on the results `redproof merge` adds up",
            sh.index, sh.count
        );
    }
    if let (Some(at), false) = (settings.start_at, output.quiet) {
        eprintln!(
            "starting the load at {}",
            chrono::DateTime::<chrono::Utc>::from(at)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
    }

    // First Ctrl-C (or SIGTERM): stop starting requests and drain. Second:
    // cut off in-flight requests at once. Either way the report is still
    // written.
    let interrupt = CancellationToken::new();
    let abort_now = CancellationToken::new();
    {
        let (interrupt, abort_now) = (interrupt.clone(), abort_now.clone());
        // Installed before the load starts, so an early signal still stops
        // the run gracefully.
        let mut signals = StopSignals::new();
        tokio::spawn(async move {
            signals.next().await;
            eprintln!(
                "\ninterrupted: stopping, waiting for in-flight requests (Ctrl-C again to cut them off)"
            );
            interrupt.cancel();
            signals.next().await;
            abort_now.cancel();
        });
    }

    let mut progress = ProgressDisplay::new(
        if output.quiet {
            ProgressMode::None
        } else {
            settings.progress
        },
        engine_plan.planned(),
        scenario
            .requests
            .iter()
            .map(|r| r.name.to_string())
            .collect(),
    );
    let live = settings.live.as_ref().map(|l| l.feed(&scenario));
    let engine_output = engine::run(plan, &engine_plan, interrupt.clone(), abort_now, |p| {
        progress.update(p);
        if let Some(live) = &live {
            live.update(p);
        }
        crate::report::abort_reason(&scenario, p)
    })
    .await
    .map_err(|e| fail(Exit::Internal, anyhow!(e)))?;
    progress.finish();
    if let Some(live) = &live {
        live.finish(&engine_output);
    }
    if let Some(why) = &engine_output.stopped_by {
        eprintln!("note: {}: the run stopped early", scrub(why));
    }
    if let Some(e) = &engine_output.failure {
        eprintln!(
            "error: {}; the run was stopped, and what it recorded is reported",
            scrub(&e.to_string())
        );
    }

    let (mut report, summary) = RunReport::new(&scenario, file, &engine_output);
    report.shard = settings.shard.clone();
    let mut source_down = false;
    if let Some(source) = source.as_ref().filter(|_| !sharded) {
        let outcome = if let Some(e) = source_error {
            source_down = true;
            Err(e)
        } else if let Some(e) = &report.failure {
            Err(format!("the run failed: {e}"))
        } else if report.interrupted {
            Err("the run was interrupted".to_owned())
        } else {
            if !output.quiet {
                eprintln!("verifying: waiting for a scrape after the load ended…");
            }
            let client = ClientRun::new(&scenario, &engine_output);
            let verified = tokio::select! {
                v = source.verify(&scenario, &client) => Some(v),
                _ = interrupt.cancelled() => None,
            };
            match verified {
                Some(Ok(v)) => Ok(v),
                Some(Err(e)) => {
                    source_down = matches!(e, SourceError::Unavailable(_));
                    Err(e.to_string())
                }
                None => {
                    report.interrupted = true;
                    Err("interrupted while verifying".to_owned())
                }
            }
        };
        report.attach_verification(outcome, &summary);
        report.verification_unavailable = source_down;
    }
    stop_scraping.cancel();

    anstream::print!("{}", scrub(&render_text(&report, &summary)));
    write_outputs(output, &report, &summary)?;

    let unavailable = report.unavailable_targets();
    for (target, example) in &unavailable {
        let url = scenario
            .targets
            .iter()
            .find(|t| &t.name == target)
            .map(|t| t.url.redacted())
            .unwrap_or_default();
        eprintln!("error: target `{target}` ({url}) never answered: every connection failed");
        eprintln!("  Caused by: {}", scrub(example));
        eprintln!(
            "hint: check that the service is running, or point the target elsewhere with --target {target}=URL"
        );
    }
    if let Some(e) = &report.verification_error
        && !report.interrupted
    {
        eprintln!("error: verification not run: {}", scrub(e));
    }
    if let Some(live) = &live {
        live.linger(&interrupt, output.quiet).await;
    }
    Ok(exit_code(&report))
}

pub(super) fn write_outputs(
    o: &OutputArgs,
    report: &RunReport,
    summary: &Summary,
) -> Result<(), Failure> {
    if let Some(out) = &o.out {
        let mut json = serde_json::to_value(report).map_err(|e| fail(Exit::Internal, e))?;
        scrub_json(&mut json);
        let json = serde_json::to_vec_pretty(&json).map_err(|e| fail(Exit::Internal, e))?;
        write_atomically(out, &json).map_err(|e| fail(Exit::Internal, e))?;
    }
    if let Some(path) = &o.junit {
        write_atomically(path, scrub(&render_junit(report)).as_bytes())
            .map_err(|e| fail(Exit::Internal, e))?;
    }
    if let Some(path) = &o.markdown {
        write_atomically(path, scrub(&render_markdown(report, summary)).as_bytes())
            .map_err(|e| fail(Exit::Internal, e))?;
    }
    if let Some(path) = &o.html {
        let page = render_html(report, summary);
        write_atomically(path, scrub(&page).as_bytes()).map_err(|e| fail(Exit::Internal, e))?;
    }
    Ok(())
}

/// Writes to a temporary file beside `path`, then renames it, so a crash
/// never leaves a half-written file. Standard output and other special
/// files (`/dev/stdout`, a `$GITHUB_STEP_SUMMARY` pipe) are written
/// directly.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let special = std::fs::metadata(path).is_ok_and(|m| !m.is_file());
    if special {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open `{}`", path.display()))?;
        f.write_all(bytes)
            .with_context(|| format!("cannot write `{}`", path.display()))?;
        return Ok(());
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = std::path::PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp)
        .with_context(|| format!("cannot create `{}`", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.flush())
        .with_context(|| format!("cannot write `{}`", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move the results into `{}`", path.display()))?;
    Ok(())
}
