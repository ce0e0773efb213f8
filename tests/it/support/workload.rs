//! A mixed stream of requests for the fault-injection tests, and the
//! invariants that must hold once the stream has been processed, whatever
//! broke in between.

use std::collections::{BTreeMap, BTreeSet};

use disconnect_worker::domain::{AccessToken, ConnectionId, IssuedToken, TokenId};
use disconnect_worker::service::{issue_token, TokenGrant};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::BasicProperties;
use rand::seq::SliceRandom;
use rand::Rng;
use uuid::Uuid;

use super::broker::EventTap;
use super::{eventually, TestContext};

/// How many copies of a bad message the dead-letter queue may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetters {
    /// One each: no fault could interrupt dead-lettering.
    Exactly,
    /// At least one each: the worker died, or lost its broker connection,
    /// between the broker's confirm of the dead-letter copy and its ack of
    /// the original, so the original came back and was dead-lettered again.
    AtLeastOnce,
}

/// The stream: which request ids target which token, in publish order.
pub struct Workload {
    pub tokens: Vec<IssuedToken>,
    /// Request id and the token it names (`None`: an unknown token). A
    /// request id may appear several times (redeliveries of one request).
    pub stream: Vec<(Uuid, Option<usize>)>,
    /// Bad messages mixed in, each to be dead-lettered.
    pub bad_messages: usize,
}

impl Workload {
    /// `connections` connections (across two applications and two
    /// providers, so isolation is exercised) with `tokens_per_connection`
    /// tokens each; about two thirds of the connections get one to three
    /// requests naming random tokens of theirs; some requests are repeated,
    /// some name unknown tokens, and one message in fifty is malformed.
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
                stream.push((request_id, Some(token)));
                if rng.random_ratio(1, 10) {
                    stream.push((request_id, Some(token)));
                }
            }
        }
        for _ in 0..connections / 10 {
            stream.push((Uuid::new_v4(), None));
        }
        stream.shuffle(&mut rng);
        let bad_messages = stream.len() / 50;
        Self {
            tokens,
            stream,
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

    pub fn distinct_requests(&self) -> BTreeSet<Uuid> {
        self.stream.iter().map(|(id, _)| *id).collect()
    }

    /// Publish the whole stream (and the bad messages) as fast as the broker
    /// confirms it.
    pub async fn publish(&self, test: &TestContext) {
        let channel = test.channel().await;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        let properties =
            BasicProperties::default().with_content_type(ShortString::from("application/json"));
        let unknown = AccessToken::generate();
        let every = (self.stream.len() / self.bad_messages.max(1)).max(1);
        let mut bad_sent = 0;
        for (index, (request_id, token)) in self.stream.iter().enumerate() {
            let token = token.map_or(unknown.expose(), |index| self.tokens[index].token.expose());
            let body = super::broker::request_body(*request_id, token);
            publish(&channel, test, &body, properties.clone()).await;
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
    /// Wait until every request of the workload has its outcome and every
    /// bad message is dead-lettered, then check the four invariants.
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

        // 2. Revoked exactly the targeted connections' tokens, each by the
        // one request that disconnected its connection.
        let mut targeted: BTreeMap<ConnectionId, BTreeSet<Uuid>> = BTreeMap::new();
        for (request, token) in &workload.stream {
            if let Some(token) = token {
                targeted
                    .entry(workload.tokens[*token].connection_id)
                    .or_default()
                    .insert(*request);
            }
        }
        let mut tokens_of: BTreeMap<ConnectionId, BTreeSet<TokenId>> = BTreeMap::new();
        for token in &workload.tokens {
            tokens_of
                .entry(token.connection_id)
                .or_default()
                .insert(token.token_id);
            let state = self.token_state(token.token_id).await;
            match targeted.get(&token.connection_id) {
                Some(candidates) => {
                    let by = state
                        .revoked_by_request
                        .expect("a targeted connection's token is revoked");
                    assert!(
                        candidates.contains(&by),
                        "revoked by a request for its own connection"
                    );
                    assert_eq!(outcomes[&by], "disconnected");
                }
                None => assert!(!state.revoked, "a connection no request named is untouched"),
            }
        }
        for (connection, candidates) in &targeted {
            let disconnecting: Vec<_> = candidates
                .iter()
                .filter(|id| outcomes[*id] == "disconnected")
                .collect();
            assert_eq!(
                disconnecting.len(),
                1,
                "connection {connection} disconnected exactly once"
            );
        }
        assert_eq!(self.active_tokens_on_disconnected_connections().await, 0);

        // 3. Every request has its outcome event (at least once), with the
        // right content; no event without a request.
        while events
            .received
            .iter()
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
        for event in &events.received {
            let request: Uuid = event.request_id().parse().expect("a request id");
            assert!(requests.contains(&request), "an event without a request");
            seen.insert(request);
            if event.routing_key == "connection.disconnected" {
                assert_eq!(outcomes[&request], "disconnected");
                let connection: ConnectionId =
                    serde_json::from_value(event.json["connection_id"].clone()).expect("an id");
                let revoked: BTreeSet<TokenId> =
                    serde_json::from_value(event.json["revoked_token_ids"].clone()).expect("ids");
                assert_eq!(
                    revoked, tokens_of[&connection],
                    "the event lists every sibling token"
                );
            } else {
                assert_eq!(event.json["reason"], outcomes[&request].as_str());
            }
        }
        assert_eq!(seen, requests, "every request has its event");

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
        eprintln!(
            "invariants hold: {} deliveries of {} request ids ({} unknown tokens), {} bad messages, \
             {} of {} connections disconnected, {} tokens, {} events received",
            workload.stream.len(),
            requests.len(),
            workload.stream.iter().filter(|(_, token)| token.is_none()).count(),
            workload.bad_messages,
            targeted.len(),
            tokens_of.len(),
            workload.tokens.len(),
            events.received.len(),
        );
    }
}
