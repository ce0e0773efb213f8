//! The outcome events published on the event exchange.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::ids::{ConnectionId, EventId, RequestId, TokenId};
use super::outcome::Outcome;

pub const DISCONNECTED: &str = "connection.disconnected";
pub const DISCONNECT_REJECTED: &str = "connection.disconnect_rejected";

/// An event: its id, its request, routing key and exact bytes; the same
/// value is written to the outbox, read back by the relay, and published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeEvent {
    pub event_id: EventId,
    pub request_id: RequestId,
    pub routing_key: String,
    pub payload: String,
    /// When the outcome was decided (the AMQP `timestamp` of every copy).
    pub occurred_at: DateTime<Utc>,
    /// The W3C `traceparent` every copy carries: the request's span.
    pub traceparent: Option<String>,
    /// When the request was published, if known: only in memory, for the
    /// latency from publish to event.
    pub request_published_at: Option<DateTime<Utc>>,
}

#[derive(Serialize)]
struct DisconnectedPayload<'a> {
    event_id: EventId,
    event_type: &'static str,
    occurred_at: String,
    request_id: RequestId,
    connection_id: ConnectionId,
    client_id: &'a str,
    company_id: &'a str,
    provider_id: &'a str,
    revoked_token_ids: &'a [TokenId],
}

#[derive(Serialize)]
struct RejectedPayload {
    event_id: EventId,
    event_type: &'static str,
    occurred_at: String,
    request_id: RequestId,
    reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    connection_id: Option<ConnectionId>,
}

impl OutcomeEvent {
    /// Build the event for an outcome. Serialised once, here: the outbox keeps
    /// these bytes, so every publication of the event is identical.
    pub fn for_outcome(request_id: RequestId, outcome: &Outcome, at: DateTime<Utc>) -> Self {
        let event_id = EventId::generate();
        let occurred_at = at.to_rfc3339_opts(SecondsFormat::Micros, true);
        let (routing_key, payload) = match outcome {
            Outcome::Disconnected {
                connection,
                revoked_token_ids,
            } => (
                DISCONNECTED,
                serde_json::to_string(&DisconnectedPayload {
                    event_id,
                    event_type: DISCONNECTED,
                    occurred_at,
                    request_id,
                    connection_id: connection.connection_id,
                    client_id: &connection.client_id,
                    company_id: &connection.company_id,
                    provider_id: &connection.provider_id,
                    revoked_token_ids,
                }),
            ),
            Outcome::UnknownToken | Outcome::AlreadyDisconnected { .. } => (
                DISCONNECT_REJECTED,
                serde_json::to_string(&RejectedPayload {
                    event_id,
                    event_type: DISCONNECT_REJECTED,
                    occurred_at,
                    request_id,
                    reason: outcome.kind().as_str(),
                    connection_id: outcome.connection_id(),
                }),
            ),
        };
        Self {
            event_id,
            request_id,
            routing_key: routing_key.to_string(),
            // Serialising these plain structs cannot fail: no maps with
            // non-string keys, no custom serialisers.
            payload: payload.unwrap_or_default(),
            occurred_at: at,
            traceparent: None,
            request_published_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ConnectionRef;
    use uuid::Uuid;

    #[test]
    fn a_disconnected_event_carries_the_connection_and_token_ids() {
        let request_id = RequestId::from_uuid(Uuid::new_v4());
        let token_id = TokenId::generate();
        let outcome = Outcome::Disconnected {
            connection: ConnectionRef {
                connection_id: ConnectionId::generate(),
                client_id: "app".into(),
                company_id: "C".into(),
                provider_id: "gusto".into(),
            },
            revoked_token_ids: vec![token_id],
        };
        let event = OutcomeEvent::for_outcome(request_id, &outcome, Utc::now());
        assert_eq!(event.routing_key, DISCONNECTED);
        let json: serde_json::Value = serde_json::from_str(&event.payload).expect("json");
        assert_eq!(json["event_id"], event.event_id.to_string());
        assert_eq!(json["event_type"], DISCONNECTED);
        assert_eq!(json["request_id"], request_id.to_string());
        assert_eq!(json["provider_id"], "gusto");
        assert_eq!(json["revoked_token_ids"][0], token_id.to_string());
    }

    #[test]
    fn a_rejected_event_names_its_reason() {
        let connection_id = ConnectionId::generate();
        let outcome = Outcome::AlreadyDisconnected { connection_id };
        let event =
            OutcomeEvent::for_outcome(RequestId::from_uuid(Uuid::new_v4()), &outcome, Utc::now());
        assert_eq!(event.routing_key, DISCONNECT_REJECTED);
        let json: serde_json::Value = serde_json::from_str(&event.payload).expect("json");
        assert_eq!(json["reason"], "already_disconnected");
        assert_eq!(json["connection_id"], connection_id.to_string());

        let event = OutcomeEvent::for_outcome(
            RequestId::from_uuid(Uuid::new_v4()),
            &Outcome::UnknownToken,
            Utc::now(),
        );
        let json: serde_json::Value = serde_json::from_str(&event.payload).expect("json");
        assert_eq!(json["reason"], "unknown_token");
        assert!(json.get("connection_id").is_none());
    }
}
