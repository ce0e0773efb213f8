//! A whole application disconnected while ordinary requests keep coming:
//! how long the fan-out takes, and what latency the ordinary requests see
//! before and during it.
//!
//!   disconnect-bench --fanout-connections 100000 --fanout-tokens 10

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use disconnect_testkit::broker::{self, unique_topology, wait_for_consumer};
use disconnect_testkit::process::{worker_env, Logs};
use disconnect_testkit::WorkerProcess;
use disconnect_worker::broker::subscribe::{subscribe, Acks};
use disconnect_worker::domain::request::CONTENT_TYPE;
use disconnect_worker::domain::{ClientId, DisconnectRequest, Target};
use futures_util::StreamExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::BasicProperties;
use serde::Serialize;

use super::amqp;
use super::end_to_end::worker_binary;
use super::seed::BenchEnv;
use super::stats::Latency;
use super::Args;

const FANOUT_CLIENT: &str = "fanout";

#[derive(Debug, Clone, Serialize)]
pub struct Fanout {
    pub connections: usize,
    pub tokens: usize,
    pub chunk_size: u16,
    /// From publishing the request to its `disconnect.completed` event.
    pub seconds: f64,
    pub connections_per_second: f64,
    /// Ordinary requests offered per second, before and during the fan-out.
    pub ordinary_rate: f64,
    pub ordinary_before: Latency,
    pub ordinary_during: Latency,
    pub ordinary_during_count: usize,
}

pub async fn run(args: &Args, env: &BenchEnv) -> anyhow::Result<Fanout> {
    eprintln!(
        "seeding {} connections x {} tokens to disconnect whole...",
        args.fanout_connections, args.fanout_tokens
    );
    env.seed_connections(FANOUT_CLIENT, args.fanout_connections, args.fanout_tokens)
        .await?;
    // Enough ordinary requests for both phases at the offered rate.
    let ordinary_count = (args.fanout_rate * 600.0) as usize;
    let ordinary_tokens = env
        .seed_connections("ordinary", ordinary_count, args.tokens_per_connection)
        .await?;
    env.vacuum().await?;
    let mut ordinary = amqp::requests_for(ordinary_tokens.iter().map(String::as_str))?.into_iter();

    let topology = unique_topology("bench-fanout");
    let (connection, channel) = broker::connect(&args.amqp_url).await?;
    topology.declare(&channel).await?;
    let mut worker_env = worker_env(&env.database.url, &args.amqp_url, &topology);
    worker_env.extend([
        ("PREFETCH", args.prefetch.to_string()),
        ("BATCH_SIZE", args.batch_size.to_string()),
        ("BATCH_LINGER_MS", args.batch_linger_ms.to_string()),
        ("DATABASE_POOL_SIZE", args.pool_size.to_string()),
        ("FANOUT_CHUNK_SIZE", args.fanout_chunk_size.to_string()),
        ("AUTHORIZED_PUBLISHERS", "guest:*".into()),
        ("RUN_MIGRATIONS", "false".into()),
        ("RUST_LOG", "warn".into()),
    ]);
    let _worker = WorkerProcess::spawn(&worker_binary(args)?, &worker_env, Logs::Inherit)
        .context("starting the worker")?
        .terminate_on_drop();
    wait_for_consumer(&channel, &topology.request_queue, Duration::from_secs(30)).await?;

    // Before: ordinary requests alone, for 20 seconds.
    let before: Vec<_> = ordinary
        .by_ref()
        .take((args.fanout_rate * 20.0) as usize)
        .collect();
    let tap_channel = connection.create_channel().await?;
    let ordinary_before = amqp::measure_stream(
        &channel,
        &tap_channel,
        &topology,
        &before,
        Some(args.fanout_rate),
    )
    .await?
    .latency;

    // During: the client request, then ordinary requests at the same rate
    // until its completion arrives.
    let completion_channel = connection.create_channel().await?;
    let mut completions = subscribe(
        &completion_channel,
        &topology.event_exchange,
        &["disconnect.completed"],
        Acks::Automatic,
    )
    .await?;
    let during: Vec<_> = ordinary.collect();
    let tap_channel = connection.create_channel().await?;
    let arrivals = Arrivals::tap(&tap_channel, &topology.event_exchange).await?;

    // Asked now: `for_target` sets requested_at for a whole application.
    let request = DisconnectRequest::for_target(Target::Client {
        client_id: ClientId::parse(FANOUT_CLIENT.into()).map_err(anyhow::Error::msg)?,
    });
    let fanout_channel = connection.create_channel().await?;
    fanout_channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let started = Instant::now();
    fanout_channel
        .basic_publish(
            topology.request_exchange.as_str().into(),
            topology.request_routing_key.as_str().into(),
            BasicPublishOptions::default(),
            &request.encode(),
            BasicProperties::default()
                .with_content_type(ShortString::from(CONTENT_TYPE))
                .with_user_id(ShortString::from("guest"))
                .with_delivery_mode(2),
        )
        .await?
        .await?;

    let done = Arc::new(AtomicBool::new(false));
    let publisher = tokio::spawn({
        let done = done.clone();
        let channel = connection.create_channel().await?;
        let exchange = topology.request_exchange.clone();
        let routing_key = topology.request_routing_key.clone();
        let rate = args.fanout_rate;
        async move {
            let mut sent = Vec::new();
            let paced = Instant::now();
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            for (index, (request_id, body)) in during.into_iter().enumerate() {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                let due = paced + Duration::from_secs_f64(index as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                let at = Instant::now();
                channel
                    .basic_publish(
                        exchange.as_str().into(),
                        routing_key.as_str().into(),
                        BasicPublishOptions::default(),
                        &body,
                        BasicProperties::default()
                            .with_content_type(ShortString::from(CONTENT_TYPE))
                            .with_delivery_mode(2),
                    )
                    .await?
                    .await?;
                sent.push((request_id, at));
            }
            anyhow::Ok(sent)
        }
    });
    let wanted = request.request_id.to_string();
    loop {
        let delivery = tokio::time::timeout(Duration::from_secs(3600), completions.next())
            .await
            .context("the fan-out did not complete within an hour")?
            .context("the completion subscription closed")??;
        let correlation = delivery
            .properties
            .correlation_id()
            .as_ref()
            .map(ToString::to_string);
        if correlation.as_deref() == Some(wanted.as_str()) {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let sent = publisher.await??;
    let samples = arrivals.latencies(&sent, Duration::from_secs(60)).await?;
    topology.delete(&channel).await;
    let _ = connection.close(200, "done".into()).await;
    Ok(Fanout {
        connections: args.fanout_connections,
        tokens: args.fanout_connections * args.fanout_tokens,
        chunk_size: args.fanout_chunk_size,
        seconds,
        connections_per_second: args.fanout_connections as f64 / seconds,
        ordinary_rate: args.fanout_rate,
        ordinary_before,
        ordinary_during_count: samples.len(),
        ordinary_during: Latency::of(samples),
    })
}

/// When the first event of each request arrived, recorded as they come.
struct Arrivals(Arc<Mutex<HashMap<String, Instant>>>);

impl Arrivals {
    async fn tap(channel: &lapin::Channel, exchange: &str) -> anyhow::Result<Self> {
        let mut consumer = subscribe(channel, exchange, &["#"], Acks::Automatic).await?;
        let arrived = Arc::new(Mutex::new(HashMap::new()));
        tokio::spawn({
            let arrived = arrived.clone();
            async move {
                while let Some(Ok(delivery)) = consumer.next().await {
                    if let Some(request_id) = delivery.properties.correlation_id() {
                        let now = Instant::now();
                        if let Ok(mut arrived) = arrived.lock() {
                            arrived.entry(request_id.to_string()).or_insert(now);
                        }
                    }
                }
            }
        });
        Ok(Self(arrived))
    }

    /// Publish-to-event latency of each of `sent`, once all have arrived.
    async fn latencies(
        &self,
        sent: &[(String, Instant)],
        patience: Duration,
    ) -> anyhow::Result<Vec<Duration>> {
        let deadline = Instant::now() + patience;
        loop {
            let latencies: Option<Vec<Duration>> = {
                let arrived = self.0.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                sent.iter()
                    .map(|(id, at)| Some(arrived.get(id)?.duration_since(*at)))
                    .collect()
            };
            if let Some(latencies) = latencies {
                return Ok(latencies);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "ordinary events stopped arriving"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub fn print(result: &Fanout) {
    println!(
        "\nA whole application: {} connections, {} tokens, FANOUT_CHUNK_SIZE={}\n",
        result.connections, result.tokens, result.chunk_size
    );
    println!(
        "fan-out: {:.1} s from publishing the request to disconnect.completed ({:.0} connections/s)\n",
        result.seconds, result.connections_per_second
    );
    println!(
        "| ordinary requests at {:.0}/s | requests | p50 ms | p99 ms | max ms |",
        result.ordinary_rate
    );
    println!("|---|---:|---:|---:|---:|");
    let before = &result.ordinary_before;
    println!(
        "| before the fan-out | {:.0} | {:.1} | {:.1} | {:.1} |",
        result.ordinary_rate * 20.0,
        before.p50_ms,
        before.p99_ms,
        before.max_ms
    );
    let during = &result.ordinary_during;
    println!(
        "| during the fan-out | {} | {:.1} | {:.1} | {:.1} |",
        result.ordinary_during_count, during.p50_ms, during.p99_ms, during.max_ms
    );
}
