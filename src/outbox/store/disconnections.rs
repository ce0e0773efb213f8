//! `connection.disconnected` events kept by reference, in
//! `outbox_disconnections` (migration 10): the row holds what the event says
//! that the rows do not (its ids, scope, reason code, time and trace), and a
//! claim rebuilds the bytes from the connection's row and the token and
//! entity rows its request revoked and ended, all written in the same
//! transaction as the reference. Nothing else writes those columns again (a
//! disconnect is final), and retention keeps the rows while a reference to
//! them is pending, so the rebuilt bytes are the bytes first published.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::dsl::now;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Array, Bool, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::{interval, Claim};
use crate::db::schema::{access_tokens, connection_entities, connections, outbox_disconnections};
use crate::domain::{
    ConnectionId, ConnectionRef, DisconnectionKey, EntityId, EntityRef, EventId, OutcomeEvent,
    ReasonCode, RequestId, Scope, TokenId,
};

/// Write the references of `events`, each with its `rebuilt_from`, in one
/// statement.
pub(super) async fn insert_many(
    mut conn: &AsyncPgConnection,
    events: &[(&OutcomeEvent, DisconnectionKey)],
) -> QueryResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    InsertReferences {
        event_ids: events.iter().map(|(event, _)| event.event_id).collect(),
        request_ids: events.iter().map(|(event, _)| event.request_id).collect(),
        connection_ids: events.iter().map(|(_, key)| key.connection_id).collect(),
        scopes: events.iter().map(|(_, key)| key.scope.as_str()).collect(),
        reason_codes: events
            .iter()
            .map(|(_, key)| key.reason_code.map(ReasonCode::as_str))
            .collect(),
        occurred_ats: events.iter().map(|(event, _)| event.occurred_at).collect(),
        traceparents: events
            .iter()
            .map(|(event, _)| event.traceparent.as_deref())
            .collect(),
    }
    .execute(&mut conn)
    .await
    .map(drop)
}

/// A multi-row insert whose text does not depend on the number of rows (see
/// the outbox's `InsertEvents`).
struct InsertReferences<'a> {
    event_ids: Vec<EventId>,
    request_ids: Vec<RequestId>,
    connection_ids: Vec<ConnectionId>,
    scopes: Vec<&'static str>,
    reason_codes: Vec<Option<&'static str>>,
    occurred_ats: Vec<DateTime<Utc>>,
    traceparents: Vec<Option<&'a str>>,
}

impl QueryId for InsertReferences<'_> {
    type QueryId = InsertReferences<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Pg> for InsertReferences<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "INSERT INTO outbox_disconnections (event_id, request_id, connection_id, scope, \
             reason_code, occurred_at, traceparent) \
             SELECT * FROM unnest(",
        );
        out.push_bind_param::<Array<SqlUuid>, _>(&self.event_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<SqlUuid>, _>(&self.request_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<SqlUuid>, _>(&self.connection_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.scopes)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.reason_codes)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Timestamptz>, _>(&self.occurred_ats)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.traceparents)?;
        out.push_sql(")");
        Ok(())
    }
}

/// A reference as stored.
#[derive(Queryable, Selectable)]
#[diesel(table_name = outbox_disconnections, check_for_backend(Pg))]
struct ReferenceRow {
    event_id: EventId,
    request_id: RequestId,
    connection_id: ConnectionId,
    scope: String,
    reason_code: Option<String>,
    occurred_at: DateTime<Utc>,
    traceparent: Option<String>,
}

/// The references `claim` takes, locked for this transaction, skipping
/// those another replica holds; rebuilt.
pub(super) async fn claim(
    conn: &mut AsyncPgConnection,
    claim: &Claim<'_>,
) -> QueryResult<Vec<OutcomeEvent>> {
    let rows = outbox_disconnections::table
        .filter(claimed(claim))
        .order(outbox_disconnections::event_id)
        .limit(claim.limit())
        .select(ReferenceRow::as_select())
        .for_update()
        .skip_locked()
        .load::<ReferenceRow>(conn)
        .await?;
    rebuild(conn, rows).await
}

/// The references a claim names.
fn claimed(
    claim: &Claim<'_>,
) -> Box<dyn BoxableExpression<outbox_disconnections::table, Pg, SqlType = Bool>> {
    match *claim {
        Claim::Ids(event_ids) => {
            Box::new(outbox_disconnections::event_id.eq_any(event_ids.to_vec()))
        }
        Claim::OlderThan(delay, _) => {
            Box::new((outbox_disconnections::created_at + interval(delay)).lt(now))
        }
    }
}

/// The events of `rows`, from the rows their requests wrote: three reads
/// for the whole claim. A reference whose connection row is gone (deleted
/// by hand: retention keeps it) cannot be rebuilt; it is logged and left,
/// and the others are published.
async fn rebuild(
    conn: &mut AsyncPgConnection,
    rows: Vec<ReferenceRow>,
) -> QueryResult<Vec<OutcomeEvent>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let connection_ids: Vec<ConnectionId> = rows.iter().map(|row| row.connection_id).collect();
    let request_ids: Vec<RequestId> = rows.iter().map(|row| row.request_id).collect();
    let connections: HashMap<ConnectionId, ConnectionRef> = connections::table
        .filter(connections::id.eq_any(&connection_ids))
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
        .collect();
    let mut tokens: HashMap<(ConnectionId, RequestId), Vec<TokenId>> = HashMap::new();
    for (connection_id, request_id, token_id) in access_tokens::table
        .filter(access_tokens::connection_id.eq_any(&connection_ids))
        .filter(access_tokens::revoked_by_request.eq_any(&request_ids))
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
    let mut entities: HashMap<(ConnectionId, RequestId), Vec<EntityRef>> = HashMap::new();
    for (connection_id, request_id, entity_id, provider_entity_id) in connection_entities::table
        .filter(connection_entities::connection_id.eq_any(&connection_ids))
        .filter(connection_entities::disconnected_by_request.eq_any(&request_ids))
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
    let mut events = Vec::with_capacity(rows.len());
    for ReferenceRow {
        event_id,
        request_id,
        connection_id,
        scope,
        reason_code,
        occurred_at,
        traceparent,
    } in rows
    {
        let Some(connection) = connections.get(&connection_id) else {
            tracing::error!(event_id = %event_id, connection_id = %connection_id,
                "an outbox event's connection row is gone: it cannot be rebuilt and stays unpublished");
            continue;
        };
        let key = DisconnectionKey {
            connection_id,
            scope: parse(&scope, Scope::parse)?,
            reason_code: reason_code
                .map(|code| parse(&code, ReasonCode::parse))
                .transpose()?,
        };
        // Sorted, as when the outcome was decided.
        let mut revoked = tokens
            .remove(&(connection_id, request_id))
            .unwrap_or_default();
        revoked.sort_unstable();
        let mut ended = entities
            .remove(&(connection_id, request_id))
            .unwrap_or_default();
        ended.sort_unstable();
        let event = OutcomeEvent::connection_disconnected(
            event_id,
            request_id,
            key,
            connection,
            &revoked,
            &ended,
            occurred_at,
        );
        events.push(OutcomeEvent {
            traceparent,
            ..event
        });
    }
    Ok(events)
}

/// A stored label, or the error Diesel gives a column it cannot read.
fn parse<T>(text: &str, parse: impl Fn(&str) -> Option<T>) -> QueryResult<T> {
    parse(text).ok_or_else(|| {
        diesel::result::Error::DeserializationError(
            format!("`{text}` is not a label this version knows").into(),
        )
    })
}
