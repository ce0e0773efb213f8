//! Disconnecting the connections of tokens: revoke every sibling token,
//! record each request and write its outcome event, for a batch of requests
//! in one transaction whose statement count does not grow with the batch.
//!
//! The statements go in two pipelined rounds (diesel-async sends the
//! statements of futures polled together without waiting for each answer):
//! reads and locks, then writes. With BEGIN and COMMIT that is four round
//! trips per batch, whatever its size; the cost of a transaction is mostly
//! per round trip on a busy machine, not per row.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use diesel::result::{DatabaseErrorKind, Error as QueryError};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use uuid::Uuid;

use crate::db::requests::{self, NewRequest};
use crate::db::{connections, outbox, tokens};
use crate::domain::{DisconnectRequest, Outcome, OutcomeEvent};

/// How often a batch is re-run after losing a race on a request id to a
/// concurrent transaction: each re-run sees that request as processed.
const RACE_RETRIES: usize = 3;

/// What processing did with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Processed {
    /// This delivery recorded the request's outcome and its event, which is
    /// committed to the outbox and still to be published.
    Recorded {
        outcome: Outcome,
        event: OutcomeEvent,
    },
    /// The request id was processed before; nothing changed.
    AlreadyProcessed { outcome: String },
}

impl Processed {
    /// The outcome label, the same for a first delivery and a duplicate.
    pub fn outcome_label(&self) -> &str {
        match self {
            Self::Recorded { outcome, .. } => outcome.as_str(),
            Self::AlreadyProcessed { outcome } => outcome,
        }
    }
}

/// Process one request in its own transaction.
pub async fn record_disconnect(
    conn: &mut AsyncPgConnection,
    request: &DisconnectRequest,
) -> Result<Processed, QueryError> {
    let mut processed = record_disconnects(conn, std::slice::from_ref(request)).await?;
    Ok(processed.remove(0))
}

/// Process requests in one transaction; one result per request, in order.
/// Exactly what processing them one by one in that order would do: a request
/// id seen before (in the database or earlier in the batch) changes nothing,
/// and of several requests for one connection the first disconnects it.
pub async fn record_disconnects(
    conn: &mut AsyncPgConnection,
    requests: &[DisconnectRequest],
) -> Result<Vec<Processed>, QueryError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = conn
            .transaction::<_, QueryError, _>(async |conn| apply_batch(conn, requests).await)
            .await;
        match result {
            // A concurrent transaction recorded one of these request ids
            // first; ours rolled back whole, and the next run finds it done.
            Err(QueryError::DatabaseError(DatabaseErrorKind::UniqueViolation, info))
                if info.constraint_name() == Some(requests::PRIMARY_KEY)
                    && attempt <= RACE_RETRIES => {}
            other => return other,
        }
    }
}

/// The batch in two pipelined rounds (see the module docs): read and lock,
/// decide, then write.
async fn apply_batch(
    conn: &mut AsyncPgConnection,
    requests: &[DisconnectRequest],
) -> Result<Vec<Processed>, QueryError> {
    let conn: &AsyncPgConnection = conn;
    let request_ids: Vec<Uuid> = requests
        .iter()
        .map(|request| request.request_id.0)
        .collect();
    let hashes: Vec<Vec<u8>> = requests
        .iter()
        .map(|request| request.access_token.hash().0.to_vec())
        .collect();

    // Round 1. Postgres runs these in order: the connection locks (which
    // order us against token issuing and other disconnects) are held before
    // the active tokens are read, so that read is what the revocation takes.
    let (seen_before, found, locked, active) = futures_util::try_join!(
        requests::find_outcomes(conn, &request_ids),
        tokens::find_by_hashes(conn, &hashes),
        connections::lock_of_token_hashes(conn, &hashes),
        tokens::active_siblings_of_hashes(conn, &hashes),
    )?;
    let seen_before: HashMap<Uuid, String> = seen_before.into_iter().collect();
    let token_of: HashMap<Vec<u8>, (Uuid, Uuid)> = found
        .into_iter()
        .map(|(hash, token_id, connection_id)| (hash, (token_id, connection_id)))
        .collect();
    let mut locked: HashMap<Uuid, connections::ConnectionRow> =
        locked.into_iter().map(|row| (row.id, row)).collect();
    let mut active_of: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for (token_id, connection_id) in active {
        active_of.entry(connection_id).or_default().push(token_id);
    }

    // Decide every outcome in delivery order, as sequential processing would.
    let mut decided: Vec<Decision> = Vec::with_capacity(requests.len());
    let mut first_of: HashSet<Uuid> = HashSet::new();
    let mut revocations: Vec<(Uuid, Uuid)> = Vec::new();
    for (request, hash) in requests.iter().zip(&hashes) {
        let request_id = request.request_id.0;
        if seen_before.contains_key(&request_id) || !first_of.insert(request_id) {
            decided.push(Decision::Duplicate);
            continue;
        }
        let Some(&(token_id, connection_id)) = token_of.get(hash) else {
            decided.push(Decision::Unknown);
            continue;
        };
        let active = locked
            .get(&connection_id)
            .is_some_and(|row| row.is_active());
        if active {
            revocations.push((connection_id, request_id));
            // Later requests in the batch find it disconnected.
            if let Some(row) = locked.get_mut(&connection_id) {
                row.status = connections::DISCONNECTED.into();
            }
            decided.push(Decision::Disconnects {
                token_id,
                connection_id,
            });
        } else {
            decided.push(Decision::AlreadyDisconnected {
                token_id,
                connection_id,
            });
        }
    }

    let now = Utc::now();
    let expected_revoked: usize = revocations
        .iter()
        .map(|(connection_id, _)| active_of.get(connection_id).map_or(0, Vec::len))
        .sum();
    let outcomes = decided
        .into_iter()
        .map(|decision| decision.into_outcome(&mut locked, &mut active_of))
        .collect::<Vec<_>>();
    let (rows, events, results) = records(requests, outcomes, &seen_before, now);

    // Round 2: every write at once. `join` rather than `try_join`, so the
    // error reported is the first statement's (a lost race on a request id
    // fails the audit insert, and the later statements only fail because
    // the transaction is aborted).
    let revoke = async {
        if revocations.is_empty() {
            return Ok(0);
        }
        tokens::revoke_all_of_connections(conn, &revocations, now).await
    };
    let mark = async {
        if revocations.is_empty() {
            return Ok(());
        }
        connections::mark_disconnected(conn, &revocations, now).await
    };
    let (revoked, marked, recorded, written) = futures_util::join!(
        revoke,
        mark,
        requests::insert_many(conn, &rows),
        outbox::insert_many(conn, &events),
    );
    let revoked = revoked?;
    marked?;
    recorded?;
    written?;
    if revoked != expected_revoked {
        // Cannot happen while issuing takes the connection lock; if it ever
        // does, the events would list the wrong tokens, so nothing commits.
        return Err(QueryError::QueryBuilderError(
            format!("revoked {revoked} tokens where {expected_revoked} were active").into(),
        ));
    }
    Ok(results)
}

/// An outcome before the revocation has run.
enum Decision {
    Duplicate,
    Unknown,
    AlreadyDisconnected { token_id: Uuid, connection_id: Uuid },
    Disconnects { token_id: Uuid, connection_id: Uuid },
}

impl Decision {
    /// The outcome and the token it named; `None` for a duplicate.
    fn into_outcome(
        self,
        locked: &mut HashMap<Uuid, connections::ConnectionRow>,
        revoked_of: &mut HashMap<Uuid, Vec<Uuid>>,
    ) -> Option<(Outcome, Option<Uuid>)> {
        match self {
            Self::Duplicate => None,
            Self::Unknown => Some((Outcome::UnknownToken, None)),
            Self::AlreadyDisconnected {
                token_id,
                connection_id,
            } => Some((
                Outcome::AlreadyDisconnected { connection_id },
                Some(token_id),
            )),
            Self::Disconnects {
                token_id,
                connection_id,
            } => {
                let mut revoked_token_ids = revoked_of.remove(&connection_id).unwrap_or_default();
                // Sorted, so the event lists the tokens in a stable order.
                revoked_token_ids.sort_unstable();
                let connection = locked.remove(&connection_id)?.into_ref();
                Some((
                    Outcome::Disconnected {
                        connection,
                        revoked_token_ids,
                    },
                    Some(token_id),
                ))
            }
        }
    }
}

/// The audit records and outcome events of the batch, and each request's
/// result.
fn records<'a>(
    requests: &'a [DisconnectRequest],
    outcomes: Vec<Option<(Outcome, Option<Uuid>)>>,
    seen_before: &HashMap<Uuid, String>,
    processed_at: DateTime<Utc>,
) -> (Vec<NewRequest<'a>>, Vec<OutcomeEvent>, Vec<Processed>) {
    let mut rows = Vec::new();
    let mut events = Vec::new();
    let mut results = Vec::with_capacity(requests.len());
    let mut outcome_in_batch: HashMap<Uuid, &'static str> = HashMap::new();
    for (request, outcome) in requests.iter().zip(outcomes) {
        let request_id = request.request_id.0;
        let Some((outcome, token_id)) = outcome else {
            let earlier = seen_before
                .get(&request_id)
                .map(String::as_str)
                .or_else(|| outcome_in_batch.get(&request_id).copied());
            results.push(Processed::AlreadyProcessed {
                outcome: earlier.unwrap_or_default().to_string(),
            });
            continue;
        };
        let event = OutcomeEvent::for_outcome(request.request_id, &outcome, processed_at);
        rows.push(NewRequest {
            request_id,
            outcome: outcome.as_str(),
            connection_id: outcome.connection_id(),
            token_id,
            revoked_token_count: match &outcome {
                Outcome::Disconnected {
                    revoked_token_ids, ..
                } => i32::try_from(revoked_token_ids.len()).unwrap_or(i32::MAX),
                _ => 0,
            },
            requested_at: request.requested_at,
            requested_by: request.requested_by.as_deref(),
            reason: request.reason.as_deref(),
            processed_at,
            event_id: event.event_id,
        });
        outcome_in_batch.insert(request_id, outcome.as_str());
        events.push(event.clone());
        results.push(Processed::Recorded { outcome, event });
    }
    (rows, events, results)
}
