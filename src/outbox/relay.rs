//! The outbox relay: publishes the events the handlers did not, and marks
//! them published once the broker has confirmed them. Two kinds, in order:
//! events whose publish after commit failed (at once), then events still
//! unpublished after the relay delay (left by a worker that died).
//!
//! At least once: an event is marked only after its confirm, so a crash
//! between the confirm and the mark publishes it again on the next sweep.

use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use chrono::Utc;
use diesel::result::Error as QueryError;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use lapin::Channel;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{publish_all, Outbox};
use crate::broker::publish::PublishError;
use crate::db::outbox;
use crate::db::{DbError, DbPool};
use crate::domain::OutcomeEvent;
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

/// Which unpublished events a sweep claims.
enum Claim<'a> {
    /// These, whatever their age.
    Ids(&'a [Uuid]),
    /// The oldest, up to a limit, unpublished for longer than a delay.
    OlderThan(Duration, i64),
}

impl Claim<'_> {
    async fn load(&self, conn: &mut AsyncPgConnection) -> Result<Vec<OutcomeEvent>, QueryError> {
        match self {
            Self::Ids(ids) => outbox::claim_unpublished_by_ids(conn, ids).await,
            Self::OlderThan(delay, limit) => {
                outbox::claim_unpublished_older_than(conn, *delay, *limit).await
            }
        }
    }
}

/// Publish the claimed events; returns how many were published. The rows
/// stay locked (`SKIP LOCKED` for other replicas) until they are marked, and
/// a failed publish rolls the whole batch back to pending.
async fn publish_claimed(
    pool: &DbPool,
    channel: &Channel,
    exchange: &str,
    claim: Claim<'_>,
) -> Result<usize, RelayError> {
    let mut conn = pool.get().await.map_err(DbError::from)?;
    let result = conn
        .transaction::<_, BatchError, _>(async |conn| {
            let events = claim.load(conn).await?;
            if events.is_empty() {
                return Ok(0);
            }
            publish_all(channel, exchange, &events)
                .await
                .map_err(BatchError::Publish)?;
            let ids: Vec<Uuid> = events.iter().map(|event| event.event_id).collect();
            outbox::mark_published(conn, &ids, Utc::now()).await?;
            Ok(events.len())
        })
        .await;
    match result {
        Ok(count) => {
            metrics::events_published("relay", count);
            Ok(count)
        }
        Err(BatchError::Query(error)) => Err(error.into()),
        Err(BatchError::Publish(error)) => Err(error.into()),
    }
}

/// Publish the events whose publish after commit failed; on failure they
/// stay listed for the next sweep.
async fn publish_unsent(
    pool: &DbPool,
    channel: &Channel,
    outbox: &Outbox,
) -> Result<usize, RelayError> {
    let ids = outbox.take_unsent();
    if ids.is_empty() {
        return Ok(0);
    }
    let result = publish_claimed(pool, channel, outbox.exchange(), Claim::Ids(&ids)).await;
    if result.is_err() {
        outbox.return_unsent(ids);
    }
    result
}

/// One sweep: the unsent events, then one batch of those older than the
/// relay delay. Returns whether that batch was full (more may be waiting).
async fn sweep(
    pool: &DbPool,
    channel: &Channel,
    outbox: &Outbox,
    batch_size: i64,
) -> Result<bool, RelayError> {
    publish_unsent(pool, channel, outbox).await?;
    let claim = Claim::OlderThan(outbox.relay_delay(), batch_size);
    let count = publish_claimed(pool, channel, outbox.exchange(), claim).await?;
    Ok(count as i64 == batch_size)
}

/// Publish until nothing is left to the relay: the unsent events, and every
/// event older than the relay delay. Events younger than that belong to a
/// handler (here or on another replica) that is publishing them.
pub async fn drain(
    pool: &DbPool,
    channel: &Channel,
    outbox: &Outbox,
    batch_size: i64,
) -> Result<(), RelayError> {
    while sweep(pool, channel, outbox, batch_size).await? {}
    Ok(())
}

/// What the relay of one session needs.
pub struct Relay {
    pub pool: DbPool,
    pub channel: Channel,
    pub outbox: Arc<Outbox>,
    pub batch_size: i64,
    pub poll_interval: Duration,
    pub retry: RetrySettings,
}

impl Relay {
    /// Sweep every `poll_interval`, and at once when a publish after commit
    /// fails. Ends when `stop` is cancelled or its channel dies.
    pub async fn run(self, stop: CancellationToken) {
        let mut backoff = self.retry.until_recovered().build();
        loop {
            let delay = match sweep(&self.pool, &self.channel, &self.outbox, self.batch_size).await
            {
                Ok(more) => {
                    backoff = self.retry.until_recovered().build();
                    if more {
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
                () = self.outbox.relay_wakeup.notified() => {}
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
}
