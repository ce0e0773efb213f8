//! A mixed stream of requests for the fault-injection tests, and the
//! invariants that must hold once the stream has been processed, whatever
//! broke in between. Most requests name a token; a few name a whole
//! company, or a whole application, and race the single ones for the same
//! connections.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use disconnect_worker::db::schema::connections;
use disconnect_worker::domain::{
    AccessToken, ConnectionId, DisconnectRequest, EntityId, IssuedToken, RequestId, TokenId,
};
use disconnect_worker::service::{issue_token, TokenGrant};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::BasicProperties;
use rand::seq::SliceRandom;
use rand::Rng;
use uuid::Uuid;

use super::broker::EventTap;
use super::entities::{entities_of_token, named_entities};
use super::scopes::{client_request, company_request, BROKER_USER};
use super::{eventually, TestContext};

/// The provider ids of the entities of a third of the connections.
const ENTITIES: [&str; 3] = ["entity-a", "entity-b", "entity-c"];

/// Each connection's entity ids, from what issuing its tokens returned.
fn entities_by_connection(tokens: &[IssuedToken]) -> BTreeMap<ConnectionId, Vec<EntityId>> {
    let mut entities: BTreeMap<ConnectionId, Vec<EntityId>> = BTreeMap::new();
    for token in tokens {
        let known = entities.entry(token.connection_id).or_default();
        for (entity, _) in &token.entities {
            if !known.contains(&entity.entity_id) {
                known.push(entity.entity_id);
            }
        }
    }
    entities.retain(|_, ids| !ids.is_empty());
    entities
}

/// What one request of the stream names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Aim {
    /// The connection of the workload's token at this index.
    Token(usize),
    /// A token nobody issued.
    Unknown,
    /// Every connection of a company in an application.
    Company { client: String, company: String },
    /// Every connection of an application.
    Client { client: String },
    /// These entities (some maybe of no connection) of the connection of
    /// the workload's token at this index.
    Entities {
        token: usize,
        entity_ids: Vec<EntityId>,
    },
}

impl Aim {
    fn covers(&self, connection: &ConnectionRow) -> bool {
        match self {
            Self::Company { client, company } => {
                connection.client_id == *client && connection.company_id == *company
            }
            Self::Client { client } => connection.client_id == *client,
            Self::Token(_) | Self::Unknown | Self::Entities { .. } => false,
        }
    }

    fn is_wide(&self) -> bool {
        matches!(self, Self::Company { .. } | Self::Client { .. })
    }
}

/// A connection as the invariants read it.
#[derive(Debug, Queryable)]
struct ConnectionRow {
    id: ConnectionId,
    client_id: String,
    company_id: String,
    disconnected_by_request: Option<Uuid>,
}

/// How many copies of a bad message the dead-letter queue may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetters {
    /// One each: no fault could interrupt dead-lettering.
    Exactly,
    /// At least one each: the worker died, lost its broker connection, or
    /// closed it (its database unreachable), between the broker's confirm
    /// of the dead-letter copy and its ack of the original, so the original
    /// came back and was dead-lettered again.
    AtLeastOnce,
}

/// The stream: what each request id aims at, in publish order.
pub struct Workload {
    pub tokens: Vec<IssuedToken>,
    /// Request id and what it names. A request id may appear several times
    /// (redeliveries of one request); the copies are identical.
    pub stream: Vec<(Uuid, Aim)>,
    /// When the wide requests were asked (part of their body, so every
    /// copy is the same).
    asked_at: chrono::DateTime<chrono::Utc>,
    /// Bad messages mixed in, each to be dead-lettered.
    pub bad_messages: usize,
}

impl Workload {
    /// `connections` connections (across two applications and two
    /// providers, so isolation is exercised) with `tokens_per_connection`
    /// tokens each; about two thirds of the connections get one to three
    /// requests naming random tokens of theirs; some requests are repeated,
    /// some name unknown tokens, and one message in fifty is malformed. A
    /// few companies of `app-0` are disconnected whole (one of them twice,
    /// by one request id), one company that does not exist, and the whole
    /// of `app-1` once its first few hundred requests are in the stream.
    pub async fn prepare(
        test: &TestContext,
        connections: usize,
        tokens_per_connection: usize,
    ) -> Self {
        let grants: Vec<TokenGrant> = (0..connections)
            .flat_map(|connection| {
                (0..tokens_per_connection).map(move |user| TokenGrant {
                    client_id: format!("app-{}", connection % 2),
                    company_id: format!("company-{}", connection / 4),
                    provider_id: ["gusto", "justworks"][(connection / 2) % 2].into(),
                    user: Some(format!("user-{user}")),
                    products: vec![],
                    // A third of the connections have three entities.
                    entities: if connection % 3 == 0 && user == 0 {
                        ENTITIES.iter().map(ToString::to_string).collect()
                    } else {
                        vec![]
                    },
                })
            })
            .collect();
        let mut tokens = Vec::with_capacity(grants.len());
        for chunk in grants.chunks(64) {
            let issued = futures_util::future::join_all(chunk.iter().map(|grant| async {
                let mut conn = test.pool.get().await.expect("db");
                issue_token(&mut conn, grant).await.expect("issue")
            }))
            .await;
            tokens.extend(issued);
        }
        let mut rng = rand::rng();
        let mut stream = Vec::new();
        for connection in 0..connections {
            if rng.random_ratio(1, 3) {
                continue;
            }
            for _ in 0..rng.random_range(1..=3) {
                let token =
                    connection * tokens_per_connection + rng.random_range(0..tokens_per_connection);
                let request_id = Uuid::new_v4();
                stream.push((request_id, Aim::Token(token)));
                if rng.random_ratio(1, 10) {
                    stream.push((request_id, Aim::Token(token)));
                }
            }
        }
        for _ in 0..connections / 10 {
            stream.push((Uuid::new_v4(), Aim::Unknown));
        }
        // Entity requests on half the connections that have entities: most
        // name one entity (some twice, by one request id), some two, some
        // all three (which would end the connection: refused), some one
        // that is no entity of it (refused).
        let entities_of = entities_by_connection(&tokens);
        for connection in (0..connections).step_by(3) {
            if rng.random_ratio(1, 2) {
                continue;
            }
            let token =
                connection * tokens_per_connection + rng.random_range(0..tokens_per_connection);
            let Some(entities) = entities_of.get(&tokens[token].connection_id) else {
                continue;
            };
            let mut named = entities.clone();
            named.shuffle(&mut rng);
            let entity_ids = match rng.random_range(0..10) {
                0 => named,
                1 => vec![named[0], EntityId::from_uuid(Uuid::new_v4())],
                2 => named[..2].to_vec(),
                _ => named[..1].to_vec(),
            };
            let request_id = Uuid::new_v4();
            let aim = Aim::Entities { token, entity_ids };
            stream.push((request_id, aim.clone()));
            if rng.random_ratio(1, 10) {
                stream.push((request_id, aim));
            }
        }
        let companies = connections.div_ceil(4).max(1);
        for _ in 0..3 {
            let company = Aim::Company {
                client: "app-0".into(),
                company: format!("company-{}", rng.random_range(0..companies)),
            };
            stream.push((Uuid::new_v4(), company));
        }
        let (repeated, company) = stream[stream.len() - 1].clone();
        stream.push((repeated, company));
        stream.push((
            Uuid::new_v4(),
            Aim::Company {
                client: "app-0".into(),
                company: "company-none".into(),
            },
        ));
        stream.shuffle(&mut rng);
        // After the first requests, so it races single requests for the same
        // connections in both directions.
        let whole = (
            Uuid::new_v4(),
            Aim::Client {
                client: "app-1".into(),
            },
        );
        stream.insert(stream.len() / 3, whole);
        let bad_messages = stream.len() / 50;
        Self {
            tokens,
            stream,
            asked_at: chrono::Utc::now(),
            bad_messages,
        }
    }

    /// The same stream with no malformed message in it, for runs that must
    /// dead-letter nothing.
    pub fn without_bad_messages(mut self) -> Self {
        self.bad_messages = 0;
        self
    }

    /// The `index`th malformed message: not JSON, and unique.
    fn bad_message(index: usize) -> Vec<u8> {
        format!("{{\"request_id\": oops-{index}").into_bytes()
    }

    fn wide(&self, request_id: Uuid, request: DisconnectRequest) -> Vec<u8> {
        DisconnectRequest {
            request_id: RequestId::from_uuid(request_id),
            requested_at: Some(self.asked_at),
            ..request
        }
        .encode()
    }

    pub fn distinct_requests(&self) -> BTreeSet<Uuid> {
        self.stream.iter().map(|(id, _)| *id).collect()
    }

    /// Publish the whole stream (and the bad messages) as fast as the broker
    /// confirms it.
    pub async fn publish(&self, test: &TestContext) {
        self.publish_at(test, None).await;
    }

    /// Publish the stream at `per_second` requests a second; returns when
    /// each request id was first published.
    pub async fn publish_paced(
        &self,
        test: &TestContext,
        per_second: f64,
    ) -> BTreeMap<Uuid, std::time::Instant> {
        self.publish_at(test, Some(Duration::from_secs_f64(1.0 / per_second)))
            .await
    }

    /// Each message is confirmed before the next is sent, `interval` apart
    /// (or at once).
    async fn publish_at(
        &self,
        test: &TestContext,
        interval: Option<Duration>,
    ) -> BTreeMap<Uuid, std::time::Instant> {
        let mut published = BTreeMap::new();
        let mut ticks = interval.map(|interval| {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks
        });
        let channel = test.channel().await;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        let properties =
            BasicProperties::default().with_content_type(ShortString::from("application/json"));
        // Wide requests are authorized by who publishes them.
        let wide_properties = properties
            .clone()
            .with_user_id(ShortString::from(BROKER_USER));
        let unknown = AccessToken::generate();
        let every = (self.stream.len() / self.bad_messages.max(1)).max(1);
        let mut bad_sent = 0;
        for (index, (request_id, aim)) in self.stream.iter().enumerate() {
            if let Some(ticks) = &mut ticks {
                ticks.tick().await;
            }
            published
                .entry(*request_id)
                .or_insert_with(std::time::Instant::now);
            let (body, request_properties) = match aim {
                Aim::Token(token) => (
                    super::broker::request_body(*request_id, self.tokens[*token].token.expose()),
                    properties.clone(),
                ),
                Aim::Unknown => (
                    super::broker::request_body(*request_id, unknown.expose()),
                    properties.clone(),
                ),
                Aim::Company { client, company } => (
                    self.wide(*request_id, company_request(client, company)),
                    wide_properties.clone(),
                ),
                Aim::Client { client } => (
                    self.wide(*request_id, client_request(client)),
                    wide_properties.clone(),
                ),
                Aim::Entities { token, entity_ids } => (
                    DisconnectRequest {
                        request_id: RequestId::from_uuid(*request_id),
                        ..entities_of_token(&self.tokens[*token].token, entity_ids)
                    }
                    .encode(),
                    properties.clone(),
                ),
            };
            publish(&channel, test, &body, request_properties).await;
            if index % every == 0 && bad_sent < self.bad_messages {
                publish(
                    &channel,
                    test,
                    &Workload::bad_message(bad_sent),
                    properties.clone(),
                )
                .await;
                bad_sent += 1;
            }
        }
        assert_eq!(bad_sent, self.bad_messages);
        let returned = channel.wait_for_confirms().await.expect("confirms");
        assert!(returned.is_empty());
        published
    }

    /// For each request, how long from its first publication to its
    /// terminal event (the first copy): `connection.disconnected`,
    /// `token.revoked` or a rejection for a single request; for a company
    /// or application, its `disconnect.completed` or rejection (its
    /// `connection.disconnected` events come before). `None` for a request
    /// with no terminal event yet.
    pub fn waits(
        &self,
        published: &BTreeMap<Uuid, std::time::Instant>,
        events: &EventTap,
    ) -> BTreeMap<Uuid, Option<Duration>> {
        let aims: BTreeMap<Uuid, &Aim> = self.stream.iter().map(|(id, aim)| (*id, aim)).collect();
        published
            .iter()
            .map(|(request_id, at)| {
                let wide = aims.get(request_id).is_some_and(|aim| aim.is_wide());
                let terminal = events.for_request(*request_id).into_iter().find(|event| {
                    let key = event.routing_key.as_str();
                    key == "connection.disconnect_rejected"
                        || (wide && key == "disconnect.completed")
                        || (!wide && key != "disconnect.completed")
                });
                let wait = terminal.map(|event| event.received_at.saturating_duration_since(*at));
                (*request_id, wait)
            })
            .collect()
    }
}

async fn publish(
    channel: &lapin::Channel,
    test: &TestContext,
    body: &[u8],
    properties: BasicProperties,
) {
    channel
        .basic_publish(
            test.topology.request_exchange.as_str().into(),
            test.topology.request_routing_key.as_str().into(),
            BasicPublishOptions::default(),
            body,
            properties,
        )
        .await
        .expect("publish");
}

impl TestContext {
    /// Every connection of the test database, as the invariants read it.
    async fn connection_rows(&self) -> Vec<ConnectionRow> {
        let mut conn = self.pool.get().await.expect("db");
        connections::table
            .select((
                connections::id,
                connections::client_id,
                connections::company_id,
                connections::disconnected_by_request,
            ))
            .load(&mut conn)
            .await
            .expect("query")
    }

    /// Wait until every request of the workload has its terminal outcome
    /// and every bad message is dead-lettered, then check the invariants.
    pub async fn assert_invariants(
        &self,
        workload: &Workload,
        events: &mut EventTap,
        dead_letters: DeadLetters,
    ) {
        let requests = workload.distinct_requests();
        eventually("every request to have an outcome", || async {
            (self.recorded_request_count().await as usize >= requests.len()).then_some(())
        })
        .await;
        eventually("every fan-out to finish", || async {
            let counts = self.outcome_counts().await;
            (!counts.contains_key("in_progress")).then_some(())
        })
        .await;
        eventually("the outbox to drain", || async {
            (self.unpublished_event_count().await == 0).then_some(())
        })
        .await;
        // 1. Exactly one recorded outcome per request id, and no other.
        assert_eq!(self.recorded_request_count().await as usize, requests.len());
        let mut outcomes = BTreeMap::new();
        for request in &requests {
            outcomes.insert(
                *request,
                self.outcome_of(*request).await.expect("an outcome"),
            );
        }
        let aims: BTreeMap<Uuid, &Aim> =
            workload.stream.iter().map(|(id, aim)| (*id, aim)).collect();

        // 2. Every connection a request aimed at is disconnected, by exactly
        // one of those requests (a single one whose outcome says so, or a
        // wide one that completed), with all its tokens; every other
        // connection is untouched.
        let mut targeted: BTreeMap<ConnectionId, BTreeSet<Uuid>> = BTreeMap::new();
        for (request, aim) in &workload.stream {
            if let Aim::Token(token) = aim {
                targeted
                    .entry(workload.tokens[*token].connection_id)
                    .or_default()
                    .insert(*request);
            }
        }
        let rows = self.connection_rows().await;
        for row in &rows {
            for (request, aim) in &aims {
                if aim.covers(row) {
                    targeted.entry(row.id).or_default().insert(*request);
                }
            }
        }
        let disconnected_by: BTreeMap<ConnectionId, Option<Uuid>> = rows
            .iter()
            .map(|row| (row.id, row.disconnected_by_request))
            .collect();
        let mut tokens_of: BTreeMap<ConnectionId, BTreeSet<TokenId>> = BTreeMap::new();
        for token in &workload.tokens {
            tokens_of
                .entry(token.connection_id)
                .or_default()
                .insert(token.token_id);
            let state = self.token_state(token.token_id).await;
            match targeted.get(&token.connection_id) {
                Some(_) => assert_eq!(
                    state.revoked_by_request, disconnected_by[&token.connection_id],
                    "a targeted connection's tokens are revoked by the request that disconnected it"
                ),
                None => assert!(!state.revoked, "a connection no request named is untouched"),
            }
        }
        for (connection, candidates) in &targeted {
            let by = disconnected_by[connection].expect("a targeted connection is disconnected");
            assert!(
                candidates.contains(&by),
                "disconnected by a request aimed at it"
            );
            let expected = if aims[&by].is_wide() {
                "completed"
            } else {
                "disconnected"
            };
            assert_eq!(outcomes[&by], expected);
            let single_winners = candidates
                .iter()
                .filter(|id| !aims[*id].is_wide() && outcomes[*id] == "disconnected")
                .count();
            assert!(
                single_winners <= 1 && (single_winners == 1) != aims[&by].is_wide(),
                "connection {connection} disconnected exactly once"
            );
        }
        assert_eq!(self.active_tokens_on_disconnected_connections().await, 0);

        // 3. Every request has its terminal event (at least once), with the
        // right content, a wide one after the events of every connection it
        // disconnected; no event without a request.
        let terminal = |event: &super::broker::ReceivedEvent| {
            let request: Uuid = event.request_id().parse().unwrap_or_default();
            !(aims.get(&request).is_some_and(|aim| aim.is_wide())
                && event.routing_key == "connection.disconnected")
        };
        while events
            .received
            .iter()
            .filter(|event| terminal(event))
            .map(|event| event.request_id())
            .collect::<BTreeSet<_>>()
            .len()
            < requests.len()
        {
            if events.next_within(super::PATIENCE).await.is_none() {
                break;
            }
        }
        let mut seen = BTreeSet::new();
        let mut fanned_out: BTreeMap<Uuid, BTreeSet<ConnectionId>> = BTreeMap::new();
        for event in &events.received {
            let request: Uuid = event.request_id().parse().expect("a request id");
            assert!(requests.contains(&request), "an event without a request");
            match event.routing_key.as_str() {
                "connection.disconnected" => {
                    let connection: ConnectionId =
                        serde_json::from_value(event.json["connection_id"].clone()).expect("an id");
                    assert_eq!(
                        disconnected_by[&connection],
                        Some(request),
                        "by its request"
                    );
                    let revoked: BTreeSet<TokenId> =
                        serde_json::from_value(event.json["revoked_token_ids"].clone())
                            .expect("ids");
                    assert_eq!(
                        revoked, tokens_of[&connection],
                        "the event lists every sibling token"
                    );
                    if aims[&request].is_wide() {
                        fanned_out.entry(request).or_default().insert(connection);
                        continue;
                    }
                    assert_eq!(outcomes[&request], "disconnected");
                }
                "disconnect.completed" => {
                    assert_eq!(outcomes[&request], "completed");
                    let ends: Vec<&ConnectionId> = disconnected_by
                        .iter()
                        .filter(|(_, by)| **by == Some(request))
                        .map(|(id, _)| id)
                        .collect();
                    assert_eq!(event.json["connections"].as_u64(), Some(ends.len() as u64));
                    let tokens: usize = ends.iter().map(|id| tokens_of[*id].len()).sum();
                    assert_eq!(event.json["tokens"].as_u64(), Some(tokens as u64));
                    let before = fanned_out.get(&request).map_or(0, BTreeSet::len);
                    assert_eq!(before, ends.len(), "its connections' events come first");
                }
                "connection.entity_disconnected" => {
                    assert_eq!(outcomes[&request], "entities_disconnected");
                }
                _ => assert_eq!(event.json["reason"], outcomes[&request].as_str()),
            }
            seen.insert(request);
        }
        assert_eq!(seen, requests, "every request has its event");
        let entities = self
            .assert_entity_invariants(events, &aims, &outcomes, &disconnected_by)
            .await;

        // 4. The request queue is empty; the dead-letter queue holds exactly
        // the bad messages, each with its reason.
        let channel = self.channel().await;
        assert_eq!(
            self.ready_messages(&channel, &self.topology.request_queue)
                .await,
            0
        );
        let letters = self.wait_for_dead_letters(workload.bad_messages).await;
        let sent: BTreeSet<Vec<u8>> = (0..workload.bad_messages)
            .map(Workload::bad_message)
            .collect();
        let kept: BTreeSet<Vec<u8>> = letters.iter().map(|letter| letter.body.clone()).collect();
        assert_eq!(
            kept, sent,
            "every bad message, and nothing else, is dead-lettered"
        );
        if dead_letters == DeadLetters::Exactly {
            assert_eq!(
                letters.len(),
                workload.bad_messages,
                "each bad message once"
            );
        }
        assert!(letters
            .iter()
            .all(|letter| letter.code.as_deref() == Some("not_json")));
        let wide = workload
            .stream
            .iter()
            .filter(|(_, aim)| aim.is_wide())
            .count();
        eprintln!(
            "invariants hold: {} deliveries of {} request ids ({} unknown tokens, {} company or \
             client, {} for entities), {} bad messages, {} of {} connections disconnected, {} \
             tokens, {} of {} entities disconnected, {} events received",
            workload.stream.len(),
            requests.len(),
            workload
                .stream
                .iter()
                .filter(|(_, aim)| *aim == Aim::Unknown)
                .count(),
            wide,
            workload
                .stream
                .iter()
                .filter(|(_, aim)| matches!(aim, Aim::Entities { .. }))
                .count(),
            workload.bad_messages,
            targeted.len(),
            tokens_of.len(),
            workload.tokens.len(),
            entities.disconnected,
            entities.total,
            events.received.len(),
        );
    }

    /// Invariant 5, entities: none active on a disconnected connection;
    /// each one disconnected by exactly one request (alone, or with its
    /// connection), whose events, and only those, name it, once; an entity
    /// request either disconnected exactly what its events name, or was
    /// refused and changed nothing.
    async fn assert_entity_invariants(
        &self,
        events: &EventTap,
        aims: &BTreeMap<Uuid, &Aim>,
        outcomes: &BTreeMap<Uuid, String>,
        disconnected_by: &BTreeMap<ConnectionId, Option<Uuid>>,
    ) -> EntityCounts {
        let states = self.entity_states().await;
        // Distinct events (a re-sent copy has the same id) naming each entity.
        let mut named: BTreeMap<String, BTreeSet<(String, Uuid)>> = BTreeMap::new();
        for event in &events.received {
            let request: Uuid = event.request_id().parse().expect("a request id");
            for entity in named_entities(&event.json) {
                named
                    .entry(entity)
                    .or_default()
                    .insert((event.message_id.clone().unwrap_or_default(), request));
            }
        }
        let mut disconnected = 0;
        for (entity_id, state) in &states {
            let naming = named.remove(&entity_id.to_string()).unwrap_or_default();
            if disconnected_by[&state.connection_id].is_some() {
                assert_eq!(
                    state.status, "disconnected",
                    "no active entity on a disconnected connection"
                );
            }
            if state.status == "active" {
                assert!(naming.is_empty(), "no event names an active entity");
                continue;
            }
            disconnected += 1;
            let by = state.disconnected_by_request.expect("by a request");
            assert!(
                matches!(
                    outcomes[&by].as_str(),
                    "disconnected" | "completed" | "entities_disconnected"
                ),
                "ended by a request that says so: {}",
                outcomes[&by]
            );
            let requests: Vec<Uuid> = naming.iter().map(|(_, request)| *request).collect();
            assert_eq!(requests, [by], "exactly one event names it, its request's");
        }
        assert!(named.is_empty(), "events name only entities that exist");
        for (request, aim) in aims {
            let Aim::Entities { entity_ids, .. } = aim else {
                continue;
            };
            let outcome = outcomes[request].as_str();
            assert!(
                matches!(
                    outcome,
                    "entities_disconnected"
                        | "would_disconnect_connection"
                        | "unknown_entity"
                        | "entities_already_disconnected"
                        | "already_disconnected"
                ),
                "{outcome}"
            );
            let ended: BTreeSet<EntityId> = states
                .iter()
                .filter(|(_, state)| state.disconnected_by_request == Some(*request))
                .map(|(id, _)| *id)
                .collect();
            if outcome == "entities_disconnected" {
                assert!(!ended.is_empty() && ended.iter().all(|id| entity_ids.contains(id)));
            } else {
                assert!(ended.is_empty(), "a refused entity request changes nothing");
            }
        }
        EntityCounts {
            disconnected,
            total: states.len(),
        }
    }
}

/// How many entities the workload had, and how many ended.
struct EntityCounts {
    disconnected: usize,
    total: usize,
}
