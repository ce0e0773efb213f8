//! `dead-letters list` and `dead-letters requeue`, the binary against the
//! real broker and database: what a listing shows (never a token or a
//! body), what a requeue sends back and removes, and a requeue killed
//! half-way that loses nothing.

use std::collections::BTreeSet;
use std::process::{Output, Stdio};
use std::time::Duration;

use disconnect_worker::domain::AccessToken;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel};
use serde_json::Value;
use uuid::Uuid;

use crate::support::broker::{publish_confirmed, request_body};
use crate::support::scopes::{connection_request, BROKER_USER};
use crate::support::{eventually, TestContext};

/// A dead letter as RabbitMQ makes one when a request reaches its delivery
/// limit: the body and properties unchanged, and an `x-death` entry.
fn broker_dead_letter(user_id: Option<&str>) -> BasicProperties {
    let mut death = FieldTable::default();
    death.insert("reason".into(), long("delivery_limit"));
    death.insert("queue".into(), long("disconnect.requests"));
    death.insert("count".into(), AMQPValue::LongLongInt(1));
    death.insert(
        "time".into(),
        AMQPValue::Timestamp(u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0)),
    );
    let mut headers = FieldTable::default();
    headers.insert(
        "x-death".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
    );
    headers.insert("x-first-death-reason".into(), long("delivery_limit"));
    let properties = BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_headers(headers);
    match user_id {
        Some(user) => properties.with_user_id(ShortString::from(user)),
        None => properties,
    }
}

fn long(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

impl TestContext {
    /// Put a message in the dead-letter queue, through its exchange.
    async fn dead_letter(&self, channel: &Channel, body: &[u8], properties: BasicProperties) {
        publish_confirmed(
            channel,
            &self.topology.dead_letter_exchange,
            "",
            body,
            properties,
        )
        .await;
    }

    async fn dead_letter_count(&self) -> usize {
        let channel = self.channel().await;
        self.ready_messages(&channel, &self.topology.dead_letter_queue)
            .await
    }

    fn dead_letters_command(&self, args: &[&str]) -> Output {
        let mut all = vec!["dead-letters"];
        all.extend_from_slice(args);
        self.command(&all).output().expect("running the binary")
    }
}

fn listed(output: &Output) -> Vec<Value> {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("a JSON array")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_shows_each_dead_letter_s_code_reason_request_id_and_time_never_its_body() {
    let test = TestContext::new().await;
    let _worker = test.spawn_worker();
    let channel = test.channel().await;
    let secret = AccessToken::generate();
    let bad = Uuid::new_v4();
    // Dead-lettered by the worker: a token with a control character.
    let body = format!(
        r#"{{"request_id":"{bad}","access_token":"{}\u0007"}}"#,
        secret.expose()
    );
    test.publish_raw(&channel, body.as_bytes(), BasicProperties::default())
        .await;
    test.publish_raw(&channel, b"not json at all", BasicProperties::default())
        .await;
    // Dead-lettered by RabbitMQ at the delivery limit.
    let limited = Uuid::new_v4();
    test.dead_letter(
        &channel,
        &request_body(limited, secret.expose()),
        broker_dead_letter(None),
    )
    .await;
    eventually("three dead letters", || async {
        (test.dead_letter_count().await == 3).then_some(())
    })
    .await;

    let output = test.dead_letters_command(&["list", "--json"]);
    let all = listed(&output);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    assert_eq!(all.len(), 3);
    assert!(!text.contains(secret.expose()), "never a token");
    assert!(!text.contains("not json at all"), "never a body");
    let by_code = |code: &str| {
        all.iter()
            .find(|letter| letter["code"] == code)
            .unwrap_or_else(|| panic!("no {code} in {all:?}"))
            .clone()
    };
    let invalid = by_code("invalid_field");
    assert_eq!(invalid["request_id"], bad.to_string());
    assert!(invalid["reason"]
        .as_str()
        .is_some_and(|reason| reason.contains("access_token")));
    assert!(invalid["first_death"].is_string());
    assert_eq!(invalid["count"], 1);
    assert!(by_code("not_json")["request_id"].is_null());
    let broker = by_code("delivery_limit");
    assert_eq!(broker["request_id"], limited.to_string());
    assert!(broker["reason"]
        .as_str()
        .is_some_and(|reason| reason.contains("RabbitMQ")));

    let only = listed(&test.dead_letters_command(&["list", "--json", "--code", "not_json"]));
    assert_eq!(only.len(), 1);
    let by_id = listed(&test.dead_letters_command(&[
        "list",
        "--json",
        "--request-id",
        &limited.to_string(),
    ]));
    assert_eq!(by_id.len(), 1);
    let table = test.dead_letters_command(&["list"]);
    assert!(String::from_utf8_lossy(&table.stdout).starts_with("position\tcode\trequest_id"));
    assert_eq!(test.dead_letter_count().await, 3, "listing removes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requeue_sends_the_chosen_dead_letters_back_and_removes_only_those() {
    let test = TestContext::new().await;
    let (mut events, _worker, channel) = test.running().await;
    let tokens = [
        test.issue("app-a", "C1", "gusto", "user-a").await,
        test.issue("app-a", "C2", "gusto", "user-a").await,
    ];
    let by_id = test.issue("app-a", "C3", "gusto", "user-a").await;
    let mut requests = Vec::new();
    for token in &tokens {
        let id = Uuid::new_v4();
        requests.push(id);
        test.dead_letter(
            &channel,
            &request_body(id, token.token.expose()),
            broker_dead_letter(None),
        )
        .await;
    }
    // A request by id, published by a user other than this command's: it is
    // asked again as the command's user (who holds the grant).
    let wide = connection_request("app-a", by_id.connection_id);
    test.dead_letter(
        &channel,
        &wide.encode(),
        broker_dead_letter(Some(BROKER_USER)),
    )
    .await;
    requests.push(wide.request_id.as_uuid());
    test.publish_raw(&channel, b"{broken", BasicProperties::default())
        .await;
    eventually("four dead letters", || async {
        (test.dead_letter_count().await == 4).then_some(())
    })
    .await;

    let refused = test.dead_letters_command(&["requeue"]);
    assert_eq!(
        refused.status.code(),
        Some(2),
        "a filter or --all is required"
    );
    let dry = test.dead_letters_command(&["requeue", "--code", "delivery_limit", "--dry-run"]);
    assert!(dry.status.success());
    assert_eq!(String::from_utf8_lossy(&dry.stdout).lines().count(), 3);
    assert_eq!(
        test.dead_letter_count().await,
        4,
        "a dry run changes nothing"
    );
    assert_eq!(test.recorded_request_count().await, 0);

    let output = test.dead_letters_command(&["requeue", "--code", "delivery_limit"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    for request in &requests {
        let event = events.event_for(*request).await;
        assert_eq!(event.routing_key, "connection.disconnected");
    }
    for token in &tokens {
        assert!(!test.is_active(token).await);
    }
    let audit = test
        .audit_row(wide.request_id.as_uuid())
        .await
        .expect("audit row");
    assert_eq!(audit.publisher.as_deref(), Some(BROKER_USER));
    assert_eq!(
        test.dead_letter_count().await,
        1,
        "only the broken one is left"
    );
    let left = listed(&test.dead_letters_command(&["list", "--json"]));
    assert_eq!(left[0]["code"], "not_json");
}

/// 1,500 dead letters, and the requeue killed (SIGKILL) part-way: every
/// request is still in the dead-letter queue or was sent again (none lost);
/// a second requeue finishes the job, and each request has one outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requeue_killed_half_way_loses_nothing_and_a_second_run_finishes() {
    const COUNT: usize = 1500;
    let test = TestContext::new().await;
    let _worker = test.spawn_worker();
    let channel = test.channel().await;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let unknown = AccessToken::generate();
    let requests: BTreeSet<Uuid> = (0..COUNT).map(|_| Uuid::new_v4()).collect();
    for id in &requests {
        channel
            .basic_publish(
                test.topology.dead_letter_exchange.as_str().into(),
                "".into(),
                BasicPublishOptions::default(),
                &request_body(*id, unknown.expose()),
                broker_dead_letter(None),
            )
            .await
            .expect("publishing");
    }
    assert!(channel
        .wait_for_confirms()
        .await
        .expect("confirms")
        .is_empty());
    eventually("every dead letter in the queue", || async {
        (test.dead_letter_count().await == COUNT).then_some(())
    })
    .await;

    let mut child = test
        .command(&["dead-letters", "requeue", "--code", "delivery_limit"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the requeue");
    eventually("the requeue under way", || async {
        (test.recorded_request_count().await >= 100).then_some(())
    })
    .await;
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");

    // Nothing lost: each request is back in the dead-letter queue (its
    // channel closed unacknowledged) or was sent again and recorded.
    let in_queue = eventually("the killed session's dead letters back", || async {
        let listed = test.dead_letters_command(&["list", "--json", "--limit", "5000"]);
        let ids: BTreeSet<Uuid> = serde_json::from_slice::<Vec<Value>>(&listed.stdout)
            .ok()?
            .iter()
            .filter_map(|letter| letter["request_id"].as_str()?.parse().ok())
            .collect();
        let recorded = test.recorded_request_count().await as usize;
        (ids.len() + recorded >= COUNT).then_some(ids)
    })
    .await;
    assert!(
        !in_queue.is_empty() && in_queue.len() < COUNT,
        "the kill came part-way: {} left",
        in_queue.len()
    );
    for id in &requests {
        if !in_queue.contains(id) {
            assert!(test.outcome_of(*id).await.is_some(), "{id} was lost");
        }
    }

    // A requeue takes the dead letters ready when it starts; the listing
    // above gives its own back as it exits, and the broker may count them
    // ready again a moment later.
    eventually("the listed dead letters ready again", || async {
        (test.dead_letter_count().await == in_queue.len()).then_some(())
    })
    .await;
    let finish = test.dead_letters_command(&["requeue", "--code", "delivery_limit"]);
    // Shown if the test fails: what the second run said it requeued.
    eprintln!("{}", String::from_utf8_lossy(&finish.stderr));
    assert!(finish.status.success());
    eventually("every request recorded", || async {
        (test.recorded_request_count().await as usize == COUNT).then_some(())
    })
    .await;
    for id in &requests {
        assert_eq!(test.outcome_of(*id).await.as_deref(), Some("unknown_token"));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        test.recorded_request_count().await as usize,
        COUNT,
        "each once"
    );
    assert_eq!(test.dead_letter_count().await, 0);
}

/// A requeue takes only the dead letters there when it starts: the worker
/// dead-letters a copy it rejects again behind them within milliseconds,
/// and the same run must not take it and send it once more (up to
/// `--limit` times).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requeue_sends_each_dead_letter_once_when_the_worker_rejects_it_again() {
    const LETTERS: usize = 200;
    let test = TestContext::new().await;
    let _worker = test.spawn_worker();
    let channel = test.channel().await;
    for _ in 0..LETTERS {
        test.publish_raw(&channel, b"not json at all", BasicProperties::default())
            .await;
    }
    eventually("every bad request dead-lettered", || async {
        (test.dead_letter_count().await == LETTERS).then_some(())
    })
    .await;

    let output = test.dead_letters_command(&["requeue", "--all"]);

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("requeued {LETTERS} dead letters")),
        "{stderr}"
    );
    let again = test.wait_for_dead_letters(LETTERS).await;
    let counts: BTreeSet<i64> = again
        .iter()
        .map(
            |letter| match letter.headers.inner().get("x-requeue-count") {
                Some(AMQPValue::LongLongInt(count)) => *count,
                other => panic!("x-requeue-count is {other:?}"),
            },
        )
        .collect();
    assert_eq!(counts, BTreeSet::from([1]), "each sent back exactly once");
}

/// A requeue while the request queue is deleted (what the topology-conflict
/// error tells operators to do, to let the worker declare it anew): RabbitMQ
/// confirms a message it could route nowhere, so each copy is published
/// `mandatory` and a returned one fails the requeue. The command says why,
/// and every dead letter stays; once the queue is back the same command
/// sends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requeue_while_the_request_queue_is_gone_keeps_every_dead_letter_and_says_why() {
    let test = TestContext::new().await;
    let channel = test.channel().await;
    for _ in 0..2 {
        let token = AccessToken::generate();
        test.dead_letter(
            &channel,
            &request_body(Uuid::new_v4(), token.expose()),
            broker_dead_letter(None),
        )
        .await;
    }
    test.delete_request_queue(&channel).await;

    let output = test.dead_letters_command(&["requeue", "--all"]);

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("no queue took the message"), "{stderr}");
    assert!(
        stderr.contains(&test.topology.request_exchange),
        "names the exchange: {stderr}"
    );
    eventually("both dead letters back in their queue", || async {
        (test.dead_letter_count().await == 2).then_some(())
    })
    .await;

    test.topology
        .declare(&channel)
        .await
        .expect("declaring the request queue again");
    let output = test.dead_letters_command(&["requeue", "--all"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(test.dead_letter_count().await, 0);
    assert_eq!(
        test.ready_messages(&channel, &test.topology.request_queue)
            .await,
        2
    );
}
