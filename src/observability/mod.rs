//! What operators watch: metrics, readiness, and the HTTP endpoints that
//! expose them.

pub mod backlog;
pub mod http;
pub mod metrics;
pub mod readiness;

pub use readiness::Readiness;
