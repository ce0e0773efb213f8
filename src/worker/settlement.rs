//! What happens to a delivery, decided before any AMQP call: a closed set, so
//! every path through the worker ends in exactly one of these, and the
//! adapter in `settle` is the only place that turns them into AMQP methods.

use crate::domain::Rejection;
use crate::service::Processed;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Committed, or found processed before: `basic.ack`.
    Ack(Processed),
    /// Bad input, permanent: republished to the dead-letter exchange with its
    /// reason, then acknowledged.
    DeadLetter(Rejection),
    /// Processing was attempted and failed: returned to the queue with
    /// `basic.reject(requeue)`, which counts against the quorum queue's
    /// delivery limit, so a request that fails every time is dead-lettered
    /// by RabbitMQ after `DELIVERY_LIMIT` deliveries.
    ///
    /// Reject, not nack: from RabbitMQ 4.3 only `basic.reject` increments a
    /// quorum queue's `delivery-count`; `basic.nack` means "not processed"
    /// and does not count, so a nacked poison request would be redelivered
    /// forever.
    Retry,
    /// Not attempted (the worker is stopping): returned with
    /// `basic.nack(requeue)`, which does not count as a failed delivery.
    Release,
}

impl Settlement {
    /// The `outcome` label of `disconnect_worker_requests_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Ack(Processed::Recorded(outcome)) => outcome.kind().as_str(),
            Self::Ack(Processed::AlreadyProcessed(_)) => "duplicate",
            Self::DeadLetter(_) => "dead_lettered",
            Self::Retry => "retried",
            Self::Release => "released",
        }
    }
}
