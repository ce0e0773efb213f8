//! The JSON bodies of the events, one type each. They are serialised as
//! they are published, and the JSON Schemas in `docs/schemas/` are
//! generated from them (`schemars`), so the contract cannot drift from what
//! is sent.

use schemars::JsonSchema;
use serde::Serialize;

use crate::domain::entity::EntityRef;
use crate::domain::ids::{ConnectionId, EntityId, EventId, RequestId, TokenId};
use crate::domain::scope::{ReasonCode, Scope};
use crate::domain::stored_label::StoredLabel;

/// `connection.disconnected`: this request disconnected this connection and
/// revoked these tokens (all of its active ones).
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(title = "connection.disconnected")]
pub struct ConnectionDisconnected<'a> {
    /// Unique; consumers deduplicate on it (an event may arrive twice).
    pub event_id: EventId,
    #[schemars(extend("const" = "connection.disconnected"))]
    pub event_type: &'static str,
    /// RFC 3339, UTC, microseconds.
    #[schemars(extend("format" = "date-time"))]
    pub occurred_at: String,
    pub request_id: RequestId,
    /// The request's scope: `connection`, or `company` / `client` for each
    /// connection of a fan-out.
    pub scope: StoredLabel<Scope>,
    pub connection_id: ConnectionId,
    pub client_id: &'a str,
    pub company_id: &'a str,
    pub provider_id: &'a str,
    pub revoked_token_ids: &'a [TokenId],
    /// The entities that ended with the connection (its active ones); left
    /// out when it had none.
    #[serde(skip_serializing_if = "<[EntityRef]>::is_empty")]
    #[schemars(default)]
    pub entities: &'a [EntityRef],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<StoredLabel<ReasonCode>>,
}

/// `connection.entity_disconnected`: this entity of the connection was
/// disconnected alone; the connection, its tokens and its other entities
/// stay. One event per entity a request disconnects.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(title = "connection.entity_disconnected")]
pub struct EntityDisconnected<'a> {
    pub event_id: EventId,
    #[schemars(extend("const" = "connection.entity_disconnected"))]
    pub event_type: &'static str,
    #[schemars(extend("format" = "date-time"))]
    pub occurred_at: String,
    pub request_id: RequestId,
    pub scope: Scope,
    pub connection_id: ConnectionId,
    pub client_id: &'a str,
    pub company_id: &'a str,
    pub provider_id: &'a str,
    /// The platform's id of the entity.
    pub entity_id: EntityId,
    /// The provider's own identifier for it.
    pub provider_entity_id: &'a str,
    /// How many entities this request disconnected: one event for each.
    pub disconnected_entities: u64,
    /// Entities the request named that were disconnected before, and stay
    /// so; left out when none.
    #[serde(skip_serializing_if = "<[EntityId]>::is_empty")]
    #[schemars(default)]
    pub already_disconnected_entity_ids: &'a [EntityId],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<StoredLabel<ReasonCode>>,
}

/// `token.revoked`: this token alone was revoked; its connection stays.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(title = "token.revoked")]
pub struct TokenRevoked<'a> {
    pub event_id: EventId,
    #[schemars(extend("const" = "token.revoked"))]
    pub event_type: &'static str,
    #[schemars(extend("format" = "date-time"))]
    pub occurred_at: String,
    pub request_id: RequestId,
    pub token_id: TokenId,
    pub connection_id: ConnectionId,
    pub client_id: &'a str,
    pub company_id: &'a str,
    pub provider_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<StoredLabel<ReasonCode>>,
}

/// Why a request changed nothing.
#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RejectionReason {
    UnknownToken,
    UnknownConnection,
    AlreadyDisconnected,
    AlreadyRevoked,
    NotAuthorized,
    Expired,
    NothingToDisconnect,
    /// An id the request named is no entity of the connection.
    UnknownEntity,
    /// The request would leave the connection with no active entity.
    WouldDisconnectConnection,
    /// Every entity the request named was disconnected before.
    EntitiesAlreadyDisconnected,
}

/// `connection.disconnect_rejected`: the request changed nothing.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(title = "connection.disconnect_rejected")]
pub struct DisconnectRejected<'a> {
    pub event_id: EventId,
    #[schemars(extend("const" = "connection.disconnect_rejected"))]
    pub event_type: &'static str,
    #[schemars(extend("format" = "date-time"))]
    pub occurred_at: String,
    pub request_id: RequestId,
    pub reason: RejectionReason,
    pub scope: Scope,
    /// The connection, when the request resolved to one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<ConnectionId>,
    /// The token, when the request was for a token alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<TokenId>,
    /// The entities the reason is about: those that are no entities of the
    /// connection (`unknown_entity`), or those disconnected before
    /// (`entities_already_disconnected`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity_ids: Option<&'a [EntityId]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<StoredLabel<ReasonCode>>,
}

/// `disconnect.completed`: a company or client request is done; published
/// after every `connection.disconnected` event of it.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(title = "disconnect.completed")]
pub struct DisconnectCompleted<'a> {
    pub event_id: EventId,
    #[schemars(extend("const" = "disconnect.completed"))]
    pub event_type: &'static str,
    #[schemars(extend("format" = "date-time"))]
    pub occurred_at: String,
    pub request_id: RequestId,
    pub scope: Scope,
    pub client_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company_id: Option<&'a str>,
    /// Connections this request disconnected.
    pub connections: u64,
    /// Tokens it revoked.
    pub tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<StoredLabel<ReasonCode>>,
}
