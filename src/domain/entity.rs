//! The entities of a connection: the legal entities, EINs or divisions one
//! employer manages in one payroll system, connected together and sharing
//! the connection. Unlike a connection, an entity comes back: disconnected
//! alone, it is active again when the employer re-authenticates with it.

use diesel::deserialize::FromSqlRow;
use diesel::expression::AsExpression;
use diesel::sql_types::Text;
use schemars::JsonSchema;
use serde::Serialize;

use super::ids::EntityId;
use super::text_column::text_column;

/// Most entity ids one request may name.
pub const MAX_ENTITY_IDS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
#[serde(rename_all = "snake_case")]
pub enum EntityStatus {
    Active,
    Disconnected,
}

text_column!(EntityStatus {
    Active => "active",
    Disconnected => "disconnected",
});

/// An entity as events name it: both ids.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, JsonSchema)]
pub struct EntityRef {
    /// The platform's id, the one requests name.
    pub entity_id: EntityId,
    /// The provider's own identifier for it.
    pub provider_entity_id: String,
}
