//! Starting on a server that does not have the database yet.

use disconnect_testkit::process::Logs;
use disconnect_testkit::{services, TestDatabase};

use crate::support::process::{json_log_lines, message};
use crate::support::{eventually, TestContext};

/// The database is created and migrated before anything else uses it, so a
/// first start logs no warning (the outbox's pruning once ran first and
/// warned that the database did not exist).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_start_creates_and_migrates_the_database_before_anything_uses_it() {
    let test = TestContext::new().await;
    let server = &services::services().await.postgres_admin_url;
    let fresh = TestDatabase::not_created(server, "dwtest_fresh");
    let log = test.log_file("first-start");
    let worker = test.spawn_worker_process_logging(
        &[
            ("DATABASE_URL", &fresh.url),
            ("RUN_MIGRATIONS", "true"),
            ("LOG_FORMAT", "json"),
        ],
        Logs::File(log.clone()),
    );
    eventually("ready", || async {
        (worker.get("/readyz").await?.0 == 200).then_some(())
    })
    .await;
    worker.signal("TERM");
    let status = worker.wait().await;
    fresh.drop_database().await;

    assert_eq!(status.code(), Some(0));
    let lines = json_log_lines(&log);
    let messages: Vec<&str> = lines.iter().map(message).collect();
    assert!(
        messages.contains(&"created the database") && messages.contains(&"database ready"),
        "{messages:?}"
    );
    let warnings: Vec<&str> = lines
        .iter()
        .filter(|line| line["level"] == "WARN" || line["level"] == "ERROR")
        .map(message)
        .collect();
    assert!(warnings.is_empty(), "{warnings:?}");
    let _ = std::fs::remove_file(log);
}
