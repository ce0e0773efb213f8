//! Faults injected under load: whatever breaks, the invariants of
//! `support::workload` hold once the stream is processed.

use std::process::Command;
use std::time::Duration;

use disconnect_worker::domain::ConnectionStatus;

use crate::support::proxy::Proxy;
use crate::support::workload::{DeadLetters, Workload};
use crate::support::{RunningWorker, TestContext};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_stream_and_restarted_loses_nothing() {
    let test = TestContext::new().await;
    let workload = Workload::prepare(&test, 1500, 2).await;
    let mut events = test.event_tap().await;
    workload.publish(&test).await;
    let worker = test.spawn_worker_process(&[]);
    test.wait_for_progress(300).await;

    worker.signal("KILL");
    let status = worker.wait().await;
    assert_eq!(status.code(), None, "killed by the signal");
    let recorded_at_kill = test.recorded_request_count().await as usize;
    assert!(
        recorded_at_kill < workload.distinct_requests().len(),
        "killed mid-stream"
    );
    let _restarted = test.spawn_worker_process(&[]);

    test.assert_invariants(&workload, &mut events, DeadLetters::AtLeastOnce)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_in_flight_work_and_a_restart_finishes_the_stream() {
    let test = TestContext::new().await;
    let workload = Workload::prepare(&test, 1000, 2).await;
    let mut events = test.event_tap().await;
    workload.publish(&test).await;
    let worker = test.spawn_worker_process(&[]);
    test.wait_for_progress(200).await;

    worker.signal("TERM");
    let status = worker.wait().await;
    assert_eq!(status.code(), Some(0), "a graceful stop exits 0");
    assert_eq!(
        test.unpublished_event_count().await,
        0,
        "events of committed work were published"
    );
    let _restarted = test.spawn_worker_process(&[]);

    test.assert_invariants(&workload, &mut events, DeadLetters::Exactly)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_connections_cut_under_load_lose_nothing() {
    let test = TestContext::new().await;
    let workload = Workload::prepare(&test, 1000, 2).await;
    let proxy = Proxy::for_url(&test.amqp_url, 5672).await;
    let _worker = RunningWorker::spawn(
        test.run_settings_with(&test.database_url, &proxy.url_through(&test.amqp_url)),
    );
    let mut events = test.event_tap().await;
    workload.publish(&test).await;

    for cut in 1..=3 {
        test.wait_for_progress(150 * cut).await;
        proxy.cut();
    }

    test.assert_invariants(&workload, &mut events, DeadLetters::AtLeastOnce)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_going_away_under_load_loses_nothing() {
    let test = TestContext::new().await;
    let workload = Workload::prepare(&test, 1000, 2).await;
    let proxy = Proxy::for_url(&test.database_url, 5432).await;
    let _worker = RunningWorker::spawn(
        test.run_settings_with(&proxy.url_through(&test.database_url), &test.amqp_url),
    );
    let mut events = test.event_tap().await;
    workload.publish(&test).await;

    test.wait_for_progress(200).await;
    proxy.go_down();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during_outage = test.recorded_request_count().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        test.recorded_request_count().await,
        during_outage,
        "nothing commits while Postgres is away"
    );
    proxy.restore();

    // At least once: finding Postgres unreachable, the worker closes its
    // broker session to hand its requests back, and a bad message whose
    // dead-letter copy was confirmed but whose ack had not gone out comes
    // back and is dead-lettered again.
    test.assert_invariants(&workload, &mut events, DeadLetters::AtLeastOnce)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_on_one_queue_keep_every_invariant() {
    let test = TestContext::new().await;
    let workload = Workload::prepare(&test, 400, 3).await;
    let mut events = test.event_tap().await;
    let _workers: Vec<_> = (0..3).map(|_| test.spawn_worker_process(&[])).collect();
    workload.publish(&test).await;

    test.assert_invariants(&workload, &mut events, DeadLetters::Exactly)
        .await;
}

/// `token issue` from several processes while the connection is being
/// disconnected: each new token is revoked with it or lands on a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_issued_from_several_processes_during_a_disconnect_are_never_left_active_on_it() {
    let test = TestContext::new().await;
    let first = test.issue("app", "company-c", "gusto", "user-a").await;
    let _worker = test.spawn_worker_process(&[]);
    let mut events = test.event_tap().await;
    let issuers: Vec<_> = (0..4)
        .map(|_| {
            let mut command: Command = test.command(&[
                "token",
                "issue",
                "--client-id",
                "app",
                "--company-id",
                "company-c",
                "--provider-id",
                "gusto",
            ]);
            std::thread::spawn(move || {
                (0..8)
                    .map(|_| {
                        let output = command.output().expect("token issue");
                        assert!(output.status.success());
                        String::from_utf8_lossy(&output.stdout).trim().to_string()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let request = test
        .request_disconnect(
            &test.channel().await,
            uuid::Uuid::new_v4(),
            first.token.expose(),
        )
        .await;
    let tokens: Vec<String> = issuers
        .into_iter()
        .flat_map(|issuer| issuer.join().expect("issuer"))
        .collect();
    events.event_for(request).await;

    for token in tokens {
        let token = disconnect_worker::domain::AccessToken::parse(token).expect("a token");
        let details = test.introspect(&token).await.details.expect("known");
        if details.connection_id == first.connection_id {
            assert!(
                details.revoked_at.is_some(),
                "a token on the old connection is revoked with it"
            );
        } else {
            assert!(
                details.revoked_at.is_none()
                    && details.connection_status == ConnectionStatus::Active
            );
        }
    }
    assert_eq!(test.active_tokens_on_disconnected_connections().await, 0);
}

/// A broker connection that goes silent (no close, no bytes) is found dead
/// by the AMQP heartbeat, replaced, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_broker_connection_is_detected_by_heartbeats_and_replaced() {
    let test = TestContext::new().await;
    let workload = Workload::prepare(&test, 600, 2).await;
    let proxy = Proxy::for_url(&test.amqp_url, 5672).await;
    // A short heartbeat so the dead path is noticed in seconds, not minutes.
    let mut url = url::Url::parse(&proxy.url_through(&test.amqp_url)).expect("url");
    url.query_pairs_mut().append_pair("heartbeat", "1");
    let _worker = RunningWorker::spawn(test.run_settings_with(&test.database_url, url.as_str()));
    let mut events = test.event_tap().await;
    workload.publish(&test).await;

    test.wait_for_progress(150).await;
    proxy.stall();

    test.assert_invariants(&workload, &mut events, DeadLetters::AtLeastOnce)
        .await;
}
