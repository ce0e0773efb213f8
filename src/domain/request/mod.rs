//! A disconnect request: decoded from the bytes of a delivery (`decode`), and
//! encoded by whoever publishes one (`encode`: the CLI, the tests, the
//! benchmark), so both sides of the contract live in one place.

mod decode;

pub use decode::Selectors;

use chrono::{DateTime, SecondsFormat, Utc};
use schemars::JsonSchema;
use serde::Serialize;

use super::ids::{ConnectionId, EntityId, RequestId};
use super::scope::{ReasonCode, Scope, Target};
use super::token::AccessToken;

/// Longest `requested_by` kept in the audit trail.
pub const MAX_REQUESTED_BY_CHARS: usize = 256;
/// Longest `reason` kept in the audit trail.
pub const MAX_REASON_CHARS: usize = 1024;

/// The content type a request is published with.
pub const CONTENT_TYPE: &str = "application/json";

/// A valid disconnect request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisconnectRequest {
    pub request_id: RequestId,
    pub target: Target,
    pub reason_code: Option<ReasonCode>,
    pub requested_at: Option<DateTime<Utc>>,
    pub requested_by: Option<String>,
    pub reason: Option<String>,
    /// What the delivery said besides the body; never from the body.
    pub provenance: Provenance,
}

/// Where a request came from, beyond its body: set by the consumer from the
/// message's AMQP properties, and carried to its outcome event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Provenance {
    /// The W3C `traceparent` its outcome event is published with.
    pub traceparent: Option<String>,
    /// When it was published (the AMQP `timestamp`), for the latency from
    /// publish to event.
    pub published_at: Option<DateTime<Utc>>,
    /// The broker user that published it: the AMQP `user_id`, which
    /// RabbitMQ checks against the publishing connection's user.
    pub publisher: Option<String>,
}

/// A disconnect request as published: the message body. The JSON Schema
/// in `docs/schemas/` is generated from this type; what decoding accepts
/// beyond the schema (unknown fields, `text/json`) is for compatibility.
#[derive(Serialize, JsonSchema)]
#[schemars(
    title = "disconnect request",
    description = "A request to disconnect: one token, its connection, a connection by id, \
                   every connection of a company in an application, every connection of \
                   an application, or named entities of one connection. Exactly one selector.",
    extend("oneOf" = [
        {
            "title": "by token",
            "required": ["access_token"],
            "not": {"anyOf": [
                {"required": ["connection_id"]},
                {"required": ["company_id"]},
                {"required": ["entity_ids"]}
            ]},
            "properties": {"scope": {"enum": ["connection", "token"]}}
        },
        {
            "title": "by connection id",
            "required": ["connection_id", "client_id"],
            "not": {"anyOf": [
                {"required": ["access_token"]},
                {"required": ["company_id"]},
                {"required": ["entity_ids"]}
            ]},
            "properties": {"scope": {"const": "connection"}}
        },
        {
            "title": "a company in an application",
            "required": ["company_id", "client_id", "requested_at"],
            "not": {"anyOf": [
                {"required": ["access_token"]},
                {"required": ["connection_id"]},
                {"required": ["entity_ids"]}
            ]},
            "properties": {"scope": {"const": "company"}}
        },
        {
            "title": "a whole application",
            "required": ["scope", "client_id", "requested_at"],
            "not": {"anyOf": [
                {"required": ["access_token"]},
                {"required": ["connection_id"]},
                {"required": ["company_id"]},
                {"required": ["entity_ids"]}
            ]},
            "properties": {"scope": {"const": "client"}}
        },
        {
            "title": "entities of a token's connection",
            "required": ["access_token", "entity_ids"],
            "not": {"anyOf": [{"required": ["connection_id"]}, {"required": ["company_id"]}]},
            "properties": {"scope": {"const": "entity"}}
        },
        {
            "title": "entities of a connection by id",
            "required": ["connection_id", "client_id", "entity_ids"],
            "not": {"anyOf": [{"required": ["access_token"]}, {"required": ["company_id"]}]},
            "properties": {"scope": {"const": "entity"}}
        }
    ])
)]
pub struct RequestBody<'a> {
    /// The idempotency key, chosen by the sender: a request id is acted on
    /// once, whatever its scope.
    pub request_id: RequestId,
    /// The token: its connection is disconnected, or with scope `token` the
    /// token alone is revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub access_token: Option<&'a str>,
    /// A connection to disconnect by id (with `client_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<ConnectionId>,
    /// Every active connection of this company in the application (with
    /// `client_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub company_id: Option<&'a str>,
    /// The application: the request touches only its rows. Required with
    /// every selector but `access_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub client_id: Option<&'a str>,
    /// Entities of the connection (of the token, or named by id) to
    /// disconnect alone: the connection, its tokens and its other entities
    /// stay. Each must be an entity of that connection, and one at least
    /// must stay active.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100), extend("uniqueItems" = true))]
    pub entity_ids: Option<&'a [EntityId]>,
    /// `connection` by default; `token` revokes a token alone; `client`
    /// (with no other selector) every connection of the application;
    /// `entity` (implied by `entity_ids`) the named entities.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<ReasonCode>,
    /// When it was asked (RFC 3339). Required with scopes `company` and
    /// `client`: only connections made before it are theirs, and one older
    /// than the replay window is refused as `expired`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub requested_at: Option<String>,
    /// Who asked, for the audit trail.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub requested_by: Option<&'a str>,
    /// Why, for the audit trail.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub reason: Option<&'a str>,
}

impl DisconnectRequest {
    /// A request to disconnect the connection of `access_token`, with a new
    /// request id and no audit fields: the request of the first version.
    pub fn new(access_token: AccessToken) -> Self {
        Self::for_target(Target::ConnectionOfToken {
            token: access_token,
            client_id: None,
        })
    }

    /// A request for `target`, with a new request id and no audit fields
    /// but the time, which a company or client request must carry.
    pub fn for_target(target: Target) -> Self {
        Self {
            request_id: RequestId::generate(),
            requested_at: target.fans_out().then(Utc::now),
            target,
            reason_code: None,
            requested_by: None,
            reason: None,
            provenance: Provenance::default(),
        }
    }

    /// The JSON body an upstream application publishes; [`Self::decode`]
    /// gives the same request back.
    pub fn encode(&self) -> Vec<u8> {
        let target = &self.target;
        let wire = RequestBody {
            request_id: self.request_id,
            access_token: target.token().map(AccessToken::expose),
            connection_id: target.connection_id(),
            company_id: match target {
                Target::Company { company_id, .. } => Some(company_id.as_str()),
                _ => None,
            },
            client_id: target.client_id().map(|client_id| client_id.as_str()),
            entity_ids: target.entity_ids(),
            // Written where it is not what the selector implies; and always
            // with entities: a worker older than entities ignores
            // `entity_ids` and would end the whole connection, but refuses
            // an unknown scope (dead-lettered, to be requeued).
            scope: match target.scope() {
                Scope::Token | Scope::Client | Scope::Entity => Some(target.scope()),
                Scope::Connection | Scope::Company => None,
            },
            reason_code: self.reason_code,
            requested_at: self
                .requested_at
                .map(|at| at.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            requested_by: self.requested_by.as_deref(),
            reason: self.reason.as_deref(),
        };
        // Serialising this plain struct of strings cannot fail.
        serde_json::to_vec(&wire).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoded_request_decodes_to_the_same_request_at_every_scope() {
        let targets = Target::examples();
        for target in targets {
            let full = DisconnectRequest {
                reason_code: Some(ReasonCode::EmployerOffboarded),
                requested_at: Some(Utc::now()),
                requested_by: Some("ops@example.com".into()),
                reason: Some("employer offboarded".into()),
                ..DisconnectRequest::for_target(target.clone())
            };
            let bare = DisconnectRequest::for_target(target);
            for request in [full, bare] {
                let decoded =
                    DisconnectRequest::decode(&request.encode(), Some(CONTENT_TYPE), 16_384)
                        .expect("valid");
                assert_eq!(decoded, request);
            }
        }
    }
}
