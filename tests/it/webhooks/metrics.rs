//! The dispatcher's metrics: the chart's webhook alerts and dashboard row
//! name only series a scrape of `deliver` shows.

use super::{disconnect_one, ready_dispatcher};
use crate::observability::assert_chart_names_only_exposed_metrics;
use crate::support::webhooks::Receiver;
use crate::support::{eventually, TestContext};

#[tokio::test]
async fn the_charts_webhook_alerts_and_panels_name_only_metrics_the_dispatcher_exposes() {
    let context = TestContext::new().await;
    let receiver = Receiver::ok().await;
    context.add_endpoint("app-a", &receiver.url, "standard");
    let dispatcher = ready_dispatcher(&context, &[]).await;
    let (_events, _worker, channel) = context.running().await;
    disconnect_one(&context, &channel, "app-a").await;
    receiver.wait_for(1).await;

    let scrape = eventually("the delivery's latency", || async {
        let (_, body) = dispatcher.get("/metrics").await?;
        body.contains("disconnect_worker_webhook_delivery_seconds_count")
            .then_some(body)
    })
    .await;
    assert_chart_names_only_exposed_metrics(
        &scrape,
        &[
            "templates/webhooks-prometheusrule.yaml",
            "dashboards/webhooks.json",
        ],
    );
    assert!(scrape.contains(r#"disconnect_worker_webhook_deliveries_total{outcome="delivered"} 1"#));
}
