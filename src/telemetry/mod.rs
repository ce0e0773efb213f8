//! Logs and traces. Logs go through `tracing` to stderr (so commands' stdout
//! carries only their output): text for people, JSON for log shippers.
//! Traces are the same spans, exported with OpenTelemetry when, and only
//! when, an OTLP endpoint is configured by the standard variables; without
//! one no OpenTelemetry layer is installed, so nothing is exported and
//! nothing is slower. Trace context crosses the queue in W3C `traceparent`
//! headers ([`propagation`]).

mod otel;
pub mod propagation;

use json_subscriber::JsonLayer;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::LogFormat;

/// Level filter used when `RUST_LOG` is not set.
const DEFAULT_FILTER: &str = "info";

/// What was installed; [`Telemetry::shutdown`] sends the spans still
/// buffered before the process exits.
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
}

/// Install the global subscriber. An OpenTelemetry setting that cannot work
/// is an error naming the variable.
pub fn init(format: LogFormat) -> Result<Telemetry, String> {
    // RUST_LOG filters the logs only: traces keep every span of ours.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let tracer_provider = otel::tracer_provider()?;
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => json_logs().boxed(),
    };
    let registry = tracing_subscriber::registry().with(logs.with_filter(filter));
    // A subscriber already set (tests, embedding) is fine.
    let _ = match &tracer_provider {
        Some(provider) => {
            use opentelemetry::trace::TracerProvider as _;
            // Our spans only, not log events: a span's attributes are chosen
            // (never a token), its log lines stay in the logs.
            let ours = filter_fn(|metadata| {
                metadata.is_span() && metadata.target().starts_with("disconnect_worker")
            });
            let traces = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("disconnect-worker"))
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_filter(ours);
            registry.with(traces).try_init()
        }
        None => registry.try_init(),
    };
    Ok(Telemetry { tracer_provider })
}

/// One JSON object per line: time, level, target, the event's fields, the
/// current span's fields, and, while traces are exported, the trace and
/// span ids (`openTelemetry.traceId`, `openTelemetry.spanId`).
fn json_logs() -> JsonLayer<Registry, fn() -> std::io::Stderr> {
    let mut layer = JsonLayer::stderr();
    layer
        .with_timer("timestamp", tracing_subscriber::fmt::time::SystemTime)
        .with_level("level")
        .with_target("target")
        .with_event("fields")
        .with_current_span("span")
        .with_opentelemetry_ids(true);
    layer
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn traces_exported(&self) -> bool {
        self.tracer_provider.is_some()
    }

    /// Export what is buffered, and stop. Call it outside the async runtime:
    /// the exporter's HTTP client blocks.
    pub fn shutdown(self) {
        if let Some(provider) = self.tracer_provider {
            if let Err(error) = provider.shutdown() {
                eprintln!("warning: not every span could be exported: {error}");
            }
        }
    }
}
