//! Getting ready to consume: the database (created and migrated) and a broker
//! session, each retried with backoff while its server cannot be reached.

use backon::Retryable;
use tokio_util::sync::CancellationToken;

use super::Settings;
use crate::broker::{BrokerSession, TopologyError, TopologyMode};
use crate::db::connect::ConnectError;
use crate::db::setup::{self, SetupError};
use crate::observability::{metrics, Outage};
use crate::outbox::{format, OutboxFormat};

/// Make sure the database can be used: create and migrate it if asked, or
/// else open one connection, and read the outbox format every replica
/// writes in. `None` if the worker was stopped first. A server that cannot
/// be reached is waited for; anything else (a TLS setting that does not
/// match the server, a migration that fails, no right to create the
/// database, an outbox format a newer release set) stops start-up, since
/// waiting would not fix it.
pub async fn prepare_database(
    settings: &Settings,
    database: &Outage,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<OutboxFormat>> {
    let url = &settings.database.url;
    let prepare = || async {
        let applied = if settings.run_migrations {
            setup::create_database_if_missing(url).await?;
            setup::migrate(url).await?.len()
        } else {
            0
        };
        let mut conn = url.establish().await.map_err(SetupError::from)?;
        // Bounded as a transaction is: a link that goes silent here is an
        // outage to wait out, not a start-up that hangs.
        let deadline = settings.database.deadlines.transaction;
        let format = metrics::within("database_transaction", deadline, format::stored(&mut conn))
            .await
            .map_err(|_| {
                SetupError::Unreachable(ConnectError::Unreachable {
                    url: url.to_string(),
                    reason: format!("no answer to reading the outbox format within {deadline:?}"),
                    answered: false,
                })
            })?
            .map_err(|error| SetupError::Failed(anyhow::Error::new(error)))?;
        Ok::<_, SetupError>((applied, format))
    };
    let attempt = prepare
        .retry(settings.retry.until_recovered())
        .when(SetupError::is_unreachable)
        .notify(|error, _| {
            metrics::retried("migrate");
            database.failed(error);
        });
    let (applied, format) = tokio::select! {
        () = shutdown.cancelled() => return Ok(None),
        prepared = attempt => prepared?,
    };
    database.recovered();
    let format = OutboxFormat::parse(&format).ok_or_else(|| format::unknown(&format))?;
    tracing::info!(
        migrations.applied = applied,
        tls = url.ssl_mode().as_str(),
        outbox.format = format.as_str(),
        "database ready"
    );
    Ok(Some(format))
}

/// Open a broker session on the first address that answers, starting at
/// `first` and going round the list: after losing a node, the worker tries
/// the next one first. Each round that finds none is retried with backoff,
/// until the worker is stopped (`Ok(None)`). A topology conflict (an object
/// with other settings, or one missing with `DECLARE_TOPOLOGY=false`) is an
/// error: it stops the worker, since no retry fixes it.
pub async fn open_session(
    settings: &Settings,
    first: usize,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<(BrokerSession, usize)>> {
    let broker = &settings.broker;
    let outage = Outage::new("broker");
    let mode = if broker.declare_topology {
        TopologyMode::Declare
    } else {
        TopologyMode::Verify
    };
    let round = || async {
        let mut last_error = None;
        for (index, url) in broker.urls.from(first) {
            match BrokerSession::open(&broker.urls, url, &broker.topology, mode, broker.prefetch)
                .await
            {
                Ok(session) => return Ok((session, index)),
                Err(error) if error.is_conflict() => return Err(error),
                Err(error) => {
                    tracing::debug!(broker = %url, error = %error, "broker address not answering");
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| {
            TopologyError::Broker(lapin::Error::from(std::io::Error::other(
                "no broker address",
            )))
        }))
    };
    let attempt = round
        .retry(settings.retry.until_recovered())
        .when(|error: &TopologyError| !error.is_conflict())
        .notify(|error, _| {
            metrics::retried("connect");
            outage.failed(error);
        });
    tokio::select! {
        () = shutdown.cancelled() => Ok(None),
        opened = attempt => {
            let (session, index) = opened?;
            outage.recovered();
            if let Some(url) = broker.urls.get(index) {
                tracing::info!(broker = %url, "broker session open, topology ready");
            }
            Ok(Some((session, index)))
        }
    }
}
