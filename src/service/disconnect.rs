//! Disconnecting the connection of a token: revoke every sibling token, record
//! the request and write its outcome event, all in one transaction.

use chrono::Utc;
use diesel::result::{DatabaseErrorKind, Error as QueryError};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use uuid::Uuid;

use crate::db::requests::{self, NewRequest};
use crate::db::{connections, outbox, tokens};
use crate::domain::{DisconnectRequest, Outcome, OutcomeEvent};

/// What processing did with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Processed {
    /// This delivery recorded the request's outcome and its event.
    Recorded { outcome: Outcome, event_id: Uuid },
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

/// Process one request in one transaction. Idempotent: a request id seen
/// before changes nothing, including when two deliveries of it race.
pub async fn record_disconnect(
    conn: &mut AsyncPgConnection,
    request: &DisconnectRequest,
) -> Result<Processed, QueryError> {
    let result = conn
        .transaction::<_, QueryError, _>(async |conn| {
            if let Some(outcome) = requests::find_outcome(conn, request.request_id.0).await? {
                return Ok(Processed::AlreadyProcessed { outcome });
            }
            let (outcome, token_id) = apply(conn, request).await?;
            let event_id = record(conn, request, &outcome, token_id).await?;
            Ok(Processed::Recorded { outcome, event_id })
        })
        .await;
    match result {
        // A concurrent delivery of the same request id committed first; our
        // transaction rolled back whole.
        Err(QueryError::DatabaseError(DatabaseErrorKind::UniqueViolation, info))
            if info.constraint_name() == Some(requests::PRIMARY_KEY) =>
        {
            let outcome = requests::find_outcome(conn, request.request_id.0)
                .await?
                .unwrap_or_default();
            Ok(Processed::AlreadyProcessed { outcome })
        }
        other => other,
    }
}

/// Resolve the token and revoke its connection. Only the token's own
/// connection is touched: a replayed request for a connection since replaced
/// finds it disconnected and leaves the new one alone.
async fn apply(
    conn: &mut AsyncPgConnection,
    request: &DisconnectRequest,
) -> Result<(Outcome, Option<Uuid>), QueryError> {
    let Some((token_id, connection_id)) =
        tokens::find_by_hash(conn, &request.access_token.hash()).await?
    else {
        return Ok((Outcome::UnknownToken, None));
    };
    // The lock orders us against token issuing and other disconnects.
    let connection = connections::lock(conn, connection_id).await?;
    if !connection.is_active() {
        return Ok((
            Outcome::AlreadyDisconnected { connection_id },
            Some(token_id),
        ));
    }
    let now = Utc::now();
    let revoked_token_ids =
        tokens::revoke_all_of_connection(conn, connection_id, request.request_id.0, now).await?;
    connections::mark_disconnected(conn, connection_id, request.request_id.0, now).await?;
    let outcome = Outcome::Disconnected {
        connection: connection.into_ref(),
        revoked_token_ids,
    };
    Ok((outcome, Some(token_id)))
}

/// Write the request's audit record and its outcome event to the outbox.
async fn record(
    conn: &mut AsyncPgConnection,
    request: &DisconnectRequest,
    outcome: &Outcome,
    token_id: Option<Uuid>,
) -> Result<Uuid, QueryError> {
    let processed_at = Utc::now();
    let event = OutcomeEvent::for_outcome(request.request_id, outcome, processed_at);
    let revoked_token_count = match outcome {
        Outcome::Disconnected {
            revoked_token_ids, ..
        } => i32::try_from(revoked_token_ids.len()).unwrap_or(i32::MAX),
        _ => 0,
    };
    requests::insert(
        conn,
        &NewRequest {
            request_id: request.request_id.0,
            outcome: outcome.as_str(),
            connection_id: outcome.connection_id(),
            token_id,
            revoked_token_count,
            requested_at: request.requested_at,
            requested_by: request.requested_by.as_deref(),
            reason: request.reason.as_deref(),
            processed_at,
            event_id: event.event_id,
        },
    )
    .await?;
    outbox::insert(conn, request.request_id.0, &event).await?;
    Ok(event.event_id)
}
