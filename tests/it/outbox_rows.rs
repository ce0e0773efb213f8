//! Outbox rows that a person or another release changed: a reference whose
//! rows are gone or changed is set aside (listed, counted, never published
//! with other bytes) and holds up nothing else; labels a newer release
//! wrote are carried verbatim; a fan-out of a scope this release does not
//! know is left alone.

use std::time::Duration;

use disconnect_worker::domain::event::payload_digest;
use disconnect_worker::domain::{
    ConnectionRef, DisconnectionKey, EventId, OutcomeEvent, RequestId, Scope, StoredLabel,
};
use disconnect_worker::outbox::OutboxFormat;
use serde_json::Value;
use uuid::Uuid;

use crate::support::broker::{decoded_request, RawEvents};
use crate::support::process::succeeded;
use crate::support::scopes::{client_request, BROKER_USER};
use crate::support::{eventually, scraped, TestContext};

/// Every event on the exchange, raw: these tests publish labels the
/// checked-in schemas (this release's contract) do not list.
struct Received {
    events: RawEvents,
    received: Vec<Value>,
}

impl Received {
    async fn start(test: &TestContext) -> Self {
        Self {
            events: test.raw_events().await,
            received: Vec::new(),
        }
    }

    /// The events of `request_id` received so far, after waiting until
    /// `count` of them are in.
    async fn of_request(&mut self, request_id: Uuid, count: usize) -> Vec<Value> {
        let wanted = request_id.to_string();
        let mine = |received: &[Value]| {
            received
                .iter()
                .filter(|event| event["request_id"] == wanted.as_str())
                .cloned()
                .collect::<Vec<_>>()
        };
        let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
        while mine(&self.received).len() < count {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = tokio::time::timeout(left, self.events.next())
                .await
                .unwrap_or_else(|_| panic!("no {count} events for {wanted}"))
                .expect("an event");
            self.received.push(event);
        }
        mine(&self.received)
    }
}

/// Three disconnects committed and left to the relay; the connection row of
/// the second deleted by hand (an erasure, say), the third without a digest
/// (written by an earlier build). The relay publishes the
/// other two and sets the second aside: listed with its problem, counted in
/// the gauge, and gone from the outbox so it holds up nothing. Discarding
/// it empties the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_whose_connection_row_is_gone_is_set_aside_and_the_others_are_published() {
    let test = TestContext::new().await;
    let requests = test
        .leave_unpublished_events(&["C1", "C2", "C3"], "1 hour")
        .await;
    let gone = test.audit_event_id(requests[1]).await;
    test.execute(&format!(
        "DELETE FROM access_tokens WHERE revoked_by_request = '{0}'; \
         DELETE FROM connections WHERE disconnected_by_request = '{0}'",
        requests[1]
    ))
    .await;
    // The third as a build before migration 12 wrote it, with no digest:
    // rebuilt and published as before.
    test.execute(&format!(
        "UPDATE outbox_disconnections SET payload_digest = NULL WHERE request_id = '{}'",
        requests[2]
    ))
    .await;
    let mut events = Received::start(&test).await;
    let worker = test.spawn_worker_process(&[]);

    for request in [requests[0], requests[2]] {
        let event = &events.of_request(request, 1).await[0];
        assert_eq!(event["event_type"], "connection.disconnected");
    }
    eventually("the reference set aside", || async {
        (test.set_aside_count().await == 1).then_some(())
    })
    .await;
    assert_eq!(test.unpublished_event_count().await, 0);
    let listed = succeeded(test.command(&["outbox", "set-aside", "list", "--json"]));
    let listed: Vec<Value> = serde_json::from_slice(&listed.stdout).expect("a JSON array");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["event_id"], gone.to_string());
    assert_eq!(listed[0]["request_id"], requests[1].to_string());
    assert!(
        listed[0]["problem"]
            .as_str()
            .is_some_and(|problem| problem.contains("connection row is gone")),
        "{listed:?}"
    );
    let gauge = "disconnect_worker_outbox_set_aside_events";
    eventually("the gauge to count it", || async {
        (scraped(&worker, gauge).await == 1.0).then_some(())
    })
    .await;

    succeeded(test.command(&["outbox", "set-aside", "discard", "--all"]));
    assert_eq!(test.set_aside_count().await, 0);
    eventually("the gauge back to 0", || async {
        (scraped(&worker, gauge).await == 0.0).then_some(())
    })
    .await;
    assert!(
        events.of_request(requests[1], 0).await.is_empty(),
        "never published"
    );
}

/// A reference whose token rows were changed by hand would rebuild to other
/// bytes (a token missing from `revoked_token_ids`): it is set aside, not
/// published under its event id with other bytes. Once the rows are put
/// back, `retry` returns it to the outbox and it is published as it was
/// first built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_whose_rows_changed_is_set_aside_and_published_as_first_built_after_a_retry() {
    let test = TestContext::new().await;
    let first = test.issue("app", "C", "gusto", "user-a").await;
    let second = test.issue("app", "C", "gusto", "user-b").await;
    let request = decoded_request(Uuid::new_v4(), first.token.expose());
    let request_id = request.request_id.as_uuid();
    test.committed_and_not_published(&request, OutboxFormat::ByReference)
        .await;
    test.age_unpublished_events("1 hour").await;
    test.execute(&format!(
        "UPDATE access_tokens SET revoked_by_request = '{}' WHERE id = '{}'",
        Uuid::new_v4(),
        second.token_id
    ))
    .await;
    let mut events = Received::start(&test).await;
    let _worker = test.spawn_worker();

    eventually("the reference set aside", || async {
        (test.set_aside_count().await == 1).then_some(())
    })
    .await;
    assert!(
        events.of_request(request_id, 0).await.is_empty(),
        "not published with one token missing"
    );

    test.execute(&format!(
        "UPDATE access_tokens SET revoked_by_request = '{request_id}' WHERE id = '{}'",
        second.token_id
    ))
    .await;
    succeeded(test.command(&["outbox", "set-aside", "retry", "--all"]));
    let event = &events.of_request(request_id, 1).await[0];
    let mut revoked = vec![first.token_id.to_string(), second.token_id.to_string()];
    revoked.sort();
    assert_eq!(event["revoked_token_ids"], serde_json::json!(revoked));
    assert_eq!(test.set_aside_count().await, 0);
}

/// A reference as a newer release writes it, with a reason code this
/// release does not know (the contract lets a release add one), beside
/// ordinary ones: every one is published, the newer label as it was
/// written, and its bytes are the newer release's (its digest matches).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_with_a_reason_code_this_release_does_not_know_is_published_verbatim() {
    let test = TestContext::new().await;
    let requests = test
        .leave_unpublished_events(&["C1", "C2", "C3"], "1 hour")
        .await;
    let newer = requests[1];
    let event_id = test.audit_event_id(newer).await;
    let connection: (
        Uuid,
        String,
        String,
        String,
        Uuid,
        chrono::DateTime<chrono::Utc>,
    ) = {
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        use disconnect_worker::db::schema::{access_tokens, connections, outbox_disconnections};
        let mut conn = test.pool.get().await.expect("db");
        let (id, client, company, provider) = connections::table
            .filter(connections::disconnected_by_request.eq(newer))
            .select((
                connections::id,
                connections::client_id,
                connections::company_id,
                connections::provider_id,
            ))
            .first::<(Uuid, String, String, String)>(&mut conn)
            .await
            .expect("the connection");
        let token: Uuid = access_tokens::table
            .filter(access_tokens::revoked_by_request.eq(newer))
            .select(access_tokens::id)
            .first(&mut conn)
            .await
            .expect("the token");
        let at = outbox_disconnections::table
            .find(event_id)
            .select(outbox_disconnections::occurred_at)
            .first(&mut conn)
            .await
            .expect("the reference");
        (id, client, company, provider, token, at)
    };
    let (connection_id, client_id, company_id, provider_id, token_id, occurred_at) = connection;
    // What the newer release built, and the digest it stored.
    let built = OutcomeEvent::connection_disconnected(
        EventId::from_uuid(event_id),
        RequestId::from_uuid(newer),
        DisconnectionKey {
            connection_id: connection_id.into(),
            scope: StoredLabel::Known(Scope::Connection),
            reason_code: Some(StoredLabel::Newer("regulator_order".into())),
        },
        &ConnectionRef {
            connection_id: connection_id.into(),
            client_id,
            company_id,
            provider_id,
        },
        &[token_id.into()],
        &[],
        occurred_at,
    );
    test.execute(&format!(
        "UPDATE outbox_disconnections SET reason_code = 'regulator_order', \
         payload_digest = {} WHERE event_id = '{event_id}'",
        payload_digest(&built.payload)
    ))
    .await;
    let mut events = Received::start(&test).await;
    let _worker = test.spawn_worker();

    for request in &requests {
        events.of_request(*request, 1).await;
    }
    let published = &events.of_request(newer, 1).await[0];
    assert_eq!(published["reason_code"], "regulator_order");
    assert_eq!(
        serde_json::to_string(published).ok(),
        serde_json::to_string(&serde_json::from_str::<Value>(&built.payload).expect("json")).ok()
    );
    assert_eq!(test.set_aside_count().await, 0);
    test.wait_until_outbox_empty().await;
}

/// A fan-out a newer release accepted, of a scope this release does not
/// know, beside one of this release's whose reason code is a newer
/// release's: the known one is worked through, its events carrying that
/// reason code as written; the unknown one is left for a newer replica,
/// its application's connections untouched (read as a scope this release
/// knows, it could end connections the request never named).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_of_a_scope_this_release_does_not_know_is_left_for_a_newer_replica() {
    let test = TestContext::new().await;
    test.seed_connections("app-newer", "C", "gusto", 5, 1).await;
    test.seed_connections("app-known", "C", "gusto", 3, 1).await;
    let unknown = Uuid::new_v4();
    // As the newer release's migration would widen the scope checks.
    test.execute("ALTER TABLE disconnect_requests DROP CONSTRAINT disconnect_requests_scope_check")
        .await;
    test.execute(&format!(
        "INSERT INTO disconnect_requests (request_id, outcome, revoked_token_count, processed_at, \
           scope, client_id) VALUES ('{unknown}', 'in_progress', 0, now(), 'provider', 'app-newer'); \
         INSERT INTO disconnect_fanouts (request_id, scope, client_id, accepted_at, \
           created_before) VALUES ('{unknown}', 'provider', 'app-newer', now() - interval '1 minute', now())"
    ))
    .await;
    let mut events = Received::start(&test).await;
    let known = client_request("app-known");
    // Accepted by this release, then its reason code as a newer release
    // would have stored it.
    let policy = disconnect_worker::service::Policy {
        authorizations: disconnect_worker::domain::Authorizations::parse(
            "AUTHORIZED_PUBLISHERS",
            &format!("{BROKER_USER}:*"),
        )
        .expect("valid"),
        replay_window: None,
    };
    let mut conn = test.pool.get().await.expect("db");
    let accepted = disconnect_worker::service::record_disconnect(
        &mut conn,
        &disconnect_worker::domain::DisconnectRequest {
            provenance: disconnect_worker::domain::Provenance {
                publisher: Some(BROKER_USER.into()),
                ..Default::default()
            },
            ..known.clone()
        },
        &policy,
        OutboxFormat::ByReference,
    )
    .await
    .expect("recorded");
    drop(conn);
    assert_eq!(
        accepted.kind(),
        Some(disconnect_worker::domain::OutcomeKind::InProgress)
    );
    test.execute(&format!(
        "UPDATE disconnect_fanouts SET reason_code = 'regulator_order' WHERE request_id = '{}'",
        known.request_id
    ))
    .await;
    let _worker = test.spawn_worker();

    let known_events = events.of_request(known.request_id.as_uuid(), 4).await;
    assert!(known_events
        .iter()
        .all(|event| event["reason_code"] == "regulator_order"));
    assert_eq!(
        known_events
            .iter()
            .filter(|event| event["event_type"] == "disconnect.completed")
            .count(),
        1
    );
    // Several fan-out polls pass; the newer one is never taken.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(test.active_connections("app-newer", None).await, 5);
    assert!(test
        .fanout(unknown)
        .await
        .is_some_and(|fanout| fanout.finished_at.is_none() && fanout.connections == 0));
}
