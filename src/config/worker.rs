//! How the worker consumes, retries, publishes and stops.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use crate::outbox::OutboxSettings;
use crate::retry::RetrySettings;
use crate::worker::{BrokerSettings, ConsumeSettings, Settings};

use super::retention::RetentionArgs;
use super::scopes::ScopeArgs;
use super::{BrokerArgs, DatabaseArgs};

/// How the worker consumes, retries and stops.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Unacknowledged deliveries the broker sends ahead (AMQP prefetch): the
    /// number of requests processed at once, and the bound on memory.
    #[arg(long, env = "PREFETCH", value_name = "PREFETCH", default_value_t = 256,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: u16,

    /// Most requests processed in one database transaction (and acknowledged
    /// after its commit). A batch is made of unacknowledged deliveries, so
    /// PREFETCH caps it too.
    #[arg(long, env = "BATCH_SIZE", value_name = "BATCH_SIZE", default_value_t = 64,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub batch_size: u16,

    /// Milliseconds a batch waits for more requests while earlier batches are
    /// still being processed; an idle worker never waits. 0: never wait. 10
    /// rather than 5: batches about twice as large at half the saturating
    /// rate, a sixth less Postgres CPU per request, half-rate latency no
    /// worse (docs/performance.md, "Settings").
    #[arg(long, env = "BATCH_LINGER_MS", value_name = "BATCH_LINGER_MS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub batch_linger_ms: u64,

    /// Largest request body accepted; larger ones are dead-lettered.
    #[arg(long, env = "MAX_REQUEST_BYTES", value_name = "MAX_REQUEST_BYTES", default_value_t = 16 * 1024,
          value_parser = clap::value_parser!(u32).range(64..=(64 * 1024 * 1024)))]
    pub max_request_bytes: u32,

    /// First retry delay after a transient failure, in milliseconds.
    #[arg(long, env = "RETRY_MIN_DELAY_MS", value_name = "RETRY_MIN_DELAY_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub retry_min_delay_ms: u64,

    /// Longest retry delay, in milliseconds; delays double up to it, with jitter.
    #[arg(long, env = "RETRY_MAX_DELAY_MS", value_name = "RETRY_MAX_DELAY_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub retry_max_delay_ms: u64,

    /// Attempts at a request that fails for a reason other than an unreachable
    /// database before it is handed back to the broker. Outages are retried
    /// until they end.
    #[arg(long, env = "RETRY_MAX_ATTEMPTS", value_name = "RETRY_MAX_ATTEMPTS", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub retry_max_attempts: u32,

    /// Seconds allowed, after SIGTERM or SIGINT, to finish in-flight work
    /// (past it the worker exits non-zero and the deliveries are redelivered)
    /// and publish pending events (those not published by then stay in the
    /// outbox for another replica's relay).
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", value_name = "SHUTDOWN_GRACE_SECS", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub shutdown_grace_secs: u64,

    /// Milliseconds between relay sweeps for events left unpublished (by a
    /// crash, or by another replica that died).
    #[arg(long, env = "OUTBOX_POLL_MS", value_name = "OUTBOX_POLL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub outbox_poll_ms: u64,

    /// Milliseconds an event may stay unpublished before the relay publishes it
    /// in place of the worker that wrote it. Each worker publishes its own events
    /// right after commit; this only delays recovery from a crash. Shorter
    /// means more events published twice when a worker is slow to mark them.
    #[arg(long, env = "OUTBOX_RELAY_DELAY_MS", value_name = "OUTBOX_RELAY_DELAY_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(500..=3_600_000))]
    pub outbox_relay_delay_ms: u64,

    /// Events published per relay sweep before the next batch is claimed.
    #[arg(long, env = "OUTBOX_BATCH_SIZE", value_name = "OUTBOX_BATCH_SIZE", default_value_t = 100,
          value_parser = clap::value_parser!(u16).range(1..=10_000))]
    pub outbox_batch_size: u16,

    /// Port of the HTTP listener for /healthz, /readyz and /metrics, on all
    /// interfaces; 0 turns the listener off.
    #[arg(
        long,
        env = "HTTP_PORT",
        value_name = "HTTP_PORT",
        default_value_t = 9090
    )]
    pub http_port: u16,

    /// Create the database if missing and apply migrations before consuming.
    /// Turn off when a separate `migrate` job does it.
    #[arg(long, env = "RUN_MIGRATIONS", value_name = "RUN_MIGRATIONS", default_value_t = true,
          action = clap::ArgAction::Set)]
    pub run_migrations: bool,

    #[command(flatten)]
    pub scopes: ScopeArgs,

    #[command(flatten)]
    pub retention: RetentionArgs,
}

impl WorkerArgs {
    fn retry(&self) -> Result<RetrySettings, String> {
        if self.retry_min_delay_ms > self.retry_max_delay_ms {
            return Err("RETRY_MIN_DELAY_MS must not exceed RETRY_MAX_DELAY_MS".into());
        }
        Ok(RetrySettings {
            min_delay: Duration::from_millis(self.retry_min_delay_ms),
            max_delay: Duration::from_millis(self.retry_max_delay_ms),
            max_attempts: self.retry_max_attempts as usize,
        })
    }
}

/// Everything `run` needs, validated; the first bad value is named.
pub fn run_settings(
    database: &DatabaseArgs,
    broker: &BrokerArgs,
    worker: &WorkerArgs,
) -> Result<Settings, String> {
    let retry = worker.retry()?;
    let topology = broker.topology()?;
    let database = database.settings()?;
    let confirm_timeout = broker.confirm_timeout();
    // The relay waits for confirms inside a transaction.
    if confirm_timeout >= database.deadlines.transaction {
        return Err(format!(
            "{} must be less than {}: the outbox relay waits for confirms inside a transaction",
            super::broker::AMQP_CONFIRM_TIMEOUT_SECS,
            super::database::DATABASE_TRANSACTION_TIMEOUT_SECS
        ));
    }
    Ok(Settings {
        database,
        consume: ConsumeSettings {
            batch_size: usize::from(worker.batch_size.min(worker.prefetch)),
            batch_linger: Duration::from_millis(worker.batch_linger_ms),
            max_request_bytes: worker.max_request_bytes as usize,
        },
        outbox: OutboxSettings {
            exchange: topology.event_exchange.clone(),
            relay_delay: Duration::from_millis(worker.outbox_relay_delay_ms),
            poll_interval: Duration::from_millis(worker.outbox_poll_ms),
            batch_size: i64::from(worker.outbox_batch_size),
            confirm_timeout,
            retry: retry.clone(),
        },
        broker: BrokerSettings {
            urls: broker.amqp_urls()?,
            topology,
            declare_topology: broker.declare_topology,
            prefetch: worker.prefetch,
        },
        scopes: worker.scopes.settings()?,
        retention: worker.retention.settings(),
        retry,
        shutdown_grace: Duration::from_secs(worker.shutdown_grace_secs),
        run_migrations: worker.run_migrations,
        http_address: (worker.http_port != 0)
            .then(|| SocketAddr::from(([0, 0, 0, 0], worker.http_port))),
    })
}
