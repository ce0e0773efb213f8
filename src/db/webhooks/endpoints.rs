//! `webhook_endpoints`: an application's receivers.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::db::schema::webhook_endpoints;

#[derive(Debug, Insertable)]
#[diesel(table_name = webhook_endpoints)]
pub struct NewEndpoint<'a> {
    pub id: Uuid,
    pub client_id: &'a str,
    pub url: &'a str,
    pub event_types: &'a [String],
    pub header_format: &'a str,
    pub secret_sealed: &'a [u8],
}

/// An endpoint as stored, without its secrets.
#[derive(Debug, Clone, Queryable, Selectable, serde::Serialize)]
#[diesel(table_name = webhook_endpoints)]
pub struct EndpointRow {
    pub id: Uuid,
    pub client_id: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub header_format: String,
    pub created_at: DateTime<Utc>,
    pub failing_since: Option<DateTime<Utc>>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
}

pub async fn insert(conn: &mut AsyncPgConnection, endpoint: &NewEndpoint<'_>) -> QueryResult<()> {
    diesel::insert_into(webhook_endpoints::table)
        .values(endpoint)
        .execute(conn)
        .await
        .map(drop)
}

/// Every endpoint, or one application's, oldest first.
pub async fn list(
    conn: &mut AsyncPgConnection,
    client_id: Option<&str>,
) -> QueryResult<Vec<EndpointRow>> {
    let mut query = webhook_endpoints::table
        .select(EndpointRow::as_select())
        .order((webhook_endpoints::created_at, webhook_endpoints::id))
        .into_boxed();
    if let Some(client_id) = client_id {
        query = query.filter(webhook_endpoints::client_id.eq(client_id.to_string()));
    }
    query.load(conn).await
}

pub async fn exists(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(webhook_endpoints::table.find(id)))
        .get_result(conn)
        .await
}

/// Enable again: its failing streak starts over, and its deliveries still
/// pending are attempted from now on (those past their time at once).
pub async fn enable(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<bool> {
    diesel::update(webhook_endpoints::table.find(id))
        .set((
            webhook_endpoints::disabled_at.eq(None::<DateTime<Utc>>),
            webhook_endpoints::disabled_reason.eq(None::<String>),
            webhook_endpoints::disabled_announced_at.eq(None::<DateTime<Utc>>),
            webhook_endpoints::failing_since.eq(None::<DateTime<Utc>>),
        ))
        .execute(conn)
        .await
        .map(|rows| rows == 1)
}

/// The sealed current secret and header format, for a rotation.
pub async fn sealed_secret(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> QueryResult<Option<(Vec<u8>, String)>> {
    webhook_endpoints::table
        .find(id)
        .select((
            webhook_endpoints::secret_sealed,
            webhook_endpoints::header_format,
        ))
        .first(conn)
        .await
        .optional()
}

/// The new secret signs from now; the old one beside it until `overlap_until`.
pub async fn rotate_secret(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    new_sealed: &[u8],
    previous_sealed: &[u8],
    overlap_until: DateTime<Utc>,
) -> QueryResult<bool> {
    diesel::update(webhook_endpoints::table.find(id))
        .set((
            webhook_endpoints::secret_sealed.eq(new_sealed),
            webhook_endpoints::previous_secret_sealed.eq(Some(previous_sealed)),
            webhook_endpoints::previous_secret_expires_at.eq(Some(overlap_until)),
        ))
        .execute(conn)
        .await
        .map(|rows| rows == 1)
}

/// Remove it with its deliveries and their attempts.
pub async fn remove(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<bool> {
    diesel::delete(webhook_endpoints::table.find(id))
        .execute(conn)
        .await
        .map(|rows| rows == 1)
}

/// An endpoint the dispatcher disabled, whose event is owed.
#[derive(Debug, Clone, Queryable)]
pub struct Unannounced {
    pub id: Uuid,
    pub client_id: String,
    pub disabled_at: DateTime<Utc>,
    pub disabled_reason: Option<String>,
    pub failing_since: Option<DateTime<Utc>>,
}

pub async fn unannounced(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> QueryResult<Vec<Unannounced>> {
    webhook_endpoints::table
        .filter(webhook_endpoints::disabled_at.is_not_null())
        .filter(webhook_endpoints::disabled_announced_at.is_null())
        .order(webhook_endpoints::disabled_at)
        .limit(limit)
        .select((
            webhook_endpoints::id,
            webhook_endpoints::client_id,
            webhook_endpoints::disabled_at.assume_not_null(),
            webhook_endpoints::disabled_reason,
            webhook_endpoints::failing_since,
        ))
        .load(conn)
        .await
}

/// The announcement of this disabling was confirmed by the broker.
pub async fn announced(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    disabled_at: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::update(
        webhook_endpoints::table
            .find(id)
            .filter(webhook_endpoints::disabled_at.eq(disabled_at)),
    )
    .set(webhook_endpoints::disabled_announced_at.eq(diesel::dsl::now))
    .execute(conn)
    .await
    .map(drop)
}

/// Disabled endpoints, for the gauge.
pub async fn count_disabled(conn: &mut AsyncPgConnection) -> QueryResult<i64> {
    webhook_endpoints::table
        .filter(webhook_endpoints::disabled_at.is_not_null())
        .count()
        .get_result(conn)
        .await
}
