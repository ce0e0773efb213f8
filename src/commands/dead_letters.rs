//! `disconnect-worker dead-letters list|requeue`: the dead-letter queue
//! without RabbitMQ's own tools. A request dead-lettered by a fault since
//! fixed (the delivery limit reached during an outage, a bug of a version
//! since replaced) is sent again to the request exchange, as it was; the
//! worker's idempotency absorbs one that was processed after all.

use anyhow::Context;
use lapin::options::{BasicAckOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use uuid::Uuid;

use super::ConfigError;
use crate::broker::dead_letters::{self, DeadLetterInfo, Taken};
use crate::broker::publish::{copy_properties, publish_confirmed, set_header, Routing};
use crate::broker::topology::inspect_queue;
use crate::broker::{BrokerUrls, Topology};
use crate::cli::{DeadLetterFilter, DeadLetterListArgs, DeadLetterRequeueArgs};
use crate::config::BrokerArgs;
use crate::worker::ORIGINAL_USER_ID_HEADER;

/// Header counting how often a request was sent back from the dead-letter
/// queue, for the audit trail and to spot a request that keeps coming back.
pub const REQUEUE_COUNT_HEADER: &str = "x-requeue-count";

/// Headers that describe a death, dropped from the copy sent back: the copy
/// is the request again, not a dead letter.
const DEATH_HEADERS: [&str; 9] = [
    "x-death",
    "x-first-death-reason",
    "x-first-death-queue",
    "x-first-death-exchange",
    "x-last-death-reason",
    "x-last-death-queue",
    "x-last-death-exchange",
    crate::worker::REJECTION_CODE_HEADER,
    crate::worker::REJECTION_REASON_HEADER,
];

/// The parsed filter: codes and request ids (either matches), or all.
struct Filter {
    codes: Vec<String>,
    request_ids: Vec<Uuid>,
}

impl Filter {
    fn parse(filter: &DeadLetterFilter) -> Result<Self, ConfigError> {
        let request_ids = filter
            .request_ids
            .iter()
            .map(|id| {
                Uuid::parse_str(id)
                    .map_err(|_| ConfigError("--request-id must be a UUID".to_string()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            codes: filter.codes.clone(),
            request_ids,
        })
    }

    fn is_empty(&self) -> bool {
        self.codes.is_empty() && self.request_ids.is_empty()
    }

    fn matches(&self, info: &DeadLetterInfo) -> bool {
        self.is_empty()
            || self.codes.contains(&info.code)
            || info
                .request_id
                .is_some_and(|id| self.request_ids.contains(&id))
    }
}

/// A broker session for the command: the first address that answers, with
/// the bounds the worker uses.
async fn open(broker: &BrokerArgs) -> anyhow::Result<(BrokerUrls, Topology, Connection, Channel)> {
    let urls = broker.amqp_urls().map_err(ConfigError)?;
    let topology = broker.topology().map_err(ConfigError)?;
    let connection = urls
        .connect_first("AMQP_URL", ConnectionProperties::default())
        .await
        .map_err(anyhow::Error::msg)?;
    let channel = connection.create_channel().await?;
    Ok((urls, topology, connection, channel))
}

pub async fn list(args: &DeadLetterListArgs) -> anyhow::Result<()> {
    let filter = Filter::parse(&args.filter)?;
    let (_, topology, connection, channel) = open(&args.broker).await?;
    let taken = dead_letters::take(&channel, &topology.dead_letter_queue, args.filter.limit)
        .await
        .context("reading the dead-letter queue")?;
    // Given back before anything is printed: a broken pipe must not hold them.
    dead_letters::give_back(&taken)
        .await
        .context("giving the dead letters back to their queue")?;
    let _ = connection.close(200, "listed".into()).await;
    let shown: Vec<&DeadLetterInfo> = taken
        .iter()
        .map(|taken| &taken.info)
        .filter(|info| filter.matches(info))
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&shown)?);
    } else {
        print_table(&shown, taken.len());
    }
    Ok(())
}

fn print_table(shown: &[&DeadLetterInfo], read: usize) {
    println!("position\tcode\trequest_id\tfirst_death\tcount\treason");
    for info in shown {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            info.position,
            info.code,
            info.request_id.map_or("-".into(), |id| id.to_string()),
            info.first_death.map_or("-".into(), |at| at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            info.count,
            info.reason.as_deref().unwrap_or("-"),
        );
    }
    eprintln!("{} of {read} dead letters shown", shown.len());
}

pub async fn requeue(args: &DeadLetterRequeueArgs) -> anyhow::Result<()> {
    let filter = Filter::parse(&args.filter)?;
    if filter.is_empty() != args.all {
        return Err(ConfigError(
            "name what to requeue: --code, --request-id, or --all (alone)".to_string(),
        )
        .into());
    }
    let (urls, topology, connection, channel) = open(&args.broker).await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let confirm_timeout = args.broker.confirm_timeout();
    let user = urls.user();
    // Only the dead letters there now: a copy the worker rejects again is
    // dead-lettered behind them, and must not be taken and sent once more
    // in this run (nor one that arrives meanwhile, which nobody has seen).
    let present = inspect_queue(&channel, &topology.dead_letter_queue)
        .await
        .context("reading the dead-letter queue")?
        .message_count();
    let mut kept: Vec<Taken> = Vec::new();
    let mut chosen = 0;
    // One at a time: each leaves the queue only after its copy is
    // confirmed, so a crash leaves at most one both in the queue and sent
    // again. The others stay unacknowledged until the end.
    for position in 1..=args.filter.limit.min(present as usize) {
        let Some(next) = dead_letters::take_next(&channel, &topology.dead_letter_queue, position)
            .await
            .context("reading the dead-letter queue")?
        else {
            break;
        };
        if !filter.matches(&next.info) {
            kept.push(next);
            continue;
        }
        chosen += 1;
        if args.dry_run {
            report("would requeue", &next.info);
            kept.push(next);
            continue;
        }
        let properties = requeued_properties(&next.delivery.properties, user.clone());
        publish_confirmed(
            &channel,
            &topology.request_exchange,
            &topology.request_routing_key,
            Routing::AtLeastOneQueue,
            &next.delivery.data,
            properties,
            confirm_timeout,
        )
        .await
        .with_context(|| format!("requeueing dead letter {position}"))?;
        next.delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .context("removing a requeued dead letter")?;
        report("requeued", &next.info);
    }
    dead_letters::give_back(&kept)
        .await
        .context("giving the other dead letters back to their queue")?;
    let _ = connection.close(200, "requeued".into()).await;
    if args.dry_run {
        eprintln!(
            "would requeue {chosen} dead letters to {}; nothing changed",
            topology.request_exchange
        );
    } else {
        eprintln!(
            "requeued {chosen} dead letters to {}; {} others left in {}",
            topology.request_exchange,
            kept.len(),
            topology.dead_letter_queue
        );
    }
    Ok(())
}

fn report(what: &str, info: &DeadLetterInfo) {
    println!(
        "{what}\t{}\t{}",
        info.code,
        info.request_id.map_or("-".into(), |id| id.to_string())
    );
}

/// The request again, as its publisher sent it: the death headers dropped,
/// the requeue counted, and, where the original named its publisher
/// (`user_id`, which RabbitMQ checks against the connection's user), the
/// user of this command's `AMQP_URL` instead: it is this operator who asks
/// again, and the worker authorizes and records that user. The original
/// publisher stays in `x-original-user-id`.
fn requeued_properties(dead: &BasicProperties, user: Option<String>) -> BasicProperties {
    let mut headers = dead.headers().clone().unwrap_or_default();
    let original_user = dead
        .user_id()
        .as_ref()
        .map(|user| user.to_string())
        .or_else(|| dead_letters::header_string(&headers, ORIGINAL_USER_ID_HEADER));
    let count = match headers.inner().get(REQUEUE_COUNT_HEADER) {
        Some(AMQPValue::LongLongInt(count)) => *count,
        _ => 0,
    };
    let mut kept = FieldTable::default();
    for (key, value) in headers.inner().iter() {
        if !DEATH_HEADERS.contains(&key.as_str()) {
            kept.insert(key.clone(), value.clone());
        }
    }
    headers = kept;
    headers.insert(
        REQUEUE_COUNT_HEADER.into(),
        AMQPValue::LongLongInt(count + 1),
    );
    if let Some(original) = &original_user {
        set_header(&mut headers, ORIGINAL_USER_ID_HEADER, original);
    }
    // Without `user_id` (set below) and `expiration`: the request is asked
    // again now.
    let properties = copy_properties(dead, BasicProperties::default()).with_headers(headers);
    match (original_user, user) {
        (Some(_), Some(user)) => properties.with_user_id(ShortString::from(user)),
        _ => properties,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::LongString;

    #[test]
    fn a_requeued_copy_drops_the_death_counts_the_requeue_and_asks_as_the_operator() {
        let mut headers = FieldTable::default();
        headers.insert("x-death".into(), AMQPValue::FieldArray(Default::default()));
        headers.insert(
            crate::worker::REJECTION_CODE_HEADER.into(),
            AMQPValue::LongString(LongString::from("delivery_limit")),
        );
        headers.insert(
            "traceparent".into(),
            AMQPValue::LongString(LongString::from("00-abc-def-01")),
        );
        let dead = BasicProperties::default()
            .with_content_type(ShortString::from("application/json"))
            .with_user_id(ShortString::from("billing"))
            .with_headers(headers);

        let copy = requeued_properties(&dead, Some("ops".into()));
        let again = requeued_properties(&copy, Some("ops".into()));

        assert_eq!(
            copy.user_id().as_ref().map(ToString::to_string).as_deref(),
            Some("ops")
        );
        let header = |properties: &BasicProperties, key: &str| {
            properties
                .headers()
                .as_ref()
                .and_then(|headers| headers.inner().get(key).cloned())
        };
        assert_eq!(header(&copy, "x-death"), None);
        assert_eq!(header(&copy, crate::worker::REJECTION_CODE_HEADER), None);
        assert!(header(&copy, "traceparent").is_some());
        assert_eq!(
            header(&copy, ORIGINAL_USER_ID_HEADER),
            Some(AMQPValue::LongString(LongString::from("billing")))
        );
        assert_eq!(
            header(&again, REQUEUE_COUNT_HEADER),
            Some(AMQPValue::LongLongInt(2))
        );
        let anonymous = requeued_properties(
            &BasicProperties::default().with_content_type(ShortString::from("application/json")),
            Some("ops".into()),
        );
        assert_eq!(
            anonymous.user_id(),
            &None,
            "a token request stays without one"
        );
    }
}
