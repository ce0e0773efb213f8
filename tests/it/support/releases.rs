//! Databases as earlier releases left them, and earlier releases' binaries.

use diesel_migrations::MigrationHarness;
use disconnect_testkit::{services, TestDatabase};
use disconnect_worker::db::DatabaseUrl;

/// Migrations 0.3.0 shipped: 1 to 8.
pub const MIGRATIONS_OF_0_3: usize = 8;

/// A new database on the test server migrated as 0.3.0 left it (its first
/// `MIGRATIONS_OF_0_3` migrations); dropped by the caller.
pub async fn database_of_0_3() -> TestDatabase {
    let server = &services::services().await.postgres_admin_url;
    let database = TestDatabase::not_created(server, "dwtest_upgraded");
    let url = DatabaseUrl::parse(&database.url).expect("valid");
    disconnect_worker::db::setup::create_database_if_missing(&url)
        .await
        .expect("creating the database");
    let conn = url.establish().await.expect("a session");
    let mut harness = diesel_async::AsyncMigrationHarness::new(conn);
    tokio::task::spawn_blocking(move || {
        for _ in 0..MIGRATIONS_OF_0_3 {
            harness
                .run_next_migration(disconnect_worker::db::setup::MIGRATIONS)
                .expect("a migration of 0.3.0");
        }
    })
    .await
    .expect("the migration task");
    database
}

/// The binary of 0.3.0, built once by `scripts/build-previous-release`
/// (`scripts/check` runs it before the tests; a test that needs it first
/// builds it, which takes minutes), or `PREVIOUS_RELEASE_BINARY`.
pub async fn binary_of_0_3() -> std::path::PathBuf {
    static BUILT: tokio::sync::OnceCell<std::path::PathBuf> = tokio::sync::OnceCell::const_new();
    BUILT
        .get_or_init(|| async {
            if let Some(binary) = std::env::var_os("PREVIOUS_RELEASE_BINARY") {
                return binary.into();
            }
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
            let script = root.join("scripts/build-previous-release");
            let status =
                tokio::task::spawn_blocking(move || std::process::Command::new(script).status())
                    .await
                    .expect("join")
                    .expect("running scripts/build-previous-release");
            assert!(status.success(), "building 0.3.0 failed: {status:?}");
            root.join("target/previous-release/0.3.0/disconnect-worker")
        })
        .await
        .clone()
}
