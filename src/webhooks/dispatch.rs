//! Deliveries out: take due deliveries from Postgres, attempt each with
//! bounded concurrency in this replica and per endpoint, record what the
//! receiver said. Slots are checked before claiming: an endpoint with no
//! free slot here is not claimed for, so a receiver that never answers
//! holds at most its own slots, and every other endpoint's deliveries go
//! on beside it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::attempt::{self, AttemptResult, Verdict};
use super::signing::{message_id, signature_headers};
use super::{EndpointUrl, HeaderFormat};
use crate::config::webhooks::DeliverSettings;
use crate::db::webhooks::deliveries::{self, AfterAttempt, AttemptRecord, Claimed, EndpointChange};
use crate::db::BoundedPool;
use crate::observability::metrics::webhooks as metrics;

/// Endpoints that may have a delivery due, with a bell.
#[derive(Default)]
pub struct DueHints {
    endpoints: Mutex<HashSet<Uuid>>,
    bell: Notify,
}

impl DueHints {
    /// Hint these and ring.
    pub fn add(&self, endpoints: impl IntoIterator<Item = Uuid>) {
        self.keep(endpoints);
        self.bell.notify_one();
    }

    /// Hint these for the next round, without ringing.
    fn keep(&self, endpoints: impl IntoIterator<Item = Uuid>) {
        if let Ok(mut hinted) = self.endpoints.lock() {
            hinted.extend(endpoints);
        }
    }

    fn take(&self) -> HashSet<Uuid> {
        self.endpoints
            .lock()
            .map(|mut hinted| std::mem::take(&mut *hinted))
            .unwrap_or_default()
    }

    async fn notified(&self) {
        self.bell.notified().await;
    }
}

/// How long the claim waits after being woken, for more to claim at once.
const CLAIM_LINGER: Duration = Duration::from_millis(2);

pub struct Dispatcher {
    pool: BoundedPool,
    settings: Arc<DeliverSettings>,
    client: reqwest::Client,
    slots: Arc<Semaphore>,
    endpoint_slots: Mutex<HashMap<Uuid, Arc<Semaphore>>>,
    /// Endpoints that may have a delivery due: given by the intake (new
    /// deliveries) and by finished attempts.
    pub hints: Arc<DueHints>,
    /// Rung when an endpoint is disabled, for its announcement.
    pub announce: Arc<Notify>,
}

impl Dispatcher {
    pub fn new(pool: BoundedPool, settings: Arc<DeliverSettings>) -> anyhow::Result<Self> {
        let client = attempt::client(settings.policy.clone(), settings.timeout)?;
        Ok(Self {
            pool,
            client,
            slots: Arc::new(Semaphore::new(settings.concurrency)),
            endpoint_slots: Mutex::new(HashMap::new()),
            hints: Arc::new(DueHints::default()),
            announce: Arc::new(Notify::new()),
            settings,
        })
    }

    /// How long a claimed delivery is held: the wait for its endpoint's
    /// slot (at most one attempt's timeout, since no more than the
    /// endpoint's slots are claimed for it), its own attempt, and the
    /// recording.
    fn lease(&self) -> Duration {
        self.settings.timeout * 2 + Duration::from_secs(5)
    }

    /// Until shutdown; then the attempts in flight finish (each within the
    /// timeout) and are recorded.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut attempts = JoinSet::new();
        let mut next_sweep = tokio::time::Instant::now();
        loop {
            let mut candidates = self.hints.take();
            if tokio::time::Instant::now() >= next_sweep {
                next_sweep = tokio::time::Instant::now() + self.settings.poll;
                match self
                    .pool
                    .read(async |conn| deliveries::due_endpoints(conn).await)
                    .await
                {
                    Ok(due) => candidates.extend(due),
                    Err(error) => {
                        tracing::warn!(error = %error, "webhooks: cannot look for due deliveries; trying again");
                    }
                }
            }
            self.claim_and_start(candidates, &mut attempts).await;
            while attempts.try_join_next().is_some() {}
            metrics::in_flight(attempts.len());
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.hints.notified() => {}
                () = tokio::time::sleep_until(next_sweep) => {}
                Some(_) = attempts.join_next(), if !attempts.is_empty() => {}
            }
            // Let the events and finished attempts of the next moment
            // gather, so one claim takes them together: claiming on each
            // one cost a statement per delivery.
            tokio::time::sleep(CLAIM_LINGER).await;
        }
        while attempts.join_next().await.is_some() {}
        metrics::in_flight(0);
    }

    /// Claim and start what is due of `candidates`, as far as this
    /// replica's slots go; an endpoint with no free slot here is left to a
    /// later round (its hint kept).
    async fn claim_and_start(
        self: &Arc<Self>,
        candidates: HashSet<Uuid>,
        attempts: &mut JoinSet<()>,
    ) {
        if candidates.is_empty() {
            return;
        }
        let busy: HashSet<Uuid> = self.busy_endpoints().into_iter().collect();
        let (waiting, endpoints): (Vec<Uuid>, Vec<Uuid>) =
            candidates.into_iter().partition(|id| busy.contains(id));
        self.hints.keep(waiting);
        let free = self.slots.available_permits();
        if free == 0 || endpoints.is_empty() {
            self.hints.keep(endpoints);
            return;
        }
        let per_endpoint = i64::try_from(self.settings.endpoint_concurrency).unwrap_or(1);
        let limit = i64::try_from(free).unwrap_or(i64::MAX);
        let lease = self.lease();
        let claimed = match self
            .pool
            .run(async |conn| deliveries::claim(conn, &endpoints, per_endpoint, limit, lease).await)
            .await
        {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(error = %error, "webhooks: cannot claim due deliveries; trying again");
                self.hints.keep(endpoints);
                return;
            }
        };
        if claimed.len() == free {
            // There may be more of them due than slots were free.
            self.hints.keep(endpoints);
        }
        for delivery in claimed {
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                // Not reachable (only this loop takes slots); the lease
                // brings the delivery back if it were.
                break;
            };
            let endpoint_slot = self.endpoint_slot(delivery.endpoint_id);
            let this = self.clone();
            attempts.spawn(async move { this.deliver(delivery, slot, endpoint_slot).await });
        }
    }

    /// Endpoints with no free slot in this replica; forgets idle ones.
    fn busy_endpoints(&self) -> Vec<Uuid> {
        let Ok(mut slots) = self.endpoint_slots.lock() else {
            return Vec::new();
        };
        let limit = self.settings.endpoint_concurrency;
        slots.retain(|_, slot| slot.available_permits() < limit || Arc::strong_count(slot) > 1);
        slots
            .iter()
            .filter(|(_, slot)| slot.available_permits() == 0)
            .map(|(id, _)| *id)
            .collect()
    }

    fn endpoint_slot(&self, endpoint_id: Uuid) -> Arc<Semaphore> {
        let limit = self.settings.endpoint_concurrency;
        match self.endpoint_slots.lock() {
            Ok(mut slots) => slots
                .entry(endpoint_id)
                .or_insert_with(|| Arc::new(Semaphore::new(limit)))
                .clone(),
            Err(_) => Arc::new(Semaphore::new(limit)),
        }
    }

    async fn deliver(
        self: Arc<Self>,
        delivery: Claimed,
        _slot: OwnedSemaphorePermit,
        endpoint_slot: Arc<Semaphore>,
    ) {
        let Ok(_endpoint_permit) = endpoint_slot.acquire_owned().await else {
            return;
        };
        let attempted_at = Utc::now();
        let result = self.attempt(&delivery).await;
        let label = result.verdict.label(&result);
        metrics::attempted(label, result.duration);
        let attempts_made = u32::try_from(delivery.attempts)
            .unwrap_or(0)
            .saturating_add(1);
        let next = match result.verdict {
            Verdict::Delivered => AfterAttempt::Delivered,
            Verdict::Gone => AfterAttempt::Gone,
            Verdict::Failed { .. } => match self
                .settings
                .schedule
                .next_delay(attempts_made, result.failure())
            {
                Some(delay) => AfterAttempt::RetryAt(
                    Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX),
                ),
                None => AfterAttempt::Failed,
            },
        };
        // A failure is worth a line at the default level; a success only
        // at debug (one per event and endpoint).
        let fields = (delivery.event_id, delivery.endpoint_id, result.status_code);
        if matches!(next, AfterAttempt::Delivered) {
            tracing::debug!(event.id = %fields.0, webhook.endpoint_id = %fields.1,
                webhook.attempt = attempts_made, webhook.result = label,
                http.status_code = fields.2, duration_ms = result.duration.as_millis() as u64,
                "webhook attempt");
        } else {
            tracing::info!(event.id = %fields.0, webhook.endpoint_id = %fields.1,
                webhook.attempt = attempts_made, webhook.result = label,
                http.status_code = fields.2, duration_ms = result.duration.as_millis() as u64,
                error = result.error.as_deref().unwrap_or_default(),
                "webhook attempt");
        }
        let record = AttemptRecord {
            delivery_id: delivery.delivery_id,
            endpoint_id: delivery.endpoint_id,
            attempted_at,
            duration_ms: i32::try_from(result.duration.as_millis()).unwrap_or(i32::MAX),
            status_code: result.status_code.map(i32::from),
            error: result.error.as_deref(),
            response_excerpt: result.response_excerpt.as_deref(),
            next,
        };
        let recorded = self.record(&record).await;
        // Its next due delivery, if any, is this endpoint's to send now.
        self.hints.add([delivery.endpoint_id]);
        let Some(change) = recorded else {
            return;
        };
        match next {
            AfterAttempt::Delivered => metrics::delivered(
                (Utc::now() - delivery.received_at)
                    .to_std()
                    .unwrap_or_default(),
            ),
            AfterAttempt::Failed | AfterAttempt::Gone => metrics::failed(),
            AfterAttempt::RetryAt(_) => {}
        }
        if let EndpointChange::Disabled(reason) = change {
            metrics::endpoint_disabled(reason);
            tracing::warn!(
                webhook.endpoint_id = %delivery.endpoint_id,
                reason,
                "webhook endpoint disabled; its pending deliveries wait until it is enabled"
            );
            self.announce.notify_one();
        }
    }

    /// Sign and send; a secret that does not open, or a stored row that no
    /// release wrote, is a failed attempt with its reason (no request).
    async fn attempt(&self, delivery: &Claimed) -> AttemptResult {
        let unusable = |error: String| AttemptResult {
            verdict: Verdict::Failed { slow_down: false },
            status_code: None,
            duration: Duration::ZERO,
            error: Some(error),
            response_excerpt: None,
            retry_after: None,
        };
        let Some(format) = HeaderFormat::parse(&delivery.header_format) else {
            return unusable(format!(
                "unknown header format `{}`",
                delivery.header_format
            ));
        };
        let Some(url) = EndpointUrl::stored(&delivery.url) else {
            return unusable("the stored URL does not parse".into());
        };
        let key = &self.settings.key;
        let mut secrets = Vec::with_capacity(2);
        match key.open(&delivery.secret_sealed, delivery.endpoint_id) {
            Ok(secret) => secrets.push(secret),
            Err(error) => return unusable(error.to_string()),
        }
        if let Some(previous) = &delivery.previous_secret_sealed {
            if let Ok(secret) = key.open(previous, delivery.endpoint_id) {
                secrets.push(secret);
            }
        }
        let signing: Vec<_> = secrets.iter().collect();
        let headers = signature_headers(
            format,
            &message_id(delivery.event_id),
            Utc::now().timestamp(),
            &delivery.payload,
            &signing,
        );
        attempt::attempt(
            &self.client,
            &self.settings.policy,
            &url,
            &headers,
            &delivery.payload,
        )
        .await
    }

    /// Record, retrying while the database is away, up to the lease: past
    /// it the delivery is due again anyway, and its repeat carries the same
    /// id.
    async fn record(&self, record: &AttemptRecord<'_>) -> Option<EndpointChange> {
        let give_up = tokio::time::Instant::now() + self.lease();
        let mut pause = Duration::from_millis(100);
        loop {
            let disable_after = self.settings.disable_after;
            let recorded = if record.next == AfterAttempt::Delivered {
                self.pool
                    .run(async |conn| deliveries::record_delivered(conn, record).await)
                    .await
                    .map(|()| EndpointChange::None)
            } else {
                self.pool
                    .run(async |conn| {
                        use diesel_async::AsyncConnection;
                        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
                            deliveries::record_attempt(conn, record, disable_after).await
                        })
                        .await
                    })
                    .await
            };
            match recorded {
                Ok(change) => return Some(change),
                Err(error) if tokio::time::Instant::now() + pause < give_up => {
                    tracing::warn!(error = %error, "webhooks: cannot record an attempt; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err(error) => {
                    tracing::error!(error = %error, "webhooks: an attempt was not recorded; the delivery will be attempted again");
                    return None;
                }
            }
        }
    }
}
