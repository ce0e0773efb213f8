//! What processing a request did.

use uuid::Uuid;

/// The connection a request resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRef {
    pub connection_id: Uuid,
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
        revoked_token_ids: Vec<Uuid>,
    },
    /// No token has this value (or it was never issued by us).
    UnknownToken,
    /// The token's connection was already disconnected, by another request.
    AlreadyDisconnected { connection_id: Uuid },
}

impl Outcome {
    /// The value stored in `disconnect_requests.outcome`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Disconnected { .. } => "disconnected",
            Self::UnknownToken => "unknown_token",
            Self::AlreadyDisconnected { .. } => "already_disconnected",
        }
    }

    pub fn connection_id(&self) -> Option<Uuid> {
        match self {
            Self::Disconnected { connection, .. } => Some(connection.connection_id),
            Self::UnknownToken => None,
            Self::AlreadyDisconnected { connection_id } => Some(*connection_id),
        }
    }
}
