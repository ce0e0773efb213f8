//! The outbox: every outcome event is written to `outbox_events` in the
//! transaction that decides its outcome (by the service, through [`store`]),
//! so an event exists exactly when its outcome does. This component then
//! publishes each one at least once, by one of two paths:
//!
//! - **after commit** ([`Outbox::publish_after_commit`]): a committed batch's
//!   events are published at once on the current broker session, with
//!   confirms, and deleted from the outbox shortly afterwards, many batches
//!   per statement (`confirmed`). Nearly every event takes this path, and it
//!   adds no database round trip to a request's latency.
//! - **the relay** (`relay`): publishes what the first path did not: events
//!   whose publish failed, at once, and events still unpublished after the
//!   relay delay (their worker died between commit and publish, or before
//!   marking them).
//!
//! It also samples the backlog for the metrics. Consumers deduplicate by
//! `event_id`: a crash between a confirm and the deletion sends that event
//! again.

mod backlog;
mod confirmed;
pub mod format;
mod pending;
mod publish;
mod relay;
pub mod store;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::Channel;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::db::{BoundedPool, DbError, FailureClass};
use crate::domain::OutcomeEvent;
use crate::observability::metrics;
use crate::retry::RetrySettings;
use pending::EventIds;

pub use format::{CurrentFormat, OutboxFormat};
pub use publish::CLOUD_EVENTS_SOURCE;

/// How the outbox publishes and relays.
#[derive(Debug, Clone)]
pub struct OutboxSettings {
    /// The topic exchange events are published to.
    pub exchange: String,
    /// How long an event may stay unpublished before the relay publishes it
    /// in place of the worker that wrote it.
    pub relay_delay: Duration,
    /// How often the relay looks for such events.
    pub poll_interval: Duration,
    /// Events published per relay transaction.
    pub batch_size: i64,
    /// How long a publisher confirm may take.
    pub confirm_timeout: Duration,
    pub retry: RetrySettings,
}

/// What the outbox's tasks share.
struct Shared {
    pool: BoundedPool,
    settings: OutboxSettings,
    /// The format this replica writes, refreshed from the database.
    format: CurrentFormat,
    /// The publish channel of the current broker session (confirm mode);
    /// `None` before the first.
    channel: watch::Sender<Option<Channel>>,
    /// Confirmed by the broker, not yet deleted from the outbox.
    published: EventIds,
    /// Committed, but their publish after commit failed.
    unsent: EventIds,
    relay_wakeup: Notify,
}

impl Shared {
    fn current_channel(&self) -> Option<Channel> {
        self.channel
            .borrow()
            .clone()
            .filter(|channel| channel.status().connected())
    }

    /// Log a database failure once: an outage is in the pool's health
    /// already, anything else is logged here.
    fn database_failed(&self, doing: &'static str, error: &DbError) {
        if error.class() != FailureClass::Unavailable {
            tracing::warn!(error = %error, "{doing} failed; will retry");
        }
    }
}

/// The running outbox. Dropping it stops its tasks without the final
/// publish; [`Outbox::shutdown`] is the graceful way.
pub struct Outbox {
    shared: Arc<Shared>,
    /// Publishes after commit still waiting for their confirms.
    after_commit: TaskTracker,
    stop: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Outbox {
    /// Start deleting confirmed events, relaying (once given a channel),
    /// sampling, and following the format (read at start by the caller).
    /// Call it once the database is migrated.
    pub fn spawn(pool: BoundedPool, settings: OutboxSettings, format: OutboxFormat) -> Self {
        let shared = Arc::new(Shared {
            pool,
            settings,
            format: CurrentFormat::new(format),
            channel: watch::Sender::new(None),
            published: EventIds::default(),
            unsent: EventIds::default(),
            relay_wakeup: Notify::new(),
        });
        let stop = CancellationToken::new();
        let tasks = vec![
            tokio::spawn(confirmed::run(shared.clone(), stop.clone())),
            tokio::spawn(relay::run(shared.clone(), stop.clone())),
            tokio::spawn(backlog::sample(shared.pool.clone(), stop.clone())),
            tokio::spawn(
                shared
                    .format
                    .clone()
                    .refresh(shared.pool.clone(), stop.clone()),
            ),
        ];
        Self {
            shared,
            after_commit: TaskTracker::new(),
            stop,
            tasks: Mutex::new(tasks),
        }
    }

    /// The format a transaction writes its events in now.
    pub fn format(&self) -> OutboxFormat {
        self.shared.format.get()
    }

    /// A broker session opened: publish on its channel from now on, and let
    /// the relay publish at once what the last session could not.
    pub fn use_channel(&self, channel: Channel) {
        self.shared.channel.send_replace(Some(channel));
    }

    /// Publish the events of a committed transaction, without making the
    /// caller wait for the confirms. A failure is not the request's failure
    /// (its outcome is committed): the events go to the relay.
    pub fn publish_after_commit(&self, events: Vec<OutcomeEvent>) {
        if events.is_empty() {
            return;
        }
        let shared = self.shared.clone();
        // A child of the span that committed them (the batch's).
        let span = self.publish_span(events.len());
        self.after_commit
            .spawn(async move { publish_committed(&shared, events).await }.instrument(span));
    }

    /// Publish the events of a committed transaction and wait for the
    /// confirms: for a caller that must not run ahead of the broker (the
    /// fan-out). A failure leaves them to the relay, as after a commit.
    pub async fn publish_now(&self, events: Vec<OutcomeEvent>) {
        if events.is_empty() {
            return;
        }
        let span = self.publish_span(events.len());
        publish_committed(&self.shared, events)
            .instrument(span)
            .await;
    }

    fn publish_span(&self, events: usize) -> tracing::Span {
        tracing::info_span!(
            "publish",
            otel.name = %format_args!("publish {}", self.shared.settings.exchange),
            otel.kind = "producer",
            messaging.system = "rabbitmq",
            messaging.operation.type = "send",
            messaging.operation.name = "publish",
            messaging.destination.name = %self.shared.settings.exchange,
            messaging.batch.message_count = events,
        )
    }

    /// The graceful stop, after the last handler has finished: wait for the
    /// publishes after commit, stop the tasks, delete what was confirmed, and
    /// publish what is left to the relay on the current session, starting
    /// no relay batch after `deadline`. Events younger than the relay delay
    /// written by another replica are its own. Returns whether every event
    /// left to this replica was published. What is not stays committed in the
    /// outbox for the relay of another replica or of the next start: nothing
    /// is lost, so it is a warning here, never a failed stop.
    pub async fn shutdown(&self, deadline: tokio::time::Instant) -> bool {
        self.after_commit.close();
        self.after_commit.wait().await;
        self.stop.cancel();
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        for task in tasks {
            let _ = task.await;
        }
        if let Err(error) = confirmed::flush(&self.shared).await {
            // Confirmed, so only published again by a relay: consumers
            // deduplicate by event id.
            tracing::warn!(error = %error,
                "could not delete the last confirmed events; a relay will publish them again");
        }
        let Some(channel) = self.shared.current_channel() else {
            tracing::warn!(
                "no broker session at shutdown: pending events are left to the next relay"
            );
            return false;
        };
        match relay::drain(&self.shared, &channel, deadline).await {
            Ok(true) => true,
            Ok(false) => {
                tracing::warn!(
                    "the shutdown grace ended before every pending event was published; \
                     they stay in the outbox for another replica's relay or the next start"
                );
                false
            }
            Err(error) => {
                tracing::warn!(error = %error,
                    "publishing the last pending events failed; they stay in the outbox for \
                     another replica's relay or the next start");
                false
            }
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn publish_committed(shared: &Shared, events: Vec<OutcomeEvent>) {
    let ids = events.iter().map(|event| event.event_id);
    let published = match shared.current_channel() {
        Some(channel) => publish::publish_all(
            &channel,
            &shared.settings.exchange,
            &events,
            shared.settings.confirm_timeout,
        )
        .await
        .map_err(|error| error.to_string()),
        None => Err("no broker session".into()),
    };
    match published {
        Ok(()) => {
            metrics::events_published("after_commit", events.len());
            let now = chrono::Utc::now();
            for published_at in events.iter().filter_map(|event| event.request_published_at) {
                metrics::publish_to_event((now - published_at).to_std().unwrap_or_default());
            }
            shared.published.push(ids);
        }
        Err(error) => {
            tracing::warn!(error = %error, events = events.len(),
                "publishing events after commit failed; the relay will publish them");
            shared.unsent.push(ids);
            shared.relay_wakeup.notify_one();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded values stay valid whatever a panicking holder did.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
