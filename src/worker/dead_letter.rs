//! Dead-lettering a bad request ourselves, so the reason travels with it.
//!
//! RabbitMQ's own dead-lettering (a reject without requeue) cannot add a
//! reason; so the worker publishes the original body and properties to the
//! dead-letter exchange with reason headers, waits for the confirm, and only
//! then acknowledges the original. Nothing is lost if it crashes in between:
//! the original is redelivered and dead-lettered again.

use std::time::Duration;

use chrono::Utc;
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel};

use crate::broker::publish::{
    copy_properties, publish_confirmed, set_header, PublishError, Routing, APP_ID,
};
use crate::domain::contract::REQUEST_TYPE;
use crate::domain::Rejection;
use crate::telemetry::propagation::{set_traceparent, TRACEPARENT};

/// Header with the machine-readable rejection code (`not_json`, ...).
pub const REJECTION_CODE_HEADER: &str = "x-rejection-code";
/// Header with the human-readable reason; never contains the body.
pub const REJECTION_REASON_HEADER: &str = "x-rejection-reason";
/// Header keeping the original `expiration`, which the copy does not carry.
pub const ORIGINAL_EXPIRATION_HEADER: &str = "x-original-expiration";
/// Header keeping the original `user_id`, which the copy does not carry.
pub const ORIGINAL_USER_ID_HEADER: &str = "x-original-user-id";
/// Header with when the worker dead-lettered the message (RFC 3339), as
/// RabbitMQ's `x-death` records it for its own dead letters.
pub const DEAD_LETTERED_AT_HEADER: &str = "x-dead-lettered-at";
/// Header keeping the producer's `traceparent`, replaced on the copy by the
/// span that dead-lettered it.
pub const ORIGINAL_TRACEPARENT_HEADER: &str = "x-original-traceparent";

/// Where dead letters go, and how long their confirm may take.
#[derive(Debug, Clone)]
pub struct DeadLettering {
    pub exchange: String,
    pub confirm_timeout: Duration,
}

/// Publish a copy of `delivery` to the dead-letter exchange with the reason
/// and `traceparent` (the span that dead-lettered it), and wait for the
/// broker's confirm.
pub async fn publish(
    channel: &Channel,
    target: &DeadLettering,
    delivery: &Delivery,
    rejection: &Rejection,
    traceparent: Option<&str>,
) -> Result<(), PublishError> {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    if let Some(traceparent) = traceparent {
        if let Some(original) = headers.inner().get(TRACEPARENT).cloned() {
            headers.insert(ORIGINAL_TRACEPARENT_HEADER.into(), original);
        }
        set_traceparent(&mut headers, traceparent);
    }
    set_header(&mut headers, REJECTION_CODE_HEADER, rejection.code.as_str());
    set_header(
        &mut headers,
        DEAD_LETTERED_AT_HEADER,
        &Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    );
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
    publish_confirmed(
        channel,
        &target.exchange,
        delivery.routing_key.as_str(),
        Routing::AtLeastOneQueue,
        &delivery.data,
        dead_letter_properties(&delivery.properties, headers),
        target.confirm_timeout,
    )
    .await
}

/// The original properties, but for two that would make the copy misbehave,
/// kept in headers instead (as RabbitMQ's own dead-lettering keeps
/// `expiration` in `x-death`):
/// - `expiration`: the copy would expire out of the dead-letter queue;
/// - `user_id`: RabbitMQ checks it against the publishing connection's user,
///   which for the copy is the worker's, not the original publisher's; the
///   broker would refuse the copy and close the channel.
///
/// Like every message the worker publishes, the copy has a `type`, a
/// `timestamp` and an `app_id`: the original's where it had them.
fn dead_letter_properties(original: &BasicProperties, mut headers: FieldTable) -> BasicProperties {
    let defaults = BasicProperties::default()
        .with_type(ShortString::from(REQUEST_TYPE))
        .with_timestamp(u64::try_from(Utc::now().timestamp()).unwrap_or_default())
        .with_app_id(ShortString::from(APP_ID));
    let properties = copy_properties(original, defaults);
    for (header, value) in [
        (ORIGINAL_EXPIRATION_HEADER, original.expiration()),
        (ORIGINAL_USER_ID_HEADER, original.user_id()),
    ] {
        if let Some(value) = value {
            headers.insert(
                header.into(),
                AMQPValue::LongString(LongString::from(value.as_str())),
            );
        }
    }
    properties.with_headers(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::ShortString;

    #[test]
    fn the_copy_keeps_every_property_but_expiration_and_user_id_which_move_to_headers() {
        let original = BasicProperties::default()
            .with_content_type(ShortString::from("application/json"))
            .with_message_id(ShortString::from("m-1"))
            .with_correlation_id(ShortString::from("c-1"))
            .with_app_id(ShortString::from("upstream"))
            .with_priority(3)
            .with_timestamp(1_700_000_000)
            .with_expiration(ShortString::from("3000"))
            .with_user_id(ShortString::from("billing"));

        let copy = dead_letter_properties(&original, FieldTable::default());

        assert_eq!(copy.expiration(), &None);
        assert_eq!(copy.user_id(), &None);
        assert_eq!(copy.content_type(), original.content_type());
        assert_eq!(copy.message_id(), original.message_id());
        assert_eq!(copy.correlation_id(), original.correlation_id());
        assert_eq!(copy.app_id(), original.app_id());
        assert_eq!(copy.priority(), original.priority());
        assert_eq!(copy.timestamp(), original.timestamp());
        let headers = copy.headers().clone().unwrap_or_default();
        let header = |key: &str| match headers.inner().get(key) {
            Some(AMQPValue::LongString(value)) => Some(value.to_string()),
            _ => None,
        };
        assert_eq!(header(ORIGINAL_EXPIRATION_HEADER).as_deref(), Some("3000"));
        assert_eq!(header(ORIGINAL_USER_ID_HEADER).as_deref(), Some("billing"));
        // Without a type, the copy gets one; a timestamp and an app id too.
        assert_eq!(
            copy.kind().as_ref().map(|kind| kind.as_str()),
            Some(REQUEST_TYPE)
        );
    }
}
