//! The headers that sign one attempt, with the `standardwebhooks` crate:
//! `v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>`, once per
//! secret that signs (two while a rotated secret's old one still does),
//! space-separated. Finch's headers carry the same scheme under its names.

use super::secrets::SigningSecret;
use super::HeaderFormat;

/// The webhook id of an event: the same on every attempt and to every
/// endpoint, so receivers dedupe on it; it is the body's `event_id`.
pub fn message_id(event_id: uuid::Uuid) -> String {
    format!("msg_{event_id}")
}

/// The id, timestamp and signature headers, named for `format`.
pub fn signature_headers(
    format: HeaderFormat,
    message_id: &str,
    timestamp: i64,
    body: &str,
    secrets: &[&SigningSecret],
) -> [(&'static str, String); 3] {
    let signatures: Vec<String> = secrets
        .iter()
        .filter_map(|secret| {
            standardwebhooks::Webhook::from_bytes(secret.bytes().to_vec())
                .and_then(|webhook| webhook.sign(message_id, timestamp, body.as_bytes()))
                .ok()
        })
        .collect();
    let (id, time, signature) = match format {
        HeaderFormat::Standard => ("webhook-id", "webhook-timestamp", "webhook-signature"),
        HeaderFormat::Finch => ("finch-event-id", "finch-timestamp", "finch-signature"),
    };
    [
        (id, message_id.to_string()),
        (time, timestamp.to_string()),
        (signature, signatures.join(" ")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;

    /// The Standard Webhooks specification's test vector (also the crate's).
    #[test]
    fn the_standard_webhooks_test_vector_signs_as_published() {
        let key = STANDARD
            .decode("C2FVsBQIhrscChlQIMV+b5sSYspob7oD")
            .expect("base64");
        let secret = crate::webhooks::secrets::tests_support::secret(key);
        let [id, time, signature] = signature_headers(
            HeaderFormat::Standard,
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            r#"{"email":"test@example.com","username":"test_user"}"#,
            &[&secret],
        );
        assert_eq!(id, ("webhook-id", "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk".into()));
        assert_eq!(time, ("webhook-timestamp", "1649367553".into()));
        assert_eq!(
            signature,
            (
                "webhook-signature",
                "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=".into()
            )
        );
    }

    #[test]
    fn two_secrets_give_two_signatures_under_finchs_names() {
        let one = SigningSecret::generate();
        let two = SigningSecret::generate();
        let [id, _, signature] =
            signature_headers(HeaderFormat::Finch, "msg_x", 1, "{}", &[&one, &two]);
        assert_eq!(id.0, "finch-event-id");
        assert_eq!(signature.0, "finch-signature");
        let parts: Vec<&str> = signature.1.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|part| part.starts_with("v1,")));
        assert_ne!(parts[0], parts[1]);
    }
}
