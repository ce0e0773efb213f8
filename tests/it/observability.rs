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
            // row is deleted, a moment after consumers may already see them.
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
        .filter(|retries| *retries >= 1.0)
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

/// Every `disconnect_worker_*` and `process_*` name in `text`.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for prefix in ["disconnect_worker_", "process_"] {
        for (at, _) in text.match_indices(prefix) {
            let before = text[..at].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            names.insert(name);
        }
    }
    names
}

/// Every metric `files` of the chart name is in `scrape` (a process's
/// `/metrics`), and each file names some.
pub(crate) fn assert_chart_names_only_exposed_metrics(scrape: &str, files: &[&str]) {
    let exposed: std::collections::BTreeSet<String> = scrape
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(ToString::to_string)
        .collect();
    let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("helm/disconnect-worker");
    for file in files {
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
}

/// The chart's alerts and dashboard name only metrics a scrape of the
/// running binary shows; among them the build, process, pool and
/// publish-to-event metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_alerts_and_dashboard_name_only_metrics_the_worker_exposes() {
    let test = TestContext::new().await;
    let worker = test.spawn_worker_process(&[]);
    let token = test.issue("app", "company-c", "gusto", "user-a").await;
    let mut events = test.event_tap().await;
    let request = Uuid::new_v4();
    let published_now = BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_timestamp(chrono::Utc::now().timestamp() as u64);
    test.publish_raw(
        &test.channel().await,
        &crate::support::broker::request_body(request, token.token.expose()),
        published_now,
    )
    .await;
    events.event_for(request).await;

    let scrape = eventually("the publish-to-event latency", || async {
        let (_, body) = worker.get("/metrics").await?;
        body.contains("disconnect_worker_publish_to_event_seconds_count")
            .then_some(body)
    })
    .await;

    assert_chart_names_only_exposed_metrics(
        &scrape,
        &[
            "templates/prometheusrule.yaml",
            "dashboards/disconnect-worker.json",
        ],
    );
    assert_eq!(
        sample(
            &scrape,
            &format!(
                "disconnect_worker_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&scrape, "disconnect_worker_database_pool_max_size"),
        Some(8.0)
    );
    assert!(sample(&scrape, "disconnect_worker_database_pool_size") >= Some(1.0));
    assert!(sample(&scrape, "process_resident_memory_bytes") > Some(0.0));
    assert!(sample(&scrape, "process_open_fds") > Some(0.0));
    assert_eq!(
        sample(&scrape, "disconnect_worker_publish_to_event_seconds_count"),
        Some(1.0)
    );
    // Counters exist from the start, so a first increment is seen by rate().
    assert_eq!(
        sample(
            &scrape,
            "disconnect_worker_dead_letters_total{code=\"not_json\"}"
        ),
        Some(0.0)
    );
}
