//! Wires each command together and turns its result into an exit code.
//!
//! Output discipline: the report goes to stdout; progress, warnings and
//! errors go to stderr, in the shape `error: …` followed by `hint: …`.
//!
//! - [`run`]: `redproof run`, from the scenario file to the written outputs;
//! - `merge`: `redproof merge`, shards' results added up (and verified);
//! - `demo`: `redproof demo`, the demo services started in this process
//!   (with the default `demo` cargo feature);
//! - [`exit`]: exit codes and errors that carry them;
//! - `live`: `--metrics-listen`, the client's figures served during a run;
//! - [`limits`]: what the machine lets one run hold (open files);
//! - [`signal`]: Ctrl-C and SIGTERM.

#[cfg(feature = "demo")]
mod demo;
mod exit;
mod limits;
mod live;
mod merge;
mod run;
mod signal;
mod verify;

use std::path::Path;

use anyhow::{Context, anyhow};
use clap::Parser;

pub use exit::Exit;
use exit::{Failure, exit_code, fail};

use crate::cli::{Cli, ColorMode, Command, Format};
use crate::report::{RunReport, render_html, render_junit, render_markdown, render_text};
use crate::scenario::Overrides;
use crate::secrets::scrub;

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
    anstream::ColorChoice::write_global(match cli.color {
        ColorMode::Auto => anstream::ColorChoice::Auto,
        ColorMode::Always => anstream::ColorChoice::Always,
        ColorMode::Never => anstream::ColorChoice::Never,
    });
    // A bug must not pass for a verdict: a panic anywhere ends with exit
    // 70 (the panic's own message is already on stderr).
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dispatch(cli)))
        .unwrap_or_else(|_| {
            Err(fail(
                Exit::Internal,
                anyhow!("internal error: redproof panicked (a bug; please report it with the message above)"),
            ))
        });
    match result {
        Ok(code) => code as u8,
        Err(f) => {
            eprintln!("error: {}", scrub(&f.error.to_string()));
            for cause in f.error.chain().skip(1) {
                eprintln!("  Caused by: {}", scrub(&cause.to_string()));
            }
            f.code as u8
        }
    }
}

fn dispatch(cli: Cli) -> Result<Exit, Failure> {
    match cli.command {
        Command::Validate { files } => Ok(validate(&files)),
        Command::Report { file, format } => report(&file, format),
        #[cfg(feature = "demo")]
        Command::Demo(args) => block_on(demo::run(args)),
        #[cfg(not(feature = "demo"))]
        Command::Demo(_) => Err(fail(
            Exit::Usage,
            anyhow!("this redproof was built without the demo services (cargo feature `demo`)"),
        )),
        Command::Verify(args) => block_on(verify::run(args)),
        Command::Merge(args) => block_on(merge::run(args)),
        Command::Run(args) => block_on(run::run(*args)),
    }
}

/// Runs a command's future on a single-threaded runtime (the engine
/// starts its own threads).
fn block_on(f: impl std::future::Future<Output = Result<Exit, Failure>>) -> Result<Exit, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(Exit::Internal, e))?
        .block_on(f)
}

fn validate(files: &[std::path::PathBuf]) -> Exit {
    let mut code = Exit::Pass;
    for f in files {
        match run::load(f, &Overrides::default()) {
            Ok(s) => {
                let v = &s.verification;
                let verify = if v.is_requested() {
                    let source = match (&v.metrics.prometheus, v.metrics.scrape.len()) {
                        (Some(url), _) => format!("Prometheus at {url}"),
                        (None, 0) => "no metric source yet (give --prometheus URL)".to_owned(),
                        (None, n) => format!("embedded scraper, {n} page{}", plural(n)),
                    };
                    let entries = v.entry_count();
                    format!(
                        ", {} verify entr{}, {} alert{}, {} PromQL assertion{} ({source})",
                        entries,
                        if entries == 1 { "y" } else { "ies" },
                        v.alerts.len(),
                        plural(v.alerts.len()),
                        v.promql.len(),
                        plural(v.promql.len()),
                    )
                } else {
                    String::new()
                };
                for t in s.reflection_targets() {
                    println!(
                        "note: target `{}` uses server reflection: its gRPC calls are checked against the server when the run starts",
                        s.targets[t].name
                    );
                }
                println!(
                    "ok: {} — scenario `{}`, {} target{}, {} request{}, {} threshold{}{verify}",
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
        Format::Text => anstream::print!("{}", render_text(&r, &summary)),
        Format::Json => {
            let v = serde_json::json!({
                "format": crate::report::SUMMARY_FORMAT,
                "summary": summary,
                "thresholds": r.thresholds,
                "verification": r.verification,
                "verification_error": r.verification_error,
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&v).map_err(|e| fail(Exit::Internal, e))?
            );
        }
        Format::Junit => print!("{}", render_junit(&r)),
        Format::Markdown => print!("{}", render_markdown(&r, &summary)),
        Format::Html => print!("{}", render_html(&r, &summary)),
    }
    Ok(exit_code(&r))
}
