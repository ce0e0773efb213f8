//! Publishing with publisher confirms: a message counts as sent only when the
//! broker has confirmed it.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel};

use crate::observability::metrics;
use crate::telemetry::propagation::set_traceparent;

/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("publishing failed: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker refused the message (negative confirm)")]
    Nacked,
    #[error("no publisher confirm within {0:?}")]
    NotConfirmed(Duration),
    /// Published `mandatory`, and RabbitMQ found no queue to put it in: it
    /// returned the message, and then confirmed it (a confirm alone does
    /// not say a message reached a queue).
    #[error("no queue took the message: RabbitMQ returned it ({reply}) from exchange `{exchange}` with routing key `{routing_key}`")]
    Unroutable {
        exchange: String,
        routing_key: String,
        reply: String,
    },
}

impl PublishError {
    /// The `reason` label of a failed publish in the metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Amqp(_) => "broker",
            Self::Nacked => "refused",
            Self::NotConfirmed(_) => "unconfirmed",
            Self::Unroutable { .. } => "unroutable",
        }
    }
}

/// What a publish needs of the broker's routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// Events: an exchange with no queue bound to a key has no consumer
    /// that wants the event; RabbitMQ drops it, and the publish succeeded.
    AnyQueues,
    /// Requests and dead letters, which only exist in a queue: published
    /// `mandatory`, and a copy that reaches no queue (a queue deleted, a
    /// binding removed) is a failed publish, so the original is kept.
    AtLeastOneQueue,
}

/// Publish persistent JSON and wait, at most `confirm_timeout`, for the
/// broker's confirm.
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    routing: Routing,
    body: &[u8],
    properties: BasicProperties,
    confirm_timeout: Duration,
) -> Result<(), PublishError> {
    within_confirm_timeout(
        confirm_timeout,
        publish_and_confirm(channel, exchange, routing_key, routing, body, properties),
    )
    .await
}

/// Publish persistent JSON and wait for the broker's confirm, with no bound
/// of its own: for a caller that bounds several together with
/// [`within_confirm_timeout`].
pub async fn publish_and_confirm(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    routing: Routing,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), PublishError> {
    let options = BasicPublishOptions {
        mandatory: routing == Routing::AtLeastOneQueue,
        ..BasicPublishOptions::default()
    };
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            options,
            body,
            properties.with_delivery_mode(PERSISTENT),
        )
        .await?
        .await?;
    if confirm.is_nack() {
        return Err(PublishError::Nacked);
    }
    // The returned message is dropped here: only its reply is kept, never
    // its body.
    if let Some(returned) = confirm.take_message() {
        return Err(PublishError::Unroutable {
            exchange: exchange.to_string(),
            routing_key: routing_key.to_string(),
            reply: format!("{} {}", returned.reply_code, returned.reply_text),
        });
    }
    Ok(())
}

/// Wait for `publishing` at most `confirm_timeout`: a confirm that does not
/// come (a broker that stopped answering on a link still open) is a failed
/// publish, whatever the broker does with the message later.
pub async fn within_confirm_timeout(
    confirm_timeout: Duration,
    publishing: impl Future<Output = Result<(), PublishError>>,
) -> Result<(), PublishError> {
    metrics::within("broker_confirm", confirm_timeout, publishing)
        .await
        .unwrap_or(Err(PublishError::NotConfirmed(confirm_timeout)))
}

/// The `app_id` of every message the program publishes.
pub const APP_ID: &str = "disconnect-worker";

/// Properties of a JSON message the program publishes: its ids, its `type`
/// (the event or request type), its `timestamp` (when it happened, in
/// seconds), `app_id`, and the trace it belongs to.
pub fn json_properties(
    message_id: &str,
    correlation_id: &str,
    kind: &str,
    at: DateTime<Utc>,
    traceparent: Option<&str>,
) -> BasicProperties {
    let properties = BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_message_id(ShortString::from(message_id))
        .with_correlation_id(ShortString::from(correlation_id))
        .with_type(ShortString::from(kind))
        .with_timestamp(u64::try_from(at.timestamp()).unwrap_or_default())
        .with_app_id(ShortString::from(APP_ID));
    match traceparent {
        Some(traceparent) => {
            let mut headers = FieldTable::default();
            set_traceparent(&mut headers, traceparent);
            properties.with_headers(headers)
        }
        None => properties,
    }
}

/// Set a string header on a table.
pub fn set_header(headers: &mut FieldTable, key: &str, value: &str) {
    headers.insert(key.into(), AMQPValue::LongString(LongString::from(value)));
}

/// `base` with every property of `original` but its headers, `expiration`
/// and `user_id` (for a copy republished by the worker: a copy must not
/// expire, and RabbitMQ checks `user_id` against the publishing connection,
/// which for a copy is another user's).
pub fn copy_properties(original: &BasicProperties, base: BasicProperties) -> BasicProperties {
    let mut properties = base;
    macro_rules! keep {
        ($($getter:ident => $setter:ident),* $(,)?) => {
            $(if let Some(value) = original.$getter() {
                properties = properties.$setter(value.clone());
            })*
        };
    }
    keep!(
        content_type => with_content_type,
        content_encoding => with_content_encoding,
        delivery_mode => with_delivery_mode,
        priority => with_priority,
        correlation_id => with_correlation_id,
        reply_to => with_reply_to,
        message_id => with_message_id,
        timestamp => with_timestamp,
        kind => with_type,
        app_id => with_app_id,
        cluster_id => with_cluster_id,
    );
    properties
}
