//! The worker: keeps a broker session open, consumes requests, hands each to
//! a handler task, runs the outbox relay, and shuts down gracefully.

mod consume;
pub mod dead_letter;
mod handle;
mod startup;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::broker::BrokerSession;
use crate::config::RunSettings;
use crate::db::{self, DbPool};
use crate::observability::backlog::sample_outbox_backlog;
use crate::observability::{http, metrics, Readiness};
use crate::relay;
use crate::retry::RetrySettings;
use consume::{consume_session, SessionEnd};
use handle::HandlerContext;

pub use dead_letter::{REJECTION_CODE_HEADER, REJECTION_REASON_HEADER};

/// How the worker consumes, retries and stops.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub prefetch: u16,
    /// Most requests processed in one transaction.
    pub batch_size: usize,
    /// How long a batch waits for more requests; zero: it takes only those
    /// already received.
    pub batch_linger: Duration,
    pub max_request_bytes: usize,
    pub retry: RetrySettings,
    pub shutdown_grace: Duration,
    pub outbox_poll_interval: Duration,
    pub outbox_batch_size: i64,
    /// How long published events are kept; `None`: forever.
    pub outbox_retention: Option<Duration>,
}

/// Run until `shutdown` is cancelled, then stop gracefully: stop consuming,
/// let in-flight requests finish, publish pending events, close. Returns an
/// error if that does not fit in the grace period. `metrics` is the handle
/// `/metrics` renders, when the process installed a recorder.
pub async fn run(
    settings: RunSettings,
    metrics: Option<PrometheusHandle>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Opens no connection yet: the pool works once the database answers.
    let pool = db::connect(&settings.database)?;
    let readiness = Arc::new(Readiness::new(pool.clone()));
    let background = CancellationToken::new();
    let http = match settings.http_address {
        Some(address) => {
            Some(http::serve(address, readiness.clone(), metrics, background.clone()).await?)
        }
        None => None,
    };
    tokio::spawn(sample_outbox_backlog(pool.clone(), background.clone()));
    if let Some(retention) = settings.worker.outbox_retention {
        tokio::spawn(relay::prune_published(
            pool.clone(),
            retention,
            background.clone(),
        ));
    }
    let result = consume_until_shutdown(&settings, pool, &readiness, shutdown).await;
    background.cancel();
    if let Some(http) = http {
        let _ = http.await;
    }
    result
}

async fn consume_until_shutdown(
    settings: &RunSettings,
    pool: DbPool,
    readiness: &Readiness,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if !startup::prepare_database(settings, &shutdown).await? {
        return Ok(());
    }
    let context = Arc::new(HandlerContext {
        pool,
        settings: settings.worker.clone(),
        topology: settings.topology.clone(),
        outbox_wakeup: Arc::new(Notify::new()),
        shutdown: shutdown.clone(),
    });
    // Tracks handler tasks across sessions: a task started on a session that
    // died still finishes its transaction before shutdown completes.
    let in_flight = TaskTracker::new();
    loop {
        let Some(session) = startup::open_session(settings, &shutdown).await else {
            break;
        };
        let relay_stop = CancellationToken::new();
        let relay_task = tokio::spawn(
            relay::Relay {
                pool: context.pool.clone(),
                channel: session.publish_channel.clone(),
                exchange: settings.topology.event_exchange.clone(),
                batch_size: settings.worker.outbox_batch_size,
                poll_interval: settings.worker.outbox_poll_interval,
                retry: settings.worker.retry.clone(),
                wakeup: context.outbox_wakeup.clone(),
            }
            .run(relay_stop.clone()),
        );
        let end = consume_session(&session, &context, &in_flight, readiness).await;
        match end {
            SessionEnd::Shutdown => {
                readiness.not_consuming("shutting down");
                let result = tokio::time::timeout(
                    settings.worker.shutdown_grace,
                    finish(&session, &context, &in_flight, relay_stop, relay_task),
                )
                .await;
                session.close().await;
                return match result {
                    Ok(result) => result,
                    Err(_) => Err(anyhow::anyhow!(
                        "shutdown grace period of {:?} exceeded with {} requests in flight; they will be redelivered",
                        settings.worker.shutdown_grace,
                        in_flight.len()
                    )),
                };
            }
            SessionEnd::Lost(reason) => {
                readiness.not_consuming("reconnecting");
                metrics::broker_reconnected();
                tracing::warn!(reason = %reason, "lost the broker session; reconnecting");
                relay_stop.cancel();
                let _ = relay_task.await;
                session.close().await;
            }
        }
    }
    Ok(())
}

/// The graceful part of shutdown, bounded by the caller's grace period.
async fn finish(
    session: &BrokerSession,
    context: &HandlerContext,
    in_flight: &TaskTracker,
    relay_stop: CancellationToken,
    relay_task: tokio::task::JoinHandle<()>,
) -> anyhow::Result<()> {
    in_flight.close();
    in_flight.wait().await;
    relay_stop.cancel();
    let _ = relay_task.await;
    relay::drain(
        &context.pool,
        &session.publish_channel,
        &context.topology.event_exchange,
        context.settings.outbox_batch_size,
    )
    .await
    .context("publishing the last pending events")?;
    tracing::info!("in-flight requests finished and pending events published");
    Ok(())
}
