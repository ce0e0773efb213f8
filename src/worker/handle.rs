//! Handling one delivery: decode it, then either dead-letter it (bad input)
//! or process it in one transaction and acknowledge it after the commit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use backon::Retryable;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::Channel;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::dead_letter::dead_letter;
use super::WorkerSettings;
use crate::broker::Topology;
use crate::db::{DbError, DbPool};
use crate::domain::{DisconnectRequest, Outcome};
use crate::observability::metrics;
use crate::service::{record_disconnect, Processed};

/// What every delivery handler shares.
pub struct HandlerContext {
    pub pool: DbPool,
    pub settings: WorkerSettings,
    pub topology: Topology,
    /// Woken after each commit so the relay publishes the event at once.
    pub outbox_wakeup: Arc<Notify>,
    /// Cancelled on shutdown: outage retries stop and the delivery goes back.
    pub shutdown: CancellationToken,
}

pub async fn handle_delivery(
    context: Arc<HandlerContext>,
    publish_channel: Channel,
    delivery: Delivery,
) {
    let span = tracing::info_span!(
        "delivery",
        delivery.tag = delivery.delivery_tag,
        delivery.redelivered = delivery.redelivered,
        request.id = tracing::field::Empty,
        connection.id = tracing::field::Empty,
    );
    handle(&context, &publish_channel, delivery)
        .instrument(span)
        .await;
}

async fn handle(context: &HandlerContext, publish_channel: &Channel, delivery: Delivery) {
    let _in_flight = metrics::InFlight::start();
    let received = Instant::now();
    let content_type = delivery
        .properties
        .content_type()
        .as_ref()
        .map(|value| value.as_str());
    let request = match DisconnectRequest::decode(
        &delivery.data,
        content_type,
        context.settings.max_request_bytes,
    ) {
        Ok(request) => request,
        Err(rejection) => {
            // Logged by code and detail only: never the body, which may hold a token.
            tracing::warn!(rejection.code = rejection.code.as_str(), rejection.detail = %rejection.detail,
                "rejected a bad request; dead-lettering it");
            dead_letter(publish_channel, &context.topology, &delivery, &rejection).await;
            metrics::dead_lettered(rejection.code.as_str());
            metrics::request_settled("dead_lettered", received.elapsed());
            return;
        }
    };
    tracing::Span::current().record("request.id", tracing::field::display(request.request_id));
    match process_with_retries(context, &request).await {
        Ok(processed) => {
            if let Some(connection_id) = connection_of(&processed) {
                tracing::Span::current()
                    .record("connection.id", tracing::field::display(connection_id));
            }
            // The outcome is committed: from here on a lost ack only means a
            // redelivery, which finds the request already processed.
            context.outbox_wakeup.notify_one();
            tracing::info!(
                outcome = processed.outcome_label(),
                duplicate = matches!(processed, Processed::AlreadyProcessed { .. }),
                "request processed"
            );
            if let Err(error) = delivery.acker.ack(BasicAckOptions::default()).await {
                tracing::warn!(error = %error, "could not acknowledge a processed request; it will be redelivered and found done");
            }
            record_outcome(&processed, received.elapsed());
        }
        Err(error) => {
            // Not committed: hand it back. The queue's delivery limit
            // dead-letters a message that fails every time.
            tracing::error!(error = %error, transient = error.is_transient(),
                "could not process the request; returning it to the queue");
            let requeue = BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            };
            if let Err(error) = delivery.acker.nack(requeue).await {
                tracing::warn!(error = %error, "could not return the request; the broker redelivers it when the channel closes");
            }
            metrics::request_settled("requeued", received.elapsed());
        }
    }
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
    request: &DisconnectRequest,
) -> Result<Processed, DbError> {
    let other_failures = AtomicUsize::new(0);
    let attempt = || async {
        let mut conn = context.pool.get().await?;
        Ok(record_disconnect(&mut conn, request).await?)
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
            tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "processing failed; retrying");
        })
        .await
}
