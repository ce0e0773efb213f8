//! The events published on the event exchange: one per connection
//! disconnected, one per token revoked alone, and exactly one terminal event
//! per request (the connection's event or a rejection for the token and
//! connection scopes, `disconnect.completed` or a rejection for company and
//! client requests).

pub mod payload;

use chrono::{DateTime, SecondsFormat, Utc};

use super::entity::EntityRef;
use super::ids::{ConnectionId, EventId, RequestId, TokenId};
use super::outcome::{ConnectionRef, Outcome};
use super::scope::{ReasonCode, Scope};
use super::stored_label::StoredLabel;
use payload::RejectionReason;

pub const DISCONNECTED: &str = "connection.disconnected";
pub const DISCONNECT_REJECTED: &str = "connection.disconnect_rejected";
pub const TOKEN_REVOKED: &str = "token.revoked";
pub const DISCONNECT_COMPLETED: &str = "disconnect.completed";
pub const ENTITY_DISCONNECTED: &str = "connection.entity_disconnected";
/// Every event type, which is also its routing key.
pub const EVENT_TYPES: [&str; 5] = [
    DISCONNECTED,
    DISCONNECT_REJECTED,
    TOKEN_REVOKED,
    DISCONNECT_COMPLETED,
    ENTITY_DISCONNECTED,
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
    /// For a `connection.disconnected` event: what its bytes are rebuilt
    /// from besides the rows its request wrote. The outbox keeps this
    /// instead of the bytes.
    pub rebuilt_from: Option<DisconnectionKey>,
}

/// What a `connection.disconnected` event says that the rows do not: with
/// the connection's row and the token and entity rows its request revoked
/// and ended, [`OutcomeEvent::connection_disconnected`] rebuilds its bytes.
/// Its labels are carried as stored: a newer release's are published as
/// that release wrote them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisconnectionKey {
    pub connection_id: ConnectionId,
    pub scope: StoredLabel<Scope>,
    pub reason_code: Option<StoredLabel<ReasonCode>>,
}

/// What every event of a request says about the request.
#[derive(Debug, Clone)]
pub struct EventContext<'a> {
    pub request_id: RequestId,
    pub scope: Scope,
    /// A fan-out's, read back from its row, may be a newer release's.
    pub reason_code: Option<StoredLabel<ReasonCode>>,
    /// The application and company a company or client request is for.
    pub client_id: Option<&'a str>,
    pub company_id: Option<&'a str>,
}

impl OutcomeEvent {
    /// The events of an outcome, serialised once, here: the outbox keeps
    /// these bytes, so every publication of an event is identical. One for
    /// most outcomes; one per entity for entities disconnected alone; none
    /// for a request whose fan-out has only started (its events come as it
    /// goes).
    pub fn for_outcome(context: &EventContext, outcome: &Outcome, at: DateTime<Utc>) -> Vec<Self> {
        let occurred_at = at.to_rfc3339_opts(SecondsFormat::Micros, true);
        let event = |event_id: EventId, routing_key: &str, payload: serde_json::Result<String>| {
            Self {
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
                rebuilt_from: None,
            }
        };
        let rejected = |reason: RejectionReason| {
            let event_id = EventId::generate();
            let entity_ids = match outcome {
                Outcome::UnknownEntity { entity_ids, .. }
                | Outcome::EntitiesAlreadyDisconnected { entity_ids, .. } => {
                    Some(entity_ids.as_slice())
                }
                _ => None,
            };
            let payload = serde_json::to_string(&payload::DisconnectRejected {
                event_id,
                event_type: DISCONNECT_REJECTED,
                occurred_at: occurred_at.clone(),
                request_id: context.request_id,
                reason,
                scope: context.scope,
                connection_id: outcome.connection_id(),
                token_id: outcome.token_id(),
                entity_ids,
                reason_code: context.reason_code.clone(),
            });
            vec![event(event_id, DISCONNECT_REJECTED, payload)]
        };
        match outcome {
            Outcome::Disconnected {
                connection,
                revoked_token_ids,
                ended_entities,
            } => {
                let key = DisconnectionKey {
                    connection_id: connection.connection_id,
                    scope: context.scope.into(),
                    reason_code: context.reason_code.clone(),
                };
                vec![Self::connection_disconnected(
                    EventId::generate(),
                    context.request_id,
                    key,
                    connection,
                    revoked_token_ids,
                    ended_entities,
                    at,
                )]
            }
            Outcome::EntitiesDisconnected {
                connection,
                entities,
                already_disconnected,
            } => entities
                .iter()
                .map(|entity| {
                    let event_id = EventId::generate();
                    let payload = serde_json::to_string(&payload::EntityDisconnected {
                        event_id,
                        event_type: ENTITY_DISCONNECTED,
                        occurred_at: occurred_at.clone(),
                        request_id: context.request_id,
                        scope: context.scope,
                        connection_id: connection.connection_id,
                        client_id: &connection.client_id,
                        company_id: &connection.company_id,
                        provider_id: &connection.provider_id,
                        entity_id: entity.entity_id,
                        provider_entity_id: &entity.provider_entity_id,
                        disconnected_entities: entities.len() as u64,
                        already_disconnected_entity_ids: already_disconnected,
                        reason_code: context.reason_code.clone(),
                    });
                    event(event_id, ENTITY_DISCONNECTED, payload)
                })
                .collect(),
            Outcome::TokenRevoked {
                token_id,
                connection,
            } => {
                let event_id = EventId::generate();
                let payload = serde_json::to_string(&payload::TokenRevoked {
                    event_id,
                    event_type: TOKEN_REVOKED,
                    occurred_at: occurred_at.clone(),
                    request_id: context.request_id,
                    token_id: *token_id,
                    connection_id: connection.connection_id,
                    client_id: &connection.client_id,
                    company_id: &connection.company_id,
                    provider_id: &connection.provider_id,
                    reason_code: context.reason_code.clone(),
                });
                vec![event(event_id, TOKEN_REVOKED, payload)]
            }
            Outcome::Completed {
                connections,
                tokens,
            } => {
                let event_id = EventId::generate();
                let payload = serde_json::to_string(&payload::DisconnectCompleted {
                    event_id,
                    event_type: DISCONNECT_COMPLETED,
                    occurred_at: occurred_at.clone(),
                    request_id: context.request_id,
                    scope: context.scope,
                    client_id: context.client_id.unwrap_or_default(),
                    company_id: context.company_id,
                    connections: *connections,
                    tokens: *tokens,
                    reason_code: context.reason_code.clone(),
                });
                vec![event(event_id, DISCONNECT_COMPLETED, payload)]
            }
            Outcome::UnknownToken => rejected(RejectionReason::UnknownToken),
            Outcome::UnknownConnection => rejected(RejectionReason::UnknownConnection),
            Outcome::AlreadyDisconnected { .. } => rejected(RejectionReason::AlreadyDisconnected),
            Outcome::AlreadyRevoked { .. } => rejected(RejectionReason::AlreadyRevoked),
            Outcome::NotAuthorized => rejected(RejectionReason::NotAuthorized),
            Outcome::Expired => rejected(RejectionReason::Expired),
            Outcome::NothingToDisconnect => rejected(RejectionReason::NothingToDisconnect),
            Outcome::UnknownEntity { .. } => rejected(RejectionReason::UnknownEntity),
            Outcome::WouldDisconnectConnection { .. } => {
                rejected(RejectionReason::WouldDisconnectConnection)
            }
            Outcome::EntitiesAlreadyDisconnected { .. } => {
                rejected(RejectionReason::EntitiesAlreadyDisconnected)
            }
            Outcome::Accepted => Vec::new(),
        }
    }
}

impl OutcomeEvent {
    /// A `connection.disconnected` event: when the outcome is decided, and
    /// again, from the rows, when the outbox re-sends it. The same
    /// arguments give the same bytes: `revoked_token_ids` and `entities`
    /// sorted, `at` in whole microseconds (as Postgres keeps it; finer
    /// digits are not printed).
    pub fn connection_disconnected(
        event_id: EventId,
        request_id: RequestId,
        key: DisconnectionKey,
        connection: &ConnectionRef,
        revoked_token_ids: &[TokenId],
        entities: &[EntityRef],
        at: DateTime<Utc>,
    ) -> Self {
        let payload = serde_json::to_string(&payload::ConnectionDisconnected {
            event_id,
            event_type: DISCONNECTED,
            occurred_at: at.to_rfc3339_opts(SecondsFormat::Micros, true),
            request_id,
            scope: key.scope.clone(),
            connection_id: key.connection_id,
            client_id: &connection.client_id,
            company_id: &connection.company_id,
            provider_id: &connection.provider_id,
            revoked_token_ids,
            entities,
            reason_code: key.reason_code.clone(),
        });
        Self {
            event_id,
            request_id,
            routing_key: DISCONNECTED.to_string(),
            // As in `for_outcome`: a plain struct, serialising cannot fail.
            payload: payload.unwrap_or_default(),
            occurred_at: at,
            subject: Some(key.connection_id.to_string()),
            traceparent: None,
            request_published_at: None,
            rebuilt_from: Some(key),
        }
    }
}

/// What a reference keeps of its event's bytes: the first 8 bytes of their
/// SHA-256, big-endian. A rebuilt event whose digest differs is not the
/// event first built (nothing adversarial here: a collision by accident is
/// one in 2^64).
pub fn payload_digest(payload: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(payload.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
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
    use crate::domain::{ConnectionId, EntityId, EntityRef, TokenId};
    use uuid::Uuid;

    fn context(scope: Scope) -> EventContext<'static> {
        EventContext {
            request_id: RequestId::from_uuid(Uuid::new_v4()),
            scope,
            reason_code: Some(ReasonCode::Fraud.into()),
            client_id: Some("app"),
            company_id: None,
        }
    }

    fn json(event: &OutcomeEvent) -> serde_json::Value {
        serde_json::from_str(&event.payload).expect("json")
    }

    fn one(mut events: Vec<OutcomeEvent>) -> OutcomeEvent {
        assert_eq!(events.len(), 1, "{events:?}");
        events.remove(0)
    }

    fn connection(connection_id: ConnectionId) -> ConnectionRef {
        ConnectionRef {
            connection_id,
            client_id: "app".into(),
            company_id: "C".into(),
            provider_id: "gusto".into(),
        }
    }

    /// The outbox rebuilds a `connection.disconnected` event from the time
    /// Postgres kept, in whole microseconds: the first copy, built from the
    /// worker's clock, must print the same.
    #[test]
    fn a_disconnection_rebuilt_from_microseconds_has_the_first_copy_s_bytes() {
        let at = |nanos: u32| {
            chrono::NaiveDate::from_ymd_opt(2026, 11, 30)
                .and_then(|day| day.and_hms_nano_opt(10, 0, 0, nanos))
                .expect("a valid time")
                .and_utc()
        };
        let key = DisconnectionKey {
            connection_id: ConnectionId::from_uuid(Uuid::new_v4()),
            scope: Scope::Connection.into(),
            reason_code: Some(ReasonCode::Fraud.into()),
        };
        let tokens = [TokenId::from_uuid(Uuid::new_v4())];
        let event_id = EventId::generate();
        let request_id = RequestId::from_uuid(Uuid::new_v4());
        let build = |at| {
            OutcomeEvent::connection_disconnected(
                event_id,
                request_id,
                key.clone(),
                &connection(key.connection_id),
                &tokens,
                &[],
                at,
            )
        };

        let first = build(at(123_456_789));
        let rebuilt = build(at(123_456_000));
        assert_eq!(first.payload, rebuilt.payload);
        assert!(first
            .payload
            .contains("\"occurred_at\":\"2026-11-30T10:00:00.123456Z\""));
        assert_eq!(rebuilt.rebuilt_from, Some(key));
    }

    #[test]
    fn entities_disconnected_alone_get_one_event_each_naming_both_ids() {
        let connection_id = ConnectionId::generate();
        let entities = vec![
            EntityRef {
                entity_id: EntityId::generate(),
                provider_entity_id: "ein-1".into(),
            },
            EntityRef {
                entity_id: EntityId::generate(),
                provider_entity_id: "ein-2".into(),
            },
        ];
        let already = vec![EntityId::generate()];
        let outcome = Outcome::EntitiesDisconnected {
            connection: connection(connection_id),
            entities: entities.clone(),
            already_disconnected: already.clone(),
        };
        let events = OutcomeEvent::for_outcome(&context(Scope::Entity), &outcome, Utc::now());
        assert_eq!(events.len(), 2);
        for (event, entity) in events.iter().zip(&entities) {
            assert_eq!(event.routing_key, ENTITY_DISCONNECTED);
            assert_eq!(event.subject, Some(connection_id.to_string()));
            let body = json(event);
            assert_eq!(body["entity_id"], entity.entity_id.to_string());
            assert_eq!(body["provider_entity_id"], entity.provider_entity_id);
            assert_eq!(body["disconnected_entities"], 2);
            assert_eq!(
                body["already_disconnected_entity_ids"][0],
                already[0].to_string()
            );
            assert_eq!(body["scope"], "entity");
        }
        assert_ne!(events[0].event_id, events[1].event_id);
    }

    #[test]
    fn a_full_disconnect_lists_the_entities_that_ended_with_it_and_only_then() {
        let entity = EntityRef {
            entity_id: EntityId::generate(),
            provider_entity_id: "division-a".into(),
        };
        let with = Outcome::Disconnected {
            connection: connection(ConnectionId::generate()),
            revoked_token_ids: Vec::new(),
            ended_entities: vec![entity.clone()],
        };
        let body = json(&one(OutcomeEvent::for_outcome(
            &context(Scope::Connection),
            &with,
            Utc::now(),
        )));
        assert_eq!(
            body["entities"][0]["entity_id"],
            entity.entity_id.to_string()
        );
        assert_eq!(body["entities"][0]["provider_entity_id"], "division-a");
        let without = Outcome::Disconnected {
            connection: connection(ConnectionId::generate()),
            revoked_token_ids: Vec::new(),
            ended_entities: Vec::new(),
        };
        let body = json(&one(OutcomeEvent::for_outcome(
            &context(Scope::Connection),
            &without,
            Utc::now(),
        )));
        assert!(body.get("entities").is_none(), "{body}");
    }

    #[test]
    fn an_unknown_entity_rejection_names_the_unknown_ids() {
        let unknown = vec![EntityId::generate()];
        let outcome = Outcome::UnknownEntity {
            connection_id: ConnectionId::generate(),
            entity_ids: unknown.clone(),
        };
        let body = json(&one(OutcomeEvent::for_outcome(
            &context(Scope::Entity),
            &outcome,
            Utc::now(),
        )));
        assert_eq!(body["reason"], "unknown_entity");
        assert_eq!(body["entity_ids"][0], unknown[0].to_string());
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
            ended_entities: Vec::new(),
        };
        let context = context(Scope::Connection);
        let event = one(OutcomeEvent::for_outcome(&context, &outcome, Utc::now()));
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
        let event = one(OutcomeEvent::for_outcome(
            &context(Scope::Connection),
            &outcome,
            Utc::now(),
        ));
        assert_eq!(event.routing_key, DISCONNECT_REJECTED);
        let body = json(&event);
        assert_eq!(body["reason"], "already_disconnected");
        assert_eq!(body["connection_id"], connection_id.to_string());

        let event = one(OutcomeEvent::for_outcome(
            &context(Scope::Token),
            &Outcome::UnknownToken,
            Utc::now(),
        ));
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
        let event = one(OutcomeEvent::for_outcome(
            &context(Scope::Client),
            &outcome,
            Utc::now(),
        ));
        assert_eq!(event.routing_key, DISCONNECT_COMPLETED);
        let json = json(&event);
        assert_eq!(
            (json["connections"].as_u64(), json["tokens"].as_u64()),
            (Some(3), Some(7))
        );
        assert_eq!(json["client_id"], "app");
        assert!(
            OutcomeEvent::for_outcome(&context(Scope::Client), &Outcome::Accepted, Utc::now())
                .is_empty()
        );
    }
}
