//! Starting on a server that does not have the database yet.

use disconnect_testkit::process::Logs;
use disconnect_testkit::{services, TestDatabase};

use crate::support::process::{json_log_lines, message, until_ready};
use crate::support::TestContext;

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
    until_ready(&worker).await;
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

/// Replicas started at the same moment on an empty server race to create
/// the database (Postgres reports the lost race as a unique violation on
/// its catalog) and to migrate it: every one of them comes up, and stops
/// cleanly, with no error line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_replicas_started_at_once_on_an_empty_server_all_come_up() {
    let test = TestContext::new().await;
    let server = &services::services().await.postgres_admin_url;
    let fresh = TestDatabase::not_created(server, "dwtest_race");
    let logs: Vec<_> = (0..4)
        .map(|replica| test.log_file(&format!("race-{replica}")))
        .collect();
    let workers: Vec<_> = logs
        .iter()
        .map(|log| {
            test.spawn_worker_process_logging(
                &[
                    ("DATABASE_URL", &fresh.url),
                    ("RUN_MIGRATIONS", "true"),
                    ("LOG_FORMAT", "json"),
                ],
                Logs::File(log.clone()),
            )
        })
        .collect();
    for worker in &workers {
        until_ready(worker).await;
    }
    let mut statuses = Vec::new();
    for worker in workers {
        worker.signal("TERM");
        statuses.push(worker.wait().await);
    }
    fresh.drop_database().await;

    for (status, log) in statuses.iter().zip(&logs) {
        // Every line, JSON or not: an error that stops the process is
        // printed to stderr as plain text.
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let problems: Vec<&str> = text
            .lines()
            .filter(|line| {
                line.contains("duplicate key")
                    || line.starts_with("error")
                    || line.contains("\"level\":\"ERROR\"")
            })
            .collect();
        assert_eq!(status.code(), Some(0), "{problems:?}");
        assert!(problems.is_empty(), "{problems:?}");
        let lines = json_log_lines(log);
        assert!(
            lines.iter().any(|line| message(line) == "database ready"),
            "{lines:?}"
        );
        let _ = std::fs::remove_file(log);
    }
}
