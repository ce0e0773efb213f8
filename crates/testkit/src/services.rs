//! Where the tests find Postgres and RabbitMQ.
//!
//! In order: `TEST_DATABASE_URL` / `TEST_AMQP_URL`; else `DATABASE_URL` /
//! `AMQP_URL`; else, where a Docker engine answers (and the `containers`
//! feature is on), containers started with testcontainers (kept for the
//! whole process); else the services on localhost at their default ports.
//! Only the server part of the database URL matters: every user creates
//! its own database on it.

use disconnect_worker::config::{DEFAULT_AMQP_URL, DEFAULT_DATABASE_URL};
use disconnect_worker::db::connect::LibpqUrl;
use tokio::sync::OnceCell;

pub struct Services {
    /// URL of the server's `postgres` database, for creating databases
    /// (libpq's form: several hosts allowed).
    pub postgres_admin_url: LibpqUrl,
    pub amqp_url: String,
    #[cfg(feature = "containers")]
    _containers: Option<containers::Running>,
}

static SERVICES: OnceCell<Services> = OnceCell::const_new();

/// The servers for this process, found (or started) once.
pub async fn services() -> &'static Services {
    SERVICES.get_or_init(resolve).await
}

fn configured(test_var: &str, var: &str) -> Option<String> {
    std::env::var(test_var)
        .ok()
        .or_else(|| std::env::var(var).ok())
        .filter(|value| !value.is_empty())
}

async fn resolve() -> Services {
    let database = configured("TEST_DATABASE_URL", "DATABASE_URL");
    let amqp = configured("TEST_AMQP_URL", "AMQP_URL");
    #[cfg(feature = "containers")]
    if database.is_none() && amqp.is_none() && containers::docker_available() {
        return containers::start().await;
    }
    Services {
        postgres_admin_url: admin_url(&database.unwrap_or_else(|| DEFAULT_DATABASE_URL.into())),
        amqp_url: amqp.unwrap_or_else(|| DEFAULT_AMQP_URL.into()),
        #[cfg(feature = "containers")]
        _containers: None,
    }
}

/// The URL of the `postgres` database on the servers of `database_url`.
pub fn admin_url(database_url: &str) -> LibpqUrl {
    LibpqUrl::parse("the test database URL", database_url)
        .unwrap_or_else(|error| panic!("{error}"))
        .with_dbname("postgres")
}

#[cfg(feature = "containers")]
mod containers {
    use std::path::Path;

    use testcontainers::runners::AsyncRunner;
    use testcontainers::{ContainerAsync, ImageExt};
    use testcontainers_modules::{postgres::Postgres, rabbitmq::RabbitMq};

    use super::{admin_url, Services};

    pub type Running = (ContainerAsync<Postgres>, ContainerAsync<RabbitMq>);

    pub fn docker_available() -> bool {
        std::env::var_os("DOCKER_HOST").is_some() || Path::new("/var/run/docker.sock").exists()
    }

    pub async fn start() -> Services {
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
}
