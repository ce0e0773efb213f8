//! Settings of the webhook commands: the key that seals endpoint secrets,
//! which addresses receivers may have, and the dispatcher's (`deliver`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::webhooks::address::AddressPolicy;
use crate::webhooks::schedule::RetrySchedule;
use crate::webhooks::secrets::SealingKey;

pub const WEBHOOK_SECRET_KEY: &str = "WEBHOOK_SECRET_KEY";
pub const WEBHOOK_ALLOWED_CIDRS: &str = "WEBHOOK_ALLOWED_CIDRS";
pub const WEBHOOK_RETRY_SCHEDULE_SECS: &str = "WEBHOOK_RETRY_SCHEDULE_SECS";

/// The operator's key for endpoint secrets.
#[derive(Debug, Clone, Args)]
pub struct WebhookKeyArgs {
    /// 32 random bytes in base64 (`openssl rand -base64 32`) that seal
    /// every endpoint's signing secret in the database. Keep it in a
    /// secret store; without it no secret can be read back, and a new key
    /// makes every endpoint's secret unreadable (rotate-secret them).
    #[arg(long, env = WEBHOOK_SECRET_KEY, value_name = WEBHOOK_SECRET_KEY, hide_env_values = true)]
    pub webhook_secret_key: Option<String>,
}

impl WebhookKeyArgs {
    pub fn key(&self) -> Result<SealingKey, String> {
        let value = self
            .webhook_secret_key
            .as_deref()
            .filter(|value| !value.trim().is_empty())
            .ok_or_else(|| {
                format!("{WEBHOOK_SECRET_KEY} is required (32 bytes in base64: `openssl rand -base64 32`)")
            })?;
        SealingKey::parse(WEBHOOK_SECRET_KEY, value)
    }
}

/// Where receivers may be.
#[derive(Debug, Clone, Args)]
pub struct WebhookAddressArgs {
    /// CIDRs receivers may be in although they are private, loopback,
    /// link-local, ... (comma-separated: `10.20.0.0/16,fd00:1::/64`). Empty:
    /// only public addresses.
    #[arg(long, env = WEBHOOK_ALLOWED_CIDRS, value_name = WEBHOOK_ALLOWED_CIDRS, default_value = "")]
    pub webhook_allowed_cidrs: String,

    /// Allow plain `http://` endpoints (test setups; never in production).
    #[arg(long, env = "WEBHOOK_ALLOW_HTTP", value_name = "WEBHOOK_ALLOW_HTTP", default_value_t = false,
          action = clap::ArgAction::Set)]
    pub webhook_allow_http: bool,
}

impl WebhookAddressArgs {
    pub fn policy(&self) -> Result<AddressPolicy, String> {
        AddressPolicy::parse(WEBHOOK_ALLOWED_CIDRS, &self.webhook_allowed_cidrs)
    }
}

/// The dispatcher's settings.
#[derive(Debug, Clone, Args)]
pub struct DeliverArgs {
    /// The dispatcher's quorum queue, bound to the event exchange for every
    /// outcome event type; replicas share it.
    #[arg(
        long,
        env = "WEBHOOK_QUEUE",
        value_name = "WEBHOOK_QUEUE",
        default_value = "connection.events.webhooks"
    )]
    pub webhook_queue: String,

    /// Seconds to wait after each failed attempt (comma-separated); after
    /// the last, the delivery has failed. Svix's schedule by default: 5 s,
    /// 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (eight attempts, about 27 h).
    #[arg(long, env = WEBHOOK_RETRY_SCHEDULE_SECS, value_name = WEBHOOK_RETRY_SCHEDULE_SECS,
          default_value = "5,300,1800,7200,18000,36000,36000")]
    pub webhook_retry_schedule_secs: String,

    /// Each wait varies at random by up to this fraction either way.
    #[arg(
        long,
        env = "WEBHOOK_RETRY_JITTER",
        value_name = "WEBHOOK_RETRY_JITTER",
        default_value_t = 0.2
    )]
    pub webhook_retry_jitter: f64,

    /// The least wait after a timeout, 429, 502 or 504 (the receiver is
    /// overloaded: the schedule's first steps would only add to it).
    #[arg(
        long,
        env = "WEBHOOK_SLOW_DOWN_SECS",
        value_name = "WEBHOOK_SLOW_DOWN_SECS",
        default_value_t = 60.0
    )]
    pub webhook_slow_down_secs: f64,

    /// Seconds an attempt may take, connecting included.
    #[arg(
        long,
        env = "WEBHOOK_TIMEOUT_SECS",
        value_name = "WEBHOOK_TIMEOUT_SECS",
        default_value_t = 15.0
    )]
    pub webhook_timeout_secs: f64,

    /// An endpoint whose attempts have all failed for this long is
    /// disabled (5 days by default), with a `webhook.endpoint_disabled`
    /// event.
    #[arg(
        long,
        env = "WEBHOOK_DISABLE_AFTER_SECS",
        value_name = "WEBHOOK_DISABLE_AFTER_SECS",
        default_value_t = 432_000
    )]
    pub webhook_disable_after_secs: u64,

    /// Attempts in flight at once in this replica.
    #[arg(long, env = "WEBHOOK_CONCURRENCY", value_name = "WEBHOOK_CONCURRENCY", default_value_t = 64,
          value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub webhook_concurrency: u16,

    /// Attempts in flight at once to one endpoint in this replica: what a
    /// slow receiver can hold.
    #[arg(long, env = "WEBHOOK_ENDPOINT_CONCURRENCY", value_name = "WEBHOOK_ENDPOINT_CONCURRENCY",
          default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub webhook_endpoint_concurrency: u16,

    /// How often due retries are looked for, in milliseconds (new events
    /// are attempted at once).
    #[arg(long, env = "WEBHOOK_POLL_MILLIS", value_name = "WEBHOOK_POLL_MILLIS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub webhook_poll_millis: u64,

    /// Events taken from the queue before the first is acknowledged.
    #[arg(long, env = "WEBHOOK_PREFETCH", value_name = "WEBHOOK_PREFETCH", default_value_t = 100,
          value_parser = clap::value_parser!(u16).range(1..=10_000))]
    pub webhook_prefetch: u16,

    /// Days a finished delivery (and its attempts) is kept for `webhooks
    /// attempts` and `resend`; pending ones are kept until they finish.
    /// 0 keeps them forever.
    #[arg(
        long,
        env = "WEBHOOK_RETENTION_DAYS",
        value_name = "WEBHOOK_RETENTION_DAYS",
        default_value_t = 30
    )]
    pub webhook_retention_days: u32,

    /// Port of /healthz, /readyz and /metrics; 0 turns the listener off.
    #[arg(
        long,
        env = "HTTP_PORT",
        value_name = "HTTP_PORT",
        default_value_t = 9090
    )]
    pub http_port: u16,

    #[command(flatten)]
    pub key: WebhookKeyArgs,

    #[command(flatten)]
    pub addresses: WebhookAddressArgs,
}

/// The dispatcher's settings, checked.
#[derive(Debug, Clone)]
pub struct DeliverSettings {
    pub queue: String,
    pub schedule: RetrySchedule,
    pub timeout: Duration,
    pub disable_after: Duration,
    pub concurrency: usize,
    pub endpoint_concurrency: usize,
    pub poll: Duration,
    pub prefetch: u16,
    /// `None`: kept forever.
    pub retention: Option<Duration>,
    pub http_address: Option<SocketAddr>,
    pub key: Arc<SealingKey>,
    pub policy: Arc<AddressPolicy>,
}

fn seconds(setting: &str, value: f64, low: f64, high: f64) -> Result<Duration, String> {
    if value.is_finite() && value >= low && value <= high {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(format!(
            "{setting} must be from {low} to {high} seconds, not {value}"
        ))
    }
}

impl DeliverArgs {
    pub fn settings(&self) -> Result<DeliverSettings, String> {
        if !(0.0..=0.5).contains(&self.webhook_retry_jitter) {
            return Err(format!(
                "WEBHOOK_RETRY_JITTER must be from 0 to 0.5, not {}",
                self.webhook_retry_jitter
            ));
        }
        if self.webhook_queue.trim().is_empty() {
            return Err("WEBHOOK_QUEUE must not be empty".into());
        }
        Ok(DeliverSettings {
            queue: self.webhook_queue.clone(),
            schedule: RetrySchedule {
                delays: RetrySchedule::parse_delays(
                    WEBHOOK_RETRY_SCHEDULE_SECS,
                    &self.webhook_retry_schedule_secs,
                )?,
                jitter: self.webhook_retry_jitter,
                slow_down: seconds(
                    "WEBHOOK_SLOW_DOWN_SECS",
                    self.webhook_slow_down_secs,
                    0.0,
                    86_400.0,
                )?,
            },
            timeout: seconds(
                "WEBHOOK_TIMEOUT_SECS",
                self.webhook_timeout_secs,
                0.1,
                120.0,
            )?,
            disable_after: Duration::from_secs(self.webhook_disable_after_secs),
            concurrency: usize::from(self.webhook_concurrency),
            endpoint_concurrency: usize::from(self.webhook_endpoint_concurrency),
            poll: Duration::from_millis(self.webhook_poll_millis),
            prefetch: self.webhook_prefetch,
            retention: (self.webhook_retention_days > 0)
                .then(|| Duration::from_secs(u64::from(self.webhook_retention_days) * 86_400)),
            http_address: (self.http_port != 0)
                .then(|| SocketAddr::from(([0, 0, 0, 0], self.http_port))),
            key: Arc::new(self.key.key()?),
            policy: Arc::new(self.addresses.policy()?),
        })
    }
}
