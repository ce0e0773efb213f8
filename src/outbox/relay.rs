//! The relay: publishes the events the after-commit path did not, and marks
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

use super::publish::publish_all;
use super::{store, Shared};
use crate::broker::publish::PublishError;
use crate::db::DbError;
use crate::domain::{EventId, OutcomeEvent};
use crate::observability::metrics;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Publish(#[from] PublishError),
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
    Ids(&'a [EventId]),
    /// The oldest, up to a limit, unpublished for longer than a delay.
    OlderThan(Duration, i64),
}

impl Claim<'_> {
    async fn load(&self, conn: &mut AsyncPgConnection) -> Result<Vec<OutcomeEvent>, QueryError> {
        match self {
            Self::Ids(ids) => store::claim_unpublished_by_ids(conn, ids).await,
            Self::OlderThan(delay, limit) => {
                store::claim_unpublished_older_than(conn, *delay, *limit).await
            }
        }
    }
}

/// Publish the claimed events; returns how many were published. The rows
/// stay locked (`SKIP LOCKED` for other replicas) until they are marked, and
/// a failed publish rolls the whole batch back to pending.
async fn publish_claimed(
    shared: &Shared,
    channel: &Channel,
    claim: Claim<'_>,
) -> Result<usize, RelayError> {
    let mut conn = shared.pool.get().await.map_err(DbError::from)?;
    let exchange = shared.settings.exchange.as_str();
    let result = conn
        .transaction::<_, BatchError, _>(async |conn| {
            let events = claim.load(conn).await?;
            if events.is_empty() {
                return Ok(0);
            }
            publish_all(channel, exchange, &events)
                .await
                .map_err(BatchError::Publish)?;
            let ids: Vec<EventId> = events.iter().map(|event| event.event_id).collect();
            store::mark_published(conn, &ids, Utc::now()).await?;
            Ok(events.len())
        })
        .await;
    match result {
        Ok(count) => {
            metrics::events_published("relay", count);
            Ok(count)
        }
        Err(BatchError::Query(error)) => Err(DbError::Query(error).into()),
        Err(BatchError::Publish(error)) => Err(error.into()),
    }
}

/// Publish the events whose publish after commit failed; on failure they
/// stay listed for the next sweep.
async fn publish_unsent(shared: &Shared, channel: &Channel) -> Result<usize, RelayError> {
    let ids = shared.unsent.take();
    if ids.is_empty() {
        return Ok(0);
    }
    let result = publish_claimed(shared, channel, Claim::Ids(&ids)).await;
    if result.is_err() {
        shared.unsent.push(ids);
    }
    result
}

/// One sweep: the unsent events, then one batch of those older than the
/// relay delay. Returns whether that batch was full (more may be waiting).
async fn sweep(shared: &Shared, channel: &Channel) -> Result<bool, RelayError> {
    publish_unsent(shared, channel).await?;
    let batch_size = shared.settings.batch_size;
    let claim = Claim::OlderThan(shared.settings.relay_delay, batch_size);
    let count = publish_claimed(shared, channel, claim).await?;
    Ok(count as i64 == batch_size)
}

/// Publish until nothing is left to the relay: the unsent events, and every
/// event older than the relay delay. Events younger than that belong to a
/// worker (here or on another replica) that is publishing them.
pub(super) async fn drain(shared: &Shared, channel: &Channel) -> Result<(), RelayError> {
    while sweep(shared, channel).await? {}
    Ok(())
}

/// Sweep every poll interval, at once when a publish after commit fails, and
/// at once on a new broker session, until `stop`. Between sessions it waits.
pub(super) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let retry = &shared.settings.retry;
    let mut sessions = shared.channel.subscribe();
    let mut backoff = retry.until_recovered().build();
    loop {
        sessions.borrow_and_update();
        let delay = match shared.current_channel() {
            // No usable session: wait for the next one.
            None => Duration::MAX,
            Some(channel) => match sweep(&shared, &channel).await {
                Ok(more) => {
                    shared.database.recovered();
                    backoff = retry.until_recovered().build();
                    if more {
                        continue;
                    }
                    shared.settings.poll_interval
                }
                Err(error) => {
                    if channel.status().connected() {
                        metrics::retried("relay");
                        match &error {
                            RelayError::Db(error) => {
                                shared.database_failed("publishing outbox events", error)
                            }
                            RelayError::Publish(error) => tracing::warn!(error = %error,
                                "publishing outbox events failed; will retry"),
                        }
                    }
                    backoff.next().unwrap_or(retry.max_delay)
                }
            },
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = shared.relay_wakeup.notified() => {}
            changed = sessions.changed() => if changed.is_err() { return },
            () = sleep(delay) => {}
        }
    }
}

/// `tokio::time::sleep`, where `Duration::MAX` means "until woken".
async fn sleep(delay: Duration) {
    match tokio::time::Instant::now().checked_add(delay) {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
