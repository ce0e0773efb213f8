//! `connection.disconnected` events kept by reference, in
//! `outbox_disconnections` (migration 10): the row holds what the event says
//! that the rows do not (its ids, scope, reason code, time and trace) and a
//! digest of its bytes (migration 12), and a claim rebuilds the bytes from
//! the connection's row and the token and entity rows its request revoked
//! and ended, all written in the same transaction as the reference
//! ([`super::rebuild`]). Nothing this release does writes those columns
//! again (a disconnect is final) and its retention keeps the rows while a
//! reference to them is pending; a reference whose rebuilt bytes do not
//! hash as the first did (its rows changed by hand, or by another release)
//! is set aside ([`super::set_aside`]), never published with other bytes.

use chrono::{DateTime, Utc};
use diesel::dsl::now;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::rebuild::{rebuild, Rebuilt};
use super::set_aside::{self, SetAside};
use super::{interval, Claim};
use crate::db::schema::outbox_disconnections;
use crate::domain::event::payload_digest;
use crate::domain::{ConnectionId, DisconnectionKey, EventId, OutcomeEvent, RequestId};

/// Write the references of `events`, each with its `rebuilt_from` and the
/// digest of its bytes, in one statement.
pub(super) async fn insert_many(
    mut conn: &AsyncPgConnection,
    events: &[(&OutcomeEvent, &DisconnectionKey)],
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
            .map(|(_, key)| key.reason_code.as_ref().map(|code| code.as_str()))
            .collect(),
        occurred_ats: events.iter().map(|(event, _)| event.occurred_at).collect(),
        traceparents: events
            .iter()
            .map(|(event, _)| event.traceparent.as_deref())
            .collect(),
        payload_digests: events
            .iter()
            .map(|(event, _)| payload_digest(&event.payload))
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
    scopes: Vec<&'a str>,
    reason_codes: Vec<Option<&'a str>>,
    occurred_ats: Vec<DateTime<Utc>>,
    traceparents: Vec<Option<&'a str>>,
    payload_digests: Vec<i64>,
}

impl QueryId for InsertReferences<'_> {
    type QueryId = InsertReferences<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Pg> for InsertReferences<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "INSERT INTO outbox_disconnections (event_id, request_id, connection_id, scope, \
             reason_code, occurred_at, traceparent, payload_digest) \
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
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(&self.payload_digests)?;
        out.push_sql(")");
        Ok(())
    }
}

/// A reference as stored.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = outbox_disconnections, check_for_backend(Pg))]
pub(super) struct ReferenceRow {
    pub event_id: EventId,
    pub request_id: RequestId,
    pub connection_id: ConnectionId,
    pub scope: String,
    pub reason_code: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub traceparent: Option<String>,
    pub payload_digest: Option<i64>,
}

/// The references `claim` takes, locked for this transaction, skipping
/// those another replica holds: rebuilt, and those that cannot be
/// published moved to the set-aside table in the same transaction.
pub(super) async fn claim(
    conn: &mut AsyncPgConnection,
    claim: &Claim<'_>,
) -> QueryResult<(Vec<OutcomeEvent>, Vec<SetAside>)> {
    let rows = outbox_disconnections::table
        .filter(claimed(claim))
        .order(outbox_disconnections::event_id)
        .limit(claim.limit())
        .select(ReferenceRow::as_select())
        .for_update()
        .skip_locked()
        .load::<ReferenceRow>(conn)
        .await?;
    let Rebuilt {
        events,
        unpublishable,
    } = rebuild(conn, rows).await?;
    set_aside::move_from_outbox(conn, &unpublishable).await?;
    Ok((events, unpublishable))
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
