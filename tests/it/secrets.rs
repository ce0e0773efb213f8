//! No token value and no password in logs, events, dead-letter reasons or
//! tables, with debug logging on.

use std::process::Stdio;

use diesel_async::RunQueryDsl;
use lapin::types::ShortString;
use lapin::BasicProperties;
use tokio::io::AsyncReadExt;
use uuid::Uuid;

use crate::support::TestContext;

const DB_PASSWORD: &str = "db-pass-5ecr3t";

#[derive(diesel::QueryableByName)]
struct Dump {
    #[diesel(sql_type = diesel::sql_types::Text)]
    text: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_or_password_reaches_logs_events_dead_letters_or_tables() {
    let test = TestContext::new().await;
    // Trust authentication ignores the password, so it can travel in the URL
    // without breaking the connection.
    let mut url = url::Url::parse(&test.database_url).expect("url");
    url.set_password(Some(DB_PASSWORD)).expect("password");
    let database_url = url.to_string();

    let issue = test
        .command(&[
            "token",
            "issue",
            "--company-id",
            "c",
            "--provider-id",
            "gusto",
        ])
        .env("DATABASE_URL", &database_url)
        .env("RUST_LOG", "debug")
        .output()
        .expect("issue");
    let token = String::from_utf8_lossy(&issue.stdout).trim().to_string();
    let mut logs = String::from_utf8_lossy(&issue.stderr).into_owned();

    let mut events = test.event_tap().await;
    let mut worker = tokio::process::Command::new(crate::support::process::BINARY)
        .arg("run")
        .envs(test.binary_env())
        .env("DATABASE_URL", &database_url)
        .env("RUST_LOG", "debug")
        .env("HTTP_PORT", "0")
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("worker");
    // Read the logs while the worker runs: debug logging fills a pipe's
    // buffer, and a worker blocked writing to it would never exit.
    let mut stderr = worker.stderr.take().expect("stderr");
    let mut stdout = worker.stdout.take().expect("stdout");
    let reading = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        let _ = stdout.read_to_string(&mut text).await;
        text
    });
    let channel = test.channel().await;
    let good = test
        .request_disconnect(&channel, Uuid::new_v4(), &token)
        .await;
    let again = test
        .request_disconnect(&channel, Uuid::new_v4(), &token)
        .await;
    let json = BasicProperties::default().with_content_type(ShortString::from("application/json"));
    let bad = format!(r#"{{"request_id":"{token}","access_token":"{token}"}}"#);
    test.publish_raw(&channel, bad.as_bytes(), json.clone())
        .await;
    let wrong_type = format!(
        r#"{{"request_id":"{}","access_token":["{token}"]}}"#,
        Uuid::new_v4()
    );
    test.publish_raw(&channel, wrong_type.as_bytes(), json)
        .await;
    events.event_for(good).await;
    events.event_for(again).await;
    let letters = test.wait_for_dead_letters(2).await;
    let introspect = test
        .command(&["token", "introspect", &token])
        .env("DATABASE_URL", &database_url)
        .env("RUST_LOG", "debug")
        .output()
        .expect("introspect");
    logs.push_str(&String::from_utf8_lossy(&introspect.stderr));

    let pid = worker.id().expect("pid").to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    worker.wait().await.expect("worker exit");
    logs.push_str(&reading.await.expect("the logs"));

    assert!(
        logs.contains("request processed"),
        "debug logs were captured"
    );
    let secret_part = &token[4..];
    let mut conn = test.pool.get().await.expect("db");
    let tables: Vec<Dump> = diesel::sql_query(
        "SELECT concat_ws(' ', (SELECT string_agg(t::text, ' ') FROM connections t),
                               (SELECT string_agg(t::text, ' ') FROM access_tokens t),
                               (SELECT string_agg(t::text, ' ') FROM disconnect_requests t),
                               (SELECT string_agg(t::text, ' ') FROM outbox_events t),
                               (SELECT string_agg(t::text, ' ') FROM outbox_disconnections t)) AS text",
    )
    .load(&mut conn)
    .await
    .expect("dump");
    let places = [
        ("logs", logs.clone()),
        (
            "events",
            events
                .received
                .iter()
                .map(|event| String::from_utf8_lossy(&event.raw).into_owned())
                .collect(),
        ),
        (
            "dead-letter reasons",
            letters
                .iter()
                .filter_map(|letter| letter.reason.clone())
                .collect(),
        ),
        ("tables", tables.into_iter().map(|dump| dump.text).collect()),
    ];
    for (place, text) in places {
        assert!(!text.contains(secret_part), "a token value in the {place}");
        assert!(
            !text.contains(DB_PASSWORD),
            "the database password in the {place}"
        );
        assert!(
            !text.contains(":guest@"),
            "the broker password in the {place}"
        );
    }
}
