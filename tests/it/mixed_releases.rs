//! The previous release (0.3.0, its own binary) beside this one, as in a
//! rolling upgrade or a rollback: with the outbox format a database upgraded
//! from 0.3.x starts in (`whole`), a fan-out worked on by both keeps its
//! `disconnect.completed` after every one of its connections' events when
//! the replica that took it, of either release, has its broker link go
//! silent as it publishes a chunk and is then killed, and no event is ever kept by reference (0.3.0 can neither
//! publish one nor wait for one, and its retention does not keep the rows
//! one is rebuilt from).

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use disconnect_testkit::process::{worker_env, Logs};
use disconnect_testkit::WorkerProcess;
use uuid::Uuid;

use crate::support::process::{succeeded, until_ready, BINARY};
use crate::support::proxy::Proxy;
use crate::support::releases::binary_of_0_3;
use crate::support::scopes::{client_request, BROKER_USER};
use crate::support::{eventually, TestContext};

const APP: &str = "app-offboarded";
const CONNECTIONS: i64 = 1_000;

/// What a consumer of the events exchange saw, in arrival order.
#[derive(Default)]
struct Seen {
    connections: HashSet<String>,
    /// Distinct connection events in when `disconnect.completed` came.
    before_completion: Option<usize>,
    /// Single requests with their event.
    answered: HashSet<String>,
}

async fn watch_events(test: &TestContext) -> Arc<Mutex<Seen>> {
    let mut events = test.raw_events().await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shared = seen.clone();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let mut seen = shared.lock().expect("seen");
            let client = event["client_id"].as_str().unwrap_or_default();
            match event["event_type"].as_str() {
                Some("connection.disconnected") if client == APP => {
                    let id = event["connection_id"].as_str().unwrap_or_default();
                    seen.connections.insert(id.to_string());
                }
                Some("disconnect.completed") => {
                    let before = seen.connections.len();
                    seen.before_completion.get_or_insert(before);
                }
                _ => {
                    let request = event["request_id"].as_str().unwrap_or_default();
                    seen.answered.insert(request.to_string());
                }
            }
        }
    });
    seen
}

/// A replica of `binary` with the test's names and short polls.
fn replica(
    test: &TestContext,
    binary: &std::path::Path,
    amqp_url: &str,
    name: &str,
) -> WorkerProcess {
    let mut env = worker_env(&test.database_url, amqp_url, &test.topology);
    env.extend([
        ("AUTHORIZED_PUBLISHERS", format!("{BROKER_USER}:*")),
        ("RUN_MIGRATIONS", "false".into()),
        ("FANOUT_CHUNK_SIZE", "10".into()),
        ("OUTBOX_POLL_MS", "200".into()),
        ("RETENTION_INTERVAL_SECS", "1".into()),
        ("LOG_FORMAT", "json".into()),
        ("RUST_LOG", "info".into()),
    ]);
    WorkerProcess::spawn(binary, &env, Logs::File(test.log_file(name))).expect("starting a replica")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_beside_0_3_0_completes_after_all_its_events_when_the_new_replica_is_cut_and_killed(
) {
    let old = binary_of_0_3().await;
    cut_and_killed_mid_fan_out(BINARY.as_ref(), &old).await;
}

/// The other way: 0.3.0 takes the fan-out and is cut and killed, and this
/// release works on alone on the rows 0.3.0 left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_0_3_0_started_completes_after_all_its_events_when_0_3_0_is_cut_and_killed() {
    let old = binary_of_0_3().await;
    cut_and_killed_mid_fan_out(&old, BINARY.as_ref()).await;
}

/// The replica of `first` takes a fan-out, its broker link goes silent
/// right after it sends the first event of its first chunk (those events
/// stay in the outbox), and it is killed; the replica of `then`, started
/// meanwhile, works on alone. `disconnect.completed` must come after every
/// connection's event, every single request must be answered, no event may
/// ever be kept by reference, and both releases stop cleanly.
async fn cut_and_killed_mid_fan_out(first: &std::path::Path, then: &std::path::Path) {
    let test = TestContext::new().await;
    // As a database upgraded from 0.3.x is.
    succeeded(test.command(&["outbox", "format", "set", "whole", "--no-wait"]));
    test.seed_connections(APP, "company-", "gusto", CONNECTIONS, 1)
        .await;
    let mut singles = Vec::new();
    for company in 0..20 {
        singles.push(
            test.issue("app-other", &format!("C{company}"), "gusto", "u")
                .await,
        );
    }
    let references = Arc::new(AtomicI64::new(0));
    let sampler = {
        let pool = test.bounded_pool();
        let most = references.clone();
        tokio::spawn(async move {
            loop {
                let count: Result<i64, _> = pool
                    .run(async |conn| {
                        use diesel::prelude::*;
                        use diesel_async::RunQueryDsl;
                        disconnect_worker::db::schema::outbox_disconnections::table
                            .count()
                            .get_result(conn)
                            .await
                    })
                    .await;
                most.fetch_max(count.unwrap_or_default(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let seen = watch_events(&test).await;
    let proxy = Proxy::for_url(&test.amqp_url, 5672).await;
    let cut = replica(
        &test,
        first,
        &proxy.url_through(&test.amqp_url),
        "mixed-cut",
    );
    until_ready(&cut).await;

    proxy.freeze_when_client_sends(b"connection.disconnected");
    let channel = test.channel().await;
    let fan_out = client_request(APP);
    test.publish_request(&channel, &fan_out, Some(BROKER_USER))
        .await;
    tokio::time::timeout(Duration::from_secs(60), proxy.frozen())
        .await
        .expect("the first replica to take a chunk");
    let at_cut = seen.lock().expect("seen").connections.len();
    let goes_on = replica(&test, then, &test.amqp_url, "mixed-goes-on");
    until_ready(&goes_on).await;
    let mut single_ids = Vec::new();
    for token in &singles {
        single_ids.push(
            test.request_disconnect(&channel, Uuid::new_v4(), token.token.expose())
                .await,
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    cut.signal("KILL");
    drop(cut);

    eventually("disconnect.completed", || async {
        seen.lock().expect("seen").before_completion.map(|_| ())
    })
    .await;
    eventually("every single request answered", || async {
        let seen = seen.lock().expect("seen");
        single_ids
            .iter()
            .all(|id| seen.answered.contains(&id.to_string()))
            .then_some(())
    })
    .await;
    sampler.abort();
    // The killed release again, once the other alone finished the work.
    let restarted = replica(&test, first, &test.amqp_url, "mixed-cut-again");
    until_ready(&restarted).await;
    {
        let seen = seen.lock().expect("seen");
        eprintln!(
            "{at_cut} connection events out when the first replica's link went silent; \
             {:?} when disconnect.completed came; at most {} events kept by reference",
            seen.before_completion,
            references.load(Ordering::Relaxed)
        );
        assert_eq!(
            seen.before_completion,
            Some(CONNECTIONS as usize),
            "disconnect.completed came before some of its connections' events"
        );
        assert_eq!(seen.connections.len(), CONNECTIONS as usize);
    }
    assert_eq!(test.active_connections(APP, None).await, 0);
    assert_eq!(
        references.load(Ordering::Relaxed),
        0,
        "an event was kept by reference beside 0.3.0"
    );
    for (name, process) in [
        ("the one that went on", goes_on),
        ("the restarted one", restarted),
    ] {
        process.signal("TERM");
        let status = tokio::time::timeout(Duration::from_secs(60), process.wait())
            .await
            .expect("a replica to stop");
        assert!(status.success(), "{name} exited with {status:?}");
    }
}
