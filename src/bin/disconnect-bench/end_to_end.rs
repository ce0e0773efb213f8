//! The worker end to end: the real worker binary consuming, requests
//! published as fast as the broker takes them (or at a set rate), events
//! counted and timed as they arrive.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use disconnect_worker::broker::topology::inspect_queue;
use disconnect_worker::broker::Topology;
use lapin::Channel;
use serde::Serialize;

use super::amqp::{self, Measured};
use super::seed::BenchEnv;
use super::Args;

#[derive(Debug, Clone, Serialize)]
pub struct EndToEnd {
    #[serde(flatten)]
    pub measured: Measured,
    pub offered_rate: Option<f64>,
    /// Peak resident memory of the worker process (VmHWM), MiB.
    pub peak_memory_mib: f64,
    /// Resident memory sampled every 100 ms while requests flowed: the
    /// lowest and highest after the first quarter of the run, MiB.
    pub steady_memory_mib: (f64, f64),
}

pub fn unique_topology(run: &str) -> Topology {
    Topology::with_prefix(
        &format!(
            "bench-{run}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ),
        10,
    )
}

fn worker_binary(args: &Args) -> anyhow::Result<PathBuf> {
    let path = match &args.worker_binary {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the benchmark's directory")?
            .join("disconnect-worker"),
    };
    anyhow::ensure!(
        path.exists(),
        "{} not found: run `cargo build --release` first",
        path.display()
    );
    Ok(path)
}

/// The worker process, stopped with SIGTERM when dropped.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// Resident memory of a process, from /proc: (current, peak) in MiB.
fn memory_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|line| line.starts_with(name))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

pub async fn run(
    args: &Args,
    env: &BenchEnv,
    label: &str,
    rate: Option<f64>,
) -> anyhow::Result<EndToEnd> {
    let tokens = env
        .seed_connections(
            &format!("e2e-{label}"),
            args.connections,
            args.tokens_per_connection,
        )
        .await?;
    let topology = unique_topology(label);
    let (connection, channel) = amqp::connect(&args.amqp_url).await?;
    topology.declare(&channel).await?;
    let child = Command::new(worker_binary(args)?)
        .arg("run")
        .env("DATABASE_URL", &env.database_url)
        .env("AMQP_URL", &args.amqp_url)
        .env("REQUEST_EXCHANGE", &topology.request_exchange)
        .env("REQUEST_QUEUE", &topology.request_queue)
        .env("REQUEST_ROUTING_KEY", &topology.request_routing_key)
        .env("DEAD_LETTER_EXCHANGE", &topology.dead_letter_exchange)
        .env("DEAD_LETTER_QUEUE", &topology.dead_letter_queue)
        .env("EVENT_EXCHANGE", &topology.event_exchange)
        .env("PREFETCH", args.prefetch.to_string())
        .env("BATCH_SIZE", args.batch_size.to_string())
        .env("BATCH_LINGER_MS", args.batch_linger_ms.to_string())
        .env("DATABASE_POOL_SIZE", args.pool_size.to_string())
        .env("RUN_MIGRATIONS", "false")
        .env("HTTP_PORT", "0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("starting the worker")?;
    let worker = Worker(child);
    let pid = worker.0.id();
    wait_for_consumer(&channel, &topology.request_queue).await?;

    let requests = amqp::requests_for(tokens.iter().map(String::as_str));
    let tap_channel = connection.create_channel().await?;
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn({
        let sampling = sampling.clone();
        async move {
            let mut samples = Vec::new();
            while sampling.load(Ordering::Relaxed) {
                let Some((rss, _)) = memory_mib(pid) else {
                    break;
                };
                samples.push(rss);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            samples
        }
    });
    let measured = amqp::measure_stream(&channel, &tap_channel, &topology, &requests, rate).await;
    let (_, peak_memory_mib) = memory_mib(pid).unwrap_or_default();
    sampling.store(false, Ordering::Relaxed);
    let samples = sampler.await.unwrap_or_default();
    drop(worker);
    let measured = measured?;
    let steady = &samples[samples.len() / 4..];
    let steady_memory_mib = (
        steady.iter().copied().reduce(f64::min).unwrap_or_default(),
        steady.iter().copied().reduce(f64::max).unwrap_or_default(),
    );
    topology.delete(&channel).await;
    let _ = connection.close(200, "done".into()).await;
    Ok(EndToEnd {
        measured,
        offered_rate: rate,
        peak_memory_mib,
        steady_memory_mib,
    })
}

async fn wait_for_consumer(channel: &Channel, queue: &str) -> anyhow::Result<()> {
    for _ in 0..300 {
        let declared = inspect_queue(channel, queue).await?;
        if declared.consumer_count() > 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the worker did not start consuming within 30 s")
}
