//! Access tokens: generated here, shown once, stored only as a SHA-256 hash.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Bytea;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::entity::{EntityRef, EntityStatus};
use super::ids::{ConnectionId, TokenId};

/// Every token we issue starts with this, so leaked tokens are recognisable by
/// secret scanners and people.
pub const TOKEN_PREFIX: &str = "dwt_";
/// Random bytes per token: 256 bits.
const TOKEN_RANDOM_BYTES: usize = 32;
/// Characters of the token kept in clear (the fixed prefix plus four random
/// characters, 24 bits): enough to tell tokens apart in a support ticket.
const VISIBLE_PREFIX_CHARS: usize = TOKEN_PREFIX.len() + 4;
/// Longest token accepted in a request; ours are 47 characters.
const MAX_TOKEN_CHARS: usize = 512;

/// A plaintext access token. Its `Debug` never shows the value, so it cannot
/// reach a log line by accident; [`AccessToken::expose`] is the only way out.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(String);

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

/// The SHA-256 of a token: what the database stores and looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, AsExpression, FromSqlRow)]
#[diesel(sql_type = Bytea)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl ToSql<Bytea, Pg> for TokenHash {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <[u8] as ToSql<Bytea, Pg>>::to_sql(&self.0[..], out)
    }
}

impl FromSql<Bytea, Pg> for TokenHash {
    fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
        let hash = <[u8; 32]>::try_from(bytes.as_bytes())
            .map_err(|_| "a token hash is not 32 bytes long")?;
        Ok(Self(hash))
    }
}

impl AccessToken {
    /// Accept a token from outside: non-empty, bounded, and visible ASCII only
    /// (tokens are URL-safe), which rules out control characters and padding.
    pub fn parse(value: String) -> Result<Self, &'static str> {
        if value.is_empty() {
            return Err("is empty");
        }
        if value.len() > MAX_TOKEN_CHARS {
            return Err("is too long");
        }
        if !value.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err("contains characters a token never has");
        }
        Ok(Self(value))
    }

    /// A new random token: the fixed prefix and 256 random bits, base64url.
    pub fn generate() -> Self {
        let mut random = [0u8; TOKEN_RANDOM_BYTES];
        rand::rng().fill_bytes(&mut random);
        Self(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(random)))
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0.as_bytes()).into())
    }

    /// The non-secret start of the token, kept in clear for recognition.
    pub fn visible_prefix(&self) -> String {
        self.0.chars().take(VISIBLE_PREFIX_CHARS).collect()
    }

    /// The plaintext: only for handing the token to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A token just issued: the only moment its plaintext exists.
#[derive(Debug)]
pub struct IssuedToken {
    pub token: AccessToken,
    pub token_id: TokenId,
    pub connection_id: ConnectionId,
    /// The connection's entities after the issue, with their state.
    pub entities: Vec<(EntityRef, EntityStatus)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_url_safe_and_carry_256_random_bits() {
        let token = AccessToken::generate();
        let random = token.expose().strip_prefix(TOKEN_PREFIX).expect("prefix");
        let decoded = URL_SAFE_NO_PAD.decode(random).expect("base64url");
        assert_eq!(decoded.len(), 32);
        assert!(AccessToken::parse(token.expose().to_string()).is_ok());
        assert_ne!(token, AccessToken::generate());
    }

    #[test]
    fn debug_output_hides_the_value() {
        let token = AccessToken::generate();
        assert!(!format!("{token:?}").contains(token.expose()));
    }

    #[test]
    fn the_hash_is_sha256_of_the_token_text() {
        let token = AccessToken::parse("abc".into()).expect("valid");
        let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let actual: String = token
            .hash()
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(actual, expected);
    }

    #[test]
    fn tokens_with_spaces_or_control_characters_are_refused() {
        for bad in ["", "a b", "a\u{7}b", "é"] {
            assert!(AccessToken::parse(bad.to_string()).is_err(), "{bad:?}");
        }
        assert!(AccessToken::parse("x".repeat(513)).is_err());
    }
}
