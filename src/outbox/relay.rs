//! The relay: publishes the events the after-commit path did not, and
//! deletes them once the broker has confirmed them. Two kinds, in order:
//! events whose publish after commit failed (at once), then events still
//! unpublished after the relay delay (left by a worker that died).
//!
//! At least once: an event is deleted only after its confirm, so a crash
//! between the confirm and the deletion publishes it again on the next
//! sweep.

use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use diesel::result::Error as QueryError;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use lapin::Channel;
use tokio_util::sync::CancellationToken;

use super::publish::publish_all;
use super::store::{self, Claim, Claimed};
use super::Shared;
use crate::broker::publish::PublishError;
use crate::db::DbError;
use crate::domain::EventId;
use crate::observability::metrics;

/// Added to the confirm timeout for the relay's idle-in-transaction bound.
const IDLE_MARGIN: Duration = Duration::from_secs(5);

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

/// Publish the claimed events; returns how many were published. The rows
/// stay locked (`SKIP LOCKED` for other replicas) until they are deleted, and
/// a failed publish rolls the whole batch back to pending. The transaction
/// waits for the broker's confirms, so it lets the server wait that long
/// for its next statement (the session's own idle-in-transaction timeout is
/// shorter); the confirm timeout bounds that wait. References the claim set
/// aside are reported once the transaction that moved them commits.
async fn publish_claimed(
    shared: &Shared,
    channel: &Channel,
    claim: Claim<'_>,
) -> Result<usize, RelayError> {
    let exchange = shared.settings.exchange.as_str();
    let confirm_timeout = shared.settings.confirm_timeout;
    let published = shared
        .pool
        .run(async |conn| {
            let batch = conn
                .transaction::<_, BatchError, _>(async |conn| {
                    allow_idle_for(conn, confirm_timeout).await?;
                    let Claimed { events, set_aside } = store::claim(conn, &claim).await?;
                    if !events.is_empty() {
                        publish_all(channel, exchange, &events, confirm_timeout)
                            .await
                            .map_err(BatchError::Publish)?;
                        let ids: Vec<EventId> = events.iter().map(|event| event.event_id).collect();
                        store::delete_confirmed(conn, &ids).await?;
                    }
                    Ok((events.len(), set_aside))
                })
                .await;
            // The query error is the pool's to classify; the publish error
            // comes back as the work's result.
            match batch {
                Ok(done) => Ok(Ok(done)),
                Err(BatchError::Query(error)) => Err(error),
                Err(BatchError::Publish(error)) => Ok(Err(error)),
            }
        })
        .await
        .map_err(RelayError::Db)?;
    let (count, set_aside) = published?;
    metrics::events_published("relay", count);
    for one in &set_aside {
        // Ids only: never a token (none is stored), never the event's body.
        tracing::error!(event.id = %one.event_id, request.id = %one.request_id,
            connection.id = %one.connection_id, problem = %one.problem,
            "set aside an outbox event that cannot be published; see `disconnect-worker outbox set-aside list`");
    }
    metrics::events_set_aside(set_aside.len());
    // Claimed rows count towards a full batch: more may be waiting.
    Ok(count + set_aside.len())
}

/// `SET LOCAL idle_in_transaction_session_timeout` to what the transaction
/// may wait for the broker, with a margin.
async fn allow_idle_for(
    conn: &mut AsyncPgConnection,
    confirm_timeout: Duration,
) -> Result<(), QueryError> {
    use diesel_async::RunQueryDsl;
    let millis = (confirm_timeout + IDLE_MARGIN).as_millis();
    diesel::sql_query(format!(
        "SET LOCAL idle_in_transaction_session_timeout = {millis}"
    ))
    .execute(conn)
    .await
    .map(drop)
}

/// Publish the oldest batch of the events whose publish after commit
/// failed (at most the relay's batch size: each batch is confirmed before
/// the next is claimed, so a missed confirm sends again at most one batch).
/// On failure the batch stays listed for the next sweep. Returns whether
/// more are listed.
async fn publish_unsent(shared: &Shared, channel: &Channel) -> Result<bool, RelayError> {
    let limit = usize::try_from(shared.settings.batch_size).unwrap_or(usize::MAX);
    let ids = shared.unsent.take_up_to(limit);
    if ids.is_empty() {
        return Ok(false);
    }
    let result = publish_claimed(shared, channel, Claim::Ids(&ids)).await;
    if result.is_err() {
        shared.unsent.push(ids);
    }
    result.map(|_| !shared.unsent.is_empty())
}

/// One sweep: a batch of the unsent events, then a batch of those older
/// than the relay delay, each its own transaction. The second runs whatever
/// the first did, so events another replica left are never held up behind
/// this one's. Returns whether more may be waiting, or the first failure.
async fn sweep(shared: &Shared, channel: &Channel) -> Result<bool, RelayError> {
    let unsent = publish_unsent(shared, channel).await;
    let batch_size = shared.settings.batch_size;
    let claim = Claim::OlderThan(shared.settings.relay_delay, batch_size);
    let older = publish_claimed(shared, channel, claim).await;
    Ok(unsent? | (older? as i64 == batch_size))
}

/// Publish until nothing is left to the relay (the unsent events, and every
/// event older than the relay delay), starting no sweep after `deadline`.
/// Events younger than the delay belong to a worker (here or on another
/// replica) that is publishing them. Returns whether everything was
/// published; what is not stays in the outbox for the relays of the
/// replicas still running, or of the next start.
pub(super) async fn drain(
    shared: &Shared,
    channel: &Channel,
    deadline: tokio::time::Instant,
) -> Result<bool, RelayError> {
    while sweep(shared, channel).await? {
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
    }
    Ok(true)
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
