//! The outbox relay: publishes events committed to `outbox_events`, oldest
//! first, and marks them published once the broker has confirmed them.
//!
//! At least once: an event is marked only after its confirm, so a crash
//! between the confirm and the mark publishes it again on the next sweep.

use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use chrono::Utc;
use diesel::result::Error as QueryError;
use diesel_async::AsyncConnection;
use lapin::Channel;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::broker::publish::{json_properties, publish_confirmed, PublishError};
use crate::db::outbox::{self, PendingEvent};
use crate::db::{DbError, DbPool};
use crate::observability::metrics;
use crate::retry::RetrySettings;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

impl From<QueryError> for RelayError {
    fn from(error: QueryError) -> Self {
        Self::Db(DbError::Query(error))
    }
}

/// Transaction-internal error: either side can abort the batch.
enum BatchError {
    Query(QueryError),
    Publish(PublishError),
}

impl From<QueryError> for BatchError {
    fn from(error: QueryError) -> Self {
        Self::Query(error)
    }
}

/// Publish one batch of pending events; returns how many were published.
/// The rows stay locked (`SKIP LOCKED` for other replicas) until they are
/// marked, and a failed publish rolls the whole batch back to pending.
pub async fn publish_pending_batch(
    pool: &DbPool,
    channel: &Channel,
    exchange: &str,
    batch_size: i64,
) -> Result<usize, RelayError> {
    let mut conn = pool.get().await.map_err(DbError::from)?;
    let result = conn
        .transaction::<_, BatchError, _>(async |conn| {
            let events = outbox::claim_unpublished(conn, batch_size).await?;
            publish_all(channel, exchange, &events)
                .await
                .map_err(BatchError::Publish)?;
            let ids: Vec<i64> = events.iter().map(|event| event.id).collect();
            outbox::mark_published(conn, &ids, Utc::now()).await?;
            Ok(events.len())
        })
        .await;
    match result {
        Ok(count) => {
            metrics::events_published(count);
            Ok(count)
        }
        Err(BatchError::Query(error)) => Err(error.into()),
        Err(BatchError::Publish(error)) => Err(error.into()),
    }
}

/// Publish every event, then wait for all the confirms together: one round
/// trip per batch rather than per event.
async fn publish_all(
    channel: &Channel,
    exchange: &str,
    events: &[PendingEvent],
) -> Result<(), PublishError> {
    let confirms = events.iter().map(|event| {
        publish_confirmed(
            channel,
            exchange,
            &event.routing_key,
            event.payload.as_bytes(),
            json_properties(&event.event_id.to_string(), &event.request_id.to_string()),
        )
    });
    for result in futures_util::future::join_all(confirms).await {
        result?;
    }
    Ok(())
}

/// Publish until the outbox is empty.
pub async fn drain(
    pool: &DbPool,
    channel: &Channel,
    exchange: &str,
    batch_size: i64,
) -> Result<(), RelayError> {
    while publish_pending_batch(pool, channel, exchange, batch_size).await? > 0 {}
    Ok(())
}

/// What the relay of one session needs.
pub struct Relay {
    pub pool: DbPool,
    pub channel: Channel,
    pub exchange: String,
    pub batch_size: i64,
    pub poll_interval: Duration,
    pub retry: RetrySettings,
    pub wakeup: Arc<Notify>,
}

impl Relay {
    /// Sweep when woken after a commit, and every `poll_interval` for events
    /// no one woke it for (left by a crash or by another replica). Ends when
    /// `stop` is cancelled or its channel dies.
    pub async fn run(self, stop: CancellationToken) {
        let mut backoff = self.retry.until_recovered().build();
        loop {
            let delay = match publish_pending_batch(
                &self.pool,
                &self.channel,
                &self.exchange,
                self.batch_size,
            )
            .await
            {
                Ok(count) => {
                    backoff = self.retry.until_recovered().build();
                    if count as i64 == self.batch_size {
                        continue;
                    }
                    self.poll_interval
                }
                Err(error) => {
                    if !self.channel.status().connected() {
                        tracing::debug!("publish channel closed; the relay stops with its session");
                        return;
                    }
                    metrics::retried("relay");
                    tracing::warn!(error = %error, "publishing outbox events failed; will retry");
                    backoff.next().unwrap_or(self.retry.max_delay)
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.wakeup.notified() => {}
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
}

/// How often published events past their retention are deleted, and how many
/// per statement.
const PRUNE_INTERVAL: Duration = Duration::from_secs(300);
const PRUNE_BATCH: i64 = 10_000;

/// Delete published events older than `retention`, every few minutes, so the
/// outbox does not grow without bound. Unpublished events are never touched.
pub async fn prune_published(pool: DbPool, retention: Duration, stop: CancellationToken) {
    loop {
        if let Err(error) = prune_once(&pool, retention).await {
            tracing::warn!(error = %error, "pruning published events failed; will retry");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(PRUNE_INTERVAL) => {}
        }
    }
}

/// One pruning pass; returns how many events were deleted.
pub async fn prune_once(pool: &DbPool, retention: Duration) -> Result<usize, DbError> {
    let before =
        Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let mut conn = pool.get().await?;
    let mut deleted = 0;
    loop {
        let count = outbox::delete_published_before(&mut conn, before, PRUNE_BATCH).await?;
        deleted += count;
        if (count as i64) < PRUNE_BATCH {
            return Ok(deleted);
        }
    }
}
