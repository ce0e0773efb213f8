//! Company and client requests worked through in chunks: exact counts when
//! single requests for the same connections arrive in the middle, and a
//! worker killed in the middle of a fan-out whose successor resumes it.

use disconnect_worker::outbox::OutboxFormat;
use std::collections::HashMap;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use disconnect_worker::db::schema::connections;
use disconnect_worker::db::tokens::{self, NewToken};
use disconnect_worker::domain::{
    AccessToken, Authorizations, ConnectionId, DisconnectRequest, OutcomeKind, TokenId,
};
use disconnect_worker::service::fanout::{self, Step};
use disconnect_worker::service::{record_disconnect, Policy, Processed};

use crate::support::scopes::{client_request, connection_request, BROKER_USER};
use crate::support::{eventually, TestContext};

const APP: &str = "app-a";

fn policy() -> Policy {
    Policy {
        authorizations: Authorizations::parse("AUTHORIZED_PUBLISHERS", "ops:*").expect("valid"),
        replay_window: None,
    }
}

/// As published by the broker user `ops`.
fn from_ops(mut request: DisconnectRequest) -> DisconnectRequest {
    request.provenance.publisher = Some("ops".into());
    request
}

impl TestContext {
    async fn connection_ids(&self, client_id: &str) -> Vec<ConnectionId> {
        let mut conn = self.pool.get().await.expect("db");
        connections::table
            .filter(connections::client_id.eq(client_id))
            .order(connections::id)
            .select(connections::id)
            .load(&mut conn)
            .await
            .expect("query")
    }

    /// A token whose plaintext the test knows, added to a connection.
    async fn add_token(&self, connection_id: ConnectionId) -> AccessToken {
        let token = AccessToken::generate();
        let mut conn = self.pool.get().await.expect("db");
        tokens::insert(
            &mut conn,
            &NewToken {
                id: TokenId::generate(),
                connection_id,
                token_hash: &token.hash(),
                token_prefix: "test",
                user_label: None,
                products: &[],
            },
        )
        .await
        .expect("inserting a token");
        token
    }

    async fn record(&self, request: &DisconnectRequest) -> Processed {
        let mut conn = self.pool.get().await.expect("db");
        record_disconnect(&mut conn, request, &policy(), OutboxFormat::ByReference)
            .await
            .expect("committed")
    }

    /// One fan-out step; when it waits for its events to be published,
    /// marks them published (nothing publishes in these tests) and steps
    /// again.
    async fn step(&self, chunk_size: i64) -> Step {
        let mut conn = self.pool.get().await.expect("db");
        let step = fanout::step(&mut conn, chunk_size, OutboxFormat::ByReference)
            .await
            .expect("a step");
        if let Step::Publishing { .. } = step {
            self.execute(
                "UPDATE outbox_events SET published_at = now() WHERE published_at IS NULL; \
                 DELETE FROM outbox_disconnections",
            )
            .await;
            return fanout::step(&mut conn, chunk_size, OutboxFormat::ByReference)
                .await
                .expect("a step");
        }
        step
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_requests_in_the_middle_of_a_fan_out_keep_every_count_exact() {
    let test = TestContext::new().await;
    test.seed_connections(APP, "company-", "gusto", 10, 2).await;
    let ids = test.connection_ids(APP).await;
    let third_token = test.add_token(ids[7]).await;
    let revoked_alone = test.add_token(ids[8]).await;

    let whole = from_ops(client_request(APP));
    assert_eq!(
        test.record(&whole).await.kind(),
        Some(OutcomeKind::InProgress)
    );
    let Step::Chunk { events, tokens, .. } = test.step(3).await else {
        panic!("a first chunk");
    };
    assert_eq!((events.len(), tokens), (3, 6), "ids[0..3]");

    // In the middle: a connection ahead of the cursor by id, one by its
    // token, a token of another revoked alone, and one behind the cursor.
    let by_id = from_ops(connection_request(APP, ids[5]));
    let by_token = DisconnectRequest::new(third_token);
    let alone = DisconnectRequest::for_target(disconnect_worker::domain::Target::Token {
        token: revoked_alone,
        client_id: None,
    });
    let behind = from_ops(connection_request(APP, ids[1]));
    assert_eq!(
        test.record(&by_id).await.kind(),
        Some(OutcomeKind::Disconnected)
    );
    assert_eq!(
        test.record(&by_token).await.kind(),
        Some(OutcomeKind::Disconnected)
    );
    assert_eq!(
        test.record(&alone).await.kind(),
        Some(OutcomeKind::TokenRevoked)
    );
    assert_eq!(
        test.record(&behind).await.kind(),
        Some(OutcomeKind::AlreadyDisconnected)
    );

    let finished = loop {
        match test.step(3).await {
            Step::Chunk { .. } => continue,
            Step::Finished { event, .. } => break event,
            other => panic!("unexpected step {other:?}"),
        }
    };
    let completed: serde_json::Value = serde_json::from_str(&finished.payload).expect("JSON");
    // Ten connections less the two disconnected by single requests; two
    // tokens each, the one revoked alone not counted again.
    assert_eq!(completed["connections"], 8);
    assert_eq!(completed["tokens"], 16);
    let whole_id = whole.request_id.as_uuid();
    assert_eq!(test.ended_by(whole_id).await, (8, 16));
    assert_eq!(test.ended_by(by_id.request_id.as_uuid()).await, (1, 2));
    assert_eq!(test.ended_by(by_token.request_id.as_uuid()).await, (1, 3));
    assert_eq!(test.ended_by(alone.request_id.as_uuid()).await, (0, 1));
    assert_eq!(test.active_tokens(APP).await, 0);
    assert!(matches!(test.step(3).await, Step::Idle), "nothing left");
    let audit = test.audit_row(whole_id).await.expect("recorded");
    assert_eq!(
        (audit.outcome.as_str(), audit.connections, audit.tokens),
        ("completed", Some(8), 16)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_made_after_the_request_was_asked_is_not_its_own() {
    let test = TestContext::new().await;
    test.seed_connections(APP, "company-", "gusto", 3, 1).await;
    let whole = from_ops(client_request(APP));
    test.record(&whole).await;
    // Authenticated after the request: a new connection, not the request's.
    let newcomer = test.issue(APP, "company-new", "gusto", "user-a").await;
    while !matches!(test.step(50).await, Step::Finished { .. }) {}
    assert!(test.is_active(&newcomer).await);
    assert_eq!(test.ended_by(whole.request_id.as_uuid()).await, (3, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_in_the_middle_of_a_client_fan_out_is_resumed_with_exact_counts() {
    let test = TestContext::new().await;
    test.seed_connections(APP, "company-", "gusto", 4000, 2)
        .await;
    test.seed_connections("app-b", "company-", "gusto", 20, 2)
        .await;
    let mut events = test.event_tap().await;
    let env = [
        ("AUTHORIZED_PUBLISHERS", "guest:*"),
        ("FANOUT_CHUNK_SIZE", "10"),
    ];
    let worker = test.spawn_worker_process(&env);
    let request = client_request(APP);
    let request_id = test
        .publish_request(&test.channel().await, &request, Some(BROKER_USER))
        .await;

    eventually("the fan-out to be under way", || async {
        let fanout = test.fanout(request_id).await?;
        (fanout.connections >= 500).then_some(())
    })
    .await;
    worker.signal("KILL");
    worker.wait().await;
    let at_kill = test.fanout(request_id).await.expect("its record");
    assert!(
        at_kill.finished_at.is_none() && at_kill.connections < 4000,
        "killed mid-way: {at_kill:?}"
    );
    // The committed counts are exactly the committed work.
    assert_eq!(
        test.ended_by(request_id).await,
        (at_kill.connections, at_kill.tokens)
    );

    let _successor = test.spawn_worker_process(&env);
    let completed = loop {
        let event = events
            .next_within(crate::support::PATIENCE)
            .await
            .expect("events keep coming until the fan-out completes");
        if event.routing_key == "disconnect.completed" {
            break event;
        }
    };
    assert_eq!(completed.request_id(), request_id.to_string());
    assert_eq!(
        (
            completed.json["connections"].as_i64(),
            completed.json["tokens"].as_i64()
        ),
        (Some(4000), Some(8000))
    );
    assert_eq!(
        test.ended_by(request_id).await,
        (4000, 8000),
        "nothing revoked twice"
    );
    assert_eq!(test.active_tokens(APP).await, 0);
    assert_eq!(
        test.active_tokens("app-b").await,
        40,
        "another application is untouched"
    );

    // Every connection has its event; a copy published again after the kill
    // is the same event (same id), never a second disconnect.
    let mut event_of: HashMap<String, String> = HashMap::new();
    for event in events.for_request(request_id) {
        if event.routing_key != "connection.disconnected" {
            continue;
        }
        let connection = event.json["connection_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let event_id = event.json["event_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let first = event_of
            .entry(connection)
            .or_insert_with(|| event_id.clone());
        assert_eq!(*first, event_id, "one event per connection");
    }
    assert_eq!(event_of.len(), 4000);
}
