//! The consume loop of one broker session.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use lapin::Consumer;

use super::acks::CoalescedAcks;
use super::handle::{handle_batch, Received};
use super::settings::ConsumeSettings;
use super::Worker;
use crate::broker::BrokerSession;
use crate::observability::metrics;

/// How often the session checks its publish channel. The broker closes a
/// channel on a protocol error (a publish to a missing exchange, say); the
/// consumer stream would not notice a closed publish channel, and without it
/// no event or dead letter could be sent until the next reconnect.
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(1);

pub enum SessionEnd {
    /// The worker was told to stop; the consumer is cancelled.
    Shutdown,
    /// The connection or channel died; open a new session.
    Lost(String),
    /// The database cannot be reached from here: close the session, so the
    /// broker gives its deliveries to the other replicas at once, and open a
    /// new one when the database answers again.
    DatabaseUnreachable,
}

/// Add to `first` the deliveries already received, up to the batch size.
/// While earlier batches are still being processed (the worker is busy), wait
/// up to the linger time for more: batches then fill up, which is what lets
/// throughput rise with load. When the worker is idle a lone request is
/// processed at once, so light traffic gets no added latency.
async fn collect_batch(
    first: Delivery,
    consumer: &mut Consumer,
    settings: &ConsumeSettings,
    busy: bool,
) -> (Vec<Received>, Option<SessionEnd>) {
    let linger = if busy {
        settings.batch_linger
    } else {
        Duration::ZERO
    };
    let mut batch = vec![Received {
        delivery: first,
        at: Instant::now(),
    }];
    let deadline = tokio::time::Instant::now() + linger;
    while batch.len() < settings.batch_size {
        let next = match consumer.next().now_or_never() {
            Some(next) => next,
            None if linger.is_zero() => break,
            None => match tokio::time::timeout_at(deadline, consumer.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
        };
        match next {
            Some(Ok(delivery)) => batch.push(Received {
                delivery,
                at: Instant::now(),
            }),
            Some(Err(error)) => return (batch, Some(SessionEnd::Lost(lost(&error)))),
            None => {
                return (
                    batch,
                    Some(SessionEnd::Lost("the broker cancelled the consumer".into())),
                )
            }
        }
    }
    (batch, None)
}

/// Why a session was lost, as logged; a missed heartbeat is counted as a
/// timeout.
fn lost(error: &lapin::Error) -> String {
    if matches!(error.kind(), lapin::ErrorKind::MissingHeartbeatError) {
        metrics::timed_out("broker_heartbeat");
    }
    error.to_string()
}

impl Worker {
    /// Consume on `session` until the worker is told to stop or the session
    /// dies. Each batch is handled on its own task, tracked so that shutdown
    /// can wait for it, across sessions.
    pub(super) async fn consume_session(&self, session: &BrokerSession) -> SessionEnd {
        let queue = self.settings.broker.topology.request_queue.as_str();
        let consumer_tag = format!("disconnect-worker-{}", uuid::Uuid::new_v4());
        let consumer = session
            .consume_channel
            .basic_consume(
                queue.into(),
                consumer_tag.as_str().into(),
                // Manual acknowledgements (no_ack: false): a request is acked
                // only after its transaction commits. Not exclusive: replicas
                // compete on the same queue.
                BasicConsumeOptions {
                    no_ack: false,
                    exclusive: false,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        let mut consumer = match consumer {
            Ok(consumer) => consumer,
            Err(error) => return SessionEnd::Lost(format!("could not start consuming: {error}")),
        };
        // Every delivery taken from this consumer is registered here, in
        // order, before its batch starts: what makes a coalesced ack safe.
        let acks = Arc::new(CoalescedAcks::new(session.consume_channel.clone()));
        self.readiness.consuming();
        tracing::info!(queue = %queue, "consuming requests");
        let mut health_check = tokio::time::interval(HEALTH_CHECK_INTERVAL);
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => {
                    // Stop new deliveries; those already received but not
                    // started go back to the queue when the channel closes.
                    session.stop_consuming(consumer_tag.as_str()).await;
                    return SessionEnd::Shutdown;
                }
                () = self.health.down() => return SessionEnd::DatabaseUnreachable,
                next = consumer.next() => {
                    let first = match next {
                        Some(Ok(delivery)) => delivery,
                        Some(Err(error)) => return SessionEnd::Lost(lost(&error)),
                        None => return SessionEnd::Lost("the broker cancelled the consumer".into()),
                    };
                    let busy = !self.in_flight.is_empty();
                    let (batch, end) =
                        collect_batch(first, &mut consumer, &self.settings.consume, busy).await;
                    acks.received(batch.iter().map(|received| received.delivery.delivery_tag));
                    self.in_flight.spawn(handle_batch(
                        self.handlers.clone(),
                        session.publish_channel.clone(),
                        acks.clone(),
                        batch,
                    ));
                    if let Some(end) = end {
                        return end;
                    }
                },
                _ = health_check.tick() => {
                    if let Some(problem) = session.problem() {
                        return SessionEnd::Lost(problem.into());
                    }
                }
            }
        }
    }
}
