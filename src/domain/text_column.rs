//! Fieldless enums stored in Postgres as their text label: the database keeps
//! a readable value, and Rust code never compares strings.

/// For a fieldless enum and the label of each variant: `ALL` (every value,
/// in the order given), `as_str`, `parse`, and Diesel's `ToSql` / `FromSql`
/// for `Text` (the enum derives `AsExpression` / `FromSqlRow` with
/// `sql_type = Text`). Every variant must be listed: `as_str` is a `match`.
macro_rules! text_column {
    ($name:ident { $($variant:ident => $label:literal),+ $(,)? }) => {
        impl $name {
            /// Every value.
            pub const ALL: [Self; [$($label),+].len()] = [$(Self::$variant),+];

            /// The label stored in Postgres.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $label,)+
                }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($label => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl diesel::serialize::ToSql<diesel::sql_types::Text, diesel::pg::Pg> for $name {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>,
            ) -> diesel::serialize::Result {
                use std::io::Write;
                out.write_all(self.as_str().as_bytes())?;
                Ok(diesel::serialize::IsNull::No)
            }
        }

        impl diesel::deserialize::FromSql<diesel::sql_types::Text, diesel::pg::Pg> for $name {
            fn from_sql(bytes: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
                let text = std::str::from_utf8(bytes.as_bytes())?;
                Self::parse(text)
                    .ok_or_else(|| format!("`{text}` is not a known {}", stringify!($name)).into())
            }
        }
    };
}

pub(crate) use text_column;
