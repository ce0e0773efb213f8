//! Acknowledgements coalesced per batch (`worker::acks`): a `multiple` ack
//! settles every earlier delivery of the channel too, so it must never reach
//! a delivery whose work is not committed.

use diesel_async::SimpleAsyncConnection;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use uuid::Uuid;

use crate::support::{eventually, scraped, TestContext};

/// Two requests in two batches, the first held behind another transaction's
/// row lock: the second commits first and is acknowledged. When the worker
/// is then killed, the first, and only the first, goes back to the queue:
/// its delivery was not acknowledged with the later one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_committed_first_does_not_acknowledge_an_earlier_one_still_at_work() {
    let test = TestContext::new().await;
    let held = test.issue("app", "company-held", "gusto", "user").await;
    let free = test.issue("app", "company-free", "gusto", "user").await;
    let mut holder = test.hold_row_lock(held.connection_id).await;
    let worker = test.spawn_worker_process(&[("BATCH_SIZE", "1")]);
    let channel = test.channel().await;
    let held_request = test
        .request_disconnect(&channel, Uuid::new_v4(), held.token.expose())
        .await;
    test.request_disconnect(&channel, Uuid::new_v4(), free.token.expose())
        .await;

    // Counted once its ack has been sent.
    eventually("the later request to be acknowledged", || async {
        let done = scraped(
            &worker,
            "disconnect_worker_requests_total{outcome=\"disconnected\"}",
        )
        .await;
        (done >= 1.0).then_some(())
    })
    .await;
    assert!(!test.is_active(&free).await);
    assert!(test.is_active(&held).await, "the first waits on the lock");

    worker.signal("KILL");
    worker.wait().await;
    holder.batch_execute("ROLLBACK").await.expect("rollback");

    let queue = test.topology.request_queue.clone();
    eventually("the unacknowledged request back in the queue", || async {
        (test.ready_messages(&channel, &queue).await >= 1).then_some(())
    })
    .await;
    let mut returned = Vec::new();
    while let Some(message) = channel
        .basic_get(queue.as_str().into(), BasicGetOptions::default())
        .await
        .expect("basic_get")
    {
        let body: serde_json::Value =
            serde_json::from_slice(&message.delivery.data).expect("a request");
        returned.push(body["request_id"].as_str().expect("an id").to_string());
        message
            .delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .expect("ack");
    }
    assert_eq!(returned, [held_request.to_string()]);
}
