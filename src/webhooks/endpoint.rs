//! What an endpoint is made of, parsed once where it enters (`webhooks
//! add`): its URL, its header format, the event types it takes.

use std::fmt;
use std::net::IpAddr;

use url::{Host, Url};

use super::address::AddressPolicy;
use crate::domain::event::EVENT_TYPES;

/// Whose header names sign the requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HeaderFormat {
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature`; the secret
    /// shown as `whsec_<base64>`.
    Standard,
    /// `Finch-Event-Id`, `Finch-Timestamp`, `Finch-Signature`; the secret
    /// shown as plain base64.
    Finch,
}

impl HeaderFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Finch => "finch",
        }
    }

    pub fn parse(stored: &str) -> Option<Self> {
        match stored {
            "standard" => Some(Self::Standard),
            "finch" => Some(Self::Finch),
            _ => None,
        }
    }
}

/// A receiver's URL: absolute, http(s), https unless plain HTTP is allowed,
/// no fragment, and a literal address outside the refused ranges.
#[derive(Clone, PartialEq, Eq)]
pub struct EndpointUrl(Url);

impl EndpointUrl {
    pub fn parse(value: &str, allow_http: bool, policy: &AddressPolicy) -> Result<Self, String> {
        let url = Url::parse(value).map_err(|error| format!("--url is not a URL: {error}"))?;
        match url.scheme() {
            "https" => {}
            "http" if allow_http => {}
            "http" => {
                return Err(
                    "--url must be https (plain http only with WEBHOOK_ALLOW_HTTP=true)".into(),
                )
            }
            other => return Err(format!("--url must be https, not {other}")),
        }
        if url.fragment().is_some() {
            return Err("--url must have no #fragment".into());
        }
        let parsed = Self(url);
        if let Some(address) = parsed.literal_address() {
            policy
                .check(address)
                .map_err(|refused| format!("--url: {refused}"))?;
        }
        if parsed.0.host_str().is_none_or(str::is_empty) {
            return Err("--url has no host".into());
        }
        Ok(parsed)
    }

    /// A URL as stored (checked when it was added); the address policy is
    /// applied again at each attempt.
    pub fn stored(value: &str) -> Option<Self> {
        Url::parse(value).ok().map(Self)
    }

    /// The address, when the host is one (no name to resolve).
    pub fn literal_address(&self) -> Option<IpAddr> {
        match self.0.host()? {
            Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
            Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
            Host::Domain(_) => None,
        }
    }

    pub fn as_url(&self) -> &Url {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// Scheme, host and port only: what logs show (a path or query may hold
    /// a receiver's token).
    pub fn origin(&self) -> String {
        self.0.origin().ascii_serialization()
    }
}

impl fmt::Debug for EndpointUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EndpointUrl({})", self.origin())
    }
}

/// The event types an endpoint takes: each one of [`EVENT_TYPES`].
pub fn parse_event_types(values: &[String]) -> Result<Vec<String>, String> {
    let mut types: Vec<String> = Vec::new();
    for value in values {
        if !EVENT_TYPES.contains(&value.as_str()) {
            return Err(format!(
                "--event-type `{value}` is not an event type; one of: {}",
                EVENT_TYPES.join(", ")
            ));
        }
        if !types.contains(value) {
            types.push(value.clone());
        }
    }
    Ok(types)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str, allow_http: bool) -> Result<EndpointUrl, String> {
        EndpointUrl::parse(url, allow_http, &AddressPolicy::default())
    }

    #[test]
    fn urls_are_https_unless_allowed_and_never_a_refused_literal() {
        assert!(parse("https://hooks.example.com/finch?k=1", false).is_ok());
        assert!(parse("http://hooks.example.com/", false).is_err());
        assert!(parse("http://hooks.example.com/", true).is_ok());
        assert!(parse("ftp://hooks.example.com/", true).is_err());
        for refused in [
            "https://127.0.0.1/",
            "https://[::1]/",
            "https://[::ffff:10.0.0.1]/",
            "https://169.254.169.254/latest",
        ] {
            let error = parse(refused, true).expect_err(refused);
            assert!(error.contains("WEBHOOK_ALLOWED_CIDRS"), "{error}");
        }
    }

    #[test]
    fn logs_show_the_origin_only() {
        let url = parse("https://hooks.example.com:8443/path?token=s3cret", false).expect("url");
        assert_eq!(url.origin(), "https://hooks.example.com:8443");
        assert!(!format!("{url:?}").contains("s3cret"));
    }

    #[test]
    fn event_types_are_the_published_ones() {
        assert!(parse_event_types(&["connection.disconnected".into()]).is_ok());
        assert!(parse_event_types(&["connection.created".into()]).is_err());
    }
}
