//! Bad input is dead-lettered with its reason; the worker goes on.

use lapin::types::ShortString;
use lapin::BasicProperties;
use uuid::Uuid;

use crate::support::process::until_ready;
use crate::support::TestContext;

fn json() -> BasicProperties {
    BasicProperties::default().with_content_type(ShortString::from("application/json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_input_is_dead_lettered_with_its_reason_and_the_next_request_succeeds() {
    let test = TestContext::new().await;
    let token = test.issue("app", "company-c", "gusto", "user-a").await;
    let secret = token.token.expose().to_string();
    let id = Uuid::new_v4();
    let cases: Vec<(&str, Vec<u8>, BasicProperties)> = vec![
        ("not_json", b"disconnect please".to_vec(), json()),
        (
            "not_an_object",
            br#"["request_id", "access_token"]"#.to_vec(),
            json(),
        ),
        (
            "missing_field",
            format!(r#"{{"access_token":"{secret}"}}"#).into_bytes(),
            json(),
        ),
        (
            "missing_field",
            format!(r#"{{"request_id":"{id}"}}"#).into_bytes(),
            json(),
        ),
        (
            "invalid_field",
            format!(r#"{{"request_id":"not-a-uuid","access_token":"{secret}"}}"#).into_bytes(),
            json(),
        ),
        (
            "invalid_field",
            format!(r#"{{"request_id":42,"access_token":"{secret}"}}"#).into_bytes(),
            json(),
        ),
        (
            "invalid_field",
            format!(r#"{{"request_id":"{id}","access_token":"{secret}\u0007"}}"#).into_bytes(),
            json(),
        ),
        (
            "invalid_field",
            format!(
                r#"{{"request_id":"{id}","access_token":"{secret}","requested_by":"{}"}}"#,
                "x".repeat(300)
            )
            .into_bytes(),
            json(),
        ),
        (
            // A huge string within the size limit: a 12 KiB "token".
            "invalid_field",
            format!(
                r#"{{"request_id":"{id}","access_token":"{}"}}"#,
                "A".repeat(12 * 1024)
            )
            .into_bytes(),
            json(),
        ),
        (
            "not_json",
            format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
            json(),
        ),
        (
            "too_large",
            format!(
                r#"{{"request_id":"{id}","access_token":"{secret}","pad":"{}"}}"#,
                "x".repeat(20 * 1024)
            )
            .into_bytes(),
            json(),
        ),
        ("not_utf8", vec![b'{', 0xff, 0xfe, b'}'], json()),
        (
            // Which value wins is the parser's choice: refused outright.
            "duplicate_key",
            format!(
                r#"{{"request_id":"{id}","access_token":"dwt_unknown","access_token":"{secret}"}}"#
            )
            .into_bytes(),
            json(),
        ),
        (
            "wrong_content_type",
            format!(r#"{{"request_id":"{id}","access_token":"{secret}"}}"#).into_bytes(),
            BasicProperties::default().with_content_type(ShortString::from("text/plain")),
        ),
    ];
    let (mut events, _worker, channel) = test.running().await;
    for (_, body, properties) in &cases {
        test.publish_raw(&channel, body, properties.clone()).await;
    }
    let good = test
        .request_disconnect(&channel, Uuid::new_v4(), &secret)
        .await;

    let event = events.event_for(good).await;
    assert_eq!(
        event.routing_key, "connection.disconnected",
        "the good request still succeeds"
    );
    let letters = test.wait_for_dead_letters(cases.len()).await;
    assert_eq!(
        letters.len(),
        cases.len(),
        "exactly the bad messages are dead-lettered"
    );
    let mut expected: Vec<&str> = cases.iter().map(|(code, _, _)| *code).collect();
    let mut got: Vec<&str> = letters
        .iter()
        .map(|letter| letter.code.as_deref().unwrap_or("none"))
        .collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
    for letter in &letters {
        let reason = letter.reason.as_deref().expect("a reason header");
        assert!(
            !reason.contains(&secret),
            "the reason never quotes the token: {reason}"
        );
        assert!(
            cases.iter().any(|(_, body, _)| *body == letter.body),
            "the original body is kept byte for byte"
        );
    }
    assert_eq!(
        test.recorded_request_count().await,
        1,
        "bad messages record nothing"
    );
}

/// RabbitMQ's own dead-lettering drops a message's `expiration` (keeping it
/// in `x-death`); the worker's copy must too, or a bad request published with
/// a TTL would expire out of the dead-letter queue moments later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_keeps_no_expiration_and_stays_in_the_dead_letter_queue() {
    let test = TestContext::new().await;
    let _worker = test.spawn_worker();
    let channel = test.channel().await;
    let expiring = json().with_expiration(ShortString::from("1000"));
    test.publish_raw(&channel, b"not json", expiring).await;
    let queue = &test.topology.dead_letter_queue;
    crate::support::eventually("the dead letter", || async {
        (test.ready_messages(&channel, queue).await == 1).then_some(())
    })
    .await;

    // Past the original's time to live.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let letters = test.take_dead_letters().await;

    assert_eq!(letters.len(), 1, "still there after its original TTL");
    assert_eq!(letters[0].expiration, None);
    assert_eq!(
        letters[0].header("x-original-expiration").as_deref(),
        Some("1000")
    );
    assert_eq!(letters[0].code.as_deref(), Some("not_json"));
}

/// A bad request whose dead letter reaches no queue (the dead-letter queue's
/// binding removed while the worker runs): RabbitMQ confirms a message it
/// routes nowhere, so the worker publishes dead letters `mandatory`, takes
/// a returned one for a failed publish, counts it, and returns the request
/// to its queue. Nothing is lost: once the binding is back, the next
/// delivery is dead-lettered with its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_that_reaches_no_queue_leaves_its_request_in_the_queue() {
    let mut test = TestContext::new().await;
    let channel = test.channel().await;
    // Room for many returns before RabbitMQ's own dead-lettering (at the
    // delivery limit, at-least-once) takes over, which retries an unroutable
    // dead letter only every few minutes.
    test.delete_request_queue(&channel).await;
    test.topology.delivery_limit = 1000;
    test.topology.declare(&channel).await.expect("declaring");
    let worker = test.spawn_worker_process(&[]);
    until_ready(&worker).await;
    bind_dead_letter_queue(&test, &channel, false).await;

    test.publish_raw(&channel, b"not json", json()).await;
    let series = "disconnect_worker_dead_letter_failures_total{reason=\"unroutable\"}";
    crate::support::eventually("an unroutable dead letter counted", || async {
        (crate::support::scraped(&worker, series).await >= 1.0).then_some(())
    })
    .await;
    assert_eq!(
        test.ready_messages(&channel, &test.topology.dead_letter_queue)
            .await,
        0
    );

    bind_dead_letter_queue(&test, &channel, true).await;
    let letters = test.wait_for_dead_letters(1).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].code.as_deref(), Some("not_json"));
    assert_eq!(letters[0].body, b"not json");
}

/// Bind the dead-letter queue to its exchange, or remove that binding.
async fn bind_dead_letter_queue(test: &TestContext, channel: &lapin::Channel, bound: bool) {
    use lapin::options::QueueBindOptions;
    use lapin::types::FieldTable;

    let queue = test.topology.dead_letter_queue.as_str();
    let exchange = test.topology.dead_letter_exchange.as_str();
    let done = if bound {
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
    } else {
        channel
            .queue_unbind(
                queue.into(),
                exchange.into(),
                "".into(),
                FieldTable::default(),
            )
            .await
    };
    done.expect("binding the dead-letter queue");
}
