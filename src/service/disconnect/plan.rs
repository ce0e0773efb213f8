//! Deciding a batch's outcomes from what the database held under the locks:
//! pure code, so the rule "exactly what processing the requests one at a
//! time, in delivery order, would do" is tested without a database.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::Processed;
use crate::db::connections::ConnectionRow;
use crate::db::requests::NewRequest;
use crate::db::tokens::{ActiveToken, FoundToken};
use crate::db::Disconnection;
use crate::domain::{
    ConnectionId, ConnectionStatus, DisconnectRequest, Outcome, OutcomeEvent, OutcomeKind,
    RequestId, TokenHash, TokenId,
};

/// What the first round of a batch read, with the connections locked.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Request ids recorded before, with their outcome.
    pub seen_before: HashMap<RequestId, OutcomeKind>,
    pub tokens: HashMap<TokenHash, FoundToken>,
    /// The locked connections of those tokens.
    pub connections: HashMap<ConnectionId, ConnectionRow>,
    /// The active tokens of those connections.
    pub active_tokens: HashMap<ConnectionId, Vec<TokenId>>,
}

impl Snapshot {
    pub fn new(
        seen_before: Vec<(RequestId, OutcomeKind)>,
        tokens: Vec<FoundToken>,
        connections: Vec<ConnectionRow>,
        active_tokens: Vec<ActiveToken>,
    ) -> Self {
        let mut active: HashMap<ConnectionId, Vec<TokenId>> = HashMap::new();
        for token in active_tokens {
            active
                .entry(token.connection_id)
                .or_default()
                .push(token.token_id);
        }
        Self {
            seen_before: seen_before.into_iter().collect(),
            tokens: tokens
                .into_iter()
                .map(|token| (token.hash, token))
                .collect(),
            connections: connections.into_iter().map(|row| (row.id, row)).collect(),
            active_tokens: active,
        }
    }
}

/// One request's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    /// Seen before, in the database or earlier in this batch: changes nothing.
    Duplicate(OutcomeKind),
    /// A first delivery: its outcome, and the token it named if that exists.
    New {
        outcome: Outcome,
        token_id: Option<TokenId>,
    },
}

/// The decisions of a batch and the writes they need.
#[derive(Debug)]
pub struct Plan {
    /// One per request, in delivery order.
    pub decided: Vec<Decided>,
    pub disconnections: Vec<Disconnection>,
    /// How many tokens the revocation must revoke: the active tokens read
    /// under the lock. Anything else means the lock did not hold.
    pub expected_revoked: usize,
}

/// Decide every request in delivery order. `hashes[i]` is the hash of
/// `requests[i]`'s token. Of several requests for one connection the first
/// disconnects it and the others find it disconnected; a request id seen
/// before, or earlier in the batch, is a duplicate.
pub fn plan(requests: &[DisconnectRequest], hashes: &[TokenHash], mut snapshot: Snapshot) -> Plan {
    let mut decided = Vec::with_capacity(requests.len());
    let mut in_batch: HashMap<RequestId, OutcomeKind> = HashMap::new();
    let mut disconnections = Vec::new();
    let mut expected_revoked = 0;
    for (request, hash) in requests.iter().zip(hashes) {
        let request_id = request.request_id;
        if let Some(kind) = snapshot
            .seen_before
            .get(&request_id)
            .or_else(|| in_batch.get(&request_id))
        {
            decided.push(Decided::Duplicate(*kind));
            continue;
        }
        let (outcome, token_id) = match snapshot.tokens.get(hash) {
            None => (Outcome::UnknownToken, None),
            Some(found) => {
                let connection_id = found.connection_id;
                let active = snapshot
                    .connections
                    .get(&connection_id)
                    .is_some_and(|row| row.status == ConnectionStatus::Active);
                // Taken out once disconnected: later requests for it in the
                // batch find it gone, as they would find it disconnected.
                let outcome = match snapshot.connections.remove(&connection_id) {
                    Some(row) if active => {
                        disconnections.push(Disconnection {
                            connection_id,
                            request_id,
                        });
                        let mut revoked_token_ids = snapshot
                            .active_tokens
                            .remove(&connection_id)
                            .unwrap_or_default();
                        // Sorted, so the event lists the tokens in a stable order.
                        revoked_token_ids.sort_unstable();
                        expected_revoked += revoked_token_ids.len();
                        Outcome::Disconnected {
                            connection: row.into_ref(),
                            revoked_token_ids,
                        }
                    }
                    _ => Outcome::AlreadyDisconnected { connection_id },
                };
                (outcome, Some(found.token_id))
            }
        };
        in_batch.insert(request_id, outcome.kind());
        decided.push(Decided::New { outcome, token_id });
    }
    Plan {
        decided,
        disconnections,
        expected_revoked,
    }
}

/// What a plan writes: the audit rows and outcome events of the new requests,
/// and each request's result.
pub struct Records<'a> {
    pub rows: Vec<NewRequest<'a>>,
    pub events: Vec<OutcomeEvent>,
    pub processed: Vec<Processed>,
}

/// The records of decisions made by [`plan`] for `requests`, made `at`.
pub fn records(
    requests: &[DisconnectRequest],
    decided: Vec<Decided>,
    at: DateTime<Utc>,
) -> Records<'_> {
    let mut rows = Vec::new();
    let mut events = Vec::new();
    let mut processed = Vec::with_capacity(requests.len());
    for (request, decided) in requests.iter().zip(decided) {
        let (outcome, token_id) = match decided {
            Decided::Duplicate(kind) => {
                processed.push(Processed::AlreadyProcessed(kind));
                continue;
            }
            Decided::New { outcome, token_id } => (outcome, token_id),
        };
        let event = OutcomeEvent {
            traceparent: request.provenance.traceparent.clone(),
            request_published_at: request.provenance.published_at,
            ..OutcomeEvent::for_outcome(request.request_id, &outcome, at)
        };
        rows.push(NewRequest {
            request_id: request.request_id,
            outcome: outcome.kind(),
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
            event_id: event.event_id,
        });
        events.push(event);
        processed.push(Processed::Recorded(outcome));
    }
    Records {
        rows,
        events,
        processed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AccessToken;

    struct World {
        snapshot: Snapshot,
    }

    impl World {
        fn new() -> Self {
            Self {
                snapshot: Snapshot::default(),
            }
        }

        /// A connection with `tokens` active tokens; returns them.
        fn connection(&mut self, status: ConnectionStatus, tokens: usize) -> Vec<AccessToken> {
            let id = ConnectionId::generate();
            self.snapshot.connections.insert(
                id,
                ConnectionRow {
                    id,
                    client_id: "app".into(),
                    company_id: "C".into(),
                    provider_id: "gusto".into(),
                    status,
                },
            );
            (0..tokens)
                .map(|_| {
                    let token = AccessToken::generate();
                    let token_id = TokenId::generate();
                    self.snapshot.tokens.insert(
                        token.hash(),
                        FoundToken {
                            hash: token.hash(),
                            token_id,
                            connection_id: id,
                        },
                    );
                    if status == ConnectionStatus::Active {
                        self.snapshot
                            .active_tokens
                            .entry(id)
                            .or_default()
                            .push(token_id);
                    }
                    token
                })
                .collect()
        }

        fn plan(self, requests: &[DisconnectRequest]) -> Plan {
            let hashes: Vec<TokenHash> = requests.iter().map(|r| r.access_token.hash()).collect();
            plan(requests, &hashes, self.snapshot)
        }
    }

    fn request(token: &AccessToken) -> DisconnectRequest {
        DisconnectRequest::new(token.clone())
    }

    fn kinds(plan: &Plan) -> Vec<(bool, OutcomeKind)> {
        plan.decided
            .iter()
            .map(|decided| match decided {
                Decided::Duplicate(kind) => (true, *kind),
                Decided::New { outcome, .. } => (false, outcome.kind()),
            })
            .collect()
    }

    #[test]
    fn the_first_request_for_a_connection_disconnects_it_and_later_ones_find_it_disconnected() {
        let mut world = World::new();
        let siblings = world.connection(ConnectionStatus::Active, 3);
        let other = world.connection(ConnectionStatus::Active, 1);
        let requests = [
            request(&siblings[1]),
            request(&siblings[2]),
            request(&other[0]),
        ];
        let plan = world.plan(&requests);

        assert_eq!(
            kinds(&plan),
            [
                (false, OutcomeKind::Disconnected),
                (false, OutcomeKind::AlreadyDisconnected),
                (false, OutcomeKind::Disconnected),
            ]
        );
        assert_eq!(plan.expected_revoked, 4);
        assert_eq!(plan.disconnections.len(), 2);
        assert_eq!(plan.disconnections[0].request_id, requests[0].request_id);
        let Decided::New {
            outcome: Outcome::Disconnected {
                revoked_token_ids, ..
            },
            ..
        } = &plan.decided[0]
        else {
            panic!("disconnected");
        };
        assert_eq!(revoked_token_ids.len(), 3);
        assert!(
            revoked_token_ids.is_sorted(),
            "a stable order for the event"
        );
    }

    #[test]
    fn a_repeated_request_id_is_a_duplicate_of_its_first_outcome() {
        let mut world = World::new();
        let tokens = world.connection(ConnectionStatus::Active, 1);
        let first = request(&tokens[0]);
        let unknown = request(&AccessToken::generate());
        let seen = request(&tokens[0]);
        world
            .snapshot
            .seen_before
            .insert(seen.request_id, OutcomeKind::UnknownToken);
        let requests = [first.clone(), unknown.clone(), first, unknown, seen];
        let plan = world.plan(&requests);

        assert_eq!(
            kinds(&plan),
            [
                (false, OutcomeKind::Disconnected),
                (false, OutcomeKind::UnknownToken),
                (true, OutcomeKind::Disconnected),
                (true, OutcomeKind::UnknownToken),
                (true, OutcomeKind::UnknownToken),
            ]
        );
        let records = records(&requests, plan.decided, Utc::now());
        assert_eq!(records.rows.len(), 2, "one audit row per new request id");
        assert_eq!(records.events.len(), 2, "one event per new request id");
    }

    #[test]
    fn a_connection_disconnected_before_is_left_alone() {
        let mut world = World::new();
        let tokens = world.connection(ConnectionStatus::Disconnected, 2);
        let plan = world.plan(&[request(&tokens[0])]);

        assert_eq!(kinds(&plan), [(false, OutcomeKind::AlreadyDisconnected)]);
        assert!(plan.disconnections.is_empty());
        assert_eq!(plan.expected_revoked, 0);
    }
}
