//! Creating the database, the pool and the schema.

use anyhow::Context;
use diesel::migration::MigrationSource;
use diesel::sql_types::Text;
use diesel::ConnectionError;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use futures_util::FutureExt;

use super::connect::{ConnectError, DatabaseUrl};
use super::{DbPool, Deadlines};
use crate::outbox::OutboxFormat;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// A digest of every file in `migrations/` (computed by `build.rs`): equal
/// digests mean identical schemas.
pub const MIGRATIONS_DIGEST: &str = env!("MIGRATIONS_DIGEST");

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// With its session bounds.
    pub url: DatabaseUrl,
    pub pool_size: usize,
    /// Client-side deadlines on checkout and on each transaction.
    pub deadlines: Deadlines,
}

/// Why the database could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The server did not answer, or did not let us in: worth waiting for.
    /// A TLS failure is not this, but `Failed`: a bad setting.
    #[error(transparent)]
    Unreachable(ConnectError),
    /// Something failed that waiting will not fix. Transparent, so that the
    /// cause is printed once (`{:#}` prints the source chain itself).
    #[error(transparent)]
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
    // Checked when taken from the pool, in place of the default `SELECT 1`:
    // a connection to a server that no longer takes writes is dropped, and
    // its replacement opened (with `target_session_attrs=read-write`, on
    // the host that does).
    config.recycling_method = RecyclingMethod::CustomFunction(Box::new(|conn| {
        super::writable::check_writable(conn).boxed()
    }));
    // The string is only handed back to `custom_setup`, which ignores it.
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
        settings.url.to_string(),
        config,
    );
    // deadpool's own timeouts bound each step (the wait for a free slot,
    // opening, and the check of a connection taken from the pool, which
    // hangs on a dead path); `BoundedPool` bounds the whole checkout.
    let step = settings.deadlines.checkout;
    DbPool::builder(manager)
        .max_size(settings.pool_size)
        .wait_timeout(Some(step))
        .create_timeout(Some(step))
        .recycle_timeout(Some(step))
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
    let url = url.with_bounds(url.bounds().for_schema_changes());
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
        Err(error) if created_concurrently(&error) => {
            tracing::debug!(database.name = %name, "another replica created the database first");
            Ok(())
        }
        Err(error) => Err(anyhow::anyhow!("creating the database {name}: {error}").into()),
    }
}

/// Whether `CREATE DATABASE` failed because another session created the
/// same database between our check and our statement. Postgres says so in
/// one of two ways, depending on where the race is lost: `duplicate_database`
/// ("already exists"), or a unique violation on the catalog's
/// `pg_database_datname_index` when both inserted the catalog row at once.
fn created_concurrently(error: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match error {
        Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => true,
        Error::DatabaseError(_, info) => info.message().contains("already exists"),
        _ => false,
    }
}

/// Key of the advisory lock that serialises migrations across replicas
/// (an arbitrary constant: "dw-migr" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x0064_772d_6d69_6772;

/// Apply every pending embedded migration. Replicas starting together queue on
/// an advisory lock, so each migration is applied once. A database that had
/// none (this release creates it: no older release has run on it) gets the
/// `by_reference` outbox format; one upgraded keeps migration 12's `whole`
/// (see `outbox::format`).
pub async fn migrate(url: &DatabaseUrl) -> Result<Vec<String>, SetupError> {
    // Index builds take as long as the table needs, and the lock is waited
    // for while another replica migrates: no statement timeout.
    let url = &url.with_bounds(url.bounds().for_schema_changes());
    let mut lock_holder = url.establish().await?;
    diesel::sql_query("SELECT pg_advisory_lock($1)")
        .bind::<diesel::sql_types::BigInt, _>(MIGRATION_LOCK_KEY)
        .execute(&mut lock_holder)
        .await
        .context("taking the migration lock")?;
    let applied = match run_pending_migrations(url).await {
        Ok(applied) if applied.len() == all_migrations()? => {
            crate::outbox::format::store(&mut lock_holder, OutboxFormat::ByReference)
                .await
                .context("setting the outbox format of a new database")?;
            Ok(applied)
        }
        other => other,
    };
    // Closing the session releases the lock even if this fails.
    let _ = diesel::sql_query("SELECT pg_advisory_unlock($1)")
        .bind::<diesel::sql_types::BigInt, _>(MIGRATION_LOCK_KEY)
        .execute(&mut lock_holder)
        .await;
    applied
}

/// How many migrations this release has.
fn all_migrations() -> Result<usize, SetupError> {
    MigrationSource::<diesel::pg::Pg>::migrations(&MIGRATIONS)
        .map(|migrations| migrations.len())
        .map_err(|error| anyhow::anyhow!("reading the embedded migrations: {error}").into())
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
