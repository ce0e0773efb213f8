//! Getting ready to consume: the database (created and migrated) and a broker
//! session, each retried with backoff until it works or the worker is stopped.

use backon::Retryable;
use tokio_util::sync::CancellationToken;

use crate::broker::BrokerSession;
use crate::config::RunSettings;
use crate::db;
use crate::observability::metrics;

/// Create and migrate the database if asked. `false` if the worker was
/// stopped first.
pub async fn prepare_database(
    settings: &RunSettings,
    shutdown: &CancellationToken,
) -> anyhow::Result<bool> {
    if settings.run_migrations {
        let url = &settings.database.url;
        let migrate = || async {
            db::setup::create_database_if_missing(url).await?;
            db::migrate(url).await
        };
        let attempt = migrate
            .retry(settings.worker.retry.until_recovered())
            .notify(|error, delay| {
                metrics::retried("migrate");
                tracing::warn!(error = %format!("{error:#}"), retry_in_ms = delay.as_millis() as u64,
                    "database not ready; retrying");
            });
        let applied = tokio::select! {
            () = shutdown.cancelled() => return Ok(false),
            applied = attempt => applied?,
        };
        tracing::info!(migrations.applied = applied.len(), "database ready");
    }
    Ok(true)
}

/// Open a broker session (connect, declare the topology). `None` if the worker
/// was stopped first.
pub async fn open_session(
    settings: &RunSettings,
    shutdown: &CancellationToken,
) -> Option<BrokerSession> {
    let open = || {
        BrokerSession::open(
            &settings.amqp_url,
            &settings.topology,
            settings.worker.prefetch,
        )
    };
    let attempt = open
        .retry(settings.worker.retry.until_recovered())
        .notify(|error, delay| {
            metrics::retried("connect");
            tracing::warn!(error = %error, broker = %settings.amqp_url, retry_in_ms = delay.as_millis() as u64,
                "broker not reachable; retrying");
        });
    tokio::select! {
        () = shutdown.cancelled() => None,
        session = attempt => {
            let session = session.ok()?;
            tracing::info!(broker = %settings.amqp_url, "broker session open, topology declared");
            Some(session)
        }
    }
}
