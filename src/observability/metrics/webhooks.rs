//! The webhook dispatcher's metrics (`deliver`).

use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};

/// Events taken from the dispatcher's queue, by outcome: `routed` (a
/// delivery per endpoint recorded), `no_endpoint` (the application has no
/// enabled endpoint for the type), `no_application` (an unknown token's or
/// an unauthorized publisher's rejection), `unreadable`.
pub const EVENTS: &str = "disconnect_worker_webhook_events_total";
/// Attempts by result: `delivered` (2xx), `gone` (410), `redirect`,
/// `http_error`, `timeout`, `connect_error`, `refused_address`.
pub const ATTEMPTS: &str = "disconnect_worker_webhook_attempts_total";
/// Deliveries finished, by outcome: `delivered`, `failed` (no attempt
/// left, or 410).
pub const DELIVERIES: &str = "disconnect_worker_webhook_deliveries_total";
/// Seconds one attempt took, to the receiver's answer or the timeout.
pub const ATTEMPT_SECONDS: &str = "disconnect_worker_webhook_attempt_seconds";
/// Seconds from taking an event in to the receiver's 2xx, retries included.
pub const DELIVERY_SECONDS: &str = "disconnect_worker_webhook_delivery_seconds";
/// Pending deliveries of enabled endpoints, by `state`: `due` (waiting for
/// a free slot) or `scheduled` (waiting for their retry time).
pub const BACKLOG: &str = "disconnect_worker_webhook_backlog_deliveries";
/// Seconds the oldest due delivery has waited past its time.
pub const OLDEST_DUE: &str = "disconnect_worker_webhook_oldest_due_seconds";
/// Endpoints disabled, sampled from the table (every replica the same).
pub const ENDPOINTS_DISABLED: &str = "disconnect_worker_webhook_endpoints_disabled";
/// Endpoints this replica disabled, by reason: `gone`, `failing`.
pub const ENDPOINTS_DISABLED_TOTAL: &str = "disconnect_worker_webhook_endpoints_disabled_total";
/// Attempts in flight in this replica.
pub const IN_FLIGHT: &str = "disconnect_worker_webhook_in_flight_attempts";

pub const EVENT_OUTCOMES: [&str; 4] = ["routed", "no_endpoint", "no_application", "unreadable"];
pub const ATTEMPT_RESULTS: [&str; 7] = [
    "delivered",
    "gone",
    "redirect",
    "http_error",
    "timeout",
    "connect_error",
    "refused_address",
];

/// A receiver answers in milliseconds, or not before the timeout.
const ATTEMPT_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0,
];
/// First attempts take milliseconds; retries minutes to hours.
const DELIVERY_BUCKETS: [f64; 16] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0, 1800.0, 7200.0, 36_000.0,
    100_000.0,
];

pub(super) fn buckets(builder: PrometheusBuilder) -> Result<PrometheusBuilder, BuildError> {
    builder
        .set_buckets_for_metric(Matcher::Full(ATTEMPT_SECONDS.into()), &ATTEMPT_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(DELIVERY_SECONDS.into()), &DELIVERY_BUCKETS)
}

pub(super) fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        EVENTS,
        "Events taken in by the webhook dispatcher, by outcome."
    );
    describe_counter!(ATTEMPTS, "Webhook attempts, by result.");
    describe_counter!(DELIVERIES, "Webhook deliveries finished, by outcome.");
    describe_histogram!(
        ATTEMPT_SECONDS,
        Unit::Seconds,
        "Time of one webhook attempt."
    );
    describe_histogram!(
        DELIVERY_SECONDS,
        Unit::Seconds,
        "Time from taking an event in to the receiver's 2xx."
    );
    describe_gauge!(
        BACKLOG,
        "Pending webhook deliveries of enabled endpoints, by state."
    );
    describe_gauge!(
        OLDEST_DUE,
        Unit::Seconds,
        "Wait past its time of the oldest due delivery."
    );
    describe_gauge!(ENDPOINTS_DISABLED, "Webhook endpoints disabled.");
    describe_counter!(
        ENDPOINTS_DISABLED_TOTAL,
        "Endpoints this replica disabled, by reason."
    );
    describe_gauge!(IN_FLIGHT, "Webhook attempts in flight.");
}

/// Every counter series at 0 from the start (as the worker's): called by
/// `deliver` only, so the worker's own metrics carry no webhook series.
pub fn start_at_zero() {
    for outcome in EVENT_OUTCOMES {
        counter!(EVENTS, "outcome" => outcome).absolute(0);
    }
    for result in ATTEMPT_RESULTS {
        counter!(ATTEMPTS, "result" => result).absolute(0);
    }
    for outcome in ["delivered", "failed"] {
        counter!(DELIVERIES, "outcome" => outcome).absolute(0);
    }
    counter!(super::RETENTION_DELETED, "table" => "webhook_messages").absolute(0);
    for reason in ["gone", "failing"] {
        counter!(ENDPOINTS_DISABLED_TOTAL, "reason" => reason).absolute(0);
    }
}

pub fn event_taken_in(outcome: &'static str) {
    counter!(EVENTS, "outcome" => outcome).increment(1);
}

pub fn attempted(result: &'static str, took: Duration) {
    counter!(ATTEMPTS, "result" => result).increment(1);
    histogram!(ATTEMPT_SECONDS).record(took.as_secs_f64());
}

pub fn delivered(since_taken_in: Duration) {
    counter!(DELIVERIES, "outcome" => "delivered").increment(1);
    histogram!(DELIVERY_SECONDS).record(since_taken_in.as_secs_f64());
}

pub fn failed() {
    counter!(DELIVERIES, "outcome" => "failed").increment(1);
}

pub fn endpoint_disabled(reason: &'static str) {
    counter!(ENDPOINTS_DISABLED_TOTAL, "reason" => reason).increment(1);
}

pub fn backlog(due: i64, pending: i64, oldest_due_secs: f64, disabled: i64) {
    gauge!(BACKLOG, "state" => "due").set(due as f64);
    gauge!(BACKLOG, "state" => "scheduled").set((pending - due).max(0) as f64);
    gauge!(OLDEST_DUE).set(oldest_due_secs);
    gauge!(ENDPOINTS_DISABLED).set(disabled as f64);
}

pub fn in_flight(attempts: usize) {
    gauge!(IN_FLIGHT).set(attempts as f64);
}
