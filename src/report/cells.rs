//! Figures every rendering writes the same way: the load in words, and
//! the cells of a request's row (client latency, server count and p95).

use super::{Row, RunReport};
use crate::scenario::units::{format_micros, thousands};

/// `closed model, 20 users` or `open model, 200/s`.
pub(super) fn load_description(r: &RunReport) -> String {
    if r.scenarios.is_empty() {
        super::profile::describe(&r.load)
    } else {
        format!("{} scenarios", r.scenarios.len())
    }
}

/// A row's latency percentiles and the server's figures, as text.
pub(super) struct RowCells {
    pub p50: String,
    pub p95: String,
    pub p99: String,
    pub server_count: String,
    /// Interpolated within the server's buckets, so marked `≈`.
    pub server_p95: String,
}

impl RowCells {
    pub fn of(r: &RunReport, row: &Row) -> Self {
        let server = r.verification.as_ref().and_then(|v| v.figures(&row.name));
        let lat = |us: u64| {
            if row.count == 0 {
                "-".to_owned()
            } else {
                format_micros(us)
            }
        };
        RowCells {
            p50: lat(row.p50_us),
            p95: lat(row.p95_us),
            p99: lat(row.p99_us),
            server_count: server
                .and_then(|f| f.count)
                .map_or("-".into(), |c| thousands(c.round() as u64)),
            server_p95: server
                .and_then(|f| f.quantile(0.95))
                .map_or("-".into(), |q| {
                    format!("≈ {}", format_micros((q * 1e6) as u64))
                }),
        }
    }
}
