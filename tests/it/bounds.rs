//! Each bounded wait on the network, reached on purpose, one at a time, and
//! what the worker does then. The silent partitions (`partition.rs`) reach
//! several at once at the defaults; here each bound is set short and the
//! others out of its way, so a test fails if that one bound is missing.

use std::process::Command;
use std::time::{Duration, Instant};

use diesel_async::SimpleAsyncConnection;
use disconnect_testkit::process::Logs;
use disconnect_testkit::WorkerProcess;
use disconnect_worker::db::{DatabaseUrl, SessionBounds};
use uuid::Uuid;

use crate::support::process::{json_log_lines, message, until_ready};
use crate::support::proxy::Proxy;
use crate::support::{eventually, scraped, TestContext, PATIENCE};

/// A worker process and its JSON log.
struct Worker {
    process: WorkerProcess,
    log: LogFile,
}

/// A worker's log file, removed when the test ends.
struct LogFile(std::path::PathBuf);

impl LogFile {
    fn count(&self, wanted: &str) -> usize {
        json_log_lines(&self.0)
            .iter()
            .filter(|line| message(line) == wanted)
            .count()
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Worker {
    async fn start(test: &TestContext, name: &str, settings: &[(&str, &str)]) -> Self {
        let log = test.log_file(name);
        let mut env = vec![("LOG_FORMAT", "json"), ("RUST_LOG", "info")];
        env.extend_from_slice(settings);
        let process = test.spawn_worker_process_logging(&env, Logs::File(log.clone()));
        until_ready(&process).await;
        Self {
            process,
            log: LogFile(log),
        }
    }

    /// A worker whose broker link runs through a proxy the test can freeze:
    /// `AMQP_URL` through it, besides `settings`.
    async fn start_through_broker_proxy(
        test: &TestContext,
        name: &str,
        settings: &[(&str, &str)],
    ) -> (Proxy, Self) {
        let proxy = Proxy::for_url(&test.amqp_url, 5672).await;
        let through = proxy.url_through(&test.amqp_url);
        let mut env = vec![("AMQP_URL", through.as_str())];
        env.extend_from_slice(settings);
        let worker = Self::start(test, name, &env).await;
        (proxy, worker)
    }

    async fn metric(&self, series: &str) -> f64 {
        scraped(&self.process, series).await
    }

    /// Wait until `series` reaches `at_least`.
    async fn wait_for_metric(&self, what: &str, series: &str, at_least: f64) {
        eventually(what, || async {
            (self.metric(series).await >= at_least).then_some(())
        })
        .await;
    }

    async fn timeouts(&self, operation: &str) -> f64 {
        self.metric(&format!(
            "disconnect_worker_timeouts_total{{operation=\"{operation}\"}}"
        ))
        .await
    }

    fn logged(&self, wanted: &str) -> usize {
        self.log.count(wanted)
    }
}

/// The server-side bounds arrive with every session the worker opens (in
/// the startup packet), and its sockets probe an idle peer: the waits that
/// only the server or the kernel can end are set where they run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_session_carries_the_server_side_bounds_and_its_socket_probes_the_peer() {
    let test = TestContext::new().await;
    let url = DatabaseUrl::parse(&test.database_url)
        .expect("url")
        .with_bounds(SessionBounds::default());
    let mut conn = url.establish().await.expect("a connection");
    let mut show = Vec::new();
    for setting in [
        "statement_timeout",
        "idle_in_transaction_session_timeout",
        "tcp_keepalives_idle",
        "tcp_keepalives_interval",
        "tcp_user_timeout",
    ] {
        #[derive(diesel::QueryableByName)]
        struct Shown {
            #[diesel(sql_type = diesel::sql_types::Text)]
            value: String,
        }
        let shown: Shown = diesel_async::RunQueryDsl::get_result(
            diesel::sql_query(format!("SELECT current_setting('{setting}') AS value")),
            &mut conn,
        )
        .await
        .expect("a setting");
        show.push((setting, shown.value));
    }
    assert_eq!(
        show,
        [
            ("statement_timeout", "10s".to_string()),
            ("idle_in_transaction_session_timeout", "5s".to_string()),
            ("tcp_keepalives_idle", "5".to_string()),
            ("tcp_keepalives_interval", "5".to_string()),
            ("tcp_user_timeout", "15000".to_string()),
        ]
    );

    // The client's end: the kernel shows a keepalive timer on the socket
    // (the server knows the client's port).
    #[derive(diesel::QueryableByName)]
    struct Port {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        port: i32,
    }
    let port: Port = diesel_async::RunQueryDsl::get_result(
        diesel::sql_query("SELECT inet_client_port() AS port"),
        &mut conn,
    )
    .await
    .expect("the client's port");
    let sockets = Command::new("ss")
        .args(["-tnoH", "state", "established"])
        .arg(format!("( sport = :{} )", port.port))
        .output()
        .expect("running ss");
    let sockets = String::from_utf8_lossy(&sockets.stdout);
    assert!(sockets.contains("timer:(keepalive"), "{sockets}");
}

/// A statement that waits on a row lock longer than
/// `DATABASE_STATEMENT_TIMEOUT_SECS` is cancelled by the server: the batch
/// goes back counted, its transaction's connection stays usable, and the
/// request completes once the lock is free. The client-side deadline is out
/// of the way (15 s), so only the server's timeout can end the wait early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_wait_past_the_statement_timeout_is_cancelled_and_the_request_retried() {
    let test = TestContext::new().await;
    let issued = test.issue("app-a", "C", "gusto", "user-a").await;
    let worker = Worker::start(
        &test,
        "statement-timeout",
        &[("DATABASE_STATEMENT_TIMEOUT_SECS", "1")],
    )
    .await;
    let mut events = test.event_tap().await;
    let channel = test.channel().await;
    let mut holder = test.hold_row_lock(issued.connection_id).await;

    let request = test
        .request_disconnect(&channel, Uuid::new_v4(), issued.token.expose())
        .await;
    let started = Instant::now();
    worker
        .wait_for_metric(
            "the lock wait cancelled and the batch retried",
            "disconnect_worker_requests_total{outcome=\"retried\"}",
            1.0,
        )
        .await;
    let retried_after = started.elapsed();
    holder.batch_execute("ROLLBACK").await.expect("unlocking");

    let event = events.event_for(request).await;
    assert_eq!(event.routing_key, "connection.disconnected");
    assert!(
        retried_after < Duration::from_secs(15),
        "retried after {retried_after:?}: the transaction deadline, not the statement timeout"
    );
    assert_eq!(worker.timeouts("database_transaction").await, 0.0);
    assert!(!test.is_active(&issued).await);
}

/// A transaction past `DATABASE_TRANSACTION_TIMEOUT_SECS` (here a lock wait
/// with no server-side timeout) is given up by the worker: the timeout is
/// counted, the connection is discarded rather than returned to the pool,
/// the batch is tried again, and the request completes once the lock is
/// free, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_past_its_deadline_is_abandoned_and_its_request_retried() {
    let test = TestContext::new().await;
    let issued = test.issue("app-a", "C", "gusto", "user-a").await;
    let worker = Worker::start(
        &test,
        "transaction-deadline",
        &[
            ("DATABASE_STATEMENT_TIMEOUT_SECS", "0"),
            ("DATABASE_TRANSACTION_TIMEOUT_SECS", "2"),
            // The relay's confirms wait inside its transactions.
            ("AMQP_CONFIRM_TIMEOUT_SECS", "1"),
        ],
    )
    .await;
    let mut events = test.event_tap().await;
    let channel = test.channel().await;
    let mut holder = test.hold_row_lock(issued.connection_id).await;

    let request = test
        .request_disconnect(&channel, Uuid::new_v4(), issued.token.expose())
        .await;
    eventually("the transaction deadline reached", || async {
        (worker.timeouts("database_transaction").await >= 1.0).then_some(())
    })
    .await;
    // The batch is tried again on another connection (the abandoned one's
    // session still waits for the lock on the server; the worker no longer
    // holds it), with backoff, until the lock is free: the database
    // answers, so the batch is not given away.
    worker
        .wait_for_metric(
            "the batch tried again",
            "disconnect_worker_retries_total{operation=\"process\"}",
            1.0,
        )
        .await;
    holder.batch_execute("ROLLBACK").await.expect("unlocking");

    let event = events.event_for(request).await;
    assert_eq!(event.routing_key, "connection.disconnected");
    assert_eq!(
        test.outcome_counts().await.get("disconnected").copied(),
        Some(1)
    );
    assert!(!test.is_active(&issued).await);
    // A timed-out transaction is not an unreachable database.
    assert!(matches!(
        worker.process.get("/readyz").await,
        Some((200, _))
    ));
}

/// A publisher confirm that does not come within
/// `AMQP_CONFIRM_TIMEOUT_SECS` (the broker got the event; its answer is
/// held on a link that stopped moving) fails that publish: the event stays
/// in the outbox, the session is kept (the heartbeat, set long here, is
/// what decides a broker is gone), and once the link moves again the relay
/// sends the event and it leaves the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_past_its_deadline_fails_the_publish_and_the_relay_sends_it_later() {
    let test = TestContext::new().await;
    let issued = test.issue("app-a", "C", "gusto", "user-a").await;
    let (proxy, worker) = Worker::start_through_broker_proxy(
        &test,
        "confirm-timeout",
        &[
            ("AMQP_HEARTBEAT_SECS", "120"),
            ("AMQP_CONFIRM_TIMEOUT_SECS", "1"),
        ],
    )
    .await;
    let mut events = test.event_tap().await;
    let channel = test.channel().await;
    // The event's publish carries its routing key: once the worker has sent
    // it, nothing more moves on the link, the confirm included.
    proxy.freeze_when_client_sends(b"connection.disconnected");

    let request = test
        .request_disconnect(&channel, Uuid::new_v4(), issued.token.expose())
        .await;
    tokio::time::timeout(PATIENCE, proxy.frozen())
        .await
        .expect("the worker published the event");
    eventually("the confirm timeout reached", || async {
        (worker.timeouts("broker_confirm").await >= 1.0).then_some(())
    })
    .await;
    assert_eq!(
        test.unpublished_event_count().await,
        1,
        "kept for the relay"
    );
    assert_eq!(worker.timeouts("broker_heartbeat").await, 0.0);

    proxy.thaw();
    test.wait_until_outbox_empty().await;
    let event = events.event_for(request).await;
    assert_eq!(event.routing_key, "connection.disconnected");
    assert_eq!(
        worker.logged("lost the broker session; reconnecting"),
        0,
        "a late confirm does not end the session"
    );
}

/// Stopping while the broker link is silent: cancelling the consumer and
/// closing the session each wait at most their bound, so the worker stops
/// in seconds, not after the heartbeat (set long here) gives up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_while_its_broker_is_silent_exits_within_the_close_bound() {
    let test = TestContext::new().await;
    let (proxy, worker) = Worker::start_through_broker_proxy(
        &test,
        "silent-close",
        &[("AMQP_HEARTBEAT_SECS", "120")],
    )
    .await;
    proxy.freeze();

    let asked = Instant::now();
    worker.process.signal("TERM");
    let Worker { process, log } = worker;
    let status = tokio::time::timeout(Duration::from_secs(30), process.wait())
        .await
        .expect("the worker to exit before the heartbeat ends its session");
    eprintln!(
        "stopped {:?} after SIGTERM on a silent broker link",
        asked.elapsed()
    );
    assert!(status.success(), "{status:?}");
    assert_eq!(log.count("stopped"), 1);
}

/// A broker that takes the TCP connection but never answers the AMQP
/// handshake: each attempt to open a session ends at
/// `AMQP_CONNECT_TIMEOUT_SECS` and is counted, the worker is not ready
/// meanwhile and keeps trying, and once the broker answers it consumes
/// again and the request waiting in the queue completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_never_answers_the_handshake_is_given_up_at_the_connect_bound() {
    let test = TestContext::new().await;
    let issued = test.issue("app-a", "C", "gusto", "user-a").await;
    let (proxy, worker) = Worker::start_through_broker_proxy(
        &test,
        "broker-connect-timeout",
        &[
            ("AMQP_CONNECT_TIMEOUT_SECS", "1"),
            ("RETRY_MAX_DELAY_MS", "1000"),
        ],
    )
    .await;
    // New connections get no byte from now on; the open one is cut, so
    // the worker opens another.
    proxy.freeze();
    proxy.cut();
    worker
        .wait_for_metric(
            "the connect bound reached twice",
            "disconnect_worker_timeouts_total{operation=\"broker_connect\"}",
            2.0,
        )
        .await;
    assert!(
        !matches!(worker.process.get("/readyz").await, Some((200, _))),
        "not ready without a broker session"
    );

    let mut events = test.event_tap().await;
    let channel = test.channel().await;
    let request = test
        .request_disconnect(&channel, Uuid::new_v4(), issued.token.expose())
        .await;
    proxy.thaw();
    let event = events.event_for(request).await;
    assert_eq!(event.routing_key, "connection.disconnected");
}

/// A database that stops answering while the pool must open a connection:
/// the checkout ends at `DATABASE_POOL_TIMEOUT_SECS` and is counted (the
/// connect bound, set long here, is out of the way), the batch goes back
/// to the queue unattempted, and once the database answers the request
/// completes, recorded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_past_its_deadline_hands_the_batch_back_unattempted() {
    let test = TestContext::new().await;
    let issued = test.issue("app-a", "C", "gusto", "user-a").await;
    let proxy = Proxy::for_url(&test.database_url, 5432).await;
    let through = proxy.url_through(&test.database_url);
    let worker = Worker::start(
        &test,
        "checkout-timeout",
        &[
            ("DATABASE_URL", &through),
            ("DATABASE_POOL_TIMEOUT_SECS", "1"),
            ("DATABASE_CONNECT_TIMEOUT_SECS", "60"),
        ],
    )
    .await;
    // The pooled connections are cut, and a new one gets no byte.
    proxy.freeze();
    proxy.cut();

    let mut events = test.event_tap().await;
    let channel = test.channel().await;
    let request = test
        .request_disconnect(&channel, Uuid::new_v4(), issued.token.expose())
        .await;
    worker
        .wait_for_metric(
            "the checkout bound reached",
            "disconnect_worker_timeouts_total{operation=\"database_checkout\"}",
            1.0,
        )
        .await;
    assert_eq!(worker.timeouts("database_connect").await, 0.0);
    assert_eq!(test.outcome_of(request).await, None, "nothing attempted");

    proxy.thaw();
    let event = events.event_for(request).await;
    assert_eq!(event.routing_key, "connection.disconnected");
    assert_eq!(test.recorded_request_count().await, 1);
}

/// A database that goes silent while a starting worker reads the outbox
/// format: the read ends at `DATABASE_TRANSACTION_TIMEOUT_SECS`, is counted,
/// and is retried as an outage (the worker not ready meanwhile); once the
/// database answers, the worker starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_up_whose_database_goes_silent_reading_the_outbox_format_waits_it_out() {
    let test = TestContext::new().await;
    let proxy = Proxy::for_url(&test.database_url, 5432).await;
    // In plaintext, so the proxy can see the statement.
    let through = format!("{}?sslmode=disable", proxy.url_through(&test.database_url));
    proxy.freeze_when_client_sends(b"shared_settings");
    let log = test.log_file("format-read-timeout");
    let process = test.spawn_worker_process_logging(
        &[
            ("DATABASE_URL", &through),
            ("DATABASE_TRANSACTION_TIMEOUT_SECS", "2"),
            ("DATABASE_STATEMENT_TIMEOUT_SECS", "1"),
            ("AMQP_CONFIRM_TIMEOUT_SECS", "1"),
            ("LOG_FORMAT", "json"),
        ],
        Logs::File(log.clone()),
    );
    let worker = Worker {
        process,
        log: LogFile(log),
    };
    tokio::time::timeout(PATIENCE, proxy.frozen())
        .await
        .expect("the worker read the outbox format");
    worker
        .wait_for_metric(
            "the transaction bound reached",
            "disconnect_worker_timeouts_total{operation=\"database_transaction\"}",
            1.0,
        )
        .await;
    assert!(
        !matches!(worker.process.get("/readyz").await, Some((200, _))),
        "not ready while the database is silent"
    );

    proxy.thaw();
    until_ready(&worker.process).await;
}

/// Stopping while the broker link is silent and events wait in the outbox:
/// the last relay sweep fails at the confirm bound, the events stay
/// committed for another replica's relay or the next start, and the stop
/// is still clean (exit 0): nothing was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_that_cannot_publish_the_pending_events_leaves_them_in_the_outbox_and_exits_zero() {
    let test = TestContext::new().await;
    let (proxy, worker) = Worker::start_through_broker_proxy(
        &test,
        "silent-drain",
        &[
            ("AMQP_HEARTBEAT_SECS", "120"),
            ("AMQP_CONFIRM_TIMEOUT_SECS", "1"),
        ],
    )
    .await;
    proxy.freeze();
    test.leave_unpublished_events(&["C1", "C2"], "1 hour").await;

    worker.process.signal("TERM");
    let Worker { process, log } = worker;
    let status = tokio::time::timeout(Duration::from_secs(30), process.wait())
        .await
        .expect("the worker to exit");
    assert!(status.success(), "{status:?}");
    assert_eq!(
        test.unpublished_event_count().await,
        2,
        "left in the outbox"
    );
    assert_eq!(
        log.count(
            "publishing the last pending events failed; they stay in the outbox for another \
             replica's relay or the next start"
        ),
        1
    );
}
