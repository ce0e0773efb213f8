//! Rebuilding `connection.disconnected` events from their references: the
//! connection's row, and the token and entity rows the request revoked and
//! ended, three reads for a whole claim. The labels are carried as stored
//! (a newer release's included), and a rebuilt event is kept only if its
//! bytes hash as the first did: otherwise it is unpublishable, with the
//! problem found, and the relay sets it aside.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::disconnections::ReferenceRow;
use super::set_aside::SetAside;
use crate::db::schema::{access_tokens, connection_entities, connections};
use crate::domain::event::payload_digest;
use crate::domain::{
    ConnectionId, ConnectionRef, DisconnectionKey, EntityId, EntityRef, OutcomeEvent, RequestId,
    StoredLabel, TokenId,
};

/// A claim's references, rebuilt.
pub(super) struct Rebuilt {
    /// Those whose bytes are the first's.
    pub events: Vec<OutcomeEvent>,
    /// Those that cannot be published, and why.
    pub unpublishable: Vec<SetAside>,
}

pub(super) async fn rebuild(
    conn: &mut AsyncPgConnection,
    rows: Vec<ReferenceRow>,
) -> QueryResult<Rebuilt> {
    let mut rebuilt = Rebuilt {
        events: Vec::with_capacity(rows.len()),
        unpublishable: Vec::new(),
    };
    if rows.is_empty() {
        return Ok(rebuilt);
    }
    let connection_ids: Vec<ConnectionId> = rows.iter().map(|row| row.connection_id).collect();
    let request_ids: Vec<RequestId> = rows.iter().map(|row| row.request_id).collect();
    let connections = connections_of(conn, &connection_ids).await?;
    let mut tokens = tokens_revoked_by(conn, &connection_ids, &request_ids).await?;
    let mut entities = entities_ended_by(conn, &connection_ids, &request_ids).await?;
    for row in rows {
        let Some(connection) = connections.get(&row.connection_id) else {
            rebuilt.unpublishable.push(SetAside::of(
                &row,
                "its connection row is gone (deleted by hand or by another release's \
                 retention), so its event cannot be rebuilt",
            ));
            continue;
        };
        let key = DisconnectionKey {
            connection_id: row.connection_id,
            scope: StoredLabel::read(&row.scope),
            reason_code: row.reason_code.as_deref().map(StoredLabel::read),
        };
        // Sorted, as when the outcome was decided.
        let mut revoked = tokens
            .remove(&(row.connection_id, row.request_id))
            .unwrap_or_default();
        revoked.sort_unstable();
        let mut ended = entities
            .remove(&(row.connection_id, row.request_id))
            .unwrap_or_default();
        ended.sort_unstable();
        let event = OutcomeEvent::connection_disconnected(
            row.event_id,
            row.request_id,
            key,
            connection,
            &revoked,
            &ended,
            row.occurred_at,
        );
        if row
            .payload_digest
            .is_some_and(|digest| digest != payload_digest(&event.payload))
        {
            let problem = format!(
                "its rebuilt bytes differ from those first built ({} revoked tokens and {} \
                 ended entities found): a row it is rebuilt from was changed or deleted, or \
                 another release built it",
                revoked.len(),
                ended.len()
            );
            rebuilt.unpublishable.push(SetAside::of(&row, problem));
            continue;
        }
        rebuilt.events.push(OutcomeEvent {
            traceparent: row.traceparent,
            ..event
        });
    }
    Ok(rebuilt)
}

async fn connections_of(
    conn: &mut AsyncPgConnection,
    connection_ids: &[ConnectionId],
) -> QueryResult<HashMap<ConnectionId, ConnectionRef>> {
    Ok(connections::table
        .filter(connections::id.eq_any(connection_ids))
        .select((
            connections::id,
            connections::client_id,
            connections::company_id,
            connections::provider_id,
        ))
        .load::<(ConnectionId, String, String, String)>(conn)
        .await?
        .into_iter()
        .map(|(connection_id, client_id, company_id, provider_id)| {
            let connection = ConnectionRef {
                connection_id,
                client_id,
                company_id,
                provider_id,
            };
            (connection_id, connection)
        })
        .collect())
}

async fn tokens_revoked_by(
    conn: &mut AsyncPgConnection,
    connection_ids: &[ConnectionId],
    request_ids: &[RequestId],
) -> QueryResult<HashMap<(ConnectionId, RequestId), Vec<TokenId>>> {
    let mut tokens: HashMap<(ConnectionId, RequestId), Vec<TokenId>> = HashMap::new();
    for (connection_id, request_id, token_id) in access_tokens::table
        .filter(access_tokens::connection_id.eq_any(connection_ids))
        .filter(access_tokens::revoked_by_request.eq_any(request_ids))
        .select((
            access_tokens::connection_id,
            access_tokens::revoked_by_request.assume_not_null(),
            access_tokens::id,
        ))
        .load::<(ConnectionId, RequestId, TokenId)>(conn)
        .await?
    {
        tokens
            .entry((connection_id, request_id))
            .or_default()
            .push(token_id);
    }
    Ok(tokens)
}

async fn entities_ended_by(
    conn: &mut AsyncPgConnection,
    connection_ids: &[ConnectionId],
    request_ids: &[RequestId],
) -> QueryResult<HashMap<(ConnectionId, RequestId), Vec<EntityRef>>> {
    let mut entities: HashMap<(ConnectionId, RequestId), Vec<EntityRef>> = HashMap::new();
    for (connection_id, request_id, entity_id, provider_entity_id) in connection_entities::table
        .filter(connection_entities::connection_id.eq_any(connection_ids))
        .filter(connection_entities::disconnected_by_request.eq_any(request_ids))
        .select((
            connection_entities::connection_id,
            connection_entities::disconnected_by_request.assume_not_null(),
            connection_entities::id,
            connection_entities::provider_entity_id,
        ))
        .load::<(ConnectionId, RequestId, EntityId, String)>(conn)
        .await?
    {
        entities
            .entry((connection_id, request_id))
            .or_default()
            .push(EntityRef {
                entity_id,
                provider_entity_id,
            });
    }
    Ok(entities)
}
