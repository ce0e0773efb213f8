//! Company and client requests, worked through in chunks: a request for a
//! whole application may cover 100,000 connections and a million tokens,
//! far too much for one transaction (locks held for minutes, one huge
//! WAL burst, everything redone after a crash).
//!
//! Each step is one transaction: take the oldest unfinished fan-out (one
//! another replica holds is skipped), lock its next chunk of active
//! connections in id order, disconnect them exactly as a connection request
//! would (their events in the outbox), and move the cursor and the counts
//! in the same commit. A crash loses at most the uncommitted chunk, and the
//! next step resumes after the last committed one: nothing is counted or
//! revoked twice. A single-token request for one of these connections
//! takes the same row lock, so whichever commits first disconnects it and
//! the other finds it disconnected (the fan-out skips it and does not count
//! it).
//!
//! When no connection is left, the request's terminal event
//! (`disconnect.completed`, or `nothing_to_disconnect`) is written only once
//! every event of its chunks is published, so consumers see it last.

use chrono::Utc;
use diesel::result::Error as QueryError;
use diesel_async::{AsyncConnection, AsyncPgConnection};

use crate::db::entities;
use crate::db::fanouts::{self, Fanout};
use crate::db::{connections, requests, tokens, Disconnection};
use crate::domain::{
    ConnectionStatus, EntityStatus, EventContext, Outcome, OutcomeEvent, RequestId, Scope,
    StoredLabel,
};
use crate::outbox::{self, OutboxFormat};
use crate::service::disconnect::plan::{by_connection, end_entities};

/// What one step did.
#[derive(Debug)]
pub enum Step {
    /// No fan-out is waiting (or every one is held by another replica).
    Idle,
    /// Disconnected a chunk of connections; their events are committed and
    /// are to be published now.
    Chunk {
        request_id: RequestId,
        /// One per connection.
        events: Vec<OutcomeEvent>,
        /// Tokens revoked.
        tokens: usize,
        /// Entities that ended with their connections.
        entities: usize,
    },
    /// Every connection is done, but some of the request's events are not
    /// published yet: its completion waits for them.
    Publishing { request_id: RequestId },
    /// The request is complete: its terminal event is committed.
    Finished {
        request_id: RequestId,
        event: OutcomeEvent,
    },
}

/// Take one step of the oldest fan-out, in one transaction; a chunk's
/// events are written in `format`.
pub async fn step(
    conn: &mut AsyncPgConnection,
    chunk_size: i64,
    format: OutboxFormat,
) -> Result<Step, QueryError> {
    conn.transaction::<_, QueryError, _>(async |conn| {
        let Some(fanout) = fanouts::claim_next(conn).await? else {
            return Ok(Step::Idle);
        };
        let chunk = fanouts::lock_next_connections(conn, &fanout, chunk_size).await?;
        if chunk.is_empty() {
            return complete(conn, &fanout).await;
        }
        disconnect_chunk(conn, &fanout, chunk, format).await
    })
    .await
}

async fn disconnect_chunk(
    conn: &mut AsyncPgConnection,
    fanout: &Fanout,
    chunk: Vec<connections::ConnectionRow>,
    format: OutboxFormat,
) -> Result<Step, QueryError> {
    let now = Utc::now();
    let ids: Vec<_> = chunk.iter().map(|row| row.id).collect();
    // Both reads in one round trip; then each connection's tokens and
    // entities, grouped once.
    let (active, entity_rows) = futures_util::try_join!(
        tokens::active_of_connections(&*conn, &[], &ids),
        entities::of_connections(&*conn, &[], &ids),
    )?;
    let mut tokens_of = by_connection(active, |token| (token.connection_id, token.token_id));
    let mut entities_of = by_connection(entity_rows, |entity| (entity.connection_id, entity));
    let mut entity_disconnections = Vec::new();
    let disconnections: Vec<Disconnection> = ids
        .iter()
        .map(|&connection_id| Disconnection {
            connection_id,
            request_id: fanout.request_id,
        })
        .collect();
    let context = context(fanout)?;
    let mut events = Vec::with_capacity(chunk.len());
    let mut expected_revoked = 0;
    let last = ids[ids.len() - 1];
    for row in chunk {
        debug_assert_eq!(row.status, ConnectionStatus::Active);
        let mut revoked_token_ids = tokens_of.remove(&row.id).unwrap_or_default();
        revoked_token_ids.sort_unstable();
        expected_revoked += revoked_token_ids.len();
        // Its active entities end with it, as in a batch.
        let ended_entities = end_entities(
            entities_of
                .get_mut(&row.id)
                .into_iter()
                .flatten()
                .filter(|entity| entity.status == EntityStatus::Active),
            fanout.request_id,
            &mut entity_disconnections,
        );
        let outcome = Outcome::Disconnected {
            connection: row.into_ref(),
            revoked_token_ids,
            ended_entities,
        };
        events.extend(
            OutcomeEvent::for_outcome(&context, &outcome, now)
                .into_iter()
                .map(|event| OutcomeEvent {
                    traceparent: fanout.traceparent.clone(),
                    ..event
                }),
        );
    }
    let (revoked, ended) = futures_util::try_join!(
        tokens::revoke_all_of_connections(&*conn, &disconnections, now),
        async {
            if entity_disconnections.is_empty() {
                Ok(0)
            } else {
                entities::disconnect(&*conn, &entity_disconnections, now).await
            }
        },
    )?;
    if revoked != expected_revoked || ended != entity_disconnections.len() {
        // As in a batch: the connection locks make this impossible, and the
        // events would list the wrong tokens or entities, so nothing commits.
        return Err(QueryError::QueryBuilderError(
            format!(
                "revoked {revoked} tokens where {expected_revoked} were active, disconnected \
                 {ended} entities where {} were active",
                entity_disconnections.len()
            )
            .into(),
        ));
    }
    connections::mark_disconnected(&*conn, &disconnections, now).await?;
    // In the `whole` format (a 0.3.x replica may run, whose fan-out waits
    // only for `outbox_events` before its terminal event) these are whole.
    outbox::store::insert_many(&*conn, &events, format).await?;
    fanouts::advance(
        conn,
        fanout.request_id,
        last,
        i64::try_from(ids.len()).unwrap_or(i64::MAX),
        i64::try_from(revoked).unwrap_or(i64::MAX),
    )
    .await?;
    Ok(Step::Chunk {
        request_id: fanout.request_id,
        events,
        tokens: revoked,
        entities: ended,
    })
}

async fn complete(conn: &mut AsyncPgConnection, fanout: &Fanout) -> Result<Step, QueryError> {
    if fanouts::unpublished_events(conn, fanout.request_id).await? > 0 {
        return Ok(Step::Publishing {
            request_id: fanout.request_id,
        });
    }
    let now = Utc::now();
    let outcome = if fanout.connections == 0 {
        Outcome::NothingToDisconnect
    } else {
        Outcome::Completed {
            connections: u64::try_from(fanout.connections).unwrap_or_default(),
            tokens: u64::try_from(fanout.tokens).unwrap_or_default(),
        }
    };
    let Some(event) = OutcomeEvent::for_outcome(&context(fanout)?, &outcome, now)
        .into_iter()
        .next()
    else {
        return Err(QueryError::QueryBuilderError(
            "a finished fan-out has no terminal event".into(),
        ));
    };
    let event = OutcomeEvent {
        traceparent: fanout.traceparent.clone(),
        ..event
    };
    // A terminal event is kept whole in either format.
    outbox::store::insert_many(&*conn, std::slice::from_ref(&event), OutboxFormat::Whole).await?;
    requests::finish(
        conn,
        fanout.request_id,
        outcome.kind(),
        i32::try_from(fanout.connections).unwrap_or(i32::MAX),
        i32::try_from(fanout.tokens).unwrap_or(i32::MAX),
        event.event_id,
    )
    .await?;
    fanouts::finish(conn, fanout.request_id, now).await?;
    Ok(Step::Finished {
        request_id: fanout.request_id,
        event,
    })
}

/// What the fan-out's events say about its request. Its scope is one this
/// release knows (`claim_next` takes no other); its reason code may be a
/// newer release's, carried as stored.
fn context(fanout: &Fanout) -> Result<EventContext<'_>, QueryError> {
    let scope = Scope::parse(&fanout.scope).ok_or_else(|| {
        QueryError::QueryBuilderError(
            format!(
                "a fan-out of scope `{}` this release does not know",
                fanout.scope
            )
            .into(),
        )
    })?;
    Ok(EventContext {
        request_id: fanout.request_id,
        scope,
        reason_code: fanout.reason_code.as_deref().map(StoredLabel::read),
        client_id: Some(&fanout.client_id),
        company_id: fanout.company_id.as_deref(),
    })
}
