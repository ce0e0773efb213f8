//! `webhook_messages` and `webhook_deliveries`: an event taken in, one
//! delivery of it per endpoint, claimed by a dispatcher when due.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{
    Array, BigInt, Bool, Bytea, Integer, Interval, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

/// The far end of the due index: where a disabled endpoint's pending
/// deliveries wait, so the claim never reads them, until it is enabled.
const PARKED: &str = "'infinity'::timestamptz";

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
}

/// Record the event and a delivery to each enabled endpoint of its
/// application that takes its type, once: a redelivered event changes
/// nothing. One statement (so atomic, and one round trip: this is every
/// event's cost). Returns how many endpoints take it; with none, nothing
/// is recorded.
pub async fn take_in(conn: &mut AsyncPgConnection, message: &NewMessage<'_>) -> QueryResult<i64> {
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
         )
         SELECT count(*) AS endpoints FROM endpoints",
    )
    .bind::<SqlUuid, _>(message.event_id)
    .bind::<Text, _>(message.event_type)
    .bind::<Text, _>(message.client_id)
    .bind::<Text, _>(message.payload)
    .get_result(conn)
    .await?;
    Ok(taken.endpoints)
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

/// Take up to `limit` due deliveries, at most `per_endpoint` of each
/// endpoint and none of `busy` (endpoints with no free attempt slot here).
/// A taken delivery is leased: it is due again only after `lease`, so a
/// dispatcher that dies mid-attempt loses nothing. Other dispatchers skip
/// what this one holds locked.
pub async fn claim(
    conn: &mut AsyncPgConnection,
    limit: i64,
    per_endpoint: i64,
    busy: &[Uuid],
    lease: Duration,
) -> QueryResult<Vec<Claimed>> {
    diesel::sql_query(
        "WITH due AS (
             SELECT id, endpoint_id, next_attempt_at FROM webhook_deliveries
             WHERE status = 'pending' AND next_attempt_at <= now() AND endpoint_id <> ALL($1)
             ORDER BY next_attempt_at LIMIT $3 * 8
         ), ranked AS (
             SELECT id, row_number() OVER (PARTITION BY endpoint_id ORDER BY next_attempt_at, id) AS nth
             FROM due
         ), picked AS (
             SELECT d.id FROM webhook_deliveries d JOIN ranked r ON r.id = d.id
             WHERE r.nth <= $2 AND d.status = 'pending' AND d.next_attempt_at <= now()
             ORDER BY d.next_attempt_at LIMIT $3
             FOR UPDATE OF d SKIP LOCKED
         )
         UPDATE webhook_deliveries d SET next_attempt_at = now() + $4
         FROM picked, webhook_endpoints e, webhook_messages m
         WHERE d.id = picked.id AND e.id = d.endpoint_id AND m.event_id = d.event_id
           AND e.disabled_at IS NULL
         RETURNING d.id AS delivery_id, d.event_id, d.endpoint_id, d.attempts, e.url,
             e.header_format, e.secret_sealed,
             CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_secret_sealed END
                 AS previous_secret_sealed,
             m.payload, m.received_at",
    )
    .bind::<Array<SqlUuid>, _>(busy)
    .bind::<BigInt, _>(per_endpoint)
    .bind::<BigInt, _>(limit)
    .bind::<Interval, _>(interval(lease))
    .load(conn)
    .await
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

/// Disable an endpoint for `reason` and park its pending deliveries; the
/// announcer owes an event unless an operator did it.
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
    .await?;
    diesel::sql_query(format!(
        "UPDATE webhook_deliveries SET next_attempt_at = {PARKED}
         WHERE endpoint_id = $1 AND status = 'pending'"
    ))
    .bind::<SqlUuid, _>(endpoint_id)
    .execute(conn)
    .await
    .map(drop)
}

/// An endpoint enabled again: its parked deliveries are due now.
pub async fn unpark(conn: &mut AsyncPgConnection, endpoint_id: Uuid) -> QueryResult<usize> {
    diesel::sql_query(
        "UPDATE webhook_deliveries SET next_attempt_at = now()
         WHERE endpoint_id = $1 AND status = 'pending'",
    )
    .bind::<SqlUuid, _>(endpoint_id)
    .execute(conn)
    .await
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
        "UPDATE webhook_deliveries d SET status = 'pending', attempts = 0,
             next_attempt_at = CASE WHEN e.disabled_at IS NULL THEN now() ELSE 'infinity' END,
             finished_at = NULL
         FROM webhook_endpoints e
         WHERE d.event_id = $1 AND ($2::uuid IS NULL OR d.endpoint_id = $2)
           AND e.id = d.endpoint_id AND d.status <> 'pending'",
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
    diesel::sql_query(format!(
        "SELECT count(*) AS pending,
             count(*) FILTER (WHERE next_attempt_at <= now()) AS due,
             COALESCE(EXTRACT(EPOCH FROM now() - min(next_attempt_at)
                 FILTER (WHERE next_attempt_at <= now()))::float8, 0) AS oldest_due_secs
         FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at < {PARKED}"
    ))
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
