//! disconnect-bench: measures, in one run against the local Postgres and
//! RabbitMQ, on data it seeds itself, how fast the worker drains disconnect
//! requests compared with what the database and the broker allow alone.
//!
//!   cargo run --release --bin disconnect-bench -- --connections 5000 --json bench.json
//!
//! With `--webhooks`, only the webhook dispatcher (`deliver`) is measured:
//!
//!   cargo run --release --bin disconnect-bench -- --webhooks --json webhooks.json

mod amqp;
mod batch_path;
mod broker_baseline;
mod cpu;
mod db_baseline;
mod end_to_end;
mod fanout;
mod population;
mod report;
mod seed;
mod stats;
mod webhooks;
mod writes;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

use disconnect_worker::config::{DEFAULT_AMQP_URL, DEFAULT_DATABASE_URL};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "disconnect-bench",
    about = "Benchmark the disconnect worker against its own limits"
)]
pub struct Args {
    /// Connections seeded per measured run; each run disconnects all of them.
    #[arg(long, default_value_t = 5000)]
    pub connections: usize,
    /// Tokens per connection.
    #[arg(long, default_value_t = 5)]
    pub tokens_per_connection: usize,
    /// Extra token rows (on other connections) seeded first, to measure how
    /// throughput holds as the table grows.
    #[arg(long, default_value_t = 0)]
    pub padding_token_rows: usize,
    /// Run the measured requests against a population of this many tokens
    /// (`--tokens-per-connection` to a connection), seeded once in bulk into
    /// a database that is kept (`disconnect_bench_pop_<tokens>_...`) and
    /// reused by later runs; each request names a connection picked at
    /// random among all of it. 0: the default, a fresh database per run.
    #[arg(long, default_value_t = 0)]
    pub population_tokens: usize,
    /// Before the measured runs, load the population's tables and indexes
    /// into `shared_buffers` with `pg_prewarm`, as a server in service for
    /// days holds what fits of them. Without it, a run after a restart or a
    /// seed measures a cold cache. Needs `--population-tokens`.
    #[arg(long, requires = "population_tokens")]
    pub prewarm: bool,
    /// Tokens of the one large connection whose revocation is timed.
    #[arg(long, default_value_t = 100_000)]
    pub large_connection_tokens: usize,
    /// Concurrent transactions of the database baseline.
    #[arg(long, default_value_t = 16)]
    pub db_concurrency: usize,
    /// Prefetch of the broker baseline's consumer and of the worker.
    #[arg(long, default_value_t = 256)]
    pub prefetch: u16,
    /// Worker BATCH_SIZE.
    #[arg(long, default_value_t = 64)]
    pub batch_size: u16,
    /// Worker BATCH_LINGER_MS.
    #[arg(long, default_value_t = 10)]
    pub batch_linger_ms: u64,
    /// Worker DATABASE_POOL_SIZE.
    #[arg(long, default_value_t = 8)]
    pub pool_size: u16,
    /// Server to create the benchmark database on (the database part is ignored).
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub database_url: String,
    #[arg(long, env = "AMQP_URL", default_value = DEFAULT_AMQP_URL, hide_env_values = true, hide_default_value = true)]
    pub amqp_url: String,
    /// The worker binary; default: `disconnect-worker` beside this program.
    #[arg(long)]
    pub worker_binary: Option<PathBuf>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Rate of the paced run, requests/s; default: half the saturating rate.
    #[arg(long)]
    pub paced_rate: Option<f64>,
    /// Print EXPLAIN ANALYZE of the revocation statements; with
    /// `--batch-path-only`, log each batch statement's duration through
    /// auto_explain instead.
    #[arg(long)]
    pub explain: bool,
    /// Measure only Postgres's CPU per request on the batch path: batches of
    /// `--batch-size` from `--pool-size` sessions, no broker.
    #[arg(long)]
    pub batch_path_only: bool,
    /// Also run the worker saturated while it exports every span (the
    /// default sampler) to an OTLP receiver in this process, to measure what
    /// tracing costs.
    #[arg(long)]
    pub traced: bool,
    /// Run only the fan-out scenario: a request for a whole application of
    /// this many connections, while ordinary requests keep coming.
    #[arg(long, default_value_t = 0)]
    pub fanout_connections: usize,
    /// Tokens per connection of the application disconnected whole.
    #[arg(long, default_value_t = 10)]
    pub fanout_tokens: usize,
    /// Worker FANOUT_CHUNK_SIZE in the fan-out scenario.
    #[arg(long, default_value_t = 200)]
    pub fanout_chunk_size: u16,
    /// Ordinary requests per second before and during the fan-out.
    #[arg(long, default_value_t = 200.0)]
    pub fanout_rate: f64,
    /// Run only the webhook dispatcher's measurement (`disconnect-worker
    /// deliver`): events published straight to the event exchange, for
    /// endpoints that are loopback receivers in this program.
    #[arg(long)]
    pub webhooks: bool,
    /// Receivers answering 200 at once, each an endpoint of the one
    /// application (beside one receiver that never answers).
    #[arg(long, default_value_t = 4)]
    pub webhook_receivers: usize,
    /// Without the receiver that never answers: the baseline its presence
    /// is compared with.
    #[arg(long)]
    pub webhook_without_dead_receiver: bool,
    /// Events published as fast as the broker confirms, to measure the
    /// dispatcher's deliveries per second.
    #[arg(long, default_value_t = 20_000)]
    pub webhook_events: usize,
    /// Seconds of events at half the saturating rate, to measure latency.
    #[arg(long, default_value_t = 30)]
    pub webhook_paced_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    cpu::set_worker_binary(&end_to_end::worker_binary(&args)?);
    let env = seed::BenchEnv::create(&args)
        .await
        .context("preparing the benchmark database")?;
    if args.webhooks {
        let result = webhooks::run(&args, &env).await;
        env.drop_database().await;
        let result = result?;
        webhooks::print(&result);
        return write_json(&args, &webhooks::Report { webhooks: result });
    }
    if args.fanout_connections > 0 {
        let result = fanout::run(&args, &env).await;
        env.drop_database().await;
        let result = result?;
        fanout::print(&result);
        return write_json(&args, &result);
    }
    if args.batch_path_only {
        let result = batch_path::run(&args, &env).await;
        env.drop_database().await;
        let result = result?;
        batch_path::print(&result);
        return write_json(&args, &result);
    }
    let result = run(&args, &env).await;
    env.drop_database().await;
    let results = result?;
    report::print(&args, &results);
    write_json(&args, &results)
}

/// Write the results as JSON to `--json`, if given.
fn write_json(args: &Args, results: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(results)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("results written to {}", path.display());
    }
    Ok(())
}

async fn run(args: &Args, env: &seed::BenchEnv) -> anyhow::Result<report::Results> {
    let at_rest = if args.population_tokens > 0 {
        Some(env.prepare_population(args).await?)
    } else {
        None
    };
    if args.padding_token_rows > 0 {
        eprintln!("seeding {} padding token rows...", args.padding_token_rows);
        env.seed_padding(args.padding_token_rows).await?;
    }
    eprintln!(
        "database baseline: {} requests, {} concurrent transactions...",
        args.connections, args.db_concurrency
    );
    let db = db_baseline::run(args, env).await?;
    eprintln!(
        "broker baseline: {} requests through a pass-through consumer...",
        args.connections
    );
    let broker = broker_baseline::run(args, None).await?;
    eprintln!("worker, saturating: {} requests...", args.connections);
    let saturating = end_to_end::run(args, env, "sat", None, &[]).await?;
    let half_rate = args
        .paced_rate
        .unwrap_or(saturating.measured.requests_per_second / 2.0);
    eprintln!("worker, half rate ({half_rate:.0} requests/s)...");
    let half = end_to_end::run(args, env, "half", Some(half_rate), &[]).await?;
    eprintln!("broker baseline, half rate ({half_rate:.0} requests/s)...");
    let broker_half = broker_baseline::run(args, Some(half_rate)).await?;
    let traced = if args.traced {
        eprintln!("worker, saturating, exporting every span...");
        let receiver = disconnect_testkit::otlp::OtlpReceiver::start().await?;
        let exporting = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
            ("OTEL_TRACES_SAMPLER", "parentbased_always_on".to_string()),
        ];
        let mut run = end_to_end::run(args, env, "traced", None, &exporting).await?;
        run.spans_exported = Some(receiver.spans().len());
        Some(run)
    } else {
        None
    };
    eprintln!(
        "one connection with {} tokens...",
        args.large_connection_tokens
    );
    let large = db_baseline::revoke_large_connection(args, env).await?;
    if args.explain {
        env.explain().await?;
    }
    Ok(report::Results::new(
        args,
        at_rest,
        report::Baselines {
            database: db,
            broker,
            broker_half_rate: broker_half,
        },
        saturating,
        half,
        traced,
        large,
    ))
}
