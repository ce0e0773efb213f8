//! W3C Trace Context across the queue: a request's `traceparent` (and
//! `tracestate`) AMQP headers make its processing part of the producer's
//! trace, and what the worker publishes for it carries a `traceparent` of
//! its own, so a consumer's trace continues.

use lapin::types::{AMQPValue, FieldTable, LongString};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header names, as AMQP header keys.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// Reads string headers of an AMQP message for the propagator.
struct Headers<'a>(Option<&'a FieldTable>);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0?.inner().get(key)? {
            AMQPValue::LongString(value) => std::str::from_utf8(value.as_bytes()).ok(),
            AMQPValue::ShortString(value) => Some(value.as_str()),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .map(|headers| headers.inner().keys().map(|key| key.as_str()).collect())
            .unwrap_or_default()
    }
}

/// The trace context a producer sent in `headers`: empty when there is
/// none, or when it is not valid W3C Trace Context.
pub fn extract(headers: Option<&FieldTable>) -> Context {
    TraceContextPropagator::new().extract(&Headers(headers))
}

/// The span context a producer sent, if valid: for linking a batch to it.
pub fn producer_span(headers: Option<&FieldTable>) -> Option<SpanContext> {
    let context = extract(headers);
    let span = context.span().span_context().clone();
    span.is_valid().then_some(span)
}

/// Make `span` (just created) a child of the producer's context in
/// `headers`, and return the `traceparent` for what is published on its
/// behalf: the span's own while traces are exported, else the producer's,
/// passed on unchanged so that the trace still connects. `None` when there
/// is neither.
pub fn continue_trace(span: &tracing::Span, headers: Option<&FieldTable>) -> Option<String> {
    let parent = extract(headers);
    let producer = parent.span().span_context().clone();
    if producer.is_valid() {
        // Only fails once the span has started; it was just created.
        let _ = span.set_parent(parent);
    }
    traceparent_of(span).or_else(|| producer.is_valid().then(|| format_traceparent(&producer)))
}

/// The `traceparent` of a span while traces are exported; `None` otherwise.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let own = context.span().span_context().clone();
    own.is_valid().then(|| format_traceparent(&own))
}

/// `00-<trace id>-<span id>-<flags>`, the W3C version 00 form.
pub fn format_traceparent(span: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        span.trace_id(),
        span.span_id(),
        span.trace_flags().to_u8()
    )
}

/// Set the `traceparent` header of an outgoing message.
pub fn set_traceparent(headers: &mut FieldTable, traceparent: &str) {
    headers.insert(
        TRACEPARENT.into(),
        AMQPValue::LongString(LongString::from(traceparent)),
    );
}

/// A new trace for a message that starts one (the `disconnect` command
/// without exported traces): random ids, sampled.
pub fn new_traceparent() -> String {
    use rand::RngCore;
    let mut trace = [0u8; 16];
    let mut span = [0u8; 8];
    rand::rng().fill_bytes(&mut trace);
    rand::rng().fill_bytes(&mut span);
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    format!("00-{}-{}-01", hex(&trace), hex(&span))
}

/// The trace id of a `traceparent`, if it has one.
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    traceparent.split('-').nth(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRODUCER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(traceparent: &str) -> FieldTable {
        let mut headers = FieldTable::default();
        set_traceparent(&mut headers, traceparent);
        headers
    }

    #[test]
    fn a_producer_traceparent_is_read_from_the_headers() {
        let span = producer_span(Some(&headers(PRODUCER))).expect("valid");
        assert_eq!(format_traceparent(&span), PRODUCER);
        assert!(producer_span(Some(&headers("garbage"))).is_none());
        assert!(producer_span(None).is_none());
    }

    #[test]
    fn without_exported_traces_the_producer_traceparent_is_passed_on() {
        // No OpenTelemetry layer in unit tests: the span has no context.
        let span = tracing::info_span!("test");
        assert_eq!(
            continue_trace(&span, Some(&headers(PRODUCER))).as_deref(),
            Some(PRODUCER)
        );
        assert_eq!(continue_trace(&span, None), None);
    }

    #[test]
    fn a_new_traceparent_is_well_formed() {
        let traceparent = new_traceparent();
        assert!(
            producer_span(Some(&headers(&traceparent))).is_some(),
            "{traceparent}"
        );
        assert_eq!(trace_id_of(&traceparent).map(str::len), Some(32));
    }
}
