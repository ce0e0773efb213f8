//! Deleting published events past their retention, so the outbox does not
//! grow without bound. The audit record in `disconnect_requests` stays.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::{store, Shared};
use crate::db::{DbError, DbPool};

/// How often published events past their retention are deleted, and how many
/// per statement.
const PRUNE_INTERVAL: Duration = Duration::from_secs(300);
const PRUNE_BATCH: i64 = 10_000;

/// Delete published events older than `retention`, every few minutes.
/// Unpublished events are never touched.
pub(super) async fn run(shared: Arc<Shared>, retention: Duration, stop: CancellationToken) {
    loop {
        if let Err(error) = prune_once(&shared.pool, retention).await {
            shared.database_failed("pruning published events", &error);
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
        let count = store::delete_published_before(&mut conn, before, PRUNE_BATCH).await?;
        deleted += count;
        if (count as i64) < PRUNE_BATCH {
            return Ok(deleted);
        }
    }
}
