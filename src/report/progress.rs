//! Live progress on stderr: hidden when stderr is not a terminal or with
//! `--quiet`, uncoloured under `NO_COLOR`.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::engine::Progress;
use crate::scenario::units::format_micros;

pub struct ProgressDisplay {
    bar: Option<ProgressBar>,
}

impl ProgressDisplay {
    pub fn new(quiet: bool, planned: Option<Duration>) -> Self {
        if quiet || !std::io::stderr().is_terminal() {
            return Self { bar: None };
        }
        let colour = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        let bar_style = if colour {
            "{bar:24.cyan/blue}"
        } else {
            "{bar:24}"
        };
        let bar = ProgressBar::with_draw_target(
            planned.map(|d| d.as_secs().max(1)),
            ProgressDrawTarget::stderr_with_hz(4),
        );
        let template = if planned.is_some() {
            format!("{{elapsed_precise}} {bar_style} {{pos}}/{{len}}s {{msg}}")
        } else {
            "{elapsed_precise} {spinner} {msg}".to_owned()
        };
        bar.set_style(
            ProgressStyle::with_template(&template)
                .expect("static template is valid")
                .progress_chars("=> "),
        );
        Self { bar: Some(bar) }
    }

    pub fn update(&self, p: &Progress) {
        let Some(bar) = &self.bar else { return };
        let w = &p.window.all;
        let secs = p.window_len.as_secs_f64().max(1e-3);
        let err = if w.count == 0 {
            0.0
        } else {
            w.errors as f64 * 100.0 / w.count as f64
        };
        bar.set_position(p.elapsed.as_secs());
        bar.set_message(format!(
            "{} · {:.0} rps · {:.1}% errors · p95 {} · {} done{}",
            p.load,
            w.count as f64 / secs,
            err,
            format_micros(w.p95_us),
            p.completed,
            if p.draining { " · draining" } else { "" }
        ));
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
