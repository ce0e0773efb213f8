//! The broker baseline: a pass-through consumer that receives each request,
//! publishes an event with publisher confirms and acknowledges, no database.
//! The same topology and prefetch as the worker. Run as fast as the broker
//! confirms, and again paced at the worker's half rate: what a paced stream
//! costs RabbitMQ and the load generator with no worker in it.

use std::sync::Arc;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::BasicProperties;
use serde::Serialize;

use super::amqp::{self, Measured};
use super::Args;
use disconnect_testkit::broker::{connect, unique_topology};
use disconnect_worker::broker::publish::{publish_confirmed, Routing};

#[derive(Debug, Clone, Serialize)]
pub struct BrokerBaseline {
    /// Requests per second offered, for a paced run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offered_rate: Option<f64>,
    #[serde(flatten)]
    pub measured: Measured,
}

/// One stream of `args.connections` requests through the pass-through
/// consumer, at `rate` per second if given.
pub async fn run(args: &Args, rate: Option<f64>) -> anyhow::Result<BrokerBaseline> {
    let topology = unique_topology("bench-broker");
    let (connection, channel) = connect(&args.amqp_url).await?;
    topology.declare(&channel).await?;

    // The pass-through consumer, on its own connection like a worker.
    let (consumer_connection, consume_channel) = connect(&args.amqp_url).await?;
    consume_channel
        .basic_qos(args.prefetch, BasicQosOptions::default())
        .await?;
    let publish_channel = consumer_connection.create_channel().await?;
    publish_channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut consumer = consume_channel
        .basic_consume(
            topology.request_queue.as_str().into(),
            "pass-through".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let exchange = Arc::new(topology.event_exchange.clone());
    let pass_through = tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            let channel = publish_channel.clone();
            let exchange = exchange.clone();
            tokio::spawn(async move {
                let request_id = delivery
                    .properties
                    .message_id()
                    .clone()
                    .unwrap_or_else(|| ShortString::from(""));
                let body = format!(
                    r#"{{"event_type":"connection.disconnected","request_id":"{request_id}"}}"#
                );
                let properties = BasicProperties::default().with_correlation_id(request_id);
                if publish_confirmed(
                    &channel,
                    &exchange,
                    "connection.disconnected",
                    // As the worker publishes its events.
                    Routing::AnyQueues,
                    body.as_bytes(),
                    properties,
                    // As bounded as the worker's publishes.
                    std::time::Duration::from_secs(5),
                )
                .await
                .is_ok()
                {
                    let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                }
            });
        }
    });

    let requests = amqp::requests_for(std::iter::repeat_n("bench-token", args.connections))?;
    let tap_channel = connection.create_channel().await?;
    let measured = amqp::measure_stream(&channel, &tap_channel, &topology, &requests, rate).await?;
    // The consumer cancelled first: deleting its queue under it makes the
    // broker cancel it while lapin cancels it too, and lapin takes the
    // second cancel-ok for a protocol error.
    pass_through.abort();
    let _ = consume_channel
        .basic_cancel("pass-through".into(), BasicCancelOptions::default())
        .await;
    let _ = consumer_connection.close(200, "done".into()).await;
    topology.delete(&channel).await;
    let _ = connection.close(200, "done".into()).await;
    Ok(BrokerBaseline {
        offered_rate: rate,
        measured,
    })
}
