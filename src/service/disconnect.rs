//! Disconnecting the connections of tokens: revoke every sibling token,
//! record each request and write its outcome event, for a batch of requests
//! in one transaction whose statement count does not grow with the batch.

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

async fn apply_batch(
    conn: &mut AsyncPgConnection,
    requests: &[DisconnectRequest],
) -> Result<Vec<Processed>, QueryError> {
    let request_ids: Vec<Uuid> = requests
        .iter()
        .map(|request| request.request_id.0)
        .collect();
    let seen_before: HashMap<Uuid, String> = requests::find_outcomes(conn, &request_ids)
        .await?
        .into_iter()
        .collect();
    let hashes: Vec<Vec<u8>> = requests
        .iter()
        .map(|request| request.access_token.hash().0.to_vec())
        .collect();
    let token_of: HashMap<Vec<u8>, (Uuid, Uuid)> = tokens::find_by_hashes(conn, &hashes)
        .await?
        .into_iter()
        .map(|(hash, token_id, connection_id)| (hash, (token_id, connection_id)))
        .collect();
    let mut connection_ids: Vec<Uuid> = token_of
        .values()
        .map(|(_, connection_id)| *connection_id)
        .collect();
    connection_ids.sort_unstable();
    connection_ids.dedup();
    // The locks order us against token issuing and other disconnects.
    let mut locked: HashMap<Uuid, connections::ConnectionRow> =
        connections::lock_many(conn, &connection_ids)
            .await?
            .into_iter()
            .map(|row| (row.id, row))
            .collect();

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
    let mut revoked_of: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    if !revocations.is_empty() {
        for token in tokens::revoke_all_of_connections(conn, &revocations, now).await? {
            revoked_of
                .entry(token.connection_id)
                .or_default()
                .push(token.id);
        }
        connections::mark_disconnected(conn, &revocations, now).await?;
    }
    let outcomes = decided
        .into_iter()
        .map(|decision| decision.into_outcome(&mut locked, &mut revoked_of))
        .collect::<Vec<_>>();
    record(conn, requests, outcomes, &seen_before, now).await
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

/// Write the audit records and outcome events of the batch, two statements.
async fn record(
    conn: &mut AsyncPgConnection,
    requests: &[DisconnectRequest],
    outcomes: Vec<Option<(Outcome, Option<Uuid>)>>,
    seen_before: &HashMap<Uuid, String>,
    processed_at: DateTime<Utc>,
) -> Result<Vec<Processed>, QueryError> {
    let mut rows = Vec::new();
    let mut events = Vec::new();
    let mut results = Vec::with_capacity(requests.len());
    let mut outcome_in_batch: HashMap<Uuid, String> = HashMap::new();
    for (request, outcome) in requests.iter().zip(&outcomes) {
        let request_id = request.request_id.0;
        let Some((outcome, token_id)) = outcome else {
            let earlier = seen_before
                .get(&request_id)
                .or_else(|| outcome_in_batch.get(&request_id));
            results.push(Processed::AlreadyProcessed {
                outcome: earlier.cloned().unwrap_or_default(),
            });
            continue;
        };
        let event = OutcomeEvent::for_outcome(request.request_id, outcome, processed_at);
        rows.push(NewRequest {
            request_id,
            outcome: outcome.as_str(),
            connection_id: outcome.connection_id(),
            token_id: *token_id,
            revoked_token_count: match outcome {
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
        outcome_in_batch.insert(request_id, outcome.as_str().to_string());
        results.push(Processed::Recorded {
            outcome: outcome.clone(),
            event: event.clone(),
        });
        events.push(event);
    }
    if !rows.is_empty() {
        requests::insert_many(conn, &rows).await?;
        outbox::insert_many(conn, &events).await?;
    }
    Ok(results)
}
