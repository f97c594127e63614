//! The signals that stop a run: Ctrl-C (SIGINT) and, on Unix, SIGTERM, as
//! sent by `kill`, systemd, Kubernetes and CI runners.

/// Ctrl-C and SIGTERM, caught from the moment this is created: a signal
/// that arrives before anyone waits is kept for the next [`next`] rather
/// than killing the process.
///
/// [`next`]: StopSignals::next
pub(crate) struct StopSignals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl StopSignals {
    /// Installs the handlers now. Needs a tokio runtime.
    pub(crate) fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let streams = signal(SignalKind::interrupt())
                .and_then(|int| Ok((int, signal(SignalKind::terminate())?)))
                .ok();
            Self { streams }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// Resolves on the next Ctrl-C or SIGTERM.
    pub(crate) async fn next(&mut self) {
        #[cfg(unix)]
        if let Some((int, term)) = &mut self.streams {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
