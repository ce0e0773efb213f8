//! The worker end to end: the real worker binary consuming, requests
//! published as fast as the broker takes them (or at a set rate), events
//! counted and timed as they arrive.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use disconnect_testkit::broker::{self, unique_topology, wait_for_consumer};
use disconnect_testkit::process::{worker_env, Logs};
use disconnect_testkit::WorkerProcess;
use serde::Serialize;

use super::amqp::{self, Measured};
use super::population;
use super::seed::BenchEnv;
use super::writes::{self, Writes};
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
    /// Spans received by the OTLP receiver, in the traced run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spans_exported: Option<usize>,
    /// What the run wrote to Postgres, per request.
    pub writes: Writes,
    /// How the tokens' and connections' pages were found: in
    /// `shared_buffers` or read from outside it.
    pub buffers: population::BufferUse,
}

pub fn worker_binary(args: &Args) -> anyhow::Result<PathBuf> {
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

/// Resident memory of a process, from /proc: (current, peak) in MiB.
pub fn memory_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|line| line.starts_with(name))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// One run of the worker binary: `extra_env` on top of the benchmark's
/// settings (the traced run's OTLP endpoint).
pub async fn run(
    args: &Args,
    bench: &BenchEnv,
    label: &str,
    rate: Option<f64>,
    extra_env: &[(&'static str, String)],
) -> anyhow::Result<EndToEnd> {
    let tokens = bench.tokens_for_run(args, label).await?;
    let topology = unique_topology(&format!("bench-{label}"));
    let (connection, channel) = broker::connect(&args.amqp_url).await?;
    topology.declare(&channel).await?;
    let mut env = worker_env(&bench.database.url, &args.amqp_url, &topology);
    env.extend([
        ("PREFETCH", args.prefetch.to_string()),
        ("BATCH_SIZE", args.batch_size.to_string()),
        ("BATCH_LINGER_MS", args.batch_linger_ms.to_string()),
        ("DATABASE_POOL_SIZE", args.pool_size.to_string()),
        ("RUN_MIGRATIONS", "false".into()),
        ("RUST_LOG", "warn".into()),
        // A worker's first retention pass runs as it starts, inside the
        // measured phase, and its search for revoked tokens reads the whole
        // token table (1.2 s of two cores at 10 M tokens, docs/scaling.md);
        // in service it runs every 10 minutes on one replica. Measured apart.
        ("REVOKED_TOKEN_RETENTION_DAYS", "0".into()),
    ]);
    env.extend(extra_env.iter().cloned());
    let worker = WorkerProcess::spawn(&worker_binary(args)?, &env, Logs::Inherit)
        .context("starting the worker")?
        .terminate_on_drop();
    let pid = worker.pid();
    wait_for_consumer(&channel, &topology.request_queue, Duration::from_secs(30)).await?;
    let before = writes::snapshot(&bench.pool).await?;
    let blocks_before = population::blocks(&bench.pool).await?;

    let requests = amqp::requests_for(tokens.iter().map(String::as_str))?;
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
    // Stopped (SIGTERM, waited for) before the second snapshot: its
    // outbox's last deletes are written, and its sessions report their rows.
    drop(worker);
    let measured = measured?;
    writes::wait_for_worker_sessions_to_end(&bench.pool).await?;
    let after = writes::snapshot(&bench.pool).await?;
    let writes = writes::between(&bench.pool, &before, &after, requests.len()).await?;
    let buffers = population::between(
        &blocks_before,
        &population::blocks(&bench.pool).await?,
        requests.len(),
    );
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
        spans_exported: None,
        writes,
        buffers,
    })
}
