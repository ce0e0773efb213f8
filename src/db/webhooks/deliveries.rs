//! `webhook_messages` and `webhook_deliveries`: an event taken in, one
//! delivery of it per endpoint, claimed by a dispatcher when due.
//!
//! The dispatcher works by endpoint: it claims the first few due
//! deliveries of named endpoints (those the intake just gave deliveries,
//! and those [`due_endpoints`] finds each poll), so a receiver that is
//! down, with thousands of deliveries waiting, costs one index probe, where
//! reading deliveries by due time would read past all of them on every
//! claim. No endpoint row is written on this path.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{
    Array, BigInt, Bool, Bytea, Integer, Interval, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

/// An event to deliver, as taken from the event exchange.
#[derive(Debug)]
pub struct NewMessage<'a> {
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub client_id: &'a str,
    pub payload: &'a str,
}

#[derive(QueryableByName)]
struct TakenIn {
    #[diesel(sql_type = BigInt)]
    endpoints: i64,
    #[diesel(sql_type = Array<SqlUuid>)]
    new_for: Vec<Uuid>,
}

/// What taking an event in did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// The enabled endpoints of its application that take its type.
    pub endpoints: i64,
    /// Those given a new delivery now (none for a redelivered event).
    pub new_for: Vec<Uuid>,
}

/// Record the event and a delivery to each enabled endpoint of its
/// application that takes its type, once: a redelivered event changes
/// nothing. One statement (so atomic, and one round trip: this is every
/// event's cost). With no endpoint, nothing is recorded.
pub async fn take_in(conn: &mut AsyncPgConnection, message: &NewMessage<'_>) -> QueryResult<Taken> {
    let taken: TakenIn = diesel::sql_query(
        "WITH endpoints AS (
             SELECT id FROM webhook_endpoints
             WHERE client_id = $3 AND disabled_at IS NULL
               AND (event_types = '{}' OR $2 = ANY (event_types))
         ), message AS (
             INSERT INTO webhook_messages (event_id, event_type, client_id, payload)
             SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM endpoints)
             ON CONFLICT DO NOTHING
         ), deliveries AS (
             INSERT INTO webhook_deliveries (event_id, endpoint_id)
             SELECT $1, id FROM endpoints
             ON CONFLICT DO NOTHING
             RETURNING endpoint_id
         )
         SELECT (SELECT count(*) FROM endpoints) AS endpoints,
             ARRAY(SELECT endpoint_id FROM deliveries) AS new_for",
    )
    .bind::<SqlUuid, _>(message.event_id)
    .bind::<Text, _>(message.event_type)
    .bind::<Text, _>(message.client_id)
    .bind::<Text, _>(message.payload)
    .get_result(conn)
    .await?;
    Ok(Taken {
        endpoints: taken.endpoints,
        new_for: taken.new_for,
    })
}

/// A delivery a dispatcher took, with what its attempt needs.
#[derive(Debug, Clone, QueryableByName)]
pub struct Claimed {
    #[diesel(sql_type = BigInt)]
    pub delivery_id: i64,
    #[diesel(sql_type = SqlUuid)]
    pub event_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    pub endpoint_id: Uuid,
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    #[diesel(sql_type = Text)]
    pub url: String,
    #[diesel(sql_type = Text)]
    pub header_format: String,
    #[diesel(sql_type = Bytea)]
    pub secret_sealed: Vec<u8>,
    /// The previous secret, while it still signs.
    #[diesel(sql_type = Nullable<Bytea>)]
    pub previous_secret_sealed: Option<Vec<u8>>,
    #[diesel(sql_type = Text)]
    pub payload: String,
    #[diesel(sql_type = Timestamptz)]
    pub received_at: DateTime<Utc>,
}

/// Take up to `limit` due deliveries of `endpoints` (enabled ones), at
/// most `per_endpoint` of each. A taken delivery is leased: it is due again
/// only after `lease`, so a dispatcher that dies mid-attempt loses nothing.
/// Other dispatchers skip what this one holds locked.
pub async fn claim(
    conn: &mut AsyncPgConnection,
    endpoints: &[Uuid],
    per_endpoint: i64,
    limit: i64,
    lease: Duration,
) -> QueryResult<Vec<Claimed>> {
    diesel::sql_query(
        "WITH picked AS (
             SELECT d.id FROM unnest($1::uuid[]) AS e(id)
             CROSS JOIN LATERAL (
                 SELECT id FROM webhook_deliveries
                 WHERE endpoint_id = e.id AND status = 'pending' AND next_attempt_at <= now()
                 ORDER BY next_attempt_at LIMIT $2
                 FOR UPDATE SKIP LOCKED
             ) d
             LIMIT $3
         ), leased AS (
             UPDATE webhook_deliveries d SET next_attempt_at = now() + $4
             FROM picked WHERE d.id = picked.id
             RETURNING d.id, d.event_id, d.endpoint_id, d.attempts
         )
         SELECT l.id AS delivery_id, l.event_id, l.endpoint_id, l.attempts, e.url,
             e.header_format, e.secret_sealed,
             CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_secret_sealed END
                 AS previous_secret_sealed,
             m.payload, m.received_at
         FROM leased l JOIN webhook_endpoints e ON e.id = l.endpoint_id
             JOIN webhook_messages m ON m.event_id = l.event_id
         WHERE e.disabled_at IS NULL",
    )
    .bind::<Array<SqlUuid>, _>(endpoints)
    .bind::<BigInt, _>(per_endpoint)
    .bind::<BigInt, _>(limit)
    .bind::<Interval, _>(interval(lease))
    .load(conn)
    .await
}

#[derive(QueryableByName)]
struct EndpointId {
    #[diesel(sql_type = SqlUuid)]
    endpoint_id: Uuid,
}

/// The enabled endpoints with a delivery due now: a loose index scan of
/// the due index, one probe per endpoint with a pending delivery, however
/// many each has waiting. Retries, leases run out, and what another
/// replica left are found here.
pub async fn due_endpoints(conn: &mut AsyncPgConnection) -> QueryResult<Vec<Uuid>> {
    let rows: Vec<EndpointId> = diesel::sql_query(
        "WITH RECURSIVE firsts AS (
             (SELECT endpoint_id, next_attempt_at FROM webhook_deliveries
              WHERE status = 'pending' ORDER BY endpoint_id, next_attempt_at LIMIT 1)
             UNION ALL
             SELECT n.endpoint_id, n.next_attempt_at FROM firsts f CROSS JOIN LATERAL (
                 SELECT endpoint_id, next_attempt_at FROM webhook_deliveries
                 WHERE status = 'pending' AND endpoint_id > f.endpoint_id
                 ORDER BY endpoint_id, next_attempt_at LIMIT 1) n
         )
         SELECT f.endpoint_id FROM firsts f
         JOIN webhook_endpoints e ON e.id = f.endpoint_id AND e.disabled_at IS NULL
         WHERE f.next_attempt_at <= now()
         ORDER BY f.next_attempt_at",
    )
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|row| row.endpoint_id).collect())
}

fn interval(duration: Duration) -> diesel::pg::data_types::PgInterval {
    diesel::pg::data_types::PgInterval::from_microseconds(
        i64::try_from(duration.as_micros()).unwrap_or(i64::MAX),
    )
}

/// One attempt's result, to record.
#[derive(Debug, Clone)]
pub struct AttemptRecord<'a> {
    pub delivery_id: i64,
    pub endpoint_id: Uuid,
    pub attempted_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub status_code: Option<i32>,
    pub error: Option<&'a str>,
    pub response_excerpt: Option<&'a str>,
    pub next: AfterAttempt,
}

/// What becomes of the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAttempt {
    Delivered,
    RetryAt(DateTime<Utc>),
    /// No attempt left.
    Failed,
    /// 410: failed, and the endpoint disabled.
    Gone,
}

/// What recording did to the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointChange {
    None,
    /// Disabled now: `gone`, or `failing` for longer than allowed.
    Disabled(&'static str),
}

#[derive(QueryableByName)]
struct Streak {
    #[diesel(sql_type = Nullable<Timestamptz>)]
    failing_since: Option<DateTime<Utc>>,
    #[diesel(sql_type = Bool)]
    enabled: bool,
}

/// Record a 2xx: the attempt, the delivery delivered, the endpoint's
/// failing streak ended. One statement, so one round trip and atomic:
/// this is every delivered event's cost.
pub async fn record_delivered(
    conn: &mut AsyncPgConnection,
    record: &AttemptRecord<'_>,
) -> QueryResult<()> {
    diesel::sql_query(
        "WITH attempt AS (
             INSERT INTO webhook_attempts
                 (delivery_id, attempted_at, duration_ms, status_code, error, response_excerpt)
             VALUES ($1, $2, $3, $4, NULL, $5)
         ), delivery AS (
             UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1,
                 finished_at = now()
             WHERE id = $1 AND status = 'pending'
         )
         UPDATE webhook_endpoints SET failing_since = NULL
         WHERE id = $6 AND failing_since IS NOT NULL",
    )
    .bind::<BigInt, _>(record.delivery_id)
    .bind::<Timestamptz, _>(record.attempted_at)
    .bind::<Integer, _>(record.duration_ms)
    .bind::<Nullable<Integer>, _>(record.status_code)
    .bind::<Nullable<Text>, _>(record.response_excerpt)
    .bind::<SqlUuid, _>(record.endpoint_id)
    .execute(conn)
    .await
    .map(drop)
}

/// Record the attempt, settle or reschedule the delivery, and keep the
/// endpoint's failing streak: an endpoint failing since longer than
/// `disable_after` is disabled. Run it in a transaction (a 2xx alone is
/// [`record_delivered`], one statement).
pub async fn record_attempt(
    conn: &mut AsyncPgConnection,
    record: &AttemptRecord<'_>,
    disable_after: Duration,
) -> QueryResult<EndpointChange> {
    if record.next == AfterAttempt::Delivered {
        record_delivered(conn, record).await?;
        return Ok(EndpointChange::None);
    }
    let next_attempt_at = match record.next {
        AfterAttempt::RetryAt(at) => Some(at),
        _ => None,
    };
    diesel::sql_query(
        "INSERT INTO webhook_attempts
             (delivery_id, attempted_at, duration_ms, status_code, error, response_excerpt, next_attempt_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind::<BigInt, _>(record.delivery_id)
    .bind::<Timestamptz, _>(record.attempted_at)
    .bind::<Integer, _>(record.duration_ms)
    .bind::<Nullable<Integer>, _>(record.status_code)
    .bind::<Nullable<Text>, _>(record.error)
    .bind::<Nullable<Text>, _>(record.response_excerpt)
    .bind::<Nullable<Timestamptz>, _>(next_attempt_at)
    .execute(conn)
    .await?;
    let (status, finished) = match record.next {
        AfterAttempt::Delivered => ("delivered", true),
        AfterAttempt::RetryAt(_) => ("pending", false),
        AfterAttempt::Failed | AfterAttempt::Gone => ("failed", true),
    };
    diesel::sql_query(
        "UPDATE webhook_deliveries SET status = $2, attempts = attempts + 1,
             next_attempt_at = COALESCE($3, next_attempt_at),
             finished_at = CASE WHEN $4 THEN now() END
         WHERE id = $1 AND status = 'pending'",
    )
    .bind::<BigInt, _>(record.delivery_id)
    .bind::<Text, _>(status)
    .bind::<Nullable<Timestamptz>, _>(next_attempt_at)
    .bind::<Bool, _>(finished)
    .execute(conn)
    .await?;
    let streak: Option<Streak> = diesel::sql_query(
        "UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, $2)
         WHERE id = $1 RETURNING failing_since, disabled_at IS NULL AS enabled",
    )
    .bind::<SqlUuid, _>(record.endpoint_id)
    .bind::<Timestamptz, _>(record.attempted_at)
    .get_result(conn)
    .await
    .optional()?;
    let Some(streak) = streak.filter(|streak| streak.enabled) else {
        return Ok(EndpointChange::None);
    };
    let failing_for = streak
        .failing_since
        .and_then(|since| (Utc::now() - since).to_std().ok())
        .unwrap_or_default();
    let reason = if record.next == AfterAttempt::Gone {
        "gone"
    } else if failing_for >= disable_after {
        "failing"
    } else {
        return Ok(EndpointChange::None);
    };
    disable(conn, record.endpoint_id, reason).await?;
    Ok(EndpointChange::Disabled(reason))
}

/// Disable an endpoint for `reason`: the claim no longer reads it, and its
/// pending deliveries wait; the announcer owes an event unless an operator
/// did it.
pub async fn disable(
    conn: &mut AsyncPgConnection,
    endpoint_id: Uuid,
    reason: &str,
) -> QueryResult<()> {
    diesel::sql_query(
        "UPDATE webhook_endpoints SET disabled_at = now(), disabled_reason = $2,
             disabled_announced_at = CASE WHEN $2 = 'operator' THEN now() END
         WHERE id = $1 AND disabled_at IS NULL",
    )
    .bind::<SqlUuid, _>(endpoint_id)
    .bind::<Text, _>(reason)
    .execute(conn)
    .await
    .map(drop)
}

/// Send an event again to its endpoints (or one): its deliveries that are
/// finished start a new series of attempts now, with the same id. Returns
/// how many.
pub async fn resend(
    conn: &mut AsyncPgConnection,
    event_id: Uuid,
    endpoint_id: Option<Uuid>,
) -> QueryResult<usize> {
    diesel::sql_query(
        "UPDATE webhook_deliveries SET status = 'pending', attempts = 0,
             next_attempt_at = now(), finished_at = NULL
         WHERE event_id = $1 AND ($2::uuid IS NULL OR endpoint_id = $2)
           AND status <> 'pending'",
    )
    .bind::<SqlUuid, _>(event_id)
    .bind::<Nullable<SqlUuid>, _>(endpoint_id)
    .execute(conn)
    .await
}

#[derive(QueryableByName)]
pub struct Backlog {
    /// Pending deliveries of enabled endpoints.
    #[diesel(sql_type = BigInt)]
    pub pending: i64,
    /// Those due now.
    #[diesel(sql_type = BigInt)]
    pub due: i64,
    /// Seconds the oldest due one has waited past its time.
    #[diesel(sql_type = diesel::sql_types::Double)]
    pub oldest_due_secs: f64,
}

pub async fn backlog(conn: &mut AsyncPgConnection) -> QueryResult<Backlog> {
    diesel::sql_query(
        "SELECT count(*) AS pending,
             count(*) FILTER (WHERE d.next_attempt_at <= now()) AS due,
             COALESCE(EXTRACT(EPOCH FROM now() - min(d.next_attempt_at)
                 FILTER (WHERE d.next_attempt_at <= now()))::float8, 0) AS oldest_due_secs
         FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
         WHERE d.status = 'pending' AND e.disabled_at IS NULL",
    )
    .get_result(conn)
    .await
}

/// Delete up to `limit` events taken in before `older_than` ago with no
/// delivery still pending, with their deliveries and attempts. Replicas
/// running this at once skip each other's rows.
pub async fn delete_finished(
    conn: &mut AsyncPgConnection,
    older_than: Duration,
    limit: i64,
) -> QueryResult<usize> {
    diesel::sql_query(
        "DELETE FROM webhook_messages WHERE event_id IN (
             SELECT m.event_id FROM webhook_messages m
             WHERE m.received_at < now() - $1
               AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                               WHERE d.event_id = m.event_id AND d.status = 'pending')
             ORDER BY m.received_at LIMIT $2
             FOR UPDATE SKIP LOCKED)",
    )
    .bind::<Interval, _>(interval(older_than))
    .bind::<BigInt, _>(limit)
    .execute(conn)
    .await
}
