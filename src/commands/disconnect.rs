//! `disconnect-worker disconnect TOKEN`: publish a request as an upstream
//! application would, and optionally wait for its outcome event.

use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use futures_util::StreamExt;
use lapin::options::BasicAckOptions;
use lapin::{ConnectionProperties, Consumer};
use tracing::Instrument;

use super::ConfigError;
use crate::broker::publish::{json_properties, publish_confirmed};
use crate::broker::subscribe::{subscribe, Acks};
use crate::cli::DisconnectArgs;
use crate::domain::event::{DISCONNECTED, DISCONNECT_REJECTED};
use crate::domain::{AccessToken, DisconnectRequest};
use crate::telemetry::propagation;

/// The AMQP `type` of a request.
const REQUEST_TYPE: &str = "disconnect.request";

pub async fn disconnect(args: &DisconnectArgs) -> anyhow::Result<()> {
    let urls = args.broker.amqp_urls().map_err(ConfigError)?;
    let topology = args.broker.topology().map_err(ConfigError)?;
    let token = AccessToken::parse(args.token.clone())
        .map_err(|what| ConfigError(format!("the token {what}")))?;
    let connection = urls
        .connect_first("AMQP_URL", ConnectionProperties::default())
        .await
        .map_err(anyhow::Error::msg)?;
    if args.broker.declare_topology {
        let declaring = connection.create_channel().await?;
        topology.declare(&declaring).await?;
    } else {
        topology.verify(&connection).await?;
    }
    let channel = connection.create_channel().await?;
    let request = DisconnectRequest {
        requested_at: Some(Utc::now()),
        requested_by: args.requested_by.clone(),
        reason: args.reason.clone(),
        ..DisconnectRequest::new(token)
    };
    // Subscribe before publishing, so the event cannot slip past us.
    let events = if args.wait {
        Some(
            subscribe(
                &channel,
                &topology.event_exchange,
                &[DISCONNECTED, DISCONNECT_REJECTED],
                Acks::Manual,
            )
            .await
            .context("subscribing to outcome events")?,
        )
    } else {
        None
    };
    channel.confirm_select(Default::default()).await?;
    let id = request.request_id.to_string();
    // The request starts a trace: the span's own while traces are exported,
    // else fresh ids, so the worker's spans and the event still join it.
    let span = tracing::info_span!(
        "send",
        otel.name = %format_args!("send {}", topology.request_exchange),
        otel.kind = "producer",
        messaging.system = "rabbitmq",
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = %topology.request_exchange,
        messaging.rabbitmq.destination.routing_key = %topology.request_routing_key,
        messaging.message.id = %id,
        request.id = %id,
    );
    let traceparent =
        propagation::traceparent_of(&span).unwrap_or_else(propagation::new_traceparent);
    publish_confirmed(
        &channel,
        &topology.request_exchange,
        &topology.request_routing_key,
        &request.encode(),
        json_properties(&id, &id, REQUEST_TYPE, Utc::now(), Some(&traceparent)),
    )
    .instrument(span)
    .await
    .context("publishing the request")?;
    if args.wait {
        if let Some(trace_id) = propagation::trace_id_of(&traceparent) {
            eprintln!("trace {trace_id}");
        }
    }
    match events {
        None => println!("{}", serde_json::json!({ "request_id": id })),
        Some(events) => {
            let event = wait_for_outcome(events, &id, Duration::from_secs(args.wait_secs)).await?;
            println!("{event}");
        }
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

async fn wait_for_outcome(
    mut events: Consumer,
    request_id: &str,
    limit: Duration,
) -> anyhow::Result<String> {
    let wait = async {
        while let Some(delivery) = events.next().await {
            let delivery = delivery?;
            delivery.acker.ack(BasicAckOptions::default()).await?;
            let correlation = delivery
                .properties
                .correlation_id()
                .as_ref()
                .map(|id| id.as_str());
            if correlation == Some(request_id) {
                return Ok(String::from_utf8_lossy(&delivery.data).into_owned());
            }
        }
        anyhow::bail!("the event subscription closed before the outcome arrived")
    };
    tokio::time::timeout(limit, wait)
        .await
        .with_context(|| format!("no outcome event within {limit:?}; is a worker running?"))?
}
