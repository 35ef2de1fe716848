//! Waiting for the operator's stop signal.

use std::future::Future;

/// Starts listening for SIGINT and SIGTERM now, and returns a future that resolves on the
/// first of them. Listening starts before the future is polled, so a signal that arrives
/// while the node is still starting up is not lost (nor fatal).
pub fn listen() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => tokio::select! {
                    _ = interrupt.recv() => tracing::info!("SIGINT received: shutting down"),
                    _ = terminate.recv() => tracing::info!("SIGTERM received: shutting down"),
                },
                (Err(e), _) | (_, Err(e)) => {
                    tracing::error!(error = %e, "cannot listen for SIGINT/SIGTERM; stop the process another way");
                    std::future::pending::<()>().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM received after the call.
pub async fn signal() {
    listen().await;
}
