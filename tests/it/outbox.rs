//! Events are written with the state change and published at least once.

use disconnect_worker::outbox::OutboxFormat;
use disconnect_worker::service::Processed;
use std::time::Duration;

use uuid::Uuid;

use crate::support::broker::decoded_request;
use crate::support::TestContext;

/// A worker that crashed after committing and before publishing leaves
/// exactly this state: the outcome and its outbox row committed, nothing
/// published. The next worker publishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_left_unpublished_by_a_crash_is_published_when_the_worker_runs_again() {
    let test = TestContext::new().await;
    let token = test.issue("app", "company-c", "gusto", "user-a").await;
    let request = decoded_request(Uuid::new_v4(), token.token.expose());
    let processed = test
        .committed_and_not_published(&request, OutboxFormat::ByReference)
        .await;
    assert!(matches!(processed, Processed::Recorded(_)));
    assert_eq!(test.unpublished_event_count().await, 1);
    let request_id = request.request_id.as_uuid();
    let decided_event_id = test.audit_event_id(request_id).await;

    let mut events = test.event_tap().await;
    let _worker = test.spawn_worker();
    let event = events.event_for(request_id).await;

    // Rebuilt from the rows the request wrote: the event decided, with the
    // connection and the token it revoked.
    assert_eq!(event.routing_key, "connection.disconnected");
    assert_eq!(event.json["event_id"], decided_event_id.to_string());
    assert_eq!(event.json["connection_id"], token.connection_id.to_string());
    assert_eq!(
        event.json["revoked_token_ids"],
        serde_json::json!([token.token_id.to_string()])
    );
    assert_eq!(
        (
            &event.json["client_id"],
            &event.json["company_id"],
            &event.json["provider_id"]
        ),
        (
            &serde_json::json!("app"),
            &serde_json::json!("company-c"),
            &serde_json::json!("gusto")
        )
    );
    test.wait_until_outbox_empty().await;
}

/// An event kept whole (here a token revoked alone) is published from its
/// stored bytes, as they were written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_kept_whole_and_left_by_a_crash_is_published_as_stored() {
    let test = TestContext::new().await;
    let token = test.issue("app", "company-c", "gusto", "user-a").await;
    test.issue("app", "company-c", "gusto", "user-b").await;
    let request = disconnect_worker::domain::DisconnectRequest::for_target(
        disconnect_worker::domain::Target::Token {
            token: token.token.clone(),
            client_id: None,
        },
    );
    test.committed_and_not_published(&request, OutboxFormat::ByReference)
        .await;
    let request_id = request.request_id.as_uuid();
    let stored = test.stored_event_payload(request_id).await;

    let mut events = test.event_tap().await;
    let _worker = test.spawn_worker();
    let event = events.event_for(request_id).await;

    assert_eq!(event.routing_key, "token.revoked");
    assert_eq!(event.raw, stored.into_bytes());
    test.wait_until_outbox_empty().await;
}

/// The worker publishes a batch's events itself, right after the commit,
/// and deletes them once confirmed: no relay sweep is involved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_published_and_deleted_right_after_commit_without_the_relay() {
    let test = TestContext::new().await;
    let mut settings = test.run_settings();
    // The relay's one sweep at start finds nothing, and it never sweeps again.
    settings.outbox.poll_interval = Duration::from_secs(3600);
    settings.outbox.relay_delay = Duration::from_secs(3600);
    let _worker = crate::support::RunningWorker::spawn(settings);
    let mut events = test.event_tap().await;
    let channel = test.channel().await;
    let mut request_ids = Vec::new();
    for company in ["company-c", "company-d"] {
        let token = test.issue("app", company, "gusto", "user-a").await;
        request_ids.push(
            test.request_disconnect(&channel, Uuid::new_v4(), token.token.expose())
                .await,
        );
    }

    for request_id in &request_ids {
        let event = events.event_for(*request_id).await;
        assert_eq!(event.routing_key, "connection.disconnected");
    }
    test.wait_until_outbox_empty().await;
}

/// An unpublished event younger than the relay delay belongs to the worker
/// that wrote it, which is publishing it: the relay leaves it alone, so it is
/// not published twice. Once older, the relay publishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_publishes_an_unpublished_event_only_once_it_is_older_than_the_relay_delay() {
    let test = TestContext::new().await;
    let mut settings = test.run_settings();
    settings.outbox.poll_interval = Duration::from_millis(20);
    settings.outbox.relay_delay = Duration::from_secs(3600);
    let _worker = crate::support::RunningWorker::spawn(settings);
    let request_ids = test
        .leave_unpublished_events(&["company-c"], "59 minutes")
        .await;
    let mut events = test.event_tap().await;

    // Many sweeps pass (one every 20 ms); none may take the event.
    assert!(
        events
            .next_within(Duration::from_millis(500))
            .await
            .is_none(),
        "the relay published an event younger than its delay"
    );
    assert_eq!(test.unpublished_event_count().await, 1);

    test.age_unpublished_events("61 minutes").await;
    events.event_for(request_ids[0]).await;
    test.wait_until_outbox_empty().await;
}

/// Graceful shutdown publishes what is left to the relay before exiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_publishes_pending_events_first() {
    let test = TestContext::new().await;
    let mut settings = test.run_settings();
    // Only the shutdown drain can publish: the relay's timer never fires
    // after its first sweep, and nothing wakes it.
    settings.outbox.poll_interval = Duration::from_secs(3600);
    let worker = crate::support::RunningWorker::spawn(settings);
    let mut events = test.event_tap().await;
    // Let the worker's first sweep pass before writing the rows.
    let sentinel = test.issue("app", "company-z", "gusto", "user-a").await;
    let sentinel_request = test
        .request_disconnect(
            &test.channel().await,
            Uuid::new_v4(),
            sentinel.token.expose(),
        )
        .await;
    events.event_for(sentinel_request).await;
    test.wait_until_outbox_empty().await;
    let request_ids = test
        .leave_unpublished_events(&["company-c", "company-d", "company-e"], "1 hour")
        .await;
    assert_eq!(test.unpublished_event_count().await, 3);

    worker.stop().await.expect("a clean stop");

    assert_eq!(test.unpublished_event_count().await, 0);
    for request_id in request_ids {
        events.event_for(request_id).await;
    }
}

/// Revert the newest `count` migrations of the test database; the first
/// error, as text.
async fn revert_migrations(test: &TestContext, count: usize) -> Result<(), String> {
    use diesel_migrations::MigrationHarness;
    let url = disconnect_worker::db::DatabaseUrl::parse(&test.database_url).expect("valid");
    let conn = url.establish().await.expect("a session");
    let mut harness = diesel_async::AsyncMigrationHarness::new(conn);
    tokio::task::spawn_blocking(move || {
        for _ in 0..count {
            harness
                .revert_last_migration(disconnect_worker::db::setup::MIGRATIONS)
                .map_err(|error| error.to_string())?;
        }
        Ok(())
    })
    .await
    .expect("the migration task")
}

/// The version before cannot publish the events kept by reference, so
/// migration 10's down refuses while one is unpublished, and names how
/// many; once they are published it drops the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverting_the_by_reference_outbox_refuses_while_an_event_waits_in_it() {
    let test = TestContext::new().await;
    test.leave_unpublished_events(&["company-c", "company-d"], "1 second")
        .await;

    // Migrations 14 (the webhook tables), 13 (fill factors and an index),
    // 12 (nothing set aside) and 11 (a fill factor) revert; migration 10
    // refuses.
    let refused = revert_migrations(&test, 5)
        .await
        .expect_err("refused while events wait");
    assert!(
        refused.contains("outbox_disconnections holds 2 unpublished"),
        "{refused}"
    );
    assert_eq!(test.unpublished_event_count().await, 2, "nothing lost");

    test.execute("DELETE FROM outbox_disconnections").await;
    revert_migrations(&test, 1)
        .await
        .expect("reverted once empty");
    #[derive(diesel::QueryableByName)]
    struct Gone {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        gone: bool,
    }
    let mut conn = test.pool.get().await.expect("db");
    let table = diesel_async::RunQueryDsl::get_result::<Gone>(
        diesel::sql_query("SELECT to_regclass('outbox_disconnections') IS NULL AS gone"),
        &mut conn,
    )
    .await
    .expect("query");
    assert!(table.gone, "the table is dropped");
}
