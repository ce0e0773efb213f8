//! What processing a request did.

use diesel::deserialize::FromSqlRow;
use diesel::expression::AsExpression;
use diesel::sql_types::Text;
use serde::Serialize;

use super::entity::EntityRef;
use super::ids::{ConnectionId, EntityId, TokenId};
use super::text_column::text_column;

/// Whether a connection's tokens work. A disconnect is final: a connection
/// never goes back to active, the next authentication makes a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionStatus {
    Active,
    Disconnected,
}

text_column!(ConnectionStatus {
    Active => "active",
    Disconnected => "disconnected",
});

/// The connection a request resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRef {
    pub connection_id: ConnectionId,
    pub client_id: String,
    pub company_id: String,
    pub provider_id: String,
}

/// The recorded outcome of one request. Exactly one terminal outcome is
/// recorded per request id; a company or client request is first
/// [`Outcome::Accepted`], and gets its terminal outcome when its fan-out
/// ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// This request disconnected the connection, revoked these tokens and
    /// ended these entities (its active ones).
    Disconnected {
        connection: ConnectionRef,
        revoked_token_ids: Vec<TokenId>,
        ended_entities: Vec<EntityRef>,
    },
    /// This request disconnected these entities of the connection, which
    /// stays with its tokens; `already_disconnected` are those it named that
    /// were disconnected before.
    EntitiesDisconnected {
        connection: ConnectionRef,
        entities: Vec<EntityRef>,
        already_disconnected: Vec<EntityId>,
    },
    /// These ids are no entities of the connection: nothing changed.
    UnknownEntity {
        connection_id: ConnectionId,
        entity_ids: Vec<EntityId>,
    },
    /// Disconnecting them would leave the connection with no active
    /// entity: a full disconnect must be asked for as one.
    WouldDisconnectConnection { connection_id: ConnectionId },
    /// Every entity named was disconnected before.
    EntitiesAlreadyDisconnected {
        connection_id: ConnectionId,
        entity_ids: Vec<EntityId>,
    },
    /// This request revoked this one token; its connection stays.
    TokenRevoked {
        token_id: TokenId,
        connection: ConnectionRef,
    },
    /// No token has this value (in the request's application, if it named
    /// one).
    UnknownToken,
    /// No connection of the request's application has this id.
    UnknownConnection,
    /// The connection was already disconnected, by another request.
    AlreadyDisconnected { connection_id: ConnectionId },
    /// The token was already revoked, alone, by another request.
    AlreadyRevoked {
        token_id: TokenId,
        connection_id: ConnectionId,
    },
    /// The publisher may not ask this of this application.
    NotAuthorized,
    /// A company or client request older than the replay window.
    Expired,
    /// A company or client request whose fan-out has started.
    Accepted,
    /// A fan-out ended having disconnected these many.
    Completed { connections: u64, tokens: u64 },
    /// A fan-out ended having found no active connection.
    NothingToDisconnect,
}

impl Outcome {
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Self::Disconnected { .. } => OutcomeKind::Disconnected,
            Self::TokenRevoked { .. } => OutcomeKind::TokenRevoked,
            Self::UnknownToken => OutcomeKind::UnknownToken,
            Self::UnknownConnection => OutcomeKind::UnknownConnection,
            Self::AlreadyDisconnected { .. } => OutcomeKind::AlreadyDisconnected,
            Self::AlreadyRevoked { .. } => OutcomeKind::AlreadyRevoked,
            Self::NotAuthorized => OutcomeKind::NotAuthorized,
            Self::Expired => OutcomeKind::Expired,
            Self::Accepted => OutcomeKind::InProgress,
            Self::Completed { .. } => OutcomeKind::Completed,
            Self::NothingToDisconnect => OutcomeKind::NothingToDisconnect,
            Self::EntitiesDisconnected { .. } => OutcomeKind::EntitiesDisconnected,
            Self::UnknownEntity { .. } => OutcomeKind::UnknownEntity,
            Self::WouldDisconnectConnection { .. } => OutcomeKind::WouldDisconnectConnection,
            Self::EntitiesAlreadyDisconnected { .. } => OutcomeKind::EntitiesAlreadyDisconnected,
        }
    }

    pub fn connection_id(&self) -> Option<ConnectionId> {
        match self {
            Self::Disconnected { connection, .. }
            | Self::TokenRevoked { connection, .. }
            | Self::EntitiesDisconnected { connection, .. } => Some(connection.connection_id),
            Self::AlreadyDisconnected { connection_id }
            | Self::AlreadyRevoked { connection_id, .. }
            | Self::UnknownEntity { connection_id, .. }
            | Self::WouldDisconnectConnection { connection_id }
            | Self::EntitiesAlreadyDisconnected { connection_id, .. } => Some(*connection_id),
            _ => None,
        }
    }

    /// The entities it disconnected: alone, or with their connection.
    pub fn disconnected_entities(&self) -> &[EntityRef] {
        match self {
            Self::Disconnected { ended_entities, .. } => ended_entities,
            Self::EntitiesDisconnected { entities, .. } => entities,
            _ => &[],
        }
    }

    /// The token it concerned, for the audit row.
    pub fn token_id(&self) -> Option<TokenId> {
        match self {
            Self::TokenRevoked { token_id, .. } | Self::AlreadyRevoked { token_id, .. } => {
                Some(*token_id)
            }
            _ => None,
        }
    }

    /// How many tokens it revoked.
    pub fn revoked_tokens(&self) -> u64 {
        match self {
            Self::Disconnected {
                revoked_token_ids, ..
            } => revoked_token_ids.len() as u64,
            Self::TokenRevoked { .. } => 1,
            Self::Completed { tokens, .. } => *tokens,
            _ => 0,
        }
    }
}

/// The kind of an outcome: what `disconnect_requests.outcome` stores, and
/// what a duplicate delivery reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub enum OutcomeKind {
    Disconnected,
    TokenRevoked,
    UnknownToken,
    UnknownConnection,
    AlreadyDisconnected,
    AlreadyRevoked,
    NotAuthorized,
    Expired,
    InProgress,
    Completed,
    NothingToDisconnect,
    EntitiesDisconnected,
    UnknownEntity,
    WouldDisconnectConnection,
    EntitiesAlreadyDisconnected,
}

impl OutcomeKind {
    /// Whether the request changed nothing (its event is a rejection).
    pub fn is_rejection(self) -> bool {
        matches!(
            self,
            Self::UnknownToken
                | Self::UnknownConnection
                | Self::AlreadyDisconnected
                | Self::AlreadyRevoked
                | Self::NotAuthorized
                | Self::Expired
                | Self::NothingToDisconnect
                | Self::UnknownEntity
                | Self::WouldDisconnectConnection
                | Self::EntitiesAlreadyDisconnected
        )
    }
}

text_column!(OutcomeKind {
    Disconnected => "disconnected",
    TokenRevoked => "token_revoked",
    UnknownToken => "unknown_token",
    UnknownConnection => "unknown_connection",
    AlreadyDisconnected => "already_disconnected",
    AlreadyRevoked => "already_revoked",
    NotAuthorized => "not_authorized",
    Expired => "expired",
    InProgress => "in_progress",
    Completed => "completed",
    NothingToDisconnect => "nothing_to_disconnect",
    EntitiesDisconnected => "entities_disconnected",
    UnknownEntity => "unknown_entity",
    WouldDisconnectConnection => "would_disconnect_connection",
    EntitiesAlreadyDisconnected => "entities_already_disconnected",
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_back_to_their_value() {
        for kind in OutcomeKind::ALL {
            assert_eq!(OutcomeKind::parse(kind.as_str()), Some(kind));
        }
        for status in [ConnectionStatus::Active, ConnectionStatus::Disconnected] {
            assert_eq!(ConnectionStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(OutcomeKind::parse("requeued"), None);
    }
}
