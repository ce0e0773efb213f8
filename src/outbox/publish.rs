//! Publishing events: persistent, with confirms, identified by their ids.

use lapin::Channel;

use crate::broker::publish::{json_properties, publish_confirmed, PublishError};
use crate::domain::OutcomeEvent;

/// Publish every event, then wait for all the confirms together: one round
/// trip per batch rather than per event.
pub async fn publish_all(
    channel: &Channel,
    exchange: &str,
    events: &[OutcomeEvent],
) -> Result<(), PublishError> {
    let confirms = events.iter().map(|event| {
        publish_confirmed(
            channel,
            exchange,
            &event.routing_key,
            event.payload.as_bytes(),
            json_properties(
                &event.event_id.to_string(),
                &event.request_id.to_string(),
                &event.routing_key,
                event.occurred_at,
                event.traceparent.as_deref(),
            ),
        )
    });
    for result in futures_util::future::join_all(confirms).await {
        result?;
    }
    Ok(())
}
