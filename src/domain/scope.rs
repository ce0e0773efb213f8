//! What a request disconnects (its target, at one of five scopes) and why
//! (its reason code).

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ids::{ConnectionId, EntityId};
use super::token::AccessToken;

/// Longest label accepted: an application, company or provider entity id.
const MAX_ID_CHARS: usize = 128;

/// A customer application's id. Bounded and free of control characters: it
/// is written into audit rows and events.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(String);

/// An employer's id at the platform.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CompanyId(String);

/// Check a label: an application, company or provider entity id. Bounded
/// and free of control characters, as it is written into audit rows and
/// events. Returns what is wrong with it.
pub fn check_label(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        return Err("is empty");
    }
    if value.chars().count() > MAX_ID_CHARS {
        return Err("is longer than 128 characters");
    }
    if value.chars().any(char::is_control) {
        return Err("contains control characters");
    }
    Ok(())
}

macro_rules! label {
    ($name:ident) => {
        impl $name {
            pub fn parse(value: String) -> Result<Self, &'static str> {
                check_label(&value)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

label!(ClientId);
label!(CompanyId);

/// How much a request disconnects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// One token, not its connection (RFC 7009's revocation).
    Token,
    /// One connection: every token of it.
    Connection,
    /// Every active connection of a company in an application.
    Company,
    /// Every active connection of an application.
    Client,
    /// Named entities of one connection; the connection and its tokens
    /// stay (Finch's `/disconnect-entity`).
    Entity,
}

impl Scope {
    pub const ALL: [Self; 5] = [
        Self::Token,
        Self::Connection,
        Self::Company,
        Self::Client,
        Self::Entity,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Connection => "connection",
            Self::Company => "company",
            Self::Client => "client",
            Self::Entity => "entity",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == text)
    }
}

/// Why a request was made, for the audit trail and every event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    UserRequest,
    EmployerOffboarded,
    CustomerOffboarded,
    CredentialCompromised,
    Fraud,
    Other,
}

impl ReasonCode {
    pub const ALL: [Self; 6] = [
        Self::UserRequest,
        Self::EmployerOffboarded,
        Self::CustomerOffboarded,
        Self::CredentialCompromised,
        Self::Fraud,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserRequest => "user_request",
            Self::EmployerOffboarded => "employer_offboarded",
            Self::CustomerOffboarded => "customer_offboarded",
            Self::CredentialCompromised => "credential_compromised",
            Self::Fraud => "fraud",
            Self::Other => "other",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|code| code.as_str() == text)
    }
}

/// What a request disconnects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The connection a token belongs to: scope `connection`, the default
    /// for a token. With a client id, only that application's token.
    ConnectionOfToken {
        token: AccessToken,
        client_id: Option<ClientId>,
    },
    /// The token alone: scope `token`.
    Token {
        token: AccessToken,
        client_id: Option<ClientId>,
    },
    /// A connection by its id, in its application.
    Connection {
        client_id: ClientId,
        connection_id: ConnectionId,
    },
    /// Every active connection of a company in an application.
    Company {
        client_id: ClientId,
        company_id: CompanyId,
    },
    /// Every active connection of an application.
    Client { client_id: ClientId },
    /// Named entities of a token's connection: scope `entity`.
    EntitiesOfToken {
        token: AccessToken,
        client_id: Option<ClientId>,
        entity_ids: Vec<EntityId>,
    },
    /// Named entities of a connection given by id, in its application.
    EntitiesOfConnection {
        client_id: ClientId,
        connection_id: ConnectionId,
        entity_ids: Vec<EntityId>,
    },
}

impl Target {
    pub fn scope(&self) -> Scope {
        match self {
            Self::ConnectionOfToken { .. } | Self::Connection { .. } => Scope::Connection,
            Self::Token { .. } => Scope::Token,
            Self::Company { .. } => Scope::Company,
            Self::Client { .. } => Scope::Client,
            Self::EntitiesOfToken { .. } | Self::EntitiesOfConnection { .. } => Scope::Entity,
        }
    }

    /// The token a request names, if it names one.
    pub fn token(&self) -> Option<&AccessToken> {
        match self {
            Self::ConnectionOfToken { token, .. }
            | Self::Token { token, .. }
            | Self::EntitiesOfToken { token, .. } => Some(token),
            _ => None,
        }
    }

    /// The connection a request names by id, if it names one.
    pub fn connection_id(&self) -> Option<ConnectionId> {
        match self {
            Self::Connection { connection_id, .. }
            | Self::EntitiesOfConnection { connection_id, .. } => Some(*connection_id),
            _ => None,
        }
    }

    /// The entities a request names, if it names some.
    pub fn entity_ids(&self) -> Option<&[EntityId]> {
        match self {
            Self::EntitiesOfToken { entity_ids, .. }
            | Self::EntitiesOfConnection { entity_ids, .. } => Some(entity_ids),
            _ => None,
        }
    }

    pub fn client_id(&self) -> Option<&ClientId> {
        match self {
            Self::ConnectionOfToken { client_id, .. }
            | Self::Token { client_id, .. }
            | Self::EntitiesOfToken { client_id, .. } => client_id.as_ref(),
            Self::Connection { client_id, .. }
            | Self::Company { client_id, .. }
            | Self::Client { client_id }
            | Self::EntitiesOfConnection { client_id, .. } => Some(client_id),
        }
    }

    /// Whether whoever published the request must be authorized for its
    /// application: a request without a token proves nothing by itself.
    pub fn needs_publisher_authorization(&self) -> bool {
        self.token().is_none()
    }

    /// Whether it may cover many connections, worked through in chunks.
    pub fn fans_out(&self) -> bool {
        matches!(self, Self::Company { .. } | Self::Client { .. })
    }
}

#[cfg(test)]
impl Target {
    /// One target of every kind (a token's connection with and without its
    /// application), for tests.
    pub fn examples() -> Vec<Self> {
        let client = || ClientId::parse("app-1".into()).expect("valid");
        vec![
            Self::ConnectionOfToken {
                token: AccessToken::generate(),
                client_id: None,
            },
            Self::ConnectionOfToken {
                token: AccessToken::generate(),
                client_id: Some(client()),
            },
            Self::Token {
                token: AccessToken::generate(),
                client_id: None,
            },
            Self::Connection {
                client_id: client(),
                connection_id: ConnectionId::generate(),
            },
            Self::Company {
                client_id: client(),
                company_id: CompanyId::parse("C".into()).expect("valid"),
            },
            Self::Client {
                client_id: client(),
            },
            Self::EntitiesOfToken {
                token: AccessToken::generate(),
                client_id: None,
                entity_ids: vec![EntityId::generate(), EntityId::generate()],
            },
            Self::EntitiesOfConnection {
                client_id: client(),
                connection_id: ConnectionId::generate(),
                entity_ids: vec![EntityId::generate()],
            },
        ]
    }
}
