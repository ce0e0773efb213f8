//! Where Postgres is.

use clap::Args;

use super::DEFAULT_DATABASE_URL;
use crate::db::{DatabaseSettings, DatabaseUrl};

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Postgres URL; the database is created if missing. TLS with libpq's
    /// `sslmode` (disable, prefer, require, verify-ca, verify-full) and
    /// `sslrootcert`; `application_name` defaults to disconnect-worker.
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
            url: DatabaseUrl::parse(&self.database_url)?,
            pool_size: usize::from(self.database_pool_size),
        })
    }
}
