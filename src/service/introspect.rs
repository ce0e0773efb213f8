//! Introspecting a token: what it belongs to and whether it still works.

use chrono::{DateTime, SecondsFormat, Utc};
use diesel::result::Error as QueryError;
use diesel_async::AsyncPgConnection;
use serde::Serialize;

use crate::db::{entities, requests, tokens};
use crate::domain::{
    AccessToken, ConnectionId, ConnectionStatus, EntityId, EntityStatus, RequestId, TokenId,
};

/// The JSON `token introspect` prints. An unknown token is `{"active": false}`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Introspection {
    pub active: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub details: Option<TokenDetails>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct TokenDetails {
    pub token_id: TokenId,
    pub connection_id: ConnectionId,
    pub client_id: String,
    pub company_id: String,
    pub provider_id: String,
    pub connection_status: ConnectionStatus,
    pub issued_at: String,
    pub revoked_at: Option<String>,
    /// The revocation, when revoked: the request that did it (alone, or
    /// with the whole connection), its scope and its reason code, while its
    /// audit record is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation: Option<Revocation>,
    /// The connection's entities, when it has any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entities: Vec<Entity>,
}

/// One entity of the token's connection.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Entity {
    pub entity_id: EntityId,
    pub provider_entity_id: String,
    pub status: EntityStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disconnected_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disconnected_by_request: Option<RequestId>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Revocation {
    pub request_id: RequestId,
    pub scope: Option<String>,
    pub reason_code: Option<String>,
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub async fn introspect_token(
    conn: &mut AsyncPgConnection,
    token: &AccessToken,
) -> Result<Introspection, QueryError> {
    let Some(view) = tokens::view_by_hash(conn, &token.hash()).await? else {
        return Ok(Introspection {
            active: false,
            details: None,
        });
    };
    let revocation = match view.revoked_by_request {
        Some(request_id) => {
            let recorded = requests::scope_and_reason_code(conn, request_id).await?;
            let (scope, reason_code) =
                recorded.map_or((None, None), |(scope, code)| (Some(scope), code));
            Some(Revocation {
                request_id,
                scope,
                reason_code,
            })
        }
        None => None,
    };
    let entities = entities::views_of_connection(conn, view.connection_id)
        .await?
        .into_iter()
        .map(|entity| Entity {
            entity_id: entity.id,
            provider_entity_id: entity.provider_entity_id,
            status: entity.status,
            disconnected_at: entity.disconnected_at.map(timestamp),
            disconnected_by_request: entity.disconnected_by_request,
        })
        .collect();
    let active = view.revoked_at.is_none() && view.connection_status == ConnectionStatus::Active;
    Ok(Introspection {
        active,
        details: Some(TokenDetails {
            token_id: view.token_id,
            connection_id: view.connection_id,
            client_id: view.client_id,
            company_id: view.company_id,
            provider_id: view.provider_id,
            connection_status: view.connection_status,
            issued_at: timestamp(view.issued_at),
            revoked_at: view.revoked_at.map(timestamp),
            revocation,
            entities,
        }),
    })
}
