//! The fan-out task: works through company and client requests one chunk
//! at a time ([`crate::service::fanout`]), alongside the consumers. Ordinary
//! requests keep flowing meanwhile: a chunk is one short transaction on one
//! pooled connection, and its events are published (and confirmed) before
//! the next chunk, so a fan-out never floods the broker or the outbox.
//!
//! Every replica runs one; `SKIP LOCKED` gives each a different fan-out, and
//! a fan-out left by a replica that died is picked up by the next poll.

use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::db::{BoundedPool, DbError, FailureClass};
use crate::observability::metrics;
use crate::outbox::Outbox;
use crate::retry::RetrySettings;
use crate::service::fanout::{self, Step};

/// How often an idle worker looks for fan-outs it was not woken for
/// (accepted by another replica, or left by one that died).
const IDLE_POLL: Duration = Duration::from_secs(2);

/// How long to wait for the last chunks' events to be marked published
/// before looking again (the marks are flushed every 50 ms).
const PUBLISHING_POLL: Duration = Duration::from_millis(100);

pub struct FanoutTask {
    pub pool: BoundedPool,
    pub outbox: Arc<Outbox>,
    /// Connections per chunk (per transaction).
    pub chunk_size: i64,
    pub retry: RetrySettings,
    /// Notified when this replica accepts a fan-out.
    pub wakeup: Arc<Notify>,
}

impl FanoutTask {
    /// Run until `stop`. A chunk being worked on when `stop` comes is
    /// finished and published first.
    pub async fn run(self, stop: CancellationToken) {
        let mut failures = self.retry.until_recovered().build();
        loop {
            if stop.is_cancelled() {
                return;
            }
            let wait = match self.step().await {
                Ok(wait) => {
                    failures = self.retry.until_recovered().build();
                    wait
                }
                Err(error) => {
                    // An outage is logged by the pool's health.
                    if error.class() != FailureClass::Unavailable {
                        tracing::warn!(error = %error, "a fan-out step failed; will retry");
                    }
                    metrics::retried("fanout");
                    Some(failures.next().unwrap_or(self.retry.max_delay))
                }
            };
            let Some(wait) = wait else { continue };
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.wakeup.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One step; how long to wait before the next, `None` for at once.
    async fn step(&self) -> Result<Option<Duration>, DbError> {
        let span = tracing::info_span!("fanout step", otel.kind = "internal");
        let step = self
            .pool
            .run(async |conn| fanout::step(conn, self.chunk_size, self.outbox.format()).await)
            .instrument(span)
            .await?;
        Ok(match step {
            Step::Idle => Some(IDLE_POLL),
            Step::Chunk {
                request_id,
                events,
                tokens,
                entities,
            } => {
                metrics::fanout_chunk(events.len(), tokens, entities);
                tracing::debug!(%request_id, connections = events.len(), "fan-out chunk committed");
                self.outbox.publish_now(events).await;
                None
            }
            Step::Publishing { .. } => Some(PUBLISHING_POLL),
            Step::Finished { request_id, event } => {
                let outcome = match event.routing_key.as_str() {
                    crate::domain::event::DISCONNECT_COMPLETED => "completed",
                    _ => "nothing_to_disconnect",
                };
                metrics::fanout_finished(outcome);
                tracing::info!(%request_id, outcome, "fan-out finished");
                self.outbox.publish_now(vec![event]).await;
                None
            }
        })
    }
}
