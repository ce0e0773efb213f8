//! Events in: the dispatcher's quorum queue on the event exchange. Each
//! event becomes one delivery per enabled endpoint of its application that
//! takes its type, committed before the event is acknowledged; a
//! redelivered event adds nothing (the deliveries are unique per endpoint
//! and event).

use std::sync::Arc;
use std::time::Duration;

use diesel::sql_types::{Nullable, Text, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ConnectionProperties, ExchangeKind};
use serde::Deserialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::dispatch::DueHints;
use crate::broker::BrokerUrls;
use crate::db::webhooks::deliveries;
use crate::db::BoundedPool;
use crate::domain::event::{DISCONNECT_REJECTED, EVENT_TYPES};
use crate::observability::metrics::webhooks as metrics;

/// Events taken in at once.
const INTAKE_CONCURRENCY: usize = 8;

/// What routing needs of an event; the rest of its bytes pass untouched.
#[derive(Debug, Deserialize)]
struct Routing {
    event_id: Uuid,
    event_type: String,
    request_id: Option<Uuid>,
    client_id: Option<String>,
    reason: Option<String>,
}

/// Where an event goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Application(String),
    /// To no application: an unknown token's rejection, a rejection of a
    /// publisher not authorized for the application (the application did
    /// not ask, and must not learn of another's attempt).
    Nowhere(&'static str),
}

/// Declare the queue, bind it for every outcome event type, consume. With
/// `declare` false (DECLARE_TOPOLOGY=false) someone else owns the queue and
/// its bindings: it must exist, and only that is checked.
pub async fn open(
    channel: &Channel,
    event_exchange: &str,
    queue: &str,
    prefetch: u16,
    declare: bool,
) -> lapin::Result<lapin::Consumer> {
    if declare {
        declare_and_bind(channel, event_exchange, queue).await?;
    } else {
        crate::broker::topology::inspect_queue(channel, queue).await?;
    }
    // Bounded: the dispatcher takes in at the pace of its database writes.
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    channel
        .basic_consume(
            queue.into(),
            "webhook-intake".into(),
            // Manual acks: an event is acknowledged once its deliveries are
            // committed. Not exclusive: replicas compete for events.
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
}

async fn declare_and_bind(
    channel: &Channel,
    event_exchange: &str,
    queue: &str,
) -> lapin::Result<()> {
    // The worker declares the exchange too, with the same settings; either
    // may start first.
    channel
        .exchange_declare(
            event_exchange.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let mut arguments = FieldTable::default();
    // Replicated, and durable: events wait here while every dispatcher is
    // down.
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await?;
    // The outcome events only: the operational ones (an endpoint disabled)
    // are for operators, not for the application's receivers.
    for event_type in EVENT_TYPES {
        channel
            .queue_bind(
                queue.into(),
                event_exchange.into(),
                event_type.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// The intake's settings and what it shares with the dispatcher.
pub struct Intake {
    pub urls: BrokerUrls,
    pub event_exchange: String,
    pub queue: String,
    pub prefetch: u16,
    /// DECLARE_TOPOLOGY.
    pub declare: bool,
    pub pool: BoundedPool,
    /// Given the endpoints of each event's new deliveries, once committed.
    pub hints: Arc<DueHints>,
    pub ready: Arc<crate::observability::Readiness>,
}

/// Consume until shutdown, reconnecting after a lost connection.
pub async fn run(intake: Intake, shutdown: CancellationToken) {
    let Intake {
        urls,
        event_exchange,
        queue,
        prefetch,
        declare,
        pool,
        hints,
        ready,
    } = intake;
    let mut pause = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        let session = async {
            let connection = urls
                .connect_first("AMQP_URL", ConnectionProperties::default())
                .await
                .map_err(|error| error.to_string())?;
            let channel = connection
                .create_channel()
                .await
                .map_err(|e| e.to_string())?;
            let consumer = open(&channel, &event_exchange, &queue, prefetch, declare)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((connection, consumer))
        };
        let (connection, mut consumer) = match session.await {
            Ok(opened) => opened,
            Err(error) => {
                ready.not_consuming("connecting");
                tracing::warn!(error = %error, "webhook intake: cannot consume events; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        pause = Duration::from_millis(200);
        ready.consuming();
        tracing::info!(queue = %queue, "webhook intake: consuming events");
        // Events are taken in several at once: each is its own statement
        // and commit, and commits side by side share Postgres's WAL flushes
        // (one at a time, the intake was the dispatcher's limit). Acks go
        // one by one, in any order.
        let slots = Arc::new(tokio::sync::Semaphore::new(INTAKE_CONCURRENCY));
        let mut taking: JoinSet<bool> = JoinSet::new();
        loop {
            let delivery = tokio::select! {
                () = shutdown.cancelled() => break,
                Some(done) = taking.join_next(), if !taking.is_empty() => {
                    if matches!(done, Ok(true)) {
                        continue;
                    }
                    break;
                }
                next = consumer.next() => next,
            };
            let delivery = match delivery {
                Some(Ok(delivery)) => delivery,
                Some(Err(error)) => {
                    tracing::warn!(error = %error, "webhook intake: the connection failed; reconnecting");
                    break;
                }
                None => break,
            };
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break;
            };
            let (pool, hints, shutdown) = (pool.clone(), hints.clone(), shutdown.clone());
            taking.spawn(async move {
                let _slot = slot;
                // Only a shutdown ends this before the deliveries are
                // committed; the event is then redelivered to a replica.
                let Some(new_for) = take_in_until_done(&pool, &delivery.data, &shutdown).await
                else {
                    return false;
                };
                if let Err(error) = delivery.acker.ack(BasicAckOptions::default()).await {
                    tracing::warn!(error = %error, "webhook intake: ack failed; the event comes again");
                    return false;
                }
                hints.add(new_for);
                true
            });
        }
        // What was committed is acknowledged before the connection closes.
        while taking.join_next().await.is_some() {}
        ready.not_consuming("reconnecting");
        let _ = connection
            .close(200, "webhook intake stopping".into())
            .await;
    }
}

/// Record the event's deliveries, retrying the database until it answers
/// or the dispatcher stops (an event never counts toward a delivery limit
/// for a database outage). The endpoints given a new delivery; `None` when
/// stopped first.
async fn take_in_until_done(
    pool: &BoundedPool,
    body: &[u8],
    shutdown: &CancellationToken,
) -> Option<Vec<Uuid>> {
    let mut pause = Duration::from_millis(100);
    loop {
        match take_in(pool, body).await {
            Ok((outcome, new_for)) => {
                metrics::event_taken_in(outcome);
                return Some(new_for);
            }
            Err(error) => {
                tracing::warn!(error = %error, "webhook intake: cannot record an event's deliveries; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return None,
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// What became of one event, as the metric's label, and the endpoints
/// given a new delivery.
async fn take_in(
    pool: &BoundedPool,
    body: &[u8],
) -> Result<(&'static str, Vec<Uuid>), crate::db::DbError> {
    let Some((routing, payload)) = read(body) else {
        tracing::error!(
            bytes = body.len(),
            "webhook intake: an event that is not an outcome event's JSON; skipped"
        );
        return Ok(("unreadable", Vec::new()));
    };
    pool.run(async |conn| {
        let route = route(conn, &routing).await?;
        let Route::Application(client_id) = route else {
            return Ok(("no_application", Vec::new()));
        };
        let message = deliveries::NewMessage {
            event_id: routing.event_id,
            event_type: &routing.event_type,
            client_id: &client_id,
            payload,
        };
        let taken = deliveries::take_in(conn, &message).await?;
        let outcome = if taken.endpoints == 0 {
            "no_endpoint"
        } else {
            "routed"
        };
        Ok((outcome, taken.new_for))
    })
    .await
}

fn read(body: &[u8]) -> Option<(Routing, &str)> {
    let text = std::str::from_utf8(body).ok()?;
    let routing: Routing = serde_json::from_str(text).ok()?;
    Some((routing, text))
}

#[derive(QueryableByName)]
struct RequestApplication {
    #[diesel(sql_type = Nullable<Text>)]
    client_id: Option<String>,
}

/// The application an event is for: its own `client_id`, or, for a
/// rejection (which names none), the application of the request's
/// connection or the one the request named.
async fn route(conn: &mut AsyncPgConnection, routing: &Routing) -> diesel::QueryResult<Route> {
    if let Some(client_id) = &routing.client_id {
        return Ok(Route::Application(client_id.clone()));
    }
    if routing.event_type != DISCONNECT_REJECTED {
        return Ok(Route::Nowhere("no client_id"));
    }
    if routing.reason.as_deref() == Some("not_authorized") {
        return Ok(Route::Nowhere("not_authorized"));
    }
    let Some(request_id) = routing.request_id else {
        return Ok(Route::Nowhere("no request"));
    };
    let found: Option<RequestApplication> = diesel::sql_query(
        "SELECT COALESCE(c.client_id, r.client_id) AS client_id
         FROM disconnect_requests r LEFT JOIN connections c ON c.id = r.connection_id
         WHERE r.request_id = $1",
    )
    .bind::<SqlUuid, _>(request_id)
    .get_result(conn)
    .await
    .optional()?;
    Ok(match found.and_then(|found| found.client_id) {
        Some(client_id) => Route::Application(client_id),
        None => Route::Nowhere("no application"),
    })
}

use diesel::OptionalExtension;
