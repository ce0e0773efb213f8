//! The worker: keeps a broker session open, consumes requests, hands each to
//! a handler task, runs the outbox relay, and shuts down gracefully.

mod consume;
pub mod dead_letter;
mod handle;
mod startup;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::broker::BrokerSession;
use crate::config::RunSettings;
use crate::db::{self, DbPool};
use crate::observability::backlog::sample_outbox_backlog;
use crate::observability::{http, metrics, Readiness};
use crate::outbox::{prune, relay, Outbox};
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
    /// How long an event may stay unpublished before the relay publishes it
    /// in place of the handler that wrote it.
    pub outbox_relay_delay: Duration,
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
        tokio::spawn(prune::prune_published(
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
    let outbox = Arc::new(Outbox::new(
        settings.topology.event_exchange.clone(),
        settings.worker.outbox_relay_delay,
    ));
    let context = Arc::new(HandlerContext {
        pool: pool.clone(),
        settings: settings.worker.clone(),
        topology: settings.topology.clone(),
        outbox: outbox.clone(),
        shutdown: shutdown.clone(),
    });
    // Stopped only after the last handler and the final flush, in `finish`;
    // on an error exit the unmarked events are left to the relay.
    let marks_stop = CancellationToken::new();
    let _marks_guard = marks_stop.clone().drop_guard();
    tokio::spawn(outbox.clone().run_marks(pool, marks_stop));
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
                outbox: context.outbox.clone(),
                batch_size: settings.worker.outbox_batch_size,
                poll_interval: settings.worker.outbox_poll_interval,
                retry: settings.worker.retry.clone(),
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
    context
        .outbox
        .flush_marks(&context.pool)
        .await
        .context("marking the last published events")?;
    relay::drain(
        &context.pool,
        &session.publish_channel,
        &context.outbox,
        context.settings.outbox_batch_size,
    )
    .await
    .context("publishing the last pending events")?;
    tracing::info!("in-flight requests finished and pending events published");
    Ok(())
}
