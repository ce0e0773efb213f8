//! A Postgres failover, against real servers: a primary and a streaming
//! standby of the test's own (`disconnect_testkit::postgres_pair`), two
//! replicas of the binary at its defaults, and a paced stream of the fault
//! suite's requests. The primary stops at once (`pg_ctl -m immediate`, as a
//! crash), nothing is primary for a few seconds, then the standby is
//! promoted.
//!
//! The replicas reach Postgres in the two ways production does: through a
//! service address that follows the primary (a Kubernetes Service, a
//! Patroni-managed HAProxy; here the test kit's proxy, retargeted at the
//! promotion), and through libpq's multi-host URL with
//! `target_session_attrs=read-write`, with the old primary brought back as
//! a read-only standby first in the list.
//!
//! Before the stop, the standby's replication link is frozen for a few
//! seconds, so it lags as a busy or distant standby does. With synchronous
//! replication that lag holds commits back and nothing is lost: the fault
//! suite's invariants hold, read on the new primary, so every disconnect
//! whose event went out is true there. With asynchronous replication the
//! same failover loses what the lag held: the test measures it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use disconnect_testkit::postgres_pair::{PostgresPair, Replication};
use uuid::Uuid;

use crate::support::broker::EventTap;
use crate::support::process::{run_to_exit, until_ready};
use crate::support::proxy::Proxy;
use crate::support::replica::Replica;
use crate::support::workload::{DeadLetters, Workload};
use crate::support::{eventually, TestContext};

/// Requests a second of the paced stream.
const RATE: f64 = 20.0;
/// How long the standby lags before the primary stops.
const LAG: Duration = Duration::from_secs(3);
/// How long nothing is primary.
const NO_PRIMARY: Duration = Duration::from_secs(5);
/// The longest a request may wait for its outcome around the failover.
const BOUND: Duration = Duration::from_secs(30);
/// Bound a whole failover test: it must end, and clean up, even if a server
/// hangs.
const FAILOVER_TEST_TIMEOUT: Duration = Duration::from_secs(300);

async fn start_pair(replication: Replication) -> PostgresPair {
    assert!(
        PostgresPair::available(),
        "this test runs Postgres servers of its own from the installed server, as root or a non-root user"
    );
    PostgresPair::start(replication)
        .await
        .expect("starting a primary and a standby")
}

/// What the failover did to the stream.
struct Failover {
    /// From the primary's stop to the standby's promotion.
    no_primary_for: Duration,
    /// When the primary stopped.
    stopped_at: Instant,
}

/// Publish `workload` at [`RATE`] through `replicas` while the pair fails
/// over: the standby's link frozen for [`LAG`] once 100 requests are
/// recorded, the primary stopped, [`NO_PRIMARY`] later the standby
/// promoted, and `after_promotion` run (to point the service address at
/// it, or bring the old primary back). Returns when each request was first
/// published.
async fn fail_over_under_a_stream<F: std::future::Future<Output = ()>>(
    test: &TestContext,
    pair: &PostgresPair,
    workload: &Workload,
    events: &mut EventTap,
    service: Option<&Proxy>,
    lag: Duration,
    after_promotion: impl FnOnce() -> F,
) -> (BTreeMap<Uuid, Instant>, Failover) {
    let stream = workload.publish_paced(test, RATE);
    let failover = async {
        test.wait_for_progress(100).await;
        pair.replication_link().freeze();
        tokio::time::sleep(lag).await;
        pair.stop_immediately(0)
            .await
            .expect("stopping the primary");
        let stopped_at = Instant::now();
        if let Some(service) = service {
            // The primary's endpoint is gone: the address refuses.
            service.go_down();
        }
        tokio::time::sleep(NO_PRIMARY).await;
        pair.promote(1).await.expect("promoting the standby");
        let no_primary_for = stopped_at.elapsed();
        after_promotion().await;
        Failover {
            no_primary_for,
            stopped_at,
        }
    };
    // The tap stamps each event when it takes it: take them as they come.
    let both = async { tokio::join!(stream, failover) };
    tokio::pin!(both);
    loop {
        tokio::select! {
            done = &mut both => break done,
            _ = events.next_within(Duration::from_millis(100)) => {}
        }
    }
}

/// [`fail_over_under_a_stream`] with the replicas behind `service`, an
/// address that follows the primary: it refuses while none exists and
/// carries new connections to the standby once promoted.
async fn fail_over_behind_a_service(
    test: &TestContext,
    pair: &PostgresPair,
    service: &Proxy,
    workload: &Workload,
    events: &mut EventTap,
) -> (BTreeMap<Uuid, Instant>, Failover) {
    fail_over_under_a_stream(test, pair, workload, events, Some(service), LAG, || async {
        service.retarget(pair.address(1));
        service.restore();
    })
    .await
}

/// Two replicas of the binary on `database_url`, ready.
async fn two_replicas(test: &TestContext, database_url: &str) -> [Replica; 2] {
    let replicas =
        ["a", "b"].map(|name| Replica::start(test, name, database_url, &test.amqp_url.clone()));
    for replica in &replicas {
        replica.wait_ready().await;
    }
    replicas
}

/// Every request had its outcome event within [`BOUND`] of its publication.
fn assert_waits_bounded(
    workload: &Workload,
    published: &BTreeMap<Uuid, Instant>,
    events: &EventTap,
    failover: &Failover,
) {
    let waits = workload.waits(published, events);
    let missing: Vec<_> = waits.iter().filter(|(_, wait)| wait.is_none()).collect();
    assert!(
        missing.is_empty(),
        "requests without an outcome event: {missing:?}"
    );
    let longest = waits.values().flatten().max().copied().unwrap_or_default();
    assert!(
        longest <= BOUND,
        "a request waited {longest:?} for its outcome (bound {BOUND:?})"
    );
    eprintln!(
        "failover: {} requests, no primary for {:?}, longest wait {longest:?}",
        waits.len(),
        failover.no_primary_for
    );
}

/// The port of the server the test's own pool reads: the invariants must
/// be read on the new primary.
async fn server_port(test: &TestContext) -> i32 {
    use diesel::sql_types::Integer;
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Port {
        #[diesel(sql_type = Integer)]
        port: i32,
    }
    let mut conn = test.pool.get().await.expect("db");
    diesel::sql_query("SELECT inet_server_port() AS port")
        .get_result::<Port>(&mut conn)
        .await
        .expect("the server's port")
        .port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_behind_a_service_address_loses_nothing_with_a_synchronous_standby() {
    tokio::time::timeout(FAILOVER_TEST_TIMEOUT, async {
        let pair = start_pair(Replication::Synchronous).await;
        let service = Proxy::start(pair.address(0)).await;
        let test = TestContext::on_database(&pair.url_of(&[service.address], "")).await;
        let workload = Workload::prepare(&test, 300, 2).await;
        let mut events = test.event_tap().await;
        let replicas = two_replicas(&test, &test.database_url).await;

        let (published, failover) =
            fail_over_behind_a_service(&test, &pair, &service, &workload, &mut events).await;

        test.assert_invariants(&workload, &mut events, DeadLetters::AtLeastOnce)
            .await;
        assert_eq!(
            server_port(&test).await,
            i32::from(pair.servers[1].port),
            "the invariants were read on the new primary"
        );
        assert_waits_bounded(&workload, &published, &events, &failover);
        for replica in &replicas {
            assert!(
                replica.ready().await,
                "each replica works on the new primary"
            );
            let logged = replica.messages();
            assert!(
                logged
                    .iter()
                    .any(|line| line.starts_with("database replication: synchronous")),
                "the replica says its primary replicates synchronously: {logged:?}"
            );
        }
    })
    .await
    .expect("the failover test ended in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_host_url_follows_the_failover_and_skips_the_old_primary_back_as_a_standby() {
    tokio::time::timeout(FAILOVER_TEST_TIMEOUT, async {
        let pair = start_pair(Replication::Synchronous).await;
        let both = [pair.address(0), pair.address(1)];
        let admin = pair.url_of(&both, "target_session_attrs=read-write");
        let test = TestContext::on_database(&admin).await;
        let workload = Workload::prepare(&test, 300, 2).await;
        let mut events = test.event_tap().await;
        let replicas = two_replicas(&test, &test.database_url).await;

        let (published, failover) =
            fail_over_under_a_stream(&test, &pair, &workload, &mut events, None, LAG, || async {
                pair.rebuild_as_standby(0, 1)
                    .await
                    .expect("bringing the old primary back as a standby");
            })
            .await;
        assert_eq!(
            pair.query(0, "SELECT pg_is_in_recovery()")
                .await
                .expect("asking"),
            "t",
            "the first host of the list is a standby now"
        );

        test.assert_invariants(&workload, &mut events, DeadLetters::AtLeastOnce)
            .await;
        assert_eq!(server_port(&test).await, i32::from(pair.servers[1].port));
        assert_waits_bounded(&workload, &published, &events, &failover);
        for replica in &replicas {
            assert!(
                replica.ready().await,
                "each replica works on the new primary"
            );
        }

        // Every command takes the list, its first host a standby: without
        // TLS, and with TLS checking each host against its own name.
        let certificate = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
        for query in [
            "target_session_attrs=read-write&sslmode=disable".to_string(),
            format!(
                "target_session_attrs=read-write&sslmode=verify-full&sslrootcert={certificate}"
            ),
        ] {
            let url = pair
                .url_of(&both, &query)
                .with_dbname(&test.database.name)
                .expose();
            commands_work_on(&test, &url).await;
        }
    })
    .await
    .expect("the failover test ended in time");
}

/// `migrate`, `token issue`, `token introspect`, `outbox format show` and
/// `outbox set-aside list` succeed on `url`, the token they issued is
/// active, and `run` becomes ready on it (its database check writes).
async fn commands_work_on(test: &TestContext, url: &str) {
    let run = |args: &[&str]| {
        let mut command = test.command(args);
        command.env("DATABASE_URL", url);
        run_to_exit(command)
    };
    let succeeded = |output: std::process::Output, what: &str| {
        assert!(
            output.status.success(),
            "{what} on {url}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    succeeded(run(&["migrate"]).await, "migrate");
    let issued = succeeded(
        run(&[
            "token",
            "issue",
            "--company-id",
            "company-after-failover",
            "--provider-id",
            "gusto",
            "--user",
            "user-a",
        ])
        .await,
        "token issue",
    );
    // It prints the token alone.
    let introspected = succeeded(
        run(&["token", "introspect", &issued]).await,
        "token introspect",
    );
    let introspected: serde_json::Value =
        serde_json::from_str(&introspected).expect("introspection is JSON");
    assert_eq!(introspected["active"], true, "{introspected}");
    succeeded(
        run(&["outbox", "format", "show"]).await,
        "outbox format show",
    );
    succeeded(
        run(&["outbox", "set-aside", "list"]).await,
        "outbox set-aside list",
    );
    let worker = test.spawn_worker_process(&[("DATABASE_URL", url)]);
    until_ready(&worker).await;
}

/// A primary fenced before its demotion (`default_transaction_read_only`,
/// as failover managers do) keeps its sessions: every pooled connection on
/// it now fails each write. The worker drops them, reports not ready while
/// no host takes writes, and goes on with the promoted standby, which the
/// multi-host URL finds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_on_a_fenced_primary_are_dropped_and_the_worker_goes_on_with_the_new_one() {
    tokio::time::timeout(FAILOVER_TEST_TIMEOUT, async {
        let pair = start_pair(Replication::Synchronous).await;
        let both = [pair.address(0), pair.address(1)];
        let test =
            TestContext::on_database(&pair.url_of(&both, "target_session_attrs=read-write")).await;
        let replica = Replica::start(&test, "fenced", &test.database_url, &test.amqp_url);
        replica.wait_ready().await;
        let mut events = test.event_tap().await;
        let channel = test.channel().await;
        // Both tokens issued now, on the first primary (and, synchronously,
        // on its standby): after the fence, only the worker's own pool is
        // under test.
        let before = test.issue("app", "company-before", "gusto", "user-a").await;
        let after = test.issue("app", "company-after", "gusto", "user-a").await;
        let request = test
            .request_disconnect(&channel, Uuid::new_v4(), before.token.expose())
            .await;
        assert_eq!(
            events.event_for(request).await.routing_key,
            "connection.disconnected"
        );

        pair.query(0, "ALTER SYSTEM SET default_transaction_read_only = on")
            .await
            .expect("fencing");
        pair.query(0, "SELECT pg_reload_conf()")
            .await
            .expect("reloading");
        let body = eventually("not ready while no host takes writes", || async {
            let (status, body) = replica.process.get("/readyz").await?;
            (status == 503).then_some(body)
        })
        .await;
        assert!(body.contains("database"), "{body}");

        pair.promote(1).await.expect("promoting the standby");
        let request = test
            .request_disconnect(&channel, Uuid::new_v4(), after.token.expose())
            .await;
        assert_eq!(
            events.event_for(request).await.routing_key,
            "connection.disconnected"
        );
        assert_eq!(server_port(&test).await, i32::from(pair.servers[1].port));
        assert!(!test.is_active(&after).await);
        replica.wait_ready().await;
    })
    .await
    .expect("the test ended in time");
}

/// The same failover with asynchronous replication: the disconnects the
/// lagging standby did not have are gone from the new primary, though their
/// events went out and their requests were acknowledged. The test reports
/// how many and over what window, and checks the worker warned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asynchronous_standby_loses_the_disconnects_of_its_lag_and_the_worker_warns() {
    tokio::time::timeout(FAILOVER_TEST_TIMEOUT, async {
        let pair = start_pair(Replication::Asynchronous).await;
        let service = Proxy::start(pair.address(0)).await;
        let test = TestContext::on_database(&pair.url_of(&[service.address], "")).await;
        let workload = Workload::prepare(&test, 300, 2)
            .await
            .without_bad_messages();
        let mut events = test.event_tap().await;
        let replicas = two_replicas(&test, &test.database_url).await;
        for replica in &replicas {
            eventually("the replication warning", || async {
                (replica
                    .metric("disconnect_worker_database_replication{mode=\"asynchronous\"}")
                    .await
                    == 1.0)
                    .then_some(())
            })
            .await;
            let logged = replica.messages();
            assert!(
                logged
                    .iter()
                    .any(|line| line.starts_with("database replication: asynchronous")),
                "the replica warns of asynchronous replication: {logged:?}"
            );
        }

        let (_, failover) =
            fail_over_behind_a_service(&test, &pair, &service, &workload, &mut events).await;
        // Everything the broker still holds is settled, on the new primary.
        let channel = test.channel().await;
        eventually("the request queue to drain", || async {
            let queue = test.topology.request_queue.as_str();
            (test.ready_messages(&channel, queue).await == 0).then_some(())
        })
        .await;
        eventually("the outbox to drain", || async {
            (test.unpublished_event_count().await == 0).then_some(())
        })
        .await;
        while events.next_within(Duration::from_secs(2)).await.is_some() {}

        // Lost: a request whose outcome event went out, with no outcome on
        // the new primary.
        let mut lost = BTreeSet::new();
        let mut first_lost_event = None;
        for event in &events.received {
            let Ok(request) = event.request_id().parse::<Uuid>() else {
                continue;
            };
            if lost.contains(&request) || test.outcome_of(request).await.is_some() {
                continue;
            }
            lost.insert(request);
            first_lost_event = Some(
                first_lost_event.map_or(event.received_at, |first: Instant| {
                    first.min(event.received_at)
                }),
            );
        }
        let window = first_lost_event
            .map(|first| failover.stopped_at.saturating_duration_since(first))
            .unwrap_or_default();
        eprintln!(
            "asynchronous failover: {} of {} requests had their event sent and are gone from \
             the new primary; the first of those events went out {window:?} before the primary \
             stopped (the standby lagged {LAG:?})",
            lost.len(),
            workload.distinct_requests().len()
        );
        assert!(
            !lost.is_empty(),
            "with the standby {LAG:?} behind, the failover loses what it had not received"
        );
        assert!(
            window <= LAG + Duration::from_secs(1),
            "only the lag's disconnects are lost: {window:?}"
        );
    })
    .await
    .expect("the failover test ended in time");
}

/// A worker whose only host is a standby (a service address that has not
/// followed the failover yet, or a list with no primary) holds no delivery
/// and spends none of a request's delivery limit, however long it lasts:
/// the probe finds the server read-only, the worker gives its deliveries
/// back uncounted and stays away, and the reads it makes on its own
/// schedule (the outbox format, every 5 s) do not bring it back. Once the
/// standby is promoted, the request is processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_given_only_a_standby_holds_nothing_and_counts_nothing_until_it_is_promoted() {
    tokio::time::timeout(FAILOVER_TEST_TIMEOUT, async {
        // Asynchronous: once the standby is promoted, the old primary (where the
        // test's own pool and its cleanup go) has no standby to wait for.
        let pair = start_pair(Replication::Asynchronous).await;
        let test = TestContext::on_database(&pair.admin_url(0)).await;
        let token = test.issue("app", "company-s", "gusto", "user-a").await;
        let standby_only = pair
            .url_of(&[pair.address(1)], "")
            .with_dbname(&test.database.name)
            .expose();
        let replica = Replica::start(&test, "standby-only", &standby_only, &test.amqp_url);
        let mut events = test.event_tap().await;
        let request = test
            .request_disconnect(&test.channel().await, Uuid::new_v4(), token.token.expose())
            .await;
        // Three refreshes of the outbox format, and more.
        tokio::time::sleep(Duration::from_secs(20)).await;
        let retried = replica
            .metric("disconnect_worker_requests_total{outcome=\"retried\"}")
            .await;
        let released = replica
            .metric("disconnect_worker_requests_total{outcome=\"released\"}")
            .await;
        assert_eq!(retried, 0.0, "no delivery was counted against its limit");
        assert!(
            released <= 1.0,
            "the worker stayed away from the queue: {released} deliveries taken and given back"
        );
        assert!(!replica.ready().await, "not ready on a standby");
        assert_eq!(test.outcome_of(request).await, None);

        pair.promote(1).await.expect("promoting the standby");
        assert_eq!(
            events.event_for(request).await.routing_key,
            "connection.disconnected"
        );
    })
    .await
    .expect("the test ended in time");
}
