//! The settlement rules, with a scripted database instead of Postgres.

use std::sync::Mutex;
use std::time::Duration;

use diesel::result::Error as QueryError;

use super::*;
use crate::domain::{AccessToken, Outcome, OutcomeKind, RejectionCode, RequestId};

type Rule =
    dyn Fn(&[DisconnectRequest], usize) -> Result<Vec<Processed>, ProcessError> + Send + Sync;

/// Answers each call by a rule given the requests and the call's number,
/// and keeps every call's request ids.
struct Scripted {
    rule: Box<Rule>,
    calls: Mutex<Vec<Vec<RequestId>>>,
}

impl RecordDisconnects for Scripted {
    async fn record(&self, requests: &[DisconnectRequest]) -> Result<Vec<Processed>, ProcessError> {
        let call = {
            let mut calls = self.calls.lock().expect("lock");
            calls.push(requests.iter().map(|request| request.request_id).collect());
            calls.len()
        };
        (self.rule)(requests, call)
    }
}

fn processor(
    rule: impl Fn(&[DisconnectRequest], usize) -> Result<Vec<Processed>, ProcessError>
        + Send
        + Sync
        + 'static,
) -> BatchProcessor<Scripted> {
    BatchProcessor::new(
        Scripted {
            rule: Box::new(rule),
            calls: Mutex::new(Vec::new()),
        },
        RetrySettings {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            max_attempts: 3,
        },
        CancellationToken::new(),
        DatabaseHealth::without_probe(),
    )
}

fn calls(processor: &BatchProcessor<Scripted>) -> Vec<Vec<RequestId>> {
    processor.records.calls.lock().expect("lock").clone()
}

fn requests(count: usize) -> Vec<DisconnectRequest> {
    (0..count)
        .map(|_| DisconnectRequest::new(AccessToken::generate()))
        .collect()
}

fn decoded(requests: &[DisconnectRequest]) -> Vec<Decoded> {
    requests.iter().cloned().map(Ok).collect()
}

fn done(requests: &[DisconnectRequest]) -> Vec<Processed> {
    requests
        .iter()
        .map(|_| Processed::Recorded(Outcome::UnknownToken))
        .collect()
}

fn unavailable() -> ProcessError {
    ProcessError::Unavailable(DbError::Query(QueryError::BrokenTransactionManager))
}

fn refused_error() -> ProcessError {
    ProcessError::Refused(DbError::Query(QueryError::NotFound))
}

fn conflict() -> ProcessError {
    ProcessError::Conflict(DbError::Query(QueryError::NotFound))
}

fn acked() -> Settlement {
    Settlement::Ack(Processed::Recorded(Outcome::UnknownToken))
}

#[tokio::test]
async fn a_committed_batch_is_acknowledged_whole_after_one_transaction() {
    let batch = requests(3);
    let processor = processor(|requests, _| Ok(done(requests)));

    let settlements = processor.settle(decoded(&batch)).await;

    assert_eq!(settlements, vec![acked(), acked(), acked()]);
    assert_eq!(calls(&processor).len(), 1);
}

#[tokio::test]
async fn bad_input_in_a_batch_is_dead_lettered_and_never_reaches_the_database() {
    let batch = requests(2);
    let rejection = Rejection::new(RejectionCode::NotJson, "body is not JSON");
    let mut input = decoded(&batch);
    input.insert(1, Err(rejection.clone()));
    let processor = processor(|requests, _| Ok(done(requests)));

    let settlements = processor.settle(input).await;

    assert_eq!(
        settlements,
        vec![acked(), Settlement::DeadLetter(rejection), acked()]
    );
    assert_eq!(
        calls(&processor),
        vec![vec![batch[0].request_id, batch[1].request_id]]
    );
}

#[tokio::test]
async fn a_request_the_database_refuses_is_retried_alone_and_its_neighbours_are_acknowledged() {
    let batch = requests(3);
    let poison = batch[1].request_id;
    let processor = processor(move |requests, _| {
        if requests.iter().any(|request| request.request_id == poison) {
            Err(refused_error())
        } else {
            Ok(done(requests))
        }
    });

    let settlements = processor.settle(decoded(&batch)).await;

    assert_eq!(settlements, vec![acked(), Settlement::Retry, acked()]);
    let calls = calls(&processor);
    // Three attempts at the batch, then each request alone: the poison one
    // three times, its neighbours once.
    assert_eq!(calls.iter().filter(|call| call.len() == 3).count(), 3);
    assert_eq!(
        calls
            .iter()
            .filter(|call| call.as_slice() == [poison])
            .count(),
        3
    );
    assert_eq!(calls.len(), 3 + 1 + 3 + 1);
}

#[tokio::test]
async fn a_request_refused_every_time_is_retried_counted_against_its_delivery_limit() {
    let batch = requests(1);
    let processor = processor(|_, _| Err(refused_error()));

    let settlements = processor.settle(decoded(&batch)).await;

    assert_eq!(settlements, vec![Settlement::Retry]);
    assert_eq!(calls(&processor).len(), 3, "RETRY_MAX_ATTEMPTS in all");
}

#[tokio::test]
async fn a_transient_failure_in_the_middle_of_a_batch_retries_the_whole_batch() {
    let batch = requests(3);
    let processor = processor(|requests, call| match call {
        1 => Err(unavailable()),
        2 => Err(conflict()),
        _ => Ok(done(requests)),
    });

    let settlements = processor.settle(decoded(&batch)).await;

    assert_eq!(settlements, vec![acked(), acked(), acked()]);
    let calls = calls(&processor);
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|call| call.len() == 3), "never split");
}

#[tokio::test]
async fn outages_and_conflicts_do_not_use_up_the_attempts_of_a_refusal() {
    let batch = requests(1);
    let processor = processor(|requests, call| match call {
        1..=10 => Err(if call % 2 == 0 {
            conflict()
        } else {
            unavailable()
        }),
        _ => Ok(done(requests)),
    });

    let settlements = processor.settle(decoded(&batch)).await;

    assert_eq!(settlements, vec![acked()]);
    assert_eq!(calls(&processor).len(), 11);
}

#[tokio::test]
async fn shutdown_during_an_outage_releases_the_batch_without_counting_a_failure() {
    let batch = requests(2);
    let mut processor = processor(|_, _| Err(unavailable()));
    processor.retry.min_delay = Duration::from_secs(3600);
    processor.retry.max_delay = Duration::from_secs(3600);
    let stop = processor.shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.cancel();
    });

    // The hour-long wait before the second attempt ends with the shutdown.
    let settlements =
        tokio::time::timeout(Duration::from_secs(10), processor.settle(decoded(&batch)))
            .await
            .expect("shutdown ends the wait between retries");

    assert_eq!(settlements, vec![Settlement::Release, Settlement::Release]);
    assert_eq!(calls(&processor).len(), 1);
}

#[tokio::test]
async fn shutdown_while_a_refused_batch_is_split_releases_the_requests_not_yet_tried() {
    let batch = requests(3);
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let mut processor = processor(move |requests, call| {
        if requests.len() > 1 {
            return Err(refused_error());
        }
        // The first request alone succeeds, and the worker is told to stop.
        assert_eq!(call, 4);
        stop.cancel();
        Ok(done(requests))
    });
    processor.shutdown = shutdown;

    let settlements = processor.settle(decoded(&batch)).await;

    assert_eq!(
        settlements,
        vec![acked(), Settlement::Release, Settlement::Release]
    );
}

fn no_connection() -> ProcessError {
    ProcessError::Unavailable(DbError::TimedOut(crate::db::Wait::Checkout(
        Duration::from_secs(5),
    )))
}

fn transaction_timed_out() -> ProcessError {
    ProcessError::Unavailable(DbError::TimedOut(crate::db::Wait::Transaction(
        Duration::from_secs(15),
    )))
}

/// A processor whose database is found unreachable (its health turned
/// down) once the scripted call `at` fails with `error`.
fn cut_off_at(
    at: usize,
    error: fn() -> ProcessError,
) -> (BatchProcessor<Scripted>, DatabaseHealth) {
    let health = DatabaseHealth::without_probe();
    let probe = health.clone();
    let mut processor = processor(move |requests, call| {
        if call < at {
            return Err(unavailable());
        }
        if call == at {
            probe.set_down(true);
            return Err(error());
        }
        Ok(done(requests))
    });
    processor.health = health.clone();
    (processor, health)
}

#[tokio::test]
async fn a_batch_whose_transaction_timed_out_goes_back_counted_once_the_database_is_unreachable() {
    let batch = requests(2);
    let (mut processor, _) = cut_off_at(1, transaction_timed_out);
    // An hour between retries: only the health can end the wait.
    processor.retry.min_delay = Duration::from_secs(3600);
    processor.retry.max_delay = Duration::from_secs(3600);

    let settlements =
        tokio::time::timeout(Duration::from_secs(10), processor.settle(decoded(&batch)))
            .await
            .expect("an unreachable database ends the wait between retries");

    assert_eq!(settlements, vec![Settlement::Retry, Settlement::Retry]);
    assert_eq!(calls(&processor).len(), 1);
}

#[tokio::test]
async fn a_batch_that_never_got_a_connection_goes_back_uncounted() {
    let batch = requests(2);
    let (processor, _) = cut_off_at(1, no_connection);

    let settlements = processor.settle(decoded(&batch)).await;

    assert_eq!(settlements, vec![Settlement::Release, Settlement::Release]);
}

#[tokio::test]
async fn an_earlier_attempt_that_reached_the_database_makes_the_return_counted() {
    let batch = requests(1);
    // The first attempt's connection closed mid-transaction; the second got
    // no connection at all.
    let (processor, _) = cut_off_at(2, no_connection);

    let settlements = processor.settle(decoded(&batch)).await;

    assert_eq!(settlements, vec![Settlement::Retry]);
}

#[tokio::test]
async fn nothing_is_attempted_while_the_database_is_unreachable() {
    let batch = requests(3);
    let health = DatabaseHealth::without_probe();
    health.set_down(true);
    let mut processor = processor(|requests, _| Ok(done(requests)));
    processor.health = health;

    let settlements = processor.settle(decoded(&batch)).await;

    assert_eq!(settlements, vec![Settlement::Release; 3]);
    assert!(calls(&processor).is_empty());
}

#[tokio::test]
async fn a_duplicate_is_acknowledged_with_its_first_outcome() {
    let batch = requests(1);
    let processor = processor(|_, _| {
        Ok(vec![Processed::AlreadyProcessed(
            OutcomeKind::Disconnected.into(),
        )])
    });

    let settlements = processor.settle(decoded(&batch)).await;

    assert_eq!(
        settlements,
        vec![Settlement::Ack(Processed::AlreadyProcessed(
            OutcomeKind::Disconnected.into()
        ))]
    );
    assert_eq!(settlements[0].label(), "duplicate");
}
