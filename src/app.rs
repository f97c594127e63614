//! Wires each command together and turns its result into an exit code.
//!
//! Output discipline: the report goes to stdout; progress, warnings and
//! errors go to stderr, in the shape `error: …` followed by `hint: …`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use clap::Parser;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, Format, RunArgs};
use crate::engine::{self, EnginePlan};
use crate::exec::HttpPlan;
use crate::report::{ProgressDisplay, RunReport, render_text};
use crate::scenario::units::{self, Rate};
use crate::scenario::{self, Diagnostic, Overrides, Scenario, ScenarioErrors};

/// Process exit codes (sysexits-style where one fits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Pass = 0,
    ThresholdFailed = 1,
    Usage = 64,
    Unavailable = 69,
    Internal = 70,
    Interrupted = 130,
}

/// An error that knows its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
struct Failure {
    code: Exit,
    error: anyhow::Error,
}

fn fail(code: Exit, error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code,
        error: error.into(),
    }
}

/// Runs the command line and returns the exit code.
pub fn main() -> u8 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage as u8
            } else {
                Exit::Pass as u8
            };
        }
    };
    match dispatch(cli) {
        Ok(code) => code as u8,
        Err(f) => {
            eprintln!("error: {}", f.error);
            for cause in f.error.chain().skip(1) {
                eprintln!("  Caused by: {cause}");
            }
            f.code as u8
        }
    }
}

fn dispatch(cli: Cli) -> Result<Exit, Failure> {
    match cli.command {
        Command::Validate { files } => Ok(validate(&files)),
        Command::Report { file, format } => report(&file, format),
        Command::Run(args) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| fail(Exit::Internal, e))?;
            rt.block_on(run(args))
        }
    }
}

fn load(path: &Path, overrides: &Overrides) -> Result<Scenario, ScenarioErrors> {
    let mut scenario = scenario::load_file(path)?;
    if let Err(e) = scenario.apply(overrides) {
        return Err(ScenarioErrors::new(path, "", vec![Diagnostic::at(None, e)]));
    }
    Ok(scenario)
}

fn validate(files: &[std::path::PathBuf]) -> Exit {
    let mut code = Exit::Pass;
    for f in files {
        match load(f, &Overrides::default()) {
            Ok(s) => {
                println!(
                    "ok: {} — scenario `{}`, {} target{}, {} request{}, {} threshold{}",
                    f.display(),
                    s.name,
                    s.targets.len(),
                    plural(s.targets.len()),
                    s.requests.len(),
                    plural(s.requests.len()),
                    s.thresholds.len(),
                    plural(s.thresholds.len()),
                );
            }
            Err(e) => {
                eprintln!("{e}");
                code = Exit::Usage;
            }
        }
    }
    code
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn report(file: &Path, format: Format) -> Result<Exit, Failure> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read `{}`", file.display()))
        .map_err(|e| fail(Exit::Usage, e))?;
    let r = RunReport::from_json(&text)
        .map_err(|e| fail(Exit::Usage, anyhow!("`{}`: {e}", file.display())))?;
    let summary = r
        .summary()
        .map_err(|e| fail(Exit::Usage, anyhow!("`{}`: {e}", file.display())))?;
    match format {
        Format::Text => print!("{}", render_text(&r, &summary)),
        Format::Json => {
            let v = serde_json::json!({ "summary": summary, "thresholds": r.thresholds });
            println!(
                "{}",
                serde_json::to_string_pretty(&v).map_err(|e| fail(Exit::Internal, e))?
            );
        }
    }
    Ok(if r.thresholds_failed() {
        Exit::ThresholdFailed
    } else {
        Exit::Pass
    })
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
            .map(units::parse_count)
            .transpose()
            .map_err(|e| format!("--users: {e}"))?,
        rate: a
            .rate
            .as_deref()
            .map(Rate::parse)
            .transpose()
            .map_err(|e| format!("--rate: {e}"))?,
        targets,
    })
}

async fn run(args: RunArgs) -> Result<Exit, Failure> {
    let ov = overrides(&args).map_err(|e| fail(Exit::Usage, anyhow!(e)))?;
    let scenario = match load(&args.file, &ov) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return Ok(Exit::Usage);
        }
    };
    let plan = Arc::new(HttpPlan::new(&scenario).map_err(|e| fail(Exit::Usage, anyhow!(e)))?);
    let engine_plan = EnginePlan {
        load: scenario.load.clone(),
        weights: scenario.requests.iter().map(|r| r.weight.get()).collect(),
        threads: args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
    };

    // First Ctrl-C (or SIGTERM): stop starting requests and drain. Second:
    // cut off in-flight requests at once. Either way the report is still
    // written.
    let interrupt = CancellationToken::new();
    let abort_now = CancellationToken::new();
    {
        let (interrupt, abort_now) = (interrupt.clone(), abort_now.clone());
        tokio::spawn(async move {
            stop_signal().await;
            eprintln!(
                "\ninterrupted: stopping, waiting for in-flight requests (Ctrl-C again to cut them off)"
            );
            interrupt.cancel();
            stop_signal().await;
            abort_now.cancel();
        });
    }

    let progress = ProgressDisplay::new(args.quiet, scenario.load.duration);
    let output = engine::run(plan, &engine_plan, interrupt, abort_now, |p| {
        progress.update(p)
    })
    .await
    .map_err(|e| fail(Exit::Internal, anyhow!(e)))?;
    progress.finish();

    let report = RunReport::new(&scenario, &args.file.display().to_string(), &output);
    let summary = report
        .summary()
        .map_err(|e| fail(Exit::Internal, anyhow!(e)))?;
    print!("{}", render_text(&report, &summary));
    if let Some(out) = &args.out {
        write_atomically(out, &report).map_err(|e| fail(Exit::Internal, e))?;
    }

    let unavailable = report.unavailable_targets();
    for (target, example) in &unavailable {
        let url = scenario
            .targets
            .iter()
            .find(|t| &t.name == target)
            .map(|t| t.url.as_str())
            .unwrap_or_default();
        eprintln!("error: target `{target}` ({url}) never answered: every connection failed");
        eprintln!("  Caused by: {example}");
        eprintln!(
            "hint: check that the service is running, or point the target elsewhere with --target {target}=URL"
        );
    }
    Ok(if report.interrupted {
        Exit::Interrupted
    } else if !unavailable.is_empty() {
        Exit::Unavailable
    } else if report.thresholds_failed() {
        Exit::ThresholdFailed
    } else {
        Exit::Pass
    })
}

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Writes JSON to a temporary file beside `path`, then renames it, so a
/// crash never leaves a half-written results file.
fn write_atomically(path: &Path, report: &RunReport) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.partial");
    let file = std::fs::File::create(&tmp)
        .with_context(|| format!("cannot create `{}`", tmp.display()))?;
    let mut w = std::io::BufWriter::new(file);
    serde_json::to_writer_pretty(&mut w, report).context("cannot serialise the results")?;
    use std::io::Write as _;
    w.flush()
        .with_context(|| format!("cannot write `{}`", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move the results into `{}`", path.display()))?;
    Ok(())
}
