//! Read-only queries the tests assert on.

use diesel::dsl::count_star;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use disconnect_worker::db::schema::{
    access_tokens, connections, disconnect_requests, outbox_disconnections, outbox_events,
};
use disconnect_worker::domain::{ConnectionId, TokenId};
use uuid::Uuid;

use super::TestContext;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenState {
    pub connection_id: ConnectionId,
    pub revoked: bool,
    pub revoked_by_request: Option<Uuid>,
}

impl TestContext {
    /// The recorded outcome of a request, if any.
    pub async fn outcome_of(&self, request_id: Uuid) -> Option<String> {
        let mut conn = self.pool.get().await.expect("db");
        disconnect_requests::table
            .find(request_id)
            .select(disconnect_requests::outcome)
            .first(&mut conn)
            .await
            .optional()
            .expect("query")
    }

    /// Wait until at least `count` requests are recorded: a stream is under
    /// way.
    pub async fn wait_for_progress(&self, count: i64) {
        super::eventually("the stream to be under way", || async {
            (self.recorded_request_count().await >= count).then_some(())
        })
        .await;
    }

    pub async fn recorded_request_count(&self) -> i64 {
        let mut conn = self.pool.get().await.expect("db");
        disconnect_requests::table
            .select(count_star())
            .first(&mut conn)
            .await
            .expect("query")
    }

    /// Outcome label -> number of requests recorded with it.
    pub async fn outcome_counts(&self) -> std::collections::BTreeMap<String, i64> {
        let mut conn = self.pool.get().await.expect("db");
        disconnect_requests::table
            .group_by(disconnect_requests::outcome)
            .select((disconnect_requests::outcome, count_star()))
            .load::<(String, i64)>(&mut conn)
            .await
            .expect("query")
            .into_iter()
            .collect()
    }

    pub async fn token_state(&self, token_id: TokenId) -> TokenState {
        let mut conn = self.pool.get().await.expect("db");
        let (connection_id, revoked_at, revoked_by_request) = access_tokens::table
            .find(token_id)
            .select((
                access_tokens::connection_id,
                access_tokens::revoked_at,
                access_tokens::revoked_by_request,
            ))
            .first::<(
                ConnectionId,
                Option<chrono::DateTime<chrono::Utc>>,
                Option<Uuid>,
            )>(&mut conn)
            .await
            .expect("query");
        TokenState {
            connection_id,
            revoked: revoked_at.is_some(),
            revoked_by_request,
        }
    }

    pub async fn connection_status(&self, connection_id: ConnectionId) -> String {
        let mut conn = self.pool.get().await.expect("db");
        connections::table
            .find(connection_id)
            .select(connections::status)
            .first(&mut conn)
            .await
            .expect("query")
    }

    /// Tokens still active on a disconnected connection: must always be 0.
    pub async fn active_tokens_on_disconnected_connections(&self) -> i64 {
        let mut conn = self.pool.get().await.expect("db");
        access_tokens::table
            .inner_join(connections::table)
            .filter(connections::status.eq("disconnected"))
            .filter(access_tokens::revoked_at.is_null())
            .select(count_star())
            .first(&mut conn)
            .await
            .expect("query")
    }

    pub async fn unpublished_event_count(&self) -> i64 {
        let mut conn = self.pool.get().await.expect("db");
        let whole: i64 = outbox_events::table
            .filter(outbox_events::published_at.is_null())
            .select(count_star())
            .first(&mut conn)
            .await
            .expect("query");
        let by_reference: i64 = outbox_disconnections::table
            .select(count_star())
            .first(&mut conn)
            .await
            .expect("query");
        whole + by_reference
    }

    /// The event id a request's audit row names.
    pub async fn audit_event_id(&self, request_id: Uuid) -> Uuid {
        let mut conn = self.pool.get().await.expect("db");
        disconnect_requests::table
            .find(request_id)
            .select(disconnect_requests::event_id.assume_not_null())
            .first::<Uuid>(&mut conn)
            .await
            .expect("query")
    }

    /// The stored bytes of a request's event kept whole in `outbox_events`.
    pub async fn stored_event_payload(&self, request_id: Uuid) -> String {
        let mut conn = self.pool.get().await.expect("db");
        outbox_events::table
            .filter(outbox_events::request_id.eq(request_id))
            .select(outbox_events::payload)
            .first::<String>(&mut conn)
            .await
            .expect("query")
    }

    /// Run SQL statements on the test database (to install a fault, say).
    pub async fn execute(&self, sql: &str) {
        use diesel_async::SimpleAsyncConnection;
        let mut conn = self.pool.get().await.expect("db");
        conn.batch_execute(sql).await.expect("sql");
    }

    pub async fn sequence_value(&self, sequence: &str) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct Value {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            last_value: i64,
        }
        let mut conn = self.pool.get().await.expect("db");
        diesel::sql_query(format!("SELECT last_value FROM {sequence}"))
            .get_result::<Value>(&mut conn)
            .await
            .expect("sequence")
            .last_value
    }
}
