//! Broker helpers: publishing requests, tapping events, reading dead letters.

use std::collections::HashMap;
use std::time::Duration;

use disconnect_worker::broker::publish::Routing;
use disconnect_worker::broker::subscribe::{subscribe, Acks};
use disconnect_worker::broker::topology::inspect_queue;
use disconnect_worker::domain::event::EVENT_TYPES;
use disconnect_worker::domain::request::CONTENT_TYPE;
use disconnect_worker::domain::{AccessToken, DisconnectRequest, RequestId};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::{AMQPValue, ShortString};
use lapin::{BasicProperties, Channel, Consumer};
use serde_json::Value;
use uuid::Uuid;

use super::{TestContext, PATIENCE};

/// A channel in confirm mode on a connection of its own (which lives as
/// long as the channel is used).
pub async fn channel(amqp_url: &str) -> Channel {
    let (_connection, channel) = disconnect_testkit::broker::connect(amqp_url)
        .await
        .expect("connecting to the test RabbitMQ");
    channel
}

/// A request as an upstream application sends it, with every audit field.
pub fn decoded_request(request_id: Uuid, token: &str) -> DisconnectRequest {
    DisconnectRequest {
        request_id: RequestId::from_uuid(request_id),
        requested_at: "2026-11-24T10:15:00Z".parse().ok(),
        requested_by: Some("tests".into()),
        reason: Some("test".into()),
        ..DisconnectRequest::new(AccessToken::parse(token.to_string()).expect("a token"))
    }
}

/// The JSON body of [`decoded_request`].
pub fn request_body(request_id: Uuid, token: &str) -> Vec<u8> {
    decoded_request(request_id, token).encode()
}

/// Publish to an exchange, persistent, and wait for the broker's confirm,
/// which must be an ack: the worker's own publish, unbounded.
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) {
    disconnect_worker::broker::publish::publish_and_confirm(
        channel,
        exchange,
        routing_key,
        // A test's message that reaches no queue is a broken test.
        Routing::AtLeastOneQueue,
        body,
        properties,
    )
    .await
    .expect("a publish the broker confirms");
}

impl TestContext {
    /// Publish raw bytes to the request exchange, confirmed.
    pub async fn publish_raw(&self, channel: &Channel, body: &[u8], properties: BasicProperties) {
        publish_confirmed(
            channel,
            &self.topology.request_exchange,
            &self.topology.request_routing_key,
            body,
            properties,
        )
        .await;
    }

    /// Publish a well-formed disconnect request; returns its request id.
    pub async fn request_disconnect(
        &self,
        channel: &Channel,
        request_id: Uuid,
        token: &str,
    ) -> Uuid {
        let properties =
            BasicProperties::default().with_content_type(ShortString::from(CONTENT_TYPE));
        self.publish_raw(channel, &request_body(request_id, token), properties)
            .await;
        request_id
    }

    /// A queue bound to every event, declared before requests are published.
    pub async fn event_tap(&self) -> EventTap {
        let channel = self.channel().await;
        let consumer = subscribe(
            &channel,
            &self.topology.event_exchange,
            &["#"],
            Acks::Manual,
        )
        .await
        .expect("subscribing to events");
        EventTap {
            _channel: channel,
            consumer,
            received: Vec::new(),
            schemas: event_schemas(),
        }
    }

    /// Everything in the dead-letter queue, taken off it.
    pub async fn take_dead_letters(&self) -> Vec<DeadLetter> {
        let channel = self.channel().await;
        let mut letters = Vec::new();
        while let Some(message) = channel
            .basic_get(
                self.topology.dead_letter_queue.as_str().into(),
                BasicGetOptions::default(),
            )
            .await
            .expect("basic_get")
        {
            let delivery = message.delivery;
            let header = |key: &str| -> Option<String> {
                let headers = delivery.properties.headers().as_ref()?;
                match headers.inner().get(key)? {
                    AMQPValue::LongString(value) => Some(value.to_string()),
                    other => Some(format!("{other:?}")),
                }
            };
            letters.push(DeadLetter {
                code: header("x-rejection-code"),
                reason: header("x-rejection-reason"),
                expiration: delivery
                    .properties
                    .expiration()
                    .as_ref()
                    .map(ToString::to_string),
                headers: delivery.properties.headers().clone().unwrap_or_default(),
                body: delivery.data.clone(),
            });
            delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .expect("ack");
        }
        letters
    }

    /// Messages ready in a queue (not counting those delivered, unacked).
    pub async fn ready_messages(&self, channel: &Channel, queue: &str) -> usize {
        inspect_queue(channel, queue)
            .await
            .expect("passive declare")
            .message_count() as usize
    }

    /// Wait until the dead-letter queue holds `count` messages, then take them.
    pub async fn wait_for_dead_letters(&self, count: usize) -> Vec<DeadLetter> {
        let channel = self.channel().await;
        let queue = &self.topology.dead_letter_queue;
        super::eventually("dead letters", || async {
            (self.ready_messages(&channel, queue).await >= count).then_some(())
        })
        .await;
        self.take_dead_letters().await
    }

    /// Wait until the broker has handed every request to a consumer.
    pub async fn wait_for_request_queue_empty(&self) {
        let channel = self.channel().await;
        let queue = &self.topology.request_queue;
        super::eventually("the request queue to drain", || async {
            (self.ready_messages(&channel, queue).await == 0).then_some(())
        })
        .await;
    }
}

/// Every event as JSON, acknowledged by the broker as it is sent: for tests
/// that take tens of thousands of events, or events of a newer contract
/// than `docs/schemas` (which [`EventTap`] checks each event against).
pub struct RawEvents {
    _channel: Channel,
    consumer: Consumer,
}

impl RawEvents {
    /// The next event; `None` once the subscription ends.
    pub async fn next(&mut self) -> Option<Value> {
        let delivery = self.consumer.next().await?.ok()?;
        Some(serde_json::from_slice(&delivery.data).expect("an event is JSON"))
    }
}

impl TestContext {
    /// A queue bound to every event, declared before requests are published.
    pub async fn raw_events(&self) -> RawEvents {
        let channel = self.channel().await;
        let consumer = subscribe(
            &channel,
            &self.topology.event_exchange,
            &["#"],
            Acks::Automatic,
        )
        .await
        .expect("subscribing to events");
        RawEvents {
            _channel: channel,
            consumer,
        }
    }

    /// Delete the request queue, as an operator told to reconcile it would.
    pub async fn delete_request_queue(&self, channel: &Channel) {
        channel
            .queue_delete(
                self.topology.request_queue.as_str().into(),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await
            .expect("deleting the request queue");
    }
}

#[derive(Debug)]
pub struct DeadLetter {
    pub code: Option<String>,
    pub reason: Option<String>,
    pub expiration: Option<String>,
    pub headers: lapin::types::FieldTable,
    pub body: Vec<u8>,
}

impl DeadLetter {
    /// A string header of the dead letter.
    pub fn header(&self, key: &str) -> Option<String> {
        match self.headers.inner().get(key)? {
            AMQPValue::LongString(value) => Some(value.to_string()),
            other => Some(format!("{other:?}")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReceivedEvent {
    pub routing_key: String,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub persistent: bool,
    /// The AMQP `type`, `app_id` and `timestamp`.
    pub kind: Option<String>,
    pub app_id: Option<String>,
    pub timestamp: Option<u64>,
    pub traceparent: Option<String>,
    pub headers: lapin::types::FieldTable,
    pub raw: Vec<u8>,
    pub json: Value,
    /// When the tap received it.
    pub received_at: std::time::Instant,
}

impl ReceivedEvent {
    /// A string header of the event.
    pub fn header(&self, key: &str) -> Option<String> {
        match self.headers.inner().get(key)? {
            AMQPValue::LongString(value) => Some(value.to_string()),
            other => Some(format!("{other:?}")),
        }
    }

    pub fn request_id(&self) -> String {
        self.json["request_id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

pub struct EventTap {
    _channel: Channel,
    consumer: Consumer,
    /// Every event received so far, in arrival order.
    pub received: Vec<ReceivedEvent>,
    /// The checked-in schema of each event type, by routing key: every
    /// event a test receives is validated against its schema.
    schemas: HashMap<String, jsonschema::Validator>,
}

/// The validators of `docs/schemas/<event type>.json`.
fn event_schemas() -> HashMap<String, jsonschema::Validator> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schemas");
    EVENT_TYPES
        .iter()
        .chain(&[disconnect_worker::webhooks::ENDPOINT_DISABLED])
        .map(|event_type| {
            let path = dir.join(format!("{event_type}.json"));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
            let schema: Value = serde_json::from_str(&text).expect("a schema is JSON");
            let validator = jsonschema::options()
                .should_validate_formats(true)
                .build(&schema)
                .expect("a valid schema");
            (event_type.to_string(), validator)
        })
        .collect()
}

impl EventTap {
    /// Wait for the next event; `None` if none comes within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<ReceivedEvent> {
        let delivery = tokio::time::timeout(wait, self.consumer.next())
            .await
            .ok()??;
        let delivery = delivery.expect("event delivery");
        delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .expect("ack event");
        let event = ReceivedEvent {
            routing_key: delivery.routing_key.to_string(),
            message_id: delivery
                .properties
                .message_id()
                .as_ref()
                .map(ToString::to_string),
            correlation_id: delivery
                .properties
                .correlation_id()
                .as_ref()
                .map(ToString::to_string),
            persistent: *delivery.properties.delivery_mode() == Some(2),
            kind: delivery.properties.kind().as_ref().map(ToString::to_string),
            app_id: delivery
                .properties
                .app_id()
                .as_ref()
                .map(ToString::to_string),
            timestamp: *delivery.properties.timestamp(),
            traceparent: delivery.properties.headers().as_ref().and_then(|headers| {
                match headers.inner().get("traceparent")? {
                    AMQPValue::LongString(value) => Some(value.to_string()),
                    _ => None,
                }
            }),
            headers: delivery.properties.headers().clone().unwrap_or_default(),
            json: serde_json::from_slice(&delivery.data).expect("events are JSON"),
            raw: delivery.data,
            received_at: std::time::Instant::now(),
        };
        let validator = self
            .schemas
            .get(&event.routing_key)
            .unwrap_or_else(|| panic!("an event of no known type: {}", event.routing_key));
        let errors: Vec<String> = validator
            .iter_errors(&event.json)
            .map(|error| format!("{error} at {}", error.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "a {} event does not match docs/schemas: {errors:?}",
            event.routing_key
        );
        self.received.push(event.clone());
        Some(event)
    }

    /// Wait for the event answering `request_id`, keeping the others.
    pub async fn event_for(&mut self, request_id: Uuid) -> ReceivedEvent {
        let wanted = request_id.to_string();
        if let Some(event) = self
            .received
            .iter()
            .find(|event| event.request_id() == wanted)
        {
            return event.clone();
        }
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(event) = self.next_within(left).await else {
                panic!("no event for request {wanted} within {PATIENCE:?}");
            };
            if event.request_id() == wanted {
                return event;
            }
        }
    }

    /// Wait until `count` events in all have arrived.
    pub async fn wait_for_count(&mut self, count: usize) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.received.len() < count {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if self.next_within(left).await.is_none() {
                panic!(
                    "only {} of {count} events arrived within {PATIENCE:?}",
                    self.received.len()
                );
            }
        }
    }

    /// Events received for one request.
    pub fn for_request(&self, request_id: Uuid) -> Vec<&ReceivedEvent> {
        let wanted = request_id.to_string();
        self.received
            .iter()
            .filter(|event| event.request_id() == wanted)
            .collect()
    }
}
