//! From a batch of decoded requests to one [`Settlement`] per delivery, with
//! the worker's one retry policy. No AMQP here, and the database sits behind
//! [`RecordDisconnects`], so these rules are unit-tested with a fake.
//!
//! The rules:
//! - bad input is dead-lettered, and never reaches the database;
//! - the valid requests go to the database in one transaction; committed or
//!   found done before, each is acknowledged;
//! - an outage or a conflict is retried with backoff until it passes, or
//!   until the worker stops (the requests are then released);
//! - unless this replica finds its database unreachable (its
//!   [`DatabaseHealth`] is down: a path cut for this replica alone, say):
//!   then it gives the requests back at once, so that another replica can
//!   take them; the worker closes its broker session meanwhile. A request
//!   that reached the database goes back counted (`Retry`: its transaction
//!   may be what hangs), one that never got a connection uncounted
//!   (`Release`);
//! - a refusal is retried `RETRY_MAX_ATTEMPTS` times in all; a refused batch
//!   is then split so that one request the database refuses does not hold
//!   back its neighbours, and a request refused on its own is returned to
//!   the queue counted against the delivery limit.

use std::future::Future;

use backon::BackoffBuilder;
use tokio_util::sync::CancellationToken;

use super::settlement::Settlement;
use crate::db::{DatabaseHealth, DbError, FailureClass};
use crate::domain::{DisconnectRequest, Rejection};
use crate::observability::metrics;
use crate::retry::RetrySettings;
use crate::service::Processed;

/// The database side of processing: record the requests in one transaction,
/// one attempt, and hand their events to the outbox once committed.
pub trait RecordDisconnects: Send + Sync + 'static {
    fn record(
        &self,
        requests: &[DisconnectRequest],
    ) -> impl Future<Output = Result<Vec<Processed>, ProcessError>> + Send;
}

/// Why an attempt failed, classified where the database error is understood:
/// the one error type the retry policy matches on.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The database cannot be reached: wait until it can.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] DbError),
    /// A concurrent transaction got in the way: the next attempt sees its
    /// work, so try again.
    #[error("conflict with a concurrent transaction: {0}")]
    Conflict(#[source] DbError),
    /// The database refused the statements: it may be one request's fault.
    #[error("refused by the database: {0}")]
    Refused(#[source] DbError),
}

impl From<DbError> for ProcessError {
    fn from(error: DbError) -> Self {
        match error.class() {
            FailureClass::Unavailable => Self::Unavailable(error),
            FailureClass::Conflict => Self::Conflict(error),
            FailureClass::Refused => Self::Refused(error),
        }
    }
}

/// A request delivered but not processed: bad input, or a valid request.
pub type Decoded = Result<DisconnectRequest, Rejection>;

/// Why the requests of an attempt were not processed.
enum Failed {
    /// The worker is stopping: they were not (fully) attempted.
    Stopped,
    /// The database is unreachable from here: back to the queue for another
    /// replica, counted if an attempt reached the database.
    GaveUp { attempted: bool },
    /// Refused `max_attempts` times.
    Refused(ProcessError),
}

pub struct BatchProcessor<R> {
    records: R,
    retry: RetrySettings,
    shutdown: CancellationToken,
    health: DatabaseHealth,
}

impl<R: RecordDisconnects> BatchProcessor<R> {
    pub fn new(
        records: R,
        retry: RetrySettings,
        shutdown: CancellationToken,
        health: DatabaseHealth,
    ) -> Self {
        Self {
            records,
            retry,
            shutdown,
            health,
        }
    }

    /// One settlement per delivery, in delivery order.
    pub async fn settle(&self, batch: Vec<Decoded>) -> Vec<Settlement> {
        let mut settlements = Vec::with_capacity(batch.len());
        let mut requests = Vec::with_capacity(batch.len());
        for decoded in batch {
            match decoded {
                Ok(request) => {
                    requests.push(request);
                    settlements.push(None);
                }
                Err(rejection) => settlements.push(Some(Settlement::DeadLetter(rejection))),
            }
        }
        let mut processed = self.process(&requests).await.into_iter();
        settlements
            .into_iter()
            // `process` gives one per request; should it ever give fewer, the
            // rest go back to the queue rather than being lost.
            .map(|settled| {
                settled
                    .or_else(|| processed.next())
                    .unwrap_or(Settlement::Release)
            })
            .collect()
    }

    async fn process(&self, requests: &[DisconnectRequest]) -> Vec<Settlement> {
        if requests.is_empty() {
            return Vec::new();
        }
        match self.attempt(requests).await {
            Ok(processed) => processed.into_iter().map(Settlement::Ack).collect(),
            Err(Failed::Refused(error)) if requests.len() > 1 => {
                tracing::warn!(error = %error, batch.size = requests.len(),
                    "the database refused a batch; processing its requests one by one");
                let mut settlements = Vec::with_capacity(requests.len());
                for request in requests {
                    settlements.push(self.process_alone(request).await);
                }
                settlements
            }
            Err(Failed::Refused(error)) => vec![refused(&requests[0], &error)],
            Err(Failed::Stopped | Failed::GaveUp { attempted: false }) => {
                vec![Settlement::Release; requests.len()]
            }
            Err(Failed::GaveUp { attempted: true }) => vec![Settlement::Retry; requests.len()],
        }
    }

    async fn process_alone(&self, request: &DisconnectRequest) -> Settlement {
        if self.shutdown.is_cancelled() {
            return Settlement::Release;
        }
        match self.attempt(std::slice::from_ref(request)).await {
            Ok(processed) => processed
                .into_iter()
                .next()
                .map_or(Settlement::Release, Settlement::Ack),
            Err(Failed::Refused(error)) => refused(request, &error),
            Err(Failed::Stopped | Failed::GaveUp { attempted: false }) => Settlement::Release,
            Err(Failed::GaveUp { attempted: true }) => Settlement::Retry,
        }
    }

    /// Record the requests, retrying by the policy in the module docs. The
    /// first attempt always runs (in-flight work finishes at shutdown),
    /// unless the database is known unreachable; shutdown, or the database
    /// found unreachable, ends the waits between retries at once.
    async fn attempt(&self, requests: &[DisconnectRequest]) -> Result<Vec<Processed>, Failed> {
        let mut delays = self.retry.until_recovered().build();
        let mut refusals = 0;
        let mut attempted = false;
        loop {
            if self.health.is_down() {
                return Err(Failed::GaveUp { attempted });
            }
            let error = match self.records.record(requests).await {
                Ok(processed) => return Ok(processed),
                Err(error) => error,
            };
            match &error {
                // Logged once, by the pool's health.
                ProcessError::Unavailable(cause) => attempted |= cause.was_attempted(),
                ProcessError::Conflict(cause) => {
                    attempted = true;
                    tracing::debug!(error = %cause, "a concurrent transaction got in the way; trying again");
                }
                ProcessError::Refused(cause) => {
                    attempted = true;
                    refusals += 1;
                    if refusals >= self.retry.max_attempts {
                        return Err(Failed::Refused(error));
                    }
                    tracing::debug!(error = %cause, batch.size = requests.len(), attempt = refusals,
                        "the database refused a batch; trying again");
                }
            }
            metrics::retried("process");
            let delay = delays.next().unwrap_or(self.retry.max_delay);
            tokio::select! {
                () = self.shutdown.cancelled() => return Err(Failed::Stopped),
                () = self.health.down() => return Err(Failed::GaveUp { attempted }),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
}

/// A request refused on its own, every time: back to the queue, counted, so
/// RabbitMQ dead-letters it after the delivery limit. The worker does not
/// dead-letter it itself: it cannot tell a request the database will always
/// refuse from a database that refuses everything for now (a permission or a
/// migration gone wrong), and revocations must not be drained into the
/// dead-letter queue by a fault of ours.
fn refused(request: &DisconnectRequest, error: &ProcessError) -> Settlement {
    tracing::error!(request.id = %request.request_id, error = %error,
        "the database refused the request; returning it to the queue, counted against its delivery limit");
    Settlement::Retry
}

#[cfg(test)]
mod tests;
