//! The consume loop of one broker session.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use lapin::Consumer;
use tokio_util::task::TaskTracker;

use super::handle::{handle_batch, HandlerContext, Received};
use super::WorkerSettings;
use crate::broker::BrokerSession;
use crate::observability::Readiness;

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
}

/// Add to `first` the deliveries already received, up to the batch size.
/// While earlier batches are still being processed (the worker is busy), wait
/// up to the linger time for more: batches then fill up, which is what lets
/// throughput rise with load. When the worker is idle a lone request is
/// processed at once, so light traffic gets no added latency.
async fn collect_batch(
    first: Delivery,
    consumer: &mut Consumer,
    settings: &WorkerSettings,
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
            Some(Err(error)) => return (batch, Some(SessionEnd::Lost(error.to_string()))),
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

pub async fn consume_session(
    session: &BrokerSession,
    context: &Arc<HandlerContext>,
    in_flight: &TaskTracker,
    readiness: &Readiness,
) -> SessionEnd {
    let consumer_tag = format!("disconnect-worker-{}", uuid::Uuid::new_v4());
    let consumer = session
        .consume_channel
        .basic_consume(
            context.topology.request_queue.as_str().into(),
            consumer_tag.as_str().into(),
            // Manual acknowledgements (no_ack: false): a request is acked only
            // after its transaction commits. Not exclusive: replicas compete
            // on the same queue.
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
    readiness.consuming();
    tracing::info!(queue = %context.topology.request_queue, "consuming requests");
    let mut health_check = tokio::time::interval(HEALTH_CHECK_INTERVAL);
    loop {
        tokio::select! {
            biased;
            () = context.shutdown.cancelled() => {
                // Stop new deliveries; those already received but not started
                // go back to the queue when the channel closes.
                let _ = session
                    .consume_channel
                    .basic_cancel(consumer_tag.as_str().into(), BasicCancelOptions::default())
                    .await;
                return SessionEnd::Shutdown;
            }
            next = consumer.next() => {
                let first = match next {
                    Some(Ok(delivery)) => delivery,
                    Some(Err(error)) => return SessionEnd::Lost(error.to_string()),
                    None => return SessionEnd::Lost("the broker cancelled the consumer".into()),
                };
                let (batch, end) = collect_batch(first, &mut consumer, &context.settings, !in_flight.is_empty()).await;
                in_flight.spawn(handle_batch(context.clone(), session.publish_channel.clone(), batch));
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
