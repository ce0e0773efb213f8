//! The dispatcher's links: a broker outage and a database outage lose no
//! delivery.

use std::collections::BTreeSet;
use std::time::Duration;

use super::{disconnect_one, ready_dispatcher};
use crate::support::proxy::Proxy;
use crate::support::webhooks::Receiver;
use crate::support::TestContext;

#[tokio::test]
async fn events_published_while_the_dispatcher_has_no_broker_or_no_database_are_all_delivered() {
    let context = TestContext::new().await;
    let receiver = Receiver::ok().await;
    context.add_endpoint("app-a", &receiver.url, "standard");
    let broker = Proxy::for_url(&context.amqp_url, 5672).await;
    let database = Proxy::for_url(&context.database_url, 5432).await;
    let amqp_url = broker.url_through(&context.amqp_url);
    let database_url = database.url_through(&context.database_url);
    let dispatcher = ready_dispatcher(
        &context,
        &[("AMQP_URL", &amqp_url), ("DATABASE_URL", &database_url)],
    )
    .await;
    let (mut events, _worker, channel) = context.running().await;

    broker.go_down();
    for _ in 0..5 {
        let request = disconnect_one(&context, &channel, "app-a").await;
        events.event_for(request).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(receiver.received().is_empty());
    broker.restore();
    receiver.wait_for(5).await;

    database.go_down();
    for _ in 0..5 {
        let request = disconnect_one(&context, &channel, "app-a").await;
        events.event_for(request).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        receiver.received().len(),
        5,
        "nothing is sent without the database"
    );
    database.restore();
    let received = receiver.wait_for(10).await;
    let ids: BTreeSet<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), 10, "every event, each under its own id");
    drop(dispatcher);
}
