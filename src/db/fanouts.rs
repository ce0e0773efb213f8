//! Queries on `disconnect_fanouts`: company and client requests, worked
//! through in chunks of connections.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::connections::ConnectionRow;
use super::schema::{disconnect_fanouts, outbox_disconnections, outbox_events};
use crate::domain::{ConnectionId, ReasonCode, RequestId, Scope};

/// A fan-out to start.
#[derive(Debug)]
pub struct NewFanout<'a> {
    pub request_id: RequestId,
    pub scope: Scope,
    pub client_id: &'a str,
    pub company_id: Option<&'a str>,
    pub reason_code: Option<ReasonCode>,
    pub traceparent: Option<&'a str>,
    pub accepted_at: DateTime<Utc>,
    /// Only connections made before this are its own.
    pub created_before: DateTime<Utc>,
}

/// A fan-out in progress, as stored.
#[derive(Debug, Clone, Queryable)]
pub struct Fanout {
    pub request_id: RequestId,
    pub scope: String,
    pub client_id: String,
    pub company_id: Option<String>,
    pub reason_code: Option<String>,
    pub traceparent: Option<String>,
    pub accepted_at: DateTime<Utc>,
    pub created_before: DateTime<Utc>,
    pub last_connection_id: Option<ConnectionId>,
    pub connections: i64,
    pub tokens: i64,
}

pub async fn insert_many(
    mut conn: &AsyncPgConnection,
    fanouts: &[NewFanout<'_>],
) -> QueryResult<()> {
    if fanouts.is_empty() {
        return Ok(());
    }
    let rows: Vec<_> = fanouts
        .iter()
        .map(|fanout| {
            (
                disconnect_fanouts::request_id.eq(fanout.request_id),
                disconnect_fanouts::scope.eq(fanout.scope.as_str()),
                disconnect_fanouts::client_id.eq(fanout.client_id),
                disconnect_fanouts::company_id.eq(fanout.company_id),
                disconnect_fanouts::reason_code.eq(fanout.reason_code.map(ReasonCode::as_str)),
                disconnect_fanouts::traceparent.eq(fanout.traceparent),
                disconnect_fanouts::accepted_at.eq(fanout.accepted_at),
                disconnect_fanouts::created_before.eq(fanout.created_before),
            )
        })
        .collect();
    diesel::insert_into(disconnect_fanouts::table)
        .values(rows)
        .execute(&mut conn)
        .await
        .map(drop)
}

/// The scopes this release works through. A fan-out of another scope was
/// accepted by a newer release (the contract may grow a scope): it is left
/// to that release's replicas, never taken for one of these.
pub const FANOUT_SCOPES: [Scope; 2] = [Scope::Company, Scope::Client];

/// The oldest unfinished fan-out of a scope this release knows, locked for
/// this transaction; one another replica is working on is skipped.
pub async fn claim_next(conn: &mut AsyncPgConnection) -> QueryResult<Option<Fanout>> {
    disconnect_fanouts::table
        .filter(disconnect_fanouts::finished_at.is_null())
        .filter(disconnect_fanouts::scope.eq_any(FANOUT_SCOPES.map(Scope::as_str)))
        .order(disconnect_fanouts::accepted_at)
        .select((
            disconnect_fanouts::request_id,
            disconnect_fanouts::scope,
            disconnect_fanouts::client_id,
            disconnect_fanouts::company_id,
            disconnect_fanouts::reason_code,
            disconnect_fanouts::traceparent,
            disconnect_fanouts::accepted_at,
            disconnect_fanouts::created_before,
            disconnect_fanouts::last_connection_id,
            disconnect_fanouts::connections,
            disconnect_fanouts::tokens,
        ))
        .for_update()
        .skip_locked()
        .first(conn)
        .await
        .optional()
}

/// The next `limit` active connections of the fan-out, after its cursor, in
/// id order, locked (the lock order of every other transaction); those made
/// after it was asked for are not its own.
pub async fn lock_next_connections(
    conn: &mut AsyncPgConnection,
    fanout: &Fanout,
    limit: i64,
) -> QueryResult<Vec<ConnectionRow>> {
    use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz, Uuid as SqlUuid};
    // Text rather than the DSL: Diesel cannot lock a boxed (conditionally
    // built) query. Planned with the values each time, so `$3 IS NULL`
    // folds away and the company's or the application's index is used.
    diesel::sql_query(
        "SELECT id, client_id, company_id, provider_id, status FROM connections \
         WHERE client_id = $1 AND status = 'active' AND created_at < $2 \
           AND ($3::text IS NULL OR company_id = $3) AND id > $4 \
         ORDER BY id LIMIT $5 FOR UPDATE",
    )
    .bind::<Text, _>(&fanout.client_id)
    .bind::<Timestamptz, _>(fanout.created_before)
    .bind::<Nullable<Text>, _>(fanout.company_id.as_deref())
    .bind::<SqlUuid, _>(
        fanout
            .last_connection_id
            .unwrap_or(ConnectionId::from_uuid(uuid::Uuid::nil())),
    )
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await
}

/// Move the cursor and the counts, in the chunk's transaction.
pub async fn advance(
    conn: &mut AsyncPgConnection,
    request_id: RequestId,
    last_connection_id: ConnectionId,
    connections: i64,
    tokens: i64,
) -> QueryResult<()> {
    diesel::update(disconnect_fanouts::table.find(request_id))
        .set((
            disconnect_fanouts::last_connection_id.eq(last_connection_id),
            disconnect_fanouts::connections.eq(disconnect_fanouts::connections + connections),
            disconnect_fanouts::tokens.eq(disconnect_fanouts::tokens + tokens),
        ))
        .execute(conn)
        .await
        .map(drop)
}

pub async fn finish(
    conn: &mut AsyncPgConnection,
    request_id: RequestId,
    at: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::update(disconnect_fanouts::table.find(request_id))
        .set(disconnect_fanouts::finished_at.eq(at))
        .execute(conn)
        .await
        .map(drop)
}

/// How many events of this request are not published yet: its completion
/// waits for none to be left, so it is published after all of them. Its
/// events are whole or by reference (with the fan-out's scope), as the
/// outbox format says; both probes are index scans
/// (`outbox_events_by_request`, `outbox_disconnections_of_fanouts`).
pub async fn unpublished_events(
    conn: &mut AsyncPgConnection,
    request_id: RequestId,
) -> QueryResult<i64> {
    let whole: i64 = outbox_events::table
        .filter(outbox_events::request_id.eq(request_id))
        .filter(outbox_events::published_at.is_null())
        .count()
        .get_result(conn)
        .await?;
    let by_reference: i64 = outbox_disconnections::table
        .filter(outbox_disconnections::request_id.eq(request_id))
        // Written out, so the partial index's predicate is seen in every
        // plan, generic ones included.
        .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(
            "scope IN ('company', 'client')",
        ))
        .count()
        .get_result(conn)
        .await?;
    Ok(whole + by_reference)
}

/// Delete fan-outs finished before `before`, at most `limit`.
pub async fn delete_finished_before(
    conn: &mut AsyncPgConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> QueryResult<usize> {
    super::delete_bounded(
        conn,
        "DELETE FROM disconnect_fanouts WHERE request_id IN \
         (SELECT request_id FROM disconnect_fanouts WHERE finished_at < $1 LIMIT $2)",
        before,
        limit,
    )
    .await
}
