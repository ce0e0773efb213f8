//! `webhooks attempts`: deliveries and their attempts, for operators.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

/// Which attempts to list.
#[derive(Debug, Clone, Default)]
pub struct AttemptFilter {
    pub endpoint_id: Option<Uuid>,
    pub event_id: Option<Uuid>,
    /// Only deliveries that failed (no attempt left, or 410).
    pub failed: bool,
    pub limit: i64,
}

/// One attempt with its delivery's state.
#[derive(Debug, Clone, QueryableByName, serde::Serialize)]
pub struct AttemptLine {
    #[diesel(sql_type = SqlUuid)]
    pub event_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    pub endpoint_id: Uuid,
    #[diesel(sql_type = Text)]
    pub delivery_status: String,
    #[diesel(sql_type = Integer)]
    pub attempt: i32,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub attempted_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Integer>)]
    pub status_code: Option<i32>,
    #[diesel(sql_type = Nullable<Integer>)]
    pub duration_ms: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    pub error: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub response_excerpt: Option<String>,
    /// When the delivery is tried next, while pending.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// Newest first; a delivery not yet attempted shows as one line without
/// an attempt.
pub async fn list(
    conn: &mut AsyncPgConnection,
    filter: &AttemptFilter,
) -> QueryResult<Vec<AttemptLine>> {
    diesel::sql_query(
        "SELECT d.event_id, d.endpoint_id, d.status AS delivery_status,
             (CASE WHEN a.id IS NULL THEN 0 ELSE row_number() OVER (PARTITION BY d.id ORDER BY a.id) END)::int4 AS attempt,
             a.attempted_at, a.status_code, a.duration_ms, a.error, a.response_excerpt,
             CASE WHEN d.status = 'pending' THEN d.next_attempt_at END AS next_attempt_at
         FROM webhook_deliveries d LEFT JOIN webhook_attempts a ON a.delivery_id = d.id
         WHERE ($1::uuid IS NULL OR d.endpoint_id = $1)
           AND ($2::uuid IS NULL OR d.event_id = $2)
           AND (NOT $3 OR d.status = 'failed')
         ORDER BY COALESCE(a.attempted_at, d.created_at) DESC, a.id DESC
         LIMIT $4",
    )
    .bind::<Nullable<SqlUuid>, _>(filter.endpoint_id)
    .bind::<Nullable<SqlUuid>, _>(filter.event_id)
    .bind::<Bool, _>(filter.failed)
    .bind::<BigInt, _>(filter.limit)
    .load(conn)
    .await
}
