//! One AMQP connection and the channels the worker uses on it.

use lapin::options::{BasicQosOptions, ConfirmSelectOptions};
use lapin::types::LongString;
use lapin::{Channel, Connection, ConnectionProperties};

use super::topology::Topology;
use crate::secret::SecretUrl;

/// A live connection with the topology declared. When the connection drops,
/// the session is thrown away and a new one opened; lapin's own experimental
/// auto-recovery is not used, so that reconnecting is one visible code path.
pub struct BrokerSession {
    pub connection: Connection,
    /// Consuming only, with the prefetch set on it.
    pub consume_channel: Channel,
    /// Publishing only (events and dead letters), in confirm mode: a publish
    /// counts only once the broker has confirmed it.
    pub publish_channel: Channel,
}

impl BrokerSession {
    pub async fn open(url: &SecretUrl, topology: &Topology, prefetch: u16) -> lapin::Result<Self> {
        let properties = ConnectionProperties::default()
            // Shown in the management UI, so operators can tell replicas apart.
            .with_connection_name(LongString::from(connection_name()));
        let connection = Connection::connect(url.expose(), properties).await?;
        let consume_channel = connection.create_channel().await?;
        topology.declare(&consume_channel).await?;
        // The broker sends at most `prefetch` unacknowledged deliveries: it
        // bounds the work in flight and the memory held. Per consumer
        // (global: false), so each replica gets its own window.
        consume_channel
            .basic_qos(prefetch, BasicQosOptions { global: false })
            .await?;
        let publish_channel = connection.create_channel().await?;
        publish_channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            connection,
            consume_channel,
            publish_channel,
        })
    }

    /// What is wrong with the session, if anything: the connection or one of
    /// its channels is no longer usable.
    pub fn problem(&self) -> Option<&'static str> {
        if !self.connection.status().connected() {
            Some("the connection closed")
        } else if !self.consume_channel.status().connected() {
            Some("the consume channel closed")
        } else if !self.publish_channel.status().connected() {
            Some("the publish channel closed")
        } else {
            None
        }
    }

    /// Close politely; errors are ignored because the connection may already
    /// be gone.
    pub async fn close(&self) {
        let _ = self
            .consume_channel
            .close(200, "worker stopping".into())
            .await;
        let _ = self
            .publish_channel
            .close(200, "worker stopping".into())
            .await;
        let _ = self.connection.close(200, "worker stopping".into()).await;
    }
}

fn connection_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown-host".into());
    format!("disconnect-worker@{host}")
}
