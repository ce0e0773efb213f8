//! Marking events published after commit: their ids are collected as the
//! broker confirms them and marked every [`MARK_INTERVAL`], many batches per
//! statement, instead of one statement per batch on the request's path.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::{store, Shared};
use crate::db::DbError;

/// Far below any sensible relay delay, so the relay does not publish marked
/// events again.
const MARK_INTERVAL: Duration = Duration::from_millis(50);

/// Flush the marks every [`MARK_INTERVAL`] until `stop`. The last flush is
/// the shutdown's, after the handlers have finished.
pub(super) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(MARK_INTERVAL) => {}
        }
        if let Err(error) = flush(&shared).await {
            shared.database_failed("marking published events", &error);
        }
    }
}

/// Mark published every event confirmed since the last flush, in one
/// statement; returns how many. On failure they are kept for the next.
pub(super) async fn flush(shared: &Shared) -> Result<usize, DbError> {
    let ids = shared.published.take();
    if ids.is_empty() {
        return Ok(0);
    }
    let marked = shared
        .pool
        .run(async |conn| store::mark_published(conn, &ids, Utc::now()).await)
        .await;
    if marked.is_err() {
        shared.published.push(ids);
    }
    marked
}
