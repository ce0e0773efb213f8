//! Deleting events once the broker has confirmed them: their ids are
//! collected as the confirms come and deleted every [`DELETE_INTERVAL`],
//! many batches per statement, instead of one statement per batch on the
//! request's path. A row lives only until its event is confirmed: no mark,
//! no pruning later.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{store, Shared};
use crate::db::DbError;

/// Far below any sensible relay delay, so the relay does not publish
/// confirmed events again.
const DELETE_INTERVAL: Duration = Duration::from_millis(50);

/// Delete the confirmed events every [`DELETE_INTERVAL`] until `stop`. The
/// last deletion is the shutdown's, after the handlers have finished.
pub(super) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(DELETE_INTERVAL) => {}
        }
        if let Err(error) = flush(&shared).await {
            shared.database_failed("deleting confirmed events", &error);
        }
    }
}

/// Delete every event confirmed since the last flush, in one statement;
/// returns how many. On failure they are kept for the next.
pub(super) async fn flush(shared: &Shared) -> Result<usize, DbError> {
    let ids = shared.published.take();
    if ids.is_empty() {
        return Ok(0);
    }
    let deleted = shared
        .pool
        .run(async |conn| store::delete_confirmed(conn, &ids).await)
        .await;
    if deleted.is_err() {
        shared.published.push(ids);
    }
    deleted
}
