//! Postgres access: the pool, database creation, migrations, and one module of
//! small named queries per table.

pub mod connections;
pub mod outbox;
pub mod requests;
pub mod schema;
pub mod setup;
pub mod tokens;

use diesel::result::{DatabaseErrorKind, Error as QueryError};
use diesel_async::pooled_connection::deadpool::{Pool, PoolError};
use diesel_async::AsyncPgConnection;

pub use setup::{connect, migrate, DatabaseSettings};

pub type DbPool = Pool<AsyncPgConnection>;

/// A failure talking to Postgres, classified for the retry policy.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("could not get a database connection: {0}")]
    Pool(#[from] PoolError),
    #[error("database query failed: {0}")]
    Query(#[from] QueryError),
}

impl DbError {
    /// Worth retrying as it is: the database was unreachable or asked us to try
    /// again. Anything else is a bug or a schema problem that retrying at once
    /// will not fix.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Pool(_) => true,
            Self::Query(error) => query_error_is_transient(error),
        }
    }
}

fn query_error_is_transient(error: &QueryError) -> bool {
    match error {
        QueryError::DatabaseError(kind, _) => matches!(
            kind,
            DatabaseErrorKind::SerializationFailure
                | DatabaseErrorKind::UnableToSendCommand
                | DatabaseErrorKind::ClosedConnection
                | DatabaseErrorKind::ReadOnlyTransaction
        ),
        QueryError::BrokenTransactionManager | QueryError::AlreadyInTransaction => true,
        _ => false,
    }
}
