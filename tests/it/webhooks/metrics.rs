//! The dispatcher's metrics: the chart's webhook alerts and dashboard row
//! name only series a scrape of `deliver` shows.

use super::{disconnect_one, ready_dispatcher};
use crate::observability::metric_names;
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
    let exposed: std::collections::BTreeSet<String> = scrape
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(ToString::to_string)
        .collect();
    let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("helm/disconnect-worker");
    for file in [
        "templates/webhooks-prometheusrule.yaml",
        "dashboards/webhooks.json",
    ] {
        let text = std::fs::read_to_string(chart.join(file)).expect("the chart's file");
        let named = metric_names(&text);
        assert!(!named.is_empty(), "{file} names metrics");
        for name in named {
            assert!(
                exposed.contains(&name),
                "{file} names {name}, which /metrics lacks"
            );
        }
    }
    assert!(scrape.contains(r#"disconnect_worker_webhook_deliveries_total{outcome="delivered"} 1"#));
}
