//! Signed webhooks to the customer's application: endpoints per
//! application (`webhooks ...` commands), and the dispatcher (`deliver`)
//! that sends every outcome event of an application's connections to its
//! endpoints, at least once, signed, retried on a schedule.
//!
//! The dispatcher consumes the event exchange through a quorum queue of its
//! own (`intake`), records one delivery per endpoint in Postgres, and
//! attempts due deliveries with bounded concurrency per endpoint
//! (`dispatch`), so a slow receiver waits alone. docs/webhooks.md.

pub mod address;
pub mod announce;
pub mod attempt;
pub mod dispatch;
pub mod endpoint;
pub mod intake;
pub mod resolver;
pub mod schedule;
pub mod secrets;
pub mod signing;

pub use endpoint::{EndpointUrl, HeaderFormat};

/// The operational event announcing an endpoint the dispatcher disabled.
pub const ENDPOINT_DISABLED: &str = "webhook.endpoint_disabled";
