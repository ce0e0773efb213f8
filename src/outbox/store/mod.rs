//! The outbox's own SQL: events written in the transaction of the state
//! change they announce (by the service, through [`insert_many`]), claimed
//! by the relay, and deleted once the broker has confirmed them. Two
//! tables: with the `by_reference` format, the `connection.disconnected`
//! events (most events) are kept by reference and rebuilt from the rows (`disconnections`, `rebuild`), and those that
//! cannot be are set aside (`set_aside`); every other event keeps its bytes
//! in `outbox_events`. Rows there with `published_at` set are those a
//! version before 0.3.0 marked instead; retention deletes them.

mod disconnections;
mod rebuild;
pub mod set_aside;

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::data_types::PgInterval;
use diesel::dsl::now;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{
    Array, BigInt, Bool, Interval, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::db::schema::outbox_events;
use crate::domain::{EventId, OutcomeEvent, RequestId};
use crate::outbox::OutboxFormat;
use set_aside::SetAside;

/// Write events to the outbox: in the `by_reference` format, a statement
/// for those that can be kept by reference and one for the others (the two
/// run pipelined on the connection); in the `whole` format, every event
/// with its bytes.
pub async fn insert_many(
    conn: &AsyncPgConnection,
    events: &[OutcomeEvent],
    format: OutboxFormat,
) -> QueryResult<()> {
    let (by_reference, whole): (Vec<_>, Vec<_>) = events
        .iter()
        .partition(|event| format == OutboxFormat::ByReference && event.rebuilt_from.is_some());
    let by_reference: Vec<_> = by_reference
        .into_iter()
        .filter_map(|event| event.rebuilt_from.as_ref().map(|key| (event, key)))
        .collect();
    futures_util::try_join!(
        disconnections::insert_many(conn, &by_reference),
        insert_whole(conn, &whole),
    )
    .map(drop)
}

/// Write events with their bytes to `outbox_events`, in one statement.
async fn insert_whole(mut conn: &AsyncPgConnection, events: &[&OutcomeEvent]) -> QueryResult<()> {
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
#[derive(Queryable, Selectable)]
#[diesel(table_name = outbox_events, check_for_backend(Pg))]
struct EventRow {
    event_id: EventId,
    request_id: RequestId,
    routing_key: String,
    payload: String,
    created_at: DateTime<Utc>,
    occurred_at: Option<DateTime<Utc>>,
    traceparent: Option<String>,
    subject: Option<String>,
}

fn into_events(rows: Vec<EventRow>) -> Vec<OutcomeEvent> {
    rows.into_iter()
        .map(|row| OutcomeEvent {
            event_id: row.event_id,
            request_id: row.request_id,
            routing_key: row.routing_key,
            payload: row.payload,
            // Rows written before the column existed: written in the
            // transaction that decided the outcome, the same second.
            occurred_at: row.occurred_at.unwrap_or(row.created_at),
            subject: row.subject,
            traceparent: row.traceparent,
            request_published_at: None,
            rebuilt_from: None,
        })
        .collect()
}

/// Which unpublished events a relay sweep claims.
pub enum Claim<'a> {
    /// These, whatever their age.
    Ids(&'a [EventId]),
    /// The oldest, up to a limit, unpublished for longer than a delay. The
    /// age is measured on the database's clock, so the worker's clock does
    /// not matter.
    OlderThan(Duration, i64),
}

/// What a claim took: the events to publish, in event id (time) order, and
/// the references it set aside instead.
pub struct Claimed {
    pub events: Vec<OutcomeEvent>,
    pub set_aside: Vec<SetAside>,
}

/// The events `claim` takes from both tables, locked for this transaction,
/// in event id (time) order. Rows another replica is publishing are skipped
/// rather than waited for. With a limit, the oldest of both up to it; the
/// rest stay locked, unpublished, until this transaction ends, for the next
/// claim. References that cannot be published are set aside in this
/// transaction.
pub async fn claim(conn: &mut AsyncPgConnection, claim: &Claim<'_>) -> QueryResult<Claimed> {
    let rows = outbox_events::table
        .filter(outbox_events::published_at.is_null())
        .filter(whole_claimed(claim))
        .order(outbox_events::event_id)
        .limit(claim.limit())
        .select(EventRow::as_select())
        .for_update()
        .skip_locked()
        .load::<EventRow>(conn)
        .await?;
    let mut events = into_events(rows);
    let (rebuilt, set_aside) = disconnections::claim(conn, claim).await?;
    events.extend(rebuilt);
    events.sort_unstable_by_key(|event| event.event_id);
    if let Claim::OlderThan(_, limit) = *claim {
        events.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    }
    Ok(Claimed { events, set_aside })
}

impl Claim<'_> {
    /// How many rows a claim takes from each table: its ids (the relay
    /// names at most a batch), or its limit.
    fn limit(&self) -> i64 {
        match *self {
            Self::Ids(ids) => i64::try_from(ids.len()).unwrap_or(i64::MAX),
            Self::OlderThan(_, limit) => limit,
        }
    }
}

/// `delay` as an SQL interval.
fn interval(delay: Duration) -> diesel::dsl::AsExprOf<PgInterval, Interval> {
    PgInterval::from_microseconds(i64::try_from(delay.as_micros()).unwrap_or(i64::MAX))
        .into_sql::<Interval>()
}

/// The rows of `outbox_events` a claim names.
fn whole_claimed(
    claim: &Claim<'_>,
) -> Box<dyn BoxableExpression<outbox_events::table, Pg, SqlType = Bool>> {
    match *claim {
        Claim::Ids(event_ids) => Box::new(outbox_events::event_id.eq_any(event_ids.to_vec())),
        Claim::OlderThan(delay, _) => {
            Box::new((outbox_events::created_at + interval(delay)).lt(now))
        }
    }
}

/// Delete events the broker has confirmed: an event's row lives only until
/// then. Returns how many were deleted (one deleted before, by another
/// replica's relay, is not counted).
pub async fn delete_confirmed(
    conn: &mut AsyncPgConnection,
    event_ids: &[EventId],
) -> QueryResult<usize> {
    // Both tables in one statement: one round trip, as before.
    #[derive(QueryableByName)]
    struct Deleted {
        #[diesel(sql_type = BigInt)]
        deleted: i64,
    }
    diesel::sql_query(
        "WITH whole AS (DELETE FROM outbox_events WHERE event_id = ANY($1) RETURNING 1), \
         by_reference AS (DELETE FROM outbox_disconnections WHERE event_id = ANY($1) RETURNING 1) \
         SELECT (SELECT count(*) FROM whole) + (SELECT count(*) FROM by_reference) AS deleted",
    )
    .bind::<Array<SqlUuid>, _>(event_ids)
    .get_result::<Deleted>(conn)
    .await
    .map(|row| usize::try_from(row.deleted).unwrap_or(usize::MAX))
}

/// What waits in the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct Backlog {
    /// Events waiting to be published.
    #[diesel(sql_type = BigInt)]
    pub pending: i64,
    /// When the oldest of them was written.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub oldest: Option<DateTime<Utc>>,
    /// References set aside: never published until an operator acts.
    #[diesel(sql_type = BigInt)]
    pub set_aside: i64,
}

/// What waits in the outbox, in one statement.
pub async fn backlog(conn: &mut AsyncPgConnection) -> QueryResult<Backlog> {
    diesel::sql_query(
        "SELECT sum(events)::bigint AS pending, min(oldest) AS oldest, \
                (SELECT count(*) FROM outbox_set_aside) AS set_aside FROM ( \
           SELECT count(*) AS events, min(created_at) AS oldest FROM outbox_events \
            WHERE published_at IS NULL \
           UNION ALL \
           SELECT count(*), min(created_at) FROM outbox_disconnections) AS tables",
    )
    .get_result::<Backlog>(conn)
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
