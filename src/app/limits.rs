//! What the machine lets one process hold, checked before the load starts,
//! so a run too large for it fails with a message instead of a storm of
//! connection errors half-way through.

use crate::scenario::{LoadModel, Scenario};

/// Open files a run needs besides its users' connections: standard
/// streams, the runtime, metric sources and the results files.
const RESERVED_FILES: u64 = 64;

/// How many files the run may keep open: one connection per user (or
/// request in flight) and target, plus a reserve.
pub(super) fn open_files_needed(s: &Scenario) -> u64 {
    let concurrency: u64 = s
        .parts
        .iter()
        .map(|p| match p.load.model {
            LoadModel::Closed { users, .. } => users,
            LoadModel::Open { max_in_flight, .. } => max_in_flight,
        })
        .fold(0, u64::saturating_add);
    let mut targets: Vec<usize> = s.requests.iter().map(|r| r.call.target()).collect();
    targets.sort_unstable();
    targets.dedup();
    concurrency.saturating_mul(targets.len().max(1) as u64) + RESERVED_FILES
}

/// Makes room for `needed` open files, raising the soft limit towards the
/// hard one as shells leave it low (often 1,024); says how to raise it
/// when the hard limit itself is too low.
pub(super) fn ensure_open_files(needed: u64) -> Result<(), String> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one `rlimit` through a valid pointer.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return Ok(());
        }
        // `rlim_t` is 64 bits on Linux but not on every Unix.
        #[allow(clippy::unnecessary_cast)]
        let (soft, hard) = (lim.rlim_cur as u64, lim.rlim_max as u64);
        if soft >= needed {
            return Ok(());
        }
        if hard >= needed {
            lim.rlim_cur = needed as libc::rlim_t;
            // SAFETY: setrlimit reads one `rlimit` through a valid pointer.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
                return Ok(());
            }
        }
        Err(format!(
            "this load needs about {needed} open files (a connection per user and target), \
             but this process may open {}; raise the limit (`ulimit -n {needed}`) or run fewer users",
            hard.max(soft)
        ))
    }
    #[cfg(not(unix))]
    {
        let _ = needed;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raises_the_soft_limit_or_says_how_many_files_are_needed() {
        assert!(ensure_open_files(16).is_ok());
        let err = ensure_open_files(u64::MAX / 2).unwrap_err();
        assert!(err.contains("ulimit -n"), "{err}");
    }

    #[test]
    fn counts_a_connection_per_user_and_target() {
        let s = crate::scenario::parse(
            std::path::Path::new("t.yaml"),
            r#"
name: t
targets:
  a: { url: "http://127.0.0.1:1" }
  b: { url: "http://127.0.0.1:2" }
  unused: { url: "http://127.0.0.1:3" }
load: { users: 500, duration: 1s }
requests:
  - { name: x, http: { target: a, path: / } }
  - { name: y, http: { target: b, path: / } }
  - { name: z, http: { target: a, path: /z } }
"#,
        )
        .unwrap();
        assert_eq!(open_files_needed(&s), 500 * 2 + RESERVED_FILES);
    }
}
