//! The real [`RecordDisconnects`]: one transaction on a pooled connection,
//! then the committed events to the outbox for publishing.

use std::sync::Arc;

use tokio::sync::Notify;
use tracing::Instrument;

use super::process::{ProcessError, RecordDisconnects};
use crate::db::BoundedPool;
use crate::domain::DisconnectRequest;
use crate::outbox::Outbox;
use crate::service::{self, Policy, Processed};

pub struct PgRecords {
    pub pool: BoundedPool,
    pub outbox: Arc<Outbox>,
    /// For the transaction span's `db.namespace`.
    pub database: String,
    pub policy: Policy,
    /// The fan-out task's, woken when a batch accepts a company or client
    /// request.
    pub fanout_wakeup: Arc<Notify>,
}

impl RecordDisconnects for PgRecords {
    async fn record(&self, requests: &[DisconnectRequest]) -> Result<Vec<Processed>, ProcessError> {
        let span = tracing::info_span!(
            "transaction",
            otel.name = %format_args!("disconnect {}", self.database),
            otel.kind = "client",
            db.system = "postgresql",
            db.system.name = "postgresql",
            db.namespace = %self.database,
            db.operation.name = "disconnect",
            db.operation.batch.size = requests.len(),
        );
        let committed = self
            .pool
            .run(async |conn| {
                let format = self.outbox.format();
                service::record_disconnects(conn, requests, &self.policy, format).await
            })
            .instrument(span)
            .await?;
        if committed.fanouts_started > 0 {
            self.fanout_wakeup.notify_one();
        }
        self.outbox.publish_after_commit(committed.events);
        Ok(committed.processed)
    }
}
