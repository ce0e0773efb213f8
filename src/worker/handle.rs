//! Handling one batch of deliveries: decode each, settle them all through
//! the processor, then carry out each settlement. One tracing span per
//! delivery; the processor never sees a lapin delivery.

use std::sync::Arc;
use std::time::Instant;

use lapin::message::Delivery;
use lapin::Channel;
use tracing::Instrument;

use super::process::{BatchProcessor, Decoded};
use super::records::PgRecords;
use super::settle::settle;
use super::settlement::Settlement;
use crate::domain::{DisconnectRequest, Outcome};
use crate::observability::metrics;
use crate::service::Processed;

/// What every batch handler shares.
pub struct HandlerContext {
    pub processor: BatchProcessor<PgRecords>,
    pub max_request_bytes: usize,
    pub dead_letter_exchange: String,
}

/// A delivery as received, with when it was received.
pub struct Received {
    pub delivery: Delivery,
    pub at: Instant,
}

pub async fn handle_batch(context: Arc<HandlerContext>, channel: Channel, batch: Vec<Received>) {
    let _in_flight = metrics::InFlight::start(batch.len());
    let spans: Vec<tracing::Span> = batch
        .iter()
        .map(|received| delivery_span(&received.delivery))
        .collect();
    let decoded = batch
        .iter()
        .zip(&spans)
        .map(|(received, span)| decode(&received.delivery, span, context.max_request_bytes))
        .collect();
    let settlements = context.processor.settle(decoded).await;
    for ((received, span), settlement) in batch.iter().zip(spans).zip(&settlements) {
        async {
            log_settlement(settlement);
            let done = settle(
                &channel,
                &context.dead_letter_exchange,
                &received.delivery,
                settlement,
            )
            .await;
            record_metrics(settlement, done, received.at);
        }
        .instrument(span)
        .await;
    }
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

fn decode(delivery: &Delivery, span: &tracing::Span, max_bytes: usize) -> Decoded {
    let content_type = delivery
        .properties
        .content_type()
        .as_ref()
        .map(|value| value.as_str());
    let decoded = DisconnectRequest::decode(&delivery.data, content_type, max_bytes);
    if let Ok(request) = &decoded {
        span.record("request.id", tracing::field::display(request.request_id));
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
                outcome = processed.kind().as_str(),
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
        Settlement::Ack(Processed::Recorded(Outcome::Disconnected {
            revoked_token_ids, ..
        })) => metrics::tokens_revoked(revoked_token_ids.len()),
        Settlement::DeadLetter(rejection) if done == settlement.label() => {
            metrics::dead_lettered(rejection.code.as_str());
        }
        _ => {}
    }
    metrics::request_settled(done, received_at.elapsed());
}
