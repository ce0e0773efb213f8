//! What arrives: the event's bytes, signed so the official libraries
//! verify them, to the application's endpoints only.

use super::{disconnect_one, ready_dispatcher};
use crate::support::webhooks::{verify_with_official_library, Receiver};
use crate::support::TestContext;

#[tokio::test]
async fn every_delivery_verifies_with_the_official_libraries_and_carries_the_event_as_published() {
    let context = TestContext::new().await;
    let standard = Receiver::ok().await;
    let finch = Receiver::ok().await;
    let other_application = Receiver::ok().await;
    let (_, standard_secret) = context.add_endpoint("app-a", &standard.url, "standard");
    let (_, finch_secret) = context.add_endpoint("app-a", &finch.url, "finch");
    context.add_endpoint("app-b", &other_application.url, "standard");
    assert!(standard_secret.starts_with("whsec_"));
    assert!(!finch_secret.starts_with("whsec_"));
    let _dispatcher = ready_dispatcher(&context, &[]).await;
    let (mut events, _worker, channel) = context.running().await;

    let first = disconnect_one(&context, &channel, "app-a").await;
    let second = disconnect_one(&context, &channel, "app-a").await;
    let published = [
        events.event_for(first).await,
        events.event_for(second).await,
    ];

    let to_standard = standard.wait_for(2).await;
    let to_finch = finch.wait_for(2).await;
    verify_with_official_library("standard", &[&standard_secret], &to_standard);
    verify_with_official_library("finch", &[&finch_secret], &to_finch);
    for event in &published {
        let body = String::from_utf8(event.raw.clone()).expect("UTF-8");
        let event_id = event.json["event_id"].as_str().expect("event_id");
        let id = format!("msg_{event_id}");
        let standard_copy = to_standard
            .iter()
            .find(|request| request.header("webhook-id") == id)
            .expect("the standard endpoint got the event, under its id");
        assert_eq!(
            standard_copy.body, body,
            "the body is the event as published"
        );
        let finch_copy = to_finch
            .iter()
            .find(|request| request.header("finch-event-id") == id)
            .expect("the Finch endpoint got the event, under its id");
        assert_eq!(finch_copy.body, body);
        assert!(finch_copy.header("finch-signature").starts_with("v1,"));
        assert_eq!(standard_copy.header("content-type"), "application/json");
    }
    // Another application's endpoint hears nothing of app-a's connections.
    let third = disconnect_one(&context, &channel, "app-b").await;
    events.event_for(third).await;
    other_application.wait_for(1).await;
    assert_eq!(standard.received().len(), 2);
    assert_eq!(other_application.received().len(), 1);
}

#[tokio::test]
async fn during_a_rotation_each_delivery_verifies_with_the_old_and_the_new_secret() {
    let context = TestContext::new().await;
    let standard = Receiver::ok().await;
    let finch = Receiver::ok().await;
    let (standard_id, standard_old) = context.add_endpoint("app-a", &standard.url, "standard");
    let (finch_id, finch_old) = context.add_endpoint("app-a", &finch.url, "finch");
    let rotate = |id: uuid::Uuid| {
        let output = crate::support::process::succeeded(
            context.webhooks(&["rotate-secret", &id.to_string()]),
        );
        let stdout = String::from_utf8(output.stdout).expect("UTF-8");
        stdout
            .lines()
            .find_map(|line| line.strip_prefix("secret: "))
            .expect("the new secret")
            .to_string()
    };
    let standard_new = rotate(standard_id);
    let finch_new = rotate(finch_id);
    assert_ne!(standard_new, standard_old);
    let _dispatcher = ready_dispatcher(&context, &[]).await;
    let (mut events, _worker, channel) = context.running().await;
    let request = disconnect_one(&context, &channel, "app-a").await;
    events.event_for(request).await;

    let to_standard = standard.wait_for(1).await;
    let to_finch = finch.wait_for(1).await;
    verify_with_official_library("standard", &[&standard_old, &standard_new], &to_standard);
    verify_with_official_library("finch", &[&finch_old, &finch_new], &to_finch);
    assert_eq!(
        to_standard[0]
            .header("webhook-signature")
            .split(' ')
            .count(),
        2,
        "two signatures while both secrets sign"
    );
}

#[tokio::test]
async fn a_rejection_goes_to_the_application_it_concerns_and_no_other_rejection_goes_anywhere() {
    use crate::support::scopes::connection_request;
    let context = TestContext::new().await;
    let receiver = Receiver::ok().await;
    context.add_endpoint("app-a", &receiver.url, "standard");
    let dispatcher = ready_dispatcher(&context, &[]).await;
    let (mut events, _worker, channel) = context.running().await;

    let issued = context.issue("app-a", "company-r", "gusto", "alice").await;
    let token = issued.token.expose();
    let first = context
        .request_disconnect(&channel, uuid::Uuid::new_v4(), token)
        .await;
    events.event_for(first).await;
    let again = context
        .request_disconnect(&channel, uuid::Uuid::new_v4(), token)
        .await;
    assert_eq!(
        events.event_for(again).await.json["reason"],
        "already_disconnected"
    );
    // No application to tell: a token nobody issued.
    let unknown = context
        .request_disconnect(
            &channel,
            uuid::Uuid::new_v4(),
            &format!("dwt_{}", "A".repeat(43)),
        )
        .await;
    assert_eq!(
        events.event_for(unknown).await.json["reason"],
        "unknown_token"
    );
    // A publisher not authorized for app-a: app-a did not ask.
    let other = context.issue("app-a", "company-s", "gusto", "alice").await;
    let unauthorized = context
        .publish_request(
            &channel,
            &connection_request("app-a", other.connection_id),
            None,
        )
        .await;
    assert_eq!(
        events.event_for(unauthorized).await.json["reason"],
        "not_authorized"
    );
    crate::support::eventually("both rejections taken in", || async {
        let series = r#"disconnect_worker_webhook_events_total{outcome="no_application"}"#;
        (crate::support::scraped(&dispatcher, series).await >= 2.0).then_some(())
    })
    .await;

    let received = receiver.wait_for(2).await;
    let mut types: Vec<String> = received
        .iter()
        .map(|request| {
            let body: serde_json::Value = serde_json::from_str(&request.body).expect("JSON");
            body["event_type"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    types.sort();
    assert_eq!(
        types,
        ["connection.disconnect_rejected", "connection.disconnected"]
    );
    assert_eq!(receiver.received().len(), 2);
}
