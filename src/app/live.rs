//! `--metrics-listen` and `--metrics-linger` in a run: the live server
//! bound before any traffic, fed once a second, and kept up after the
//! run until its final page was scraped.

use std::time::Duration;

use anyhow::anyhow;
use tokio_util::sync::CancellationToken;

use super::exit::{Exit, Failure, fail};
use crate::engine::{EngineOutput, Progress};
use crate::live::{Exposition, LiveServer, PATH};
use crate::scenario::{Scenario, units};

/// The live server of a run and how long it lingers after it.
pub(crate) struct Live {
    server: LiveServer,
    linger: Duration,
}

impl Live {
    /// Binds `listen` before any traffic, so a bad address or a port in
    /// use is a usage error (exit 64: the argument cannot be used, as
    /// with any other bad flag) rather than a run without its metrics.
    pub(super) async fn start(
        listen: Option<&str>,
        linger: Option<&str>,
    ) -> Result<Option<Self>, Failure> {
        let Some(listen) = listen else {
            return Ok(None);
        };
        let linger = linger
            .map(units::parse_duration)
            .transpose()
            .map_err(|e| fail(Exit::Usage, anyhow!("--metrics-linger: {e}")))?
            .unwrap_or_default();
        let server = LiveServer::start(listen)
            .await
            .map_err(|e| fail(Exit::Usage, anyhow!("--metrics-listen: {e}")))?;
        eprintln!("live metrics: http://{}{PATH}", server.addr());
        Ok(Some(Self { server, linger }))
    }

    /// The page renderer for `scenario`, feeding this server.
    pub(super) fn feed(&self, scenario: &Scenario) -> LiveFeed<'_> {
        LiveFeed {
            live: self,
            exposition: Exposition::new(scenario),
        }
    }
}

/// Renders and publishes the pages of one run.
pub(super) struct LiveFeed<'a> {
    live: &'a Live,
    exposition: Exposition,
}

impl LiveFeed<'_> {
    /// The figures so far, from the engine's once-a-second progress.
    pub(super) fn update(&self, p: &Progress) {
        self.live
            .server
            .publish(self.exposition.render(p.totals, p.parts));
    }

    /// The run's final figures, which include the drain's last requests.
    pub(super) fn finish(&self, run: &EngineOutput) {
        self.live.server.publish(self.exposition.render_final(run));
    }

    /// Keeps serving, after the outputs are written, until the final
    /// page was scraped, `--metrics-linger` passed or Ctrl-C.
    pub(super) async fn linger(&self, interrupt: &CancellationToken, quiet: bool) {
        let linger = self.live.linger;
        if linger.is_zero() {
            return;
        }
        if !quiet {
            eprintln!(
                "live metrics: serving the final figures until they are scraped (at most {linger:?})"
            );
        }
        tokio::select! {
            _ = self.live.server.wait_scraped(linger) => {}
            _ = interrupt.cancelled() => {}
        }
    }
}
