//! The binary: the seed's example through `token issue`, `disconnect --wait`
//! and `token introspect`; configuration errors; SIGTERM.

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use crate::support::TestContext;

fn run(test: &TestContext, args: &[&str]) -> Output {
    let output = test.command(args).output().expect("running the binary");
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn issue(test: &TestContext, provider: &str, user: &str) -> String {
    stdout(&run(
        test,
        &[
            "token",
            "issue",
            "--company-id",
            "company-c",
            "--provider-id",
            provider,
            "--user",
            user,
        ],
    ))
}

fn introspect(test: &TestContext, token: &str) -> Value {
    serde_json::from_str(&stdout(&run(test, &["token", "introspect", token])))
        .expect("introspection is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_example_walks_through_the_command_line() {
    let test = TestContext::new().await;
    let _worker = test.spawn_worker();
    let step1 = issue(&test, "gusto", "user-a");
    let step2 = issue(&test, "gusto", "user-a");
    let step3 = issue(&test, "gusto", "user-b");
    let step4 = issue(&test, "justworks", "user-a");
    let connection_1 = introspect(&test, &step1)["connection_id"].clone();
    assert_eq!(introspect(&test, &step3)["connection_id"], connection_1);
    assert_ne!(introspect(&test, &step4)["connection_id"], connection_1);

    let output = run(
        &test,
        &["disconnect", &step3, "--reason", "offboarding", "--wait"],
    );
    let event: Value = serde_json::from_str(&stdout(&output)).expect("the event is printed");

    assert_eq!(event["event_type"], "connection.disconnected");
    assert_eq!(event["connection_id"], connection_1);
    for token in [&step1, &step2, &step3] {
        let state = introspect(&test, token);
        assert_eq!(state["active"], false);
        assert_eq!(state["connection_status"], "disconnected");
        assert!(state["revoked_at"].is_string());
    }
    assert_eq!(introspect(&test, &step4)["active"], true);
    assert_eq!(
        introspect(&test, "dwt_never-issued"),
        serde_json::json!({"active": false})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issued_tokens_are_printed_alone_and_stored_only_as_hashes() {
    let test = TestContext::new().await;
    let output = run(
        &test,
        &[
            "token",
            "issue",
            "--company-id",
            "c",
            "--provider-id",
            "gusto",
        ],
    );
    let token = stdout(&output);
    assert!(token.starts_with("dwt_") && token.len() >= 47 && !token.contains(char::is_whitespace));
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains(&token),
        "never logged"
    );
    let dump = Command::new("pg_dump")
        .arg(&test.database_url)
        .arg("--data-only")
        .output();
    // pg_dump is a convenience here; without it the check is skipped loudly.
    match dump {
        Ok(dump) if dump.status.success() => {
            assert!(
                !String::from_utf8_lossy(&dump.stdout).contains(&token[4..]),
                "the plaintext is not stored"
            );
        }
        _ => eprintln!("pg_dump not available: skipping the stored-plaintext check"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_setting_stops_start_up_with_a_message_that_names_it() {
    let test = TestContext::new().await;
    let cases = [
        ("PREFETCH", "lots", "PREFETCH"),
        ("SHUTDOWN_GRACE_SECS", "-1", "SHUTDOWN_GRACE_SECS"),
        ("LOG_FORMAT", "yaml", "LOG_FORMAT"),
        (
            "DATABASE_URL",
            "mysql://root:hunter2@localhost/db",
            "DATABASE_URL",
        ),
        ("AMQP_URL", "http://guest:hunter2@localhost", "AMQP_URL"),
        ("DEAD_LETTER_QUEUE", "", "DEAD_LETTER_QUEUE"),
    ];
    for (variable, value, named) in cases {
        let output = test
            .command(&["run"])
            .env(variable, value)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{variable}={value}: {stderr}"
        );
        assert!(stderr.contains(named), "{variable}={value}: {stderr}");
        assert!(
            !stderr.contains("hunter2"),
            "never prints a password: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_work_publishes_events_and_exits_zero() {
    let test = TestContext::new().await;
    let mut tokens = Vec::new();
    for company in 0..50 {
        tokens.push(
            test.issue("app", &format!("company-{company}"), "gusto", "user-a")
                .await,
        );
    }
    let worker = test.spawn_worker_process(&[]);
    let mut events = test.event_tap().await;
    let channel = test.channel().await;
    let mut requests = Vec::new();
    for token in &tokens {
        requests.push(
            test.request_disconnect(&channel, Uuid::new_v4(), token.token.expose())
                .await,
        );
    }
    // Wait until it is working, then stop it in the middle of the stream.
    events.event_for(requests[0]).await;
    worker.signal("TERM");
    let status = worker.wait().await;

    assert_eq!(status.code(), Some(0), "a graceful stop exits 0");
    assert_eq!(
        test.unpublished_event_count().await,
        0,
        "pending events were published"
    );
    // Every request is either done (with its event) or back in the queue.
    let done = test.recorded_request_count().await as usize;
    let waiting = test
        .ready_messages(&channel, &test.topology.request_queue)
        .await;
    assert_eq!(done + waiting, requests.len(), "nothing is lost");
    while events
        .next_within(Duration::from_millis(300))
        .await
        .is_some()
    {}
    assert_eq!(
        events.received.len(),
        done,
        "every committed request's event was published"
    );
}

/// Every selector on the command line: a dry run prints what a request
/// would do and changes nothing; the real one, published as the user of
/// AMQP_URL, is authorized by AUTHORIZED_PUBLISHERS and waited for to its
/// terminal event; introspection then shows the revocation's request and
/// reason code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_takes_every_selector_with_a_dry_run_first() {
    let test = TestContext::new().await;
    let at_gusto = issue(&test, "gusto", "user-a");
    let at_gusto_too = issue(&test, "gusto", "user-b");
    let at_justworks = issue(&test, "justworks", "user-a");
    let client_id = introspect(&test, &at_gusto)["client_id"]
        .as_str()
        .expect("a client id")
        .to_string();
    let company = ["--client-id", &client_id, "--company-id", "company-c"];

    let preview: Value = serde_json::from_str(&stdout(&run(
        &test,
        &[&["disconnect", "--dry-run"][..], &company[..]].concat(),
    )))
    .expect("the preview is JSON");
    assert_eq!(preview["dry_run"], true);
    assert_eq!(preview["scope"], "company");
    assert_eq!(preview["tokens"], 3);
    let mut previewed: Vec<String> = preview["connection_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|id| id.as_str().unwrap_or_default().to_string())
        .collect();
    previewed.sort();
    let mut expected = vec![
        introspect(&test, &at_gusto)["connection_id"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        introspect(&test, &at_justworks)["connection_id"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    ];
    expected.sort();
    assert_eq!(previewed, expected);
    assert_eq!(
        introspect(&test, &at_gusto)["active"],
        true,
        "a dry run changes nothing"
    );
    assert_eq!(
        test.ready_messages(&test.channel().await, &test.topology.request_queue)
            .await,
        0,
        "and publishes nothing"
    );

    let _worker = test.spawn_worker_process(&[("AUTHORIZED_PUBLISHERS", "guest:*")]);
    let output = run(
        &test,
        &[
            &[
                "disconnect",
                "--reason-code",
                "employer_offboarded",
                "--wait",
            ][..],
            &company[..],
        ]
        .concat(),
    );
    let completed: Value = serde_json::from_str(&stdout(&output)).expect("the event is printed");
    assert_eq!(completed["event_type"], "disconnect.completed");
    assert_eq!(
        (
            completed["connections"].as_i64(),
            completed["tokens"].as_i64()
        ),
        (Some(2), Some(3))
    );
    for token in [&at_gusto, &at_gusto_too, &at_justworks] {
        let state = introspect(&test, token);
        assert_eq!(state["active"], false);
        assert_eq!(state["revocation"]["reason_code"], "employer_offboarded");
        assert_eq!(state["revocation"]["scope"], "company");
        assert_eq!(state["revocation"]["request_id"], completed["request_id"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selector_combination_that_makes_no_request_is_refused_by_name() {
    let test = TestContext::new().await;
    for (args, named) in [
        (
            &[
                "disconnect",
                "dwt_x",
                "--company-id",
                "c",
                "--client-id",
                "a",
            ][..],
            "--company-id",
        ),
        (&["disconnect", "--company-id", "c"][..], "--client-id"),
        (&["disconnect", "--scope", "client"][..], "--client-id"),
        (&["disconnect"][..], "TOKEN"),
        (
            &["disconnect", "dwt_x", "--reason-code", "bored"][..],
            "--reason-code",
        ),
    ] {
        let output = test.command(args).output().expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
}

/// Entities on the command line: `token issue --entity`, introspection of
/// the connection's entities, `disconnect --entity-id` with `--dry-run`
/// (nothing changes) and `--wait` (one event line per entity), and the
/// re-authentication that brings an entity back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_are_issued_previewed_disconnected_and_brought_back_from_the_command_line() {
    let test = TestContext::new().await;
    let _worker = test.spawn_worker();
    let issue_with = |entities: &[&str]| {
        let mut args = vec![
            "token",
            "issue",
            "--company-id",
            "company-c",
            "--provider-id",
            "gusto",
        ];
        for entity in entities {
            args.extend(["--entity", entity]);
        }
        stdout(&run(&test, &args))
    };
    let token = issue_with(&["ein-1", "ein-2", "ein-3"]);
    let state = introspect(&test, &token);
    let entities = state["entities"].as_array().expect("entities").clone();
    assert_eq!(entities.len(), 3);
    let id_of = |provider: &str| {
        entities
            .iter()
            .find(|entity| entity["provider_entity_id"] == provider)
            .and_then(|entity| entity["entity_id"].as_str())
            .expect("an entity id")
            .to_string()
    };
    let (first, second) = (id_of("ein-1"), id_of("ein-2"));

    let preview: Value = serde_json::from_str(&stdout(&run(
        &test,
        &[
            "disconnect",
            &token,
            "--entity-id",
            &first,
            "--entity-id",
            &second,
            "--dry-run",
        ],
    )))
    .expect("JSON");
    assert_eq!(preview["outcome"], "entities_disconnected");
    assert_eq!(preview["scope"], "entity");
    assert_eq!(preview["entity_ids"].as_array().map(Vec::len), Some(2));
    let all = [
        "--entity-id",
        &first,
        "--entity-id",
        &second,
        "--entity-id",
        &id_of("ein-3"),
    ];
    let mut args = vec!["disconnect", token.as_str(), "--dry-run"];
    args.extend(all);
    let refused: Value = serde_json::from_str(&stdout(&run(&test, &args))).expect("JSON");
    assert_eq!(refused["outcome"], "would_disconnect_connection");
    assert!(introspect(&test, &token)["entities"]
        .as_array()
        .expect("entities")
        .iter()
        .all(|entity| entity["status"] == "active"));

    let output = run(
        &test,
        &[
            "disconnect",
            &token,
            "--entity-id",
            &first,
            "--entity-id",
            &second,
            "--wait",
        ],
    );
    let lines: Vec<Value> = stdout(&output)
        .lines()
        .map(|line| serde_json::from_str(line).expect("an event per line"))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines
        .iter()
        .all(|event| event["event_type"] == "connection.entity_disconnected"));
    let state = introspect(&test, &token);
    assert_eq!(state["active"], true, "the token still works");
    let status_of = |state: &Value, id: &str| {
        state["entities"]
            .as_array()
            .and_then(|entities| entities.iter().find(|entity| entity["entity_id"] == id))
            .map(|entity| entity["status"].clone())
    };
    assert_eq!(status_of(&state, &first), Some("disconnected".into()));

    let again = issue_with(&["ein-1"]);
    let state = introspect(&test, &again);
    assert_eq!(
        state["connection_id"],
        introspect(&test, &token)["connection_id"]
    );
    assert_eq!(status_of(&state, &first), Some("active".into()));
    assert_eq!(status_of(&state, &second), Some("disconnected".into()));

    let bad = test
        .command(&["disconnect", &token, "--entity-id", "ein-1", "--dry-run"])
        .output()
        .expect("running");
    assert_eq!(bad.status.code(), Some(2));
    let message = String::from_utf8_lossy(&bad.stderr);
    assert!(message.contains("--entity-id"), "{message}");
}
