//! Queries on `access_tokens`.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
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

/// The token with this hash: its id and its connection's id.
pub async fn find_by_hash(
    conn: &mut AsyncPgConnection,
    hash: &TokenHash,
) -> QueryResult<Option<(Uuid, Uuid)>> {
    access_tokens::table
        .filter(access_tokens::token_hash.eq(&hash.0[..]))
        .select((access_tokens::id, access_tokens::connection_id))
        .first(conn)
        .await
        .optional()
}

pub async fn insert(conn: &mut AsyncPgConnection, token: &NewToken<'_>) -> QueryResult<()> {
    diesel::insert_into(access_tokens::table)
        .values(token)
        .execute(conn)
        .await
        .map(drop)
}

/// Revoke every still-active token of a connection in one statement, and
/// return their ids (in id order, so events are stable).
pub async fn revoke_all_of_connection(
    conn: &mut AsyncPgConnection,
    connection_id: Uuid,
    request_id: Uuid,
    at: DateTime<Utc>,
) -> QueryResult<Vec<Uuid>> {
    let mut revoked: Vec<Uuid> = diesel::update(
        access_tokens::table
            .filter(access_tokens::connection_id.eq(connection_id))
            .filter(access_tokens::revoked_at.is_null()),
    )
    .set((
        access_tokens::revoked_at.eq(at),
        access_tokens::revoked_by_request.eq(request_id),
    ))
    .returning(access_tokens::id)
    .get_results(conn)
    .await?;
    revoked.sort_unstable();
    Ok(revoked)
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
