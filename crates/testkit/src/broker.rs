//! RabbitMQ for tests and benchmarks: connections, topologies whose names
//! nobody else uses on a shared broker, and their cleanup.

use std::time::Duration;

use disconnect_worker::broker::topology::inspect_queue;
use disconnect_worker::broker::{BrokerUrls, Topology};
use lapin::{Channel, Connection, ConnectionProperties};

/// A connection to the first of `amqp_urls` (one URL, or a comma-separated
/// list, as `AMQP_URL` takes) that answers, and one channel on it, in
/// confirm mode.
pub async fn connect(amqp_urls: &str) -> anyhow::Result<(Connection, Channel)> {
    BrokerUrls::parse("AMQP_URL", amqp_urls)
        .map_err(anyhow::Error::msg)?
        .connect_confirming("AMQP_URL")
        .await
        .map_err(anyhow::Error::msg)
}

/// Every exchange and queue named `{label}-{random}.…`, with the default
/// routing key and a delivery limit of 10.
pub fn unique_topology(label: &str) -> Topology {
    Topology::with_prefix(
        &format!(
            "{label}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ),
        10,
    )
}

/// Delete `topology`'s queues and exchanges, ignoring what is already gone.
pub async fn delete_topology(amqp_url: &str, topology: &Topology) {
    let Ok(connection) = Connection::connect(amqp_url, ConnectionProperties::default()).await
    else {
        return;
    };
    if let Ok(channel) = connection.create_channel().await {
        topology.delete(&channel).await;
    }
    let _ = connection.close(200, "done".into()).await;
}

/// Wait until `queue` has a consumer: a worker started on it is consuming.
pub async fn wait_for_consumer(
    channel: &Channel,
    queue: &str,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if inspect_queue(channel, queue).await?.consumer_count() > 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("nothing consumed {queue} within {within:?}")
}
