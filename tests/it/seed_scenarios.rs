//! The seed's three scenarios and its four-step example
//! (shared/seeds/connection-disconnect.md), end to end through the worker.

use disconnect_worker::domain::ConnectionStatus;
use uuid::Uuid;

use crate::support::TestContext;

const APP: &str = "app-1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_user_credentials_share_one_connection_and_are_all_revoked() {
    let test = TestContext::new().await;
    let user_a = test.issue(APP, "company-c", "gusto", "user-a").await;
    let user_b = test.issue(APP, "company-c", "gusto", "user-b").await;
    assert_eq!(
        user_a.connection_id, user_b.connection_id,
        "one connection for one company at one provider"
    );
    let mut events = test.event_tap().await;
    let _worker = test.spawn_worker();

    let request = test
        .request_disconnect(&test.channel().await, Uuid::new_v4(), user_a.token.expose())
        .await;
    let event = events.event_for(request).await;

    assert_eq!(event.routing_key, "connection.disconnected");
    let mut revoked: Vec<String> = event.json["revoked_token_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|id| id.as_str().unwrap_or_default().to_string())
        .collect();
    revoked.sort();
    let mut expected = vec![user_a.token_id.to_string(), user_b.token_id.to_string()];
    expected.sort();
    assert_eq!(revoked, expected);
    assert!(!test.is_active(&user_a).await);
    assert!(
        !test.is_active(&user_b).await,
        "the other user's token is revoked too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_companies_at_the_same_provider_are_separate_connections() {
    let test = TestContext::new().await;
    let company_c = test.issue(APP, "company-c", "gusto", "user-a").await;
    let company_d = test.issue(APP, "company-d", "gusto", "user-a").await;
    assert_ne!(company_c.connection_id, company_d.connection_id);
    let mut events = test.event_tap().await;
    let _worker = test.spawn_worker();

    let request = test
        .request_disconnect(
            &test.channel().await,
            Uuid::new_v4(),
            company_c.token.expose(),
        )
        .await;
    let event = events.event_for(request).await;

    assert_eq!(event.json["company_id"], "company-c");
    assert!(!test.is_active(&company_c).await);
    assert!(
        test.is_active(&company_d).await,
        "another company is another connection"
    );
    assert_eq!(
        test.connection_status(company_d.connection_id).await,
        "active"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_company_at_another_provider_is_a_separate_connection() {
    let test = TestContext::new().await;
    let gusto = test.issue(APP, "company-c", "gusto", "user-a").await;
    let justworks = test.issue(APP, "company-c", "justworks", "user-a").await;
    assert_ne!(gusto.connection_id, justworks.connection_id);
    let mut events = test.event_tap().await;
    let _worker = test.spawn_worker();

    let request = test
        .request_disconnect(&test.channel().await, Uuid::new_v4(), gusto.token.expose())
        .await;
    let event = events.event_for(request).await;

    assert_eq!(event.json["provider_id"], "gusto");
    assert!(!test.is_active(&gusto).await);
    assert!(
        test.is_active(&justworks).await,
        "another provider is another connection"
    );
}

/// Steps 1 to 4 of the seed's example, then a disconnect of a token from
/// step 2: the three Gusto tokens are revoked, the JustWorks one is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_four_step_example_revokes_every_gusto_token_and_no_justworks_token() {
    let test = TestContext::new().await;
    // [1] User A, Credentials X, Gusto, Company C: Connection 1.
    let step1 = test
        .issue(APP, "company-c", "gusto", "user-a/credentials-x")
        .await;
    // [2] User A again, same credentials, other product permissions.
    let step2 = test
        .issue(APP, "company-c", "gusto", "user-a/credentials-x")
        .await;
    // [3] User B, Credentials Y, Gusto, Company C.
    let step3 = test
        .issue(APP, "company-c", "gusto", "user-b/credentials-y")
        .await;
    // [4] User A, Credentials Z, JustWorks, Company C: Connection 2.
    let step4 = test
        .issue(APP, "company-c", "justworks", "user-a/credentials-z")
        .await;
    assert_eq!(step1.connection_id, step2.connection_id);
    assert_eq!(step1.connection_id, step3.connection_id);
    assert_ne!(step1.connection_id, step4.connection_id);

    let mut events = test.event_tap().await;
    let _worker = test.spawn_worker();
    let request = test
        .request_disconnect(&test.channel().await, Uuid::new_v4(), step2.token.expose())
        .await;
    let event = events.event_for(request).await;

    assert_eq!(event.routing_key, "connection.disconnected");
    assert_eq!(event.json["event_type"], "connection.disconnected");
    assert_eq!(event.json["connection_id"], step1.connection_id.to_string());
    assert_eq!(event.json["client_id"], APP);
    assert_eq!(event.json["company_id"], "company-c");
    assert_eq!(event.json["provider_id"], "gusto");
    assert_eq!(
        event.json["revoked_token_ids"].as_array().map(Vec::len),
        Some(3)
    );
    assert_eq!(event.message_id.as_deref(), event.json["event_id"].as_str());
    assert_eq!(event.correlation_id, Some(request.to_string()));
    assert!(event.persistent, "events are published persistent");
    for token in [&step1, &step2, &step3] {
        let introspection = test.introspect(&token.token).await;
        assert!(!introspection.active);
        let details = introspection.details.expect("known token");
        assert_eq!(details.connection_status, ConnectionStatus::Disconnected);
        assert!(details.revoked_at.is_some());
        let state = test.token_state(token.token_id).await;
        assert_eq!(
            state.revoked_by_request,
            Some(request),
            "the row keeps the revoking request"
        );
    }
    assert!(
        test.is_active(&step4).await,
        "the JustWorks token is another connection"
    );
    assert_eq!(
        test.outcome_of(request).await.as_deref(),
        Some("disconnected")
    );
    // The event never carries token values.
    for token in [&step1, &step2, &step3, &step4] {
        assert!(!String::from_utf8_lossy(&event.raw).contains(token.token.expose()));
    }
}
