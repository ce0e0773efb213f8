//! `disconnect-worker deliver`: the webhook dispatcher.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::ConfigError;
use crate::config::webhooks::DeliverArgs;
use crate::config::{BrokerArgs, DatabaseArgs};
use crate::db::webhooks::{deliveries, endpoints};
use crate::db::{self, BoundedPool, DatabaseHealth};
use crate::observability::metrics::webhooks as metrics;
use crate::observability::{self, http, Readiness};
use crate::webhooks::announce::Announcer;
use crate::webhooks::dispatch::Dispatcher;
use crate::webhooks::intake::{self, Intake};

/// How often the backlog gauges are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);

pub async fn deliver(
    database: &DatabaseArgs,
    broker: &BrokerArgs,
    args: &DeliverArgs,
) -> anyhow::Result<()> {
    let settings = Arc::new(args.settings().map_err(ConfigError)?);
    let database = database.settings().map_err(ConfigError)?;
    let urls = broker.amqp_urls().map_err(ConfigError)?;
    // The database health's probe between failures, as the worker's defaults.
    let retry = crate::retry::RetrySettings {
        min_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(10),
        max_attempts: 5,
    };
    tracing::info!(database = %database.url, broker = %urls, queue = %settings.queue,
        concurrency = settings.concurrency, endpoint_concurrency = settings.endpoint_concurrency,
        "starting the webhook dispatcher");
    let shutdown = CancellationToken::new();
    tokio::spawn(super::run::cancel_on_signal(shutdown.clone()));
    let handle = observability::metrics::install()?;
    metrics::start_at_zero();

    let health = DatabaseHealth::new(database.url.clone(), retry);
    let pool = BoundedPool::new(db::connect(&database)?, database.deadlines, health);
    let readiness = Arc::new(Readiness::new(pool.clone()));
    let http = match settings.http_address {
        Some(address) => Some(http::serve(address, readiness.clone(), Some(handle)).await?),
        None => None,
    };

    let dispatcher = Arc::new(Dispatcher::new(pool.clone(), settings.clone())?);
    let announcer = Announcer {
        urls: urls.clone(),
        event_exchange: broker.event_exchange.clone(),
        confirm_timeout: broker.confirm_timeout(),
        pool: pool.clone(),
        wake: dispatcher.announce.clone(),
        every: Duration::from_secs(30),
    };
    let mut tasks = tokio::task::JoinSet::new();
    let intake = Intake {
        urls,
        event_exchange: broker.event_exchange.clone(),
        queue: settings.queue.clone(),
        prefetch: settings.prefetch,
        declare: broker.declare_topology,
        pool: pool.clone(),
        hints: dispatcher.hints.clone(),
        ready: readiness,
    };
    tasks.spawn(intake::run(intake, shutdown.clone()));
    tasks.spawn(dispatcher.clone().run(shutdown.clone()));
    tasks.spawn(announcer.run(shutdown.clone()));
    if let Some(keep) = settings.retention {
        tasks.spawn(retain(pool.clone(), keep, shutdown.clone()));
    }
    tasks.spawn(sample(pool, shutdown.clone()));
    while tasks.join_next().await.is_some() {}
    if let Some(http) = http {
        http.stop().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// How often finished deliveries past their retention are deleted, and
/// how many events a statement deletes.
const RETAIN_EVERY: Duration = Duration::from_secs(600);
const RETAIN_BATCH: i64 = 1000;

/// Delete finished deliveries older than `keep`, a batch at a time.
async fn retain(pool: BoundedPool, keep: Duration, shutdown: CancellationToken) {
    loop {
        loop {
            match pool
                .run(async |conn| deliveries::delete_finished(conn, keep, RETAIN_BATCH).await)
                .await
            {
                Ok(deleted) => {
                    crate::observability::metrics::retention_deleted("webhook_messages", deleted);
                    if deleted < usize::try_from(RETAIN_BATCH).unwrap_or(usize::MAX) {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %error, "webhooks: retention pass failed; trying again later");
                    break;
                }
            }
            if shutdown.is_cancelled() {
                return;
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RETAIN_EVERY) => {}
        }
    }
}

async fn sample(pool: BoundedPool, shutdown: CancellationToken) {
    loop {
        let sampled = pool
            .read(async |conn| {
                let backlog = deliveries::backlog(conn).await?;
                let disabled = endpoints::count_disabled(conn).await?;
                Ok((backlog, disabled))
            })
            .await;
        if let Ok((backlog, disabled)) = sampled {
            metrics::backlog(
                backlog.due,
                backlog.pending,
                backlog.oldest_due_secs,
                disabled,
            );
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(SAMPLE_EVERY) => {}
        }
    }
}
