//! Queries on `disconnect_requests`: the audit trail and idempotency record.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Array, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::schema::disconnect_requests;
use crate::domain::{
    ConnectionId, EventId, OutcomeKind, ReasonCode, RequestId, Scope, StoredLabel, TokenId,
};

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
    /// `None` while a fan-out runs: its event comes when it ends.
    pub event_id: Option<EventId>,
    pub scope: Scope,
    pub reason_code: Option<ReasonCode>,
    pub client_id: Option<&'a str>,
    pub company_id: Option<&'a str>,
    /// The broker user that published it (its AMQP `user_id`).
    pub publisher: Option<&'a str>,
}

/// The recorded outcomes of those of `request_ids` processed before, as
/// stored: one a newer release recorded may be an outcome this release does
/// not know, and the request is done all the same.
pub async fn find_outcomes(
    mut conn: &AsyncPgConnection,
    request_ids: &[RequestId],
) -> QueryResult<Vec<(RequestId, StoredLabel<OutcomeKind>)>> {
    Ok(disconnect_requests::table
        .filter(disconnect_requests::request_id.eq_any(request_ids))
        .select((
            disconnect_requests::request_id,
            disconnect_requests::outcome,
        ))
        .load::<(RequestId, String)>(&mut conn)
        .await?
        .into_iter()
        .map(|(request_id, outcome)| (request_id, StoredLabel::read(&outcome)))
        .collect())
}

/// A recorded request's scope and reason code, if its record is kept.
pub async fn scope_and_reason_code(
    conn: &mut AsyncPgConnection,
    request_id: RequestId,
) -> QueryResult<Option<(String, Option<String>)>> {
    disconnect_requests::table
        .find(request_id)
        .select((disconnect_requests::scope, disconnect_requests::reason_code))
        .first(conn)
        .await
        .optional()
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
        scopes: requests.iter().map(|row| row.scope.as_str()).collect(),
        reason_codes: requests
            .iter()
            .map(|row| row.reason_code.map(ReasonCode::as_str))
            .collect(),
        client_ids: requests.iter().map(|row| row.client_id).collect(),
        company_ids: requests.iter().map(|row| row.company_id).collect(),
        publishers: requests.iter().map(|row| row.publisher).collect(),
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
    event_ids: Vec<Option<EventId>>,
    scopes: Vec<&'static str>,
    reason_codes: Vec<Option<&'static str>>,
    client_ids: Vec<Option<&'a str>>,
    company_ids: Vec<Option<&'a str>>,
    publishers: Vec<Option<&'a str>>,
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
             revoked_token_count, requested_at, requested_by, reason, event_id, scope, \
             reason_code, client_id, company_id, publisher, processed_at) \
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
        out.push_bind_param::<Array<Nullable<SqlUuid>>, _>(&self.event_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.scopes)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.reason_codes)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.client_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.company_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.publishers)?;
        out.push_sql(")");
        Ok(())
    }
}

/// Record the terminal outcome of a company or client request whose
/// fan-out has ended.
pub async fn finish(
    conn: &mut AsyncPgConnection,
    request_id: RequestId,
    outcome: OutcomeKind,
    connections: i32,
    tokens: i32,
    event_id: EventId,
) -> QueryResult<()> {
    diesel::update(disconnect_requests::table.find(request_id))
        .set((
            disconnect_requests::outcome.eq(outcome),
            disconnect_requests::disconnected_connections.eq(connections),
            disconnect_requests::revoked_token_count.eq(tokens),
            disconnect_requests::event_id.eq(event_id),
        ))
        .execute(conn)
        .await
        .map(drop)
}

/// Delete audit records processed before `before`, at most `limit`;
/// returns how many. A company or client request still in progress keeps
/// its record (its fan-out writes the outcome into it).
pub async fn delete_processed_before(
    conn: &mut AsyncPgConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> QueryResult<usize> {
    super::delete_bounded(
        conn,
        "DELETE FROM disconnect_requests WHERE request_id IN \
         (SELECT request_id FROM disconnect_requests \
          WHERE processed_at < $1 AND outcome <> 'in_progress' LIMIT $2)",
        before,
        limit,
    )
    .await
}
