//! The outbox's own SQL, on `outbox_events`: events written in the
//! transaction of the state change they announce (by the service, through
//! [`insert_many`]), claimed by the relay, and deleted once the broker has
//! confirmed them. Rows with `published_at` set are those a version before
//! 0.3.0 marked instead; retention deletes them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::data_types::PgInterval;
use diesel::dsl::now;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Array, Interval, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::db::schema::outbox_events;
use crate::domain::{EventId, OutcomeEvent, RequestId};

/// Write events to the outbox, in one statement.
pub async fn insert_many(mut conn: &AsyncPgConnection, events: &[OutcomeEvent]) -> QueryResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    InsertEvents {
        event_ids: events.iter().map(|event| event.event_id).collect(),
        request_ids: events.iter().map(|event| event.request_id).collect(),
        routing_keys: events
            .iter()
            .map(|event| event.routing_key.as_str())
            .collect(),
        payloads: events.iter().map(|event| event.payload.as_str()).collect(),
        traceparents: events
            .iter()
            .map(|event| event.traceparent.as_deref())
            .collect(),
        subjects: events
            .iter()
            .map(|event| event.subject.as_deref())
            .collect(),
        occurred_ats: events.iter().map(|event| event.occurred_at).collect(),
    }
    .execute(&mut conn)
    .await
    .map(drop)
}

/// A multi-row insert whose text does not depend on the number of rows, so
/// Diesel prepares it once per connection (see `requests::insert_many`).
struct InsertEvents<'a> {
    event_ids: Vec<EventId>,
    request_ids: Vec<RequestId>,
    routing_keys: Vec<&'a str>,
    payloads: Vec<&'a str>,
    traceparents: Vec<Option<&'a str>>,
    subjects: Vec<Option<&'a str>>,
    occurred_ats: Vec<DateTime<Utc>>,
}

// By hand: the derive does not take a lifetime, and borrowing spares a copy
// of every payload.
impl QueryId for InsertEvents<'_> {
    type QueryId = InsertEvents<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Pg> for InsertEvents<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "INSERT INTO outbox_events (event_id, request_id, routing_key, payload, traceparent, \
             subject, occurred_at) \
             SELECT * FROM unnest(",
        );
        out.push_bind_param::<Array<SqlUuid>, _>(&self.event_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<SqlUuid>, _>(&self.request_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.routing_keys)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.payloads)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.traceparents)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.subjects)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Timestamptz>, _>(&self.occurred_ats)?;
        out.push_sql(")");
        Ok(())
    }
}

/// The columns an event is published from.
type EventRow = (
    EventId,
    RequestId,
    String,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<String>,
);

const EVENT_COLUMNS: (
    outbox_events::event_id,
    outbox_events::request_id,
    outbox_events::routing_key,
    outbox_events::payload,
    outbox_events::created_at,
    outbox_events::occurred_at,
    outbox_events::traceparent,
    outbox_events::subject,
) = (
    outbox_events::event_id,
    outbox_events::request_id,
    outbox_events::routing_key,
    outbox_events::payload,
    outbox_events::created_at,
    outbox_events::occurred_at,
    outbox_events::traceparent,
    outbox_events::subject,
);

fn into_events(rows: Vec<EventRow>) -> Vec<OutcomeEvent> {
    rows.into_iter()
        .map(
            |(
                event_id,
                request_id,
                routing_key,
                payload,
                created_at,
                occurred_at,
                traceparent,
                subject,
            )| OutcomeEvent {
                event_id,
                request_id,
                routing_key,
                payload,
                // Rows written before the column existed: written in the
                // transaction that decided the outcome, the same second.
                occurred_at: occurred_at.unwrap_or(created_at),
                subject,
                traceparent,
                request_published_at: None,
            },
        )
        .collect()
}

/// The oldest events still unpublished `delay` after they were written,
/// locked for this transaction. The age is measured on the database's clock,
/// so the worker's clock does not matter. Rows another replica is publishing
/// are skipped rather than waited for.
pub async fn claim_unpublished_older_than(
    conn: &mut AsyncPgConnection,
    delay: Duration,
    limit: i64,
) -> QueryResult<Vec<OutcomeEvent>> {
    let delay = PgInterval::from_microseconds(i64::try_from(delay.as_micros()).unwrap_or(i64::MAX));
    outbox_events::table
        .filter(outbox_events::published_at.is_null())
        .filter((outbox_events::created_at + delay.into_sql::<Interval>()).lt(now))
        .order(outbox_events::event_id)
        .limit(limit)
        .select(EVENT_COLUMNS)
        .for_update()
        .skip_locked()
        .load::<EventRow>(conn)
        .await
        .map(into_events)
}

/// Those of `event_ids` still unpublished, locked for this transaction.
pub async fn claim_unpublished_by_ids(
    conn: &mut AsyncPgConnection,
    event_ids: &[EventId],
) -> QueryResult<Vec<OutcomeEvent>> {
    outbox_events::table
        .filter(outbox_events::published_at.is_null())
        .filter(outbox_events::event_id.eq_any(event_ids))
        .order(outbox_events::event_id)
        .select(EVENT_COLUMNS)
        .for_update()
        .skip_locked()
        .load::<EventRow>(conn)
        .await
        .map(into_events)
}

/// Delete events the broker has confirmed: an event's row lives only until
/// then. Returns how many were deleted (one deleted before, by another
/// replica's relay, is not counted).
pub async fn delete_confirmed(
    conn: &mut AsyncPgConnection,
    event_ids: &[EventId],
) -> QueryResult<usize> {
    diesel::delete(outbox_events::table.filter(outbox_events::event_id.eq_any(event_ids)))
        .execute(conn)
        .await
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

/// Delete events marked published before `before` (by a version before
/// 0.3.0); returns how many. Bounded per call so a large backlog is pruned
/// in short transactions.
pub async fn delete_published_before(
    conn: &mut AsyncPgConnection,
    before: DateTime<Utc>,
    limit: i64,
) -> QueryResult<usize> {
    crate::db::delete_bounded(
        conn,
        "DELETE FROM outbox_events WHERE event_id IN \
         (SELECT event_id FROM outbox_events WHERE published_at < $1 LIMIT $2)",
        before,
        limit,
    )
    .await
}
