//! `AMQP_URL`: the addresses of one broker, or of the nodes of one cluster,
//! comma-separated. Every address must name the same virtual host and user:
//! they are doors into one broker, not different brokers. Every connection
//! is opened with the same [`ConnectionLimits`].

use std::fmt;
use std::time::Duration;

use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};
use url::Url;

use crate::observability::metrics;
use crate::secret::SecretUrl;

/// How a connection finds out that its peer is gone, and how long opening
/// one may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// The AMQP heartbeat the worker asks for, in seconds. RabbitMQ takes the
    /// lower of its own and ours, and both sides close a connection that
    /// stayed silent for two intervals: the broker then requeues the
    /// deliveries held on it, and lapin fails the worker's session. An
    /// address's own `?heartbeat=` wins.
    pub heartbeat_secs: u16,
    /// Opening a connection on one address: TCP, TLS, the AMQP handshake.
    pub connect: Duration,
}

impl Default for ConnectionLimits {
    /// The defaults of `AMQP_HEARTBEAT_SECS` and `AMQP_CONNECT_TIMEOUT_SECS`.
    fn default() -> Self {
        Self {
            heartbeat_secs: 5,
            connect: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrls {
    urls: Vec<SecretUrl>,
    limits: ConnectionLimits,
}

impl BrokerUrls {
    /// Check `value` as the setting `setting`; errors name it and never
    /// repeat a password.
    pub fn parse(setting: &str, value: &str) -> Result<Self, String> {
        let mut urls = Vec::new();
        let mut identity: Option<(String, String)> = None;
        for (index, part) in value.split(',').map(str::trim).enumerate() {
            let url = SecretUrl::parse(setting, part, &["amqp", "amqps"])
                .map_err(|error| format!("{error} (address {} of the list)", index + 1))?;
            let parsed = Url::parse(part).map_err(|error| format!("{setting}: {error}"))?;
            if parsed.host_str().is_none_or(str::is_empty) {
                return Err(format!("{setting}: address {} names no host", index + 1));
            }
            // The default virtual host is `/`, written `%2f` or left out.
            let vhost = match parsed.path() {
                "" | "/" => "%2f".to_string(),
                path => path.trim_start_matches('/').to_lowercase(),
            };
            let this = (parsed.username().to_string(), vhost);
            match &identity {
                None => identity = Some(this),
                Some(first) if *first != this => {
                    return Err(format!(
                        "{setting}: every address must name the same user and virtual host \
                         (address {} differs from the first)",
                        index + 1
                    ))
                }
                Some(_) => {}
            }
            part.parse::<AMQPUri>().map_err(|error| {
                format!("{setting}: address {} cannot be used: {error}", index + 1)
            })?;
            urls.push(url);
        }
        Ok(Self {
            urls,
            limits: ConnectionLimits::default(),
        })
    }

    /// The same addresses, connected to with `limits`.
    pub fn with_limits(self, limits: ConnectionLimits) -> Self {
        Self { limits, ..self }
    }

    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    pub fn len(&self) -> usize {
        self.urls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// The addresses in the order to try them when starting from `first`
    /// (wrapping around).
    pub fn from(&self, first: usize) -> impl Iterator<Item = (usize, &SecretUrl)> {
        let count = self.urls.len();
        (0..count).map(move |offset| {
            let index = (first + offset) % count;
            (index, &self.urls[index])
        })
    }

    pub fn get(&self, index: usize) -> Option<&SecretUrl> {
        self.urls.get(index)
    }

    /// Open a connection to `url` (one of these addresses) with the
    /// heartbeat and within the connect bound.
    pub async fn connect(
        &self,
        url: &SecretUrl,
        properties: ConnectionProperties,
    ) -> lapin::Result<Connection> {
        let limit = self.limits.connect;
        let mut uri: AMQPUri = url.expose().parse().map_err(|error: String| {
            lapin::Error::from(std::io::Error::new(std::io::ErrorKind::InvalidInput, error))
        })?;
        uri.query
            .heartbeat
            .get_or_insert(self.limits.heartbeat_secs);
        // The TCP connect alone; the timeout below bounds the whole opening.
        uri.query
            .connection_timeout
            .get_or_insert(u64::try_from(limit.as_millis()).unwrap_or(u64::MAX));
        metrics::within(
            "broker_connect",
            limit,
            Connection::connect_uri(uri, properties),
        )
        .await
        .unwrap_or_else(|_| {
            Err(lapin::Error::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {limit:?}"),
            )))
        })
    }

    /// The broker user the addresses log in as (the same for all), as
    /// lapin reads it: percent-decoded, `guest` when none is given. What a
    /// message's AMQP `user_id` must be for RabbitMQ to accept it.
    pub fn user(&self) -> Option<String> {
        let first = self.urls.first()?;
        first
            .expose()
            .parse::<lapin::uri::AMQPUri>()
            .ok()
            .map(|uri| uri.authority.userinfo.username)
    }

    /// A connection to the first address that answers, for one-shot
    /// commands; if none does, one line naming the setting and each
    /// address's failure (passwords masked).
    pub async fn connect_first(
        &self,
        setting: &str,
        properties: ConnectionProperties,
    ) -> Result<Connection, String> {
        let mut failures = Vec::new();
        for url in &self.urls {
            match self.connect(url, properties.clone()).await {
                Ok(connection) => return Ok(connection),
                Err(error) => failures.push(format!("{url}: {error}")),
            }
        }
        Err(format!(
            "{setting}: no broker address answered ({})",
            failures.join("; ")
        ))
    }

    /// [`Self::connect_first`], and a channel on it in confirm mode: what
    /// a one-shot publisher needs.
    pub async fn connect_confirming(
        &self,
        setting: &str,
    ) -> Result<(Connection, lapin::Channel), String> {
        let connection = self
            .connect_first(setting, ConnectionProperties::default())
            .await?;
        let channel = async {
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(lapin::options::ConfirmSelectOptions::default())
                .await?;
            Ok::<_, lapin::Error>(channel)
        }
        .await
        .map_err(|error| format!("{setting}: cannot open a channel: {error}"))?;
        Ok((connection, channel))
    }
}

impl fmt::Display for BrokerUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, url) in self.urls.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{url}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for BrokerUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BrokerUrls({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_nodes_is_tried_from_any_one_round_to_the_others() {
        let urls = BrokerUrls::parse(
            "AMQP_URL",
            "amqp://u:hunter2@a:5672/%2f, amqp://u:hunter2@b:5672/%2f,amqps://u:hunter2@c:5671/",
        )
        .expect("valid");
        assert_eq!(urls.len(), 3);
        let order: Vec<usize> = urls.from(1).map(|(index, _)| index).collect();
        assert_eq!(order, [1, 2, 0]);
        let shown = urls.to_string();
        assert!(
            !shown.contains("hunter2") && shown.contains("@b:5672"),
            "{shown}"
        );
    }

    #[test]
    fn addresses_of_other_users_or_virtual_hosts_are_refused_by_name() {
        for value in [
            "amqp://u:p@a/%2f,amqp://other:p@b/%2f",
            "amqp://u:hunter2@a/prod,amqp://u:hunter2@b/staging",
            "amqp://u:hunter2@a/%2f,http://u:hunter2@b/%2f",
            "amqp://u:hunter2@a/%2f,",
        ] {
            let error = BrokerUrls::parse("AMQP_URL", value).expect_err(value);
            assert!(error.contains("AMQP_URL"), "{error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
    }

    #[test]
    fn the_user_is_the_one_lapin_logs_in_as() {
        let user = |value: &str| BrokerUrls::parse("AMQP_URL", value).expect(value).user();
        assert_eq!(
            user("amqp://ops%40corp:p@a/%2f").as_deref(),
            Some("ops@corp")
        );
        assert_eq!(user("amqp://a:5672/%2f").as_deref(), Some("guest"));
    }
}
