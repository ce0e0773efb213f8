//! The `webhook.endpoint_disabled` event: an endpoint the dispatcher
//! disabled (410, or failing for too long) is announced on the event
//! exchange, for operators' consumers and alerting. The row is the outbox:
//! an endpoint disabled and not yet announced is announced until the
//! broker confirms, by whichever replica gets to it (at least once; the
//! event id is the same every time).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use lapin::{Channel, Connection};
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::ENDPOINT_DISABLED;
use crate::broker::publish::{json_properties, publish_confirmed, Routing};
use crate::broker::BrokerUrls;
use crate::db::webhooks::endpoints::{self, Unannounced};
use crate::db::BoundedPool;

/// `webhook.endpoint_disabled`: the dispatcher disabled an endpoint.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[schemars(title = "webhook.endpoint_disabled")]
pub struct EndpointDisabled<'a> {
    pub event_id: Uuid,
    #[schemars(extend("const" = "webhook.endpoint_disabled"))]
    pub event_type: &'static str,
    /// When it was disabled.
    #[schemars(extend("format" = "date-time"))]
    pub occurred_at: String,
    pub endpoint_id: Uuid,
    /// The application the endpoint belongs to.
    pub client_id: &'a str,
    /// `gone`: the receiver answered 410 Gone; `failing`: every attempt
    /// failed for `WEBHOOK_DISABLE_AFTER_SECS`.
    #[schemars(extend("enum" = ["gone", "failing"]))]
    pub reason: &'a str,
    /// Since when its attempts had all failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub failing_since: Option<String>,
}

/// The same id for every announcement of one disabling: derived from the
/// endpoint and when it was disabled.
fn event_id(endpoint_id: Uuid, disabled_at: DateTime<Utc>) -> Uuid {
    let micros = disabled_at.timestamp_micros();
    Uuid::new_v5(&endpoint_id, &micros.to_be_bytes())
}

pub fn payload(endpoint: &Unannounced) -> (Uuid, String) {
    let id = event_id(endpoint.id, endpoint.disabled_at);
    let event = EndpointDisabled {
        event_id: id,
        event_type: ENDPOINT_DISABLED,
        occurred_at: endpoint
            .disabled_at
            .to_rfc3339_opts(SecondsFormat::Micros, true),
        endpoint_id: endpoint.id,
        client_id: &endpoint.client_id,
        reason: endpoint.disabled_reason.as_deref().unwrap_or("failing"),
        failing_since: endpoint
            .failing_since
            .map(|at| at.to_rfc3339_opts(SecondsFormat::Micros, true)),
    };
    // A plain struct: serialising cannot fail.
    (id, serde_json::to_string(&event).unwrap_or_default())
}

pub struct Announcer {
    pub urls: BrokerUrls,
    pub event_exchange: String,
    pub confirm_timeout: Duration,
    pub pool: BoundedPool,
    pub wake: Arc<Notify>,
    pub every: Duration,
}

impl Announcer {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut session: Option<(Connection, Channel)> = None;
        loop {
            if let Err(error) = self.announce_owed(&mut session).await {
                tracing::warn!(error = %error, "webhooks: cannot announce a disabled endpoint yet; trying again");
                session = None;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.every) => {}
            }
        }
        if let Some((connection, _)) = session {
            let _ = connection.close(200, "stopping".into()).await;
        }
    }

    async fn announce_owed(
        &self,
        session: &mut Option<(Connection, Channel)>,
    ) -> anyhow::Result<()> {
        let owed = self
            .pool
            .read(async |conn| endpoints::unannounced(conn, 100).await)
            .await?;
        for endpoint in owed {
            let channel = match session {
                Some((connection, channel)) if connection.status().connected() => channel.clone(),
                _ => {
                    let (connection, channel) = self
                        .urls
                        .connect_confirming("AMQP_URL")
                        .await
                        .map_err(anyhow::Error::msg)?;
                    *session = Some((connection, channel.clone()));
                    channel
                }
            };
            let (id, body) = payload(&endpoint);
            let properties = json_properties(
                &id.to_string(),
                &endpoint.id.to_string(),
                ENDPOINT_DISABLED,
                endpoint.disabled_at,
                None,
            );
            publish_confirmed(
                &channel,
                &self.event_exchange,
                ENDPOINT_DISABLED,
                Routing::AnyQueues,
                body.as_bytes(),
                properties,
                self.confirm_timeout,
            )
            .await?;
            self.pool
                .run(async |conn| {
                    endpoints::announced(conn, endpoint.id, endpoint.disabled_at).await
                })
                .await?;
            tracing::info!(webhook.endpoint_id = %endpoint.id, "webhook endpoint's disabling announced");
        }
        Ok(())
    }
}
