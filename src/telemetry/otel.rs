//! The OpenTelemetry tracer, configured only by the standard environment
//! variables: `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`),
//! `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf`, the default, or
//! `http/json`), `OTEL_EXPORTER_OTLP_HEADERS`, `..._TIMEOUT`,
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`
//! and `..._ARG`, `OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER`. The SDK and
//! the exporter read most of them themselves.

use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

/// The service name unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES`
/// gives one.
const SERVICE_NAME: &str = "disconnect-worker";

fn variable(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|value| value.trim().to_string())
        .filter(|value| !value.is_empty())
}

/// A tracer provider exporting over OTLP, or `None` when no endpoint is
/// configured (or the SDK is disabled).
pub fn tracer_provider() -> Result<Option<SdkTracerProvider>, String> {
    let endpoint = variable("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| variable("OTEL_EXPORTER_OTLP_ENDPOINT"));
    let disabled = variable("OTEL_SDK_DISABLED").is_some_and(|value| value == "true")
        || variable("OTEL_TRACES_EXPORTER").is_some_and(|value| value == "none");
    if endpoint.is_none() || disabled {
        return Ok(None);
    }
    if let Some(exporter) = variable("OTEL_TRACES_EXPORTER").filter(|value| value != "otlp") {
        return Err(format!(
            "OTEL_TRACES_EXPORTER must be otlp or none, not `{exporter}`"
        ));
    }
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(protocol()?)
        .build()
        .map_err(|error| format!("OTEL_EXPORTER_OTLP_ENDPOINT: {error}"))?;
    let mut resource = Resource::builder();
    let named_in_attributes = variable("OTEL_RESOURCE_ATTRIBUTES")
        .is_some_and(|attributes| attributes.contains("service.name="));
    if variable("OTEL_SERVICE_NAME").is_none() && !named_in_attributes {
        resource = resource.with_service_name(SERVICE_NAME);
    }
    let resource = resource
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    ))
}

/// `http/protobuf` unless the variables say `http/json`. gRPC is refused by
/// name: it would add a second HTTP stack to the binary for what the HTTP
/// endpoint of every collector already takes.
fn protocol() -> Result<Protocol, String> {
    let (name, value) = match variable("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
        Some(value) => ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", value),
        None => match variable("OTEL_EXPORTER_OTLP_PROTOCOL") {
            Some(value) => ("OTEL_EXPORTER_OTLP_PROTOCOL", value),
            None => return Ok(Protocol::HttpBinary),
        },
    };
    match value.as_str() {
        "http/protobuf" => Ok(Protocol::HttpBinary),
        "http/json" => Ok(Protocol::HttpJson),
        "grpc" => Err(format!(
            "{name}=grpc is not supported: use http/protobuf (a collector's port 4318)"
        )),
        other => Err(format!(
            "{name} must be http/protobuf or http/json, not `{other}`"
        )),
    }
}
