//! Logging through tracing: text for people, JSON for log shippers. Logs go
//! to stderr so that commands' stdout carries only their output.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Level filter used when `RUST_LOG` is not set.
const DEFAULT_FILTER: &str = "info";

pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    // A subscriber already set (tests, embedding) is fine.
    drop(result);
}
