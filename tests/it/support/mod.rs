//! Shared test support: each test gets its own database and its own exchange
//! and queue names on the shared servers, so tests run in parallel.

pub mod broker;
pub mod process;
pub mod proxy;
pub mod queries;
pub mod services;
pub mod worker;
pub mod workload;

use std::future::Future;
use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use disconnect_worker::broker::Topology;
use disconnect_worker::config::RunSettings;
use disconnect_worker::db::{self, DatabaseSettings, DbPool};
use disconnect_worker::domain::{AccessToken, IssuedToken};
use disconnect_worker::retry::RetrySettings;
use disconnect_worker::secret::SecretUrl;
use disconnect_worker::service::{self, Introspection, TokenGrant};
use disconnect_worker::worker::WorkerSettings;

pub use worker::RunningWorker;

/// How long a test waits for something that should happen quickly; only a
/// bound on a wait, never an assertion about speed.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub struct TestContext {
    pub database_name: String,
    pub database_url: String,
    pub amqp_url: String,
    pub topology: Topology,
    pub pool: DbPool,
    admin_url: url::Url,
}

impl TestContext {
    /// A fresh, migrated database and a declared topology with unique names.
    pub async fn new() -> Self {
        init_logging();
        let services = services::services().await;
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let database_name = format!("dwtest_{unique}");
        let mut admin = AsyncPgConnection::establish(services.postgres_admin_url.as_str())
            .await
            .expect("connecting to the test Postgres server");
        diesel::sql_query(format!("CREATE DATABASE \"{database_name}\""))
            .execute(&mut admin)
            .await
            .expect("creating the test database");
        let mut url = services.postgres_admin_url.clone();
        url.set_path(&format!("/{database_name}"));
        let database_url = url.to_string();
        let secret = SecretUrl::parse("DATABASE_URL", &database_url, &["postgres"]).expect("url");
        db::migrate(&secret)
            .await
            .expect("migrating the test database");
        let pool = db::connect(&DatabaseSettings {
            url: secret,
            pool_size: 16,
        })
        .expect("pool");
        let topology = Topology::with_prefix(&format!("t{}", &unique[..12]), 10);
        let context = Self {
            database_name,
            database_url,
            amqp_url: services.amqp_url.clone(),
            topology,
            pool,
            admin_url: services.postgres_admin_url.clone(),
        };
        let channel = context.channel().await;
        context
            .topology
            .declare(&channel)
            .await
            .expect("declaring the test topology");
        context
    }

    /// Settings for an in-process worker on this test's database and names,
    /// with short retry delays so recovery tests do not wait long.
    pub fn run_settings(&self) -> RunSettings {
        self.run_settings_with(&self.database_url, &self.amqp_url)
    }

    pub fn run_settings_with(&self, database_url: &str, amqp_url: &str) -> RunSettings {
        RunSettings {
            database: DatabaseSettings {
                url: SecretUrl::parse("DATABASE_URL", database_url, &["postgres"]).expect("url"),
                pool_size: 8,
            },
            amqp_url: SecretUrl::parse("AMQP_URL", amqp_url, &["amqp"]).expect("url"),
            topology: self.topology.clone(),
            worker: WorkerSettings {
                prefetch: 16,
                batch_size: 8,
                batch_linger: Duration::ZERO,
                max_request_bytes: 16 * 1024,
                retry: RetrySettings {
                    min_delay: Duration::from_millis(20),
                    max_delay: Duration::from_millis(500),
                    max_attempts: 3,
                },
                shutdown_grace: Duration::from_secs(20),
                outbox_poll_interval: Duration::from_millis(200),
                outbox_batch_size: 100,
                outbox_relay_delay: Duration::from_millis(1000),
                outbox_retention: None,
            },
            run_migrations: false,
            http_address: None,
        }
    }

    pub fn spawn_worker(&self) -> RunningWorker {
        RunningWorker::spawn(self.run_settings())
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
        let mut conn = self.pool.get().await.expect("db connection");
        service::issue_token(
            &mut conn,
            &TokenGrant {
                client_id: client.into(),
                company_id: company.into(),
                provider_id: provider.into(),
                user: Some(user.into()),
                products: vec!["directory".into()],
            },
        )
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

    /// Environment for running the `disconnect-worker` binary against this
    /// test's database and names.
    pub fn binary_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DATABASE_URL", self.database_url.clone()),
            ("AMQP_URL", self.amqp_url.clone()),
            ("REQUEST_EXCHANGE", self.topology.request_exchange.clone()),
            ("REQUEST_QUEUE", self.topology.request_queue.clone()),
            (
                "REQUEST_ROUTING_KEY",
                self.topology.request_routing_key.clone(),
            ),
            (
                "DEAD_LETTER_EXCHANGE",
                self.topology.dead_letter_exchange.clone(),
            ),
            ("DEAD_LETTER_QUEUE", self.topology.dead_letter_queue.clone()),
            ("EVENT_EXCHANGE", self.topology.event_exchange.clone()),
            ("DELIVERY_LIMIT", self.topology.delivery_limit.to_string()),
            ("RETRY_MIN_DELAY_MS", "20".into()),
            ("RETRY_MAX_DELAY_MS", "500".into()),
            ("OUTBOX_POLL_MS", "200".into()),
            ("RUST_LOG", "info".into()),
        ]
    }
}

impl Drop for TestContext {
    /// Delete this test's queues, exchanges and database, also when the test
    /// failed. Runs on its own thread because Drop cannot await.
    fn drop(&mut self) {
        let amqp_url = self.amqp_url.clone();
        let topology = self.topology.clone();
        let admin_url = self.admin_url.clone();
        let database_name = self.database_name.clone();
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                broker::delete_topology(&amqp_url, &topology).await;
                if let Ok(mut admin) = AsyncPgConnection::establish(admin_url.as_str()).await {
                    let _ = diesel::sql_query(format!(
                        "DROP DATABASE IF EXISTS \"{database_name}\" WITH (FORCE)"
                    ))
                    .execute(&mut admin)
                    .await;
                }
            });
        });
        let _ = cleanup.join();
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

/// Test logs stay quiet unless TEST_LOG is set (to a filter, e.g. `debug`).
fn init_logging() {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}
