//! Samples the outbox backlog into gauges: a growing backlog or an old
//! pending event means events are not reaching consumers.

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::store;
use crate::db::BoundedPool;
use crate::observability::metrics;

/// How often the backlog is measured.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

pub(super) async fn sample(pool: BoundedPool, stop: CancellationToken) {
    loop {
        if let Ok(backlog) = pool.read(async |conn| store::backlog(conn).await).await {
            let age = backlog
                .oldest
                .and_then(|created| (Utc::now() - created).to_std().ok())
                .unwrap_or_default();
            metrics::outbox_backlog(backlog.pending, age, backlog.set_aside);
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(SAMPLE_INTERVAL) => {}
        }
    }
}
