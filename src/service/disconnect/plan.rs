//! Deciding a batch's outcomes from what the database held under the locks:
//! pure code, so the rule "exactly what processing the requests one at a
//! time, in delivery order, would do" is tested without a database.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Processed;
use crate::db::connections::ConnectionRow;
use crate::db::entities::{EntityDisconnection, EntityRow};
use crate::db::fanouts::NewFanout;
use crate::db::requests::NewRequest;
use crate::db::tokens::{ActiveToken, FoundToken, TokenRevocation};
use crate::db::Disconnection;
use crate::domain::{
    Authorizations, ConnectionId, ConnectionStatus, DisconnectRequest, EntityId, EntityRef,
    EntityStatus, EventContext, Outcome, OutcomeEvent, OutcomeKind, RequestId, StoredLabel, Target,
    TokenHash, TokenId,
};

/// The rules a batch is decided by besides the data.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Who may ask for what has no token (by id, a company, an application).
    pub authorizations: Authorizations,
    /// How old a company or client request may be: beyond it, its audit
    /// record may be purged, and a replay must not act again. `None`: any
    /// age (records are kept forever).
    pub replay_window: Option<Duration>,
}

impl Policy {
    fn expired(&self, request: &DisconnectRequest, now: DateTime<Utc>) -> bool {
        let (Some(window), Some(requested_at)) = (self.replay_window, request.requested_at) else {
            return false;
        };
        chrono::Duration::from_std(window)
            .ok()
            .and_then(|window| now.checked_sub_signed(window))
            .is_some_and(|oldest| requested_at < oldest)
    }
}

/// What the first round of a batch read, with the connections locked.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Request ids recorded before, with their outcome.
    /// Request ids recorded before, with their outcome as stored (a newer
    /// release's may be one this release does not know).
    pub seen_before: HashMap<RequestId, StoredLabel<OutcomeKind>>,
    pub tokens: HashMap<TokenHash, FoundToken>,
    /// The locked connections: of those tokens, and named by id.
    pub connections: HashMap<ConnectionId, ConnectionRow>,
    /// The active tokens of those connections.
    pub active_tokens: HashMap<ConnectionId, Vec<TokenId>>,
    /// The entities of those connections, in any state.
    pub entities: HashMap<ConnectionId, Vec<EntityRow>>,
}

impl Snapshot {
    pub fn new(
        seen_before: Vec<(RequestId, StoredLabel<OutcomeKind>)>,
        tokens: Vec<FoundToken>,
        connections: Vec<ConnectionRow>,
        active_tokens: Vec<ActiveToken>,
        entities: Vec<EntityRow>,
    ) -> Self {
        Self {
            seen_before: seen_before.into_iter().collect(),
            tokens: tokens
                .into_iter()
                .map(|token| (token.hash, token))
                .collect(),
            connections: connections.into_iter().map(|row| (row.id, row)).collect(),
            active_tokens: by_connection(active_tokens, |token| {
                (token.connection_id, token.token_id)
            }),
            entities: by_connection(entities, |entity| (entity.connection_id, entity)),
        }
    }
}

/// Rows grouped by their connection, each group in the rows' order.
pub(crate) fn by_connection<R, V>(
    rows: Vec<R>,
    split: impl Fn(R) -> (ConnectionId, V),
) -> HashMap<ConnectionId, Vec<V>> {
    let mut grouped: HashMap<ConnectionId, Vec<V>> = HashMap::new();
    for row in rows {
        let (connection_id, value) = split(row);
        grouped.entry(connection_id).or_default().push(value);
    }
    grouped
}

/// One request's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    /// Seen before, in the database or earlier in this batch: changes nothing.
    Duplicate(StoredLabel<OutcomeKind>),
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
    pub token_revocations: Vec<TokenRevocation>,
    /// How many tokens the revocations must revoke: the active tokens read
    /// under the lock. Anything else means the lock did not hold.
    pub expected_revoked: usize,
    /// Entities disconnected: alone, or with their connection. Every one
    /// was active under the lock, so all of them must change.
    pub entity_disconnections: Vec<EntityDisconnection>,
}

/// The batch as it is decided, request after request.
struct Deciding<'a> {
    snapshot: Snapshot,
    policy: &'a Policy,
    now: DateTime<Utc>,
    /// Tokens revoked alone earlier in the batch.
    revoked: HashSet<TokenId>,
    disconnections: Vec<Disconnection>,
    token_revocations: Vec<TokenRevocation>,
    expected_revoked: usize,
    entity_disconnections: Vec<EntityDisconnection>,
}

/// Decide every request in delivery order. `hashes[i]` is the hash of
/// `requests[i]`'s token, if it names one. Of several requests for one
/// connection the first disconnects it and the others find it
/// disconnected; a request id seen before, or earlier in the batch, is a
/// duplicate.
pub fn plan(
    requests: &[DisconnectRequest],
    hashes: &[Option<TokenHash>],
    snapshot: Snapshot,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Plan {
    let mut deciding = Deciding {
        snapshot,
        policy,
        now,
        revoked: HashSet::new(),
        disconnections: Vec::new(),
        token_revocations: Vec::new(),
        expected_revoked: 0,
        entity_disconnections: Vec::new(),
    };
    let mut decided = Vec::with_capacity(requests.len());
    let mut in_batch: HashMap<RequestId, StoredLabel<OutcomeKind>> = HashMap::new();
    for (request, hash) in requests.iter().zip(hashes) {
        let request_id = request.request_id;
        if let Some(kind) = deciding
            .snapshot
            .seen_before
            .get(&request_id)
            .or_else(|| in_batch.get(&request_id))
        {
            decided.push(Decided::Duplicate(kind.clone()));
            continue;
        }
        let (outcome, token_id) = deciding.decide(request, hash.as_ref());
        in_batch.insert(request_id, outcome.kind().into());
        decided.push(Decided::New { outcome, token_id });
    }
    Plan {
        decided,
        disconnections: deciding.disconnections,
        token_revocations: deciding.token_revocations,
        expected_revoked: deciding.expected_revoked,
        entity_disconnections: deciding.entity_disconnections,
    }
}

impl Deciding<'_> {
    fn decide(
        &mut self,
        request: &DisconnectRequest,
        hash: Option<&TokenHash>,
    ) -> (Outcome, Option<TokenId>) {
        let target = &request.target;
        if target.needs_publisher_authorization() {
            let allowed = target.client_id().is_some_and(|client_id| {
                self.policy
                    .authorizations
                    .allows(request.provenance.publisher.as_deref(), client_id)
            });
            if !allowed {
                return (Outcome::NotAuthorized, None);
            }
        }
        match target {
            Target::ConnectionOfToken { client_id, .. }
            | Target::Token { client_id, .. }
            | Target::EntitiesOfToken { client_id, .. } => {
                let found = hash
                    .and_then(|hash| self.snapshot.tokens.get(hash))
                    .copied()
                    .filter(|found| {
                        // With a client id, a token of another application
                        // is as good as unknown.
                        client_id.as_ref().is_none_or(|client_id| {
                            self.snapshot
                                .connections
                                .get(&found.connection_id)
                                .is_some_and(|row| row.client_id == client_id.as_str())
                        })
                    });
                let Some(found) = found else {
                    return (Outcome::UnknownToken, None);
                };
                let outcome = match target {
                    Target::Token { .. } => self.revoke_token(request.request_id, &found),
                    Target::EntitiesOfToken { entity_ids, .. } => self.disconnect_entities(
                        request.request_id,
                        found.connection_id,
                        entity_ids,
                    ),
                    _ => self.disconnect(request.request_id, found.connection_id),
                };
                (outcome, Some(found.token_id))
            }
            Target::Connection {
                client_id,
                connection_id,
            }
            | Target::EntitiesOfConnection {
                client_id,
                connection_id,
                ..
            } => {
                let ours = self
                    .snapshot
                    .connections
                    .get(connection_id)
                    .is_some_and(|row| row.client_id == client_id.as_str());
                if !ours {
                    return (Outcome::UnknownConnection, None);
                }
                let outcome = match target.entity_ids() {
                    Some(entity_ids) => {
                        self.disconnect_entities(request.request_id, *connection_id, entity_ids)
                    }
                    None => self.disconnect(request.request_id, *connection_id),
                };
                (outcome, None)
            }
            Target::Company { .. } | Target::Client { .. } => {
                if self.policy.expired(request, self.now) {
                    (Outcome::Expired, None)
                } else {
                    (Outcome::Accepted, None)
                }
            }
        }
    }

    /// A locked connection that is still active: neither disconnected
    /// before the batch nor earlier in it.
    fn active_connection(&mut self, connection_id: ConnectionId) -> Option<&mut ConnectionRow> {
        self.snapshot
            .connections
            .get_mut(&connection_id)
            .filter(|row| row.status == ConnectionStatus::Active)
    }

    /// Disconnect a locked connection, unless it is disconnected already
    /// (before, or earlier in the batch).
    fn disconnect(&mut self, request_id: RequestId, connection_id: ConnectionId) -> Outcome {
        let Some(row) = self.active_connection(connection_id) else {
            return Outcome::AlreadyDisconnected { connection_id };
        };
        // Later requests for it in the batch find it disconnected.
        row.status = ConnectionStatus::Disconnected;
        let connection = row.clone().into_ref();
        self.disconnections.push(Disconnection {
            connection_id,
            request_id,
        });
        let mut revoked_token_ids = self
            .snapshot
            .active_tokens
            .remove(&connection_id)
            .unwrap_or_default();
        // Sorted, so the event lists the tokens in a stable order.
        revoked_token_ids.sort_unstable();
        self.expected_revoked += revoked_token_ids.len();
        // Its active entities end with it.
        let ended_entities = end_entities(
            self.snapshot
                .entities
                .get_mut(&connection_id)
                .into_iter()
                .flatten()
                .filter(|entity| entity.status == EntityStatus::Active),
            request_id,
            &mut self.entity_disconnections,
        );
        Outcome::Disconnected {
            connection,
            revoked_token_ids,
            ended_entities,
        }
    }

    /// Disconnect named entities of a locked connection, all or none: every
    /// id must be an entity of it, and one entity at least must stay
    /// active. Those disconnected before are reported, not disconnected
    /// again.
    fn disconnect_entities(
        &mut self,
        request_id: RequestId,
        connection_id: ConnectionId,
        entity_ids: &[EntityId],
    ) -> Outcome {
        let Some(row) = self.active_connection(connection_id) else {
            return Outcome::AlreadyDisconnected { connection_id };
        };
        let connection = row.clone().into_ref();
        let entities = self.snapshot.entities.entry(connection_id).or_default();
        let (disconnect, already) = match decide_entities(entities, entity_ids) {
            EntityDecision::Unknown(unknown) => {
                return Outcome::UnknownEntity {
                    connection_id,
                    entity_ids: unknown,
                }
            }
            EntityDecision::WouldDisconnectConnection => {
                return Outcome::WouldDisconnectConnection { connection_id }
            }
            EntityDecision::AllAlreadyDisconnected(already) => {
                return Outcome::EntitiesAlreadyDisconnected {
                    connection_id,
                    entity_ids: already,
                }
            }
            EntityDecision::Disconnect {
                disconnect,
                already,
            } => (disconnect, already),
        };
        let disconnected = end_entities(
            entities
                .iter_mut()
                .filter(|entity| disconnect.contains(&entity.id)),
            request_id,
            &mut self.entity_disconnections,
        );
        Outcome::EntitiesDisconnected {
            connection,
            entities: disconnected,
            already_disconnected: already,
        }
    }

    /// Revoke one token of a locked connection, leaving the connection.
    fn revoke_token(&mut self, request_id: RequestId, found: &FoundToken) -> Outcome {
        let connection_id = found.connection_id;
        let Some(row) = self
            .snapshot
            .connections
            .get(&connection_id)
            .filter(|row| row.status == ConnectionStatus::Active)
        else {
            return Outcome::AlreadyDisconnected { connection_id };
        };
        if found.revoked || !self.revoked.insert(found.token_id) {
            return Outcome::AlreadyRevoked {
                token_id: found.token_id,
                connection_id,
            };
        }
        let connection = row.clone().into_ref();
        // A later disconnect of the connection in the batch revokes the
        // others only.
        if let Some(active) = self.snapshot.active_tokens.get_mut(&connection_id) {
            active.retain(|token_id| *token_id != found.token_id);
        }
        self.token_revocations.push(TokenRevocation {
            token_id: found.token_id,
            request_id,
        });
        self.expected_revoked += 1;
        Outcome::TokenRevoked {
            token_id: found.token_id,
            connection,
        }
    }
}

/// What a request naming entities does to a connection's entities: the
/// rules of Finch's `/disconnect-entity`, apart from the data, so the batch
/// and `disconnect --dry-run` decide alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntityDecision {
    /// These named ids are no entities of the connection: nothing changes.
    Unknown(Vec<EntityId>),
    /// No active entity would be left: nothing changes.
    WouldDisconnectConnection,
    /// Every named entity is disconnected already: nothing changes.
    AllAlreadyDisconnected(Vec<EntityId>),
    /// Disconnect these; those named that were disconnected before stay so.
    Disconnect {
        disconnect: Vec<EntityId>,
        already: Vec<EntityId>,
    },
}

/// Mark these entities disconnected by `request_id` in the snapshot, and
/// record each for the writes. Returns them as events name them, sorted so
/// the events list them in a stable order.
pub(crate) fn end_entities<'e>(
    entities: impl Iterator<Item = &'e mut EntityRow>,
    request_id: RequestId,
    disconnections: &mut Vec<EntityDisconnection>,
) -> Vec<EntityRef> {
    let mut ended: Vec<EntityRef> = entities
        .map(|entity| {
            entity.status = EntityStatus::Disconnected;
            disconnections.push(EntityDisconnection {
                entity_id: entity.id,
                request_id,
            });
            entity.to_ref()
        })
        .collect();
    ended.sort_unstable();
    ended
}

/// Decide on `named` entities of a connection that has `entities`.
pub fn decide_entities(entities: &[EntityRow], named: &[EntityId]) -> EntityDecision {
    let unknown: Vec<EntityId> = named
        .iter()
        .filter(|id| !entities.iter().any(|entity| entity.id == **id))
        .copied()
        .collect();
    if !unknown.is_empty() {
        return EntityDecision::Unknown(unknown);
    }
    let active = |entity: &&EntityRow| entity.status == EntityStatus::Active;
    let left = entities
        .iter()
        .filter(active)
        .filter(|entity| !named.contains(&entity.id))
        .count();
    if left == 0 {
        return EntityDecision::WouldDisconnectConnection;
    }
    let (mut disconnect, mut already): (Vec<EntityId>, Vec<EntityId>) = (Vec::new(), Vec::new());
    for entity in entities.iter().filter(|entity| named.contains(&entity.id)) {
        if entity.status == EntityStatus::Active {
            disconnect.push(entity.id);
        } else {
            already.push(entity.id);
        }
    }
    disconnect.sort_unstable();
    already.sort_unstable();
    if disconnect.is_empty() {
        return EntityDecision::AllAlreadyDisconnected(already);
    }
    EntityDecision::Disconnect {
        disconnect,
        already,
    }
}

/// What a plan writes: the audit rows, outcome events and fan-outs of the
/// new requests, and each request's result.
pub struct Records<'a> {
    pub rows: Vec<NewRequest<'a>>,
    pub events: Vec<OutcomeEvent>,
    pub fanouts: Vec<NewFanout<'a>>,
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
    let mut fanouts = Vec::new();
    let mut processed = Vec::with_capacity(requests.len());
    for (request, decided) in requests.iter().zip(decided) {
        let (outcome, token_id) = match decided {
            Decided::Duplicate(kind) => {
                processed.push(Processed::AlreadyProcessed(kind));
                continue;
            }
            Decided::New { outcome, token_id } => (outcome, token_id),
        };
        let target = &request.target;
        let client_id = target.client_id().map(|client_id| client_id.as_str());
        let company_id = match target {
            Target::Company { company_id, .. } => Some(company_id.as_str()),
            _ => None,
        };
        let context = EventContext {
            request_id: request.request_id,
            scope: target.scope(),
            reason_code: request.reason_code.map(StoredLabel::from),
            client_id,
            company_id,
        };
        let request_events: Vec<OutcomeEvent> = OutcomeEvent::for_outcome(&context, &outcome, at)
            .into_iter()
            .map(|event| OutcomeEvent {
                traceparent: request.provenance.traceparent.clone(),
                request_published_at: request.provenance.published_at,
                ..event
            })
            .collect();
        rows.push(NewRequest {
            request_id: request.request_id,
            outcome: outcome.kind(),
            connection_id: outcome.connection_id().or(target.connection_id()),
            token_id: token_id.or(outcome.token_id()),
            revoked_token_count: i32::try_from(outcome.revoked_tokens()).unwrap_or(i32::MAX),
            requested_at: request.requested_at,
            requested_by: request.requested_by.as_deref(),
            reason: request.reason.as_deref(),
            // The first (of several only for entities disconnected alone).
            event_id: request_events.first().map(|event| event.event_id),
            scope: target.scope(),
            reason_code: request.reason_code,
            client_id,
            company_id,
            publisher: request.provenance.publisher.as_deref(),
        });
        if outcome == Outcome::Accepted {
            if let Some(client_id) = client_id {
                fanouts.push(NewFanout {
                    request_id: request.request_id,
                    scope: target.scope(),
                    client_id,
                    company_id,
                    reason_code: request.reason_code,
                    traceparent: request.provenance.traceparent.as_deref(),
                    accepted_at: at,
                    created_before: request.requested_at.map_or(at, |asked| asked.min(at)),
                });
            }
        }
        events.extend(request_events);
        processed.push(Processed::Recorded(outcome));
    }
    Records {
        rows,
        events,
        fanouts,
        processed,
    }
}

#[cfg(test)]
mod tests;
