//! Queries on `outbox_events`: events written with the state change and
//! published afterwards.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::schema::outbox_events;
use crate::domain::OutcomeEvent;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = outbox_events)]
pub struct PendingEvent {
    pub id: i64,
    pub event_id: Uuid,
    pub request_id: Uuid,
    pub routing_key: String,
    pub payload: String,
}

pub async fn insert(
    conn: &mut AsyncPgConnection,
    request_id: Uuid,
    event: &OutcomeEvent,
) -> QueryResult<()> {
    diesel::insert_into(outbox_events::table)
        .values((
            outbox_events::event_id.eq(event.event_id),
            outbox_events::request_id.eq(request_id),
            outbox_events::routing_key.eq(event.routing_key),
            outbox_events::payload.eq(&event.payload),
        ))
        .execute(conn)
        .await
        .map(drop)
}

/// The oldest unpublished events, locked for this transaction. Rows another
/// replica is publishing are skipped rather than waited for.
pub async fn claim_unpublished(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> QueryResult<Vec<PendingEvent>> {
    outbox_events::table
        .filter(outbox_events::published_at.is_null())
        .order(outbox_events::id)
        .limit(limit)
        .select(PendingEvent::as_select())
        .for_update()
        .skip_locked()
        .load(conn)
        .await
}

pub async fn mark_published(
    conn: &mut AsyncPgConnection,
    ids: &[i64],
    at: DateTime<Utc>,
) -> QueryResult<()> {
    diesel::update(outbox_events::table.filter(outbox_events::id.eq_any(ids)))
        .set(outbox_events::published_at.eq(at))
        .execute(conn)
        .await
        .map(drop)
}

/// How many events wait to be published, and when the oldest was written.
pub async fn backlog(conn: &mut AsyncPgConnection) -> QueryResult<(i64, Option<DateTime<Utc>>)> {
    outbox_events::table
        .filter(outbox_events::published_at.is_null())
        .select((
            diesel::dsl::count_star(),
            diesel::dsl::min(outbox_events::created_at),
        ))
        .first(conn)
        .await
}
