//! Retention: rows past their age are deleted in bounded batches, so no
//! table grows without bound (Hydra's token tables reached 18 GB before it
//! had a janitor, ory/hydra #1574). Each table has its own age; `None`
//! keeps its rows forever.
//!
//! One replica at a time: every batch is a transaction that first takes a
//! transaction-level advisory lock with `pg_try_advisory_xact_lock`; a
//! replica that does not get it leaves the pass to the one that did. The
//! lock ends with the transaction, so a replica that dies holds nothing.
//!
//! What a purge does to a replayed request: a request id whose audit row
//! is gone is processed again, but finds nothing active of its own. A
//! token is revoked or deleted; a connection is disconnected or deleted;
//! a company or client request only ever covers connections made before
//! it was asked, all ended by its first run; and one older than the
//! replay window (the audit retention less an hour for clock skew) is
//! refused as `expired` before anything is read.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::result::Error as QueryError;
use diesel::sql_types::{BigInt, Bool};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use tokio_util::sync::CancellationToken;

use crate::db::{connections, fanouts, requests, tokens, BoundedPool, DbError, FailureClass};
use crate::observability::metrics;
use crate::outbox::store as outbox_store;

/// How long each kind of row is kept; `None`: forever.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionSettings {
    pub revoked_tokens: Option<Duration>,
    pub disconnected_connections: Option<Duration>,
    /// Audit rows, and the progress records of finished fan-outs.
    pub audit: Option<Duration>,
    /// Published events (unpublished ones are never deleted).
    pub published_events: Option<Duration>,
    /// Rows deleted per transaction.
    pub batch_size: i64,
    /// Time between passes.
    pub interval: Duration,
}

impl RetentionSettings {
    /// The replay window the audit retention gives: how old a company or
    /// client request may be and still act. An hour less than the audit
    /// retention, so a publisher's clock an hour ahead of ours still finds
    /// the audit row of a request it replays inside the window.
    pub fn replay_window(&self) -> Option<Duration> {
        self.audit
            .map(|audit| audit.saturating_sub(Duration::from_secs(3600)))
    }

    fn is_off(&self) -> bool {
        self.revoked_tokens.is_none()
            && self.disconnected_connections.is_none()
            && self.audit.is_none()
            && self.published_events.is_none()
    }
}

/// Rows deleted by one pass, by table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub disconnect_requests: usize,
    pub disconnect_fanouts: usize,
    pub outbox_events: usize,
    pub access_tokens: usize,
    pub connections: usize,
}

/// The tables a pass deletes from, in its order: audit rows and events
/// first, then tokens, then connections (one is deleted only once no token
/// points to it).
#[derive(Debug, Clone, Copy)]
enum Table {
    Requests,
    Fanouts,
    Events,
    Tokens,
    Connections,
}

impl Table {
    const ORDER: [Self; 5] = [
        Self::Requests,
        Self::Fanouts,
        Self::Events,
        Self::Tokens,
        Self::Connections,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Requests => "disconnect_requests",
            Self::Fanouts => "disconnect_fanouts",
            Self::Events => "outbox_events",
            Self::Tokens => "access_tokens",
            Self::Connections => "connections",
        }
    }

    fn age(self, settings: &RetentionSettings) -> Option<Duration> {
        match self {
            Self::Requests | Self::Fanouts => settings.audit,
            Self::Events => settings.published_events,
            Self::Tokens => settings.revoked_tokens,
            Self::Connections => settings.disconnected_connections,
        }
    }

    fn count(self, purged: &mut Purged) -> &mut usize {
        match self {
            Self::Requests => &mut purged.disconnect_requests,
            Self::Fanouts => &mut purged.disconnect_fanouts,
            Self::Events => &mut purged.outbox_events,
            Self::Tokens => &mut purged.access_tokens,
            Self::Connections => &mut purged.connections,
        }
    }

    async fn delete(
        self,
        conn: &mut AsyncPgConnection,
        before: DateTime<Utc>,
        limit: i64,
    ) -> Result<usize, QueryError> {
        match self {
            Self::Requests => requests::delete_processed_before(conn, before, limit).await,
            Self::Fanouts => fanouts::delete_finished_before(conn, before, limit).await,
            Self::Events => outbox_store::delete_published_before(conn, before, limit).await,
            Self::Tokens => tokens::delete_revoked_before(conn, before, limit).await,
            Self::Connections => connections::delete_disconnected_before(conn, before, limit).await,
        }
    }
}

/// A key of our own for the advisory lock ("dw-reten").
pub const LOCK_KEY: i64 = 0x6477_2d72_6574_656e;

/// Purge every interval until `stop`.
pub async fn run(pool: BoundedPool, settings: RetentionSettings, stop: CancellationToken) {
    if settings.is_off() {
        return;
    }
    loop {
        match purge_once(&pool, &settings, Utc::now()).await {
            Ok(Some(purged)) if purged != Purged::default() => {
                tracing::info!(?purged, "deleted rows past their retention");
            }
            Ok(_) => {}
            // An outage is logged by the pool's health.
            Err(error) if error.class() == FailureClass::Unavailable => {}
            Err(error) => tracing::warn!(error = %error, "retention pass failed; will retry"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(settings.interval) => {}
        }
    }
}

/// One pass at `now`: each table in bounded batches until nothing past its
/// age is left, each batch one transaction within the pool's deadlines.
/// `None` if another replica holds the pass.
pub async fn purge_once(
    pool: &BoundedPool,
    settings: &RetentionSettings,
    now: DateTime<Utc>,
) -> Result<Option<Purged>, DbError> {
    let limit = settings.batch_size.max(1);
    let mut purged = Purged::default();
    for table in Table::ORDER {
        let Some(age) = table.age(settings) else {
            continue;
        };
        let before = now - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
        loop {
            let batch = pool
                .run(async |conn| delete_batch(conn, table, before, limit).await)
                .await?;
            let Some(deleted) = batch else {
                return Ok(None);
            };
            *table.count(&mut purged) += deleted;
            metrics::retention_deleted(table.name(), deleted);
            if (deleted as i64) < limit {
                break;
            }
        }
    }
    Ok(Some(purged))
}

/// Delete one batch of `table`'s rows older than `before`, holding the
/// pass's lock; `None` if another replica holds it.
async fn delete_batch(
    conn: &mut AsyncPgConnection,
    table: Table,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<Option<usize>, QueryError> {
    conn.transaction::<_, QueryError, _>(async |conn| {
        let lock: LockTaken = diesel::sql_query("SELECT pg_try_advisory_xact_lock($1) AS taken")
            .bind::<BigInt, _>(LOCK_KEY)
            .get_result(conn)
            .await?;
        if !lock.taken {
            return Ok(None);
        }
        table.delete(conn, before, limit).await.map(Some)
    })
    .await
}

#[derive(diesel::QueryableByName)]
struct LockTaken {
    #[diesel(sql_type = Bool)]
    taken: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replay_window_is_the_audit_retention_less_an_hour() {
        let settings = RetentionSettings {
            audit: Some(Duration::from_secs(365 * 86_400)),
            ..RetentionSettings::default()
        };
        assert_eq!(
            settings.replay_window(),
            Some(Duration::from_secs(365 * 86_400 - 3600))
        );
        assert_eq!(RetentionSettings::default().replay_window(), None);
    }
}
