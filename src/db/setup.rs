//! Creating the database, the pool and the schema.

use std::time::Duration;

use anyhow::Context;
use diesel::sql_types::Text;
use diesel::ConnectionError;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::{AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use futures_util::FutureExt;

use super::connect::{ConnectError, DatabaseUrl};
use super::DbPool;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// A digest of every file in `migrations/` (computed by `build.rs`): equal
/// digests mean identical schemas.
pub const MIGRATIONS_DIGEST: &str = env!("MIGRATIONS_DIGEST");

/// How long a caller waits for a pooled connection, and for a new one to be
/// opened, before the attempt counts as a transient failure and is retried.
const POOL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: DatabaseUrl,
    pub pool_size: usize,
}

/// Why the database could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The server did not answer, or did not let us in: worth waiting for.
    /// A TLS failure is not this, but `Failed`: a bad setting.
    #[error(transparent)]
    Unreachable(ConnectError),
    /// Something failed that waiting will not fix.
    #[error("{0:#}")]
    Failed(#[from] anyhow::Error),
}

impl SetupError {
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable(_))
    }
}

impl From<ConnectError> for SetupError {
    fn from(error: ConnectError) -> Self {
        if error.is_unreachable() {
            Self::Unreachable(error)
        } else {
            Self::Failed(error.into())
        }
    }
}

/// Build the connection pool; every connection is opened by
/// [`DatabaseUrl::establish`], TLS included. Connections are opened lazily,
/// so this does not fail when Postgres is down; the first query does, and
/// is retried.
pub fn connect(settings: &DatabaseSettings) -> anyhow::Result<DbPool> {
    let url = settings.url.clone();
    let mut config = ManagerConfig::default();
    config.custom_setup = Box::new(move |_| {
        let url = url.clone();
        async move {
            url.establish()
                .await
                .map_err(|error| ConnectionError::BadConnection(error.to_string()))
        }
        .boxed()
    });
    // The string is only handed back to `custom_setup`, which ignores it.
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
        settings.url.to_string(),
        config,
    );
    DbPool::builder(manager)
        .max_size(settings.pool_size)
        .wait_timeout(Some(POOL_TIMEOUT))
        .create_timeout(Some(POOL_TIMEOUT))
        .recycle_timeout(Some(POOL_TIMEOUT))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .context("building the database pool")
}

/// Create the database named in the URL if it does not exist, connecting to
/// the server's `postgres` database to do so. Safe to run from several
/// replicas at once.
pub async fn create_database_if_missing(url: &DatabaseUrl) -> Result<(), SetupError> {
    let Some(name) = url.database_name().map(ToString::to_string) else {
        return Err(anyhow::anyhow!("DATABASE_URL names no database").into());
    };
    match url.establish().await {
        // It exists and we can reach it: nothing to do.
        Ok(_) => return Ok(()),
        // A bad TLS setting fails here, not on the next connection.
        Err(error) if !error.is_unreachable() => return Err(error.into()),
        Err(_) => {}
    }
    let mut admin = url.with_database("postgres").establish().await?;
    #[derive(diesel::QueryableByName)]
    struct Exists {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        exists: bool,
    }
    let exists: Exists =
        diesel::sql_query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS exists")
            .bind::<Text, _>(&name)
            .get_result(&mut admin)
            .await
            .context("checking whether the database exists")?;
    if exists.exists {
        return Ok(());
    }
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    match diesel::sql_query(format!("CREATE DATABASE {quoted}"))
        .execute(&mut admin)
        .await
    {
        Ok(_) => {
            tracing::info!(database.name = %name, "created the database");
            Ok(())
        }
        // Another replica created it between our check and our CREATE.
        Err(error) if error.to_string().contains("already exists") => Ok(()),
        Err(error) => Err(anyhow::Error::new(error)
            .context(format!("creating the database {name}"))
            .into()),
    }
}

/// Key of the advisory lock that serialises migrations across replicas
/// (an arbitrary constant: "dw-migr" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x0064_772d_6d69_6772;

/// Apply every pending embedded migration. Replicas starting together queue on
/// an advisory lock, so each migration is applied once.
pub async fn migrate(url: &DatabaseUrl) -> Result<Vec<String>, SetupError> {
    let mut lock_holder = url.establish().await?;
    diesel::sql_query("SELECT pg_advisory_lock($1)")
        .bind::<diesel::sql_types::BigInt, _>(MIGRATION_LOCK_KEY)
        .execute(&mut lock_holder)
        .await
        .context("taking the migration lock")?;
    let applied = run_pending_migrations(url).await;
    // Closing the session releases the lock even if this fails.
    let _ = diesel::sql_query("SELECT pg_advisory_unlock($1)")
        .bind::<diesel::sql_types::BigInt, _>(MIGRATION_LOCK_KEY)
        .execute(&mut lock_holder)
        .await;
    applied
}

async fn run_pending_migrations(url: &DatabaseUrl) -> Result<Vec<String>, SetupError> {
    let conn = url.establish().await?;
    let mut harness = AsyncMigrationHarness::new(conn);
    // The harness blocks on the async connection; keep it off the async threads.
    let applied = tokio::task::spawn_blocking(move || {
        harness
            .run_pending_migrations(MIGRATIONS)
            .map(|versions| versions.iter().map(ToString::to_string).collect::<Vec<_>>())
            .map_err(|error| anyhow::anyhow!("applying migrations: {error}"))
    })
    .await
    .context("the migration task panicked")??;
    Ok(applied)
}
