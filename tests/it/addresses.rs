//! `AMQP_URL` as a list: the worker uses the first address that answers and
//! moves on when it loses one; a command with no answering address ends in
//! one line naming the setting.

use uuid::Uuid;

use crate::support::process::{run_to_exit, until_ready};
use crate::support::proxy::Proxy;
use crate::support::{eventually, RunningWorker, TestContext};

/// An address nothing listens on.
fn dead_address(test: &TestContext) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let mut url = url::Url::parse(&test.amqp_url).expect("url");
    url.set_host(Some("127.0.0.1")).expect("host");
    url.set_port(Some(port)).expect("port");
    url.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_moves_to_the_next_address_when_it_loses_one() {
    let test = TestContext::new().await;
    let first = Proxy::for_url(&test.amqp_url, 5672).await;
    let second = Proxy::for_url(&test.amqp_url, 5672).await;
    let addresses = format!(
        "{},{}",
        first.url_through(&test.amqp_url),
        second.url_through(&test.amqp_url)
    );
    let _worker = RunningWorker::spawn(test.run_settings_with(&test.database_url, &addresses));
    let mut events = test.event_tap().await;
    let channel = test.channel().await;
    let before = test.issue("app", "company-c", "gusto", "user-a").await;
    let request = test
        .request_disconnect(&channel, Uuid::new_v4(), before.token.expose())
        .await;
    events.event_for(request).await;
    assert_eq!(
        (first.open_links(), second.open_links()),
        (1, 0),
        "the first address"
    );

    // The first node goes away for good.
    first.go_down();
    first.cut();
    let after = test.issue("app", "company-d", "gusto", "user-a").await;
    let request = test
        .request_disconnect(&channel, Uuid::new_v4(), after.token.expose())
        .await;

    assert_eq!(
        events.event_for(request).await.routing_key,
        "connection.disconnected"
    );
    eventually("the session on the second address", || async {
        (second.open_links() == 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_that_does_not_answer_is_skipped_at_start() {
    let test = TestContext::new().await;
    let addresses = format!("{},{}", dead_address(&test), test.amqp_url);
    let worker = test.spawn_worker_process(&[("AMQP_URL", &addresses)]);
    until_ready(&worker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_with_no_address_answering_ends_in_one_line_naming_the_setting() {
    let test = TestContext::new().await;
    let mut dead = url::Url::parse(&dead_address(&test)).expect("url");
    dead.set_password(Some("mq-pa55word")).expect("password");
    let addresses = format!("{dead},{dead}");
    let output = run_to_exit({
        let mut command = test.command(&["disconnect", "dwt_some-token"]);
        command.env("AMQP_URL", &addresses);
        command
    })
    .await;

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("AMQP_URL"), "{}", errors[0]);
    assert!(!stderr.contains("mq-pa55word"), "{stderr}");
}
