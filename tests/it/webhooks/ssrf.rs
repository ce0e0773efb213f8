//! Addresses outside the public internet: refused for a literal address
//! when the endpoint is added, and at the attempt for a name that
//! resolves into them; and a receiver that never answers holds only its
//! own endpoint's slots.

use super::{disconnect_one, ready_dispatcher};
use crate::support::webhooks::{Receiver, Reply};
use crate::support::{eventually, TestContext};

#[tokio::test]
async fn literal_addresses_in_refused_ranges_are_refused_when_added() {
    let context = TestContext::new().await;
    for url in [
        "https://127.0.0.1/hook",
        "https://10.1.2.3/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://100.64.0.1/",
        "https://[::1]/hook",
        "https://[fd00::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://[::ffff:8.8.8.8]/hook",
    ] {
        let output = context
            .webhooks(&["add", "--client-id", "app-a", "--url", url])
            .env("WEBHOOK_ALLOWED_CIDRS", "")
            .output()
            .expect("running");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{url}: {stderr}");
        assert!(stderr.contains("WEBHOOK_ALLOWED_CIDRS"), "{url}: {stderr}");
    }
    let output = context
        .webhooks(&["list", "--json"])
        .output()
        .expect("running");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "[]");
}

#[tokio::test]
async fn a_name_that_resolves_to_loopback_is_a_failed_attempt_with_its_reason() {
    let context = TestContext::new().await;
    let receiver = Receiver::ok().await;
    let url = format!("http://localhost:{}/hook", receiver.port);
    let (endpoint, _) = context.add_endpoint("app-a", &url, "standard");
    let _dispatcher = ready_dispatcher(
        &context,
        &[
            ("WEBHOOK_ALLOWED_CIDRS", ""),
            ("WEBHOOK_RETRY_SCHEDULE_SECS", "0.2"),
        ],
    )
    .await;
    let (_events, _worker, channel) = context.running().await;
    disconnect_one(&context, &channel, "app-a").await;

    let attempts = eventually("the refused attempts", || async {
        let attempts = context.attempts(&["--endpoint", &endpoint.to_string(), "--failed"]);
        (attempts.len() == 2).then_some(attempts)
    })
    .await;
    let error = attempts[0]["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("refused"), "{error}");
    assert!(error.contains("loopback"), "{error}");
    assert!(
        receiver.received().is_empty(),
        "nothing was sent to loopback"
    );
}

#[tokio::test]
async fn a_receiver_that_never_answers_holds_only_its_own_slots() {
    let context = TestContext::new().await;
    let dead = Receiver::answering(|_| Reply::Hang).await;
    let alive = Receiver::ok().await;
    let (dead_endpoint, _) = context.add_endpoint("app-a", &dead.url, "standard");
    context.add_endpoint("app-a", &alive.url, "standard");
    // Four slots in all, two per endpoint: without the per-endpoint bound
    // the dead receiver's attempts would take every slot until they time
    // out, after longer than the test waits.
    let _dispatcher = ready_dispatcher(
        &context,
        &[
            ("WEBHOOK_CONCURRENCY", "4"),
            ("WEBHOOK_ENDPOINT_CONCURRENCY", "2"),
            ("WEBHOOK_TIMEOUT_SECS", "60"),
        ],
    )
    .await;
    let (_events, _worker, channel) = context.running().await;
    for _ in 0..12 {
        disconnect_one(&context, &channel, "app-a").await;
    }
    alive.wait_for(12).await;
    let dead_attempts = context.attempts(&["--endpoint", &dead_endpoint.to_string()]);
    assert!(
        dead_attempts
            .iter()
            .all(|line| line["attempted_at"].is_null()),
        "every delivery to the live endpoint came while the dead one's first attempts \
         still waited: {dead_attempts:?}"
    );
    assert_eq!(
        dead.received().len(),
        2,
        "the dead receiver holds its two slots only"
    );
}
