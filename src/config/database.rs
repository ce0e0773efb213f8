//! Where Postgres is, and how long any wait on it may last.

use std::time::Duration;

use clap::Args;

use super::DEFAULT_DATABASE_URL;
use crate::db::{DatabaseSettings, DatabaseUrl, Deadlines, SessionBounds};

pub const DATABASE_CONNECT_TIMEOUT_SECS: &str = "DATABASE_CONNECT_TIMEOUT_SECS";
pub const DATABASE_POOL_TIMEOUT_SECS: &str = "DATABASE_POOL_TIMEOUT_SECS";
pub const DATABASE_TRANSACTION_TIMEOUT_SECS: &str = "DATABASE_TRANSACTION_TIMEOUT_SECS";
pub const DATABASE_STATEMENT_TIMEOUT_SECS: &str = "DATABASE_STATEMENT_TIMEOUT_SECS";
pub const DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECS: &str =
    "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECS";
pub const DATABASE_KEEPALIVE_SECS: &str = "DATABASE_KEEPALIVE_SECS";
pub const DATABASE_TCP_USER_TIMEOUT_SECS: &str = "DATABASE_TCP_USER_TIMEOUT_SECS";

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Postgres URL; the database is created if missing. TLS with libpq's
    /// `sslmode` (disable, prefer, require, verify-ca, verify-full) and
    /// `sslrootcert`; `application_name` defaults to disconnect-worker.
    /// Several hosts as libpq takes them (`h1:5432,h2:5432`, or `host=` and
    /// `port=` lists), with `target_session_attrs=read-write`.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub database_url: String,

    /// Largest number of Postgres connections the worker opens.
    #[arg(long, env = "DATABASE_POOL_SIZE", value_name = "DATABASE_POOL_SIZE", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=512))]
    pub database_pool_size: u16,

    /// Seconds to open a connection: TCP, TLS and the Postgres handshake.
    #[arg(long, env = DATABASE_CONNECT_TIMEOUT_SECS, value_name = DATABASE_CONNECT_TIMEOUT_SECS,
          default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub database_connect_timeout_secs: u64,

    /// Seconds a task waits for a pooled connection (opening one included)
    /// before its work goes back: a batch of requests to the queue.
    #[arg(long, env = DATABASE_POOL_TIMEOUT_SECS, value_name = DATABASE_POOL_TIMEOUT_SECS,
          default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub database_pool_timeout_secs: u64,

    /// Seconds one transaction may take, measured by the worker. Past it
    /// the connection is discarded (the server may no longer be hearing
    /// us) and the work is handed back. Must exceed
    /// DATABASE_STATEMENT_TIMEOUT_SECS, so that on a working link the
    /// server's own timeout ends a slow statement first.
    #[arg(long, env = DATABASE_TRANSACTION_TIMEOUT_SECS, value_name = DATABASE_TRANSACTION_TIMEOUT_SECS,
          default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub database_transaction_timeout_secs: u64,

    /// The server's `statement_timeout` for the worker's sessions, in
    /// seconds (a lock wait counts); 0 leaves the server's or the role's
    /// setting. Migrations run without one.
    #[arg(long, env = DATABASE_STATEMENT_TIMEOUT_SECS, value_name = DATABASE_STATEMENT_TIMEOUT_SECS,
          default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub database_statement_timeout_secs: u64,

    /// The server's `idle_in_transaction_session_timeout` for the worker's
    /// sessions, in seconds: the server ends the session of a worker it
    /// stopped hearing from in the middle of a transaction, and releases its
    /// row locks, after this long. 0 leaves the server's or the role's.
    #[arg(long, env = DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECS,
          value_name = DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECS,
          default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub database_idle_in_transaction_timeout_secs: u64,

    /// Seconds of silence on a connection before TCP keepalive probes start,
    /// and between probes, on the worker's sockets and (as
    /// `tcp_keepalives_idle` and `_interval`) on the server's side; 0 leaves
    /// the operating system's two hours.
    #[arg(long, env = DATABASE_KEEPALIVE_SECS, value_name = DATABASE_KEEPALIVE_SECS,
          default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub database_keepalive_secs: u64,

    /// `TCP_USER_TIMEOUT` in seconds, on both ends: how long sent data (or a
    /// keepalive probe) may go unacknowledged before the kernel ends the
    /// connection; 0 leaves the operating system's (minutes).
    #[arg(long, env = DATABASE_TCP_USER_TIMEOUT_SECS, value_name = DATABASE_TCP_USER_TIMEOUT_SECS,
          default_value_t = 15, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub database_tcp_user_timeout_secs: u64,
}

impl DatabaseArgs {
    pub fn settings(&self) -> Result<DatabaseSettings, String> {
        let deadlines = Deadlines {
            checkout: secs(self.database_pool_timeout_secs),
            transaction: secs(self.database_transaction_timeout_secs),
        };
        if self.database_statement_timeout_secs >= self.database_transaction_timeout_secs {
            return Err(format!(
                "{DATABASE_STATEMENT_TIMEOUT_SECS} ({}) must be less than \
                 {DATABASE_TRANSACTION_TIMEOUT_SECS} ({}): on a working link the server's \
                 timeout must end a slow statement before the worker gives up on the connection",
                self.database_statement_timeout_secs, self.database_transaction_timeout_secs
            ));
        }
        Ok(DatabaseSettings {
            url: DatabaseUrl::parse(&self.database_url)?.with_bounds(self.bounds()),
            pool_size: usize::from(self.database_pool_size),
            deadlines,
        })
    }

    fn bounds(&self) -> SessionBounds {
        let optional = |value: u64| (value > 0).then(|| secs(value));
        SessionBounds {
            connect: secs(self.database_connect_timeout_secs),
            statement: optional(self.database_statement_timeout_secs),
            idle_in_transaction: optional(self.database_idle_in_transaction_timeout_secs),
            keepalive: optional(self.database_keepalive_secs),
            tcp_user_timeout: optional(self.database_tcp_user_timeout_secs),
        }
    }
}

fn secs(value: u64) -> Duration {
    Duration::from_secs(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        database: DatabaseArgs,
    }

    fn parse(args: &[&str]) -> Result<DatabaseSettings, String> {
        let mut all = vec!["test"];
        all.extend_from_slice(args);
        Wrapper::try_parse_from(all)
            .map_err(|error| error.to_string())?
            .database
            .settings()
    }

    #[test]
    fn the_defaults_are_the_bounds_the_code_calls_default() {
        let settings = parse(&[]).expect("defaults");
        assert_eq!(settings.url.bounds(), SessionBounds::default());
        assert_eq!(settings.deadlines, Deadlines::default());
    }

    #[test]
    fn a_statement_timeout_not_below_the_transaction_deadline_is_refused_by_name() {
        let error = parse(&[
            "--database-statement-timeout-secs",
            "15",
            "--database-transaction-timeout-secs",
            "15",
        ])
        .expect_err("refused");
        assert!(error.contains(DATABASE_STATEMENT_TIMEOUT_SECS), "{error}");
        let zero = parse(&["--database-statement-timeout-secs", "0"]).expect("0 is off");
        assert_eq!(zero.url.bounds().statement, None);
    }
}
