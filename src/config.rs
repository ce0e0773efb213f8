//! Configuration: every setting is a command-line flag with an environment
//! variable behind it and a default that works against the local services.
//! A bad value stops start-up with a message that names the variable.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::broker::topology::Topology;
use crate::db::DatabaseSettings;
use crate::retry::RetrySettings;
use crate::secret::SecretUrl;
use crate::worker::WorkerSettings;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@localhost:5432/disconnect_worker";
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@localhost:5672/%2f";
/// The application a token belongs to when `token issue` is not told.
pub const DEFAULT_CLIENT_ID: &str = "default-app";

/// Where Postgres is.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Postgres URL; the database is created if missing.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub database_url: String,

    /// Largest number of Postgres connections the worker opens.
    #[arg(long, env = "DATABASE_POOL_SIZE", value_name = "DATABASE_POOL_SIZE", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=512))]
    pub database_pool_size: u16,
}

impl DatabaseArgs {
    pub fn settings(&self) -> Result<DatabaseSettings, String> {
        Ok(DatabaseSettings {
            url: SecretUrl::parse(
                "DATABASE_URL",
                &self.database_url,
                &["postgres", "postgresql"],
            )?,
            pool_size: usize::from(self.database_pool_size),
        })
    }
}

/// Where RabbitMQ is, and the names of everything declared there.
#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// AMQP URL (amqp:// or amqps://). Default: amqp://guest:***@localhost:5672/%2f.
    #[arg(long, env = "AMQP_URL", default_value = DEFAULT_AMQP_URL, hide_env_values = true,
          hide_default_value = true)]
    pub amqp_url: String,

    /// Durable direct exchange that upstream applications publish requests to.
    #[arg(
        long,
        env = "REQUEST_EXCHANGE",
        value_name = "REQUEST_EXCHANGE",
        default_value = "disconnect.requests"
    )]
    pub request_exchange: String,

    /// Quorum queue the worker consumes requests from.
    #[arg(
        long,
        env = "REQUEST_QUEUE",
        value_name = "REQUEST_QUEUE",
        default_value = "disconnect.requests"
    )]
    pub request_queue: String,

    /// Routing key binding the request queue to the request exchange.
    #[arg(
        long,
        env = "REQUEST_ROUTING_KEY",
        value_name = "REQUEST_ROUTING_KEY",
        default_value = "disconnect"
    )]
    pub request_routing_key: String,

    /// Exchange that bad and undeliverable requests are dead-lettered to.
    #[arg(
        long,
        env = "DEAD_LETTER_EXCHANGE",
        value_name = "DEAD_LETTER_EXCHANGE",
        default_value = "disconnect.dead"
    )]
    pub dead_letter_exchange: String,

    /// Queue that keeps dead-lettered requests for people to inspect.
    #[arg(
        long,
        env = "DEAD_LETTER_QUEUE",
        value_name = "DEAD_LETTER_QUEUE",
        default_value = "disconnect.requests.dead"
    )]
    pub dead_letter_queue: String,

    /// Durable topic exchange that outcome events are published to.
    #[arg(
        long,
        env = "EVENT_EXCHANGE",
        value_name = "EVENT_EXCHANGE",
        default_value = "connection.events"
    )]
    pub event_exchange: String,

    /// Deliveries of one message before RabbitMQ dead-letters it (quorum
    /// queue `x-delivery-limit`): the backstop for a message that keeps failing.
    #[arg(long, env = "DELIVERY_LIMIT", value_name = "DELIVERY_LIMIT", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub delivery_limit: u32,
}

impl BrokerArgs {
    pub fn amqp_url(&self) -> Result<SecretUrl, String> {
        SecretUrl::parse("AMQP_URL", &self.amqp_url, &["amqp", "amqps"])
    }

    pub fn topology(&self) -> Result<Topology, String> {
        let names = [
            ("REQUEST_EXCHANGE", &self.request_exchange),
            ("REQUEST_QUEUE", &self.request_queue),
            ("DEAD_LETTER_EXCHANGE", &self.dead_letter_exchange),
            ("DEAD_LETTER_QUEUE", &self.dead_letter_queue),
            ("EVENT_EXCHANGE", &self.event_exchange),
        ];
        for (setting, name) in names {
            check_amqp_name(setting, name)?;
        }
        if self.request_routing_key.len() > 255 {
            return Err("REQUEST_ROUTING_KEY is longer than 255 bytes".into());
        }
        if self.request_queue == self.dead_letter_queue {
            return Err("DEAD_LETTER_QUEUE must differ from REQUEST_QUEUE".into());
        }
        if self.request_exchange == self.dead_letter_exchange
            || self.event_exchange == self.request_exchange
            || self.event_exchange == self.dead_letter_exchange
        {
            return Err(
                "REQUEST_EXCHANGE, DEAD_LETTER_EXCHANGE and EVENT_EXCHANGE must be three different exchanges".into(),
            );
        }
        Ok(Topology {
            request_exchange: self.request_exchange.clone(),
            request_queue: self.request_queue.clone(),
            request_routing_key: self.request_routing_key.clone(),
            dead_letter_exchange: self.dead_letter_exchange.clone(),
            dead_letter_queue: self.dead_letter_queue.clone(),
            event_exchange: self.event_exchange.clone(),
            delivery_limit: self.delivery_limit,
        })
    }
}

/// AMQP names are at most 255 bytes; the empty name and `amq.` names are the
/// broker's own.
fn check_amqp_name(setting: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 255 {
        return Err(format!("{setting} must be 1 to 255 bytes long"));
    }
    if name.starts_with("amq.") {
        return Err(format!(
            "{setting} must not start with `amq.` (reserved by RabbitMQ)"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{setting} must not contain control characters"));
    }
    Ok(())
}

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
    /// still being processed; an idle worker never waits. 0: never wait.
    #[arg(long, env = "BATCH_LINGER_MS", value_name = "BATCH_LINGER_MS", default_value_t = 5,
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

    /// Seconds allowed, after SIGTERM or SIGINT, to finish in-flight work and
    /// publish pending events before the worker gives up and exits non-zero.
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

    /// Hours a published event stays in the outbox table before it is
    /// deleted (the audit record in disconnect_requests stays); 0 keeps them.
    #[arg(long, env = "OUTBOX_RETENTION_HOURS", value_name = "OUTBOX_RETENTION_HOURS", default_value_t = 168,
          value_parser = clap::value_parser!(u32).range(0..=87_600))]
    pub outbox_retention_hours: u32,

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
}

impl WorkerArgs {
    pub fn retry(&self) -> Result<RetrySettings, String> {
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

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Everything `run` needs, validated.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub database: DatabaseSettings,
    pub amqp_url: SecretUrl,
    pub topology: Topology,
    pub worker: WorkerSettings,
    pub run_migrations: bool,
    /// Where to serve the HTTP endpoints; `None`: not at all.
    pub http_address: Option<SocketAddr>,
}

impl RunSettings {
    pub fn from_args(
        db: &DatabaseArgs,
        broker: &BrokerArgs,
        worker: &WorkerArgs,
    ) -> Result<Self, String> {
        Ok(Self {
            database: db.settings()?,
            amqp_url: broker.amqp_url()?,
            topology: broker.topology()?,
            worker: WorkerSettings {
                prefetch: worker.prefetch,
                batch_size: usize::from(worker.batch_size.min(worker.prefetch)),
                batch_linger: Duration::from_millis(worker.batch_linger_ms),
                max_request_bytes: worker.max_request_bytes as usize,
                retry: worker.retry()?,
                shutdown_grace: Duration::from_secs(worker.shutdown_grace_secs),
                outbox_poll_interval: Duration::from_millis(worker.outbox_poll_ms),
                outbox_batch_size: i64::from(worker.outbox_batch_size),
                outbox_relay_delay: Duration::from_millis(worker.outbox_relay_delay_ms),
                outbox_retention: (worker.outbox_retention_hours > 0)
                    .then(|| Duration::from_secs(u64::from(worker.outbox_retention_hours) * 3600)),
            },
            run_migrations: worker.run_migrations,
            http_address: (worker.http_port != 0)
                .then(|| SocketAddr::from(([0, 0, 0, 0], worker.http_port))),
        })
    }
}
