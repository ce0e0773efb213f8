//! Queries on `connection_entities`. Every change to a connection's entities
//! happens under the connection's row lock (the lock order of every
//! disconnect and of token issuing), so the rows read under it are what the
//! writes change.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::batch_connections::BatchConnectionIds;
use super::schema::connection_entities;
use crate::domain::{ConnectionId, EntityId, EntityRef, EntityStatus, RequestId, TokenHash};

/// An entity as the batch decides on it.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct EntityRow {
    pub id: EntityId,
    pub connection_id: ConnectionId,
    pub provider_entity_id: String,
    pub status: EntityStatus,
}

impl EntityRow {
    pub fn to_ref(&self) -> EntityRef {
        EntityRef {
            entity_id: self.id,
            provider_entity_id: self.provider_entity_id.clone(),
        }
    }
}

/// An entity as `token introspect` shows it.
#[derive(Debug, Clone, Queryable)]
pub struct EntityView {
    pub id: EntityId,
    pub provider_entity_id: String,
    pub status: EntityStatus,
    pub disconnected_at: Option<DateTime<Utc>>,
    pub disconnected_by_request: Option<RequestId>,
}

/// An entity disconnected by a request: alone, or with its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityDisconnection {
    pub entity_id: EntityId,
    pub request_id: RequestId,
}

/// Every entity, in any state, of the connections that have a token with
/// one of these hashes, or one of these ids. Read in the batch's first
/// round after the connection locks, like their active tokens.
pub async fn of_connections(
    mut conn: &AsyncPgConnection,
    hashes: &[TokenHash],
    connection_ids: &[ConnectionId],
) -> QueryResult<Vec<EntityRow>> {
    OfConnections {
        connections: BatchConnectionIds {
            hashes,
            ids: connection_ids,
        },
    }
    .load(&mut conn)
    .await
}

/// A query type, so Diesel prepares it once per connection; one array of
/// connection ids, as for the tokens (`tokens::active_of_connections`).
struct OfConnections<'a> {
    connections: BatchConnectionIds<'a>,
}

impl QueryId for OfConnections<'_> {
    type QueryId = OfConnections<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Pg> for OfConnections<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "SELECT e.id, e.connection_id, e.provider_entity_id, e.status \
             FROM connection_entities AS e WHERE e.connection_id = ANY(",
        );
        self.connections.walk_ast(out.reborrow())?;
        out.push_sql(")");
        Ok(())
    }
}

impl Query for OfConnections<'_> {
    type SqlType = (SqlUuid, SqlUuid, Text, Text);
}

/// Disconnect these active entities, each on behalf of its request, in one
/// statement. Returns how many were disconnected.
pub async fn disconnect(
    mut conn: &AsyncPgConnection,
    disconnections: &[EntityDisconnection],
    at: DateTime<Utc>,
) -> QueryResult<usize> {
    Disconnect {
        entity_ids: disconnections.iter().map(|d| d.entity_id).collect(),
        request_ids: disconnections.iter().map(|d| d.request_id).collect(),
        at,
    }
    .execute(&mut conn)
    .await
}

#[derive(QueryId)]
struct Disconnect {
    entity_ids: Vec<EntityId>,
    request_ids: Vec<RequestId>,
    at: DateTime<Utc>,
}

impl QueryFragment<Pg> for Disconnect {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "UPDATE connection_entities AS e SET status = 'disconnected', disconnected_at = ",
        );
        out.push_bind_param::<Timestamptz, _>(&self.at)?;
        out.push_sql(", disconnected_by_request = v.request_id FROM unnest(");
        out.push_bind_param::<Array<SqlUuid>, _>(&self.entity_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<SqlUuid>, _>(&self.request_ids)?;
        out.push_sql(
            ") AS v (entity_id, request_id) WHERE e.id = v.entity_id AND e.status = 'active'",
        );
        Ok(())
    }
}

/// Connect these provider entities to a locked, active connection: an
/// entity new to it is added; one disconnected is active again (the
/// re-authentication that undoes an entity disconnect); an active one
/// stays as it is. Returns the connection's entities after.
pub async fn connect(
    conn: &mut AsyncPgConnection,
    connection_id: ConnectionId,
    provider_entity_ids: &[String],
) -> QueryResult<Vec<EntityRow>> {
    if !provider_entity_ids.is_empty() {
        let ids: Vec<EntityId> = provider_entity_ids
            .iter()
            .map(|_| EntityId::generate())
            .collect();
        diesel::sql_query(
            "INSERT INTO connection_entities (id, connection_id, provider_entity_id) \
             SELECT id, $1, provider_entity_id FROM unnest($2, $3) AS v (id, provider_entity_id) \
             ON CONFLICT (connection_id, provider_entity_id) DO UPDATE \
             SET status = 'active', disconnected_at = NULL, disconnected_by_request = NULL \
             WHERE connection_entities.status = 'disconnected'",
        )
        .bind::<SqlUuid, _>(connection_id)
        .bind::<Array<SqlUuid>, _>(&ids)
        .bind::<Array<Text>, _>(provider_entity_ids)
        .execute(conn)
        .await?;
    }
    of_connection(conn, connection_id).await
}

/// A connection's entities, oldest first.
pub async fn of_connection(
    conn: &mut AsyncPgConnection,
    connection_id: ConnectionId,
) -> QueryResult<Vec<EntityRow>> {
    connection_entities::table
        .filter(connection_entities::connection_id.eq(connection_id))
        .order(connection_entities::id)
        .select((
            connection_entities::id,
            connection_entities::connection_id,
            connection_entities::provider_entity_id,
            connection_entities::status,
        ))
        .load(conn)
        .await
}

/// A connection's entities with their history, for `token introspect`.
pub async fn views_of_connection(
    conn: &mut AsyncPgConnection,
    connection_id: ConnectionId,
) -> QueryResult<Vec<EntityView>> {
    connection_entities::table
        .filter(connection_entities::connection_id.eq(connection_id))
        .order(connection_entities::id)
        .select((
            connection_entities::id,
            connection_entities::provider_entity_id,
            connection_entities::status,
            connection_entities::disconnected_at,
            connection_entities::disconnected_by_request,
        ))
        .load(conn)
        .await
}
