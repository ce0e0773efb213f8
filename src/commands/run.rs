//! `disconnect-worker run`.

use tokio_util::sync::CancellationToken;

use super::ConfigError;
use crate::config::{self, BrokerArgs, DatabaseArgs, WorkerArgs};
use crate::observability;
use crate::worker;

pub async fn run(
    database: &DatabaseArgs,
    broker: &BrokerArgs,
    worker_args: &WorkerArgs,
) -> anyhow::Result<()> {
    let settings = config::run_settings(database, broker, worker_args).map_err(ConfigError)?;
    tracing::info!(database = %settings.database.url, broker = %settings.broker.urls,
        queue = %settings.broker.topology.request_queue, prefetch = settings.broker.prefetch, "starting");
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let metrics = observability::metrics::install()?;
    worker::run(settings, Some(metrics), shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Cancel on the first SIGTERM (Kubernetes) or SIGINT (a terminal).
pub(crate) async fn cancel_on_signal(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(error = %error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; shutting down"),
        () = terminate => tracing::info!("SIGTERM received; shutting down"),
    }
    shutdown.cancel();
}
