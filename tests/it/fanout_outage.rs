//! A silent broker cut that spans a whole fan-out: the fan-out disconnects
//! every connection in Postgres while no event can go out, and once the
//! link returns the relay drains the backlog a bounded batch at a time:
//! every connection's event goes out, repeated only for the batch in flight
//! when a confirm was missed, `disconnect.completed` after all of them, and
//! the worker stops cleanly.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use disconnect_testkit::process::Logs;

use crate::support::process::until_ready;
use crate::support::proxy::Proxy;
use crate::support::scopes::{client_request, BROKER_USER};
use crate::support::{eventually, TestContext};

const APP: &str = "app-offboarded";

/// The application's connections: the 60,000 by default;
/// `FANOUT_OUTAGE_CONNECTIONS` changes it.
fn connections() -> i64 {
    std::env::var("FANOUT_OUTAGE_CONNECTIONS")
        .ok()
        .and_then(|count| count.parse().ok())
        .unwrap_or(60_000)
}

/// How long after the link returns every event must be out.
const DRAIN_BOUND: Duration = Duration::from_secs(180);

/// What a consumer on the event exchange has received, in arrival order.
#[derive(Default)]
struct Received {
    deliveries: usize,
    event_ids: HashSet<String>,
    connections: HashSet<String>,
    /// Distinct connections whose event had arrived when
    /// `disconnect.completed` did; `None` until it does.
    connections_before_completion: Option<usize>,
    completions: usize,
}

/// A consumer that counts every delivery of the events exchange as it
/// comes (no per-event schema check: tens of thousands arrive at once).
async fn count_events(test: &TestContext) -> Arc<Mutex<Received>> {
    let mut events = test.raw_events().await;
    let received = Arc::new(Mutex::new(Received::default()));
    let counts = received.clone();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let text = |key: &str| event[key].as_str().unwrap_or_default().to_string();
            let mut counts = counts.lock().expect("counts");
            counts.deliveries += 1;
            counts.event_ids.insert(text("event_id"));
            match event["event_type"].as_str().unwrap_or_default() {
                "connection.disconnected" => {
                    counts.connections.insert(text("connection_id"));
                }
                "disconnect.completed" => {
                    counts.completions += 1;
                    let before = counts.connections.len();
                    counts.connections_before_completion.get_or_insert(before);
                }
                other => panic!("an unexpected {other} event"),
            }
        }
    });
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_cut_across_a_whole_fan_out_drains_every_event_once_the_link_returns() {
    let test = TestContext::new().await;
    let connections = connections();
    test.seed_connections(APP, "company-", "gusto", connections, 2)
        .await;
    let received = count_events(&test).await;
    let proxy = Proxy::for_url(&test.amqp_url, 5672).await;
    let through = proxy.url_through(&test.amqp_url);
    let log = test.log_file("fanout-outage");
    // A confirm timeout shorter than the default, so the test does not
    // depend on how fast this machine confirms: the backlog is drained in
    // batches that each fit in it, however large the backlog.
    let worker = test.spawn_worker_process_logging(
        &[
            ("AMQP_URL", &through),
            ("AMQP_CONFIRM_TIMEOUT_SECS", "2"),
            ("LOG_FORMAT", "json"),
        ],
        Logs::File(log.clone()),
    );
    until_ready(&worker).await;

    let channel = test.channel().await;
    let request = client_request(APP);
    test.publish_request(&channel, &request, Some(BROKER_USER))
        .await;
    // The link goes silent as soon as the fan-out's first events are out.
    eventually("the fan-out's first events", || async {
        (received.lock().expect("counts").deliveries > 0).then_some(())
    })
    .await;
    proxy.freeze();
    let cut_at = Instant::now();

    // The fan-out goes on in Postgres while nothing can be published.
    let deadline = Instant::now() + Duration::from_secs(300);
    while test.active_connections(APP, None).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the fan-out stopped while the broker was silent"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let fanned_out = cut_at.elapsed();
    let during_cut = received.lock().expect("counts").deliveries;
    proxy.thaw();
    let returned_at = Instant::now();

    let drained = tokio::time::timeout(DRAIN_BOUND, async {
        loop {
            if received.lock().expect("counts").completions > 0 {
                return returned_at.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        let counts = received.lock().expect("counts");
        panic!(
            "no disconnect.completed within {DRAIN_BOUND:?} of the link's return: {} of \
             {connections} connections' events, {} deliveries",
            counts.connections.len(),
            counts.deliveries
        )
    });
    // Repeats still on their way arrive within a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;

    worker.signal("TERM");
    let status = tokio::time::timeout(Duration::from_secs(60), worker.wait())
        .await
        .expect("the worker to stop");
    {
        let counts = received.lock().expect("counts");
        eprintln!(
            "{connections} connections: fan-out done {fanned_out:?} into the cut ({during_cut} \
             deliveries before it took hold); every event out {drained:?} after the link \
             returned; {} deliveries of {} distinct events ({:.3} each)",
            counts.deliveries,
            counts.event_ids.len(),
            counts.deliveries as f64 / counts.event_ids.len() as f64,
        );
        assert_eq!(
            counts.connections_before_completion,
            Some(connections as usize),
            "disconnect.completed came before every connection's event"
        );
        assert_eq!(counts.connections.len(), connections as usize);
        assert_eq!(counts.event_ids.len(), connections as usize + 1);
        assert!(
            counts.deliveries as f64 <= 1.5 * counts.event_ids.len() as f64,
            "{} deliveries of {} events",
            counts.deliveries,
            counts.event_ids.len()
        );
    }
    assert!(status.success(), "the worker exited with {status:?}");
    assert_eq!(test.unpublished_event_count().await, 0);
    let _ = std::fs::remove_file(log);
}
