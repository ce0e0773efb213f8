//! One AMQP connection and the channels the worker uses on it.

use std::time::Duration;

use lapin::options::{BasicCancelOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::LongString;
use lapin::{Channel, Connection, ConnectionProperties};

use super::addresses::BrokerUrls;
use super::topology::{Topology, TopologyError};
use crate::observability::metrics;
use crate::secret::SecretUrl;

/// How long closing a session may take. A session is closed when the worker
/// gives up on it: if the broker can still hear us, it requeues the
/// session's unacknowledged deliveries at once; if it cannot (the path is
/// dead), no close-ok will come, and dropping the connection is all there
/// is to do.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What to do with the topology when a session opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopologyMode {
    /// Declare it (idempotent).
    Declare,
    /// Someone else owns it: only check that it exists.
    Verify,
}

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
    /// Connect to `url` and prepare the channels; a topology conflict is a
    /// [`TopologyError::Mismatch`] or [`TopologyError::Missing`], anything
    /// else a [`TopologyError::Broker`].
    /// The whole opening, topology included, is bounded by the connect
    /// limit of `urls`: a node that went away without a word would otherwise
    /// hold the attempt for the operating system's TCP timeout (minutes)
    /// before the next address is tried.
    pub async fn open(
        urls: &BrokerUrls,
        url: &SecretUrl,
        topology: &Topology,
        mode: TopologyMode,
        prefetch: u16,
    ) -> Result<Self, TopologyError> {
        let limit = urls.limits().connect;
        let opening = Self::open_now(urls, url, topology, mode, prefetch);
        metrics::within("broker_connect", limit, opening)
            .await
            .unwrap_or_else(|_| {
                Err(TopologyError::Broker(lapin::Error::from(
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no session within {limit:?}"),
                    ),
                )))
            })
    }

    async fn open_now(
        urls: &BrokerUrls,
        url: &SecretUrl,
        topology: &Topology,
        mode: TopologyMode,
        prefetch: u16,
    ) -> Result<Self, TopologyError> {
        let properties = ConnectionProperties::default()
            // Shown in the management UI, so operators can tell replicas apart.
            .with_connection_name(LongString::from(connection_name()));
        let connection = urls.connect(url, properties).await?;
        match mode {
            TopologyMode::Declare => {
                let channel = connection.create_channel().await?;
                topology.declare(&channel).await?;
                let _ = channel.close(200, "declared".into()).await;
            }
            TopologyMode::Verify => topology.verify(&connection).await?,
        }
        let consume_channel = connection.create_channel().await?;
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

    /// Stop the broker's deliveries to `consumer_tag`, within
    /// [`CLOSE_TIMEOUT`]: on a silent link the answer would wait for the
    /// heartbeat to give up. Errors are ignored: the channel's close (or the
    /// connection's loss) stops them too, and what was delivered and not
    /// started goes back to the queue then.
    pub async fn stop_consuming(&self, consumer_tag: &str) {
        let cancelling = self
            .consume_channel
            .basic_cancel(consumer_tag.into(), BasicCancelOptions::default());
        let _ = metrics::within("broker_close", CLOSE_TIMEOUT, cancelling).await;
    }

    /// Close politely, within [`CLOSE_TIMEOUT`]; errors are ignored because
    /// the connection may already be gone. Closing the connection closes
    /// its channels.
    pub async fn close(&self, why: &str) {
        let closing = self.connection.close(200, why.into());
        if metrics::within("broker_close", CLOSE_TIMEOUT, closing)
            .await
            .is_err()
        {
            tracing::debug!("the broker did not confirm the close; dropping the connection");
        }
    }
}

fn connection_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown-host".into());
    format!("disconnect-worker@{host}")
}
