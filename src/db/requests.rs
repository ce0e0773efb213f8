//! Queries on `disconnect_requests`: the audit trail and idempotency record.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Array, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::schema::disconnect_requests;

/// The primary key whose violation means "this request id was recorded by a
/// concurrent transaction".
pub const PRIMARY_KEY: &str = "disconnect_requests_pkey";

/// One row of a request's audit record.
#[derive(Debug)]
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
    mut conn: &AsyncPgConnection,
    request_ids: &[Uuid],
) -> QueryResult<Vec<(Uuid, String)>> {
    disconnect_requests::table
        .filter(disconnect_requests::request_id.eq_any(request_ids))
        .select((
            disconnect_requests::request_id,
            disconnect_requests::outcome,
        ))
        .load(&mut conn)
        .await
}

/// Record requests, in one statement.
pub async fn insert_many(
    mut conn: &AsyncPgConnection,
    requests: &[NewRequest<'_>],
) -> QueryResult<()> {
    let Some(first) = requests.first() else {
        return Ok(());
    };
    InsertRequests {
        request_ids: requests.iter().map(|row| row.request_id).collect(),
        outcomes: requests.iter().map(|row| row.outcome.to_string()).collect(),
        connection_ids: requests.iter().map(|row| row.connection_id).collect(),
        token_ids: requests.iter().map(|row| row.token_id).collect(),
        revoked_token_counts: requests.iter().map(|row| row.revoked_token_count).collect(),
        requested_ats: requests.iter().map(|row| row.requested_at).collect(),
        requested_bys: requests
            .iter()
            .map(|row| row.requested_by.map(str::to_string))
            .collect(),
        reasons: requests
            .iter()
            .map(|row| row.reason.map(str::to_string))
            .collect(),
        event_ids: requests.iter().map(|row| row.event_id).collect(),
        processed_at: first.processed_at,
    }
    .execute(&mut conn)
    .await
    .map(drop)
}

/// A multi-row insert whose text does not depend on the number of rows (one
/// array per column, `unnest`ed), so Diesel prepares it once per connection.
/// Diesel's own multi-row insert is new SQL for every row count, parsed and
/// planned each time. All rows of a batch share one `processed_at`.
#[derive(QueryId)]
struct InsertRequests {
    request_ids: Vec<Uuid>,
    outcomes: Vec<String>,
    connection_ids: Vec<Option<Uuid>>,
    token_ids: Vec<Option<Uuid>>,
    revoked_token_counts: Vec<i32>,
    requested_ats: Vec<Option<DateTime<Utc>>>,
    requested_bys: Vec<Option<String>>,
    reasons: Vec<Option<String>>,
    event_ids: Vec<Uuid>,
    processed_at: DateTime<Utc>,
}

impl QueryFragment<Pg> for InsertRequests {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "INSERT INTO disconnect_requests (request_id, outcome, connection_id, token_id, \
             revoked_token_count, requested_at, requested_by, reason, event_id, processed_at) \
             SELECT *, ",
        );
        out.push_bind_param::<Timestamptz, _>(&self.processed_at)?;
        out.push_sql(" FROM unnest(");
        out.push_bind_param::<Array<SqlUuid>, _>(&self.request_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.outcomes)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<SqlUuid>>, _>(&self.connection_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<SqlUuid>>, _>(&self.token_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Integer>, _>(&self.revoked_token_counts)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Timestamptz>>, _>(&self.requested_ats)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.requested_bys)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.reasons)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<SqlUuid>, _>(&self.event_ids)?;
        out.push_sql(")");
        Ok(())
    }
}
