//! Queries on `access_tokens`.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::batch_connections::BatchConnectionIds;
use super::schema::{access_tokens, connections};
use super::Disconnection;
use crate::domain::{ConnectionId, ConnectionStatus, RequestId, TokenHash, TokenId};

/// The new row of a token being issued.
#[derive(Debug, Insertable)]
#[diesel(table_name = access_tokens)]
pub struct NewToken<'a> {
    pub id: TokenId,
    pub connection_id: ConnectionId,
    pub token_hash: &'a TokenHash,
    pub token_prefix: &'a str,
    pub user_label: Option<&'a str>,
    pub products: &'a [String],
}

/// What `token introspect` shows: never the token or its hash.
#[derive(Debug, Queryable)]
pub struct TokenView {
    pub token_id: TokenId,
    pub issued_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by_request: Option<RequestId>,
    pub connection_id: ConnectionId,
    pub client_id: String,
    pub company_id: String,
    pub provider_id: String,
    pub connection_status: ConnectionStatus,
}

/// A token found by its hash.
#[derive(Debug, Clone, Copy, Queryable)]
pub struct FoundToken {
    pub hash: TokenHash,
    pub token_id: TokenId,
    pub connection_id: ConnectionId,
    /// Revoked, alone or with its connection.
    pub revoked: bool,
}

/// A token revoked alone, by a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRevocation {
    pub token_id: TokenId,
    pub request_id: RequestId,
}

/// An active token of a connection.
#[derive(Debug, Clone, Copy, Queryable)]
pub struct ActiveToken {
    pub token_id: TokenId,
    pub connection_id: ConnectionId,
}

/// The tokens with these hashes.
pub async fn find_by_hashes(
    mut conn: &AsyncPgConnection,
    hashes: &[TokenHash],
) -> QueryResult<Vec<FoundToken>> {
    access_tokens::table
        .filter(access_tokens::token_hash.eq_any(hashes))
        .select((
            access_tokens::token_hash,
            access_tokens::id,
            access_tokens::connection_id,
            access_tokens::revoked_at.is_not_null(),
        ))
        .load(&mut conn)
        .await
}

/// Revoke these tokens, each on behalf of its request, in one statement;
/// tokens already revoked are left as they are. Returns how many were
/// revoked.
pub async fn revoke_alone(
    mut conn: &AsyncPgConnection,
    revocations: &[TokenRevocation],
    at: DateTime<Utc>,
) -> QueryResult<usize> {
    RevokeTokens {
        token_ids: revocations.iter().map(|r| r.token_id).collect(),
        request_ids: revocations.iter().map(|r| r.request_id).collect(),
        at,
    }
    .execute(&mut conn)
    .await
}

#[derive(QueryId)]
struct RevokeTokens {
    token_ids: Vec<TokenId>,
    request_ids: Vec<RequestId>,
    at: DateTime<Utc>,
}

impl QueryFragment<Pg> for RevokeTokens {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("UPDATE access_tokens AS t SET revoked_at = ");
        out.push_bind_param::<Timestamptz, _>(&self.at)?;
        out.push_sql(", revoked_by_request = v.request_id FROM unnest(");
        out.push_bind_param::<Array<SqlUuid>, _>(&self.token_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<SqlUuid>, _>(&self.request_ids)?;
        out.push_sql(
            ") AS v (token_id, request_id) WHERE t.id = v.token_id AND t.revoked_at IS NULL",
        );
        Ok(())
    }
}

pub async fn insert(conn: &mut AsyncPgConnection, token: &NewToken<'_>) -> QueryResult<()> {
    diesel::insert_into(access_tokens::table)
        .values(token)
        .execute(conn)
        .await
        .map(drop)
}

/// The active tokens of every connection that has a token with one of these
/// hashes, or one of these ids. Read after those connections are locked, it
/// is exactly the set [`revoke_all_of_connections`] will revoke: issuing a
/// token takes the same lock.
pub async fn active_of_connections(
    mut conn: &AsyncPgConnection,
    hashes: &[TokenHash],
    connection_ids: &[ConnectionId],
) -> QueryResult<Vec<ActiveToken>> {
    ActiveOfConnections {
        connections: BatchConnectionIds {
            hashes,
            ids: connection_ids,
        },
    }
    .load(&mut conn)
    .await
}

/// How many active tokens these connections have.
pub async fn count_active_of_connections(
    conn: &mut AsyncPgConnection,
    connection_ids: &[ConnectionId],
) -> QueryResult<i64> {
    access_tokens::table
        .filter(access_tokens::connection_id.eq_any(connection_ids))
        .filter(access_tokens::revoked_at.is_null())
        .count()
        .get_result(conn)
        .await
}

/// Revoke every still-active token of these connections, each on behalf of
/// the request that disconnects it, in one statement whatever the number of
/// tokens. Returns how many were revoked.
pub async fn revoke_all_of_connections(
    mut conn: &AsyncPgConnection,
    disconnections: &[Disconnection],
    at: DateTime<Utc>,
) -> QueryResult<usize> {
    RevokeAllOfConnections {
        connection_ids: disconnections.iter().map(|d| d.connection_id).collect(),
        request_ids: disconnections.iter().map(|d| d.request_id).collect(),
        at,
    }
    .execute(&mut conn)
    .await
}

// These two are query types rather than `sql_query` so that Diesel prepares
// them once per connection: a `sql_query` is parsed and planned again on
// every call, with an extra round trip to do it.

struct ActiveOfConnections<'a> {
    connections: BatchConnectionIds<'a>,
}

// By hand: the derive does not take a lifetime.
impl QueryId for ActiveOfConnections<'_> {
    type QueryId = ActiveOfConnections<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Pg> for ActiveOfConnections<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "SELECT t.id, t.connection_id FROM access_tokens AS t \
             WHERE t.revoked_at IS NULL AND t.connection_id = ANY(",
        );
        self.connections.walk_ast(out.reborrow())?;
        out.push_sql(")");
        Ok(())
    }
}

impl Query for ActiveOfConnections<'_> {
    type SqlType = (SqlUuid, SqlUuid);
}

#[derive(QueryId)]
struct RevokeAllOfConnections {
    connection_ids: Vec<ConnectionId>,
    request_ids: Vec<RequestId>,
    at: DateTime<Utc>,
}

impl QueryFragment<Pg> for RevokeAllOfConnections {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("UPDATE access_tokens AS t SET revoked_at = ");
        out.push_bind_param::<Timestamptz, _>(&self.at)?;
        out.push_sql(", revoked_by_request = v.request_id FROM unnest(");
        out.push_bind_param::<Array<SqlUuid>, _>(&self.connection_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<SqlUuid>, _>(&self.request_ids)?;
        out.push_sql(
            ") AS v (connection_id, request_id) \
             WHERE t.connection_id = v.connection_id AND t.revoked_at IS NULL",
        );
        Ok(())
    }
}

/// The token with this hash and its connection, for introspection.
pub async fn view_by_hash(
    conn: &mut AsyncPgConnection,
    hash: &TokenHash,
) -> QueryResult<Option<TokenView>> {
    access_tokens::table
        .inner_join(connections::table)
        .filter(access_tokens::token_hash.eq(hash))
        .select((
            access_tokens::id,
            access_tokens::issued_at,
            access_tokens::revoked_at,
            access_tokens::revoked_by_request,
            connections::id,
            connections::client_id,
            connections::company_id,
            connections::provider_id,
            connections::status,
        ))
        .first(conn)
        .await
        .optional()
}

/// Delete tokens revoked before `before`, at most `limit`; returns how
/// many. Found by a scan rather than an index on `revoked_at`, which would
/// end the in-place revocations: old rows come first in the table, so a
/// bounded pass finds them early.
pub async fn delete_revoked_before(
    conn: &mut AsyncPgConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> QueryResult<usize> {
    super::delete_bounded_keeping_references(
        conn,
        "DELETE FROM access_tokens WHERE id IN \
         (SELECT t.id FROM access_tokens AS t WHERE t.revoked_at < $1 \
          AND NOT EXISTS (SELECT 1 FROM outbox_disconnections AS o \
                          WHERE o.event_id < $3 AND o.request_id = t.revoked_by_request) \
          LIMIT $2)",
        before,
        limit,
    )
    .await
}
