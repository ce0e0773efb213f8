//! The real [`RecordDisconnects`]: one transaction on a pooled connection,
//! then the committed events to the outbox for publishing.

use std::sync::Arc;

use super::process::{ProcessError, RecordDisconnects};
use crate::db::{DbError, DbPool};
use crate::domain::DisconnectRequest;
use crate::outbox::Outbox;
use crate::service::{self, Processed};

pub struct PgRecords {
    pub pool: DbPool,
    pub outbox: Arc<Outbox>,
}

impl RecordDisconnects for PgRecords {
    async fn record(&self, requests: &[DisconnectRequest]) -> Result<Vec<Processed>, ProcessError> {
        let mut conn = self.pool.get().await.map_err(DbError::from)?;
        let committed = service::record_disconnects(&mut conn, requests)
            .await
            .map_err(DbError::from)?;
        self.outbox.publish_after_commit(committed.events);
        Ok(committed.processed)
    }
}
