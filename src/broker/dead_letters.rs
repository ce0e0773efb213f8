//! Reading the dead-letter queue, for the `dead-letters` commands: what each
//! dead letter says about itself, from its headers (the worker's reason, or
//! RabbitMQ's `x-death`) and its request id, never anything else of its
//! body, which may hold a token.
//!
//! AMQP 0-9-1 has no way to read a queue without taking its messages, so a
//! reader takes them (`basic.get`, unacknowledged) and gives back those it
//! keeps with one `basic.nack(requeue)`. From RabbitMQ 4.3 a nack does not
//! count against a quorum queue's delivery limit; before 4.3 every return
//! counts, and a quorum queue declared without a limit has 20 from 4.0:
//! docs/operations.md ("Dead letters") says how to lift it on the
//! dead-letter queue.

use chrono::{DateTime, Utc};
use lapin::message::Delivery;
use lapin::options::{BasicGetOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use serde::Serialize;
use uuid::Uuid;

use crate::worker::{DEAD_LETTERED_AT_HEADER, REJECTION_CODE_HEADER, REJECTION_REASON_HEADER};

/// What one dead letter says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterInfo {
    /// Its place in the queue when read, from 1.
    pub position: usize,
    /// The worker's rejection code (`not_json`, `invalid_field`, ...), or
    /// RabbitMQ's dead-lettering reason (`delivery_limit`, `expired`,
    /// `rejected`, `maxlen`).
    pub code: String,
    /// The worker's reason (field names and positions, never values), or
    /// where RabbitMQ dead-lettered it from.
    pub reason: Option<String>,
    /// The body's `request_id`, when it is a UUID.
    pub request_id: Option<Uuid>,
    /// When it was first dead-lettered, when known.
    pub first_death: Option<DateTime<Utc>>,
    /// How many times it was dead-lettered (RabbitMQ counts its own; the
    /// worker's copy is one).
    pub count: u64,
}

/// A dead letter taken from the queue, not yet settled.
pub struct Taken {
    pub info: DeadLetterInfo,
    pub delivery: Delivery,
}

/// Take up to `limit` dead letters, unacknowledged, in queue order.
pub async fn take(channel: &Channel, queue: &str, limit: usize) -> lapin::Result<Vec<Taken>> {
    let mut taken = Vec::new();
    while taken.len() < limit {
        let Some(next) = take_next(channel, queue, taken.len() + 1).await? else {
            break;
        };
        taken.push(next);
    }
    Ok(taken)
}

/// Take the next dead letter, unacknowledged, numbered `position`; `None`
/// when the queue has none ready.
pub async fn take_next(
    channel: &Channel,
    queue: &str,
    position: usize,
) -> lapin::Result<Option<Taken>> {
    let message = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: false })
        .await?;
    Ok(message.map(|message| {
        let delivery = message.delivery;
        let info = describe(position, &delivery.properties, &delivery.data);
        Taken { info, delivery }
    }))
}

/// Give back, in one method, every dead letter taken on `channel` and not
/// settled since: `multiple` covers all unsettled tags up to the last.
pub async fn give_back(taken: &[Taken]) -> lapin::Result<()> {
    let Some(last) = taken.last() else {
        return Ok(());
    };
    last.delivery
        .acker
        .nack(BasicNackOptions {
            multiple: true,
            requeue: true,
        })
        .await
        .map(drop)
}

/// What a message of the dead-letter queue says about itself.
pub fn describe(position: usize, properties: &BasicProperties, body: &[u8]) -> DeadLetterInfo {
    let headers = properties.headers().clone().unwrap_or_default();
    let deaths = x_deaths(&headers);
    let worker_code = header_string(&headers, REJECTION_CODE_HEADER);
    let broker_reason = header_string(&headers, "x-first-death-reason")
        .or_else(|| deaths.first().map(|d| d.reason.clone()));
    let code = worker_code
        .clone()
        .or_else(|| broker_reason.clone())
        .unwrap_or_else(|| "unknown".into());
    let reason = match worker_code {
        Some(_) => header_string(&headers, REJECTION_REASON_HEADER),
        None => broker_reason.map(|why| {
            let queue = header_string(&headers, "x-first-death-queue")
                .or_else(|| deaths.first().map(|d| d.queue.clone()))
                .unwrap_or_default();
            format!("dead-lettered by RabbitMQ ({why}) from queue {queue}")
        }),
    };
    let first_death = deaths
        .iter()
        .filter_map(|death| death.time)
        .min()
        .or_else(|| {
            header_string(&headers, DEAD_LETTERED_AT_HEADER)
                .and_then(|at| DateTime::parse_from_rfc3339(&at).ok())
                .map(|at| at.with_timezone(&Utc))
        });
    let count = if deaths.is_empty() {
        1
    } else {
        deaths.iter().map(|death| death.count).sum()
    };
    DeadLetterInfo {
        position,
        code,
        reason,
        request_id: request_id(body),
        first_death,
        count,
    }
}

/// The body's `request_id`, if the body is a JSON object whose
/// `request_id` is a UUID; nothing else of the body is read.
pub fn request_id(body: &[u8]) -> Option<Uuid> {
    #[derive(serde::Deserialize)]
    struct Id {
        request_id: Option<serde_json::Value>,
    }
    let id: Id = serde_json::from_slice(body).ok()?;
    Uuid::parse_str(id.request_id?.as_str()?).ok()
}

/// One entry of RabbitMQ's `x-death` header.
struct Death {
    reason: String,
    queue: String,
    count: u64,
    time: Option<DateTime<Utc>>,
}

fn x_deaths(headers: &FieldTable) -> Vec<Death> {
    let Some(AMQPValue::FieldArray(entries)) = headers.inner().get("x-death") else {
        return Vec::new();
    };
    entries
        .as_slice()
        .iter()
        .filter_map(|entry| match entry {
            AMQPValue::FieldTable(table) => Some(Death {
                reason: header_string(table, "reason").unwrap_or_default(),
                queue: header_string(table, "queue").unwrap_or_default(),
                count: match table.inner().get("count") {
                    Some(AMQPValue::LongLongInt(count)) => u64::try_from(*count).unwrap_or(0),
                    Some(AMQPValue::LongInt(count)) => u64::try_from(*count).unwrap_or(0),
                    _ => 1,
                },
                time: match table.inner().get("time") {
                    Some(AMQPValue::Timestamp(seconds)) => i64::try_from(*seconds)
                        .ok()
                        .and_then(|seconds| DateTime::from_timestamp(seconds, 0)),
                    _ => None,
                },
            }),
            _ => None,
        })
        .collect()
}

/// A string header's value (long or short string), if it has one.
pub fn header_string(headers: &FieldTable, key: &str) -> Option<String> {
    match headers.inner().get(key)? {
        AMQPValue::LongString(value) => Some(value.to_string()),
        AMQPValue::ShortString(value) => Some(value.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, LongString, ShortString};

    fn headers(entries: &[(&str, AMQPValue)]) -> BasicProperties {
        let mut table = FieldTable::default();
        for (key, value) in entries {
            table.insert(ShortString::from(*key), value.clone());
        }
        BasicProperties::default().with_headers(table)
    }

    fn text(value: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(value))
    }

    #[test]
    fn the_worker_s_dead_letter_is_described_by_its_rejection_headers() {
        let info = describe(
            3,
            &headers(&[
                (REJECTION_CODE_HEADER, text("invalid_field")),
                (
                    REJECTION_REASON_HEADER,
                    text("invalid_field: field `entity_ids` is empty"),
                ),
                (DEAD_LETTERED_AT_HEADER, text("2026-11-30T10:00:00.000001Z")),
            ]),
            br#"{"request_id":"0b6f7a52-8d0e-4c53-9d7e-3f4f0f3c1a77","access_token":"dwt_x"}"#,
        );
        assert_eq!(info.position, 3);
        assert_eq!(info.code, "invalid_field");
        assert_eq!(
            info.reason.as_deref(),
            Some("invalid_field: field `entity_ids` is empty")
        );
        assert_eq!(
            info.request_id.map(|id| id.to_string()).as_deref(),
            Some("0b6f7a52-8d0e-4c53-9d7e-3f4f0f3c1a77")
        );
        assert_eq!(
            info.first_death.map(|at| at.timestamp()),
            Some(1_796_032_800)
        );
        assert_eq!(info.count, 1);
    }

    #[test]
    fn rabbitmq_s_dead_letter_is_described_by_x_death() {
        let mut death = FieldTable::default();
        death.insert("reason".into(), text("delivery_limit"));
        death.insert("queue".into(), text("disconnect.requests"));
        death.insert("count".into(), AMQPValue::LongLongInt(2));
        death.insert("time".into(), AMQPValue::Timestamp(1_796_032_800));
        let info = describe(
            1,
            &headers(&[(
                "x-death",
                AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
            )]),
            b"{}",
        );
        assert_eq!(info.code, "delivery_limit");
        assert_eq!(
            info.reason.as_deref(),
            Some("dead-lettered by RabbitMQ (delivery_limit) from queue disconnect.requests")
        );
        assert_eq!(info.count, 2);
        assert_eq!(
            info.first_death.map(|at| at.timestamp()),
            Some(1_796_032_800)
        );
        assert_eq!(info.request_id, None);
    }

    #[test]
    fn only_a_uuid_request_id_is_read_from_the_body() {
        let id = Uuid::new_v4();
        assert_eq!(
            request_id(format!(r#"{{"request_id":"{id}","access_token":"dwt_x"}}"#).as_bytes()),
            Some(id)
        );
        for body in [
            r#"{"request_id":"dwt_secret"}"#.as_bytes(),
            br#"{"request_id":7}"#,
            b"not json",
            br#"["request_id"]"#,
        ] {
            assert_eq!(request_id(body), None);
        }
    }
}
