//! Every use of the pool with a client-side deadline on checkout and on the
//! work itself. A server that stops answering mid-transaction (a silent
//! network failure) would otherwise hold the caller, and the deliveries it
//! stands for, for as long as the link stays dead. Past the deadline the
//! connection is discarded, never returned to the pool: it may still be
//! inside a transaction on a link that comes back later. The server ends
//! that transaction itself (`idle_in_transaction_session_timeout`, see
//! `connect::SessionBounds`) and releases its locks.
//!
//! Every outcome is reported to the [`DatabaseHealth`]: an unreachable
//! database once (the outage log, and a probe that decides whether this
//! replica should give its deliveries back), a success to end it.

use std::time::{Duration, Instant};

use deadpool::managed::Object;
use diesel::QueryResult;
use diesel_async::pooled_connection::deadpool::PoolError;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::AsyncPgConnection;

use super::{DatabaseHealth, DbError, DbPool, FailureClass, Wait};
use crate::observability::metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Waiting for a pooled connection, opening one included.
    pub checkout: Duration,
    /// One unit of work on it (a transaction), from its first statement to
    /// its commit.
    pub transaction: Duration,
}

impl Default for Deadlines {
    /// The defaults of `DATABASE_POOL_TIMEOUT_SECS` and
    /// `DATABASE_TRANSACTION_TIMEOUT_SECS`.
    fn default() -> Self {
        Self {
            checkout: Duration::from_secs(5),
            transaction: Duration::from_secs(15),
        }
    }
}

/// The pool, its deadlines and the health they report to.
#[derive(Clone)]
pub struct BoundedPool {
    pool: DbPool,
    deadlines: Deadlines,
    health: DatabaseHealth,
}

impl BoundedPool {
    pub fn new(pool: DbPool, deadlines: Deadlines, health: DatabaseHealth) -> Self {
        Self {
            pool,
            deadlines,
            health,
        }
    }

    pub fn health(&self) -> &DatabaseHealth {
        &self.health
    }

    /// The pool's state, for the metrics.
    pub fn status(&self) -> deadpool::Status {
        self.pool.status()
    }

    /// Run `work` (one transaction, or one statement) on a pooled
    /// connection, each wait within its deadline.
    pub async fn run<T, F>(&self, work: F) -> Result<T, DbError>
    where
        F: AsyncFnOnce(&mut AsyncPgConnection) -> QueryResult<T>,
    {
        let started = Instant::now();
        let result = self.run_unreported(work).await;
        match &result {
            Ok(_) => self.health.succeeded(started),
            Err(error) if error.class() == FailureClass::Unavailable => self.health.failed(error),
            Err(_) => {}
        }
        result
    }

    /// As [`Self::run`], for a read on its own schedule (a sampled gauge, a
    /// setting refreshed): only its failures are reported. A read succeeds
    /// on a server that takes no writes, so its success says nothing of
    /// whether the database is ready for work, and must not end an outage
    /// the health's probe found (the worker would take deliveries again,
    /// only to fail them).
    pub async fn read<T, F>(&self, work: F) -> Result<T, DbError>
    where
        F: AsyncFnOnce(&mut AsyncPgConnection) -> QueryResult<T>,
    {
        let result = self.run_unreported(work).await;
        if let Err(error) = &result {
            if error.class() == FailureClass::Unavailable {
                self.health.failed(error);
            }
        }
        result
    }

    async fn run_unreported<T, F>(&self, work: F) -> Result<T, DbError>
    where
        F: AsyncFnOnce(&mut AsyncPgConnection) -> QueryResult<T>,
    {
        let Deadlines {
            checkout,
            transaction,
        } = self.deadlines;
        let checkout_timed_out = || DbError::TimedOut(Wait::Checkout(checkout));
        let mut conn = match metrics::within("database_checkout", checkout, self.pool.get()).await {
            Ok(Ok(conn)) => conn,
            Err(_) => return Err(checkout_timed_out()),
            // The pool's own step timeouts are the same deadline: when one
            // ends the checkout first (in the same timer tick), it is the
            // checkout deadline all the same, and counted as it.
            Ok(Err(PoolError::Timeout(_))) => {
                metrics::timed_out("database_checkout");
                return Err(checkout_timed_out());
            }
            Ok(Err(error)) => return Err(error.into()),
        };
        match metrics::within("database_transaction", transaction, work(&mut conn)).await {
            // A session that can no longer write (its server was fenced or
            // demoted under it) would fail every transaction it is given.
            Ok(Err(error)) if super::writable::is_read_only(&error) => {
                discard(conn);
                Err(error.into())
            }
            Ok(result) => Ok(result?),
            Err(_) => {
                discard(conn);
                Err(DbError::TimedOut(Wait::Transaction(transaction)))
            }
        }
    }
}

/// Take the connection out of the pool and close it: it may be in the middle
/// of a transaction, on a link that may come back.
fn discard(conn: Object<AsyncDieselConnectionManager<AsyncPgConnection>>) {
    drop(Object::take(conn));
}
