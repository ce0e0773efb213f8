//! Readiness: ready when the database answers and takes writes, and the
//! consumer is active.

use std::sync::Mutex;
use std::time::Duration;

use crate::db::writable::{check_writable, is_read_only};
use crate::db::{BoundedPool, DbError};

/// How long a readiness probe waits for the database.
const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Shared between the consume loop (which says whether it is consuming) and
/// the `/readyz` handler.
pub struct Readiness {
    pool: BoundedPool,
    /// `None` while consuming; otherwise why not (starting, reconnecting, ...).
    broker_problem: Mutex<Option<&'static str>>,
}

impl Readiness {
    pub fn new(pool: BoundedPool) -> Self {
        Self {
            pool,
            broker_problem: Mutex::new(Some("starting")),
        }
    }

    pub fn consuming(&self) {
        self.set_broker_problem(None);
    }

    pub fn not_consuming(&self, why: &'static str) {
        self.set_broker_problem(Some(why));
    }

    fn set_broker_problem(&self, problem: Option<&'static str>) {
        if let Ok(mut slot) = self.broker_problem.lock() {
            *slot = problem;
        }
    }

    /// The database pool's state, for the metrics.
    pub fn pool_status(&self) -> deadpool::Status {
        self.pool.status()
    }

    /// `Ok` when ready; otherwise a short reason for the probe's body.
    pub async fn check(&self) -> Result<(), String> {
        let problem = self
            .broker_problem
            .lock()
            .map(|slot| *slot)
            .unwrap_or(Some("unknown"));
        if let Some(problem) = problem {
            return Err(format!("broker: {problem}"));
        }
        if self.pool.health().is_down() {
            return Err("database: unreachable".into());
        }
        let ping = self.pool.run(check_writable);
        match tokio::time::timeout(DATABASE_CHECK_TIMEOUT, ping).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(DbError::Query(error))) if is_read_only(&error) => {
                Err("database: read-only (a standby, or a primary being demoted)".into())
            }
            Ok(Err(_)) => Err("database: not answering".into()),
            Err(_) => Err("database: timed out".into()),
        }
    }
}
