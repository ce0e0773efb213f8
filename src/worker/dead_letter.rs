//! Dead-lettering a bad request ourselves, so the reason travels with it.
//!
//! RabbitMQ's own dead-lettering (a reject without requeue) cannot add a
//! reason; so the worker publishes the original body and properties to the
//! dead-letter exchange with reason headers, waits for the confirm, and only
//! then acknowledges the original. Nothing is lost if it crashes in between:
//! the original is redelivered and dead-lettered again.

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::Channel;

use crate::broker::publish::{publish_confirmed, set_header};
use crate::broker::Topology;
use crate::domain::Rejection;

/// Header with the machine-readable rejection code (`not_json`, ...).
pub const REJECTION_CODE_HEADER: &str = "x-rejection-code";
/// Header with the human-readable reason; never contains the body.
pub const REJECTION_REASON_HEADER: &str = "x-rejection-reason";

pub async fn dead_letter(
    channel: &Channel,
    topology: &Topology,
    delivery: &Delivery,
    rejection: &Rejection,
) {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    set_header(&mut headers, REJECTION_CODE_HEADER, rejection.code.as_str());
    set_header(
        &mut headers,
        REJECTION_REASON_HEADER,
        &rejection.to_string(),
    );
    set_header(
        &mut headers,
        "x-original-exchange",
        delivery.exchange.as_str(),
    );
    set_header(
        &mut headers,
        "x-original-routing-key",
        delivery.routing_key.as_str(),
    );
    let properties = delivery.properties.clone().with_headers(headers);
    let published = publish_confirmed(
        channel,
        &topology.dead_letter_exchange,
        delivery.routing_key.as_str(),
        &delivery.data,
        properties,
    )
    .await;
    let acknowledged = match published {
        Ok(()) => delivery.acker.ack(BasicAckOptions::default()).await,
        Err(error) => {
            tracing::error!(error = %error, "could not dead-letter a bad request; returning it to the queue");
            let requeue = BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            };
            delivery.acker.nack(requeue).await
        }
    };
    if let Err(error) = acknowledged {
        tracing::warn!(error = %error, "could not settle a bad request; the broker redelivers it");
    }
}
