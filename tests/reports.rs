//! The report renderings end to end: the HTML page of a verified run,
//! rendered by headless Chromium; Markdown and JUnit for CI; results files
//! of the previous format still read.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const FORMAT_1: &str = "tests/data/results-format-1.json";

fn redproof(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_redproof"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn results_files_of_format_1_are_still_read() {
    let text = redproof(&["report", FORMAT_1]);
    // The fixture is a run of `demo --fault unmeasured-delay=200ms`.
    assert_eq!(text.status.code(), Some(2), "{}", stdout(&text));
    assert!(
        stdout(&text).contains("spent outside the server's timer"),
        "{}",
        stdout(&text)
    );
    let json: Value =
        serde_json::from_slice(&redproof(&["report", FORMAT_1, "--format", "json"]).stdout)
            .unwrap();
    assert_eq!(json["format"], "redproof-summary/2");
    let outcome = &json["summary"]["rows"][0]["outcomes"][0];
    assert_eq!(outcome["outcome"]["status"], 200, "{outcome}");
    assert_eq!(outcome["ok"], true);
    assert!(outcome["count"].as_u64().unwrap() > 0);
    // `verify` reads it too, and says why it cannot re-verify this run.
    let verify = redproof(&["verify", FORMAT_1]);
    assert_eq!(verify.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&verify.stderr).contains("embedded scraper, which keeps no past"),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    // Without server series, the page still draws the client's side.
    let html = redproof(&["report", FORMAT_1, "--format", "html"]);
    assert_eq!(html.status.code(), Some(2));
    let page = stdout(&html);
    assert!(page.contains("exit code 2"), "{page}");
    assert!(page.matches("<svg").count() >= 5, "{page}");
}

#[test]
fn a_results_file_of_an_unknown_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(FORMAT_1))
        .unwrap()
        .replace("redproof-results/1", "redproof-results/9");
    let file = dir.path().join("r.json");
    std::fs::write(&file, text).unwrap();
    let o = redproof(&["report", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(64));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("unsupported results format `redproof-results/9`")
            && err.contains("`redproof-results/1` and `redproof-results/2`"),
        "{err}"
    );
}

#[test]
fn markdown_puts_failures_first_and_folds_passes() {
    let md = stdout(&redproof(&["report", FORMAT_1, "--format", "markdown"]));
    let failures = md.find("### Failures").expect(&md);
    let table = md.find("| request |").expect(&md);
    assert!(failures < table, "{md}");
    assert!(
        md.contains("- **success.duration** (fail): at le=0.25 s server 100.0%"),
        "{md}"
    );
    // Status codes per request.
    assert!(md.contains("| 200 × 74 |"), "{md}");
    assert!(
        md.contains("| 500 ❌ × 42 |") || md.contains("| 500 × 42 |"),
        "{md}"
    );
    // Passing checks and thresholds are folded away, failures are not.
    let details = md.find("<details><summary>").expect(&md);
    assert!(
        md[..details].contains("| `success.duration` | ❌ fail |"),
        "{md}"
    );
    assert!(
        md[details..].contains("| `success.count` | ✅ pass |"),
        "{md}"
    );
    assert!(md.contains("thresholds passed</summary>"), "{md}");
}

#[test]
fn junit_carries_the_observed_value_on_passes() {
    let xml = stdout(&redproof(&["report", FORMAT_1, "--format", "junit"]));
    assert!(
        xml.contains("name=\"success.p95 &lt; 2s\" time=\"0\">\n      <system-out>observed 342.0ms</system-out>"),
        "{xml}"
    );
    assert!(
        xml.contains(
            "name=\"count\" time=\"0\">\n      <system-out>server 74 = client 74</system-out>"
        ),
        "{xml}"
    );
}

/// The page of a verified run (the demo, with a fault the duration
/// check catches), as a browser shows it.
#[test]
fn html_report_renders_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("report.html");
    let results = dir.path().join("results.json");
    let run = redproof(&[
        "demo",
        "--quiet",
        "--duration",
        "3s",
        "--fault",
        "unmeasured-delay=200ms",
        "--html",
        html.to_str().unwrap(),
        "--out",
        results.to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(2), "{}", stdout(&run));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<h1>FAIL · demo</h1>"), "{page}");
    assert!(
        page.contains("spent outside the server&#39;s timer"),
        "{page}"
    );
    // Failures come before the tables; nothing is fetched at view time.
    assert!(page.find("What failed").unwrap() < page.find("Requests: client and server").unwrap());
    for outside in ["<script", "src=\"http", "href=\"http", "<link", "@import"] {
        assert!(
            !page.contains(outside),
            "the page refers outside itself: {outside}"
        );
    }
    // The results file carries the server series the page draws.
    let res: Value = serde_json::from_str(&std::fs::read_to_string(&results).unwrap()).unwrap();
    let timeline = &res["verification"]["server"][0]["timeline"];
    assert!(
        timeline
            .as_array()
            .is_some_and(|t| t.iter().any(|p| p["rps"].as_f64() > Some(0.0))),
        "{timeline}"
    );
    assert!(
        timeline
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["p95_s"].is_number())
    );
    let schema: Value =
        serde_json::from_str(include_str!("../schema/results.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&res)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // `report --format html` renders the same page from the results file.
    let again = redproof(&["report", results.to_str().unwrap(), "--format", "html"]);
    assert_eq!(stdout(&again), page);

    let Some(chromium) = chromium() else {
        return;
    };
    let png = dir.path().join("report.png");
    let shot = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1100,2200",
        ])
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&shot.stderr);
    assert!(shot.status.success(), "chromium failed: {log}");
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
    let pixels = Pixels::read(&png);
    // Not blank: many colours, and the charts' own colours are drawn,
    // the server's orange (its overlay) included.
    assert!(pixels.distinct() > 50, "{} colours", pixels.distinct());
    let (client, server) = (pixels.count([31, 119, 180]), pixels.count([230, 110, 20]));
    eprintln!("pixels: {client} client blue, {server} server orange");
    assert!(client > 1_500, "client lines: {client}");
    assert!(server > 800, "server lines: {server}");
    // The red banner of a failed run.
    assert!(pixels.count([198, 40, 40]) > 20_000);
}

/// Chromium from Debian's package; ci/test.sh installs it. Absent, the
/// test fails unless `REDPROOF_BROWSER_TESTS=optional` says browser tests
/// may be skipped.
fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| {
            std::env::var_os("PATH")
                .map(|p| {
                    std::env::split_paths(&p)
                        .map(|d| d.join(name))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .find(|p| p.is_file());
    if found.is_none() {
        assert_eq!(
            std::env::var("REDPROOF_BROWSER_TESTS").as_deref(),
            Ok("optional"),
            "chromium is not installed (apt-get install chromium; ci/test.sh does); set REDPROOF_BROWSER_TESTS=optional to skip browser tests"
        );
        eprintln!("skipped: chromium is not installed and REDPROOF_BROWSER_TESTS=optional");
    }
    found
}

/// The RGB pixels of a screenshot.
struct Pixels(Vec<[u8; 3]>);

impl Pixels {
    fn read(path: &Path) -> Self {
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        let step = match info.color_type {
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            other => panic!("unexpected PNG colour type {other:?}"),
        };
        Pixels(
            buf[..info.buffer_size()]
                .chunks_exact(step)
                .map(|p| [p[0], p[1], p[2]])
                .collect(),
        )
    }

    fn distinct(&self) -> usize {
        let mut c = self.0.clone();
        c.sort_unstable();
        c.dedup();
        c.len()
    }

    /// Pixels of about this colour (anti-aliasing blends line edges).
    fn count(&self, rgb: [u8; 3]) -> usize {
        self.0
            .iter()
            .filter(|p| {
                p.iter()
                    .zip(rgb)
                    .map(|(a, b)| a.abs_diff(b) as u32)
                    .sum::<u32>()
                    <= 30
            })
            .count()
    }
}

/// A failing demo run as a new user sees it: every line of the report
/// fits 80 columns (a query too long for any line overflows alone),
/// failures come before passes, the last line is the verdict with the
/// exit code the process returns, and `--progress table` prints each
/// request's figures on stderr although it is not a terminal.
#[test]
fn a_failing_run_reads_at_a_glance() {
    use unicode_width::UnicodeWidthStr;
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results.json");
    let run = redproof(&[
        "demo",
        "--duration",
        "6s",
        "--fault",
        "workers=4",
        "--progress",
        "table",
        "--out",
        results.to_str().unwrap(),
    ]);
    let (out, err) = (stdout(&run), String::from_utf8_lossy(&run.stderr));
    let code = run.status.code().unwrap();
    assert!(matches!(code, 2 | 3), "{out}\n{err}");
    assert!(!out.contains('\u{1b}'), "no colour off a terminal: {out:?}");
    for line in out.lines() {
        assert!(
            line.width() <= 80 || !line.trim().contains(' '),
            "{} columns: {line}\n{out}",
            line.width()
        );
    }
    let last = out.lines().last().unwrap();
    assert!(
        last.starts_with("FAIL · ") && last.ends_with(&format!(" · exit {code}")),
        "{out}"
    );
    assert!(
        out.starts_with("redproof · demo · closed model, 16 users"),
        "{out}"
    );
    let fail = out.find("\n  FAIL    ").expect("a failed check");
    let pass = out.find("\n  pass    ").expect("the passes");
    assert!(fail < pass, "{out}");
    assert!(out.contains("≈p95"), "{out}");

    // The table: after 5 s, one row per request and `all`, with counts.
    let table: Vec<&str> = err
        .lines()
        .skip_while(|l| !l.starts_with("5s · "))
        .take(7)
        .collect();
    assert_eq!(table.len(), 7, "{err}");
    assert!(
        table[1].starts_with("request ") && table[1].contains("rps"),
        "{err}"
    );
    let all: Vec<&str> = table[6].split_whitespace().collect();
    assert_eq!(all[0], "all", "{err}");
    let count: u64 = all[1].replace(',', "").parse().unwrap();
    let rps: f64 = all[2].parse().unwrap();
    assert!(count > 50 && rps > 10.0, "{err}");

    // The results file renders the same verdict; colour on request.
    let again = redproof(&["report", results.to_str().unwrap(), "--color", "always"]);
    assert_eq!(again.status.code(), Some(code));
    let coloured = stdout(&again);
    assert!(coloured.contains("\u{1b}[31m") || coloured.contains("\u{1b}[1m\u{1b}[31m"));
    assert!(
        anstream::adapter::strip_str(&coloured)
            .to_string()
            .ends_with(&format!("{last}\n"))
    );
}
