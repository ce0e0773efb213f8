//! What operators watch: metrics, readiness, the outage log, and the HTTP
//! endpoints that expose them.

pub mod http;
pub mod metrics;
pub mod outage;
pub mod readiness;

pub use outage::Outage;
pub use readiness::Readiness;
