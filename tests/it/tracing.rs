//! Following one disconnect across services: a request published with a W3C
//! `traceparent` is processed in that trace, the spans reach an OTLP
//! receiver with the right parents and links, the event and a dead letter
//! carry a `traceparent` of the trace, JSON logs carry its id, and no span
//! attribute or log line holds a token.

use disconnect_testkit::otlp::{OtlpReceiver, KIND_CLIENT, KIND_CONSUMER};
use disconnect_testkit::process::Logs;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use uuid::Uuid;

use crate::support::broker::request_body;
use crate::support::process::{json_log_lines, message, run_to_exit};
use crate::support::{eventually, TestContext};

const PRODUCER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PRODUCER_SPAN: &str = "00f067aa0ba902b7";
const BAD_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

fn traced(trace: &str, span: &str) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        "traceparent".into(),
        AMQPValue::LongString(LongString::from(format!("00-{trace}-{span}-01"))),
    );
    BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_headers(headers)
}

fn trace_id(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or_default()
}

fn span_id(traceparent: &str) -> &str {
    traceparent.split('-').nth(2).unwrap_or_default()
}

fn exporting(receiver: &OtlpReceiver) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        // Export every 100 ms rather than every 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ("LOG_FORMAT", "json".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_request_is_processed_in_its_trace_and_what_the_worker_publishes_continues_it() {
    let test = TestContext::new().await;
    let receiver = OtlpReceiver::start().await.expect("an OTLP receiver");
    let log = test.log_file("traced");
    let env = exporting(&receiver);
    let extra: Vec<(&str, &str)> = env
        .iter()
        .map(|(key, value)| (*key, value.as_str()))
        .collect();
    let worker = test.spawn_worker_process_logging(&extra, Logs::File(log.clone()));
    let token = test.issue("app", "company-c", "gusto", "user-a").await;
    let secret = token.token.expose().to_string();
    let mut events = test.event_tap().await;
    let channel = test.channel().await;
    let request = Uuid::new_v4();
    test.publish_raw(
        &channel,
        &request_body(request, &secret),
        traced(PRODUCER_TRACE, PRODUCER_SPAN),
    )
    .await;
    let bad = format!(
        r#"{{"request_id":"{}","access_token":["{secret}"]}}"#,
        Uuid::new_v4()
    );
    test.publish_raw(&channel, bad.as_bytes(), traced(BAD_TRACE, PRODUCER_SPAN))
        .await;

    let event = events.event_for(request).await;
    let event_traceparent = event
        .traceparent
        .clone()
        .expect("the event carries a traceparent");
    assert_eq!(
        trace_id(&event_traceparent),
        PRODUCER_TRACE,
        "the producer's trace"
    );
    let letters = test.wait_for_dead_letters(1).await;
    let letter_traceparent = letters[0]
        .header("traceparent")
        .expect("the dead letter's traceparent");
    assert_eq!(trace_id(&letter_traceparent), BAD_TRACE);
    assert_eq!(
        letters[0].header("x-original-traceparent").as_deref(),
        Some(format!("00-{BAD_TRACE}-{PRODUCER_SPAN}-01").as_str())
    );

    let trace = eventually("the request's span", || async {
        let spans = receiver.trace(PRODUCER_TRACE);
        spans
            .iter()
            .any(|span| span.parent_span_id == PRODUCER_SPAN)
            .then_some(spans)
    })
    .await;
    // The request's own span: a consumer span, the child of the producer's,
    // and the parent of what the worker published for it.
    let delivery = trace
        .iter()
        .find(|span| span.parent_span_id == PRODUCER_SPAN)
        .expect("a span whose parent is the producer's");
    assert_eq!(delivery.kind, KIND_CONSUMER);
    assert_eq!(
        delivery.name,
        format!("process {}", test.topology.request_queue)
    );
    assert_eq!(delivery.attribute("messaging.system"), Some("rabbitmq"));
    assert_eq!(
        delivery.attribute("messaging.operation.type"),
        Some("process")
    );
    assert_eq!(
        delivery.attribute("messaging.destination.name"),
        Some(test.topology.request_exchange.as_str())
    );
    assert_eq!(
        delivery.attribute("request.id"),
        Some(request.to_string().as_str())
    );
    assert_eq!(
        delivery.attribute("connection.id"),
        Some(token.connection_id.to_string().as_str())
    );
    assert_eq!(
        span_id(&event_traceparent),
        delivery.span_id,
        "the event continues it"
    );
    assert_eq!(delivery.service_name, "disconnect-worker");
    // The batch's span (a trace of its own, as it serves many) links to
    // the producer; the transaction is its child.
    let (batch, transaction) = eventually("the batch and its transaction", || async {
        let spans = receiver.spans();
        let link = (PRODUCER_TRACE.to_string(), PRODUCER_SPAN.to_string());
        let batch = spans
            .iter()
            .find(|span| span.links.contains(&link))?
            .clone();
        let transaction = spans
            .iter()
            .find(|span| {
                span.attribute("db.system") == Some("postgresql")
                    && span.parent_span_id == batch.span_id
            })?
            .clone();
        Some((batch, transaction))
    })
    .await;
    assert_eq!(batch.kind, KIND_CONSUMER);
    assert!(batch.attribute("messaging.batch.message_count").is_some());
    assert_eq!(transaction.kind, KIND_CLIENT);
    // The event's AMQP properties.
    assert_eq!(event.kind.as_deref(), Some("connection.disconnected"));
    assert_eq!(event.app_id.as_deref(), Some("disconnect-worker"));
    assert!(event.timestamp.is_some_and(|seconds| seconds > 0));

    // JSON logs of the request carry its trace id.
    worker.signal("TERM");
    worker.wait().await;
    let lines = json_log_lines(&log);
    let processed = lines
        .iter()
        .find(|line| message(line) == "request processed")
        .expect("the request's log line");
    assert_eq!(
        processed["openTelemetry"]["traceId"], PRODUCER_TRACE,
        "{processed}"
    );
    assert_eq!(
        processed["openTelemetry"]["spanId"],
        delivery.span_id.as_str()
    );

    // Never a token, in a span or a log line.
    let secret_part = &secret[4..];
    for span in receiver.spans() {
        for (key, value) in &span.attributes {
            assert!(
                !value.contains(secret_part),
                "a token in span attribute {key}"
            );
        }
    }
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!logs.contains(secret_part), "a token in the logs");
    let _ = std::fs::remove_file(log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_the_producer_traceparent_is_passed_on_unchanged() {
    let test = TestContext::new().await;
    let _worker = test.spawn_worker();
    let token = test.issue("app", "company-c", "gusto", "user-a").await;
    let mut events = test.event_tap().await;
    let request = Uuid::new_v4();
    test.publish_raw(
        &test.channel().await,
        &request_body(request, token.token.expose()),
        traced(PRODUCER_TRACE, PRODUCER_SPAN),
    )
    .await;

    let event = events.event_for(request).await;

    assert_eq!(
        event.traceparent.as_deref(),
        Some(format!("00-{PRODUCER_TRACE}-{PRODUCER_SPAN}-01").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_starts_a_trace_that_the_worker_continues() {
    let test = TestContext::new().await;
    let receiver = OtlpReceiver::start().await.expect("an OTLP receiver");
    let env = exporting(&receiver);
    let extra: Vec<(&str, &str)> = env
        .iter()
        .map(|(key, value)| (*key, value.as_str()))
        .collect();
    let _worker = test.spawn_worker_process(&extra);
    let token = test.issue("app", "company-c", "gusto", "user-a").await;

    let output = run_to_exit({
        let mut command = test.command(&["disconnect", token.token.expose(), "--wait"]);
        command.envs(env.iter().map(|(key, value)| (*key, value.as_str())));
        command
    })
    .await;

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let trace = stderr
        .lines()
        .find_map(|line| line.strip_prefix("trace "))
        .expect("the trace id on stderr")
        .trim()
        .to_string();
    let spans = eventually("the command's and the worker's spans", || async {
        let spans = receiver.trace(&trace);
        (spans
            .iter()
            .any(|span| span.service_name == "disconnect-worker" && span.kind == KIND_CONSUMER)
            && spans.len() >= 2)
            .then_some(spans)
    })
    .await;
    let send = spans
        .iter()
        .find(|span| span.name.starts_with("send "))
        .expect("the command's send span");
    assert!(
        spans.iter().any(|span| span.parent_span_id == send.span_id),
        "the worker's span is the child of the command's"
    );
}
