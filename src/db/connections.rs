//! Queries on `connections`.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::batch_connections::BatchConnectionIds;
use super::schema::connections;
use super::Disconnection;
use crate::domain::{ConnectionId, ConnectionRef, ConnectionStatus, RequestId, TokenHash};

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = connections)]
pub struct ConnectionRow {
    pub id: ConnectionId,
    pub client_id: String,
    pub company_id: String,
    pub provider_id: String,
    pub status: ConnectionStatus,
}

impl ConnectionRow {
    pub fn into_ref(self) -> ConnectionRef {
        ConnectionRef {
            connection_id: self.id,
            client_id: self.client_id,
            company_id: self.company_id,
            provider_id: self.provider_id,
        }
    }
}

/// Lock, for the rest of the transaction, the connections of the tokens with
/// these hashes and those with these ids. Every change to a connection or to
/// the set of its tokens takes this lock first. Rows are locked in id order,
/// so two transactions locking overlapping sets cannot deadlock.
pub async fn lock_for_batch(
    mut conn: &AsyncPgConnection,
    hashes: &[TokenHash],
    ids: &[ConnectionId],
) -> QueryResult<Vec<ConnectionRow>> {
    LockForBatch {
        connections: BatchConnectionIds { hashes, ids },
    }
    .load(&mut conn)
    .await
}

/// A query type, so Diesel prepares it once per connection.
struct LockForBatch<'a> {
    connections: BatchConnectionIds<'a>,
}

impl QueryId for LockForBatch<'_> {
    type QueryId = LockForBatch<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Pg> for LockForBatch<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "SELECT id, client_id, company_id, provider_id, status FROM connections \
             WHERE id = ANY(",
        );
        self.connections.walk_ast(out.reborrow())?;
        out.push_sql(") ORDER BY id FOR UPDATE");
        Ok(())
    }
}

impl Query for LockForBatch<'_> {
    type SqlType = (SqlUuid, Text, Text, Text, Text);
}

/// A connection by id, unlocked.
pub async fn find(
    conn: &mut AsyncPgConnection,
    id: ConnectionId,
) -> QueryResult<Option<ConnectionRow>> {
    connections::table
        .find(id)
        .select(ConnectionRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// The ids of an application's (or one of its companies') active
/// connections made before `before`, in id order, unlocked.
pub async fn active_ids(
    conn: &mut AsyncPgConnection,
    client_id: &str,
    company_id: Option<&str>,
    before: DateTime<Utc>,
) -> QueryResult<Vec<ConnectionId>> {
    let mut query = connections::table
        .filter(connections::client_id.eq(client_id))
        .filter(connections::status.eq(ConnectionStatus::Active))
        .filter(connections::created_at.lt(before))
        .into_boxed();
    if let Some(company_id) = company_id {
        query = query.filter(connections::company_id.eq(company_id));
    }
    query
        .order(connections::id)
        .select(connections::id)
        .load(conn)
        .await
}

/// The active connection of a (client, company, provider), locked. A
/// connection disconnected while we waited for the lock no longer matches.
pub async fn lock_active_for_pair(
    conn: &mut AsyncPgConnection,
    client_id: &str,
    company_id: &str,
    provider_id: &str,
) -> QueryResult<Option<ConnectionRow>> {
    connections::table
        .filter(connections::client_id.eq(client_id))
        .filter(connections::company_id.eq(company_id))
        .filter(connections::provider_id.eq(provider_id))
        .filter(connections::status.eq(ConnectionStatus::Active))
        .select(ConnectionRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()
}

/// Insert a new active connection for the pair, unless another transaction
/// already holds one (the partial unique index); `None` then.
pub async fn insert_active(
    conn: &mut AsyncPgConnection,
    client_id: &str,
    company_id: &str,
    provider_id: &str,
) -> QueryResult<Option<ConnectionId>> {
    let id = ConnectionId::generate();
    let inserted = diesel::insert_into(connections::table)
        .values((
            connections::id.eq(id),
            connections::client_id.eq(client_id),
            connections::company_id.eq(company_id),
            connections::provider_id.eq(provider_id),
            connections::status.eq(ConnectionStatus::Active),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok((inserted == 1).then_some(id))
}

/// Mark locked connections disconnected, each by its request, in one
/// statement.
pub async fn mark_disconnected(
    mut conn: &AsyncPgConnection,
    disconnections: &[Disconnection],
    at: DateTime<Utc>,
) -> QueryResult<()> {
    MarkDisconnected {
        connection_ids: disconnections.iter().map(|d| d.connection_id).collect(),
        request_ids: disconnections.iter().map(|d| d.request_id).collect(),
        at,
    }
    .execute(&mut conn)
    .await
    .map(drop)
}

/// A query type rather than `sql_query`, so that Diesel prepares it once
/// per connection instead of parsing and planning it on every call.
#[derive(QueryId)]
struct MarkDisconnected {
    connection_ids: Vec<ConnectionId>,
    request_ids: Vec<RequestId>,
    at: DateTime<Utc>,
}

impl QueryFragment<Pg> for MarkDisconnected {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("UPDATE connections AS c SET status = 'disconnected', disconnected_at = ");
        out.push_bind_param::<Timestamptz, _>(&self.at)?;
        out.push_sql(", disconnected_by_request = v.request_id FROM unnest(");
        out.push_bind_param::<Array<SqlUuid>, _>(&self.connection_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<SqlUuid>, _>(&self.request_ids)?;
        out.push_sql(") AS v (connection_id, request_id) WHERE c.id = v.connection_id");
        Ok(())
    }
}

/// Delete connections disconnected before `before` that no token row points
/// to any more, at most `limit`; returns how many.
pub async fn delete_disconnected_before(
    conn: &mut AsyncPgConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> QueryResult<usize> {
    super::delete_bounded_keeping_references(
        conn,
        "DELETE FROM connections WHERE id IN \
         (SELECT c.id FROM connections AS c WHERE c.status = 'disconnected' \
          AND c.disconnected_at < $1 \
          AND NOT EXISTS (SELECT 1 FROM access_tokens AS t WHERE t.connection_id = c.id) \
          AND NOT EXISTS (SELECT 1 FROM outbox_disconnections AS o \
                          WHERE o.event_id < $3 AND o.connection_id = c.id) \
          LIMIT $2)",
        before,
        limit,
    )
    .await
}
