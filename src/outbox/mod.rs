//! Publishing the outcome events. Each event is written to `outbox_events`
//! in the transaction that decides its outcome, so an event exists exactly
//! when its outcome does; it is then published at least once, by one of two
//! paths:
//!
//! - **after commit** ([`Outbox::publish_committed`]): the handler publishes
//!   its batch's events at once, with confirms, and their ids are marked
//!   published shortly afterwards, many batches per statement
//!   ([`Outbox::run_marks`]). This is the path of nearly every event, and it
//!   adds no database round trip to the request's latency.
//! - **the relay** ([`relay`]): publishes what the first path did not: events
//!   whose publish failed, at once, and events still unpublished after the
//!   relay delay (their worker died between commit and publish, or before
//!   marking them).
//!
//! Consumers deduplicate by `event_id`: a crash between a publish and its
//! mark sends that event again.

mod ids;
pub mod prune;
pub mod relay;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use lapin::Channel;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::broker::publish::{json_properties, publish_confirmed, PublishError};
use crate::db::outbox;
use crate::db::{DbError, DbPool};
use crate::domain::OutcomeEvent;
use crate::observability::metrics;
use ids::EventIds;

/// How often the ids of events published after commit are marked. Far below
/// any sensible relay delay, so the relay does not publish them again.
const MARK_INTERVAL: Duration = Duration::from_millis(50);

/// The state the handlers, the mark task and the relay share. It outlives
/// broker sessions: what one session could not publish, the next one does.
#[derive(Debug)]
pub struct Outbox {
    exchange: String,
    /// How long an event may stay unpublished before the relay takes it.
    relay_delay: Duration,
    /// Confirmed by the broker, not yet marked published.
    published: EventIds,
    /// Committed, but their publish after commit failed.
    unsent: EventIds,
    relay_wakeup: Notify,
}

impl Outbox {
    pub fn new(exchange: String, relay_delay: Duration) -> Self {
        Self {
            exchange,
            relay_delay,
            published: EventIds::default(),
            unsent: EventIds::default(),
            relay_wakeup: Notify::new(),
        }
    }

    pub fn exchange(&self) -> &str {
        &self.exchange
    }

    pub fn relay_delay(&self) -> Duration {
        self.relay_delay
    }

    /// Publish events whose transaction has committed. A failure is not the
    /// request's failure (its outcome is committed): the events go to the
    /// relay, which publishes them on this session or the next.
    pub async fn publish_committed(&self, channel: &Channel, events: Vec<OutcomeEvent>) {
        if events.is_empty() {
            return;
        }
        let ids = events.iter().map(|event| event.event_id);
        match publish_all(channel, &self.exchange, &events).await {
            Ok(()) => {
                metrics::events_published("after_commit", events.len());
                self.published.push(ids);
            }
            Err(error) => {
                tracing::warn!(error = %error, events = events.len(),
                    "publishing events after commit failed; the relay will publish them");
                self.unsent.push(ids);
                self.relay_wakeup.notify_one();
            }
        }
    }

    /// Mark published every event confirmed since the last flush, in one
    /// statement; returns how many. On failure they are kept for the next.
    pub async fn flush_marks(&self, pool: &DbPool) -> Result<usize, DbError> {
        let ids = self.published.take();
        if ids.is_empty() {
            return Ok(0);
        }
        let marked = async {
            let mut conn = pool.get().await?;
            Ok::<_, DbError>(outbox::mark_published(&mut conn, &ids, Utc::now()).await?)
        }
        .await;
        if marked.is_err() {
            self.published.push(ids);
        }
        marked
    }

    /// Flush the marks every [`MARK_INTERVAL`] until `stop`. The last flush
    /// is the caller's, after the handlers have finished.
    pub async fn run_marks(self: Arc<Self>, pool: DbPool, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(MARK_INTERVAL) => {}
            }
            if let Err(error) = self.flush_marks(&pool).await {
                tracing::warn!(error = %error, "marking published events failed; will retry");
            }
        }
    }

    fn take_unsent(&self) -> Vec<uuid::Uuid> {
        self.unsent.take()
    }

    fn return_unsent(&self, ids: Vec<uuid::Uuid>) {
        self.unsent.push(ids);
    }
}

/// Publish every event, then wait for all the confirms together: one round
/// trip per batch rather than per event.
pub async fn publish_all(
    channel: &Channel,
    exchange: &str,
    events: &[OutcomeEvent],
) -> Result<(), PublishError> {
    let confirms = events.iter().map(|event| {
        publish_confirmed(
            channel,
            exchange,
            &event.routing_key,
            event.payload.as_bytes(),
            json_properties(&event.event_id.to_string(), &event.request_id.to_string()),
        )
    });
    for result in futures_util::future::join_all(confirms).await {
        result?;
    }
    Ok(())
}
