//! Failed attempts: the schedule, 410, redirects, Retry-After, a killed
//! dispatcher, and resending by hand.

use std::time::Duration;

use super::{disconnect_one, ready_dispatcher};
use crate::support::webhooks::{gaps, Receiver, Reply};
use crate::support::{eventually, TestContext};

#[tokio::test]
async fn a_receiver_that_fails_three_times_gets_the_event_on_the_fourth_attempt_spaced_by_the_schedule(
) {
    let context = TestContext::new().await;
    let receiver = Receiver::answering(|nth| Reply::Status(if nth < 3 { 500 } else { 204 })).await;
    let (endpoint, _) = context.add_endpoint("app-a", &receiver.url, "standard");
    let _dispatcher =
        ready_dispatcher(&context, &[("WEBHOOK_RETRY_SCHEDULE_SECS", "1,2,3,3")]).await;
    let (_events, _worker, channel) = context.running().await;
    disconnect_one(&context, &channel, "app-a").await;

    let received = receiver.wait_for(4).await;
    let ids: Vec<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one id on every attempt: {ids:?}"
    );
    for (gap, planned) in gaps(&received).iter().zip([1.0, 2.0, 3.0]) {
        assert!(
            gap.as_secs_f64() >= planned - 0.05,
            "an attempt came {gap:?} after the last, before the schedule's {planned} s"
        );
    }
    let attempts = eventually("the fourth attempt recorded", || async {
        let attempts = context.attempts(&["--endpoint", &endpoint.to_string()]);
        (attempts.len() == 4 && attempts[0]["delivery_status"] == "delivered").then_some(attempts)
    })
    .await;
    let codes: Vec<i64> = attempts
        .iter()
        .rev()
        .map(|a| a["status_code"].as_i64().unwrap_or(0))
        .collect();
    assert_eq!(codes, [500, 500, 500, 204]);
    assert!(
        context.endpoint(endpoint)["failing_since"].is_null(),
        "the 2xx ended the endpoint's failing streak"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.received().len(), 4, "nothing after the 2xx");
}

#[tokio::test]
async fn gone_disables_the_endpoint_and_announces_it_once() {
    let context = TestContext::new().await;
    let receiver = Receiver::answering(|_| Reply::Status(410)).await;
    let (endpoint, _) = context.add_endpoint("app-a", &receiver.url, "standard");
    let mut announcements = context.announcements().await;
    let _dispatcher = ready_dispatcher(&context, &[]).await;
    let (_events, _worker, channel) = context.running().await;
    disconnect_one(&context, &channel, "app-a").await;

    receiver.wait_for(1).await;
    let event = announcements
        .next_within(crate::support::PATIENCE)
        .await
        .expect("an announcement");
    assert_eq!(event["event_type"], "webhook.endpoint_disabled");
    assert_eq!(event["endpoint_id"], endpoint.to_string());
    assert_eq!(event["client_id"], "app-a");
    assert_eq!(event["reason"], "gone");
    let listed = context.endpoint(endpoint);
    assert_eq!(listed["disabled_reason"], "gone");
    let attempts = context.attempts(&["--endpoint", &endpoint.to_string(), "--failed"]);
    assert_eq!(attempts.len(), 1, "failed at once, no retry: {attempts:?}");

    // A disabled endpoint is sent nothing more.
    disconnect_one(&context, &channel, "app-a").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.received().len(), 1);
    assert!(
        announcements
            .next_within(Duration::from_secs(1))
            .await
            .is_none(),
        "announced once"
    );
}

#[tokio::test]
async fn a_redirect_is_a_failure_and_is_not_followed() {
    let context = TestContext::new().await;
    let elsewhere = Receiver::ok().await;
    let location = elsewhere.url.clone();
    let receiver =
        Receiver::answering(move |_| Reply::WithHeader(307, "location", location.clone())).await;
    let (endpoint, _) = context.add_endpoint("app-a", &receiver.url, "standard");
    let _dispatcher = ready_dispatcher(&context, &[("WEBHOOK_RETRY_SCHEDULE_SECS", "1")]).await;
    let (_events, _worker, channel) = context.running().await;
    disconnect_one(&context, &channel, "app-a").await;

    receiver.wait_for(2).await;
    let attempts = eventually("the delivery failed", || async {
        let attempts = context.attempts(&["--endpoint", &endpoint.to_string(), "--failed"]);
        (attempts.len() == 2).then_some(attempts)
    })
    .await;
    assert!(attempts.iter().all(|a| a["status_code"] == 307));
    assert!(attempts[0]["error"]
        .as_str()
        .unwrap_or_default()
        .contains("redirects are not followed"));
    assert!(
        elsewhere.received().is_empty(),
        "the redirect was not followed"
    );
}

#[tokio::test]
async fn retry_after_stretches_the_wait() {
    let context = TestContext::new().await;
    let receiver = Receiver::answering(|nth| {
        if nth == 0 {
            Reply::WithHeader(429, "retry-after", "4".into())
        } else {
            Reply::Status(200)
        }
    })
    .await;
    context.add_endpoint("app-a", &receiver.url, "standard");
    // Without the header the wait would be 2 s (the schedule, and the
    // slow-down floor for a 429).
    let _dispatcher = ready_dispatcher(
        &context,
        &[
            ("WEBHOOK_RETRY_SCHEDULE_SECS", "2"),
            ("WEBHOOK_SLOW_DOWN_SECS", "2"),
        ],
    )
    .await;
    let (_events, _worker, channel) = context.running().await;
    disconnect_one(&context, &channel, "app-a").await;

    let received = receiver.wait_for(2).await;
    let gap = gaps(&received)[0];
    assert!(
        gap >= Duration::from_millis(3950),
        "retried after {gap:?}, not the 4 s asked"
    );
}

#[tokio::test]
async fn a_dispatcher_killed_mid_attempt_loses_nothing_and_the_repeat_carries_the_same_id() {
    let context = TestContext::new().await;
    let receiver = Receiver::answering(|nth| {
        if nth == 0 {
            Reply::Hang
        } else {
            Reply::Status(200)
        }
    })
    .await;
    let (endpoint, secret) = context.add_endpoint("app-a", &receiver.url, "standard");
    // A long timeout: the first attempt is still waiting when it is killed,
    // and its lease (2 x 2 s + 5 s) brings the delivery back.
    let settings = [("WEBHOOK_TIMEOUT_SECS", "2")];
    let dispatcher = ready_dispatcher(&context, &settings).await;
    let (mut events, _worker, channel) = context.running().await;
    let request = disconnect_one(&context, &channel, "app-a").await;
    events.event_for(request).await;
    receiver.wait_for(1).await;
    dispatcher.signal("KILL");
    let _ = dispatcher.wait().await;

    let _restarted = ready_dispatcher(&context, &settings).await;
    let received = receiver.wait_for(2).await;
    assert_eq!(
        received[0].header("webhook-id"),
        received[1].header("webhook-id")
    );
    assert_eq!(received[0].body, received[1].body);
    crate::support::webhooks::verify_with_official_library("standard", &[&secret], &received[1..]);
    eventually("the delivery recorded as delivered", || async {
        let attempts = context.attempts(&["--endpoint", &endpoint.to_string()]);
        attempts
            .iter()
            .any(|a| a["delivery_status"] == "delivered")
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn resend_sends_a_failed_delivery_again_with_the_same_id() {
    let context = TestContext::new().await;
    let receiver = Receiver::answering(|_| Reply::Status(503)).await;
    let (endpoint, _) = context.add_endpoint("app-a", &receiver.url, "finch");
    let _dispatcher = ready_dispatcher(&context, &[("WEBHOOK_RETRY_SCHEDULE_SECS", "0.2")]).await;
    let (mut events, _worker, channel) = context.running().await;
    let request = disconnect_one(&context, &channel, "app-a").await;
    let event = events.event_for(request).await;
    let event_id = event.json["event_id"]
        .as_str()
        .expect("event_id")
        .to_string();

    let failed = eventually("the delivery failed", || async {
        let attempts = context.attempts(&["--failed", "--event-id", &event_id]);
        (attempts.len() == 2).then_some(attempts)
    })
    .await;
    assert_eq!(failed[0]["endpoint_id"], endpoint.to_string());
    receiver.answer_with(|_| Reply::Status(200));
    crate::support::process::succeeded(context.webhooks(&["resend", "--event-id", &event_id]));

    let received = receiver.wait_for(3).await;
    assert_eq!(
        received[2].header("finch-event-id"),
        format!("msg_{event_id}")
    );
    eventually("the resent delivery delivered", || async {
        let attempts = context.attempts(&["--event-id", &event_id]);
        (attempts.first()?["delivery_status"] == "delivered").then_some(())
    })
    .await;
}

#[tokio::test]
async fn sigterm_lets_the_attempt_in_flight_finish_and_records_it() {
    let context = TestContext::new().await;
    let receiver = Receiver::answering(|_| Reply::After(Duration::from_secs(2), 200)).await;
    let (endpoint, _) = context.add_endpoint("app-a", &receiver.url, "standard");
    let dispatcher = ready_dispatcher(&context, &[]).await;
    let (_events, _worker, channel) = context.running().await;
    disconnect_one(&context, &channel, "app-a").await;
    receiver.wait_for(1).await;

    dispatcher.signal("TERM");
    let status = dispatcher.wait().await;
    assert!(status.success(), "{status:?}");
    let attempts = context.attempts(&["--endpoint", &endpoint.to_string()]);
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["delivery_status"], "delivered", "{attempts:?}");

    // Nothing is owed: a new dispatcher sends nothing again.
    let _restarted = ready_dispatcher(&context, &[]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn an_endpoint_failing_for_longer_than_allowed_is_disabled_and_announced() {
    let context = TestContext::new().await;
    let receiver = Receiver::answering(|_| Reply::Status(500)).await;
    let (endpoint, _) = context.add_endpoint("app-a", &receiver.url, "standard");
    let mut announcements = context.announcements().await;
    let _dispatcher = ready_dispatcher(
        &context,
        &[
            (
                "WEBHOOK_RETRY_SCHEDULE_SECS",
                "0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5",
            ),
            ("WEBHOOK_DISABLE_AFTER_SECS", "2"),
        ],
    )
    .await;
    let (_events, _worker, channel) = context.running().await;
    disconnect_one(&context, &channel, "app-a").await;

    let event = announcements
        .next_within(crate::support::PATIENCE)
        .await
        .expect("an announcement");
    assert_eq!(event["reason"], "failing");
    assert_eq!(event["endpoint_id"], endpoint.to_string());
    assert!(event["failing_since"].is_string());
    let listed = context.endpoint(endpoint);
    assert_eq!(listed["disabled_reason"], "failing");
    // Disabled after about 2 s of failures, not after the last attempt.
    let attempts = context.attempts(&["--endpoint", &endpoint.to_string()]);
    assert!(
        (4..9).contains(&attempts.len()),
        "attempts until disabled: {}",
        attempts.len()
    );
    assert_eq!(
        attempts[0]["delivery_status"], "pending",
        "the delivery waits, not failed"
    );
}

#[tokio::test]
async fn an_attempt_past_its_timeout_is_recorded_as_timed_out_and_tried_again() {
    let context = TestContext::new().await;
    let receiver = Receiver::answering(|nth| {
        if nth == 0 {
            Reply::Hang
        } else {
            Reply::Status(200)
        }
    })
    .await;
    let (endpoint, _) = context.add_endpoint("app-a", &receiver.url, "standard");
    let _dispatcher = ready_dispatcher(
        &context,
        &[
            ("WEBHOOK_TIMEOUT_SECS", "1"),
            ("WEBHOOK_SLOW_DOWN_SECS", "1"),
        ],
    )
    .await;
    let (_events, _worker, channel) = context.running().await;
    disconnect_one(&context, &channel, "app-a").await;

    let received = receiver.wait_for(2).await;
    assert_eq!(
        received[0].header("webhook-id"),
        received[1].header("webhook-id")
    );
    let attempts = eventually("both attempts recorded", || async {
        let attempts = context.attempts(&["--endpoint", &endpoint.to_string()]);
        (attempts.len() == 2 && attempts[0]["delivery_status"] == "delivered").then_some(attempts)
    })
    .await;
    let timed_out = &attempts[1];
    assert!(timed_out["status_code"].is_null(), "{timed_out}");
    assert!(
        timed_out["error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("timed out"),
        "{timed_out}"
    );
}
