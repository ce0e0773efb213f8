//! Getting ready to consume: the database (created and migrated) and a broker
//! session, each retried with backoff while its server cannot be reached.

use backon::Retryable;
use tokio_util::sync::CancellationToken;

use super::Settings;
use crate::broker::BrokerSession;
use crate::db::setup::{self, SetupError};
use crate::observability::{metrics, Outage};

/// Create and migrate the database if asked. `false` if the worker was
/// stopped first. A server that cannot be reached is waited for; a failure
/// once connected (a migration that fails, no right to create the database)
/// stops start-up, since waiting would not fix it.
pub async fn prepare_database(
    settings: &Settings,
    database: &Outage,
    shutdown: &CancellationToken,
) -> anyhow::Result<bool> {
    if !settings.run_migrations {
        return Ok(true);
    }
    let url = &settings.database.url;
    let migrate = || async {
        setup::create_database_if_missing(url).await?;
        setup::migrate(url).await
    };
    let attempt = migrate
        .retry(settings.retry.until_recovered())
        .when(SetupError::is_unreachable)
        .notify(|error, _| {
            metrics::retried("migrate");
            database.failed(error);
        });
    let applied = tokio::select! {
        () = shutdown.cancelled() => return Ok(false),
        applied = attempt => applied?,
    };
    database.recovered();
    tracing::info!(migrations.applied = applied.len(), "database ready");
    Ok(true)
}

/// Open a broker session (connect, declare the topology). `None` if the worker
/// was stopped first.
pub async fn open_session(
    settings: &Settings,
    shutdown: &CancellationToken,
) -> Option<BrokerSession> {
    let broker = &settings.broker;
    let outage = Outage::new("broker");
    let open = || BrokerSession::open(&broker.url, &broker.topology, broker.prefetch);
    let attempt = open
        .retry(settings.retry.until_recovered())
        .notify(|error, _| {
            metrics::retried("connect");
            outage.failed(error);
        });
    tokio::select! {
        () = shutdown.cancelled() => None,
        session = attempt => {
            let session = session.ok()?;
            outage.recovered();
            tracing::info!(broker = %broker.url, "broker session open, topology declared");
            Some(session)
        }
    }
}
