//! Whether this replica can reach its database, decided by a probe rather
//! than by any one failure. It matters because of the queue: a replica cut
//! off from Postgres (a network failure the other replicas do not share)
//! must not hold its deliveries for the length of the cut, while the others
//! could process them. When the probe finds the database unreachable the
//! health turns *down*: the worker closes its broker session (RabbitMQ
//! then gives its unacknowledged deliveries to the other replicas at once)
//! and opens a new one once the probe reaches the database again.
//!
//! A failure only starts a probe: a connection closed under one query (a
//! Postgres restart, a pooled connection the server dropped) is retried,
//! and the probe tells a dead path (no answer within the connect bound)
//! from a server that answered, even with an error (too many clients,
//! starting up), which every replica sees alike.
//!
//! A server that answers but takes no writes (a standby, or a primary being
//! demoted in a failover) is not ready for work either: the probe checks the
//! session can write (`db::writable`).
//!
//! It also keeps the database's outage log (one line when it starts,
//! reminders, one when it ends), shared by every task that uses the pool.

use backon::BackoffBuilder;
use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

use super::DatabaseUrl;
use crate::observability::Outage;
use crate::retry::RetrySettings;

#[derive(Clone)]
pub struct DatabaseHealth {
    inner: Arc<Inner>,
}

struct Inner {
    outage: Outage,
    /// `true` while the probe finds the database unreachable.
    down: watch::Sender<bool>,
    /// A probe is running; failures meanwhile start no other.
    probing: AtomicBool,
    /// How to probe; `None`: never (the health then changes only when told).
    probe: Option<Probe>,
}

struct Probe {
    url: DatabaseUrl,
    retry: RetrySettings,
}

impl DatabaseHealth {
    /// A health that probes `url` (with its bounds) after a failure, and
    /// again, with `retry`'s backoff, while it finds it unreachable.
    pub fn new(url: DatabaseUrl, retry: RetrySettings) -> Self {
        Self::with_probe(Some(Probe { url, retry }))
    }

    /// A health that never probes: it stays up, but for [`Self::set_down`].
    pub fn without_probe() -> Self {
        Self::with_probe(None)
    }

    fn with_probe(probe: Option<Probe>) -> Self {
        Self {
            inner: Arc::new(Inner {
                outage: Outage::new("database"),
                down: watch::Sender::new(false),
                probing: AtomicBool::new(false),
                probe,
            }),
        }
    }

    /// The database's outage log.
    pub fn outage(&self) -> &Outage {
        &self.inner.outage
    }

    /// A call failed because the database could not be reached: logged as
    /// part of the outage, and a probe decides whether the path is dead.
    pub fn failed(&self, error: &dyn Display) {
        self.inner.outage.failed(error);
        self.start_probe();
    }

    /// A call that started at `attempt_started` succeeded: the database
    /// answers, unless the call was already in flight when the outage began
    /// (see [`Outage::recovered_since`]). Called after every transaction,
    /// so the common case (it was up) only reads the state.
    pub fn succeeded(&self, attempt_started: Instant) {
        if self.inner.outage.recovered_since(attempt_started) && self.is_down() {
            self.set_down(false);
        }
    }

    pub fn is_down(&self) -> bool {
        *self.inner.down.borrow()
    }

    /// Set the state by hand: for a health without a probe.
    pub fn set_down(&self, down: bool) {
        self.inner.down.send_if_modified(|current| {
            let changed = *current != down;
            *current = down;
            changed
        });
    }

    /// Resolves once the health is down (at once if it is).
    pub async fn down(&self) {
        self.wait_for(true).await;
    }

    /// Resolves once the health is up (at once if it is).
    pub async fn up(&self) {
        self.wait_for(false).await;
    }

    async fn wait_for(&self, down: bool) {
        let mut state = self.inner.down.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = state.wait_for(|current| *current == down).await;
    }

    fn start_probe(&self) {
        let Some(probe) = &self.inner.probe else {
            return;
        };
        if self.inner.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let health = self.clone();
        let url = probe.url.clone();
        let mut delays = probe.retry.until_recovered().build();
        let max_delay = probe.retry.max_delay;
        tokio::spawn(async move {
            loop {
                let attempt_started = Instant::now();
                match reachable(&url).await {
                    Ok(()) => {
                        if health.is_down() {
                            health.succeeded(attempt_started);
                        }
                        break;
                    }
                    Err(error) => {
                        if !health.is_down() {
                            // The outage itself was logged (once) by the
                            // failure that started the probe.
                            tracing::info!(error = %error,
                                "database unreachable; handing the requests held here back to the broker until it answers");
                            health.set_down(true);
                        }
                        health.inner.outage.failed(&error);
                    }
                }
                tokio::time::sleep(delays.next().unwrap_or(max_delay)).await;
            }
            health.inner.probing.store(false, Ordering::Release);
        });
    }
}

/// Whether the server can do the worker's work: a new connection, and a
/// session that can write, within the connect bound each. A server that
/// answers with an error is reachable (every replica sees it alike); one
/// that answers but takes no writes (a standby, a primary being demoted) is
/// not ready, and while it is all the database has, this replica holds no
/// deliveries it could not finish.
async fn reachable(url: &DatabaseUrl) -> Result<(), String> {
    let limit = url.bounds().connect;
    let mut conn = match url.establish().await {
        Ok(conn) => conn,
        Err(error) if error.server_answered() => return Ok(()),
        Err(error) => return Err(error.to_string()),
    };
    match tokio::time::timeout(limit, super::writable::check_writable(&mut conn)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) if super::writable::is_read_only(&error) => {
            Err(format!("{} at {url}", super::writable::READ_ONLY))
        }
        Ok(Err(error)) => Err(format!("the probe query failed: {error}")),
        Err(_) => Err(format!("the probe query got no answer within {limit:?}")),
    }
}
