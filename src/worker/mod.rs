//! The worker: keeps a broker session open, consumes requests in batches,
//! settles each delivery, and shuts down gracefully. The path of a request:
//! `consume` (deliveries into batches) → `handle` (decode, one span each) →
//! `process` (the settlement rules and the retry policy) → `records` (the
//! transaction, then the events to the outbox) → `settle` (the AMQP call for
//! a delivery settled on its own) and `acks` (the batch's acks, coalesced).

mod acks;
mod consume;
mod dead_letter;
mod fanout;
mod handle;
mod process;
mod records;
mod settings;
mod settle;
mod settlement;
mod startup;

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::db::{self, BoundedPool, DatabaseHealth};
use crate::observability::{http, metrics, Readiness};
use crate::outbox::Outbox;
use crate::retention;
use crate::service::Policy;
use consume::SessionEnd;
use dead_letter::DeadLettering;
use fanout::FanoutTask;
use handle::HandlerContext;
use process::BatchProcessor;
use records::PgRecords;

pub use dead_letter::{
    DEAD_LETTERED_AT_HEADER, ORIGINAL_EXPIRATION_HEADER, ORIGINAL_USER_ID_HEADER,
    REJECTION_CODE_HEADER, REJECTION_REASON_HEADER,
};
pub use process::{Decoded, ProcessError, RecordDisconnects};
pub use settings::{BrokerSettings, ConsumeSettings, ScopeSettings, Settings};
pub use settlement::Settlement;

/// Run until `shutdown` is cancelled, then stop gracefully: stop consuming,
/// let in-flight requests finish, publish pending events, close. Returns an
/// error if that does not fit in the grace period. `metrics` is the handle
/// `/metrics` renders, when the process installed a recorder.
pub async fn run(
    settings: Settings,
    metrics: Option<PrometheusHandle>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Opens no connection yet: the pool works once the database answers.
    let health = DatabaseHealth::new(settings.database.url.clone(), settings.retry.clone());
    let pool = BoundedPool::new(
        db::connect(&settings.database)?,
        settings.database.deadlines,
        health.clone(),
    );
    let readiness = Arc::new(Readiness::new(pool.clone()));
    // First, so probes answer (not ready) while the database is prepared.
    let http = match settings.http_address {
        Some(address) => Some(http::serve(address, readiness.clone(), metrics).await?),
        None => None,
    };
    let result = match startup::prepare_database(&settings, health.outage(), &shutdown).await {
        Ok(Some(format)) => {
            let outbox = Arc::new(Outbox::spawn(pool.clone(), settings.outbox.clone(), format));
            let fanout_wakeup = Arc::new(Notify::new());
            let background = Background::spawn(&settings, &pool, &outbox, &fanout_wakeup);
            let processor = BatchProcessor::new(
                PgRecords {
                    pool,
                    outbox: outbox.clone(),
                    database: settings
                        .database
                        .url
                        .database_name()
                        .unwrap_or_default()
                        .to_string(),
                    policy: Policy {
                        authorizations: settings.scopes.authorizations.clone(),
                        replay_window: settings.retention.replay_window(),
                    },
                    fanout_wakeup,
                },
                settings.retry.clone(),
                shutdown.clone(),
                health.clone(),
            );
            let handlers = Arc::new(HandlerContext {
                processor,
                max_request_bytes: settings.consume.max_request_bytes,
                queue: settings.broker.topology.request_queue.clone(),
                dead_letters: DeadLettering {
                    exchange: settings.broker.topology.dead_letter_exchange.clone(),
                    confirm_timeout: settings.outbox.confirm_timeout,
                },
            });
            Worker {
                settings,
                handlers,
                in_flight: TaskTracker::new(),
                background,
                readiness,
                health,
                shutdown,
            }
            .run(&outbox)
            .await
        }
        Ok(None) => Ok(()),
        Err(error) => Err(error),
    };
    if let Some(http) = http {
        http.stop().await;
    }
    result
}

/// The consuming part of the worker, once the database is ready.
struct Worker {
    settings: Settings,
    handlers: Arc<HandlerContext>,
    /// Handler tasks, across sessions: a task started on a session that
    /// died still finishes its transaction before shutdown completes.
    in_flight: TaskTracker,
    background: Background,
    readiness: Arc<Readiness>,
    /// While down, the worker holds no broker session: see
    /// [`SessionEnd::DatabaseUnreachable`].
    health: DatabaseHealth,
    shutdown: CancellationToken,
}

impl Worker {
    async fn run(&self, outbox: &Outbox) -> anyhow::Result<()> {
        let mut first_address = 0;
        loop {
            if !self.wait_for_database().await {
                self.readiness.not_consuming("shutting down");
                return self.finish(outbox).await;
            }
            let opened = startup::open_session(&self.settings, first_address, &self.shutdown).await;
            let (session, address) = match opened {
                Ok(Some(opened)) => opened,
                // Stopped before a session opened: nothing to publish on.
                Ok(None) => {
                    self.readiness.not_consuming("shutting down");
                    return self.finish(outbox).await;
                }
                Err(error) => {
                    self.readiness.not_consuming("topology conflict");
                    let _ = self.finish(outbox).await;
                    return Err(error);
                }
            };
            // After a loss, the next address is tried first.
            first_address = address + 1;
            outbox.use_channel(session.publish_channel.clone());
            match self.consume_session(&session).await {
                SessionEnd::Shutdown => {
                    self.readiness.not_consuming("shutting down");
                    let finished = self.finish(outbox).await;
                    session.close("worker stopping").await;
                    return finished;
                }
                SessionEnd::Lost(reason) => {
                    self.readiness.not_consuming("reconnecting");
                    metrics::broker_reconnected();
                    tracing::warn!(reason = %reason, "lost the broker session; reconnecting");
                    session.close("session lost").await;
                }
                SessionEnd::DatabaseUnreachable => {
                    self.readiness.not_consuming("database unreachable");
                    // The broker requeues what this session held at once,
                    // for the replicas that can reach the database.
                    session.close("database unreachable").await;
                    first_address = address;
                }
            }
        }
    }

    /// Wait until the database is reachable (at once if it is); `false` if
    /// the worker was stopped first.
    async fn wait_for_database(&self) -> bool {
        if !self.health.is_down() {
            return true;
        }
        tokio::select! {
            () = self.shutdown.cancelled() => false,
            () = self.health.up() => true,
        }
    }

    /// The graceful part of shutdown, within the grace period: the handlers
    /// finish (their retries stop at once), then the outbox publishes what
    /// is pending.
    async fn finish(&self, outbox: &Outbox) -> anyhow::Result<()> {
        let grace = self.settings.shutdown_grace;
        let started = tokio::time::Instant::now();
        // The relay's last sweep (two batches, each waiting at most the
        // confirm timeout) starts early enough to end inside the grace
        // period; the session is closed after.
        let last_batch = self.settings.outbox.confirm_timeout * 2 + CLOSE_MARGIN;
        let drain_deadline = started + grace.saturating_sub(last_batch);
        let graceful = async {
            self.in_flight.close();
            self.in_flight.wait().await;
            // A fan-out chunk in progress commits and publishes first.
            self.background.stop().await;
            outbox.shutdown(drain_deadline).await
        };
        match tokio::time::timeout(grace, graceful).await {
            Ok(true) => {
                tracing::info!("in-flight requests finished and pending events published");
                Ok(())
            }
            Ok(false) => {
                tracing::info!("in-flight requests finished; some events are left to a relay");
                Ok(())
            }
            Err(_) => Err(anyhow::anyhow!(
                "shutdown grace period of {grace:?} exceeded with {} batches in flight; \
                 they will be redelivered",
                self.in_flight.len()
            )),
        }
    }
}

/// Time kept at the end of the grace period for closing the broker
/// session, beyond the relay's last confirm.
const CLOSE_MARGIN: std::time::Duration = std::time::Duration::from_secs(2);

/// The tasks beside the consumers: the fan-out of company and client
/// requests, retention, and the report of the database's replication.
struct Background {
    stop: CancellationToken,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Background {
    fn spawn(
        settings: &Settings,
        pool: &BoundedPool,
        outbox: &Arc<Outbox>,
        fanout_wakeup: &Arc<Notify>,
    ) -> Self {
        let stop = CancellationToken::new();
        let fanout = FanoutTask {
            pool: pool.clone(),
            outbox: outbox.clone(),
            chunk_size: settings.scopes.fanout_chunk_size,
            retry: settings.retry.clone(),
            wakeup: fanout_wakeup.clone(),
        };
        let tasks = vec![
            tokio::spawn(fanout.run(stop.clone())),
            tokio::spawn(retention::run(
                pool.clone(),
                settings.retention.clone(),
                stop.clone(),
            )),
            tokio::spawn(crate::db::replication::watch(pool.clone(), stop.clone())),
        ];
        Self {
            stop,
            tasks: std::sync::Mutex::new(tasks),
        }
    }

    async fn stop(&self) {
        self.stop.cancel();
        let tasks = std::mem::take(
            &mut *self
                .tasks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for task in tasks {
            let _ = task.await;
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
