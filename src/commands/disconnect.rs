//! `disconnect-worker disconnect`: publish a request as an upstream
//! application would (its `user_id` the user of `AMQP_URL`, which RabbitMQ
//! checks), and optionally wait for its terminal event; or, with
//! `--dry-run`, print what it would do and publish nothing.

use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use futures_util::StreamExt;
use lapin::options::BasicAckOptions;
use lapin::{ConnectionProperties, Consumer};
use tracing::Instrument;

use super::{with_database, ConfigError};
use crate::broker::publish::{json_properties, publish_confirmed, Routing};
use crate::broker::subscribe::{subscribe, Acks};
use crate::cli::DisconnectArgs;
use crate::domain::contract::REQUEST_TYPE;
use crate::domain::event::{
    DISCONNECTED, DISCONNECT_COMPLETED, DISCONNECT_REJECTED, ENTITY_DISCONNECTED, TOKEN_REVOKED,
};
use crate::domain::request::Selectors;
use crate::domain::{DisconnectRequest, ReasonCode, Scope, Target};
use crate::service::preview::preview;
use crate::telemetry::propagation;

/// The request the arguments describe; a bad combination is named.
fn request(args: &DisconnectArgs) -> Result<DisconnectRequest, ConfigError> {
    let target = Selectors {
        access_token: args.token.clone(),
        connection_id: args.connection_id.clone(),
        company_id: args.company_id.clone(),
        client_id: args.client_id.clone(),
        entity_ids: (!args.entity_ids.is_empty()).then(|| args.entity_ids.clone()),
        scope: args.scope.clone(),
    }
    .target()
    .map_err(|rejection| ConfigError(cli_words(&rejection.detail)))?;
    let reason_code = args
        .reason_code
        .as_deref()
        .map(|code| {
            ReasonCode::parse(code).ok_or_else(|| {
                ConfigError(format!(
                    "--reason-code {code} is not one of {}",
                    ReasonCode::ALL.map(ReasonCode::as_str).join(", ")
                ))
            })
        })
        .transpose()?;
    Ok(DisconnectRequest {
        requested_at: Some(Utc::now()),
        requested_by: args.requested_by.clone(),
        reason: args.reason.clone(),
        reason_code,
        ..DisconnectRequest::for_target(target)
    })
}

/// A selector rule as the message contract words it, in the command's
/// words (the token is the positional argument; fields are flags).
fn cli_words(detail: &str) -> String {
    detail
        .replace(
            "field `access_token` is missing or null",
            "no TOKEN is given",
        )
        .replace("fields ", "")
        .replace("field `scope`", "scope")
        .replace("field ", "")
        .replace("scope ", "--scope ")
        .replace("access_token", "TOKEN")
        .replace("connection_id", "--connection-id")
        .replace("company_id", "--company-id")
        .replace("client_id", "--client-id")
        .replace("entity_ids", "--entity-id")
        .replace('`', "")
}

/// The routing keys of a request's terminal event.
fn terminal_events(scope: Scope) -> [&'static str; 2] {
    match scope {
        Scope::Token => [TOKEN_REVOKED, DISCONNECT_REJECTED],
        Scope::Connection => [DISCONNECTED, DISCONNECT_REJECTED],
        Scope::Company | Scope::Client => [DISCONNECT_COMPLETED, DISCONNECT_REJECTED],
        Scope::Entity => [ENTITY_DISCONNECTED, DISCONNECT_REJECTED],
    }
}

pub async fn disconnect(args: &DisconnectArgs) -> anyhow::Result<()> {
    let request = request(args)?;
    if args.dry_run {
        return dry_run(args, &request.target).await;
    }
    let urls = args.broker.amqp_urls().map_err(ConfigError)?;
    let topology = args.broker.topology().map_err(ConfigError)?;
    let connection = urls
        .connect_first("AMQP_URL", ConnectionProperties::default())
        .await
        .map_err(anyhow::Error::msg)?;
    let prepare = async {
        if args.broker.declare_topology {
            let declaring = connection.create_channel().await?;
            topology.declare(&declaring).await?;
        } else {
            topology.verify(&connection).await?;
        }
        anyhow::Ok(())
    };
    let limit = urls.limits().connect;
    tokio::time::timeout(limit, prepare)
        .await
        .with_context(|| format!("the broker did not answer within {limit:?}"))??;
    let channel = connection.create_channel().await?;
    // Subscribe before publishing, so the event cannot slip past us.
    let events = if args.wait {
        Some(
            subscribe(
                &channel,
                &topology.event_exchange,
                &terminal_events(request.target.scope()),
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
    // The broker checks user_id against this connection's user: it is how
    // the worker knows who may ask for a request that names no token.
    let mut properties = json_properties(&id, &id, REQUEST_TYPE, Utc::now(), Some(&traceparent));
    if let Some(user) = urls.user() {
        properties = properties.with_user_id(user.into());
    }
    publish_confirmed(
        &channel,
        &topology.request_exchange,
        &topology.request_routing_key,
        Routing::AtLeastOneQueue,
        &request.encode(),
        properties,
        args.broker.confirm_timeout(),
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
            for event in wait_for_outcome(events, &id, Duration::from_secs(args.wait_secs)).await? {
                println!("{event}");
            }
        }
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

async fn dry_run(args: &DisconnectArgs, target: &Target) -> anyhow::Result<()> {
    let settings = args.database.settings().map_err(ConfigError)?;
    let preview = with_database(
        &settings,
        "reading what the request would disconnect",
        async |conn| preview(conn, target).await,
    )
    .await?;
    println!("{}", serde_json::to_string_pretty(&preview)?);
    Ok(())
}

/// The request's terminal events: one, or, for entities disconnected alone,
/// one per entity (each says how many there are).
async fn wait_for_outcome(
    mut events: Consumer,
    request_id: &str,
    limit: Duration,
) -> anyhow::Result<Vec<String>> {
    let wait = async {
        let mut received = Vec::new();
        while let Some(delivery) = events.next().await {
            let delivery = delivery?;
            delivery.acker.ack(BasicAckOptions::default()).await?;
            let correlation = delivery
                .properties
                .correlation_id()
                .as_ref()
                .map(|id| id.as_str());
            if correlation != Some(request_id) {
                continue;
            }
            let body = String::from_utf8_lossy(&delivery.data).into_owned();
            let expected = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|event| event["disconnected_entities"].as_u64())
                .and_then(|count| usize::try_from(count).ok())
                .unwrap_or(1);
            // An event may come twice (at least once): count each id once.
            if !received.contains(&body) {
                received.push(body);
            }
            if received.len() >= expected {
                return Ok(received);
            }
        }
        anyhow::bail!("the event subscription closed before the outcome arrived")
    };
    tokio::time::timeout(limit, wait)
        .await
        .with_context(|| format!("no outcome event within {limit:?}; is a worker running?"))?
}
