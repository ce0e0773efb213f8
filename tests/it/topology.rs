//! Broker settings that do not fight the operator: the request queue
//! dead-letters at least once, a conflicting declaration stops the worker
//! with the object's name, and with `DECLARE_TOPOLOGY=false` the worker only
//! checks what it needs and names what is missing.

use std::process::Command;

use uuid::Uuid;

use crate::support::process::{run_to_exit, until_ready};
use crate::support::TestContext;

/// A queue's arguments as the broker holds them: name to value.
fn queue_arguments(queue: &str) -> serde_json::Value {
    let output = Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "-p",
            "/",
            "name",
            "arguments",
            "--formatter",
            "json",
            "--quiet",
        ])
        .output()
        .expect("rabbitmqctl");
    let queues: Vec<serde_json::Value> =
        serde_json::from_slice(&output.stdout).expect("rabbitmqctl prints JSON");
    queues
        .into_iter()
        .find(|entry| entry["name"] == queue)
        .and_then(|entry| {
            // Listed as [name, type, value] triples.
            let triples = entry["arguments"].as_array()?.clone();
            Some(
                triples
                    .into_iter()
                    .filter_map(|triple| Some((triple[0].as_str()?.to_string(), triple[2].clone())))
                    .collect::<serde_json::Map<_, _>>()
                    .into(),
            )
        })
        .expect("the queue is listed with its arguments")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_queue_dead_letters_at_least_once() {
    let test = TestContext::new().await;

    let arguments = queue_arguments(&test.topology.request_queue);

    assert_eq!(
        arguments["x-dead-letter-strategy"], "at-least-once",
        "{arguments}"
    );
    // RabbitMQ falls back to at most once without this.
    assert_eq!(arguments["x-overflow"], "reject-publish", "{arguments}");
    assert_eq!(arguments["x-queue-type"], "quorum");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_declared_with_other_settings_stops_the_worker_naming_it() {
    let test = TestContext::new().await;
    // The queue exists with a delivery limit of 10; this worker wants 3.
    let output = run_to_exit({
        let mut command = test.command(&["run"]);
        command.env("DELIVERY_LIMIT", "3").env("HTTP_PORT", "0");
        command
    })
    .await;

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    for named in [
        "REQUEST_QUEUE",
        test.topology.request_queue.as_str(),
        "x-delivery-limit",
        "DECLARE_TOPOLOGY=false",
    ] {
        assert!(last.contains(named), "`{named}` in: {last}");
    }
    assert!(!stderr.contains("guest:guest"), "no password: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_declaring_the_worker_names_what_is_missing_and_runs_when_nothing_is() {
    let test = TestContext::new().await;
    let channel = test.channel().await;

    // Everything exists (the test declared it): the worker only checks.
    let worker = test.spawn_worker_process(&[("DECLARE_TOPOLOGY", "false")]);
    let token = test.issue("app", "company-c", "gusto", "user-a").await;
    let mut events = test.event_tap().await;
    let request = test
        .request_disconnect(&channel, Uuid::new_v4(), token.token.expose())
        .await;
    events.event_for(request).await;
    until_ready(&worker).await;
    drop(worker);

    channel
        .exchange_delete(
            test.topology.event_exchange.as_str().into(),
            Default::default(),
        )
        .await
        .expect("deleting the event exchange");
    channel
        .queue_delete(
            test.topology.dead_letter_queue.as_str().into(),
            Default::default(),
        )
        .await
        .expect("deleting the dead-letter queue");
    let output = run_to_exit({
        let mut command = test.command(&["run"]);
        command
            .env("DECLARE_TOPOLOGY", "false")
            .env("HTTP_PORT", "0");
        command
    })
    .await;

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    for named in [
        "EVENT_EXCHANGE",
        test.topology.event_exchange.as_str(),
        "DEAD_LETTER_QUEUE",
        test.topology.dead_letter_queue.as_str(),
    ] {
        assert!(last.contains(named), "`{named}` in: {last}");
    }
    assert!(
        !last.contains("REQUEST_QUEUE"),
        "what exists is not named: {last}"
    );
    // Nothing was declared behind the operator's back.
    assert!(
        test.channel()
            .await
            .exchange_declare(
                test.topology.event_exchange.as_str().into(),
                lapin::ExchangeKind::Topic,
                lapin::options::ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .is_err(),
        "the event exchange is still missing"
    );
}
