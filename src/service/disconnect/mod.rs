//! Processing a batch of requests in one transaction whose statement count
//! does not grow with the batch: disconnect the connections they name (by
//! a token or by id, revoking every sibling token), revoke tokens alone,
//! accept company and client requests as fan-outs (worked through later,
//! in chunks, by [`crate::service::fanout`]), record each request and write
//! its outcome event.
//!
//! The statements go in two pipelined rounds (diesel-async sends the
//! statements of futures polled together without waiting for each answer):
//! reads and locks, then writes; in between, [`plan`] decides every outcome.
//! With BEGIN and COMMIT that is four round trips per batch, whatever its
//! size; the cost of a transaction is mostly per round trip on a busy
//! machine, not per row.

pub mod plan;

use chrono::Utc;
use diesel::result::Error as QueryError;
use diesel_async::{AsyncConnection, AsyncPgConnection};

use crate::db::{connections, entities, fanouts, requests, tokens};
use crate::domain::{
    AccessToken, ConnectionId, DisconnectRequest, Outcome, OutcomeEvent, OutcomeKind, RequestId,
    StoredLabel, TokenHash,
};
use crate::outbox::{self, OutboxFormat};
use plan::{plan, records, Plan, Snapshot};

pub use plan::Policy;

/// What processing did with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Processed {
    /// This delivery recorded the request's outcome, and its event in the
    /// outbox.
    Recorded(Outcome),
    /// The request id was processed before, with this outcome (as stored:
    /// a newer release may have recorded one this release does not know);
    /// nothing changed.
    AlreadyProcessed(StoredLabel<OutcomeKind>),
}

impl Processed {
    /// The outcome, the same for a first delivery and a duplicate; `None`
    /// for a request a newer release recorded with an outcome this release
    /// does not know.
    pub fn kind(&self) -> Option<OutcomeKind> {
        match self {
            Self::Recorded(outcome) => Some(outcome.kind()),
            Self::AlreadyProcessed(kind) => kind.known(),
        }
    }

    /// The outcome's label, for the logs.
    pub fn label(&self) -> &str {
        match self {
            Self::Recorded(outcome) => outcome.kind().as_str(),
            Self::AlreadyProcessed(kind) => kind.as_str(),
        }
    }
}

/// A committed batch: one result per request, in order, and the events the
/// transaction wrote to the outbox, to be published now.
#[derive(Debug)]
pub struct Committed {
    pub processed: Vec<Processed>,
    pub events: Vec<OutcomeEvent>,
    /// How many company or client fan-outs the batch started.
    pub fanouts_started: usize,
}

/// Process one request in its own transaction.
pub async fn record_disconnect(
    conn: &mut AsyncPgConnection,
    request: &DisconnectRequest,
    policy: &Policy,
    format: OutboxFormat,
) -> Result<Processed, QueryError> {
    let mut committed =
        record_disconnects(conn, std::slice::from_ref(request), policy, format).await?;
    Ok(committed.processed.remove(0))
}

/// Process requests in one transaction; exactly what processing them one by
/// one in that order would do. One attempt: a failure rolls back everything
/// and is the caller's to retry (a lost race on a request id included: the
/// next attempt finds that request processed). Events are written to the
/// outbox in `format`.
pub async fn record_disconnects(
    conn: &mut AsyncPgConnection,
    requests: &[DisconnectRequest],
    policy: &Policy,
    format: OutboxFormat,
) -> Result<Committed, QueryError> {
    conn.transaction::<_, QueryError, _>(async |conn| {
        apply_batch(conn, requests, policy, format).await
    })
    .await
}

async fn apply_batch(
    conn: &mut AsyncPgConnection,
    requests: &[DisconnectRequest],
    policy: &Policy,
    format: OutboxFormat,
) -> Result<Committed, QueryError> {
    let conn: &AsyncPgConnection = conn;
    let request_ids: Vec<RequestId> = requests.iter().map(|request| request.request_id).collect();
    let hashes: Vec<Option<TokenHash>> = requests
        .iter()
        .map(|request| request.target.token().map(AccessToken::hash))
        .collect();
    let named_hashes: Vec<TokenHash> = hashes.iter().flatten().copied().collect();
    let named_connections: Vec<ConnectionId> = requests
        .iter()
        .filter_map(|request| request.target.connection_id())
        .collect();

    // Round 1. Postgres runs these in order: the connection locks (which
    // order us against token issuing, fan-out chunks and other disconnects)
    // are held before the active tokens and the entities are read, so those
    // reads are what the writes change.
    let (seen_before, found, locked, active, entity_rows) = futures_util::try_join!(
        requests::find_outcomes(conn, &request_ids),
        tokens::find_by_hashes(conn, &named_hashes),
        connections::lock_for_batch(conn, &named_hashes, &named_connections),
        tokens::active_of_connections(conn, &named_hashes, &named_connections),
        entities::of_connections(conn, &named_hashes, &named_connections),
    )?;
    let now = Utc::now();
    let Plan {
        decided,
        disconnections,
        token_revocations,
        expected_revoked,
        entity_disconnections,
    } = plan(
        requests,
        &hashes,
        Snapshot::new(seen_before, found, locked, active, entity_rows),
        policy,
        now,
    );
    let records = records(requests, decided, now);

    // Round 2: every write at once. `join` rather than `try_join`, so the
    // error reported is the first statement's (a lost race on a request id
    // fails the audit insert, and the later statements only fail because
    // the transaction is aborted). Tokens revoked alone go first: a later
    // request of the batch that disconnects their connection revokes only
    // the others, and must not take them.
    let revoke_alone = async {
        if token_revocations.is_empty() {
            return Ok(0);
        }
        tokens::revoke_alone(conn, &token_revocations, now).await
    };
    let revoke = async {
        if disconnections.is_empty() {
            return Ok(0);
        }
        tokens::revoke_all_of_connections(conn, &disconnections, now).await
    };
    let mark = async {
        if disconnections.is_empty() {
            return Ok(());
        }
        connections::mark_disconnected(conn, &disconnections, now).await
    };
    let end_entities = async {
        if entity_disconnections.is_empty() {
            return Ok(0);
        }
        entities::disconnect(conn, &entity_disconnections, now).await
    };
    let (revoked_alone, revoked, marked, ended, recorded, written, fanned_out) = futures_util::join!(
        revoke_alone,
        revoke,
        mark,
        end_entities,
        requests::insert_many(conn, &records.rows, now),
        outbox::store::insert_many(conn, &records.events, format),
        fanouts::insert_many(conn, &records.fanouts),
    );
    let revoked = revoked_alone? + revoked?;
    marked?;
    let ended = ended?;
    recorded?;
    written?;
    fanned_out?;
    if revoked != expected_revoked || ended != entity_disconnections.len() {
        // Cannot happen while issuing takes the connection lock; if it ever
        // does, the events would list the wrong tokens or entities, so
        // nothing commits.
        return Err(QueryError::QueryBuilderError(
            format!(
                "revoked {revoked} tokens where {expected_revoked} were active, disconnected \
                 {ended} entities where {} were active",
                entity_disconnections.len()
            )
            .into(),
        ));
    }
    Ok(Committed {
        processed: records.processed,
        events: records.events,
        fanouts_started: records.fanouts.len(),
    })
}
