//! Request ids are idempotency keys; disconnects are final.

use std::time::Duration;

use disconnect_worker::domain::AccessToken;
use uuid::Uuid;

use crate::support::{RunningWorker, TestContext};

/// One request at a time, in queue order, so a later request's event proves
/// the earlier deliveries were handled.
fn sequential_worker(test: &TestContext) -> RunningWorker {
    let mut settings = test.run_settings();
    settings.broker.prefetch = 1;
    RunningWorker::spawn(settings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_of_the_same_request_id_changes_nothing_and_sends_no_second_event() {
    let test = TestContext::new().await;
    let token = test.issue("app", "company-c", "gusto", "user-a").await;
    let mut events = test.event_tap().await;
    let _worker = sequential_worker(&test);
    let channel = test.channel().await;

    let request = Uuid::new_v4();
    for _ in 0..3 {
        test.request_disconnect(&channel, request, token.token.expose())
            .await;
    }
    let sentinel = test
        .request_disconnect(&channel, Uuid::new_v4(), AccessToken::generate().expose())
        .await;
    events.event_for(sentinel).await;

    assert_eq!(
        events.for_request(request).len(),
        1,
        "one event for the request id"
    );
    assert_eq!(
        test.recorded_request_count().await,
        2,
        "one record per request id"
    );
    assert_eq!(
        test.outcome_of(request).await.as_deref(),
        Some("disconnected")
    );
    assert_eq!(
        test.token_state(token.token_id).await.revoked_by_request,
        Some(request)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_sent_event_is_byte_identical_with_the_same_event_id() {
    let test = TestContext::new().await;
    // Several tokens and entities: the rebuilt lists must come in the same
    // order as the first copy's.
    let entities = ["entity-1", "entity-2", "entity-3"];
    let token = test
        .issue_with_entities("app", "company-c", "gusto", "user-a", &entities)
        .await;
    for user in ["user-b", "user-c", "user-d"] {
        test.issue_with_entities("app", "company-c", "gusto", user, &entities)
            .await;
    }
    let mut events = test.event_tap().await;
    let _worker = test.spawn_worker();

    // The event's reference, kept aside before the worker publishes and
    // deletes it: a `connection.disconnected` event is kept by reference,
    // and a re-send rebuilds its bytes from the rows.
    test.execute("CREATE TABLE kept_events AS TABLE outbox_disconnections WITH NO DATA")
        .await;
    test.execute(
        "CREATE FUNCTION keep_event() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN INSERT INTO kept_events SELECT (NEW).*; RETURN NEW; END $$",
    )
    .await;
    test.execute(
        "CREATE TRIGGER keep_event AFTER INSERT ON outbox_disconnections \
         FOR EACH ROW EXECUTE FUNCTION keep_event()",
    )
    .await;

    let request = test
        .request_disconnect(&test.channel().await, Uuid::new_v4(), token.token.expose())
        .await;
    let first = events.event_for(request).await;
    test.wait_until_outbox_empty().await;
    // As if the worker had died between the confirm and the deletion: the
    // row is back, and the relay publishes it again once it is older than
    // the relay delay.
    test.execute("DROP TRIGGER keep_event ON outbox_disconnections")
        .await;
    test.execute(
        "INSERT INTO outbox_disconnections SELECT * FROM kept_events; \
         UPDATE outbox_disconnections SET created_at = now() - interval '1 hour'",
    )
    .await;
    let second = loop {
        let event = events
            .next_within(crate::support::PATIENCE)
            .await
            .expect("the event again");
        if event.request_id() == request.to_string() {
            break event;
        }
    };

    assert_eq!(first.routing_key, "connection.disconnected");
    assert_eq!(
        first.json["revoked_token_ids"].as_array().map(Vec::len),
        Some(4)
    );
    assert_eq!(first.json["entities"].as_array().map(Vec::len), Some(3));
    // The copy published after the commit, from memory, and the copy the
    // relay rebuilt from the rows.
    assert_eq!(
        String::from_utf8_lossy(&first.raw),
        String::from_utf8_lossy(&second.raw)
    );
    assert_eq!(first.message_id, second.message_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_old_request_never_touches_the_new_connection() {
    let test = TestContext::new().await;
    let old = test.issue("app", "company-c", "gusto", "user-a").await;
    let mut events = test.event_tap().await;
    let _worker = sequential_worker(&test);
    let channel = test.channel().await;
    let first = test
        .request_disconnect(&channel, Uuid::new_v4(), old.token.expose())
        .await;
    events.event_for(first).await;

    // The employer authenticates again: a new connection with a new id.
    let new = test.issue("app", "company-c", "gusto", "user-a").await;
    assert_ne!(
        new.connection_id, old.connection_id,
        "no reconnect: a new connection"
    );

    // The old request replayed, and a new request with the old token.
    test.request_disconnect(&channel, first, old.token.expose())
        .await;
    let with_old_token = test
        .request_disconnect(&channel, Uuid::new_v4(), old.token.expose())
        .await;
    let event = events.event_for(with_old_token).await;

    assert_eq!(event.routing_key, "connection.disconnect_rejected");
    assert_eq!(event.json["reason"], "already_disconnected");
    assert_eq!(event.json["connection_id"], old.connection_id.to_string());
    assert_eq!(
        events.for_request(first).len(),
        1,
        "the replay sent no event"
    );
    assert!(
        test.is_active(&new).await,
        "the new connection is untouched"
    );
    assert_eq!(test.connection_status(new.connection_id).await, "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sibling_token_of_a_disconnected_connection_is_rejected_as_already_disconnected() {
    let test = TestContext::new().await;
    let first = test.issue("app", "company-c", "gusto", "user-a").await;
    let sibling = test.issue("app", "company-c", "gusto", "user-b").await;
    let mut events = test.event_tap().await;
    let _worker = sequential_worker(&test);
    let channel = test.channel().await;

    let disconnecting = test
        .request_disconnect(&channel, Uuid::new_v4(), first.token.expose())
        .await;
    let late = test
        .request_disconnect(&channel, Uuid::new_v4(), sibling.token.expose())
        .await;
    let event = events.event_for(late).await;

    assert_eq!(event.json["reason"], "already_disconnected");
    assert_eq!(
        test.outcome_of(late).await.as_deref(),
        Some("already_disconnected")
    );
    assert_eq!(
        test.token_state(sibling.token_id).await.revoked_by_request,
        Some(disconnecting),
        "revoked once, by the first request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_token_is_recorded_and_answered_with_a_rejection() {
    let test = TestContext::new().await;
    let bystander = test.issue("app", "company-c", "gusto", "user-a").await;
    let mut events = test.event_tap().await;
    let _worker = test.spawn_worker();

    let request = test
        .request_disconnect(
            &test.channel().await,
            Uuid::new_v4(),
            AccessToken::generate().expose(),
        )
        .await;
    let event = events.event_for(request).await;

    assert_eq!(event.routing_key, "connection.disconnect_rejected");
    assert_eq!(event.json["reason"], "unknown_token");
    assert!(event.json.get("connection_id").is_none());
    assert_eq!(
        test.outcome_of(request).await.as_deref(),
        Some("unknown_token")
    );
    assert!(test.is_active(&bystander).await);
    assert!(
        events
            .next_within(Duration::from_millis(300))
            .await
            .is_none(),
        "one event only"
    );
}

/// A request id a newer release recorded, with an outcome this release does
/// not know (a release may add one), delivered again here (a redelivery
/// during a rolling upgrade or after a rollback): it is done, so it is
/// acknowledged as a duplicate and changes nothing, rather than failing its
/// batch until RabbitMQ dead-letters it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_a_newer_release_recorded_with_an_outcome_unknown_here_is_a_duplicate() {
    let test = TestContext::new().await;
    let token = test.issue("app", "company-c", "gusto", "user-a").await;
    let other = test.issue("app", "company-d", "gusto", "user-a").await;
    let recorded = Uuid::new_v4();
    // As the newer release's migration would widen the check.
    test.execute(&format!(
        "ALTER TABLE disconnect_requests DROP CONSTRAINT disconnect_requests_outcome_check; \
         INSERT INTO disconnect_requests (request_id, outcome, revoked_token_count, \
           processed_at, scope) VALUES ('{recorded}', 'deferred', 0, now(), 'connection')"
    ))
    .await;
    let mut events = test.event_tap().await;
    let worker = test.spawn_worker_process(&[]);
    let channel = test.channel().await;

    test.request_disconnect(&channel, recorded, token.token.expose())
        .await;
    let after = test
        .request_disconnect(&channel, Uuid::new_v4(), other.token.expose())
        .await;
    events.event_for(after).await;
    let duplicates = "disconnect_worker_requests_total{outcome=\"duplicate\"}";
    crate::support::eventually("the redelivery acknowledged as a duplicate", || async {
        (crate::support::scraped(&worker, duplicates).await == 1.0).then_some(())
    })
    .await;

    assert!(test.is_active(&token).await, "nothing changed");
    assert!(events.for_request(recorded).is_empty(), "no event");
    assert_eq!(test.outcome_of(recorded).await.as_deref(), Some("deferred"));
    test.wait_for_request_queue_empty().await;
    assert_eq!(
        test.ready_messages(&channel, &test.topology.dead_letter_queue)
            .await,
        0
    );
}
