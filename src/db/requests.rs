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

/// The recorded outcome of a request id, if it was processed before.
pub async fn find_outcome(
    conn: &mut AsyncPgConnection,
    request_id: Uuid,
) -> QueryResult<Option<String>> {
    disconnect_requests::table
        .find(request_id)
        .select(disconnect_requests::outcome)
        .first(conn)
        .await
        .optional()
}

pub async fn insert(conn: &mut AsyncPgConnection, request: &NewRequest<'_>) -> QueryResult<()> {
    diesel::insert_into(disconnect_requests::table)
        .values(request)
        .execute(conn)
        .await
        .map(drop)
}
