//! Handling a batch of deliveries: decode each, dead-letter the bad ones,
//! process the valid ones in one transaction, and acknowledge each only after
//! that commit. A batch that fails for a reason other than an outage is split,
//! so one request the database refuses does not hold back its neighbours.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use backon::Retryable;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::Channel;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::dead_letter::dead_letter;
use super::WorkerSettings;
use crate::broker::Topology;
use crate::db::{DbError, DbPool};
use crate::domain::{DisconnectRequest, Outcome, OutcomeEvent};
use crate::observability::metrics;
use crate::outbox::Outbox;
use crate::service::{record_disconnects, Processed};

/// What every batch handler shares.
pub struct HandlerContext {
    pub pool: DbPool,
    pub settings: WorkerSettings,
    pub topology: Topology,
    /// Publishes each batch's events once it has committed.
    pub outbox: Arc<Outbox>,
    /// Cancelled on shutdown: outage retries stop and the deliveries go back.
    pub shutdown: CancellationToken,
}

/// A delivery as received, with when it was received.
pub struct Received {
    pub delivery: Delivery,
    pub at: Instant,
}

/// A decoded delivery, with its tracing span (one per delivery).
struct Pending {
    delivery: Delivery,
    at: Instant,
    request: DisconnectRequest,
    span: tracing::Span,
    _in_flight: metrics::InFlight,
}

fn delivery_span(delivery: &Delivery) -> tracing::Span {
    tracing::info_span!(
        "delivery",
        delivery.tag = delivery.delivery_tag,
        delivery.redelivered = delivery.redelivered,
        request.id = tracing::field::Empty,
        connection.id = tracing::field::Empty,
    )
}

pub async fn handle_batch(
    context: Arc<HandlerContext>,
    publish_channel: Channel,
    batch: Vec<Received>,
) {
    let mut pending = Vec::with_capacity(batch.len());
    for received in batch {
        let span = delivery_span(&received.delivery);
        let in_flight = metrics::InFlight::start();
        if let Some(request) = decode_or_dead_letter(&context, &publish_channel, &received)
            .instrument(span.clone())
            .await
        {
            span.record("request.id", tracing::field::display(request.request_id));
            pending.push(Pending {
                delivery: received.delivery,
                at: received.at,
                request,
                span,
                _in_flight: in_flight,
            });
        }
    }
    if pending.is_empty() {
        return;
    }
    let requests: Vec<DisconnectRequest> =
        pending.iter().map(|item| item.request.clone()).collect();
    match process_with_retries(&context, &requests).await {
        Ok(processed) => settle_committed(&context, &publish_channel, pending, processed).await,
        Err(error)
            if !error.is_transient() && pending.len() > 1 && !context.shutdown.is_cancelled() =>
        {
            tracing::warn!(error = %error, batch.size = pending.len(),
                "a batch failed; processing its requests one by one");
            for item in pending {
                match process_with_retries(&context, std::slice::from_ref(&item.request)).await {
                    Ok(processed) => {
                        settle_committed(&context, &publish_channel, vec![item], processed).await;
                    }
                    Err(error) => return_to_queue(item, &error).await,
                }
            }
        }
        Err(error) => {
            for item in pending {
                return_to_queue(item, &error).await;
            }
        }
    }
}

/// The request, or `None` after dead-lettering a bad delivery.
async fn decode_or_dead_letter(
    context: &HandlerContext,
    publish_channel: &Channel,
    received: &Received,
) -> Option<DisconnectRequest> {
    let delivery = &received.delivery;
    let content_type = delivery
        .properties
        .content_type()
        .as_ref()
        .map(|value| value.as_str());
    match DisconnectRequest::decode(
        &delivery.data,
        content_type,
        context.settings.max_request_bytes,
    ) {
        Ok(request) => Some(request),
        Err(rejection) => {
            // Logged by code and detail only: never the body, which may hold a token.
            tracing::warn!(rejection.code = rejection.code.as_str(), rejection.detail = %rejection.detail,
                "rejected a bad request; dead-lettering it");
            dead_letter(publish_channel, &context.topology, delivery, &rejection).await;
            metrics::dead_lettered(rejection.code.as_str());
            metrics::request_settled("dead_lettered", received.at.elapsed());
            None
        }
    }
}

/// Publish the events of a committed batch and acknowledge its deliveries,
/// both at once: neither waits for the other's round trip.
async fn settle_committed(
    context: &HandlerContext,
    publish_channel: &Channel,
    pending: Vec<Pending>,
    processed: Vec<Processed>,
) {
    let events: Vec<OutcomeEvent> = processed
        .iter()
        .filter_map(|processed| match processed {
            Processed::Recorded { event, .. } => Some(event.clone()),
            Processed::AlreadyProcessed { .. } => None,
        })
        .collect();
    let acks = async {
        for (item, processed) in pending.into_iter().zip(&processed) {
            settle_processed(item, processed).await;
        }
    };
    tokio::join!(
        context.outbox.publish_committed(publish_channel, events),
        acks
    );
}

/// Acknowledge a request whose outcome is committed: from here on a lost ack
/// only means a redelivery, which finds the request already processed.
async fn settle_processed(item: Pending, processed: &Processed) {
    let entered = item.span.enter();
    if let Some(connection_id) = connection_of(processed) {
        item.span
            .record("connection.id", tracing::field::display(connection_id));
    }
    tracing::info!(
        outcome = processed.outcome_label(),
        duplicate = matches!(processed, Processed::AlreadyProcessed { .. }),
        "request processed"
    );
    drop(entered);
    if let Err(error) = item
        .delivery
        .acker
        .ack(BasicAckOptions::default())
        .instrument(item.span.clone())
        .await
    {
        let _entered = item.span.enter();
        tracing::warn!(error = %error, "could not acknowledge a processed request; it will be redelivered and found done");
    }
    record_outcome(processed, item.at.elapsed());
}

/// Not committed: hand it back. The queue's delivery limit dead-letters a
/// message that fails every time.
async fn return_to_queue(item: Pending, error: &DbError) {
    let entered = item.span.enter();
    tracing::error!(error = %error, transient = error.is_transient(),
        "could not process the request; returning it to the queue");
    drop(entered);
    let requeue = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    if let Err(error) = item.delivery.acker.nack(requeue).await {
        let _entered = item.span.enter();
        tracing::warn!(error = %error, "could not return the request; the broker redelivers it when the channel closes");
    }
    metrics::request_settled("requeued", item.at.elapsed());
}

fn record_outcome(processed: &Processed, elapsed: std::time::Duration) {
    match processed {
        Processed::Recorded { outcome, .. } => {
            if let Outcome::Disconnected {
                revoked_token_ids, ..
            } = outcome
            {
                metrics::tokens_revoked(revoked_token_ids.len());
            }
            metrics::request_settled(outcome.as_str(), elapsed);
        }
        Processed::AlreadyProcessed { .. } => metrics::request_settled("duplicate", elapsed),
    }
}

fn connection_of(processed: &Processed) -> Option<uuid::Uuid> {
    match processed {
        Processed::Recorded { outcome, .. } => outcome.connection_id(),
        Processed::AlreadyProcessed { .. } => None,
    }
}

/// Outages (database unreachable, serialization failures) are retried until
/// they end or the worker stops; other errors `max_attempts` times in all.
async fn process_with_retries(
    context: &HandlerContext,
    requests: &[DisconnectRequest],
) -> Result<Vec<Processed>, DbError> {
    let other_failures = AtomicUsize::new(0);
    let attempt = || async {
        let mut conn = context.pool.get().await?;
        Ok(record_disconnects(&mut conn, requests).await?)
    };
    attempt
        .retry(context.settings.retry.until_recovered())
        .when(|error: &DbError| {
            if context.shutdown.is_cancelled() {
                return false;
            }
            if error.is_transient() {
                return true;
            }
            other_failures.fetch_add(1, Ordering::Relaxed) + 1 < context.settings.retry.max_attempts
        })
        .notify(|error, delay| {
            metrics::retried("process");
            tracing::warn!(error = %error, batch.size = requests.len(), retry_in_ms = delay.as_millis() as u64,
                "processing failed; retrying");
        })
        .await
}
