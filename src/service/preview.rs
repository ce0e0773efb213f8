//! What a request would do, without doing it: `disconnect --dry-run`.
//! Read-only and unlocked, so a request processed meanwhile may find
//! somewhat less to do; authorization (`AUTHORIZED_PUBLISHERS`) is the
//! worker's and is not judged here.

use chrono::Utc;
use diesel::result::Error as QueryError;
use diesel_async::AsyncPgConnection;
use serde::Serialize;

use crate::db::{connections, entities, tokens};
use crate::domain::{ConnectionId, ConnectionStatus, EntityId, OutcomeKind, Scope, Target};
use crate::service::disconnect::plan::{decide_entities, EntityDecision};

/// What `disconnect --dry-run` prints.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Preview {
    pub dry_run: bool,
    pub scope: Scope,
    /// The outcome the request would have now.
    pub outcome: &'static str,
    /// Every connection it would disconnect.
    pub connection_ids: Vec<ConnectionId>,
    /// How many tokens it would revoke.
    pub tokens: i64,
    /// For a request naming entities, the ids its outcome is about: those
    /// it would disconnect, those unknown, or those disconnected already.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entity_ids: Vec<EntityId>,
}

pub async fn preview(conn: &mut AsyncPgConnection, target: &Target) -> Result<Preview, QueryError> {
    let (outcome, connection_ids, tokens) = match target {
        Target::ConnectionOfToken { token, client_id }
        | Target::Token { token, client_id }
        | Target::EntitiesOfToken {
            token, client_id, ..
        } => {
            let found = tokens::find_by_hashes(&*conn, &[token.hash()]).await?;
            let Some(found) = found.first().copied() else {
                return Ok(nothing(target, OutcomeKind::UnknownToken));
            };
            let connection = connections::find(conn, found.connection_id).await?;
            let Some(connection) = connection.filter(|row| {
                client_id
                    .as_ref()
                    .is_none_or(|client_id| row.client_id == client_id.as_str())
            }) else {
                return Ok(nothing(target, OutcomeKind::UnknownToken));
            };
            if connection.status != ConnectionStatus::Active {
                return Ok(nothing(target, OutcomeKind::AlreadyDisconnected));
            }
            if let Some(entity_ids) = target.entity_ids() {
                return of_entities(conn, target, connection.id, entity_ids).await;
            }
            if matches!(target, Target::Token { .. }) {
                if found.revoked {
                    return Ok(nothing(target, OutcomeKind::AlreadyRevoked));
                }
                (OutcomeKind::TokenRevoked, Vec::new(), 1)
            } else {
                let ids = vec![connection.id];
                let tokens = tokens::count_active_of_connections(conn, &ids).await?;
                (OutcomeKind::Disconnected, ids, tokens)
            }
        }
        Target::Connection {
            client_id,
            connection_id,
        }
        | Target::EntitiesOfConnection {
            client_id,
            connection_id,
            ..
        } => {
            let connection = connections::find(conn, *connection_id)
                .await?
                .filter(|row| row.client_id == client_id.as_str());
            let Some(connection) = connection else {
                return Ok(nothing(target, OutcomeKind::UnknownConnection));
            };
            if connection.status != ConnectionStatus::Active {
                return Ok(nothing(target, OutcomeKind::AlreadyDisconnected));
            }
            if let Some(entity_ids) = target.entity_ids() {
                return of_entities(conn, target, connection.id, entity_ids).await;
            }
            let ids = vec![connection.id];
            let tokens = tokens::count_active_of_connections(conn, &ids).await?;
            (OutcomeKind::Disconnected, ids, tokens)
        }
        Target::Company {
            client_id,
            company_id,
        } => {
            let ids = connections::active_ids(
                conn,
                client_id.as_str(),
                Some(company_id.as_str()),
                Utc::now(),
            )
            .await?;
            fan_out(conn, ids).await?
        }
        Target::Client { client_id } => {
            let ids = connections::active_ids(conn, client_id.as_str(), None, Utc::now()).await?;
            fan_out(conn, ids).await?
        }
    };
    Ok(Preview {
        dry_run: true,
        scope: target.scope(),
        outcome: outcome.as_str(),
        connection_ids,
        tokens,
        entity_ids: Vec::new(),
    })
}

/// What a request naming entities of an active connection would do, by the
/// batch's own rules.
async fn of_entities(
    conn: &mut AsyncPgConnection,
    target: &Target,
    connection_id: ConnectionId,
    named: &[EntityId],
) -> Result<Preview, QueryError> {
    let rows = entities::of_connection(conn, connection_id).await?;
    let (outcome, entity_ids) = match decide_entities(&rows, named) {
        EntityDecision::Unknown(unknown) => (OutcomeKind::UnknownEntity, unknown),
        EntityDecision::WouldDisconnectConnection => {
            (OutcomeKind::WouldDisconnectConnection, Vec::new())
        }
        EntityDecision::AllAlreadyDisconnected(already) => {
            (OutcomeKind::EntitiesAlreadyDisconnected, already)
        }
        EntityDecision::Disconnect { disconnect, .. } => {
            (OutcomeKind::EntitiesDisconnected, disconnect)
        }
    };
    Ok(Preview {
        entity_ids,
        ..nothing(target, outcome)
    })
}

async fn fan_out(
    conn: &mut AsyncPgConnection,
    ids: Vec<ConnectionId>,
) -> Result<(OutcomeKind, Vec<ConnectionId>, i64), QueryError> {
    if ids.is_empty() {
        return Ok((OutcomeKind::NothingToDisconnect, ids, 0));
    }
    let tokens = tokens::count_active_of_connections(conn, &ids).await?;
    Ok((OutcomeKind::Completed, ids, tokens))
}

fn nothing(target: &Target, outcome: OutcomeKind) -> Preview {
    Preview {
        dry_run: true,
        scope: target.scope(),
        outcome: outcome.as_str(),
        connection_ids: Vec::new(),
        tokens: 0,
        entity_ids: Vec::new(),
    }
}
