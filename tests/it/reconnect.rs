//! The worker reconnects to RabbitMQ by itself after losing its connection.

use uuid::Uuid;

use crate::support::proxy::Proxy;
use crate::support::{eventually, RunningWorker, TestContext};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_reconnects_after_its_broker_connection_is_cut_and_goes_on() {
    let test = TestContext::new().await;
    let proxy = Proxy::for_url(&test.amqp_url, 5672).await;
    let through_proxy = proxy.url_through(&test.amqp_url);
    let worker = RunningWorker::spawn(test.run_settings_with(&test.database_url, &through_proxy));
    let mut events = test.event_tap().await;
    let channel = test.channel().await;

    let before = test.issue("app", "company-c", "gusto", "user-a").await;
    let first = test
        .request_disconnect(&channel, Uuid::new_v4(), before.token.expose())
        .await;
    events.event_for(first).await;
    assert_eq!(proxy.open_links(), 1, "the worker holds one connection");

    proxy.cut();
    let after = test.issue("app", "company-d", "gusto", "user-a").await;
    let second = test
        .request_disconnect(&channel, Uuid::new_v4(), after.token.expose())
        .await;
    let event = events.event_for(second).await;

    assert_eq!(event.routing_key, "connection.disconnected");
    eventually("the new connection", || async {
        (proxy.open_links() == 1).then_some(())
    })
    .await;
    worker
        .stop()
        .await
        .expect("a clean stop after reconnecting");
}

/// A publish to a missing exchange makes the broker close the channel: the
/// worker notices, opens a new session, declares its topology again (so the
/// exchange exists again) and publishes the event whose publish failed, at
/// once rather than after the relay delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_recovers_when_the_broker_closes_its_channel_and_declares_its_topology_again() {
    let test = TestContext::new().await;
    let mut settings = test.run_settings();
    settings.outbox.relay_delay = std::time::Duration::from_secs(3600);
    let _worker = RunningWorker::spawn(settings);
    let channel = test.channel().await;
    let mut events = test.event_tap().await;
    let first = test.issue("app", "company-c", "gusto", "user-a").await;
    let request = test
        .request_disconnect(&channel, Uuid::new_v4(), first.token.expose())
        .await;
    events.event_for(request).await;

    channel
        .exchange_delete(
            test.topology.event_exchange.as_str().into(),
            Default::default(),
        )
        .await
        .expect("deleting the event exchange");
    let second = test.issue("app", "company-d", "gusto", "user-a").await;
    let orphan = test
        .request_disconnect(&channel, Uuid::new_v4(), second.token.expose())
        .await;

    assert_eq!(
        eventually("the request to be committed", || test.outcome_of(orphan)).await,
        "disconnected"
    );
    eventually("the event exchange declared again", || async {
        // A passive declare of a missing exchange closes the channel: use a fresh one.
        let probe = test.channel().await;
        probe
            .exchange_declare(
                test.topology.event_exchange.as_str().into(),
                lapin::ExchangeKind::Topic,
                lapin::options::ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .ok()
    })
    .await;
    test.wait_until_outbox_empty().await;
    let mut events = test.event_tap().await;
    let third = test.issue("app", "company-e", "gusto", "user-a").await;
    let later = test
        .request_disconnect(&channel, Uuid::new_v4(), third.token.expose())
        .await;
    assert_eq!(
        events.event_for(later).await.routing_key,
        "connection.disconnected"
    );
}
