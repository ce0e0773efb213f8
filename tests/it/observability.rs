//! /healthz, /readyz and /metrics of the worker binary.

use lapin::types::ShortString;
use lapin::BasicProperties;
use uuid::Uuid;

use crate::support::proxy::Proxy;
use crate::support::{eventually, sample, TestContext};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_outcome_tokens_revoked_and_events_published() {
    let test = TestContext::new().await;
    let first = test.issue("app", "company-c", "gusto", "user-a").await;
    test.issue("app", "company-c", "gusto", "user-b").await;
    let worker = test.spawn_worker_process(&[("PREFETCH", "1")]);
    let mut events = test.event_tap().await;
    let channel = test.channel().await;

    let disconnect = test
        .request_disconnect(&channel, Uuid::new_v4(), first.token.expose())
        .await;
    test.request_disconnect(&channel, disconnect, first.token.expose())
        .await;
    let json = BasicProperties::default().with_content_type(ShortString::from("application/json"));
    test.publish_raw(&channel, b"not json", json).await;
    let unknown = test
        .request_disconnect(&channel, Uuid::new_v4(), "dwt_unknown")
        .await;
    events.event_for(disconnect).await;
    events.event_for(unknown).await;

    let scrape = eventually(
        "the metrics to count four requests and two events",
        || async {
            let (status, body) = worker.get("/metrics").await?;
            assert_eq!(status, 200);
            // Events are counted once the broker confirmed them and the outbox
            // row is marked, a moment after consumers may already see them.
            let settled = sample(&body, "disconnect_worker_processing_seconds_count") == Some(4.0);
            let published = sample(
                &body,
                "disconnect_worker_events_published_total{path=\"after_commit\"}",
            ) >= Some(2.0);
            // The in-flight gauge drops when a request's handling ends, just
            // after it is counted.
            let idle = sample(&body, "disconnect_worker_in_flight_requests") == Some(0.0);
            (settled && published && idle).then_some(body)
        },
    )
    .await;
    let requests = |outcome: &str| {
        sample(
            &scrape,
            &format!("disconnect_worker_requests_total{{outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(requests("disconnected"), Some(1.0), "{scrape}");
    assert_eq!(requests("duplicate"), Some(1.0));
    assert_eq!(requests("unknown_token"), Some(1.0));
    assert_eq!(requests("dead_lettered"), Some(1.0));
    assert_eq!(
        sample(
            &scrape,
            "disconnect_worker_dead_letters_total{code=\"not_json\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&scrape, "disconnect_worker_tokens_revoked_total"),
        Some(2.0)
    );
    assert_eq!(
        sample(&scrape, "disconnect_worker_in_flight_requests"),
        Some(0.0)
    );
    assert!(
        scrape.contains("disconnect_worker_processing_seconds_bucket{le=\"0.005\"}"),
        "a histogram"
    );
    assert!(
        !scrape.contains(first.token.expose()),
        "no token in metrics"
    );
    let backlog = eventually("the outbox gauge", || async {
        let (_, body) = worker.get("/metrics").await?;
        sample(&body, "disconnect_worker_outbox_pending_events")
    })
    .await;
    assert_eq!(backlog, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_503_while_the_broker_is_unreachable_and_200_after_the_reconnect() {
    let test = TestContext::new().await;
    let proxy = Proxy::for_url(&test.amqp_url, 5672).await;
    let through_proxy = proxy.url_through(&test.amqp_url);
    let worker = test.spawn_worker_process(&[("AMQP_URL", &through_proxy)]);

    let ready = |expected: u16| {
        let worker = &worker;
        move || async move {
            let (status, body) = worker.get("/readyz").await?;
            (status == expected).then_some(body)
        }
    };
    eventually("ready", ready(200)).await;
    proxy.go_down();
    let body = eventually("not ready", ready(503)).await;
    assert!(
        body.contains("broker"),
        "the reason names the broker: {body}"
    );
    assert_eq!(
        worker.get("/healthz").await.map(|(status, _)| status),
        Some(200),
        "still alive"
    );
    let reconnects = eventually("a retry", || async {
        let (_, body) = worker.get("/metrics").await?;
        sample(
            &body,
            "disconnect_worker_retries_total{operation=\"connect\"}",
        )
    })
    .await;
    assert!(reconnects >= 1.0);

    proxy.restore();
    eventually("ready again", ready(200)).await;
    let (_, metrics) = worker.get("/metrics").await.expect("metrics");
    assert_eq!(
        sample(&metrics, "disconnect_worker_broker_reconnects_total"),
        Some(1.0)
    );
}
