//! The real [`RecordDisconnects`]: one transaction on a pooled connection,
//! then the committed events to the outbox for publishing.

use std::sync::Arc;

use tracing::Instrument;

use super::process::{ProcessError, RecordDisconnects};
use crate::db::{DbError, DbPool};
use crate::domain::DisconnectRequest;
use crate::outbox::Outbox;
use crate::service::{self, Processed};

pub struct PgRecords {
    pub pool: DbPool,
    pub outbox: Arc<Outbox>,
    /// For the transaction span's `db.namespace`.
    pub database: String,
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
        let committed = async {
            let mut conn = self.pool.get().await.map_err(DbError::from)?;
            service::record_disconnects(&mut conn, requests)
                .await
                .map_err(DbError::from)
        }
        .instrument(span)
        .await?;
        self.outbox.publish_after_commit(committed.events);
        Ok(committed.processed)
    }
}
