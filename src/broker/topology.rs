//! Exchanges and queues the worker declares. Declaring is idempotent, so the
//! worker does it on every (re)connect and the CLI before publishing.

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub request_exchange: String,
    pub request_queue: String,
    pub request_routing_key: String,
    pub dead_letter_exchange: String,
    pub dead_letter_queue: String,
    pub event_exchange: String,
    pub delivery_limit: u32,
}

/// Durable everything: the topology must survive a broker restart, and
/// messages published as persistent are kept across it.
fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

fn quorum_queue_arguments() -> FieldTable {
    let mut arguments = FieldTable::default();
    // Quorum queues are replicated and, unlike classic queues, count
    // redeliveries, which the delivery limit needs.
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    arguments
}

impl Topology {
    /// Every name under `prefix`: for benchmarks and tests that share a
    /// broker and must not touch each other's queues.
    pub fn with_prefix(prefix: &str, delivery_limit: u32) -> Self {
        Self {
            request_exchange: format!("{prefix}.disconnect.requests"),
            request_queue: format!("{prefix}.disconnect.requests"),
            request_routing_key: "disconnect".into(),
            dead_letter_exchange: format!("{prefix}.disconnect.dead"),
            dead_letter_queue: format!("{prefix}.disconnect.requests.dead"),
            event_exchange: format!("{prefix}.connection.events"),
            delivery_limit,
        }
    }

    /// Delete every queue and exchange of this topology, ignoring those
    /// already gone. For cleaning up after benchmarks and tests.
    pub async fn delete(&self, channel: &Channel) {
        for queue in [&self.request_queue, &self.dead_letter_queue] {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for exchange in [
            &self.request_exchange,
            &self.dead_letter_exchange,
            &self.event_exchange,
        ] {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }

    /// Declare the request exchange and queue, the dead-letter exchange and
    /// queue, and the event exchange.
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        channel
            .exchange_declare(
                self.request_exchange.as_str().into(),
                ExchangeKind::Direct,
                durable_exchange(),
                FieldTable::default(),
            )
            .await?;
        // Fanout: every dead letter lands in the one queue whatever its key.
        channel
            .exchange_declare(
                self.dead_letter_exchange.as_str().into(),
                ExchangeKind::Fanout,
                durable_exchange(),
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_declare(
                self.dead_letter_queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                quorum_queue_arguments(),
            )
            .await?;
        channel
            .queue_bind(
                self.dead_letter_queue.as_str().into(),
                self.dead_letter_exchange.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut request_arguments = quorum_queue_arguments();
        // A message that keeps failing (the worker crashes on it, or hands it
        // back after its retries) goes to the dead-letter queue after this
        // many deliveries instead of cycling forever.
        request_arguments.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(i32::try_from(self.delivery_limit).unwrap_or(i32::MAX)),
        );
        request_arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(LongString::from(self.dead_letter_exchange.as_str())),
        );
        channel
            .queue_declare(
                self.request_queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                request_arguments,
            )
            .await?;
        channel
            .queue_bind(
                self.request_queue.as_str().into(),
                self.request_exchange.as_str().into(),
                self.request_routing_key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                self.event_exchange.as_str().into(),
                ExchangeKind::Topic,
                durable_exchange(),
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }
}

/// The state of an existing queue (ready messages, consumers), without
/// declaring it: a passive declare, which fails if the queue is missing.
pub async fn inspect_queue(channel: &Channel, queue: &str) -> lapin::Result<lapin::Queue> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
}
