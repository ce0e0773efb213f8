//! Retention: rows past their age are deleted in bounded batches, one
//! replica at a time, and a request replayed after its audit row is gone
//! changes nothing that is active.

use disconnect_worker::outbox::OutboxFormat;
use std::time::Duration;

use chrono::Utc;
use diesel_async::AsyncConnection;
use disconnect_worker::domain::{Authorizations, DisconnectRequest, OutcomeKind};
use disconnect_worker::retention::{purge_once, Purged, RetentionSettings, LOCK_KEY};
use disconnect_worker::service::fanout::{self, Step};
use disconnect_worker::service::{record_disconnect, Policy};

use crate::support::scopes::client_request;
use crate::support::TestContext;

const DAY: u64 = 86_400;

fn settings() -> RetentionSettings {
    RetentionSettings {
        revoked_tokens: Some(Duration::from_secs(90 * DAY)),
        disconnected_connections: Some(Duration::from_secs(90 * DAY)),
        audit: Some(Duration::from_secs(365 * DAY)),
        published_events: Some(Duration::from_secs(7 * DAY)),
        // Small, so every table takes several batches.
        batch_size: 2,
        interval: Duration::from_secs(600),
    }
}

fn policy() -> Policy {
    Policy {
        authorizations: Authorizations::parse("AUTHORIZED_PUBLISHERS", "ops:*").expect("valid"),
        replay_window: settings().replay_window(),
    }
}

async fn record(test: &TestContext, request: &DisconnectRequest) -> OutcomeKind {
    let mut conn = test.pool.get().await.expect("db");
    record_disconnect(&mut conn, request, &policy(), OutboxFormat::ByReference)
        .await
        .expect("committed")
        .kind()
        .expect("an outcome this release knows")
}

/// Move everything a request did `days` into the past, its events
/// published.
async fn age_request(test: &TestContext, request: &DisconnectRequest, days: u32) {
    age_request_unpublished(test, request, days).await;
    test.execute(&format!(
        "DELETE FROM outbox_disconnections WHERE request_id = '{}'",
        request.request_id
    ))
    .await;
}

/// Move everything a request did `days` into the past; an event kept by
/// reference stays unpublished.
async fn age_request_unpublished(test: &TestContext, request: &DisconnectRequest, days: u32) {
    let id = request.request_id.as_uuid();
    test.execute(&format!(
        "UPDATE access_tokens SET revoked_at = now() - interval '{days} days' \
               WHERE revoked_by_request = '{id}'; \
             UPDATE connections SET disconnected_at = now() - interval '{days} days' \
               WHERE disconnected_by_request = '{id}'; \
             UPDATE disconnect_requests SET processed_at = now() - interval '{days} days' \
               WHERE request_id = '{id}'; \
             UPDATE outbox_events SET created_at = now() - interval '{days} days', \
               published_at = now() - interval '{days} days' WHERE request_id = '{id}'; \
             UPDATE outbox_disconnections SET created_at = now() - interval '{days} days' \
               WHERE request_id = '{id}';"
    ))
    .await;
}

/// An event a version before 0.3.0 marked published `days` ago instead of
/// deleting it.
async fn leave_marked_event(test: &TestContext, days: u32) {
    test.execute(&format!(
        "INSERT INTO outbox_events (event_id, request_id, routing_key, payload, created_at, \
           published_at) \
         VALUES (gen_random_uuid(), gen_random_uuid(), 'connection.disconnected', '{{}}', \
           now() - interval '{days} days', now() - interval '{days} days')"
    ))
    .await;
}

async fn count(test: &TestContext, sql: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        count: i64,
    }
    let mut conn = test.pool.get().await.expect("db");
    diesel_async::RunQueryDsl::get_result::<Count>(diesel::sql_query(sql), &mut conn)
        .await
        .expect("count")
        .count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_past_their_retention_are_deleted_in_batches_and_nothing_else() {
    let test = TestContext::new().await;
    // Disconnected 400 days ago: its tokens, its connection, its audit row
    // and its event all go.
    let old = test.issue("app", "company-old", "gusto", "user-a").await;
    test.issue("app", "company-old", "gusto", "user-b").await;
    let old_request = DisconnectRequest::new(old.token.clone());
    record(&test, &old_request).await;
    age_request(&test, &old_request, 400).await;
    leave_marked_event(&test, 400).await;
    // Disconnected ten days ago: everything stays.
    let recent = test.issue("app", "company-recent", "gusto", "user-a").await;
    let recent_request = DisconnectRequest::new(recent.token.clone());
    record(&test, &recent_request).await;
    age_request(&test, &recent_request, 10).await;
    // A token revoked alone 100 days ago: it goes, its connection stays.
    let alone = test.issue("app", "company-live", "gusto", "user-a").await;
    let sibling = test.issue("app", "company-live", "gusto", "user-b").await;
    let alone_request = DisconnectRequest::for_target(disconnect_worker::domain::Target::Token {
        token: alone.token.clone(),
        client_id: None,
    });
    record(&test, &alone_request).await;
    age_request(&test, &alone_request, 100).await;
    // A client request accepted 400 days ago and still in progress keeps
    // its audit row; an event never published is never deleted.
    let mut unfinished = client_request("app-quiet");
    unfinished.provenance.publisher = Some("ops".into());
    record(&test, &unfinished).await;
    age_request(&test, &unfinished, 400).await;
    test.execute(&format!(
        "UPDATE outbox_events SET published_at = NULL WHERE request_id = '{}'",
        alone_request.request_id
    ))
    .await;

    let purged = purge_once(&test.bounded_pool(), &settings(), Utc::now())
        .await
        .expect("a pass")
        .expect("the lock was free");

    assert_eq!(
        purged,
        Purged {
            disconnect_requests: 1,
            disconnect_fanouts: 0,
            outbox_events: 1,
            access_tokens: 3,
            connections: 1,
        }
    );
    assert!(test
        .audit_row(old_request.request_id.as_uuid())
        .await
        .is_none());
    assert!(test
        .audit_row(unfinished.request_id.as_uuid())
        .await
        .is_some());
    assert_eq!(
        count(
            &test,
            "SELECT count(*) FROM connections WHERE company_id = 'company-old'"
        )
        .await,
        0
    );
    assert_eq!(
        test.connection_status(recent.connection_id).await,
        "disconnected",
        "kept: disconnected ten days ago"
    );
    assert!(test.is_active(&sibling).await);
    assert_eq!(
        test.unpublished_event_count().await,
        1,
        "the unpublished event stays"
    );
    assert_eq!(
        count(&test, "SELECT count(*) FROM outbox_events").await,
        1,
        "only the unpublished one"
    );

    // A second pass finds nothing more.
    let again = purge_once(&test.bounded_pool(), &settings(), Utc::now())
        .await
        .expect("a pass");
    assert_eq!(again, Some(Purged::default()));
}

/// An event kept by reference and still unpublished past the retention (a
/// broker away for longer than it) keeps the connection and token rows it
/// is rebuilt from; it is published whole, and then they go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpublished_event_keeps_the_rows_it_is_rebuilt_from() {
    let test = TestContext::new().await;
    let old = test.issue("app", "company-old", "gusto", "user-a").await;
    let request = DisconnectRequest::new(old.token.clone());
    record(&test, &request).await;
    // Retention runs 400 days on: the event has waited that long.
    let later = Utc::now() + chrono::Duration::days(400);
    let connections = "SELECT count(*) FROM connections WHERE company_id = 'company-old'";

    let purged = purge_once(&test.bounded_pool(), &settings(), later)
        .await
        .expect("a pass")
        .expect("the lock was free");
    assert_eq!((purged.access_tokens, purged.connections), (0, 0));
    assert_eq!(count(&test, connections).await, 1);

    let mut events = test.event_tap().await;
    let worker = test.spawn_worker();
    let event = events.event_for(request.request_id.as_uuid()).await;
    assert_eq!(
        event.json["revoked_token_ids"],
        serde_json::json!([old.token_id.to_string()])
    );
    test.wait_until_outbox_empty().await;
    drop(worker);
    let purged = purge_once(&test.bounded_pool(), &settings(), later)
        .await
        .expect("a pass")
        .expect("the lock was free");
    assert_eq!((purged.access_tokens, purged.connections), (1, 1));
    assert_eq!(count(&test, connections).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_is_left_to_the_replica_that_holds_the_lock() {
    let test = TestContext::new().await;
    let old = test.issue("app", "company-old", "gusto", "user-a").await;
    let request = DisconnectRequest::new(old.token.clone());
    record(&test, &request).await;
    age_request(&test, &request, 400).await;

    let mut holder = test.pool.get().await.expect("db");
    let (pass, ()) = holder
        .transaction::<_, diesel::result::Error, _>(async |conn| {
            diesel_async::RunQueryDsl::execute(
                diesel::sql_query(format!("SELECT pg_advisory_xact_lock({LOCK_KEY})")),
                conn,
            )
            .await?;
            let pass = purge_once(&test.bounded_pool(), &settings(), Utc::now()).await;
            Ok((pass, ()))
        })
        .await
        .expect("the holder's transaction");
    assert_eq!(
        pass.expect("no error"),
        None,
        "another replica holds the pass"
    );
    assert!(test.audit_row(request.request_id.as_uuid()).await.is_some());

    let pass = purge_once(&test.bounded_pool(), &settings(), Utc::now())
        .await
        .expect("a pass");
    assert!(pass.is_some_and(|purged| purged.disconnect_requests == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_replayed_after_its_audit_row_is_purged_changes_nothing_active() {
    let test = TestContext::new().await;
    // A connection request, done and purged: its token is gone.
    let token = test.issue("app", "company-c", "gusto", "user-a").await;
    let request = DisconnectRequest::new(token.token.clone());
    record(&test, &request).await;
    age_request(&test, &request, 400).await;
    purge_once(&test.bounded_pool(), &settings(), Utc::now())
        .await
        .expect("a pass");
    let reconnected = test.issue("app", "company-c", "gusto", "user-a").await;
    assert_eq!(record(&test, &request).await, OutcomeKind::UnknownToken);
    assert!(
        test.is_active(&reconnected).await,
        "the new connection is untouched"
    );

    // A client request within the window whose audit row is gone anyway
    // (deleted by hand): only connections made before it was asked are its
    // own, and it ended them all the first time.
    let mut whole = client_request("app");
    whole.provenance.publisher = Some("ops".into());
    whole.requested_at = Some(Utc::now() - chrono::Duration::days(30));
    record(&test, &whole).await;
    let mut conn = test.pool.get().await.expect("db");
    while !matches!(
        fanout::step(&mut conn, 50, OutboxFormat::ByReference)
            .await
            .expect("a step"),
        Step::Finished { .. } | Step::Idle
    ) {}
    test.execute(&format!(
        "DELETE FROM disconnect_requests WHERE request_id = '{0}'; \
         DELETE FROM disconnect_fanouts WHERE request_id = '{0}';",
        whole.request_id
    ))
    .await;
    assert_eq!(record(&test, &whole).await, OutcomeKind::InProgress);
    loop {
        match fanout::step(&mut conn, 50, OutboxFormat::ByReference)
            .await
            .expect("a step")
        {
            Step::Finished { event, .. } => {
                assert!(
                    event.payload.contains("nothing_to_disconnect"),
                    "{}",
                    event.payload
                );
                break;
            }
            Step::Publishing { .. } => {
                test.execute(
                    "UPDATE outbox_events SET published_at = now(); \
                     DELETE FROM outbox_disconnections",
                )
                .await;
            }
            Step::Chunk { .. } => panic!("the replay disconnected something"),
            Step::Idle => panic!("the replay has no fan-out"),
        }
    }
    assert!(test.is_active(&reconnected).await);

    // Older than the replay window: refused before anything is read.
    let mut ancient = client_request("app");
    ancient.provenance.publisher = Some("ops".into());
    ancient.requested_at = Some(Utc::now() - chrono::Duration::days(365));
    assert_eq!(record(&test, &ancient).await, OutcomeKind::Expired);
    assert!(test.is_active(&reconnected).await);
}
