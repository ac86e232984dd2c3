//! Stopping a worker: the trigger a signal pulls, and what every waiting task watches.

use tokio::sync::watch;

/// Set once the worker must stop. Cloned into every task that waits.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// Stops the workers holding the matching [`Shutdown`].
pub struct Trigger(watch::Sender<bool>);

impl Trigger {
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    pub fn new() -> (Trigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (Trigger(tx), Shutdown(rx))
    }

    /// A shutdown set by SIGTERM or SIGINT.
    pub fn on_signals() -> Shutdown {
        let (trigger, shutdown) = Shutdown::new();
        tokio::spawn(async move {
            let term = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = term => tracing::info!("SIGTERM: finishing the batch in flight, then stopping"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: finishing the batch in flight, then stopping"),
            }
            trigger.stop();
        });
        shutdown
    }

    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// The worker was asked to stop while it waited; the batch in hand is abandoned and
/// will be redelivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stopped")]
pub struct Stopped;
