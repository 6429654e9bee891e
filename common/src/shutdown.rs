//! How a service is told to stop (feature `http`): one cloneable [`Shutdown`] handle, fired by
//! SIGINT/SIGTERM in a service's `main` ([`Shutdown::on_signals`]) or by a test that runs the
//! service in-process ([`Shutdown::trigger`]). Every service's `run(config, shutdown)` stops
//! gracefully when it fires: the HTTP server ([`crate::http::serve`]) finishes the requests in
//! flight, and the matcher drains its pipeline.
//!
//! It is a `tokio::sync::watch` flag: async code awaits [`Shutdown::wait`], threads that poll ask
//! [`Shutdown::is_triggered`]. Signals are caught on a small thread of their own, so the handle
//! works the same under actix's runtime, tokio's, or none (the matcher's `main` has none). A second
//! signal while the first one's shutdown is under way exits at once (status 130): the way out when
//! a drain hangs.

use std::sync::Arc;

use tokio::sync::watch;

/// A cloneable stop signal: every clone sees the one [`trigger`](Shutdown::trigger).
#[derive(Clone, Debug)]
pub struct Shutdown(Arc<watch::Sender<bool>>);

impl Default for Shutdown {
    fn default() -> Shutdown {
        Shutdown::new()
    }
}

impl Shutdown {
    /// A handle that fires only when [`trigger`](Shutdown::trigger)ed.
    pub fn new() -> Shutdown {
        Shutdown(Arc::new(watch::Sender::new(false)))
    }

    /// Fires the handle, for every clone; later calls do nothing.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    /// True once fired.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once fired (at once if it already was).
    pub async fn wait(&self) {
        let mut fired = self.0.subscribe();
        // The sender lives in `self`, so the channel cannot close while this waits.
        let _ = fired.wait_for(|&fired| fired).await;
    }

    /// A handle fired by the first SIGINT or SIGTERM; a second one exits the process at once.
    /// The handlers are installed when this returns.
    pub fn on_signals() -> std::io::Result<Shutdown> {
        let shutdown = Shutdown::new();
        let fire = shutdown.clone();
        let (installed_tx, installed) = std::sync::mpsc::channel::<std::io::Result<()>>();
        std::thread::Builder::new().name("signals".into()).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_io().build() {
                Ok(rt) => rt,
                Err(e) => return drop(installed_tx.send(Err(e))),
            };
            rt.block_on(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let (mut int, mut term) =
                    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
                        (Ok(int), Ok(term)) => (int, term),
                        (Err(e), _) | (_, Err(e)) => return drop(installed_tx.send(Err(e))),
                    };
                let _ = installed_tx.send(Ok(()));
                let first = tokio::select! {
                    _ = int.recv() => "SIGINT",
                    _ = term.recv() => "SIGTERM",
                };
                tracing::info!(signal = first, "shutting down");
                fire.trigger();
                let second = tokio::select! {
                    _ = int.recv() => "SIGINT",
                    _ = term.recv() => "SIGTERM",
                };
                tracing::warn!(signal = second, "second signal: exiting now");
                std::process::exit(130);
            });
        })?;
        installed.recv().map_err(|_| std::io::Error::other("the signal thread ended at start"))??;
        Ok(shutdown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn every_clone_sees_one_trigger() {
        let shutdown = Shutdown::new();
        let clone = shutdown.clone();
        assert!(!clone.is_triggered());
        let waiter = actix_web::rt::spawn({
            let clone = clone.clone();
            async move { clone.wait().await }
        });
        actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "nothing fired yet");
        shutdown.trigger();
        waiter.await.unwrap();
        assert!(clone.is_triggered());
        shutdown.trigger();
        // Fired already: resolves at once.
        clone.wait().await;
    }

    #[test]
    fn signal_handlers_install() {
        let shutdown = Shutdown::on_signals().unwrap();
        assert!(!shutdown.is_triggered());
    }
}
