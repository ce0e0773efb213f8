//! Broker plumbing shared by the runs: unique names, publishing requests as
//! fast as the broker confirms them (or at a set rate), and timing events.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use disconnect_worker::broker::subscribe::{subscribe, Acks};
use disconnect_worker::broker::Topology;
use disconnect_worker::domain::request::CONTENT_TYPE;
use disconnect_worker::domain::{AccessToken, DisconnectRequest};
use futures_util::StreamExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel};
use serde::Serialize;
use tokio::task::JoinHandle;

use super::cpu::{self, CpuUse};
use super::stats::Latency;

/// Publish every (request id, body), persistent, with confirms; at `rate`
/// per second if given. Returns when each was handed to the broker.
pub async fn publish_requests(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    requests: &[(String, Vec<u8>)],
    rate: Option<f64>,
) -> anyhow::Result<HashMap<String, Instant>> {
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let started = Instant::now();
    let mut sent = HashMap::with_capacity(requests.len());
    for (index, (request_id, body)) in requests.iter().enumerate() {
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(index as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let properties = BasicProperties::default()
            .with_content_type(ShortString::from(CONTENT_TYPE))
            .with_message_id(ShortString::from(request_id.as_str()))
            .with_delivery_mode(2);
        sent.insert(request_id.clone(), Instant::now());
        channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await?;
        // Keep the unconfirmed window bounded, as a real producer would.
        if index % 1000 == 999 {
            channel.wait_for_confirms().await?;
        }
    }
    channel.wait_for_confirms().await?;
    Ok(sent)
}

/// A queue bound to every event of `exchange`; the task returns, once
/// `expected` distinct requests have an event, when each first arrived.
/// Record when the event of each of `expected` first arrives; events of
/// other requests (there should be none) are ignored rather than counted.
pub async fn tap_events(
    channel: &Channel,
    exchange: &str,
    expected: HashSet<String>,
) -> anyhow::Result<JoinHandle<HashMap<String, Instant>>> {
    let mut consumer = subscribe(channel, exchange, &["#"], Acks::Automatic).await?;
    Ok(tokio::spawn(async move {
        let mut arrived = HashMap::with_capacity(expected.len());
        while arrived.len() < expected.len() {
            let Some(Ok(delivery)) = consumer.next().await else {
                break;
            };
            if let Some(request_id) = delivery.properties.correlation_id() {
                let request_id = request_id.to_string();
                if expected.contains(&request_id) {
                    arrived.entry(request_id).or_insert_with(Instant::now);
                }
            }
        }
        arrived
    }))
}

/// A request for each token: (request id, body).
pub fn requests_for<'a>(
    tokens: impl Iterator<Item = &'a str>,
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    tokens
        .map(|token| {
            let token = AccessToken::parse(token.to_string()).map_err(anyhow::Error::msg)?;
            let request = DisconnectRequest::new(token);
            Ok((request.request_id.to_string(), request.encode()))
        })
        .collect()
}

/// Throughput and latency of one stream of requests.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    /// CPU used while the run was measured.
    pub cpu: CpuUse,
    pub requests: usize,
    pub seconds: f64,
    pub requests_per_second: f64,
    pub latency: Latency,
}

/// Subscribe to the events, publish the requests (at `rate` per second if
/// given), and wait for every request's event: throughput from the first
/// publish to the last event, latency from each publish to its event.
pub async fn measure_stream(
    publish_channel: &Channel,
    tap_channel: &Channel,
    topology: &Topology,
    requests: &[(String, Vec<u8>)],
    rate: Option<f64>,
) -> anyhow::Result<Measured> {
    let expected = requests.iter().map(|(id, _)| id.clone()).collect();
    let tap = tap_events(tap_channel, &topology.event_exchange, expected).await?;
    let cpu_before = cpu::snapshot();
    let started = Instant::now();
    let sent = publish_requests(
        publish_channel,
        &topology.request_exchange,
        &topology.request_routing_key,
        requests,
        rate,
    )
    .await?;
    let arrived = tokio::time::timeout(Duration::from_secs(600), tap)
        .await
        .map_err(|_| anyhow::anyhow!("events stopped arriving"))??;
    let cpu = cpu_before.per_thousand(&cpu::snapshot(), requests.len());
    anyhow::ensure!(
        arrived.len() == requests.len(),
        "only {} of {} events arrived",
        arrived.len(),
        requests.len()
    );
    let seconds = arrived
        .values()
        .max()
        .map_or(0.0, |last| last.duration_since(started).as_secs_f64());
    Ok(Measured {
        cpu,
        requests: requests.len(),
        seconds,
        requests_per_second: requests.len() as f64 / seconds,
        latency: Latency::of(
            sent.iter()
                .filter_map(|(id, at)| Some(arrived.get(id)?.duration_since(*at)))
                .collect(),
        ),
    })
}
