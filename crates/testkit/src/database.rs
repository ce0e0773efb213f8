//! A database of one's own on a shared server, cloned from a template that
//! was migrated once (crates.io's way): a clone is one `CREATE DATABASE ...
//! TEMPLATE`, cheaper than running every migration again, and each test (or
//! benchmark run) works on a database nobody else touches, so they run in
//! parallel and never reset the shared server.
//!
//! The template is named after the digest of `migrations/`, so an edited
//! migration gets a new template; it is built once per server and kept.

use anyhow::Context;
use diesel::sql_types::{Bool, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use disconnect_worker::db::connect::LibpqUrl;
use disconnect_worker::db::setup::MIGRATIONS_DIGEST;
use disconnect_worker::db::{self, DatabaseSettings, DatabaseUrl, DbPool, Deadlines};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

/// Key of the advisory lock that serialises building the template across
/// processes (a test run and a benchmark at once): "dw-tmpl" in ASCII.
const TEMPLATE_LOCK_KEY: i64 = 0x0064_772d_746d_706c;

#[derive(Debug, Clone)]
pub struct TestDatabase {
    pub name: String,
    /// The database's URL, with the server's credentials.
    pub url: String,
    admin_url: LibpqUrl,
}

impl TestDatabase {
    /// A new database `{prefix}_{random}` on the server of `admin_url` (its
    /// `postgres` database), holding the current schema and no rows.
    pub async fn create(admin_url: &LibpqUrl, prefix: &str) -> anyhow::Result<Self> {
        let template = template(admin_url).await?;
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let mut admin = connect(admin_url).await?;
        admin
            .batch_execute(&format!(
                "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
            ))
            .await
            .with_context(|| format!("creating {name} from the template {template}"))?;
        Ok(Self {
            url: admin_url.with_dbname(&name).expose(),
            name,
            admin_url: admin_url.clone(),
        })
    }

    /// The database `name` on the server of `admin_url`, cloned from the
    /// template if it does not exist yet: one that is kept between runs
    /// (the benchmark's large population). Returns whether it was created.
    pub async fn kept(admin_url: &LibpqUrl, name: &str) -> anyhow::Result<(Self, bool)> {
        #[derive(diesel::QueryableByName)]
        struct Found {
            #[diesel(sql_type = Bool)]
            found: bool,
        }
        let template = template(admin_url).await?;
        let mut admin = connect(admin_url).await?;
        let found: Found = diesel::sql_query(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS found",
        )
        .bind::<Text, _>(name)
        .get_result(&mut admin)
        .await?;
        if !found.found {
            admin
                .batch_execute(&format!(
                    "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
                ))
                .await
                .with_context(|| format!("creating {name} from the template {template}"))?;
        }
        let database = Self {
            url: admin_url.with_dbname(name).expose(),
            name: name.to_string(),
            admin_url: admin_url.clone(),
        };
        Ok((database, !found.found))
    }

    /// A name for a database that does not exist yet, on the server of
    /// `admin_url`: for testing what creates it. `drop_database` removes it.
    pub fn not_created(admin_url: &LibpqUrl, prefix: &str) -> Self {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        Self {
            url: admin_url.with_dbname(&name).expose(),
            name,
            admin_url: admin_url.clone(),
        }
    }

    pub fn database_url(&self) -> DatabaseUrl {
        DatabaseUrl::parse(&self.url).expect("a database URL made from a valid one")
    }

    pub fn settings(&self, pool_size: usize) -> DatabaseSettings {
        DatabaseSettings {
            url: self.database_url(),
            pool_size,
            deadlines: Deadlines::default(),
        }
    }

    pub fn pool(&self, pool_size: usize) -> DbPool {
        db::connect(&self.settings(pool_size)).expect("building a pool never connects")
    }

    /// A pool whose sessions carry this `application_name`, to tell them
    /// from a worker's in `pg_stat_activity`.
    pub fn pool_named(&self, pool_size: usize, application_name: &str) -> DbPool {
        let url = self
            .database_url()
            .libpq_url()
            .with_param("application_name", application_name);
        let settings = DatabaseSettings {
            url: DatabaseUrl::parse(&url.expose()).expect("a valid URL with one more parameter"),
            ..self.settings(pool_size)
        };
        db::connect(&settings).expect("building a pool never connects")
    }

    /// Drop the database, ending any session still on it.
    pub async fn drop_database(&self) {
        if let Ok(mut admin) = connect(&self.admin_url).await {
            let _ = admin
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                    self.name
                ))
                .await;
        }
    }
}

async fn connect(admin_url: &LibpqUrl) -> anyhow::Result<AsyncPgConnection> {
    let url = DatabaseUrl::parse(&admin_url.expose()).map_err(anyhow::Error::msg)?;
    Ok(url.establish().await?)
}

/// The migrated template's name, building it the first time in this
/// process if the server does not have it yet.
async fn template(admin_url: &LibpqUrl) -> anyhow::Result<String> {
    // One per set of servers: a test may make servers of its own.
    static TEMPLATES: Mutex<BTreeMap<String, Arc<OnceCell<String>>>> = Mutex::new(BTreeMap::new());
    let cell = TEMPLATES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .entry(admin_url.expose())
        .or_default()
        .clone();
    cell.get_or_try_init(|| build_template(admin_url))
        .await
        .cloned()
}

async fn build_template(admin_url: &LibpqUrl) -> anyhow::Result<String> {
    let name = format!("dwtest_template_{MIGRATIONS_DIGEST}");
    let mut admin = connect(admin_url).await?;
    diesel::sql_query("SELECT pg_advisory_lock($1)")
        .bind::<diesel::sql_types::BigInt, _>(TEMPLATE_LOCK_KEY)
        .execute(&mut admin)
        .await
        .context("taking the template lock")?;
    let built = build_template_locked(&mut admin, admin_url, &name).await;
    // Closing the session would release the lock too.
    let _ = diesel::sql_query("SELECT pg_advisory_unlock($1)")
        .bind::<diesel::sql_types::BigInt, _>(TEMPLATE_LOCK_KEY)
        .execute(&mut admin)
        .await;
    built.map(|()| name)
}

async fn build_template_locked(
    admin: &mut AsyncPgConnection,
    admin_url: &LibpqUrl,
    name: &str,
) -> anyhow::Result<()> {
    #[derive(diesel::QueryableByName)]
    struct State {
        #[diesel(sql_type = Bool)]
        datistemplate: bool,
    }
    let state: Option<State> =
        diesel::sql_query("SELECT datistemplate FROM pg_database WHERE datname = $1")
            .bind::<Text, _>(name)
            .get_result(admin)
            .await
            .map(Some)
            .or_else(|error| match error {
                diesel::result::Error::NotFound => Ok(None),
                error => Err(error),
            })?;
    match state {
        // Marked a template only once fully migrated.
        Some(State {
            datistemplate: true,
        }) => return Ok(()),
        // A build that died half-way.
        Some(_) => {
            admin
                .batch_execute(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
                .await?
        }
        None => {}
    }
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .with_context(|| format!("creating the template {name}"))?;
    let url =
        DatabaseUrl::parse(&admin_url.with_dbname(name).expose()).map_err(anyhow::Error::msg)?;
    db::migrate(&url).await.context("migrating the template")?;
    // No connections from now on: a clone needs the template to itself.
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{name}\" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
        ))
        .await
        .context("marking the template")?;
    Ok(())
}
