//! Where the tests find Postgres and RabbitMQ.
//!
//! In order: `TEST_DATABASE_URL` / `TEST_AMQP_URL`; else `DATABASE_URL` /
//! `AMQP_URL`; else, where a Docker engine answers, containers started with
//! testcontainers (kept for the whole test binary); else the services on
//! localhost at their default ports. Only the server part of the database URL
//! matters: every test creates its own database on it.

use std::path::Path;

use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, ImageExt};
use testcontainers_modules::{postgres::Postgres, rabbitmq::RabbitMq};
use tokio::sync::OnceCell;

pub struct Services {
    /// URL of the server's `postgres` database, for creating test databases.
    pub postgres_admin_url: url::Url,
    pub amqp_url: String,
    _containers: Option<(ContainerAsync<Postgres>, ContainerAsync<RabbitMq>)>,
}

static SERVICES: OnceCell<Services> = OnceCell::const_new();

pub async fn services() -> &'static Services {
    SERVICES.get_or_init(resolve).await
}

fn configured(test_var: &str, var: &str) -> Option<String> {
    std::env::var(test_var)
        .ok()
        .or_else(|| std::env::var(var).ok())
        .filter(|value| !value.is_empty())
}

fn docker_available() -> bool {
    std::env::var_os("DOCKER_HOST").is_some() || Path::new("/var/run/docker.sock").exists()
}

async fn resolve() -> Services {
    let database = configured("TEST_DATABASE_URL", "DATABASE_URL");
    let amqp = configured("TEST_AMQP_URL", "AMQP_URL");
    if database.is_none() && amqp.is_none() && docker_available() {
        return start_containers().await;
    }
    let database =
        database.unwrap_or_else(|| disconnect_worker::config::DEFAULT_DATABASE_URL.into());
    let amqp = amqp.unwrap_or_else(|| disconnect_worker::config::DEFAULT_AMQP_URL.into());
    Services {
        postgres_admin_url: admin_url(&database),
        amqp_url: amqp,
        _containers: None,
    }
}

fn admin_url(database_url: &str) -> url::Url {
    let mut url = url::Url::parse(database_url).expect("the test database URL is a URL");
    url.set_path("/postgres");
    url
}

async fn start_containers() -> Services {
    let postgres = Postgres::default()
        .with_tag("15-alpine")
        .start()
        .await
        .expect("starting a Postgres container");
    let rabbitmq = RabbitMq::default()
        .start()
        .await
        .expect("starting a RabbitMQ container");
    let pg_port = postgres
        .get_host_port_ipv4(5432)
        .await
        .expect("Postgres port");
    let amqp_port = rabbitmq
        .get_host_port_ipv4(5672)
        .await
        .expect("RabbitMQ port");
    Services {
        postgres_admin_url: admin_url(&format!(
            "postgres://postgres:postgres@127.0.0.1:{pg_port}/postgres"
        )),
        amqp_url: format!("amqp://guest:guest@127.0.0.1:{amqp_port}/%2f"),
        _containers: Some((postgres, rabbitmq)),
    }
}
