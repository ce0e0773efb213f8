//! The outbox format every replica reads from the database: `by_reference`
//! for a database this release creates, `whole` for one upgraded from 0.3.x
//! (whose replicas cannot publish references); a running worker follows a
//! change; setting `whole` waits until no reference is left; a format this
//! release does not know stops start-up.

use std::process::Stdio;
use std::time::Duration;

use uuid::Uuid;

use crate::support::process::{run_to_exit, succeeded};
use crate::support::releases::database_of_0_3;
use crate::support::TestContext;

impl TestContext {
    /// `disconnect-worker outbox format show`'s first line.
    fn shown_format(&self, database_url: &str) -> String {
        let mut show = self.command(&["outbox", "format", "show"]);
        show.env("DATABASE_URL", database_url);
        let output = succeeded(show);
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// Record, with a trigger of the test's own, which outbox table each
    /// event is written to.
    async fn note_outbox_writes(&self) {
        self.execute(
            "CREATE TABLE outbox_writes (tbl text, request_id uuid); \
             CREATE FUNCTION note_outbox_write() RETURNS trigger LANGUAGE plpgsql AS $$ \
               BEGIN INSERT INTO outbox_writes VALUES (TG_TABLE_NAME, NEW.request_id); \
               RETURN NULL; END $$; \
             CREATE TRIGGER noted AFTER INSERT ON outbox_events \
               FOR EACH ROW EXECUTE FUNCTION note_outbox_write(); \
             CREATE TRIGGER noted AFTER INSERT ON outbox_disconnections \
               FOR EACH ROW EXECUTE FUNCTION note_outbox_write();",
        )
        .await;
    }

    /// The outbox table a request's event was written to.
    async fn written_to(&self, request_id: Uuid) -> String {
        use diesel::sql_types::{Text, Uuid as SqlUuid};
        use diesel_async::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Written {
            #[diesel(sql_type = Text)]
            tbl: String,
        }
        let mut conn = self.pool.get().await.expect("db");
        diesel::sql_query("SELECT tbl FROM outbox_writes WHERE request_id = $1")
            .bind::<SqlUuid, _>(request_id)
            .get_result::<Written>(&mut conn)
            .await
            .expect("one write")
            .tbl
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_database_keeps_events_by_reference_and_one_upgraded_from_0_3_starts_whole() {
    let test = TestContext::new().await;
    assert_eq!(
        test.shown_format(&test.database_url),
        "outbox format: by_reference"
    );

    let upgraded = database_of_0_3().await;
    let migrated = test
        .command(&["migrate"])
        .env("DATABASE_URL", &upgraded.url)
        .output()
        .expect("migrate");
    let shown = migrated
        .status
        .success()
        .then(|| test.shown_format(&upgraded.url));
    upgraded.drop_database().await;
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    assert_eq!(shown.as_deref(), Some("outbox format: whole"));
}

/// A running worker reads the format again every few seconds: its events
/// go by reference, then, once `whole` is set, whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_worker_follows_a_change_of_the_outbox_format() {
    let test = TestContext::new().await;
    test.note_outbox_writes().await;
    let (mut events, _worker, channel) = test.running().await;
    let before = test.issue("app", "C1", "gusto", "user-a").await;
    let first = test
        .request_disconnect(&channel, Uuid::new_v4(), before.token.expose())
        .await;
    events.event_for(first).await;
    assert_eq!(test.written_to(first).await, "outbox_disconnections");

    let set = succeeded(test.command(&["outbox", "format", "set", "whole", "--no-wait"]));
    assert_eq!(
        String::from_utf8_lossy(&set.stdout).trim(),
        "outbox format: by_reference -> whole"
    );
    // The worker reads it again within its refresh interval.
    tokio::time::sleep(disconnect_worker::outbox::format::REFRESH + Duration::from_secs(1)).await;
    let after = test.issue("app", "C2", "gusto", "user-a").await;
    let second = test
        .request_disconnect(&channel, Uuid::new_v4(), after.token.expose())
        .await;
    let event = events.event_for(second).await;
    assert_eq!(event.routing_key, "connection.disconnected");
    assert_eq!(test.written_to(second).await, "outbox_events");
}

/// Setting `whole` before a rollback waits until no event is kept by
/// reference (the release rolled back to could never publish one): it
/// fails, naming how many, while no replica publishes them, and returns
/// once a worker has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setting_whole_waits_until_no_event_is_kept_by_reference() {
    let test = TestContext::new().await;
    test.leave_unpublished_events(&["C1", "C2", "C3"], "1 hour")
        .await;
    let short = [
        ("DATABASE_TRANSACTION_TIMEOUT_SECS", "2"),
        ("DATABASE_STATEMENT_TIMEOUT_SECS", "1"),
        ("DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECS", "1"),
    ];
    let mut nobody = test.command(&["outbox", "format", "set", "whole", "--wait-secs", "8"]);
    nobody.envs(short);
    let output = run_to_exit(nobody).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("3 events kept by reference are still unpublished"),
        "{stderr}"
    );

    let mut waiting = test.command(&["outbox", "format", "set", "whole", "--wait-secs", "60"]);
    let waiting = waiting
        .envs(short)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("outbox format set");
    let _worker = test.spawn_worker();
    let output = tokio::task::spawn_blocking(move || waiting.wait_with_output())
        .await
        .expect("join")
        .expect("the command");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("no event is kept by reference"));
    test.wait_until_outbox_empty().await;
}

/// A format a newer release set: this release would not publish what that
/// one writes as it means, so it does not start, and says what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_format_this_release_does_not_know_stops_start_up_naming_it() {
    let test = TestContext::new().await;
    test.execute(
        "UPDATE shared_settings SET value = 'by_reference_v2' WHERE name = 'outbox_format'",
    )
    .await;
    let mut command = test.command(&["run"]);
    command.env("HTTP_PORT", "0").env("RUN_MIGRATIONS", "false");
    let output = run_to_exit(command).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("outbox format is `by_reference_v2`"),
        "{stderr}"
    );
}
