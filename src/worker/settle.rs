//! The one place a [`Settlement`] other than an ack becomes an AMQP method
//! on a delivery. Acks go out per batch, coalesced: see `acks`.

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use lapin::Channel;

use super::dead_letter::{self, DeadLettering};
use super::settlement::Settlement;
use crate::broker::publish::PublishError;
use crate::observability::metrics;

/// What was done with a delivery settled on its own.
pub struct SettledAlone {
    /// For the metrics: the settlement's own label, or `released` when a
    /// dead letter could not be published.
    pub done: &'static str,
    /// Whether the delivery's settling frame was sent. Until it is, an ack
    /// of a later delivery must not be coalesced past it.
    pub sent: bool,
}

/// Settle a delivery whose settlement is not a plain ack (those go out per
/// batch, through `CoalescedAcks`).
pub async fn settle_alone(
    channel: &Channel,
    dead_letters: &DeadLettering,
    delivery: &Delivery,
    settlement: &Settlement,
    traceparent: Option<&str>,
) -> SettledAlone {
    if !channel.status().connected() {
        // The session is gone (lost, or closed because the database cannot
        // be reached): the broker has requeued the delivery already, and a
        // processed request is found done when it comes back.
        tracing::debug!("the session is closed; the broker redelivers the request");
        return SettledAlone {
            done: Settlement::Release.label(),
            sent: false,
        };
    }
    let (done, result) = match settlement {
        Settlement::Ack(_) => (
            settlement.label(),
            delivery.acker.ack(BasicAckOptions::default()).await,
        ),
        Settlement::DeadLetter(rejection) => {
            let published =
                dead_letter::publish(channel, dead_letters, delivery, rejection, traceparent).await;
            match published {
                Ok(()) => (
                    settlement.label(),
                    delivery.acker.ack(BasicAckOptions::default()).await,
                ),
                Err(error) => {
                    metrics::dead_letter_failed(error.reason());
                    match error {
                        // No queue took the copy (the dead-letter queue or
                        // its binding is gone): that lasts until an operator
                        // fixes it, so the request goes back counted, and
                        // at its delivery limit RabbitMQ's own
                        // dead-lettering (at-least-once) holds it in the
                        // queue until the route exists again, rather than
                        // this worker taking it back at once, forever.
                        PublishError::Unroutable { .. } => {
                            tracing::error!(error = %error,
                                "could not dead-letter a bad request: no queue took its copy; \
                                 returning it to the queue, counted against its delivery limit");
                            (Settlement::Retry.label(), reject(delivery).await)
                        }
                        // Broker trouble, not the request's: it was not
                        // dead-lettered, so it goes back uncounted.
                        _ => {
                            tracing::error!(error = %error,
                                "could not dead-letter a bad request; returning it to the queue");
                            (Settlement::Release.label(), release(delivery).await)
                        }
                    }
                }
            }
        }
        // Counts against the delivery limit: see `Settlement::Retry`.
        Settlement::Retry => (settlement.label(), reject(delivery).await),
        Settlement::Release => (settlement.label(), release(delivery).await),
    };
    if let Err(error) = &result {
        // The channel is gone; the broker returns the delivery to the queue
        // itself, and a processed request is found done when it comes back.
        tracing::warn!(error = %error, "could not settle a delivery; the broker will redeliver it");
    }
    SettledAlone {
        done,
        sent: matches!(result, Ok(true)),
    }
}

/// Back to the queue, counted against the delivery limit: see
/// `Settlement::Retry`.
async fn reject(delivery: &Delivery) -> lapin::Result<bool> {
    delivery
        .acker
        .reject(BasicRejectOptions { requeue: true })
        .await
}

/// Back to the queue without counting a failed delivery: see
/// `Settlement::Release`.
async fn release(delivery: &Delivery) -> lapin::Result<bool> {
    delivery
        .acker
        .nack(BasicNackOptions {
            requeue: true,
            multiple: false,
        })
        .await
}
