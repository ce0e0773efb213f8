//! Handling one batch of deliveries: decode each, settle them all through
//! the processor, then carry out each settlement. One tracing span per
//! delivery, the child of its producer's span when the message carries a
//! `traceparent`, and one span for the batch, linked to every producer; the
//! processor never sees a lapin delivery.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use lapin::message::Delivery;
use lapin::Channel;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::acks::{CoalescedAcks, DeliveryTag};
use super::dead_letter::DeadLettering;
use super::process::{BatchProcessor, Decoded};
use super::records::PgRecords;
use super::settle::settle_alone;
use super::settlement::Settlement;
use crate::domain::DisconnectRequest;
use crate::observability::metrics;
use crate::service::Processed;
use crate::telemetry::propagation;

/// What every batch handler shares.
pub struct HandlerContext {
    pub processor: BatchProcessor<PgRecords>,
    pub max_request_bytes: usize,
    pub queue: String,
    pub dead_letters: DeadLettering,
}

/// A delivery as received, with when it was received.
pub struct Received {
    pub delivery: Delivery,
    pub at: Instant,
}

/// A delivery's span, and the `traceparent` of what is published for it.
struct Traced {
    span: tracing::Span,
    traceparent: Option<String>,
}

pub async fn handle_batch(
    context: Arc<HandlerContext>,
    channel: Channel,
    acks: Arc<CoalescedAcks>,
    batch: Vec<Received>,
) {
    let _in_flight = metrics::InFlight::start(batch.len());
    let batch_span = batch_span(&context.queue, &batch);
    let traced: Vec<Traced> = batch
        .iter()
        .map(|received| {
            let span = delivery_span(&context.queue, &received.delivery, &batch_span);
            let traceparent =
                propagation::continue_trace(&span, received.delivery.properties.headers().as_ref());
            Traced { span, traceparent }
        })
        .collect();
    let decoded = batch
        .iter()
        .zip(&traced)
        .map(|(received, traced)| decode(&received.delivery, traced, context.max_request_bytes))
        .collect();
    let settlements = context
        .processor
        .settle(decoded)
        .instrument(batch_span.clone())
        .await;

    // The rare settlements first, each on its own, then the acks together:
    // a delivery still waiting for its own frame stops a `multiple` ack, so
    // settled first it lets the batch's ack reach past it in one frame.
    let mut acked = Vec::with_capacity(batch.len());
    for ((received, traced), settlement) in batch.iter().zip(&traced).zip(&settlements) {
        traced.span.in_scope(|| log_settlement(settlement));
        let tag = received.delivery.delivery_tag;
        if matches!(settlement, Settlement::Ack(_)) {
            acked.push((tag, settlement, received.at));
            continue;
        }
        let settled = settle_alone(
            &channel,
            &context.dead_letters,
            &received.delivery,
            settlement,
            traced.traceparent.as_deref(),
        )
        .instrument(traced.span.clone())
        .await;
        if settled.sent {
            acks.settled_alone(tag);
        }
        record_metrics(settlement, settled.done, received.at);
    }
    if acked.is_empty() {
        return;
    }
    let done = ack(&acks, &acked).instrument(batch_span).await;
    for (_, settlement, received_at) in acked {
        record_metrics(settlement, done.unwrap_or(settlement.label()), received_at);
    }
}

/// Acknowledge the batch's committed deliveries. Returns the metrics label
/// that replaces their own: `released` if the channel is gone (the broker
/// redelivers them, and they are found done when they come back).
async fn ack(
    acks: &CoalescedAcks,
    acked: &[(DeliveryTag, &Settlement, Instant)],
) -> Option<&'static str> {
    if !acks.connected() {
        tracing::debug!("the session is closed; the broker redelivers the requests");
        return Some(Settlement::Release.label());
    }
    let tags: Vec<DeliveryTag> = acked.iter().map(|(tag, _, _)| *tag).collect();
    if let Err(error) = acks.ack(&tags).await {
        tracing::warn!(error = %error, batch.size = tags.len(),
            "could not acknowledge a batch; the broker will redeliver it");
    }
    None
}

/// The batch's span (OpenTelemetry messaging conventions): a consumer
/// `process` span linked to the span of every producer that sent a
/// `traceparent`.
fn batch_span(queue: &str, batch: &[Received]) -> tracing::Span {
    let span = tracing::info_span!(
        "batch",
        otel.name = %format_args!("process {queue}"),
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.subscription.name = %queue,
        messaging.batch.message_count = batch.len(),
    );
    for received in batch {
        if let Some(producer) =
            propagation::producer_span(received.delivery.properties.headers().as_ref())
        {
            span.add_link(producer);
        }
    }
    span
}

/// A delivery's span (OpenTelemetry messaging conventions, plus our
/// request and connection ids; never a token). Under the batch's span in
/// the logs; in the trace, under the producer's span when there is one.
fn delivery_span(queue: &str, delivery: &Delivery, batch: &tracing::Span) -> tracing::Span {
    let properties = &delivery.properties;
    tracing::info_span!(
        parent: batch,
        "delivery",
        otel.name = %format_args!("process {queue}"),
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = %delivery.exchange,
        messaging.destination.subscription.name = %queue,
        messaging.rabbitmq.destination.routing_key = %delivery.routing_key,
        messaging.rabbitmq.message.delivery_tag = delivery.delivery_tag,
        messaging.message.id = properties.message_id().as_ref().map(|id| id.as_str()),
        messaging.message.body.size = delivery.data.len(),
        delivery.redelivered = delivery.redelivered,
        request.id = tracing::field::Empty,
        connection.id = tracing::field::Empty,
    )
}

fn decode(delivery: &Delivery, traced: &Traced, max_bytes: usize) -> Decoded {
    let properties = &delivery.properties;
    let content_type = properties
        .content_type()
        .as_ref()
        .map(|value| value.as_str());
    let mut decoded = DisconnectRequest::decode(&delivery.data, content_type, max_bytes);
    if let Ok(request) = &mut decoded {
        traced
            .span
            .record("request.id", tracing::field::display(request.request_id));
        request.provenance.traceparent = traced.traceparent.clone();
        request.provenance.published_at = properties
            .timestamp()
            .and_then(|seconds| i64::try_from(seconds).ok())
            .and_then(|seconds| DateTime::<Utc>::from_timestamp(seconds, 0));
        // RabbitMQ refuses a message whose user_id is not the publishing
        // connection's user, so this names who published it.
        request.provenance.publisher = properties
            .user_id()
            .as_ref()
            .map(|user| user.as_str().to_string());
    }
    decoded
}

/// One line per delivery, in its span. Failures were logged where they were
/// handled, by the processor.
fn log_settlement(settlement: &Settlement) {
    match settlement {
        Settlement::Ack(processed) => {
            if let Processed::Recorded(outcome) = processed {
                if let Some(connection_id) = outcome.connection_id() {
                    tracing::Span::current()
                        .record("connection.id", tracing::field::display(connection_id));
                }
            }
            tracing::info!(
                outcome = processed.label(),
                duplicate = matches!(processed, Processed::AlreadyProcessed(_)),
                "request processed"
            );
        }
        // Logged by code and detail only: never the body, which may hold a token.
        Settlement::DeadLetter(rejection) => tracing::warn!(
            rejection.code = rejection.code.as_str(),
            rejection.detail = %rejection.detail,
            "rejected a bad request; dead-lettering it"
        ),
        Settlement::Retry => {}
        Settlement::Release => tracing::debug!("request not processed; released to the queue"),
    }
}

fn record_metrics(settlement: &Settlement, done: &'static str, received_at: Instant) {
    match settlement {
        Settlement::Ack(Processed::Recorded(outcome)) => {
            metrics::tokens_revoked(usize::try_from(outcome.revoked_tokens()).unwrap_or_default());
            metrics::entities_disconnected(outcome.disconnected_entities().len());
        }
        Settlement::DeadLetter(rejection) if done == settlement.label() => {
            metrics::dead_lettered(rejection.code.as_str());
        }
        _ => {}
    }
    metrics::request_settled(done, received_at.elapsed());
}
