//! Publishing events: the JSON body as it was stored, and the properties
//! every copy carries, the worker's and the relay's alike.

use std::time::Duration;

use chrono::SecondsFormat;
use lapin::{BasicProperties, Channel};

use crate::broker::publish::{
    json_properties, publish_and_confirm, set_header, within_confirm_timeout, PublishError, Routing,
};
use crate::domain::OutcomeEvent;

/// The CloudEvents `source` of every event: the producer, as a URI
/// reference.
pub const CLOUD_EVENTS_SOURCE: &str = "/disconnect-worker";

/// Publish every event, then wait for all the confirms together (one round
/// trip per batch rather than per event), at most `confirm_timeout`.
pub async fn publish_all(
    channel: &Channel,
    exchange: &str,
    events: &[OutcomeEvent],
    confirm_timeout: Duration,
) -> Result<(), PublishError> {
    let confirms = events.iter().map(|event| {
        publish_and_confirm(
            channel,
            exchange,
            &event.routing_key,
            Routing::AnyQueues,
            event.payload.as_bytes(),
            event_properties(event),
        )
    });
    let all = async {
        for result in futures_util::future::join_all(confirms).await {
            result?;
        }
        Ok(())
    };
    within_confirm_timeout(confirm_timeout, all).await
}

/// An event's AMQP properties: the JSON properties, and the CloudEvents 1.0
/// attributes in binary content mode (the AMQP binding's `cloudEvents:`
/// application properties; `datacontenttype` is the content type). The
/// body stays the event's JSON, so consumers that read only the body see
/// no change.
pub fn event_properties(event: &OutcomeEvent) -> BasicProperties {
    let properties = json_properties(
        &event.event_id.to_string(),
        &event.request_id.to_string(),
        &event.routing_key,
        event.occurred_at,
        event.traceparent.as_deref(),
    );
    let mut headers = properties.headers().clone().unwrap_or_default();
    let time = event
        .occurred_at
        .to_rfc3339_opts(SecondsFormat::Micros, true);
    set_header(&mut headers, "cloudEvents:specversion", "1.0");
    set_header(&mut headers, "cloudEvents:id", &event.event_id.to_string());
    set_header(&mut headers, "cloudEvents:type", &event.routing_key);
    set_header(&mut headers, "cloudEvents:source", CLOUD_EVENTS_SOURCE);
    set_header(&mut headers, "cloudEvents:time", &time);
    if let Some(subject) = &event.subject {
        set_header(&mut headers, "cloudEvents:subject", subject);
    }
    properties.with_headers(headers)
}
