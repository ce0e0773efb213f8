//! A real three-node RabbitMQ cluster on this machine (its own nodes, never
//! the machine's): two workers given every node's address keep every
//! invariant of the fault suite when the node they are connected to stops,
//! and when the quorum queue's leader stops.

use disconnect_testkit::cluster::{RabbitCluster, CLUSTER_TEST_TIMEOUT};
use disconnect_testkit::WorkerProcess;

use crate::support::workload::{DeadLetters, Workload};
use crate::support::{eventually, sample, TestContext};

/// How many times a worker process has opened a new broker session.
async fn reconnects(worker: &WorkerProcess) -> f64 {
    let (_, metrics) = worker.get("/metrics").await.expect("metrics");
    sample(&metrics, "disconnect_worker_broker_reconnects_total").unwrap_or(0.0)
}

/// Kill node `stop` while two workers, given the nodes in `order`, work
/// through a stream; the test's own connections go to node `observe`, and the
/// topology is declared through node `lead` (which so leads the queue).
/// Returns how many times each worker opened a new broker session.
async fn stream_through_a_node_stopping(
    cluster: &RabbitCluster,
    order: [usize; 3],
    lead: usize,
    observe: usize,
    stop: usize,
) -> Vec<f64> {
    let test = TestContext::on_broker(&cluster.amqp_url(observe), &cluster.amqp_url(lead)).await;
    assert_eq!(
        cluster
            .leader_of(&test.topology.request_queue, observe)
            .expect("the queue's leader"),
        lead
    );
    let workload = Workload::prepare(&test, 1500, 2)
        .await
        .without_bad_messages();
    let mut events = test.event_tap().await;
    let addresses = cluster.amqp_urls(&order);
    let workers = [
        test.spawn_worker_process(&[("AMQP_URL", &addresses)]),
        test.spawn_worker_process(&[("AMQP_URL", &addresses)]),
    ];
    eventually("both workers on the first node of their list", || async {
        (cluster.connections_on(order[0]).ok()? == workers.len()).then_some(())
    })
    .await;
    workload.publish(&test).await;

    test.wait_for_progress(100).await;
    let recorded_before_stop = test.recorded_request_count().await as usize;
    cluster.kill_node(stop).expect("killing the node");
    let recorded_after_stop = test.recorded_request_count().await as usize;
    eprintln!(
        "node {stop} killed with {recorded_before_stop} to {recorded_after_stop} of {} requests recorded",
        workload.distinct_requests().len()
    );
    assert!(
        recorded_after_stop < workload.distinct_requests().len(),
        "the node went away mid-stream"
    );

    // Nothing dead-lettered: the stream has no bad message, and no valid
    // request may reach the dead-letter queue.
    test.assert_invariants(&workload, &mut events, DeadLetters::Exactly)
        .await;
    let mut sessions = Vec::new();
    for worker in &workers {
        sessions.push(reconnects(worker).await);
    }
    sessions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_lose_nothing_when_their_node_and_then_the_queue_leader_stop() {
    assert!(
        RabbitCluster::available(),
        "this test starts RabbitMQ nodes from the installed server, as root or the rabbitmq user"
    );
    let cluster = tokio::task::spawn_blocking(|| RabbitCluster::start(3))
        .await
        .expect("joined")
        .expect("a three-node cluster");
    tokio::time::timeout(CLUSTER_TEST_TIMEOUT, async {
        // The workers connect to node 0 (first in their list), the queue is
        // led by node 2; node 0 is killed, and both move to another node.
        let reconnected = stream_through_a_node_stopping(&cluster, [0, 1, 2], 2, 2, 0).await;
        assert!(
            reconnected.iter().all(|count| *count >= 1.0),
            "{reconnected:?}"
        );
        tokio::task::block_in_place(|| cluster.restart_node(0)).expect("restarting node 0");
        // The workers connect to node 1, the queue is led by node 2, which
        // is killed; the test watches through node 0.
        stream_through_a_node_stopping(&cluster, [1, 0, 2], 2, 0, 2).await;
    })
    .await
    .expect("the cluster test ends in time");
}
