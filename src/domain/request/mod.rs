//! A disconnect request: decoded from the bytes of a delivery (`decode`), and
//! encoded by whoever publishes one (`encode`: the CLI, the tests, the
//! benchmark), so both sides of the contract live in one place.

mod decode;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::ids::RequestId;
use super::token::AccessToken;

/// Longest `requested_by` kept in the audit trail.
pub const MAX_REQUESTED_BY_CHARS: usize = 256;
/// Longest `reason` kept in the audit trail.
pub const MAX_REASON_CHARS: usize = 1024;

/// The content type a request is published with.
pub const CONTENT_TYPE: &str = "application/json";

/// A valid disconnect request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisconnectRequest {
    pub request_id: RequestId,
    pub access_token: AccessToken,
    pub requested_at: Option<DateTime<Utc>>,
    pub requested_by: Option<String>,
    pub reason: Option<String>,
    /// What the delivery said besides the body; never from the body.
    pub provenance: Provenance,
}

/// Where a request came from, beyond its body: set by the consumer from the
/// message's AMQP properties, and carried to its outcome event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Provenance {
    /// The W3C `traceparent` its outcome event is published with.
    pub traceparent: Option<String>,
    /// When it was published (the AMQP `timestamp`), for the latency from
    /// publish to event.
    pub published_at: Option<DateTime<Utc>>,
}

/// The wire shape written by [`DisconnectRequest::encode`].
#[derive(Serialize)]
struct WireOut<'a> {
    request_id: RequestId,
    access_token: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    requested_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    requested_by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

impl DisconnectRequest {
    /// A request for `access_token` with a new request id and no audit fields.
    pub fn new(access_token: AccessToken) -> Self {
        Self {
            request_id: RequestId::generate(),
            access_token,
            requested_at: None,
            requested_by: None,
            reason: None,
            provenance: Provenance::default(),
        }
    }

    /// The JSON body an upstream application publishes; [`Self::decode`]
    /// gives the same request back.
    pub fn encode(&self) -> Vec<u8> {
        let wire = WireOut {
            request_id: self.request_id,
            access_token: self.access_token.expose(),
            requested_at: self
                .requested_at
                .map(|at| at.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            requested_by: self.requested_by.as_deref(),
            reason: self.reason.as_deref(),
        };
        // Serialising this plain struct of strings cannot fail.
        serde_json::to_vec(&wire).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoded_request_decodes_to_the_same_request() {
        let full = DisconnectRequest {
            request_id: RequestId::generate(),
            access_token: AccessToken::generate(),
            requested_at: Some(Utc::now()),
            requested_by: Some("ops@example.com".into()),
            reason: Some("employer offboarded".into()),
            provenance: Provenance::default(),
        };
        let bare = DisconnectRequest::new(AccessToken::generate());
        for request in [full, bare] {
            let decoded = DisconnectRequest::decode(&request.encode(), Some(CONTENT_TYPE), 16_384)
                .expect("valid");
            assert_eq!(decoded, request);
        }
    }
}
