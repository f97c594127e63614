//! Command-line definitions (clap). Nothing here does any work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Load testing that proves your monitoring tells the truth.
///
/// redproof drives weighted HTTP traffic from a YAML scenario file, measures
/// every request on the client side, then reads the server's own metrics
/// (Prometheus, or its embedded scraper) and proves they agree: rate,
/// errors and duration per request, with a diagnosis for every
/// disagreement.
///
/// Start with `redproof demo`, then `redproof demo --fault workers=4`.
#[derive(Debug, Parser)]
#[command(name = "redproof", version, propagate_version = true)]
#[command(
    after_help = "Exit codes: 0 pass · 1 a threshold failed · 2 a verification check failed or had \
no data · 3 both · 64 usage or scenario error · 69 a target or the metric source unavailable · \
70 internal error · 130 interrupted"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Colour the report's verdicts: auto (when stdout is a terminal and
    /// NO_COLOR is unset), always or never.
    #[arg(long, global = true, value_enum, default_value_t = ColorMode::Auto)]
    pub color: ColorMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorMode {
    Auto,
    Always,
    Never,
}

/// Live progress on stderr while the load runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ProgressMode {
    // One line, redrawn; only when stderr is a terminal.
    #[default]
    Bar,
    // Every few seconds a table of each request's figures so far, also
    // when stderr is a file or a CI log.
    Table,
    None,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a scenario file, print the RED report and verify the server's
    /// metrics against it.
    Run(Box<RunArgs>),
    /// Check scenario files without sending traffic; lists every problem.
    Validate {
        /// Scenario files (YAML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Start the demo services in-process, run a bundled scenario against
    /// them and verify their metrics with the embedded scraper.
    Demo(DemoArgs),
    /// Verify the server's metrics after the fact, for the window of a
    /// run recorded in a results file written by `run --out`.
    ///
    /// The results file holds the client side (histograms, per-second
    /// windows), T0 and T1, and the scenario's metric source and verify
    /// entries; the checks read Prometheus' samples of that window as a
    /// run does right after its load. Prometheus must still hold them
    /// (its retention), and only Prometheus keeps a past: the embedded
    /// scraper cannot verify after the fact.
    ///
    /// Example: redproof verify results.json --prometheus http://127.0.0.1:9090 --junit junit.xml
    Verify(VerifyArgs),
    /// Add up the results of a scenario's shards (`run --shard I/N --out
    /// FILE`) into the report of one run: histograms, outcomes and
    /// one-second windows merged exactly, thresholds judged on the sums.
    ///
    /// Refuses files of different scenarios (or load overrides), a
    /// missing or repeated shard, a shard that did not complete, and
    /// shards whose load windows do not overlap.
    ///
    /// Example: redproof merge shard-*.json --out all.json --verify
    Merge(MergeArgs),
    /// Re-render the report of a results file written by `run --out`.
    Report {
        /// A results file (JSON).
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The RED table.
    Text,
    /// Per-request figures, threshold verdicts and verification as JSON.
    Json,
    /// JUnit XML, one test case per check and threshold.
    Junit,
    /// A Markdown summary for a CI job page.
    Markdown,
    /// A self-contained HTML page with charts.
    Html,
}

/// Where the report goes besides the terminal.
#[derive(Debug, Args, Clone, Default)]
pub struct OutputArgs {
    /// Write the full results (histograms, windows, verdicts) as JSON.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// Write JUnit XML: one test case per verification check and threshold.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,

    /// Write a Markdown summary (e.g. to $GITHUB_STEP_SUMMARY).
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,

    /// Write a self-contained HTML report: verdict, failures, client and
    /// server RED over time, latency distributions.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,

    /// No live progress or notes on stderr (errors still go there).
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Switch on an instrumentation fault in the demo services
    /// (repeatable): workers=N, uncounted-errors, unmeasured-delay=DUR,
    /// ms-as-seconds, reset-every=DUR, frozen-metrics[=AFTER].
    #[arg(long = "fault", value_name = "FAULT")]
    pub faults: Vec<String>,

    /// How long to send load [default: 10s].
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<String>,

    /// Print the bundled scenario and exit.
    #[arg(long)]
    pub print_scenario: bool,

    /// Live progress on stderr: `bar` (one line, on a terminal only),
    /// `table` (every 5s each request's count, rate, err% and p50/p95/p99
    /// so far, also into a file or CI log) or `none` (as --quiet).
    #[arg(long, value_enum, value_name = "MODE", default_value_t)]
    pub progress: ProgressMode,

    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The shards' results files (JSON), one per shard.
    #[arg(required = true, value_name = "FILES")]
    pub files: Vec<PathBuf>,

    /// Verify the server's metrics once for the merged run, as `redproof
    /// verify` does for a results file.
    #[arg(long)]
    pub verify: bool,

    /// With --verify: read server metrics from this Prometheus instead of
    /// the one the results files name.
    #[arg(
        long,
        value_name = "URL",
        env = "REDPROOF_PROMETHEUS",
        requires = "verify"
    )]
    pub prometheus: Option<String>,

    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A results file (JSON) written by `run --out`.
    pub file: PathBuf,

    /// Read server metrics from this Prometheus instead of the one the
    /// results file names (needed when its URL carried credentials).
    #[arg(long, value_name = "URL", env = "REDPROOF_PROMETHEUS")]
    pub prometheus: Option<String>,

    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Scenario file (YAML).
    pub file: PathBuf,

    /// Run for this long instead of the file's `load.duration` (e.g. 30s, 2m).
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<String>,

    /// Stop after this many iterations in total, replacing the file's
    /// `load.iterations` (e.g. 10k). An iteration is one pick of a
    /// `requests` entry: one request, or a whole flow.
    #[arg(long, value_name = "N")]
    pub iterations: Option<String>,

    /// Closed model with N users, replacing the file's load model; with
    /// `scenarios:`, name the one it changes (SCENARIO=N).
    #[arg(long, value_name = "[SCENARIO=]N", conflicts_with = "rate")]
    pub users: Option<String>,

    /// Open model at this arrival rate (e.g. 200/s), replacing the file's;
    /// with `scenarios:`, name the one it changes (SCENARIO=RATE).
    #[arg(long, value_name = "[SCENARIO=]RATE")]
    pub rate: Option<String>,

    /// Point a target at another URL: NAME=URL (repeatable).
    #[arg(long = "target", value_name = "NAME=URL")]
    pub targets: Vec<String>,

    /// Read server metrics from this Prometheus, replacing the file's
    /// `metrics.prometheus`.
    #[arg(long, value_name = "URL", env = "REDPROOF_PROMETHEUS")]
    pub prometheus: Option<String>,

    /// Skip the checks made before any traffic (Prometheus answers and
    /// scrapes targets, or every page of the embedded scraper serves
    /// metrics; each verify entry's `job`/`instance` matchers select a
    /// target, its metric family is exported). Without them a metric
    /// source that is down is found after the load.
    #[arg(long)]
    pub no_preflight: bool,

    /// Live progress on stderr: `bar` (one line, on a terminal only),
    /// `table` (every 5s each request's count, rate, err% and p50/p95/p99
    /// so far, also into a file or CI log) or `none` (as --quiet).
    #[arg(long, value_enum, value_name = "MODE", default_value_t)]
    pub progress: ProgressMode,

    #[command(flatten)]
    pub output: OutputArgs,

    /// Engine threads, each with its own connection pools [default: CPU count].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Run shard I of N (from 0): this process sends its part of the
    /// load (users, rates, iterations and `unique` feed rows split,
    /// `seq()` values disjoint); `redproof merge` adds the shards'
    /// results up. `N` alone takes I from JOB_COMPLETION_INDEX, as a
    /// Kubernetes Indexed Job sets it.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,

    /// Start the load at this time (RFC 3339, e.g. 2026-12-01T17:00:00Z),
    /// so shards start together and their one-second windows align.
    #[arg(long, value_name = "TIME", env = "REDPROOF_START_AT")]
    pub start_at: Option<String>,

    /// Serve the client's figures live in the Prometheus text format at
    /// http://ADDR/metrics (e.g. 127.0.0.1:9464; port 0 picks a free
    /// port), updated once a second: requests by request and outcome,
    /// latency histograms, users or arrival rate, requests in flight and
    /// late starts. The address bound is printed on stderr. Serving
    /// stops when redproof exits (see --metrics-linger).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,

    /// With --metrics-listen: after the run, keep serving until the final
    /// figures were scraped once, for at most this long (e.g. 20s, more
    /// than Prometheus' scrape interval), so the last seconds of the run
    /// are not missed [default: 0s, exit at once].
    #[arg(long, value_name = "DURATION", requires = "metrics_listen")]
    pub metrics_linger: Option<String>,
}
