//! Endpoint signing secrets, and the operator's key that seals them at rest.
//!
//! A secret is 24 random bytes (as Svix makes them), shown once when made:
//! `whsec_<base64>` for Standard Webhooks endpoints, plain base64 for Finch's
//! headers. The database keeps it sealed with AES-256-GCM (ring, the
//! provider the TLS stack already uses) under `WEBHOOK_SECRET_KEY`, with the
//! endpoint's id as associated data, so a dump alone reveals no secret and a
//! sealed secret moved onto another endpoint's row does not open.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use uuid::Uuid;

use super::HeaderFormat;

/// The first byte of every sealed secret: how it was sealed, so another
/// scheme (or key id) can be added later beside this one.
const SEALED_V1: u8 = 1;
const SECRET_BYTES: usize = 24;
const STANDARD_PREFIX: &str = "whsec_";

/// The operator's key (`WEBHOOK_SECRET_KEY`, 32 bytes in base64).
pub struct SealingKey(LessSafeKey);

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealingKey(***)")
    }
}

/// A sealed secret that does not open: another key, or a changed row.
#[derive(Debug, thiserror::Error)]
#[error("a webhook secret does not open with WEBHOOK_SECRET_KEY (another key, or a changed row)")]
pub struct Unsealable;

impl SealingKey {
    pub fn parse(setting: &str, value: &str) -> Result<Self, String> {
        let bytes = STANDARD.decode(value.trim()).map_err(|_| {
            format!("{setting} must be 32 bytes in base64 (`openssl rand -base64 32`)")
        })?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| {
            format!(
                "{setting} must be 32 bytes in base64 (`openssl rand -base64 32`); it has {}",
                bytes.len()
            )
        })?;
        Ok(Self(LessSafeKey::new(key)))
    }

    pub fn seal(&self, secret: &SigningSecret, endpoint_id: Uuid) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut in_out = secret.0.clone();
        // Sealing only fails for inputs beyond AES-GCM's length limit.
        let sealed = self.0.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(endpoint_id.as_bytes()),
            &mut in_out,
        );
        debug_assert!(sealed.is_ok());
        let mut out = Vec::with_capacity(1 + NONCE_LEN + in_out.len());
        out.push(SEALED_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&in_out);
        out
    }

    pub fn open(&self, sealed: &[u8], endpoint_id: Uuid) -> Result<SigningSecret, Unsealable> {
        let (&version, rest) = sealed.split_first().ok_or(Unsealable)?;
        if version != SEALED_V1 || rest.len() < NONCE_LEN {
            return Err(Unsealable);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Unsealable)?;
        let mut in_out = ciphertext.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(endpoint_id.as_bytes()), &mut in_out)
            .map_err(|_| Unsealable)?;
        Ok(SigningSecret(plain.to_vec()))
    }
}

/// An endpoint's signing secret: the HMAC key. Never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(Vec<u8>);

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(***)")
    }
}

impl SigningSecret {
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; SECRET_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        Self(bytes)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// As the receiver configures it: what its verifier library takes.
    pub fn shown_for(&self, format: HeaderFormat) -> String {
        let encoded = STANDARD.encode(&self.0);
        match format {
            HeaderFormat::Standard => format!("{STANDARD_PREFIX}{encoded}"),
            HeaderFormat::Finch => encoded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SealingKey {
        SealingKey::parse("KEY", &STANDARD.encode([7u8; 32])).expect("key")
    }

    #[test]
    fn a_sealed_secret_opens_only_for_its_endpoint_and_key() {
        let secret = SigningSecret::generate();
        let endpoint = Uuid::new_v4();
        let sealed = key().seal(&secret, endpoint);
        assert!(!sealed
            .windows(secret.bytes().len())
            .any(|window| window == secret.bytes()));
        assert_eq!(key().open(&sealed, endpoint).expect("opens"), secret);
        assert!(key().open(&sealed, Uuid::new_v4()).is_err());
        let other = SealingKey::parse("KEY", &STANDARD.encode([8u8; 32])).expect("key");
        assert!(other.open(&sealed, endpoint).is_err());
    }

    #[test]
    fn a_key_of_the_wrong_length_names_its_setting() {
        let error = SealingKey::parse("WEBHOOK_SECRET_KEY", &STANDARD.encode([1u8; 16]))
            .expect_err("16 bytes");
        assert!(error.contains("WEBHOOK_SECRET_KEY"), "{error}");
        assert!(SealingKey::parse("WEBHOOK_SECRET_KEY", "not base64!").is_err());
    }

    #[test]
    fn secrets_are_shown_as_each_verifier_takes_them() {
        let secret = SigningSecret(vec![0u8; 3]);
        assert_eq!(secret.shown_for(HeaderFormat::Standard), "whsec_AAAA");
        assert_eq!(secret.shown_for(HeaderFormat::Finch), "AAAA");
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::SigningSecret;

    pub fn secret(bytes: Vec<u8>) -> SigningSecret {
        SigningSecret(bytes)
    }
}
