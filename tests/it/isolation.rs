//! One application never touches another's connections.

use uuid::Uuid;

use crate::support::TestContext;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_applications_connection_to_the_same_company_and_provider_is_left_alone() {
    let test = TestContext::new().await;
    let ours = test.issue("app-ours", "company-c", "gusto", "user-a").await;
    let theirs = test
        .issue("app-theirs", "company-c", "gusto", "user-a")
        .await;
    assert_ne!(
        ours.connection_id, theirs.connection_id,
        "each application has its own connection"
    );
    let mut events = test.event_tap().await;
    let _worker = test.spawn_worker();

    let request = test
        .request_disconnect(&test.channel().await, Uuid::new_v4(), ours.token.expose())
        .await;
    let event = events.event_for(request).await;

    assert_eq!(event.json["client_id"], "app-ours");
    assert!(!test.is_active(&ours).await);
    assert!(test.is_active(&theirs).await);
    assert_eq!(test.connection_status(theirs.connection_id).await, "active");
}
