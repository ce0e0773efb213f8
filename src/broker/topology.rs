//! Exchanges and queues the worker needs. By default it declares them on
//! every (re)connect (declaring is idempotent); with `DECLARE_TOPOLOGY=false`
//! someone else owns them (a policy, the messaging-topology operator) and
//! the worker only checks, passively, that they exist.
//!
//! A declaration that finds an object with other settings fails with
//! `406 PRECONDITION_FAILED`; that is a configuration conflict, not an
//! outage, so it stops the worker with a message that names the object.

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ErrorKind, ExchangeKind};

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

/// Why the topology is not usable.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// An object exists with other settings than the worker declares.
    #[error(
        "{setting} `{name}` ({kind}) exists with other settings than the worker declares: \
         {reply}. Reconcile it: delete the {kind} (drain it first) so the worker declares it \
         anew, or let a policy own the setting and run the worker with DECLARE_TOPOLOGY=false"
    )]
    Mismatch {
        setting: &'static str,
        name: String,
        kind: &'static str,
        reply: String,
    },
    /// With `DECLARE_TOPOLOGY=false`: these do not exist.
    #[error(
        "DECLARE_TOPOLOGY=false, and the broker lacks {}; declare them as docs/contract.md \
         describes, or let the worker declare them (DECLARE_TOPOLOGY=true)",
        .0.join(", ")
    )]
    Missing(Vec<String>),
    /// Anything else: the connection failed, most likely.
    #[error(transparent)]
    Broker(#[from] lapin::Error),
}

impl TopologyError {
    /// Waiting will not fix it: the settings or the broker's objects must
    /// change first.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Mismatch { .. } | Self::Missing(_))
    }
}

/// Durable everything: the topology must survive a broker restart, and
/// messages published as persistent are kept across it.
fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

fn string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

fn quorum_queue_arguments() -> FieldTable {
    let mut arguments = FieldTable::default();
    // Quorum queues are replicated and, unlike classic queues, count
    // failed deliveries, which the delivery limit needs.
    arguments.insert("x-queue-type".into(), string("quorum"));
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

    /// The request queue's arguments.
    pub fn request_queue_arguments(&self) -> FieldTable {
        let mut arguments = quorum_queue_arguments();
        // A message that keeps failing (the worker crashes on it, or rejects
        // it after its retries) goes to the dead-letter queue after this many
        // deliveries instead of cycling forever.
        arguments.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(i32::try_from(self.delivery_limit).unwrap_or(i32::MAX)),
        );
        arguments.insert(
            "x-dead-letter-exchange".into(),
            string(&self.dead_letter_exchange),
        );
        // Quorum queues dead-letter at most once by default: a message
        // dead-lettered by the delivery limit could be lost on the way.
        // At least once needs `reject-publish` overflow: when the queue is
        // full (a length limit set by policy), publishers are refused with a
        // negative confirm instead of the oldest message being dropped.
        arguments.insert("x-dead-letter-strategy".into(), string("at-least-once"));
        arguments.insert("x-overflow".into(), string("reject-publish"));
        arguments
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
    /// queue, and the event exchange. A declaration that conflicts with an
    /// existing object is a [`TopologyError::Mismatch`] naming it.
    pub async fn declare(&self, channel: &Channel) -> Result<(), TopologyError> {
        self.declare_exchange(
            channel,
            "REQUEST_EXCHANGE",
            &self.request_exchange,
            ExchangeKind::Direct,
        )
        .await?;
        // Fanout: every dead letter lands in the one queue whatever its key.
        self.declare_exchange(
            channel,
            "DEAD_LETTER_EXCHANGE",
            &self.dead_letter_exchange,
            ExchangeKind::Fanout,
        )
        .await?;
        declare_queue(
            channel,
            "DEAD_LETTER_QUEUE",
            &self.dead_letter_queue,
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
        declare_queue(
            channel,
            "REQUEST_QUEUE",
            &self.request_queue,
            self.request_queue_arguments(),
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
        self.declare_exchange(
            channel,
            "EVENT_EXCHANGE",
            &self.event_exchange,
            ExchangeKind::Topic,
        )
        .await
    }

    async fn declare_exchange(
        &self,
        channel: &Channel,
        setting: &'static str,
        name: &str,
        kind: ExchangeKind,
    ) -> Result<(), TopologyError> {
        channel
            .exchange_declare(name.into(), kind, durable_exchange(), FieldTable::default())
            .await
            .map_err(|error| mismatch(error, setting, name, "exchange"))
    }

    /// With `DECLARE_TOPOLOGY=false`: check, without declaring anything,
    /// that every exchange and queue exists; name all that do not. Bindings
    /// cannot be checked this way. A failed passive declaration closes its
    /// channel, so each check has a channel of its own.
    pub async fn verify(&self, connection: &Connection) -> Result<(), TopologyError> {
        let objects = [
            ("REQUEST_EXCHANGE", &self.request_exchange, "exchange"),
            (
                "DEAD_LETTER_EXCHANGE",
                &self.dead_letter_exchange,
                "exchange",
            ),
            ("EVENT_EXCHANGE", &self.event_exchange, "exchange"),
            ("REQUEST_QUEUE", &self.request_queue, "queue"),
            ("DEAD_LETTER_QUEUE", &self.dead_letter_queue, "queue"),
        ];
        let mut missing = Vec::new();
        for (setting, name, kind) in objects {
            let channel = connection.create_channel().await?;
            let checked = if kind == "queue" {
                inspect_queue(&channel, name).await.map(drop)
            } else {
                channel
                    .exchange_declare(
                        name.as_str().into(),
                        ExchangeKind::Direct,
                        ExchangeDeclareOptions {
                            passive: true,
                            ..ExchangeDeclareOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await
            };
            match checked {
                Ok(()) => {
                    let _ = channel.close(200, "checked".into()).await;
                }
                Err(error) if reply_code(&error) == Some(NOT_FOUND) => {
                    missing.push(format!("{setting} `{name}` ({kind})"));
                }
                Err(error) => return Err(error.into()),
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(TopologyError::Missing(missing))
        }
    }
}

async fn declare_queue(
    channel: &Channel,
    setting: &'static str,
    name: &str,
    arguments: FieldTable,
) -> Result<(), TopologyError> {
    channel
        .queue_declare(name.into(), durable_queue(), arguments)
        .await
        .map(drop)
        .map_err(|error| mismatch(error, setting, name, "queue"))
}

const NOT_FOUND: u16 = 404;
const PRECONDITION_FAILED: u16 = 406;

/// The AMQP reply code of a channel or connection error from the broker.
fn reply_code(error: &lapin::Error) -> Option<u16> {
    match error.kind() {
        ErrorKind::ProtocolError(amqp) => Some(amqp.get_id()),
        _ => None,
    }
}

fn mismatch(
    error: lapin::Error,
    setting: &'static str,
    name: &str,
    kind: &'static str,
) -> TopologyError {
    match error.kind() {
        ErrorKind::ProtocolError(amqp) if amqp.get_id() == PRECONDITION_FAILED => {
            TopologyError::Mismatch {
                setting,
                name: name.to_string(),
                kind,
                reply: amqp.get_message().to_string(),
            }
        }
        _ => TopologyError::Broker(error),
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
