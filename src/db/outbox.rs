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

#[derive(Debug, Insertable)]
#[diesel(table_name = outbox_events)]
struct NewEvent<'a> {
    event_id: Uuid,
    request_id: Uuid,
    routing_key: &'a str,
    payload: &'a str,
}

/// Write events to the outbox, in one statement: (request id, event) pairs.
pub async fn insert_many(
    conn: &mut AsyncPgConnection,
    events: &[(Uuid, OutcomeEvent)],
) -> QueryResult<()> {
    let rows: Vec<NewEvent<'_>> = events
        .iter()
        .map(|(request_id, event)| NewEvent {
            event_id: event.event_id,
            request_id: *request_id,
            routing_key: event.routing_key,
            payload: &event.payload,
        })
        .collect();
    diesel::insert_into(outbox_events::table)
        .values(&rows)
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

/// Delete events published before `before`; returns how many. Bounded per
/// call so a large backlog is pruned in short transactions.
pub async fn delete_published_before(
    conn: &mut AsyncPgConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> QueryResult<usize> {
    use diesel::sql_types::{BigInt, Timestamptz};
    diesel::sql_query(
        "DELETE FROM outbox_events WHERE id IN \
         (SELECT id FROM outbox_events WHERE published_at < $1 LIMIT $2)",
    )
    .bind::<Timestamptz, _>(before)
    .bind::<BigInt, _>(limit)
    .execute(conn)
    .await
}
