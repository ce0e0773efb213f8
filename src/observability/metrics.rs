//! Metric names and the functions that record them, through the `metrics`
//! facade; exposition in the Prometheus format is metrics-exporter-prometheus.
//! Without an installed recorder (library use, in-process tests) every call
//! is a no-op.

pub mod webhooks;

use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Deliveries by how they were settled: the outcome recorded
/// (`disconnected`, `token_revoked`, `unknown_token`, ..., `in_progress`
/// for an accepted company or client request), `duplicate` (a request id
/// seen before; all of these acknowledged), `dead_lettered` (bad input),
/// `retried` (processing failed, returned with basic.reject: counted
/// against the delivery limit), `released` (not attempted, returned with
/// basic.nack: shutdown).
pub const REQUESTS: &str = "disconnect_worker_requests_total";
/// Dead-lettered requests by rejection code.
pub const DEAD_LETTERS: &str = "disconnect_worker_dead_letters_total";
/// Bad requests whose dead letter could not be published, by reason
/// (`unroutable`: no queue took it; `refused`, `unconfirmed`, `broker`):
/// each went back to the request queue.
pub const DEAD_LETTER_FAILURES: &str = "disconnect_worker_dead_letter_failures_total";
pub const TOKENS_REVOKED: &str = "disconnect_worker_tokens_revoked_total";
/// Entities disconnected: alone, or with their connection.
pub const ENTITIES_DISCONNECTED: &str = "disconnect_worker_entities_disconnected_total";
/// Seconds from receiving a delivery to settling it (ack or dead-letter).
pub const PROCESSING_SECONDS: &str = "disconnect_worker_processing_seconds";
/// Retries by operation: `process`, `relay`, `connect`, `migrate`, `fanout`.
pub const RETRIES: &str = "disconnect_worker_retries_total";
pub const BROKER_RECONNECTS: &str = "disconnect_worker_broker_reconnects_total";
pub const EVENTS_PUBLISHED: &str = "disconnect_worker_events_published_total";
pub const OUTBOX_PENDING: &str = "disconnect_worker_outbox_pending_events";
pub const OUTBOX_OLDEST_AGE: &str = "disconnect_worker_outbox_oldest_pending_age_seconds";
/// Events set aside because they cannot be published (`outbox set-aside
/// list`): sampled from the table, so every replica reports the same.
pub const OUTBOX_SET_ASIDE: &str = "disconnect_worker_outbox_set_aside_events";
/// Events this replica set aside.
pub const EVENTS_SET_ASIDE: &str = "disconnect_worker_events_set_aside_total";
pub const IN_FLIGHT: &str = "disconnect_worker_in_flight_requests";
/// Seconds from a request's publication (its AMQP `timestamp`, in whole
/// seconds) to the broker's confirm of its outcome event.
pub const PUBLISH_TO_EVENT_SECONDS: &str = "disconnect_worker_publish_to_event_seconds";
/// Always 1, with the version as a label.
pub const BUILD_INFO: &str = "disconnect_worker_build_info";
pub const POOL_SIZE: &str = "disconnect_worker_database_pool_size";
pub const POOL_IN_USE: &str = "disconnect_worker_database_pool_in_use";
pub const POOL_WAITING: &str = "disconnect_worker_database_pool_waiting";
pub const POOL_MAX_SIZE: &str = "disconnect_worker_database_pool_max_size";
/// Connections disconnected by company and client fan-outs.
pub const FANOUT_CONNECTIONS: &str = "disconnect_worker_fanout_connections_total";
/// Company and client requests finished, by outcome (`completed`,
/// `nothing_to_disconnect`).
pub const FANOUTS_FINISHED: &str = "disconnect_worker_fanouts_finished_total";
/// Rows deleted by retention, by table.
pub const RETENTION_DELETED: &str = "disconnect_worker_retention_deleted_rows_total";
/// 1 for the mode of the primary's replication (`db::replication::Mode`),
/// 0 for the others.
pub const DATABASE_REPLICATION: &str = "disconnect_worker_database_replication";
/// Standbys streaming from the primary.
pub const DATABASE_STANDBYS: &str = "disconnect_worker_database_standbys";
/// Waits on the network that reached their bound, by operation.
pub const TIMEOUTS: &str = "disconnect_worker_timeouts_total";

/// The `operation` label of [`TIMEOUTS`]: every wait on the network that
/// has a bound.
pub const TIMEOUT_OPERATIONS: [&str; 7] = [
    // Opening a Postgres connection (TCP, TLS, handshake).
    "database_connect",
    // Waiting for a pooled connection.
    "database_checkout",
    // One transaction, client side (the connection is then discarded).
    "database_transaction",
    // Opening a broker session on one address.
    "broker_connect",
    // A publisher confirm.
    "broker_confirm",
    // No frame from the broker for two heartbeat intervals.
    "broker_heartbeat",
    // Closing a session the worker gave up on, or cancelling its consumer.
    "broker_close",
];

/// Buckets for processing time: a commit takes milliseconds; retries during
/// an outage take seconds.
const PROCESSING_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Buckets for publish-to-event time: the publication time has whole
/// seconds only, so nothing finer than a second means much.
const PUBLISH_TO_EVENT_BUCKETS: [f64; 10] =
    [1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];

/// Install the process-wide recorder; the handle renders `/metrics`.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = webhooks::buckets(PrometheusBuilder::new())?
        .set_buckets_for_metric(
            Matcher::Full(PROCESSING_SECONDS.into()),
            &PROCESSING_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(PUBLISH_TO_EVENT_SECONDS.into()),
            &PUBLISH_TO_EVENT_BUCKETS,
        )?
        .install_recorder()?;
    describe();
    start_at_zero();
    webhooks::describe();
    gauge!(BUILD_INFO, "version" => crate::version::VERSION).set(1.0);
    Ok(handle)
}

/// Every counter series exists from the start, at 0: Prometheus's
/// `increase()` and `rate()` miss the first increment of a series that
/// appears with it, so an alert on the first dead letter would never fire.
fn start_at_zero() {
    let recorded = crate::domain::OutcomeKind::ALL.map(|kind| kind.as_str());
    for outcome in recorded
        .into_iter()
        .chain(["duplicate", "dead_lettered", "retried", "released"])
    {
        counter!(REQUESTS, "outcome" => outcome).absolute(0);
    }
    for outcome in ["completed", "nothing_to_disconnect"] {
        counter!(FANOUTS_FINISHED, "outcome" => outcome).absolute(0);
    }
    for table in RETENTION_TABLES {
        counter!(RETENTION_DELETED, "table" => table).absolute(0);
    }
    counter!(FANOUT_CONNECTIONS).absolute(0);
    for code in crate::domain::RejectionCode::ALL {
        counter!(DEAD_LETTERS, "code" => code.as_str()).absolute(0);
    }
    for reason in PUBLISH_FAILURES {
        counter!(DEAD_LETTER_FAILURES, "reason" => reason).absolute(0);
    }
    for operation in ["process", "relay", "connect", "migrate", "fanout"] {
        counter!(RETRIES, "operation" => operation).absolute(0);
    }
    for path in ["after_commit", "relay"] {
        counter!(EVENTS_PUBLISHED, "path" => path).absolute(0);
    }
    for operation in TIMEOUT_OPERATIONS {
        counter!(TIMEOUTS, "operation" => operation).absolute(0);
    }
    counter!(TOKENS_REVOKED).absolute(0);
    counter!(EVENTS_SET_ASIDE).absolute(0);
    counter!(ENTITIES_DISCONNECTED).absolute(0);
    counter!(BROKER_RECONNECTS).absolute(0);
}

/// Why a publish failed, as the `reason` label: `PublishError::reason`.
pub const PUBLISH_FAILURES: [&str; 4] = ["unroutable", "refused", "unconfirmed", "broker"];

/// The tables retention deletes from, as the `table` label.
pub const RETENTION_TABLES: [&str; 5] = [
    "access_tokens",
    "connections",
    "disconnect_requests",
    "disconnect_fanouts",
    "outbox_events",
];

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(REQUESTS, "Disconnect requests settled, by outcome.");
    describe_counter!(
        DEAD_LETTERS,
        "Bad requests dead-lettered, by rejection code."
    );
    describe_counter!(
        DEAD_LETTER_FAILURES,
        "Dead letters that could not be published (the request went back to its queue), by reason."
    );
    describe_counter!(TOKENS_REVOKED, "Access tokens revoked.");
    describe_counter!(
        ENTITIES_DISCONNECTED,
        "Entities disconnected, alone or with their connection."
    );
    describe_histogram!(
        PROCESSING_SECONDS,
        Unit::Seconds,
        "Time from delivery to settlement."
    );
    describe_counter!(RETRIES, "Retries after a failure, by operation.");
    describe_counter!(
        BROKER_RECONNECTS,
        "Broker sessions re-opened after losing one."
    );
    describe_counter!(
        EVENTS_PUBLISHED,
        "Outcome events confirmed by the broker, by path: after_commit or relay."
    );
    describe_gauge!(OUTBOX_PENDING, "Events committed but not yet published.");
    describe_gauge!(
        OUTBOX_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest unpublished event."
    );
    describe_gauge!(
        OUTBOX_SET_ASIDE,
        "Events set aside because they cannot be published (outbox set-aside list)."
    );
    describe_counter!(
        EVENTS_SET_ASIDE,
        "Events this replica set aside because they cannot be published."
    );
    describe_gauge!(IN_FLIGHT, "Requests being processed now.");
    describe_histogram!(
        PUBLISH_TO_EVENT_SECONDS,
        Unit::Seconds,
        "Time from a request's publication (AMQP timestamp, whole seconds) to its event's confirm."
    );
    describe_counter!(
        FANOUT_CONNECTIONS,
        "Connections disconnected by company and client requests."
    );
    describe_counter!(
        FANOUTS_FINISHED,
        "Company and client requests finished, by outcome."
    );
    describe_counter!(RETENTION_DELETED, "Rows deleted by retention, by table.");
    describe_counter!(
        TIMEOUTS,
        "Waits on the network that reached their bound, by operation."
    );
    describe_gauge!(BUILD_INFO, "The running version (always 1).");
    describe_gauge!(POOL_SIZE, "Postgres connections open in the pool.");
    describe_gauge!(POOL_IN_USE, "Postgres connections in use.");
    describe_gauge!(
        DATABASE_REPLICATION,
        "1 for the mode of the primary's replication (synchronous, waiting_for_standby, asynchronous, no_standby), 0 for the others."
    );
    describe_gauge!(DATABASE_STANDBYS, "Standbys streaming from the primary.");
    describe_gauge!(POOL_WAITING, "Tasks waiting for a Postgres connection.");
    describe_gauge!(
        POOL_MAX_SIZE,
        "Largest number of Postgres connections (DATABASE_POOL_SIZE)."
    );
}

pub fn publish_to_event(elapsed: Duration) {
    histogram!(PUBLISH_TO_EVENT_SECONDS).record(elapsed.as_secs_f64());
}

/// The pool's state, sampled when `/metrics` is scraped.
pub fn database_pool(status: deadpool::Status) {
    gauge!(POOL_SIZE).set(status.size as f64);
    gauge!(POOL_IN_USE).set(status.size.saturating_sub(status.available) as f64);
    gauge!(POOL_WAITING).set(status.waiting as f64);
    gauge!(POOL_MAX_SIZE).set(status.max_size as f64);
}

/// The primary's replication, read every minute.
pub fn database_replication(mode: crate::db::replication::Mode, standbys: i64) {
    for each in crate::db::replication::Mode::ALL {
        let value = if each == mode { 1.0 } else { 0.0 };
        gauge!(DATABASE_REPLICATION, "mode" => each.as_str()).set(value);
    }
    gauge!(DATABASE_STANDBYS).set(standbys as f64);
}

pub fn request_settled(outcome: &'static str, elapsed: Duration) {
    counter!(REQUESTS, "outcome" => outcome).increment(1);
    histogram!(PROCESSING_SECONDS).record(elapsed.as_secs_f64());
}

pub fn fanout_chunk(connections: usize, tokens: usize, entities: usize) {
    counter!(FANOUT_CONNECTIONS).increment(connections as u64);
    tokens_revoked(tokens);
    entities_disconnected(entities);
}

pub fn entities_disconnected(count: usize) {
    counter!(ENTITIES_DISCONNECTED).increment(count as u64);
}

pub fn fanout_finished(outcome: &'static str) {
    counter!(FANOUTS_FINISHED, "outcome" => outcome).increment(1);
}

pub fn retention_deleted(table: &'static str, rows: usize) {
    counter!(RETENTION_DELETED, "table" => table).increment(rows as u64);
}

pub fn dead_lettered(code: &'static str) {
    counter!(DEAD_LETTERS, "code" => code).increment(1);
}

pub fn dead_letter_failed(reason: &'static str) {
    counter!(DEAD_LETTER_FAILURES, "reason" => reason).increment(1);
}

pub fn tokens_revoked(count: usize) {
    counter!(TOKENS_REVOKED).increment(count as u64);
}

pub fn retried(operation: &'static str) {
    counter!(RETRIES, "operation" => operation).increment(1);
}

/// `future`'s output, or `Err` once `limit` has passed: a bounded wait on
/// the network, its timeout counted under `operation` (one of
/// [`TIMEOUT_OPERATIONS`]).
pub async fn within<F: std::future::Future>(
    operation: &'static str,
    limit: Duration,
    future: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    let result = tokio::time::timeout(limit, future).await;
    if result.is_err() {
        timed_out(operation);
    }
    result
}

/// A wait on the network reached its bound; `operation` is one of
/// [`TIMEOUT_OPERATIONS`].
pub fn timed_out(operation: &'static str) {
    debug_assert!(TIMEOUT_OPERATIONS.contains(&operation), "{operation}");
    counter!(TIMEOUTS, "operation" => operation).increment(1);
}

pub fn broker_reconnected() {
    counter!(BROKER_RECONNECTS).increment(1);
}

/// `path`: "after_commit" (the handler) or "relay" (a failed or orphaned
/// event, published late).
pub fn events_published(path: &'static str, count: usize) {
    counter!(EVENTS_PUBLISHED, "path" => path).increment(count as u64);
}

pub fn outbox_backlog(pending: i64, oldest_age: Duration, set_aside: i64) {
    gauge!(OUTBOX_PENDING).set(pending as f64);
    gauge!(OUTBOX_OLDEST_AGE).set(oldest_age.as_secs_f64());
    gauge!(OUTBOX_SET_ASIDE).set(set_aside as f64);
}

pub fn events_set_aside(count: usize) {
    counter!(EVENTS_SET_ASIDE).increment(count as u64);
}

/// Counts requests in flight for as long as it lives.
pub struct InFlight(usize);

impl InFlight {
    pub fn start(requests: usize) -> Self {
        gauge!(IN_FLIGHT).increment(requests as f64);
        Self(requests)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        gauge!(IN_FLIGHT).decrement(self.0 as f64);
    }
}
