//! A private subscription to events: a server-named, exclusive queue that
//! disappears with its connection, bound to an exchange. Used by
//! `disconnect --wait`, the benchmark and the tests to watch events.

use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};

/// How the subscriber settles what it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// The subscriber acknowledges each message.
    Manual,
    /// The broker considers a message settled once sent (fastest; for measuring).
    Automatic,
}

pub async fn subscribe(
    channel: &Channel,
    exchange: &str,
    binding_keys: &[&str],
    acks: Acks,
) -> lapin::Result<Consumer> {
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    for key in binding_keys {
        channel
            .queue_bind(
                queue.name().clone(),
                exchange.into(),
                (*key).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    channel
        .basic_consume(
            queue.name().clone(),
            "".into(),
            BasicConsumeOptions {
                no_ack: acks == Acks::Automatic,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
}
