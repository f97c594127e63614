//! Live progress on stderr, in one of two forms: a one-line bar that fits
//! 80 columns (only on a terminal), or a per-request table of the
//! figures so far printed every few seconds (for CI logs, as Locust's
//! headless stats are).

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use unicode_width::UnicodeWidthStr;

use crate::cli::ProgressMode;
use crate::engine::Progress;
use crate::measure::RequestStats;
use crate::scenario::units::{format_micros, thousands};

/// The progress line's width.
const LINE_W: usize = 80;

/// Columns the bar template takes before the message: elapsed time, the
/// bar and the spaces after them.
const BAR_PREFIX_W: usize = 8 + 1 + 10 + 1;

/// Columns the spinner template takes before the message.
const SPINNER_PREFIX_W: usize = 8 + 1 + 1 + 1;

/// How often the table is printed.
const TABLE_EVERY: Duration = Duration::from_secs(5);

pub struct ProgressDisplay {
    bar: Option<ProgressBar>,
    table: Option<Table>,
    /// Columns left for the bar's message.
    budget: usize,
}

impl ProgressDisplay {
    /// `requests` are the scenario's request names, indexed as the
    /// engine records them.
    pub fn new(mode: ProgressMode, planned: Option<Duration>, requests: Vec<String>) -> Self {
        let mut display = Self {
            bar: None,
            table: None,
            budget: LINE_W,
        };
        match mode {
            ProgressMode::None => {}
            ProgressMode::Table => display.table = Some(Table::new(requests)),
            ProgressMode::Bar if std::io::stderr().is_terminal() => {
                display.budget = LINE_W
                    - if planned.is_some() {
                        BAR_PREFIX_W
                    } else {
                        SPINNER_PREFIX_W
                    };
                display.bar = Some(bar(planned));
            }
            ProgressMode::Bar => {}
        }
        display
    }

    pub fn update(&mut self, p: &Progress) {
        if let Some(bar) = &self.bar {
            bar.set_position(p.elapsed.as_secs());
            bar.set_message(message(p, self.budget));
        }
        if let Some(table) = &mut self.table
            && let Some(text) = table.tick(p)
        {
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn bar(planned: Option<Duration>) -> ProgressBar {
    let colour = anstream::AutoStream::choice(&std::io::stderr()) != anstream::ColorChoice::Never;
    let bar_style = if colour {
        "{bar:10.cyan/blue}"
    } else {
        "{bar:10}"
    };
    let bar = ProgressBar::with_draw_target(
        planned.map(|d| d.as_secs().max(1)),
        ProgressDrawTarget::stderr_with_hz(4),
    );
    let template = if planned.is_some() {
        format!("{{elapsed_precise}} {bar_style} {{msg}}")
    } else {
        "{elapsed_precise} {spinner} {msg}".to_owned()
    };
    bar.set_style(
        ProgressStyle::with_template(&template)
            .expect("static template is valid")
            .progress_chars("=> "),
    );
    bar
}

/// The bar's message in at most `budget` columns: the load, the last
/// second's rate, errors and p95, requests done; what does not fit is
/// left out, the load's description last.
fn message(p: &Progress, budget: usize) -> String {
    let w = &p.window.all;
    let secs = p.window_len.as_secs_f64().max(1e-3);
    let err = if w.count == 0 {
        0.0
    } else {
        w.errors as f64 * 100.0 / w.count as f64
    };
    let figures = [
        format!("{:.0} rps", w.count as f64 / secs),
        format!("{err:.1}% err"),
        format!("p95 {}", format_micros(w.p95_us)),
        format!("{} done", thousands(p.completed)),
    ];
    let draining = if p.draining { " · draining" } else { "" };
    let n = figures.len();
    let with_load = (1..=n)
        .rev()
        .map(|k| format!("{} · {}{draining}", p.load, figures[..k].join(" · ")));
    let without = (1..=n)
        .rev()
        .map(|k| format!("{}{draining}", figures[..k].join(" · ")));
    let mut last = String::new();
    for line in with_load.chain(without) {
        if line.width() <= budget {
            return line;
        }
        last = line;
    }
    shorten(&last, budget)
}

/// `s` cut to `w` columns, with `…` where it was cut.
fn shorten(s: &str, w: usize) -> String {
    if s.width() <= w {
        return s.to_owned();
    }
    let mut o = String::new();
    for c in s.chars() {
        if o.width() + 2 > w {
            break;
        }
        o.push(c);
    }
    o.push('…');
    o
}

/// The per-request table: figures since the start, the rate over the
/// time since the previous table.
struct Table {
    requests: Vec<String>,
    /// Elapsed time and each request's count at the previous table.
    last: Option<(Duration, Vec<u64>)>,
    next: Duration,
}

impl Table {
    fn new(requests: Vec<String>) -> Self {
        Table {
            requests,
            last: None,
            next: TABLE_EVERY,
        }
    }

    /// The table, when it is time for one.
    fn tick(&mut self, p: &Progress) -> Option<String> {
        if p.elapsed < self.next {
            return None;
        }
        while self.next <= p.elapsed {
            self.next += TABLE_EVERY;
        }
        let stats = &p.totals.requests;
        let counts: Vec<u64> = stats.iter().map(RequestStats::count).collect();
        let (since, before) = match &self.last {
            Some((t, c)) => (*t, c.clone()),
            None => (Duration::ZERO, vec![0; counts.len()]),
        };
        let secs = (p.elapsed - since).as_secs_f64().max(1e-3);
        let mut total = RequestStats::default();
        for s in stats {
            total.merge(s);
        }
        let all_rate = (counts.iter().sum::<u64>() - before.iter().sum::<u64>()) as f64 / secs;
        let rows = self
            .requests
            .iter()
            .zip(stats)
            .zip(counts.iter().zip(&before))
            .map(|((name, s), (now, then))| (name.as_str(), s, (now - then) as f64 / secs))
            .chain(std::iter::once(("all", &total, all_rate)));
        let text = render_table(p, rows);
        self.last = Some((p.elapsed, counts));
        Some(text)
    }
}

/// Widest name column; longer names are cut.
const TABLE_NAME_W: usize = 24;

fn render_table<'a>(
    p: &Progress,
    rows: impl Iterator<Item = (&'a str, &'a RequestStats, f64)>,
) -> String {
    let rows: Vec<_> = rows.collect();
    let name_w = rows
        .iter()
        .map(|(n, _, _)| n.width())
        .max()
        .unwrap_or(0)
        .clamp(7, TABLE_NAME_W);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\n{:.0}s · {}{} · {} done",
        p.elapsed.as_secs_f64(),
        p.load,
        if p.draining { " · draining" } else { "" },
        thousands(p.completed)
    );
    let _ = writeln!(
        o,
        "{:<name_w$} {:>10} {:>8} {:>7} {:>8} {:>8} {:>8}",
        "request", "count", "rps", "err%", "p50", "p95", "p99"
    );
    for (name, s, rate) in rows {
        let count = s.count();
        let err = if count == 0 {
            0.0
        } else {
            s.errors() as f64 * 100.0 / count as f64
        };
        let latency = s.response_latency();
        let q = |q: f64| {
            if latency.is_empty() {
                "-".to_owned()
            } else {
                format_micros(latency.value_at_quantile(q))
            }
        };
        let name = shorten(name, name_w);
        let pad = " ".repeat(name_w.saturating_sub(name.width()));
        let _ = writeln!(
            o,
            "{name}{pad} {:>10} {:>8.1} {:>6.2}% {:>8} {:>8} {:>8}",
            thousands(count),
            rate,
            err,
            q(0.5),
            q(0.95),
            q(0.99)
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::{Recorder, Window};
    use crate::outcome::Outcome;

    fn progress<'a>(
        load: &str,
        window: &'a Window,
        totals: &'a Recorder,
        elapsed: u64,
    ) -> Progress<'a> {
        Progress {
            elapsed: Duration::from_secs(elapsed),
            planned: Some(Duration::from_secs(600)),
            load: load.to_owned(),
            window,
            window_len: Duration::from_secs(1),
            totals,
            completed: 1_234_567,
            draining: true,
            parts: &[],
        }
    }

    fn recorder() -> Recorder {
        let mut rec = Recorder::new(2);
        for i in 0..100 {
            rec.record(
                0,
                Outcome::Status(200),
                true,
                Duration::from_millis(10 + i % 5),
            );
        }
        for _ in 0..50 {
            rec.record(1, Outcome::Status(500), false, Duration::from_millis(2));
        }
        rec
    }

    #[test]
    fn the_bar_message_fits_80_columns_with_the_bar() {
        let rec = recorder();
        let window = Window::of(1.0, &rec, false);
        for load in [
            "12/20 users",
            "browse: stage 2/3 · 120/200 users · api: stage 1/2 · 1500/s · checkout: 10 users",
        ] {
            let p = progress(load, &window, &rec, 5);
            for budget in [LINE_W - BAR_PREFIX_W, LINE_W - SPINNER_PREFIX_W] {
                let m = message(&p, budget);
                assert!(m.width() <= budget, "{m} ({} > {budget})", m.width());
                assert!(m.contains("rps"), "{m}");
            }
        }
        // The load is kept before the count of requests done.
        let p = progress("12/20 users", &window, &rec, 5);
        let m = message(&p, LINE_W - BAR_PREFIX_W);
        assert!(
            m.starts_with("12/20 users · 150 rps · 33.3% err · p95 ") && m.ends_with(" · draining"),
            "{m}"
        );
        assert!(!m.contains("done"), "{m}");
        assert_eq!(shorten("abcdef", 4), "abc…");
    }

    #[test]
    fn the_table_comes_every_five_seconds_with_the_rate_since_the_last() {
        let rec = recorder();
        let window = Window::of(1.0, &rec, false);
        let mut table = Table::new(vec![
            "home".into(),
            "a_very_long_request_name_indeed_yes".into(),
        ]);
        assert!(table.tick(&progress("2 users", &window, &rec, 4)).is_none());
        let text = table.tick(&progress("2 users", &window, &rec, 5)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "5s · 2 users · draining · 1,234,567 done");
        let home: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(home[..4], ["home", "100", "20.0", "0.00%"], "{text}");
        let all: Vec<&str> = lines[5].split_whitespace().collect();
        assert_eq!(all[..4], ["all", "150", "30.0", "33.33%"], "{text}");
        assert!(lines.iter().all(|l| l.width() <= LINE_W), "{text}");
        assert!(lines[4].starts_with("a_very_long_request_nam…"), "{text}");
        // Nothing new in the next five seconds: the rate drops to 0.
        assert!(table.tick(&progress("2 users", &window, &rec, 9)).is_none());
        let text = table.tick(&progress("2 users", &window, &rec, 10)).unwrap();
        assert!(text.lines().nth(3).unwrap().contains(" 0.0 "), "{text}");
    }
}
