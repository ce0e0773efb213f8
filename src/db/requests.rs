//! Queries on `disconnect_requests`: the audit trail and idempotency record.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Array, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::schema::disconnect_requests;
use crate::domain::{ConnectionId, EventId, OutcomeKind, RequestId, TokenId};

/// The primary key whose violation means "this request id was recorded by a
/// concurrent transaction".
pub const PRIMARY_KEY: &str = "disconnect_requests_pkey";

/// One row of a request's audit record.
#[derive(Debug)]
pub struct NewRequest<'a> {
    pub request_id: RequestId,
    pub outcome: OutcomeKind,
    pub connection_id: Option<ConnectionId>,
    pub token_id: Option<TokenId>,
    pub revoked_token_count: i32,
    pub requested_at: Option<DateTime<Utc>>,
    pub requested_by: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub event_id: EventId,
}

/// The recorded outcomes of those of `request_ids` processed before.
pub async fn find_outcomes(
    mut conn: &AsyncPgConnection,
    request_ids: &[RequestId],
) -> QueryResult<Vec<(RequestId, OutcomeKind)>> {
    disconnect_requests::table
        .filter(disconnect_requests::request_id.eq_any(request_ids))
        .select((
            disconnect_requests::request_id,
            disconnect_requests::outcome,
        ))
        .load(&mut conn)
        .await
}

/// Record requests processed at `processed_at`, in one statement.
pub async fn insert_many(
    mut conn: &AsyncPgConnection,
    requests: &[NewRequest<'_>],
    processed_at: DateTime<Utc>,
) -> QueryResult<()> {
    if requests.is_empty() {
        return Ok(());
    }
    InsertRequests {
        request_ids: requests.iter().map(|row| row.request_id).collect(),
        outcomes: requests.iter().map(|row| row.outcome).collect(),
        connection_ids: requests.iter().map(|row| row.connection_id).collect(),
        token_ids: requests.iter().map(|row| row.token_id).collect(),
        revoked_token_counts: requests.iter().map(|row| row.revoked_token_count).collect(),
        requested_ats: requests.iter().map(|row| row.requested_at).collect(),
        requested_bys: requests.iter().map(|row| row.requested_by).collect(),
        reasons: requests.iter().map(|row| row.reason).collect(),
        event_ids: requests.iter().map(|row| row.event_id).collect(),
        processed_at,
    }
    .execute(&mut conn)
    .await
    .map(drop)
}

/// A multi-row insert whose text does not depend on the number of rows (one
/// array per column, `unnest`ed), so Diesel prepares it once per connection.
/// Diesel's own multi-row insert is new SQL for every row count, parsed and
/// planned each time. All rows of a batch share one `processed_at`.
struct InsertRequests<'a> {
    request_ids: Vec<RequestId>,
    outcomes: Vec<OutcomeKind>,
    connection_ids: Vec<Option<ConnectionId>>,
    token_ids: Vec<Option<TokenId>>,
    revoked_token_counts: Vec<i32>,
    requested_ats: Vec<Option<DateTime<Utc>>>,
    requested_bys: Vec<Option<&'a str>>,
    reasons: Vec<Option<&'a str>>,
    event_ids: Vec<EventId>,
    processed_at: DateTime<Utc>,
}

// By hand: the derive does not take a lifetime, and borrowing spares a copy
// of every audit text.
impl QueryId for InsertRequests<'_> {
    type QueryId = InsertRequests<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Pg> for InsertRequests<'_> {
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
