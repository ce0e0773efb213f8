//! What processing a request did.

use diesel::deserialize::FromSqlRow;
use diesel::expression::AsExpression;
use diesel::sql_types::Text;
use serde::Serialize;

use super::ids::{ConnectionId, TokenId};
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

impl ConnectionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disconnected => "disconnected",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(Self::Active),
            "disconnected" => Some(Self::Disconnected),
            _ => None,
        }
    }
}

text_column!(ConnectionStatus);

/// The connection a request resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRef {
    pub connection_id: ConnectionId,
    pub client_id: String,
    pub company_id: String,
    pub provider_id: String,
}

/// The recorded outcome of one request. Exactly one is recorded per request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// This request disconnected the connection and revoked these tokens.
    Disconnected {
        connection: ConnectionRef,
        revoked_token_ids: Vec<TokenId>,
    },
    /// No token has this value (or it was never issued by us).
    UnknownToken,
    /// The token's connection was already disconnected, by another request.
    AlreadyDisconnected { connection_id: ConnectionId },
}

impl Outcome {
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Self::Disconnected { .. } => OutcomeKind::Disconnected,
            Self::UnknownToken => OutcomeKind::UnknownToken,
            Self::AlreadyDisconnected { .. } => OutcomeKind::AlreadyDisconnected,
        }
    }

    pub fn connection_id(&self) -> Option<ConnectionId> {
        match self {
            Self::Disconnected { connection, .. } => Some(connection.connection_id),
            Self::UnknownToken => None,
            Self::AlreadyDisconnected { connection_id } => Some(*connection_id),
        }
    }
}

/// The kind of an outcome: what `disconnect_requests.outcome` stores, and
/// what a duplicate delivery reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub enum OutcomeKind {
    Disconnected,
    UnknownToken,
    AlreadyDisconnected,
}

impl OutcomeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disconnected => "disconnected",
            Self::UnknownToken => "unknown_token",
            Self::AlreadyDisconnected => "already_disconnected",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "disconnected" => Some(Self::Disconnected),
            "unknown_token" => Some(Self::UnknownToken),
            "already_disconnected" => Some(Self::AlreadyDisconnected),
            _ => None,
        }
    }
}

text_column!(OutcomeKind);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_back_to_their_value() {
        for kind in [
            OutcomeKind::Disconnected,
            OutcomeKind::UnknownToken,
            OutcomeKind::AlreadyDisconnected,
        ] {
            assert_eq!(OutcomeKind::parse(kind.as_str()), Some(kind));
        }
        for status in [ConnectionStatus::Active, ConnectionStatus::Disconnected] {
            assert_eq!(ConnectionStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(OutcomeKind::parse("requeued"), None);
    }
}
