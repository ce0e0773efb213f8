//! Queries on `disconnect_requests`: the audit trail and idempotency record.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::schema::disconnect_requests;

/// The primary key whose violation means "this request id was recorded by a
/// concurrent transaction".
pub const PRIMARY_KEY: &str = "disconnect_requests_pkey";

#[derive(Debug, Insertable)]
#[diesel(table_name = disconnect_requests)]
pub struct NewRequest<'a> {
    pub request_id: Uuid,
    pub outcome: &'a str,
    pub connection_id: Option<Uuid>,
    pub token_id: Option<Uuid>,
    pub revoked_token_count: i32,
    pub requested_at: Option<DateTime<Utc>>,
    pub requested_by: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub processed_at: DateTime<Utc>,
    pub event_id: Uuid,
}

/// The recorded outcomes of those of `request_ids` processed before.
pub async fn find_outcomes(
    conn: &mut AsyncPgConnection,
    request_ids: &[Uuid],
) -> QueryResult<Vec<(Uuid, String)>> {
    disconnect_requests::table
        .filter(disconnect_requests::request_id.eq_any(request_ids))
        .select((
            disconnect_requests::request_id,
            disconnect_requests::outcome,
        ))
        .load(conn)
        .await
}

/// Record requests, in one statement.
pub async fn insert_many(
    conn: &mut AsyncPgConnection,
    requests: &[NewRequest<'_>],
) -> QueryResult<()> {
    diesel::insert_into(disconnect_requests::table)
        .values(requests)
        .execute(conn)
        .await
        .map(drop)
}
