//! Concurrent requests, replicas, and tokens issued during a disconnect.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use disconnect_worker::domain::ConnectionId;
use disconnect_worker::service::{issue_token, TokenGrant};
use uuid::Uuid;

use crate::support::TestContext;

/// Two replicas, each processing many requests at once: every token of 20
/// connections is sent for disconnection at the same moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_for_one_connection_disconnect_it_exactly_once() {
    let test = TestContext::new().await;
    let mut tokens = Vec::new();
    for company in 0..20 {
        for user in 0..3 {
            tokens.push(
                test.issue(
                    "app",
                    &format!("company-{company}"),
                    "gusto",
                    &format!("user-{user}"),
                )
                .await,
            );
        }
    }
    let mut events = test.event_tap().await;
    let _replica_a = test.spawn_worker();
    let _replica_b = test.spawn_worker();
    let channel = test.channel().await;
    let mut request_of = BTreeMap::new();
    for token in &tokens {
        let request = test
            .request_disconnect(&channel, Uuid::new_v4(), token.token.expose())
            .await;
        request_of.insert(token.token_id, request);
    }
    events.wait_for_count(tokens.len()).await;

    let counts = test.outcome_counts().await;
    assert_eq!(counts.get("disconnected"), Some(&20), "{counts:?}");
    assert_eq!(counts.get("already_disconnected"), Some(&40), "{counts:?}");
    let mut disconnected_connections = BTreeSet::new();
    for event in events
        .received
        .iter()
        .filter(|event| event.routing_key == "connection.disconnected")
    {
        let connection = event.json["connection_id"]
            .as_str()
            .expect("id")
            .to_string();
        assert!(
            disconnected_connections.insert(connection),
            "one disconnected event per connection"
        );
        assert_eq!(
            event.json["revoked_token_ids"].as_array().map(Vec::len),
            Some(3)
        );
    }
    // Every token was revoked by the one request that disconnected its connection.
    for token in &tokens {
        let state = test.token_state(token.token_id).await;
        assert!(state.revoked);
        let by = state.revoked_by_request.expect("revoking request");
        assert_eq!(test.outcome_of(by).await.as_deref(), Some("disconnected"));
    }
    assert_eq!(test.active_tokens_on_disconnected_connections().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_for_two_connections_disconnect_both() {
    let test = TestContext::new().await;
    let first = test.issue("app", "company-c", "gusto", "user-a").await;
    let second = test.issue("app", "company-d", "gusto", "user-a").await;
    let (mut events, _worker, channel) = test.running().await;
    let (a, b) = tokio::join!(
        test.request_disconnect(&channel, Uuid::new_v4(), first.token.expose()),
        test.request_disconnect(&channel, Uuid::new_v4(), second.token.expose()),
    );

    assert_eq!(
        events.event_for(a).await.routing_key,
        "connection.disconnected"
    );
    assert_eq!(
        events.event_for(b).await.routing_key,
        "connection.disconnected"
    );
    assert!(!test.is_active(&first).await && !test.is_active(&second).await);
}

/// Many deliveries of one request id at once, on two replicas: one outcome,
/// one event, nothing dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_deliveries_of_one_request_id_record_one_outcome() {
    let test = TestContext::new().await;
    let token = test.issue("app", "company-c", "gusto", "user-a").await;
    let mut events = test.event_tap().await;
    let replica_a = test.spawn_worker();
    let replica_b = test.spawn_worker();
    let channel = test.channel().await;
    let request = Uuid::new_v4();
    for _ in 0..10 {
        test.request_disconnect(&channel, request, token.token.expose())
            .await;
    }
    events.event_for(request).await;
    test.wait_for_request_queue_empty().await;
    replica_a.stop().await.expect("clean stop");
    replica_b.stop().await.expect("clean stop");
    while events
        .next_within(Duration::from_millis(300))
        .await
        .is_some()
    {}

    assert_eq!(events.for_request(request).len(), 1);
    assert_eq!(test.recorded_request_count().await, 1);
    assert!(test.take_dead_letters().await.is_empty());
}

/// Tokens issued for a pair while its connection is being disconnected end
/// up either revoked with it, or on a new connection: never active on the
/// disconnected one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_issued_while_their_connection_is_disconnected_are_revoked_or_on_a_new_connection() {
    let test = TestContext::new().await;
    let first = test.issue("app", "company-c", "gusto", "user-a").await;
    let (mut events, _worker, channel) = test.running().await;

    let issuers = (0..4).map(|issuer| {
        let pool = test.pool.clone();
        tokio::spawn(async move {
            let mut issued = Vec::new();
            for round in 0..25 {
                let mut conn = pool.get().await.expect("db");
                let grant = TokenGrant {
                    client_id: "app".into(),
                    company_id: "company-c".into(),
                    provider_id: "gusto".into(),
                    user: Some(format!("issuer-{issuer}-{round}")),
                    products: vec![],
                    entities: vec![],
                };
                issued.push(issue_token(&mut conn, &grant).await.expect("issued"));
            }
            issued
        })
    });
    let issuers: Vec<_> = issuers.collect();
    let request = test
        .request_disconnect(&channel, Uuid::new_v4(), first.token.expose())
        .await;
    let mut issued = Vec::new();
    for issuer in issuers {
        issued.extend(issuer.await.expect("issuer task"));
    }
    let event = events.event_for(request).await;
    let disconnected = event.json["connection_id"]
        .as_str()
        .expect("id")
        .to_string();

    assert_eq!(disconnected, first.connection_id.to_string());
    for token in &issued {
        let state = test.token_state(token.token_id).await;
        if state.connection_id == first.connection_id {
            assert_eq!(
                state.revoked_by_request,
                Some(request),
                "a token on the old connection is revoked with it"
            );
        } else {
            assert!(!state.revoked, "a token on a new connection stays active");
            assert_eq!(test.connection_status(state.connection_id).await, "active");
        }
    }
    assert_eq!(test.active_tokens_on_disconnected_connections().await, 0);
    let new_connections: BTreeSet<ConnectionId> = issued
        .iter()
        .map(|token| token.connection_id)
        .filter(|id| *id != first.connection_id)
        .collect();
    assert!(
        new_connections.len() <= 1,
        "at most one active connection per pair: {new_connections:?}"
    );
}
