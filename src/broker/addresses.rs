//! `AMQP_URL`: the addresses of one broker, or of the nodes of one cluster,
//! comma-separated. Every address must name the same virtual host and user:
//! they are doors into one broker, not different brokers.

use std::fmt;
use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use url::Url;

use crate::secret::SecretUrl;

/// How long one address may take to answer before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrls(Vec<SecretUrl>);

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
            urls.push(url);
        }
        Ok(Self(urls))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The addresses in the order to try them when starting from `first`
    /// (wrapping around).
    pub fn from(&self, first: usize) -> impl Iterator<Item = (usize, &SecretUrl)> {
        let count = self.0.len();
        (0..count).map(move |offset| {
            let index = (first + offset) % count;
            (index, &self.0[index])
        })
    }

    pub fn get(&self, index: usize) -> Option<&SecretUrl> {
        self.0.get(index)
    }

    /// The broker user the addresses log in as (the same for all), as
    /// lapin reads it: percent-decoded, `guest` when none is given. What a
    /// message's AMQP `user_id` must be for RabbitMQ to accept it.
    pub fn user(&self) -> Option<String> {
        let first = self.0.first()?;
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
        for url in &self.0 {
            let attempt = tokio::time::timeout(
                CONNECT_TIMEOUT,
                Connection::connect(url.expose(), properties.clone()),
            );
            match attempt.await {
                Ok(Ok(connection)) => return Ok(connection),
                Ok(Err(error)) => failures.push(format!("{url}: {error}")),
                Err(_) => failures.push(format!("{url}: no answer within {CONNECT_TIMEOUT:?}")),
            }
        }
        Err(format!(
            "{setting}: no broker address answered ({})",
            failures.join("; ")
        ))
    }
}

impl fmt::Display for BrokerUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, url) in self.0.iter().enumerate() {
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
