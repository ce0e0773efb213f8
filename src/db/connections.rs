//! Queries on `connections`.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::schema::connections;
use crate::domain::ConnectionRef;

pub const ACTIVE: &str = "active";
pub const DISCONNECTED: &str = "disconnected";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = connections)]
pub struct ConnectionRow {
    pub id: Uuid,
    pub client_id: String,
    pub company_id: String,
    pub provider_id: String,
    pub status: String,
}

impl ConnectionRow {
    pub fn is_active(&self) -> bool {
        self.status == ACTIVE
    }

    pub fn into_ref(self) -> ConnectionRef {
        ConnectionRef {
            connection_id: self.id,
            client_id: self.client_id,
            company_id: self.company_id,
            provider_id: self.provider_id,
        }
    }
}

/// Lock one connection row for the rest of the transaction. Every change to a
/// connection or to the set of its tokens takes this lock first.
pub async fn lock(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<ConnectionRow> {
    connections::table
        .find(id)
        .select(ConnectionRow::as_select())
        .for_update()
        .first(conn)
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
        .filter(connections::status.eq(ACTIVE))
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
) -> QueryResult<Option<Uuid>> {
    let id = Uuid::now_v7();
    let inserted = diesel::insert_into(connections::table)
        .values((
            connections::id.eq(id),
            connections::client_id.eq(client_id),
            connections::company_id.eq(company_id),
            connections::provider_id.eq(provider_id),
            connections::status.eq(ACTIVE),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok((inserted == 1).then_some(id))
}

/// Mark a locked connection disconnected by `request_id`.
pub async fn mark_disconnected(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    request_id: Uuid,
    at: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::update(connections::table.find(id))
        .set((
            connections::status.eq(DISCONNECTED),
            connections::disconnected_at.eq(at),
            connections::disconnected_by_request.eq(request_id),
        ))
        .execute(conn)
        .await
        .map(drop)
}
