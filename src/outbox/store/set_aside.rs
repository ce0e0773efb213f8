//! References set aside (`outbox_set_aside`, migration 12): a
//! `connection.disconnected` event kept by reference that cannot be
//! rebuilt as first built is moved here, in the transaction of the claim
//! that found it, with the problem. It then holds up no other event and no
//! fan-out's completion. An operator lists them, and moves one back
//! (`retry`: its rows were restored, or a release that builds it runs) or
//! drops it (`discard`: handled by other means); the gauge and its alert
//! stay up until the table is empty.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;

use super::disconnections::ReferenceRow;
use crate::db::schema::outbox_set_aside;
use crate::domain::{ConnectionId, EventId, RequestId};

/// A reference that cannot be published, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    pub event_id: EventId,
    pub request_id: RequestId,
    pub connection_id: ConnectionId,
    pub problem: String,
}

impl SetAside {
    pub(super) fn of(row: &ReferenceRow, problem: impl Into<String>) -> Self {
        Self {
            event_id: row.event_id,
            request_id: row.request_id,
            connection_id: row.connection_id,
            problem: problem.into(),
        }
    }
}

/// Move these references from the outbox to the set-aside table, in one
/// statement (they are locked by the caller's claim).
pub(super) async fn move_from_outbox(
    conn: &mut AsyncPgConnection,
    set_aside: &[SetAside],
) -> QueryResult<()> {
    if set_aside.is_empty() {
        return Ok(());
    }
    let event_ids: Vec<EventId> = set_aside.iter().map(|one| one.event_id).collect();
    let problems: Vec<&str> = set_aside.iter().map(|one| one.problem.as_str()).collect();
    diesel::sql_query(
        "WITH moved AS (DELETE FROM outbox_disconnections WHERE event_id = ANY($1) RETURNING *) \
         INSERT INTO outbox_set_aside (event_id, request_id, connection_id, scope, reason_code, \
           occurred_at, traceparent, payload_digest, created_at, problem) \
         SELECT m.event_id, m.request_id, m.connection_id, m.scope, m.reason_code, \
           m.occurred_at, m.traceparent, m.payload_digest, m.created_at, p.problem \
         FROM moved AS m JOIN unnest($1, $2) AS p (event_id, problem) USING (event_id) \
         ON CONFLICT (event_id) DO UPDATE \
           SET problem = excluded.problem, set_aside_at = excluded.set_aside_at",
    )
    .bind::<Array<SqlUuid>, _>(event_ids)
    .bind::<Array<Text>, _>(problems)
    .execute(conn)
    .await
    .map(drop)
}

/// A set-aside reference as listed: never a token (none is stored).
#[derive(Debug, Clone, Queryable, Selectable, Serialize)]
#[diesel(table_name = outbox_set_aside, check_for_backend(diesel::pg::Pg))]
pub struct SetAsideRow {
    pub event_id: EventId,
    pub request_id: RequestId,
    pub connection_id: ConnectionId,
    pub scope: String,
    pub reason_code: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub set_aside_at: DateTime<Utc>,
    pub problem: String,
}

/// Every set-aside reference, oldest first.
pub async fn list(conn: &mut AsyncPgConnection) -> QueryResult<Vec<SetAsideRow>> {
    outbox_set_aside::table
        .order(outbox_set_aside::set_aside_at)
        .select(SetAsideRow::as_select())
        .load(conn)
        .await
}

/// Which set-aside references a command takes.
#[derive(Debug, Clone, Copy)]
pub enum Chosen<'a> {
    All,
    Ids(&'a [EventId]),
}

/// Move the chosen references back to the outbox, where the relay claims
/// them at its next sweep (they are older than the relay delay); returns
/// how many.
pub async fn retry(conn: &mut AsyncPgConnection, chosen: Chosen<'_>) -> QueryResult<usize> {
    diesel::sql_query(format!(
        "WITH moved AS (DELETE FROM outbox_set_aside WHERE {} RETURNING *) \
         INSERT INTO outbox_disconnections (event_id, request_id, connection_id, scope, \
           reason_code, occurred_at, traceparent, payload_digest, created_at) \
         SELECT event_id, request_id, connection_id, scope, reason_code, occurred_at, \
           traceparent, payload_digest, created_at FROM moved \
         ON CONFLICT (event_id) DO NOTHING",
        chosen.condition()
    ))
    .bind::<Array<SqlUuid>, _>(chosen.ids())
    .execute(conn)
    .await
}

/// Delete the chosen references; returns how many.
pub async fn discard(conn: &mut AsyncPgConnection, chosen: Chosen<'_>) -> QueryResult<usize> {
    diesel::sql_query(format!(
        "DELETE FROM outbox_set_aside WHERE {}",
        chosen.condition()
    ))
    .bind::<Array<SqlUuid>, _>(chosen.ids())
    .execute(conn)
    .await
}

impl Chosen<'_> {
    /// The condition on `$1`, the ids (empty for all).
    fn condition(self) -> &'static str {
        match self {
            Self::All => "cardinality($1) = 0",
            Self::Ids(_) => "event_id = ANY($1)",
        }
    }

    fn ids(self) -> Vec<EventId> {
        match self {
            Self::All => Vec::new(),
            Self::Ids(ids) => ids.to_vec(),
        }
    }
}

/// How many references are set aside.
pub async fn count(conn: &mut AsyncPgConnection) -> QueryResult<i64> {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        count: i64,
    }
    diesel::sql_query("SELECT count(*) AS count FROM outbox_set_aside")
        .get_result::<Count>(conn)
        .await
        .map(|row| row.count)
}
