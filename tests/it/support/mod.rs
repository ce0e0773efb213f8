//! Shared test support, on top of the test kit (`crates/testkit`): each test
//! gets its own database and its own exchange and queue names on the shared
//! servers, so tests run in parallel.

pub mod broker;
pub mod entities;
pub mod outbox;
pub mod process;
pub mod proxy;
pub mod queries;
pub mod releases;
pub mod replica;
pub mod scopes;
pub mod webhooks;
pub mod workload;

use std::future::Future;
use std::time::Duration;

use diesel_async::pooled_connection::deadpool::Object;
use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};
use disconnect_testkit::broker::{delete_topology, unique_topology};
use disconnect_testkit::process::worker_env;
use disconnect_testkit::{services, TestDatabase};
use disconnect_worker::broker::{BrokerUrls, Topology};
use disconnect_worker::db::connect::LibpqUrl;
use disconnect_worker::db::{
    BoundedPool, DatabaseHealth, DatabaseUrl, DbPool, Deadlines, SessionBounds,
};
use disconnect_worker::domain::{AccessToken, Authorizations, ConnectionId, IssuedToken};
use disconnect_worker::outbox::OutboxSettings;
use disconnect_worker::retention::RetentionSettings;
use disconnect_worker::retry::RetrySettings;
use disconnect_worker::service::{self, Introspection, TokenGrant};
use disconnect_worker::worker::{self, BrokerSettings, ConsumeSettings, ScopeSettings, Settings};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a test waits for something that should happen quickly; only a
/// bound on a wait, never an assertion about speed.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub struct TestContext {
    pub database: TestDatabase,
    pub database_url: String,
    pub amqp_url: String,
    pub topology: Topology,
    pub pool: DbPool,
}

impl TestContext {
    /// A fresh database with the schema, and a declared topology with
    /// unique names.
    pub async fn new() -> Self {
        let amqp_url = services::services().await.amqp_url.clone();
        Self::on_broker(&amqp_url, &amqp_url).await
    }

    /// As [`Self::new`], on another broker: the test's own connections go
    /// to `amqp_url`, and the topology is declared through `declare_via`
    /// (a cluster node, which then leads the quorum queues).
    pub async fn on_broker(amqp_url: &str, declare_via: &str) -> Self {
        let services = services::services().await;
        Self::on_servers(&services.postgres_admin_url, amqp_url, declare_via).await
    }

    /// As [`Self::new`], with the database on the Postgres servers of
    /// `admin_url` (a pair of the test's own).
    pub async fn on_database(admin_url: &LibpqUrl) -> Self {
        let amqp_url = services::services().await.amqp_url.clone();
        Self::on_servers(admin_url, &amqp_url, &amqp_url).await
    }

    async fn on_servers(admin_url: &LibpqUrl, amqp_url: &str, declare_via: &str) -> Self {
        init_logging();
        let database = TestDatabase::create(admin_url, "dwtest")
            .await
            .expect("creating the test database");
        let context = Self {
            database_url: database.url.clone(),
            pool: database.pool(16),
            database,
            amqp_url: amqp_url.to_string(),
            topology: unique_topology("t"),
        };
        let channel = broker::channel(declare_via).await;
        context
            .topology
            .declare(&channel)
            .await
            .expect("declaring the test topology");
        context
    }

    /// Settings for an in-process worker on this test's database and names,
    /// with short retry delays so recovery tests do not wait long.
    pub fn run_settings(&self) -> Settings {
        self.run_settings_with(&self.database_url, &self.amqp_url)
    }

    pub fn run_settings_with(&self, database_url: &str, amqp_url: &str) -> Settings {
        let retry = RetrySettings {
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(500),
            max_attempts: 3,
        };
        Settings {
            database: disconnect_worker::db::DatabaseSettings {
                url: DatabaseUrl::parse(database_url)
                    .expect("url")
                    .with_bounds(SessionBounds::default()),
                pool_size: 8,
                deadlines: Deadlines::default(),
            },
            broker: BrokerSettings {
                urls: BrokerUrls::parse("AMQP_URL", amqp_url).expect("url"),
                topology: self.topology.clone(),
                declare_topology: true,
                prefetch: 16,
            },
            consume: ConsumeSettings {
                batch_size: 8,
                batch_linger: Duration::ZERO,
                max_request_bytes: 16 * 1024,
            },
            outbox: OutboxSettings {
                exchange: self.topology.event_exchange.clone(),
                relay_delay: Duration::from_millis(1000),
                poll_interval: Duration::from_millis(200),
                batch_size: 100,
                confirm_timeout: Duration::from_secs(5),
                retry: retry.clone(),
            },
            scopes: ScopeSettings {
                // The test broker's user may ask for every application, so
                // tests of wide scopes publish as it.
                authorizations: Authorizations::parse("AUTHORIZED_PUBLISHERS", "guest:*")
                    .expect("valid"),
                fanout_chunk_size: 50,
            },
            retention: RetentionSettings::default(),
            retry,
            shutdown_grace: Duration::from_secs(20),
            run_migrations: false,
            http_address: None,
        }
    }

    pub fn spawn_worker(&self) -> RunningWorker {
        RunningWorker::spawn(self.run_settings())
    }

    /// Where most end-to-end tests start: a tap on the events (declared
    /// first, so no event is missed), a running worker, and a channel to
    /// publish requests on.
    pub async fn running(&self) -> (broker::EventTap, RunningWorker, lapin::Channel) {
        let events = self.event_tap().await;
        let worker = self.spawn_worker();
        (events, worker, self.channel().await)
    }

    /// The test's pool as the worker's components take it: with the
    /// default deadlines, and a health that never probes.
    pub fn bounded_pool(&self) -> BoundedPool {
        BoundedPool::new(
            self.pool.clone(),
            Deadlines::default(),
            DatabaseHealth::without_probe(),
        )
    }

    pub async fn channel(&self) -> lapin::Channel {
        broker::channel(&self.amqp_url).await
    }

    /// Issue a token through the same function the CLI uses.
    pub async fn issue(
        &self,
        client: &str,
        company: &str,
        provider: &str,
        user: &str,
    ) -> IssuedToken {
        self.issue_with_entities(client, company, provider, user, &[])
            .await
    }

    /// Issue a token for this grant.
    pub async fn issue_grant(&self, grant: &TokenGrant) -> IssuedToken {
        let mut conn = self.pool.get().await.expect("db connection");
        service::issue_token(&mut conn, grant)
            .await
            .expect("issuing a token")
    }

    pub async fn introspect(&self, token: &AccessToken) -> Introspection {
        let mut conn = self.pool.get().await.expect("db connection");
        service::introspect_token(&mut conn, token)
            .await
            .expect("introspecting")
    }

    pub async fn is_active(&self, token: &IssuedToken) -> bool {
        self.introspect(&token.token).await.active
    }

    /// A transaction of the test's that holds a connection's row lock, as
    /// another replica's would, until it is rolled back.
    pub async fn hold_row_lock(&self, connection: ConnectionId) -> Object<AsyncPgConnection> {
        let mut holder = self.pool.get().await.expect("db");
        holder
            .batch_execute(&format!(
                "BEGIN; SELECT id FROM connections WHERE id = '{connection}' FOR UPDATE"
            ))
            .await
            .expect("locking the connection");
        holder
    }

    /// Environment for running the `disconnect-worker` binary against this
    /// test's database and names, with short retry delays.
    pub fn binary_env(&self) -> Vec<(&'static str, String)> {
        let mut env = worker_env(&self.database_url, &self.amqp_url, &self.topology);
        env.extend([
            ("RETRY_MIN_DELAY_MS", "20".into()),
            ("RETRY_MAX_DELAY_MS", "500".into()),
            ("OUTBOX_POLL_MS", "200".into()),
            // The test broker's user may ask for every application.
            ("AUTHORIZED_PUBLISHERS", "guest:*".into()),
            ("RUST_LOG", "info".into()),
        ]);
        env
    }
}

impl Drop for TestContext {
    /// Delete this test's queues, exchanges and database, also when the test
    /// failed. Runs on its own thread because Drop cannot await.
    fn drop(&mut self) {
        self.pool.close();
        let amqp_url = self.amqp_url.clone();
        let topology = self.topology.clone();
        let database = self.database.clone();
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                delete_topology(&amqp_url, &topology).await;
                database.drop_database().await;
            });
        });
        let _ = cleanup.join();
    }
}

/// An in-process worker, stopped when dropped.
pub struct RunningWorker {
    pub shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl RunningWorker {
    pub fn spawn(settings: Settings) -> Self {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(worker::run(settings, None, shutdown.clone()));
        Self {
            shutdown,
            task: Some(task),
        }
    }

    /// Ask for a graceful stop and return how the worker ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(task) => task.await.expect("the worker task panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for RunningWorker {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Poll `check` until it returns `Some`, or panic after [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One sample of a worker process's metrics (0 when absent or when the
/// worker does not answer).
pub async fn scraped(process: &disconnect_testkit::WorkerProcess, series: &str) -> f64 {
    let scrape = process.get("/metrics").await.map(|(_, body)| body);
    scrape
        .as_deref()
        .and_then(|scrape| sample(scrape, series))
        .unwrap_or_default()
}

/// The value of one sample line (`name{labels} value`) in a Prometheus scrape.
pub fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Test logs stay quiet unless TEST_LOG is set (to a filter, e.g. `debug`).
fn init_logging() {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}
