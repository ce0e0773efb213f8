//! Several requests per transaction keep every guarantee of one request per
//! transaction.

use disconnect_worker::outbox::OutboxFormat;
use std::time::Duration;

use disconnect_worker::domain::{AccessToken, Outcome, OutcomeKind};
use disconnect_worker::service::{record_disconnects, Policy, Processed};
use uuid::Uuid;

use crate::support::broker::decoded_request;
use crate::support::{RunningWorker, TestContext};

fn request_with_reason(id: Uuid, token: &str, reason: &str) -> Vec<u8> {
    serde_json::to_vec(
        &serde_json::json!({"request_id": id, "access_token": token, "reason": reason}),
    )
    .expect("json")
}

/// A worker that gathers whatever arrives within 300 ms into one batch, so
/// the requests a test publishes together are processed together.
fn batching_worker(test: &TestContext) -> RunningWorker {
    let mut settings = test.run_settings();
    settings.consume.batch_size = 16;
    settings.consume.batch_linger = Duration::from_millis(300);
    settings.retry.max_attempts = 2;
    RunningWorker::spawn(settings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_batch_decides_exactly_what_sequential_processing_would() {
    let test = TestContext::new().await;
    let a1 = test.issue("app", "company-a", "gusto", "user-1").await;
    let a2 = test.issue("app", "company-a", "gusto", "user-2").await;
    let b = test.issue("app", "company-b", "gusto", "user-1").await;
    let untouched = test.issue("app", "company-c", "gusto", "user-1").await;
    let (first, repeat, sibling, other, unknown) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let batch = [
        decoded_request(first, a1.token.expose()),
        decoded_request(first, a1.token.expose()),
        decoded_request(sibling, a2.token.expose()),
        decoded_request(other, b.token.expose()),
        decoded_request(unknown, AccessToken::generate().expose()),
        decoded_request(repeat, a2.token.expose()),
    ];
    let mut conn = test.pool.get().await.expect("db");
    let processed = record_disconnects(
        &mut conn,
        &batch,
        &Policy::default(),
        OutboxFormat::ByReference,
    )
    .await
    .expect("committed")
    .processed;

    let kinds: Vec<OutcomeKind> = processed.iter().filter_map(Processed::kind).collect();
    assert_eq!(
        kinds,
        [
            OutcomeKind::Disconnected,
            OutcomeKind::Disconnected,
            OutcomeKind::AlreadyDisconnected,
            OutcomeKind::Disconnected,
            OutcomeKind::UnknownToken,
            OutcomeKind::AlreadyDisconnected,
        ]
    );
    assert!(
        matches!(processed[1], Processed::AlreadyProcessed(_)),
        "a repeated id in a batch is a duplicate"
    );
    let Processed::Recorded(Outcome::Disconnected {
        revoked_token_ids, ..
    }) = &processed[0]
    else {
        panic!("the first request disconnects");
    };
    let mut expected = vec![a1.token_id, a2.token_id];
    expected.sort();
    assert_eq!(revoked_token_ids, &expected);
    assert_eq!(
        test.token_state(a2.token_id).await.revoked_by_request,
        Some(first)
    );
    assert_eq!(
        test.token_state(b.token_id).await.revoked_by_request,
        Some(other)
    );
    assert!(test.is_active(&untouched).await);
    assert_eq!(test.recorded_request_count().await, 5);
    assert_eq!(
        test.unpublished_event_count().await,
        5,
        "one event per request id"
    );

    // The same batch again changes nothing.
    let again = record_disconnects(
        &mut conn,
        &batch,
        &Policy::default(),
        OutboxFormat::ByReference,
    )
    .await
    .expect("committed")
    .processed;
    assert!(again
        .iter()
        .all(|processed| matches!(processed, Processed::AlreadyProcessed(_))));
    assert_eq!(again[2].kind(), Some(OutcomeKind::AlreadyDisconnected));
    assert_eq!(test.recorded_request_count().await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_database_refuses_does_not_fail_its_neighbours_in_a_batch() {
    let test = TestContext::new().await;
    // A valid request the database refuses every time: a permanent failure
    // that only this request hits.
    test.execute(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.reason = 'poison' THEN RAISE EXCEPTION 'poisoned request'; END IF; RETURN NEW; END $$; \
         CREATE TRIGGER refuse_poison BEFORE INSERT ON disconnect_requests \
           FOR EACH ROW EXECUTE FUNCTION refuse_poison();",
    )
    .await;
    let good_one = test.issue("app", "company-a", "gusto", "user-1").await;
    let poisoned = test.issue("app", "company-b", "gusto", "user-1").await;
    let good_two = test.issue("app", "company-c", "gusto", "user-1").await;
    let mut events = test.event_tap().await;
    let channel = test.channel().await;
    let (first, poison, last) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    test.request_disconnect(&channel, first, good_one.token.expose())
        .await;
    let poison_body = request_with_reason(poison, poisoned.token.expose(), "poison");
    test.publish_raw(&channel, &poison_body, Default::default())
        .await;
    test.request_disconnect(&channel, last, good_two.token.expose())
        .await;
    let _worker = batching_worker(&test);

    events.event_for(first).await;
    events.event_for(last).await;
    let letters = test.wait_for_dead_letters(1).await;

    assert_eq!(
        letters[0].body, poison_body,
        "the broker dead-letters it after its delivery limit"
    );
    assert_eq!(test.outcome_of(poison).await, None);
    assert!(
        test.is_active(&poisoned).await,
        "its transaction never committed"
    );
    assert!(!test.is_active(&good_one).await && !test.is_active(&good_two).await);
    assert!(events.for_request(poison).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_in_the_middle_of_a_batch_retries_it_whole_and_records_each_request_once(
) {
    let test = TestContext::new().await;
    // The first insert of the middle request fails as a serialization
    // failure would; the sequence counts attempts outside the transaction.
    test.execute(
        "CREATE SEQUENCE flaky_attempts; \
         CREATE FUNCTION fail_once() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.reason = 'flaky' AND nextval('flaky_attempts') = 1 THEN \
             RAISE EXCEPTION 'injected' USING ERRCODE = '40001'; END IF; RETURN NEW; END $$; \
         CREATE TRIGGER fail_once BEFORE INSERT ON disconnect_requests \
           FOR EACH ROW EXECUTE FUNCTION fail_once();",
    )
    .await;
    let tokens = [
        test.issue("app", "company-a", "gusto", "user-1").await,
        test.issue("app", "company-b", "gusto", "user-1").await,
        test.issue("app", "company-c", "gusto", "user-1").await,
    ];
    let mut events = test.event_tap().await;
    let channel = test.channel().await;
    let ids = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    for (index, (id, token)) in ids.iter().zip(&tokens).enumerate() {
        let reason = if index == 1 { "flaky" } else { "fine" };
        test.publish_raw(
            &channel,
            &request_with_reason(*id, token.token.expose(), reason),
            Default::default(),
        )
        .await;
    }
    let _worker = batching_worker(&test);

    for (id, token) in ids.iter().zip(&tokens) {
        assert_eq!(
            events.event_for(*id).await.routing_key,
            "connection.disconnected"
        );
        assert_eq!(
            test.token_state(token.token_id).await.revoked_by_request,
            Some(*id)
        );
    }
    assert!(
        test.sequence_value("flaky_attempts").await >= 2,
        "the failure happened and was retried"
    );
    assert_eq!(test.recorded_request_count().await, 3);
    assert!(
        events
            .next_within(Duration::from_millis(300))
            .await
            .is_none(),
        "one event per request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_batch_redelivered_with_new_requests_changes_only_the_new_ones() {
    let test = TestContext::new().await;
    let mut tokens = Vec::new();
    for company in 0..6 {
        tokens.push(
            test.issue("app", &format!("company-{company}"), "gusto", "user-1")
                .await,
        );
    }
    let ids: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
    let mut events = test.event_tap().await;
    let _worker = batching_worker(&test);
    let channel = test.channel().await;
    for index in 0..4 {
        test.request_disconnect(&channel, ids[index], tokens[index].token.expose())
            .await;
    }
    for id in &ids[..4] {
        events.event_for(*id).await;
    }

    // Two of the first batch again (as after a lost ack), with two new ones.
    for index in [0, 4, 1, 5] {
        test.request_disconnect(&channel, ids[index], tokens[index].token.expose())
            .await;
    }
    events.event_for(ids[4]).await;
    events.event_for(ids[5]).await;
    test.wait_for_request_queue_empty().await;
    test.wait_until_outbox_empty().await;
    while events
        .next_within(Duration::from_millis(300))
        .await
        .is_some()
    {}

    assert_eq!(test.recorded_request_count().await, 6);
    for (id, token) in ids.iter().zip(&tokens) {
        assert_eq!(events.for_request(*id).len(), 1, "one event per request id");
        assert_eq!(
            test.token_state(token.token_id).await.revoked_by_request,
            Some(*id)
        );
    }
}
