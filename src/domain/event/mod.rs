//! The events published on the event exchange: one per connection
//! disconnected, one per token revoked alone, and exactly one terminal event
//! per request (the connection's event or a rejection for the token and
//! connection scopes, `disconnect.completed` or a rejection for company and
//! client requests).

pub mod payload;

use chrono::{DateTime, SecondsFormat, Utc};

use super::ids::{EventId, RequestId};
use super::outcome::{ConnectionRef, Outcome};
use super::scope::{ReasonCode, Scope};
use payload::RejectionReason;

pub const DISCONNECTED: &str = "connection.disconnected";
pub const DISCONNECT_REJECTED: &str = "connection.disconnect_rejected";
pub const TOKEN_REVOKED: &str = "token.revoked";
pub const DISCONNECT_COMPLETED: &str = "disconnect.completed";
/// Every event type, which is also its routing key.
pub const EVENT_TYPES: [&str; 4] = [
    DISCONNECTED,
    DISCONNECT_REJECTED,
    TOKEN_REVOKED,
    DISCONNECT_COMPLETED,
];

/// An event: its id, its request, routing key and exact bytes; the same
/// value is written to the outbox, read back by the relay, and published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeEvent {
    pub event_id: EventId,
    pub request_id: RequestId,
    /// The event type.
    pub routing_key: String,
    pub payload: String,
    /// When the outcome was decided: the AMQP `timestamp` and the CloudEvents
    /// `time` of every copy.
    pub occurred_at: DateTime<Utc>,
    /// The CloudEvents `subject`: the connection, when there is one.
    pub subject: Option<String>,
    /// The W3C `traceparent` every copy carries: the request's span.
    pub traceparent: Option<String>,
    /// When the request was published, if known: only in memory, for the
    /// latency from publish to event.
    pub request_published_at: Option<DateTime<Utc>>,
}

/// What every event of a request says about the request.
#[derive(Debug, Clone, Copy)]
pub struct EventContext<'a> {
    pub request_id: RequestId,
    pub scope: Scope,
    pub reason_code: Option<ReasonCode>,
    /// The application and company a company or client request is for.
    pub client_id: Option<&'a str>,
    pub company_id: Option<&'a str>,
}

impl OutcomeEvent {
    /// The event of an outcome, serialised once, here: the outbox keeps these
    /// bytes, so every publication of the event is identical. `None` for a
    /// request whose fan-out has only started: its events come as it goes.
    pub fn for_outcome(
        context: &EventContext,
        outcome: &Outcome,
        at: DateTime<Utc>,
    ) -> Option<Self> {
        let event_id = EventId::generate();
        let occurred_at = at.to_rfc3339_opts(SecondsFormat::Micros, true);
        let rejected = |reason: RejectionReason| payload::DisconnectRejected {
            event_id,
            event_type: DISCONNECT_REJECTED,
            occurred_at: occurred_at.clone(),
            request_id: context.request_id,
            reason,
            scope: context.scope,
            connection_id: outcome.connection_id(),
            token_id: outcome.token_id(),
            reason_code: context.reason_code,
        };
        let (routing_key, payload) = match outcome {
            Outcome::Disconnected {
                connection,
                revoked_token_ids,
            } => (
                DISCONNECTED,
                serde_json::to_string(&payload::ConnectionDisconnected {
                    event_id,
                    event_type: DISCONNECTED,
                    occurred_at: occurred_at.clone(),
                    request_id: context.request_id,
                    scope: context.scope,
                    connection_id: connection.connection_id,
                    client_id: &connection.client_id,
                    company_id: &connection.company_id,
                    provider_id: &connection.provider_id,
                    revoked_token_ids,
                    reason_code: context.reason_code,
                }),
            ),
            Outcome::TokenRevoked {
                token_id,
                connection,
            } => (
                TOKEN_REVOKED,
                serde_json::to_string(&payload::TokenRevoked {
                    event_id,
                    event_type: TOKEN_REVOKED,
                    occurred_at: occurred_at.clone(),
                    request_id: context.request_id,
                    token_id: *token_id,
                    connection_id: connection.connection_id,
                    client_id: &connection.client_id,
                    company_id: &connection.company_id,
                    provider_id: &connection.provider_id,
                    reason_code: context.reason_code,
                }),
            ),
            Outcome::Completed {
                connections,
                tokens,
            } => (
                DISCONNECT_COMPLETED,
                serde_json::to_string(&payload::DisconnectCompleted {
                    event_id,
                    event_type: DISCONNECT_COMPLETED,
                    occurred_at: occurred_at.clone(),
                    request_id: context.request_id,
                    scope: context.scope,
                    client_id: context.client_id.unwrap_or_default(),
                    company_id: context.company_id,
                    connections: *connections,
                    tokens: *tokens,
                    reason_code: context.reason_code,
                }),
            ),
            Outcome::UnknownToken => (
                DISCONNECT_REJECTED,
                serde_json::to_string(&rejected(RejectionReason::UnknownToken)),
            ),
            Outcome::UnknownConnection => (
                DISCONNECT_REJECTED,
                serde_json::to_string(&rejected(RejectionReason::UnknownConnection)),
            ),
            Outcome::AlreadyDisconnected { .. } => (
                DISCONNECT_REJECTED,
                serde_json::to_string(&rejected(RejectionReason::AlreadyDisconnected)),
            ),
            Outcome::AlreadyRevoked { .. } => (
                DISCONNECT_REJECTED,
                serde_json::to_string(&rejected(RejectionReason::AlreadyRevoked)),
            ),
            Outcome::NotAuthorized => (
                DISCONNECT_REJECTED,
                serde_json::to_string(&rejected(RejectionReason::NotAuthorized)),
            ),
            Outcome::Expired => (
                DISCONNECT_REJECTED,
                serde_json::to_string(&rejected(RejectionReason::Expired)),
            ),
            Outcome::NothingToDisconnect => (
                DISCONNECT_REJECTED,
                serde_json::to_string(&rejected(RejectionReason::NothingToDisconnect)),
            ),
            Outcome::Accepted => return None,
        };
        Some(Self {
            event_id,
            request_id: context.request_id,
            routing_key: routing_key.to_string(),
            // Serialising these plain structs cannot fail: no maps with
            // non-string keys, no custom serialisers.
            payload: payload.unwrap_or_default(),
            occurred_at: at,
            subject: outcome.connection_id().map(|id| id.to_string()),
            traceparent: None,
            request_published_at: None,
        })
    }
}

/// The connection of a disconnected or revoked outcome, for tests and
/// callers that want it.
pub fn connection_of(outcome: &Outcome) -> Option<&ConnectionRef> {
    match outcome {
        Outcome::Disconnected { connection, .. } | Outcome::TokenRevoked { connection, .. } => {
            Some(connection)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ConnectionId, TokenId};
    use uuid::Uuid;

    fn context(scope: Scope) -> EventContext<'static> {
        EventContext {
            request_id: RequestId::from_uuid(Uuid::new_v4()),
            scope,
            reason_code: Some(ReasonCode::Fraud),
            client_id: Some("app"),
            company_id: None,
        }
    }

    fn json(event: &OutcomeEvent) -> serde_json::Value {
        serde_json::from_str(&event.payload).expect("json")
    }

    #[test]
    fn a_disconnected_event_carries_the_connection_the_token_ids_and_the_reason_code() {
        let token_id = TokenId::generate();
        let connection_id = ConnectionId::generate();
        let outcome = Outcome::Disconnected {
            connection: ConnectionRef {
                connection_id,
                client_id: "app".into(),
                company_id: "C".into(),
                provider_id: "gusto".into(),
            },
            revoked_token_ids: vec![token_id],
        };
        let context = context(Scope::Connection);
        let event = OutcomeEvent::for_outcome(&context, &outcome, Utc::now()).expect("an event");
        assert_eq!(event.routing_key, DISCONNECTED);
        assert_eq!(event.subject, Some(connection_id.to_string()));
        let json = json(&event);
        assert_eq!(json["event_id"], event.event_id.to_string());
        assert_eq!(json["event_type"], DISCONNECTED);
        assert_eq!(json["request_id"], context.request_id.to_string());
        assert_eq!(json["provider_id"], "gusto");
        assert_eq!(json["revoked_token_ids"][0], token_id.to_string());
        assert_eq!(json["reason_code"], "fraud");
        assert_eq!(json["scope"], "connection");
    }

    #[test]
    fn a_rejected_event_names_its_reason() {
        let connection_id = ConnectionId::generate();
        let outcome = Outcome::AlreadyDisconnected { connection_id };
        let event = OutcomeEvent::for_outcome(&context(Scope::Connection), &outcome, Utc::now())
            .expect("an event");
        assert_eq!(event.routing_key, DISCONNECT_REJECTED);
        let body = json(&event);
        assert_eq!(body["reason"], "already_disconnected");
        assert_eq!(body["connection_id"], connection_id.to_string());

        let event =
            OutcomeEvent::for_outcome(&context(Scope::Token), &Outcome::UnknownToken, Utc::now())
                .expect("an event");
        let body = json(&event);
        assert_eq!(body["reason"], "unknown_token");
        assert!(body.get("connection_id").is_none());
        assert_eq!(event.subject, None);
    }

    #[test]
    fn a_completed_fan_out_counts_and_an_accepted_one_has_no_event_yet() {
        let outcome = Outcome::Completed {
            connections: 3,
            tokens: 7,
        };
        let event = OutcomeEvent::for_outcome(&context(Scope::Client), &outcome, Utc::now())
            .expect("an event");
        assert_eq!(event.routing_key, DISCONNECT_COMPLETED);
        let json = json(&event);
        assert_eq!(
            (json["connections"].as_u64(), json["tokens"].as_u64()),
            (Some(3), Some(7))
        );
        assert_eq!(json["client_id"], "app");
        assert!(
            OutcomeEvent::for_outcome(&context(Scope::Client), &Outcome::Accepted, Utc::now())
                .is_none()
        );
    }
}
