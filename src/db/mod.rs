//! Postgres access: the pool, database creation, migrations, and one module of
//! small named queries per table. The outbox's table belongs to the outbox
//! (`crate::outbox::store`).

pub mod batch_connections;
pub mod bounded;
pub mod connect;
pub mod connections;
pub mod entities;
pub mod fanouts;
pub mod health;
pub mod replication;
pub mod requests;
pub mod schema;
pub mod setup;
pub mod tokens;
pub mod webhooks;
pub mod writable;

use diesel::result::{DatabaseErrorKind, Error as QueryError};
use diesel_async::pooled_connection::deadpool::{Pool, PoolError};
use diesel_async::AsyncPgConnection;

use crate::domain::{ConnectionId, RequestId};

pub use bounded::{BoundedPool, Deadlines};
pub use connect::{ConnectError, DatabaseUrl, SessionBounds};
pub use health::DatabaseHealth;
pub use setup::{connect, migrate, DatabaseSettings};

pub type DbPool = Pool<AsyncPgConnection>;

/// Run a bounded `DELETE` for retention: `statement`'s `$1` is the cutoff
/// time and `$2` the most rows to delete. Returns how many were deleted.
pub async fn delete_bounded(
    conn: &mut diesel_async::AsyncPgConnection,
    statement: &'static str,
    before: chrono::DateTime<chrono::Utc>,
    limit: i64,
) -> diesel::QueryResult<usize> {
    use diesel::sql_types::{BigInt, Timestamptz};
    use diesel_async::RunQueryDsl;
    diesel::sql_query(statement)
        .bind::<Timestamptz, _>(before)
        .bind::<BigInt, _>(limit)
        .execute(conn)
        .await
}

/// As [`delete_bounded`], for the rows an unpublished event kept by
/// reference is rebuilt from: `$3` is the smallest event id generated a day
/// after `before`. A reference is written in the transaction of the
/// disconnect it announces, so only references older than that can point to
/// a row disconnected or revoked before `before` (the day is room for the
/// clocks of two replicas); the statement probes those alone, an index
/// range of the primary key that is empty unless events were left
/// unpublished for the whole retention, instead of the whole table.
pub async fn delete_bounded_keeping_references(
    conn: &mut diesel_async::AsyncPgConnection,
    statement: &'static str,
    before: chrono::DateTime<chrono::Utc>,
    limit: i64,
) -> diesel::QueryResult<usize> {
    use diesel::sql_types::{BigInt, Timestamptz, Uuid as SqlUuid};
    use diesel_async::RunQueryDsl;
    let references_from = crate::domain::EventId::first_at(before + chrono::Duration::days(1));
    diesel::sql_query(statement)
        .bind::<Timestamptz, _>(before)
        .bind::<BigInt, _>(limit)
        .bind::<SqlUuid, _>(references_from)
        .execute(conn)
        .await
}

/// A connection disconnected by a request: what the revocation and the
/// connection update of one batch are made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnection {
    pub connection_id: ConnectionId,
    pub request_id: RequestId,
}

/// A failure talking to Postgres.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("could not get a database connection: {0}")]
    Pool(#[from] PoolError),
    #[error("database query failed: {0}")]
    Query(#[from] QueryError),
    /// A client-side deadline passed: the server did not answer in time.
    #[error("{0}")]
    TimedOut(Wait),
}

/// Which client-side deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Wait {
    /// No pooled connection within the checkout deadline: nothing of the
    /// work was attempted.
    #[error("no database connection within {0:?}")]
    Checkout(std::time::Duration),
    /// The transaction did not finish within its deadline; its connection
    /// was discarded, and the server ends the session's transaction itself
    /// (`idle_in_transaction_session_timeout`).
    #[error("the database did not answer within the transaction deadline of {0:?}")]
    Transaction(std::time::Duration),
}

impl DbError {
    /// Whether the work reached the database at all: not when no connection
    /// could be had, nor when the server it reached takes no writes (a
    /// standby, a fenced primary: nothing of it could have been done, and
    /// it is no fault of the request's, so it goes back uncounted).
    pub fn was_attempted(&self) -> bool {
        match self {
            Self::Pool(_) | Self::TimedOut(Wait::Checkout(_)) => false,
            Self::Query(error) => !writable::is_read_only(error),
            Self::TimedOut(Wait::Transaction(_)) => true,
        }
    }
}

/// What a failure means to whoever would try again. Decided here, where the
/// error is understood, so callers match on a closed set instead of
/// inspecting database errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Postgres cannot be reached, or does not take writes now (a failover in
    /// progress): an outage, which ends by itself.
    Unavailable,
    /// Postgres asked us to try again (a serialization failure), or a
    /// concurrent transaction recorded the same request id first: the next
    /// attempt sees the winner's work.
    Conflict,
    /// Postgres refused the statement (a constraint, a trigger, a schema
    /// problem): trying again as it is may not help.
    Refused,
}

impl DbError {
    pub fn class(&self) -> FailureClass {
        match self {
            Self::Pool(_) | Self::TimedOut(_) => FailureClass::Unavailable,
            Self::Query(error) => query_error_class(error),
        }
    }
}

fn query_error_class(error: &QueryError) -> FailureClass {
    match error {
        QueryError::DatabaseError(kind, info) => match kind {
            DatabaseErrorKind::UnableToSendCommand
            | DatabaseErrorKind::ClosedConnection
            | DatabaseErrorKind::ReadOnlyTransaction => FailureClass::Unavailable,
            DatabaseErrorKind::SerializationFailure => FailureClass::Conflict,
            DatabaseErrorKind::UniqueViolation
                if info.constraint_name() == Some(requests::PRIMARY_KEY) =>
            {
                FailureClass::Conflict
            }
            _ => FailureClass::Refused,
        },
        // The connection was left mid-transaction by an earlier failure; the
        // pool replaces it.
        QueryError::BrokenTransactionManager | QueryError::AlreadyInTransaction => {
            FailureClass::Unavailable
        }
        _ => FailureClass::Refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::result::DatabaseErrorInformation;

    struct Info(Option<&'static str>);

    impl DatabaseErrorInformation for Info {
        fn message(&self) -> &str {
            "test"
        }
        fn details(&self) -> Option<&str> {
            None
        }
        fn hint(&self) -> Option<&str> {
            None
        }
        fn table_name(&self) -> Option<&str> {
            None
        }
        fn column_name(&self) -> Option<&str> {
            None
        }
        fn constraint_name(&self) -> Option<&str> {
            self.0
        }
        fn statement_position(&self) -> Option<i32> {
            None
        }
    }

    fn database_error(kind: DatabaseErrorKind, constraint: Option<&'static str>) -> DbError {
        DbError::Query(QueryError::DatabaseError(kind, Box::new(Info(constraint))))
    }

    #[test]
    fn failures_are_classified_for_the_retry_policy() {
        use DatabaseErrorKind::*;
        let cases = [
            (
                database_error(ClosedConnection, None),
                FailureClass::Unavailable,
            ),
            (
                database_error(UnableToSendCommand, None),
                FailureClass::Unavailable,
            ),
            (
                database_error(ReadOnlyTransaction, None),
                FailureClass::Unavailable,
            ),
            (
                database_error(SerializationFailure, None),
                FailureClass::Conflict,
            ),
            (
                database_error(UniqueViolation, Some(requests::PRIMARY_KEY)),
                FailureClass::Conflict,
            ),
            (
                database_error(UniqueViolation, Some("access_tokens_token_hash_key")),
                FailureClass::Refused,
            ),
            (database_error(CheckViolation, None), FailureClass::Refused),
            (DbError::Query(QueryError::NotFound), FailureClass::Refused),
        ];
        for (error, class) in cases {
            assert_eq!(error.class(), class, "{error}");
        }
    }

    #[test]
    fn a_write_refused_by_a_read_only_server_was_not_attempted() {
        assert!(!database_error(DatabaseErrorKind::ReadOnlyTransaction, None).was_attempted());
        assert!(database_error(DatabaseErrorKind::ClosedConnection, None).was_attempted());
        assert!(DbError::TimedOut(Wait::Transaction(std::time::Duration::ZERO)).was_attempted());
        assert!(!DbError::TimedOut(Wait::Checkout(std::time::Duration::ZERO)).was_attempted());
    }
}
