//! Postgres going away: the worker acknowledges nothing it could not commit,
//! finds the database unreachable, gives its requests back to the broker (it
//! holds no session meanwhile, so any replica that can reach the database
//! takes them), reports not-ready, and recovers when Postgres is back.

use disconnect_testkit::process::Logs;
use uuid::Uuid;

use crate::support::process::{json_log_lines, message, until_ready};
use crate::support::proxy::Proxy;
use crate::support::{eventually, sample, TestContext};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_wait_out_a_database_outage_and_are_processed_once_it_ends() {
    let test = TestContext::new().await;
    let token = test.issue("app", "company-c", "gusto", "user-a").await;
    let proxy = Proxy::for_url(&test.database_url, 5432).await;
    let through_proxy = proxy.url_through(&test.database_url);
    let log = test.log_file("outage");
    let worker = test.spawn_worker_process_logging(
        &[("DATABASE_URL", &through_proxy), ("LOG_FORMAT", "json")],
        Logs::File(log.clone()),
    );
    let mut events = test.event_tap().await;
    until_ready(&worker).await;

    proxy.go_down();
    let request = test
        .request_disconnect(&test.channel().await, Uuid::new_v4(), token.token.expose())
        .await;
    let body = eventually("not ready", || async {
        let (status, body) = worker.get("/readyz").await?;
        (status == 503).then_some(body)
    })
    .await;
    assert!(
        body.contains("database"),
        "the reason names the database: {body}"
    );
    // Given back: ready in the queue, with no consumer (the worker closed
    // its session), not held by the worker for the outage's length.
    let channel = test.channel().await;
    eventually("the request back in the queue", || async {
        let queue = test.topology.request_queue.as_str();
        (test.ready_messages(&channel, queue).await == 1).then_some(())
    })
    .await;
    let (_, metrics) = worker.get("/metrics").await.expect("metrics");
    assert_eq!(
        sample(
            &metrics,
            "disconnect_worker_requests_total{outcome=\"retried\"}"
        ),
        Some(0.0),
        "a request that never got a connection goes back uncounted: {metrics}"
    );
    assert_eq!(
        test.outcome_of(request).await,
        None,
        "nothing is committed during the outage"
    );
    assert!(test.is_active(&token).await);

    proxy.restore();
    let event = events.event_for(request).await;

    assert_eq!(event.routing_key, "connection.disconnected");
    assert!(!test.is_active(&token).await);
    until_ready(&worker).await;
    // The counter moves just after the ack, which may be after the event.
    let metrics = eventually("the request counted", || async {
        let (_, metrics) = worker.get("/metrics").await?;
        metrics
            .contains("disconnect_worker_requests_total{outcome=\"disconnected\"} 1")
            .then_some(metrics)
    })
    .await;
    assert_eq!(
        sample(
            &metrics,
            "disconnect_worker_requests_total{outcome=\"retried\"}"
        ),
        Some(0.0),
        "processed once, not retried: {metrics}"
    );

    // Five retries or more, and the log says so once when the outage
    // starts and once when it ends, not once per retry.
    worker.signal("TERM");
    worker.wait().await;
    let lines = json_log_lines(&log);
    let warnings: Vec<&str> = lines
        .iter()
        .filter(|line| line["level"] == "WARN" || line["level"] == "ERROR")
        .map(message)
        .collect();
    assert_eq!(
        warnings,
        ["database unavailable; retrying until it answers"],
        "one warning for the whole outage"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|line| message(line) == "database available again")
            .count(),
        1
    );
    let _ = std::fs::remove_file(log);
}
