//! Where RabbitMQ is, and the names of everything declared there. The
//! variable names are constants so that [`topology_env`], the inverse of
//! [`BrokerArgs::topology`], cannot drift from them.

use std::time::Duration;

use clap::Args;

use super::DEFAULT_AMQP_URL;
use crate::broker::{BrokerUrls, ConnectionLimits, Topology};

pub const REQUEST_EXCHANGE: &str = "REQUEST_EXCHANGE";
pub const REQUEST_QUEUE: &str = "REQUEST_QUEUE";
pub const REQUEST_ROUTING_KEY: &str = "REQUEST_ROUTING_KEY";
pub const DEAD_LETTER_EXCHANGE: &str = "DEAD_LETTER_EXCHANGE";
pub const DEAD_LETTER_QUEUE: &str = "DEAD_LETTER_QUEUE";
pub const EVENT_EXCHANGE: &str = "EVENT_EXCHANGE";
pub const DELIVERY_LIMIT: &str = "DELIVERY_LIMIT";
pub const DECLARE_TOPOLOGY: &str = "DECLARE_TOPOLOGY";
pub const AMQP_HEARTBEAT_SECS: &str = "AMQP_HEARTBEAT_SECS";
pub const AMQP_CONNECT_TIMEOUT_SECS: &str = "AMQP_CONNECT_TIMEOUT_SECS";
pub const AMQP_CONFIRM_TIMEOUT_SECS: &str = "AMQP_CONFIRM_TIMEOUT_SECS";

#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// AMQP URL (amqp:// or amqps://), or the URLs of a cluster's nodes,
    /// comma-separated, all with the same user and virtual host: the worker
    /// uses the first that answers and, when it loses one, tries the next.
    /// Default: amqp://guest:***@localhost:5672/%2f.
    #[arg(long, env = "AMQP_URL", default_value = DEFAULT_AMQP_URL, hide_env_values = true,
          hide_default_value = true)]
    pub amqp_url: String,

    /// AMQP heartbeat asked of the broker, in seconds (RabbitMQ recommends 5
    /// to 20). Both sides close a connection silent for two intervals: the
    /// broker then gives this replica's unacknowledged requests to the
    /// others, and the worker opens a new session. An address's own
    /// `?heartbeat=` wins.
    #[arg(long, env = AMQP_HEARTBEAT_SECS, value_name = AMQP_HEARTBEAT_SECS, default_value_t = 5,
          value_parser = clap::value_parser!(u16).range(1..=600))]
    pub amqp_heartbeat_secs: u16,

    /// Seconds to open a session on one address (TCP, TLS, the AMQP
    /// handshake, the topology) before the next address is tried.
    #[arg(long, env = AMQP_CONNECT_TIMEOUT_SECS, value_name = AMQP_CONNECT_TIMEOUT_SECS,
          default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub amqp_connect_timeout_secs: u64,

    /// Seconds to wait for the broker's confirm of a published event or
    /// dead letter; past it the publish counts as failed (an event stays in
    /// the outbox for the relay; a bad request goes back to the queue).
    #[arg(long, env = AMQP_CONFIRM_TIMEOUT_SECS, value_name = AMQP_CONFIRM_TIMEOUT_SECS,
          default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub amqp_confirm_timeout_secs: u64,

    /// Durable direct exchange that upstream applications publish requests to.
    #[arg(long, env = REQUEST_EXCHANGE, value_name = REQUEST_EXCHANGE, default_value = "disconnect.requests")]
    pub request_exchange: String,

    /// Quorum queue the worker consumes requests from.
    #[arg(long, env = REQUEST_QUEUE, value_name = REQUEST_QUEUE, default_value = "disconnect.requests")]
    pub request_queue: String,

    /// Routing key binding the request queue to the request exchange.
    #[arg(long, env = REQUEST_ROUTING_KEY, value_name = REQUEST_ROUTING_KEY, default_value = "disconnect")]
    pub request_routing_key: String,

    /// Exchange that bad and undeliverable requests are dead-lettered to.
    #[arg(long, env = DEAD_LETTER_EXCHANGE, value_name = DEAD_LETTER_EXCHANGE, default_value = "disconnect.dead")]
    pub dead_letter_exchange: String,

    /// Queue that keeps dead-lettered requests for people to inspect.
    #[arg(long, env = DEAD_LETTER_QUEUE, value_name = DEAD_LETTER_QUEUE, default_value = "disconnect.requests.dead")]
    pub dead_letter_queue: String,

    /// Durable topic exchange that outcome events are published to.
    #[arg(long, env = EVENT_EXCHANGE, value_name = EVENT_EXCHANGE, default_value = "connection.events")]
    pub event_exchange: String,

    /// Failed deliveries of one message before RabbitMQ dead-letters it
    /// (quorum queue `x-delivery-limit`): the backstop for a message that
    /// keeps failing.
    #[arg(long, env = DELIVERY_LIMIT, value_name = DELIVERY_LIMIT, default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub delivery_limit: u32,

    /// Declare the exchanges and queues (true), or only check that they
    /// exist (false), for brokers whose topology is managed elsewhere.
    #[arg(long, env = DECLARE_TOPOLOGY, value_name = DECLARE_TOPOLOGY, default_value_t = true,
          action = clap::ArgAction::Set)]
    pub declare_topology: bool,
}

impl BrokerArgs {
    pub fn amqp_urls(&self) -> Result<BrokerUrls, String> {
        Ok(
            BrokerUrls::parse("AMQP_URL", &self.amqp_url)?.with_limits(ConnectionLimits {
                heartbeat_secs: self.amqp_heartbeat_secs,
                connect: Duration::from_secs(self.amqp_connect_timeout_secs),
            }),
        )
    }

    /// How long a publisher confirm may take.
    pub fn confirm_timeout(&self) -> Duration {
        Duration::from_secs(self.amqp_confirm_timeout_secs)
    }

    pub fn topology(&self) -> Result<Topology, String> {
        let names = [
            (REQUEST_EXCHANGE, &self.request_exchange),
            (REQUEST_QUEUE, &self.request_queue),
            (DEAD_LETTER_EXCHANGE, &self.dead_letter_exchange),
            (DEAD_LETTER_QUEUE, &self.dead_letter_queue),
            (EVENT_EXCHANGE, &self.event_exchange),
        ];
        for (setting, name) in names {
            check_amqp_name(setting, name)?;
        }
        if self.request_routing_key.len() > 255 {
            return Err(format!("{REQUEST_ROUTING_KEY} is longer than 255 bytes"));
        }
        if self.request_queue == self.dead_letter_queue {
            return Err(format!(
                "{DEAD_LETTER_QUEUE} must differ from {REQUEST_QUEUE}"
            ));
        }
        if self.request_exchange == self.dead_letter_exchange
            || self.event_exchange == self.request_exchange
            || self.event_exchange == self.dead_letter_exchange
        {
            return Err(format!(
                "{REQUEST_EXCHANGE}, {DEAD_LETTER_EXCHANGE} and {EVENT_EXCHANGE} must be three different exchanges"
            ));
        }
        Ok(Topology {
            request_exchange: self.request_exchange.clone(),
            request_queue: self.request_queue.clone(),
            request_routing_key: self.request_routing_key.clone(),
            dead_letter_exchange: self.dead_letter_exchange.clone(),
            dead_letter_queue: self.dead_letter_queue.clone(),
            event_exchange: self.event_exchange.clone(),
            delivery_limit: self.delivery_limit,
        })
    }
}

/// The environment that names `topology`: what [`BrokerArgs::topology`]
/// reads back. For starting the worker binary on a topology of one's own
/// (the tests, the benchmark).
pub fn topology_env(topology: &Topology) -> Vec<(&'static str, String)> {
    vec![
        (REQUEST_EXCHANGE, topology.request_exchange.clone()),
        (REQUEST_QUEUE, topology.request_queue.clone()),
        (REQUEST_ROUTING_KEY, topology.request_routing_key.clone()),
        (DEAD_LETTER_EXCHANGE, topology.dead_letter_exchange.clone()),
        (DEAD_LETTER_QUEUE, topology.dead_letter_queue.clone()),
        (EVENT_EXCHANGE, topology.event_exchange.clone()),
        (DELIVERY_LIMIT, topology.delivery_limit.to_string()),
    ]
}

/// AMQP names are at most 255 bytes; the empty name and `amq.` names are the
/// broker's own.
fn check_amqp_name(setting: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 255 {
        return Err(format!("{setting} must be 1 to 255 bytes long"));
    }
    if name.starts_with("amq.") {
        return Err(format!(
            "{setting} must not start with `amq.` (reserved by RabbitMQ)"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{setting} must not contain control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        broker: BrokerArgs,
    }

    #[test]
    fn the_default_limits_are_the_ones_the_code_calls_default() {
        let parsed = Wrapper::try_parse_from(["test"]).expect("defaults");
        let urls = parsed.broker.amqp_urls().expect("the default URL");
        assert_eq!(urls.limits(), ConnectionLimits::default());
    }

    #[test]
    fn the_topology_environment_reads_back_as_the_same_topology() {
        use clap::CommandFactory;
        let topology = Topology::with_prefix("roundtrip", 7);
        let command = Wrapper::command();
        // Each variable through the flag that declares it as its `env`:
        // flags rather than the process environment, which tests share.
        let mut args = vec!["test".to_string()];
        for (variable, value) in topology_env(&topology) {
            let arg = command
                .get_arguments()
                .find(|arg| arg.get_env() == Some(std::ffi::OsStr::new(variable)))
                .unwrap_or_else(|| panic!("{variable} is no setting's variable"));
            args.push(format!("--{}", arg.get_long().expect("a long flag")));
            args.push(value);
        }
        let parsed = Wrapper::try_parse_from(args).expect("valid flags");
        assert_eq!(parsed.broker.topology().expect("valid"), topology);
    }
}
