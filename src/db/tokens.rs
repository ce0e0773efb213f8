//! Queries on `access_tokens`.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::schema::{access_tokens, connections};
use crate::domain::TokenHash;

/// The new row of a token being issued.
#[derive(Debug, Insertable)]
#[diesel(table_name = access_tokens)]
pub struct NewToken<'a> {
    pub id: Uuid,
    pub connection_id: Uuid,
    pub token_hash: &'a [u8],
    pub token_prefix: &'a str,
    pub user_label: Option<&'a str>,
    pub products: &'a [String],
}

/// What `token introspect` shows: never the token or its hash.
#[derive(Debug, Queryable)]
pub struct TokenView {
    pub token_id: Uuid,
    pub issued_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub connection_id: Uuid,
    pub client_id: String,
    pub company_id: String,
    pub provider_id: String,
    pub connection_status: String,
}

/// The tokens with these hashes: (hash, token id, connection id).
pub async fn find_by_hashes(
    conn: &mut AsyncPgConnection,
    hashes: &[Vec<u8>],
) -> QueryResult<Vec<(Vec<u8>, Uuid, Uuid)>> {
    access_tokens::table
        .filter(access_tokens::token_hash.eq_any(hashes))
        .select((
            access_tokens::token_hash,
            access_tokens::id,
            access_tokens::connection_id,
        ))
        .load(conn)
        .await
}

pub async fn insert(conn: &mut AsyncPgConnection, token: &NewToken<'_>) -> QueryResult<()> {
    diesel::insert_into(access_tokens::table)
        .values(token)
        .execute(conn)
        .await
        .map(drop)
}

/// A token revoked by [`revoke_all_of_connections`].
#[derive(Debug, Queryable)]
pub struct RevokedToken {
    pub id: Uuid,
    pub connection_id: Uuid,
}

/// Revoke every still-active token of these connections, each on behalf of
/// its request, in one statement whatever the number of tokens: (connection
/// id, request id) pairs. Returns the revoked tokens.
pub async fn revoke_all_of_connections(
    conn: &mut AsyncPgConnection,
    revocations: &[(Uuid, Uuid)],
    at: DateTime<Utc>,
) -> QueryResult<Vec<RevokedToken>> {
    let (connection_ids, request_ids): (Vec<Uuid>, Vec<Uuid>) = revocations.iter().copied().unzip();
    RevokeAllOfConnections {
        connection_ids,
        request_ids,
        at,
    }
    .load(conn)
    .await
}

/// The revocation statement, written as a query type rather than with
/// `sql_query` so that Diesel prepares it once per connection: a
/// `sql_query` is parsed and planned again on every call, with an extra
/// round trip to do it.
#[derive(QueryId)]
struct RevokeAllOfConnections {
    connection_ids: Vec<Uuid>,
    request_ids: Vec<Uuid>,
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
             WHERE t.connection_id = v.connection_id AND t.revoked_at IS NULL \
             RETURNING t.id, t.connection_id",
        );
        Ok(())
    }
}

impl Query for RevokeAllOfConnections {
    type SqlType = (SqlUuid, SqlUuid);
}

/// The token with this hash and its connection, for introspection.
pub async fn view_by_hash(
    conn: &mut AsyncPgConnection,
    hash: &TokenHash,
) -> QueryResult<Option<TokenView>> {
    access_tokens::table
        .inner_join(connections::table)
        .filter(access_tokens::token_hash.eq(&hash.0[..]))
        .select((
            access_tokens::id,
            access_tokens::issued_at,
            access_tokens::revoked_at,
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
