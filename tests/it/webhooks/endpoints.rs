//! Managing endpoints: disable and enable, remove, the secret at rest and
//! in logs, and a dispatcher without its key.

use std::time::Duration;

use diesel::sql_types::{Bytea, Uuid as SqlUuid};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use disconnect_testkit::process::Logs;

use super::{disconnect_one, ready_dispatcher};
use crate::support::process::{succeeded, until_ready};
use crate::support::webhooks::Receiver;
use crate::support::{eventually, TestContext};

#[tokio::test]
async fn a_disabled_endpoint_keeps_its_deliveries_until_it_is_enabled() {
    let context = TestContext::new().await;
    let receiver = Receiver::ok().await;
    let (endpoint, _) = context.add_endpoint("app-a", &receiver.url, "standard");
    let id = endpoint.to_string();
    succeeded(context.webhooks(&["disable", &id]));
    assert_eq!(context.endpoint(endpoint)["disabled_reason"], "operator");
    let dispatcher = ready_dispatcher(&context, &[]).await;
    let (mut events, _worker, channel) = context.running().await;

    // Disabled when the event comes: no delivery is made for it.
    let before = disconnect_one(&context, &channel, "app-a").await;
    events.event_for(before).await;
    eventually("the event taken in, for no endpoint", || async {
        let series = r#"disconnect_worker_webhook_events_total{outcome="no_endpoint"}"#;
        (crate::support::scraped(&dispatcher, series).await >= 1.0).then_some(())
    })
    .await;
    // Enabled, then disabled again with a delivery pending: it waits.
    succeeded(context.webhooks(&["enable", &id]));
    receiver.answer_with(|_| crate::support::webhooks::Reply::Status(500));
    let pending = disconnect_one(&context, &channel, "app-a").await;
    events.event_for(pending).await;
    receiver.wait_for(1).await;
    succeeded(context.webhooks(&["disable", &id]));
    receiver.answer_with(|_| crate::support::webhooks::Reply::Status(200));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        receiver.received().len(),
        1,
        "a disabled endpoint is sent nothing"
    );

    succeeded(context.webhooks(&["enable", &id]));
    let received = receiver.wait_for(2).await;
    assert_eq!(
        received[0].header("webhook-id"),
        received[1].header("webhook-id")
    );
    eventually("the waiting delivery delivered", || async {
        let attempts = context.attempts(&["--endpoint", &id]);
        matches!(attempts.as_slice(), [latest, ..] if latest["delivery_status"] == "delivered")
            .then_some(())
    })
    .await;
    assert_eq!(
        receiver.received().len(),
        2,
        "the event of the disabled time never comes"
    );

    succeeded(context.webhooks(&["remove", &id]));
    assert!(context.attempts(&["--endpoint", &id]).is_empty());
    let removed_again = context
        .webhooks(&["remove", &id])
        .output()
        .expect("running");
    assert!(!removed_again.status.success());
}

#[derive(QueryableByName)]
struct SealedRow {
    #[diesel(sql_type = SqlUuid)]
    id: uuid::Uuid,
    #[diesel(sql_type = Bytea)]
    secret_sealed: Vec<u8>,
}

#[tokio::test]
async fn secrets_are_sealed_at_rest_and_appear_in_no_log_line() {
    use base64::Engine;
    let context = TestContext::new().await;
    let receiver = Receiver::ok().await;
    let (endpoint, secret) = context.add_endpoint("app-a", &receiver.url, "standard");
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .expect("base64");
    let mut conn = context.pool.get().await.expect("db");
    let rows: Vec<SealedRow> = diesel::sql_query("SELECT id, secret_sealed FROM webhook_endpoints")
        .load(&mut conn)
        .await
        .expect("rows");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].id, endpoint);
    assert!(
        !rows[0]
            .secret_sealed
            .windows(key.len())
            .any(|w| w == key.as_slice()),
        "the table holds the secret in the clear"
    );
    let all_columns: String =
        diesel::sql_query("SELECT row_to_json(e)::text AS id FROM webhook_endpoints e")
            .get_result::<TextRow>(&mut conn)
            .await
            .expect("row")
            .id;
    assert!(!all_columns.contains(secret.trim_start_matches("whsec_")));

    let log = context.log_file("dispatcher");
    let dispatcher = context.spawn_dispatcher_logging(
        &[("LOG_FORMAT", "json"), ("RUST_LOG", "debug")],
        Logs::File(log.clone()),
    );
    until_ready(&dispatcher).await;
    let (mut events, _worker, channel) = context.running().await;
    let request = disconnect_one(&context, &channel, "app-a").await;
    let event = events.event_for(request).await;
    let delivered = receiver.wait_for(1).await;
    eventually("the attempt logged", || async {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("webhook attempt")
            .then_some(())
    })
    .await;
    let logs = std::fs::read_to_string(&log).expect("logs");
    let signature = delivered[0].header("webhook-signature");
    let body = String::from_utf8(event.raw.clone()).expect("UTF-8");
    for (what, secret_text) in [
        ("the secret", secret.trim_start_matches("whsec_")),
        ("the signature", signature.trim_start_matches("v1,")),
        ("the body", body.as_str()),
        ("the key", crate::support::webhooks::TEST_KEY),
    ] {
        assert!(
            !logs.contains(secret_text),
            "{what} is in the dispatcher's logs"
        );
    }
}

#[derive(QueryableByName)]
struct TextRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
}

#[tokio::test]
async fn the_dispatcher_and_add_stop_with_a_message_that_names_a_missing_or_bad_key() {
    let context = TestContext::new().await;
    for key in ["", "c2hvcnQ="] {
        let mut deliver = std::process::Command::new(crate::support::process::BINARY);
        deliver
            .arg("deliver")
            .envs(crate::support::webhooks::dispatcher_env(&context))
            .env("WEBHOOK_SECRET_KEY", key)
            .env("HTTP_PORT", "0");
        let output = crate::support::process::run_to_exit(deliver).await;
        assert_eq!(output.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&output.stderr).contains("WEBHOOK_SECRET_KEY"));
        let output = context
            .webhooks(&["add", "--client-id", "a", "--url", "https://example.com/"])
            .env("WEBHOOK_SECRET_KEY", key)
            .output()
            .expect("running");
        assert_eq!(output.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&output.stderr).contains("WEBHOOK_SECRET_KEY"));
    }
}
