//! How long rows are kept.

use std::time::Duration;

use clap::Args;

use crate::retention::RetentionSettings;

const DAY: u64 = 86_400;

#[derive(Debug, Clone, Args)]
pub struct RetentionArgs {
    /// Days a revoked token's row is kept after its revocation; 0 keeps it
    /// forever.
    #[arg(long, env = "REVOKED_TOKEN_RETENTION_DAYS", value_name = "REVOKED_TOKEN_RETENTION_DAYS",
          default_value_t = 90, value_parser = clap::value_parser!(u32).range(0..=36_500))]
    pub revoked_token_retention_days: u32,

    /// Days a disconnected connection's row is kept after its disconnect
    /// (and after its tokens are gone); 0 keeps it forever.
    #[arg(long, env = "DISCONNECTED_CONNECTION_RETENTION_DAYS",
          value_name = "DISCONNECTED_CONNECTION_RETENTION_DAYS", default_value_t = 90,
          value_parser = clap::value_parser!(u32).range(0..=36_500))]
    pub disconnected_connection_retention_days: u32,

    /// Days a request's audit row is kept; 0 keeps it forever. It is also
    /// the replay window: a company or client request older than this (less
    /// an hour) is refused as expired.
    #[arg(long, env = "AUDIT_RETENTION_DAYS", value_name = "AUDIT_RETENTION_DAYS",
          default_value_t = 365, value_parser = clap::value_parser!(u32).range(0..=36_500))]
    pub audit_retention_days: u32,

    /// Hours an event marked published by a version before 0.3.0 stays in
    /// the outbox table; 0 keeps them. From 0.3.0 an event leaves the outbox
    /// once the broker confirms it. Unpublished events are never deleted.
    #[arg(long, env = "OUTBOX_RETENTION_HOURS", value_name = "OUTBOX_RETENTION_HOURS",
          default_value_t = 168, value_parser = clap::value_parser!(u32).range(0..=87_600))]
    pub outbox_retention_hours: u32,

    /// Seconds between retention passes.
    #[arg(long, env = "RETENTION_INTERVAL_SECS", value_name = "RETENTION_INTERVAL_SECS",
          default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub retention_interval_secs: u64,

    /// Rows deleted per retention transaction.
    #[arg(long, env = "RETENTION_BATCH_SIZE", value_name = "RETENTION_BATCH_SIZE",
          default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub retention_batch_size: u32,
}

impl RetentionArgs {
    pub fn settings(&self) -> RetentionSettings {
        let days = |days: u32| (days > 0).then(|| Duration::from_secs(u64::from(days) * DAY));
        RetentionSettings {
            revoked_tokens: days(self.revoked_token_retention_days),
            disconnected_connections: days(self.disconnected_connection_retention_days),
            audit: days(self.audit_retention_days),
            published_events: (self.outbox_retention_hours > 0)
                .then(|| Duration::from_secs(u64::from(self.outbox_retention_hours) * 3600)),
            batch_size: i64::from(self.retention_batch_size),
            interval: Duration::from_secs(self.retention_interval_secs),
        }
    }
}
