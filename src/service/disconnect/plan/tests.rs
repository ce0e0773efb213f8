use super::*;
use crate::domain::{AccessToken, ClientId, CompanyId, ReasonCode, Scope};

const APP: &str = "app";

struct World {
    snapshot: Snapshot,
    policy: Policy,
}

impl World {
    fn new() -> Self {
        Self {
            snapshot: Snapshot::default(),
            policy: Policy {
                authorizations: Authorizations::parse("test", "ops:app").expect("valid"),
                replay_window: Some(Duration::from_secs(3600)),
            },
        }
    }

    /// A connection of `client_id` with `tokens` active tokens.
    fn connection_of(
        &mut self,
        client_id: &str,
        status: ConnectionStatus,
        tokens: usize,
    ) -> (ConnectionId, Vec<AccessToken>) {
        let id = ConnectionId::generate();
        self.snapshot.connections.insert(
            id,
            ConnectionRow {
                id,
                client_id: client_id.into(),
                company_id: "C".into(),
                provider_id: "gusto".into(),
                status,
            },
        );
        let tokens = (0..tokens)
            .map(|_| {
                let token = AccessToken::generate();
                let token_id = TokenId::generate();
                self.snapshot.tokens.insert(
                    token.hash(),
                    FoundToken {
                        hash: token.hash(),
                        token_id,
                        connection_id: id,
                        revoked: status != ConnectionStatus::Active,
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
            .collect();
        (id, tokens)
    }

    /// A connection of the application with `tokens` active tokens.
    fn connection(&mut self, status: ConnectionStatus, tokens: usize) -> Vec<AccessToken> {
        self.connection_of(APP, status, tokens).1
    }

    fn plan(&self, requests: &[DisconnectRequest]) -> Plan {
        let hashes: Vec<Option<TokenHash>> = requests
            .iter()
            .map(|request| request.target.token().map(AccessToken::hash))
            .collect();
        let snapshot = Snapshot {
            seen_before: self.snapshot.seen_before.clone(),
            tokens: self.snapshot.tokens.clone(),
            connections: self.snapshot.connections.clone(),
            active_tokens: self.snapshot.active_tokens.clone(),
            entities: self.snapshot.entities.clone(),
        };
        plan(requests, &hashes, snapshot, &self.policy, Utc::now())
    }

    /// A connection of the application with one token and these entities
    /// (`true`: active).
    fn with_entities(&mut self, active: &[bool]) -> (ConnectionId, AccessToken, Vec<EntityId>) {
        let (id, tokens) = self.connection_of(APP, ConnectionStatus::Active, 1);
        let ids: Vec<EntityId> = active
            .iter()
            .enumerate()
            .map(|(index, active)| {
                let entity_id = EntityId::generate();
                self.snapshot
                    .entities
                    .entry(id)
                    .or_default()
                    .push(EntityRow {
                        id: entity_id,
                        connection_id: id,
                        provider_entity_id: format!("ein-{index}"),
                        status: if *active {
                            EntityStatus::Active
                        } else {
                            EntityStatus::Disconnected
                        },
                    });
                entity_id
            })
            .collect();
        (id, tokens[0].clone(), ids)
    }
}

fn entities_of(token: &AccessToken, entity_ids: &[EntityId]) -> DisconnectRequest {
    DisconnectRequest::for_target(Target::EntitiesOfToken {
        token: token.clone(),
        client_id: None,
        entity_ids: entity_ids.to_vec(),
    })
}

fn client() -> ClientId {
    ClientId::parse(APP.into()).expect("valid")
}

fn request(token: &AccessToken) -> DisconnectRequest {
    DisconnectRequest::new(token.clone())
}

fn revoke_alone(token: &AccessToken) -> DisconnectRequest {
    DisconnectRequest::for_target(Target::Token {
        token: token.clone(),
        client_id: None,
    })
}

/// A request naming no token, published by `publisher`.
fn published_by(target: Target, publisher: Option<&str>) -> DisconnectRequest {
    let mut request = DisconnectRequest::for_target(target);
    request.provenance.publisher = publisher.map(str::to_string);
    request
}

fn kinds(plan: &Plan) -> Vec<(bool, OutcomeKind)> {
    plan.decided
        .iter()
        .map(|decided| match decided {
            Decided::Duplicate(kind) => (true, kind.known().expect("a known outcome")),
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
        .insert(seen.request_id, OutcomeKind::UnknownToken.into());
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

#[test]
fn a_token_revoked_alone_leaves_its_connection_and_a_later_disconnect_takes_only_the_others() {
    let mut world = World::new();
    let tokens = world.connection(ConnectionStatus::Active, 3);
    let requests = [
        revoke_alone(&tokens[0]),
        revoke_alone(&tokens[0]),
        request(&tokens[1]),
    ];
    let plan = world.plan(&requests);

    assert_eq!(
        kinds(&plan),
        [
            (false, OutcomeKind::TokenRevoked),
            (false, OutcomeKind::AlreadyRevoked),
            (false, OutcomeKind::Disconnected),
        ]
    );
    assert_eq!(plan.token_revocations.len(), 1);
    let Decided::New {
        outcome: Outcome::Disconnected {
            revoked_token_ids, ..
        },
        ..
    } = &plan.decided[2]
    else {
        panic!("disconnected");
    };
    assert_eq!(revoked_token_ids.len(), 2, "the other two tokens");
    assert_eq!(plan.expected_revoked, 3);
}

#[test]
fn a_token_revoked_before_is_already_revoked_and_one_of_a_disconnected_connection_is_already_disconnected(
) {
    let mut world = World::new();
    let tokens = world.connection(ConnectionStatus::Active, 2);
    let hash = tokens[0].hash();
    if let Some(found) = world.snapshot.tokens.get_mut(&hash) {
        found.revoked = true;
    }
    let gone = world.connection(ConnectionStatus::Disconnected, 1);
    let plan = world.plan(&[revoke_alone(&tokens[0]), revoke_alone(&gone[0])]);
    assert_eq!(
        kinds(&plan),
        [
            (false, OutcomeKind::AlreadyRevoked),
            (false, OutcomeKind::AlreadyDisconnected),
        ]
    );
    assert!(plan.token_revocations.is_empty());
}

#[test]
fn a_token_named_with_another_application_is_unknown() {
    let mut world = World::new();
    let tokens = world.connection(ConnectionStatus::Active, 1);
    let wrong = DisconnectRequest::for_target(Target::ConnectionOfToken {
        token: tokens[0].clone(),
        client_id: Some(ClientId::parse("other-app".into()).expect("valid")),
    });
    let right = DisconnectRequest::for_target(Target::ConnectionOfToken {
        token: tokens[0].clone(),
        client_id: Some(client()),
    });
    let plan = world.plan(&[wrong, right]);
    assert_eq!(
        kinds(&plan),
        [
            (false, OutcomeKind::UnknownToken),
            (false, OutcomeKind::Disconnected),
        ]
    );
}

#[test]
fn a_connection_by_id_needs_an_authorized_publisher_and_its_own_application() {
    let mut world = World::new();
    let (ours, _) = world.connection_of(APP, ConnectionStatus::Active, 2);
    let (theirs, _) = world.connection_of("other-app", ConnectionStatus::Active, 1);
    let by_id = |connection_id, publisher| {
        published_by(
            Target::Connection {
                client_id: client(),
                connection_id,
            },
            publisher,
        )
    };
    let requests = [
        by_id(ours, None),
        by_id(ours, Some("billing")),
        by_id(theirs, Some("ops")),
        by_id(ConnectionId::generate(), Some("ops")),
        by_id(ours, Some("ops")),
        by_id(ours, Some("ops")),
    ];
    let plan = world.plan(&requests);
    assert_eq!(
        kinds(&plan),
        [
            (false, OutcomeKind::NotAuthorized),
            (false, OutcomeKind::NotAuthorized),
            (false, OutcomeKind::UnknownConnection),
            (false, OutcomeKind::UnknownConnection),
            (false, OutcomeKind::Disconnected),
            (false, OutcomeKind::AlreadyDisconnected),
        ]
    );
    assert_eq!(plan.expected_revoked, 2);
}

#[test]
fn a_company_or_client_request_is_accepted_as_a_fan_out_with_no_event_yet() {
    let world = World::new();
    let company = published_by(
        Target::Company {
            client_id: client(),
            company_id: CompanyId::parse("C".into()).expect("valid"),
        },
        Some("ops"),
    );
    let mut whole = published_by(
        Target::Client {
            client_id: client(),
        },
        Some("ops"),
    );
    whole.reason_code = Some(ReasonCode::CustomerOffboarded);
    let refused = published_by(
        Target::Client {
            client_id: client(),
        },
        Some("billing"),
    );
    let requests = [company, whole, refused];
    let plan = world.plan(&requests);
    assert_eq!(
        kinds(&plan),
        [
            (false, OutcomeKind::InProgress),
            (false, OutcomeKind::InProgress),
            (false, OutcomeKind::NotAuthorized),
        ]
    );
    let now = Utc::now();
    let records = records(&requests, plan.decided, now);
    assert_eq!(records.fanouts.len(), 2);
    assert_eq!(records.fanouts[0].company_id, Some("C"));
    assert_eq!(records.fanouts[1].scope, Scope::Client);
    assert_eq!(
        records.fanouts[1].reason_code,
        Some(ReasonCode::CustomerOffboarded)
    );
    assert!(
        records
            .fanouts
            .iter()
            .all(|fanout| fanout.created_before <= now),
        "only connections that existed when it was asked are its own"
    );
    assert_eq!(
        records.events.len(),
        1,
        "only the refusal has its event now"
    );
    assert_eq!(records.rows[0].event_id, None);
    assert_eq!(records.rows[0].outcome, OutcomeKind::InProgress);
}

#[test]
fn a_fan_out_older_than_the_replay_window_is_expired() {
    let world = World::new();
    let mut old = published_by(
        Target::Client {
            client_id: client(),
        },
        Some("ops"),
    );
    old.requested_at = Some(Utc::now() - chrono::Duration::hours(2));
    let plan = world.plan(&[old]);
    assert_eq!(kinds(&plan), [(false, OutcomeKind::Expired)]);
}

#[test]
fn named_entities_are_disconnected_and_the_connection_and_its_tokens_stay() {
    let mut world = World::new();
    let (connection_id, token, entities) = world.with_entities(&[true, true, true]);
    let plan = world.plan(&[entities_of(&token, &entities[..2])]);

    assert_eq!(kinds(&plan), [(false, OutcomeKind::EntitiesDisconnected)]);
    assert!(plan.disconnections.is_empty() && plan.expected_revoked == 0);
    let disconnected: Vec<EntityId> = plan
        .entity_disconnections
        .iter()
        .map(|d| d.entity_id)
        .collect();
    assert_eq!(disconnected, entities[..2]);
    let Decided::New {
        outcome: Outcome::EntitiesDisconnected { connection, .. },
        ..
    } = &plan.decided[0]
    else {
        panic!("{:?}", plan.decided)
    };
    assert_eq!(connection.connection_id, connection_id);
}

#[test]
fn an_id_that_is_no_entity_of_the_connection_rejects_the_whole_request() {
    let mut world = World::new();
    let (_, token, entities) = world.with_entities(&[true, true]);
    let (_, _, elsewhere) = world.with_entities(&[true, true]);
    let stranger = EntityId::generate();
    let plan = world.plan(&[entities_of(&token, &[entities[0], elsewhere[0], stranger])]);

    assert_eq!(kinds(&plan), [(false, OutcomeKind::UnknownEntity)]);
    assert!(plan.entity_disconnections.is_empty(), "nothing changes");
    let Decided::New {
        outcome: Outcome::UnknownEntity { entity_ids, .. },
        ..
    } = &plan.decided[0]
    else {
        panic!("{:?}", plan.decided)
    };
    assert_eq!(entity_ids, &[elsewhere[0], stranger]);
}

#[test]
fn a_request_that_would_leave_no_active_entity_is_refused_and_changes_nothing() {
    let mut world = World::new();
    let (_, token, entities) = world.with_entities(&[true, false, true]);
    let plan = world.plan(&[entities_of(&token, &[entities[0], entities[2]])]);
    assert_eq!(
        kinds(&plan),
        [(false, OutcomeKind::WouldDisconnectConnection)]
    );
    assert!(plan.entity_disconnections.is_empty());
}

#[test]
fn entities_already_disconnected_are_reported_not_disconnected_twice() {
    let mut world = World::new();
    let (_, token, entities) = world.with_entities(&[false, true, true]);
    let partly = world.plan(&[entities_of(&token, &entities[..2])]);
    let Decided::New {
        outcome:
            Outcome::EntitiesDisconnected {
                entities: disconnected,
                already_disconnected,
                ..
            },
        ..
    } = &partly.decided[0]
    else {
        panic!("{:?}", partly.decided)
    };
    assert_eq!(disconnected.len(), 1);
    assert_eq!(disconnected[0].entity_id, entities[1]);
    assert_eq!(already_disconnected, &[entities[0]]);
    assert_eq!(partly.entity_disconnections.len(), 1);

    let only_old = world.plan(&[entities_of(&token, &entities[..1])]);
    assert_eq!(
        kinds(&only_old),
        [(false, OutcomeKind::EntitiesAlreadyDisconnected)]
    );
}

#[test]
fn in_one_batch_a_second_entity_request_sees_the_first_and_a_full_disconnect_ends_the_rest() {
    let mut world = World::new();
    let (_, token, entities) = world.with_entities(&[true, true, true]);
    let requests = [
        entities_of(&token, &entities[..1]),
        // With the first done, this would leave none active.
        entities_of(&token, &entities[1..]),
        entities_of(&token, &entities[..1]),
        request(&token),
        entities_of(&token, &entities[1..2]),
    ];
    let plan = world.plan(&requests);
    assert_eq!(
        kinds(&plan),
        [
            (false, OutcomeKind::EntitiesDisconnected),
            (false, OutcomeKind::WouldDisconnectConnection),
            (false, OutcomeKind::EntitiesAlreadyDisconnected),
            (false, OutcomeKind::Disconnected),
            (false, OutcomeKind::AlreadyDisconnected),
        ]
    );
    let Decided::New {
        outcome: Outcome::Disconnected { ended_entities, .. },
        ..
    } = &plan.decided[3]
    else {
        panic!("{:?}", plan.decided)
    };
    let ended: Vec<EntityId> = ended_entities.iter().map(|e| e.entity_id).collect();
    assert_eq!(ended, entities[1..], "the ones still active end with it");
    assert_eq!(plan.entity_disconnections.len(), 3, "each entity once");
}

#[test]
fn entities_of_a_connection_by_id_need_the_publisher_s_grant() {
    let mut world = World::new();
    let (connection_id, _, entities) = world.with_entities(&[true, true]);
    let target = Target::EntitiesOfConnection {
        client_id: client(),
        connection_id,
        entity_ids: entities[..1].to_vec(),
    };
    let refused = world.plan(&[published_by(target.clone(), Some("billing"))]);
    assert_eq!(kinds(&refused), [(false, OutcomeKind::NotAuthorized)]);
    let requests = [published_by(target, Some("ops"))];
    let allowed = world.plan(&requests);
    assert_eq!(
        kinds(&allowed),
        [(false, OutcomeKind::EntitiesDisconnected)]
    );
    let records = records(&requests, allowed.decided, Utc::now());
    assert_eq!(records.events.len(), 1);
    assert_eq!(
        records.events[0].routing_key,
        "connection.entity_disconnected"
    );
    assert_eq!(records.rows[0].event_id, Some(records.events[0].event_id));
}
