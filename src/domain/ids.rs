//! Typed ids. Every id that crosses a module boundary has its own type, so a
//! connection id can never be passed where a token id or a request id is
//! meant. Each is a UUID on the wire (serde) and in Postgres (Diesel).

use std::fmt;

use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Uuid as SqlUuid;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            Serialize, Deserialize, JsonSchema, AsExpression, FromSqlRow,
        )]
        #[diesel(sql_type = SqlUuid)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new id, time-ordered (UUIDv7), so new rows land at the end
            /// of their index.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl ToSql<SqlUuid, Pg> for $name {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
                <Uuid as ToSql<SqlUuid, Pg>>::to_sql(&self.0, out)
            }
        }

        impl FromSql<SqlUuid, Pg> for $name {
            fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
                <Uuid as FromSql<SqlUuid, Pg>>::from_sql(bytes).map(Self)
            }
        }
    };
}

uuid_id!(
    /// The idempotency key of a request, chosen by its sender.
    RequestId
);
uuid_id!(
    /// One employer at one provider inside one application.
    ConnectionId
);
uuid_id!(
    /// One access token (never the token itself).
    TokenId
);
uuid_id!(
    /// One outcome event; consumers deduplicate on it.
    EventId
);
impl EventId {
    /// The smallest id [`EventId::generate`] can give at `at` or later (a
    /// UUIDv7 starts with its millisecond): ids below it were generated
    /// before `at`. Uuids compare byte by byte in Postgres, as here.
    pub fn first_at(at: chrono::DateTime<chrono::Utc>) -> Self {
        let millis = u64::try_from(at.timestamp_millis()).unwrap_or_default();
        let mut bytes = [0u8; 16];
        bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
        bytes[6] = 0x70; // version 7
        bytes[8] = 0x80; // RFC 4122 variant
        Self(Uuid::from_bytes(bytes))
    }
}

uuid_id!(
    /// One entity of a connection (a legal entity, an EIN, a division),
    /// assigned by the platform when it is first connected.
    EntityId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_and_serialise_as_their_uuid() {
        let uuid = Uuid::new_v4();
        let id = ConnectionId::from_uuid(uuid);
        assert_eq!(id.to_string(), uuid.to_string());
        assert_eq!(
            serde_json::to_string(&id).expect("json"),
            format!("\"{uuid}\"")
        );
        let back: ConnectionId = serde_json::from_str(&format!("\"{uuid}\"")).expect("json");
        assert_eq!(back, id);
    }

    #[test]
    fn the_first_id_at_a_time_sorts_between_ids_generated_before_and_after_it() {
        let before = EventId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let bound = EventId::first_at(chrono::Utc::now());
        std::thread::sleep(std::time::Duration::from_millis(2));
        let after = EventId::generate();
        assert!(before < bound && bound < after, "{before} {bound} {after}");
        assert_eq!(bound.as_uuid().get_version_num(), 7);
    }

    #[test]
    fn generated_ids_are_time_ordered() {
        let first = EventId::generate();
        let second = EventId::generate();
        assert!(first < second);
    }
}
