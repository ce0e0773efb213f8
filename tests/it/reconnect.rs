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
